// Package provider holds one adapter per provider kind: where a call goes
// (the URL for a wire API and a model), how the gateway authenticates
// there, which wire API the provider speaks for a client's API, and how its
// errors are classified (retry, fall back, fail). Snapshots build a
// Provider once per configuration change; nothing here runs I/O on the
// request path beyond building the request.
package provider

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/moat-ai/moat/services/gateway/internal/wire"
	"github.com/moat-ai/moat/services/gateway/internal/wire/anthropic"
)

// Kind is a provider kind.
type Kind uint8

// The provider kinds.
const (
	KindUnknown Kind = iota
	// OpenAICompatible is any server speaking OpenAI's API: vLLM, Ollama,
	// TGI, llama.cpp, Groq, Together, Mistral, DeepSeek.
	OpenAICompatible
	// OpenAI is api.openai.com.
	OpenAI
	// Anthropic is api.anthropic.com.
	Anthropic
	// AzureOpenAI is an Azure OpenAI resource: the route's upstream model
	// is the deployment.
	AzureOpenAI
	// Gemini is Google AI Studio.
	Gemini
	// VertexAI is Google Cloud's Vertex AI: Gemini models, and Claude
	// through Anthropic's format.
	VertexAI
	// Bedrock is AWS Bedrock, through the Converse API, and Claude also
	// through InvokeModel in Anthropic's format.
	Bedrock
)

var kindNames = [...]string{KindUnknown: "unknown", OpenAICompatible: "openai_compatible", OpenAI: "openai", Anthropic: "anthropic",
	AzureOpenAI: "azure_openai", Gemini: "gemini", VertexAI: "vertex_ai", Bedrock: "bedrock"}

// TokenSource hands out a current access token without I/O (a Google
// service account's or an Entra ID application's, refreshed in the
// background).
type TokenSource interface {
	Token() (string, error)
}

// Signer signs a request without I/O (AWS SigV4 with credentials
// refreshed in the background, or a Bedrock API key).
type Signer interface {
	Sign(req *http.Request, body []byte, now time.Time) error
}

// VertexPublishers says which Vertex publisher serves a model, by the
// model name's prefix: data, not code, so that a new family is one line.
// Models matching none are Google's.
var VertexPublishers = []struct {
	Prefix    string
	Publisher string
	API       wire.API
}{
	{"claude-", "anthropic", wire.Anthropic},
}

// BedrockFormats says which Bedrock models are also served in their
// maker's own format through InvokeModel, by a part of the model id (so
// that foundation models, cross-region inference profiles such as
// us.anthropic.claude-... or global.anthropic.claude-..., and ARNs naming
// either match): data, not code. A client speaking that format is served
// natively; every other client, and every other model, through Converse.
var BedrockFormats = []struct {
	Contains string
	API      wire.API
}{
	{"anthropic.claude", wire.Anthropic},
}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// Config is a provider as configured, its credential opened.
type Config struct {
	// Name is orgs/{org}/providers/{provider}.
	Name string
	Kind Kind
	// BaseURL is the API base; empty means the kind's default.
	BaseURL string
	// Credential is the opened credential, empty when none.
	Credential []byte
	// AzureAPIVersion selects Azure's deployment paths with that
	// api-version; empty, its v1 API (/openai/v1, the model in the body).
	AzureAPIVersion string
	// VertexProject and VertexLocation place a Vertex AI provider.
	VertexProject, VertexLocation string
	// BedrockRegion places a Bedrock provider.
	BedrockRegion string
	// Google authenticates a Vertex AI provider; AWS signs for Bedrock.
	Google TokenSource
	AWS    Signer
	// Azure authenticates an Azure OpenAI provider whose Credential is
	// Entra ID client credentials (a JSON object), with the tokens it
	// hands out.
	Azure TokenSource
}

// Provider is a provider ready to be called. It never prints its
// credential: LogValue and String leave it out. Safe for concurrent use;
// immutable.
type Provider struct {
	// Name is orgs/{org}/providers/{provider}.
	Name string
	Kind Kind
	// Unusable says why calls cannot go to this provider (an unsupported
	// kind, a bad URL, a credential that does not open); empty when usable.
	// It holds no secret.
	Unusable string

	base    string // without a trailing slash
	headers http.Header
	// azureVersion is the api-version query value, escaped; empty for
	// Azure's v1 API.
	azureVersion string
	// vertexPath is /v1/projects/{p}/locations/{l}/publishers.
	vertexPath string
	google     TokenSource
	aws        Signer
	// azure is set for Entra ID credentials, nil for an API key.
	azure TokenSource
}

// Defaults of BaseURL per kind.
var defaultBase = map[Kind]string{
	OpenAI:    "https://api.openai.com/v1",
	Anthropic: "https://api.anthropic.com/v1",
	Gemini:    "https://generativelanguage.googleapis.com/v1beta",
}

// AnthropicVersion is the Messages API version sent when the client names
// none.
const AnthropicVersion = "2023-06-01"

// New returns the provider c describes. It never fails: a provider that
// cannot be used is returned with Unusable set, so that its routes answer
// with a clear upstream error instead of vanishing.
func New(c Config) *Provider {
	p := &Provider{Name: c.Name, Kind: c.Kind, headers: http.Header{}}
	base := strings.TrimRight(c.BaseURL, "/")
	if base == "" {
		base = defaultBase[c.Kind]
	}
	switch {
	case base != "":
	case c.Kind == VertexAI && c.VertexLocation == "global":
		base = "https://aiplatform.googleapis.com"
	case c.Kind == VertexAI && c.VertexLocation != "":
		base = "https://" + c.VertexLocation + "-aiplatform.googleapis.com"
	case c.Kind == Bedrock && c.BedrockRegion != "":
		base = "https://bedrock-runtime." + c.BedrockRegion + ".amazonaws.com"
	}
	p.base = base
	switch c.Kind {
	case OpenAICompatible, OpenAI:
		if len(c.Credential) > 0 {
			p.headers["Authorization"] = []string{"Bearer " + string(c.Credential)}
		}
	case Anthropic:
		if len(c.Credential) > 0 {
			p.headers["X-Api-Key"] = []string{string(c.Credential)}
		}
	case AzureOpenAI:
		switch {
		case IsEntraCredential(c.Credential):
			// Entra ID client credentials: a bearer token per request.
			if c.Azure == nil {
				p.Unusable = "an Azure OpenAI provider with Entra ID client credentials needs their token source"
				return p
			}
			p.azure = c.Azure
		case len(c.Credential) > 0:
			p.headers["Api-Key"] = []string{string(c.Credential)}
		}
		p.azureVersion = url.QueryEscape(c.AzureAPIVersion)
		if base == "" {
			p.Unusable = "an Azure OpenAI provider needs its resource endpoint as base URL"
			return p
		}
	case Gemini:
		if len(c.Credential) > 0 {
			p.headers["X-Goog-Api-Key"] = []string{string(c.Credential)}
		}
	case VertexAI:
		if c.Google == nil || c.VertexProject == "" || c.VertexLocation == "" {
			p.Unusable = "a Vertex AI provider needs its project, location and service-account key"
			return p
		}
		p.google = c.Google
		p.vertexPath = "/v1/projects/" + url.PathEscape(c.VertexProject) + "/locations/" + url.PathEscape(c.VertexLocation) + "/publishers/"
	case Bedrock:
		if c.AWS == nil || c.BedrockRegion == "" {
			p.Unusable = "a Bedrock provider needs its region and credentials"
			return p
		}
		p.aws = c.AWS
	default:
		p.Unusable = fmt.Sprintf("provider kind %s is not supported", c.Kind)
		return p
	}
	if u, err := url.Parse(base); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		p.Unusable = "base URL is not an absolute http(s) URL"
	}
	return p
}

// IsEntraCredential reports whether the credential of an Azure OpenAI
// provider is Entra ID client credentials, a JSON object, rather than an
// API key: no API key starts with a brace.
func IsEntraCredential(credential []byte) bool {
	return bytes.HasPrefix(bytes.TrimSpace(credential), []byte("{"))
}

// Unusable returns a provider that cannot be called, for reason (which
// holds no secret).
func Unusable(name string, kind Kind, reason string) *Provider {
	return &Provider{Name: name, Kind: kind, Unusable: reason}
}

// LogValue keeps the credential out of logs.
func (p *Provider) LogValue() slog.Value {
	return slog.GroupValue(slog.String("name", p.Name), slog.String("kind", p.Kind.String()))
}

// String keeps the credential out of %v.
func (p *Provider) String() string { return p.Name }

// Upstream returns the wire API the provider is called with for a
// client speaking client, and whether it can serve that client at all.
// Equal APIs mean the native path; different ones, translation;
// APIUnknown with true, that the gateway answers itself (a token count
// the provider cannot make).
func (p *Provider) Upstream(client wire.API) (wire.API, bool) {
	switch p.Kind {
	case OpenAICompatible, OpenAI, AzureOpenAI:
		switch client {
		case wire.OpenAIResponses:
			if p.Kind == OpenAICompatible {
				// Compatible servers rarely serve Responses; chat they do.
				return wire.OpenAIChat, true
			}
			return client, true
		case wire.OpenAIChat, wire.Anthropic:
			return wire.OpenAIChat, true
		case wire.OpenAICompletions, wire.OpenAIEmbeddings:
			return client, true
		case wire.AnthropicCountTokens:
			return wire.APIUnknown, true // counted locally
		}
	case Anthropic:
		switch client {
		case wire.OpenAIChat, wire.Anthropic, wire.OpenAIResponses:
			return wire.Anthropic, true
		case wire.AnthropicCountTokens:
			return client, true
		}
	case Gemini, Bedrock:
		up := wire.Gemini
		if p.Kind == Bedrock {
			up = wire.Converse
		}
		switch client {
		case wire.OpenAIChat, wire.Anthropic, wire.OpenAIResponses:
			return up, true
		case wire.AnthropicCountTokens:
			return wire.APIUnknown, true
		}
	}
	return wire.APIUnknown, false
}

// UpstreamFor is Upstream for one model: a Vertex AI provider serves
// Claude models in Anthropic's format and the others in Gemini's; a
// Bedrock provider serves an Anthropic client calling Claude in
// Anthropic's format (InvokeModel) and everything else through Converse.
func (p *Provider) UpstreamFor(client wire.API, model string) (wire.API, bool) {
	if p.Kind == Bedrock {
		for _, f := range BedrockFormats {
			if client == f.API && strings.Contains(model, f.Contains) {
				return f.API, true
			}
		}
	}
	if p.Kind != VertexAI {
		return p.Upstream(client)
	}
	up := wire.Gemini
	for _, vp := range VertexPublishers {
		if strings.HasPrefix(model, vp.Prefix) {
			up = vp.API
		}
	}
	switch client {
	case wire.OpenAIChat, wire.Anthropic, wire.OpenAIResponses:
		return up, true
	case wire.AnthropicCountTokens:
		return wire.APIUnknown, true
	}
	return wire.APIUnknown, false
}

// vertexPublisher is the Vertex publisher of model.
func vertexPublisher(model string) string {
	for _, vp := range VertexPublishers {
		if strings.HasPrefix(model, vp.Prefix) {
			return vp.Publisher
		}
	}
	return "google"
}

// Call is one upstream call, as the gateway asks for it.
type Call struct {
	// API is the upstream wire API (from Upstream).
	API wire.API
	// Model is the upstream model.
	Model  string
	Stream bool
	Body   []byte
	// RequestID is the gateway's id of the request, sent along so that
	// provider logs can be matched with the gateway's.
	RequestID string
	// Header holds client headers the API passes on natively
	// (anthropic-version, anthropic-beta); nil when none.
	Header http.Header
}

// NewRequest builds the HTTP request of c. No client header reaches the
// provider but those in c.Header that the kind passes on; the credential is
// the provider's, never the client's.
func (p *Provider) NewRequest(ctx context.Context, c Call) (*http.Request, error) {
	var path string
	body := c.Body
	switch c.API {
	case wire.Gemini:
		path = "/models/" + url.PathEscape(c.Model) + ":generateContent"
		if c.Stream {
			path = "/models/" + url.PathEscape(c.Model) + ":streamGenerateContent?alt=sse"
		}
	case wire.Converse:
		path = "/model/" + url.PathEscape(c.Model) + "/converse"
		if c.Stream {
			path += "-stream"
		}
	case wire.OpenAIChat:
		path = "/chat/completions"
	case wire.Anthropic:
		path = "/messages"
	case wire.OpenAIResponses:
		path = "/responses"
	case wire.OpenAICompletions:
		path = "/completions"
	case wire.OpenAIEmbeddings:
		path = "/embeddings"
	case wire.AnthropicCountTokens:
		path = "/messages/count_tokens"
	default:
		return nil, fmt.Errorf("provider %s: wire API %s not served", p.Name, c.API)
	}
	u := p.base + path
	switch p.Kind {
	case AzureOpenAI:
		u = p.azureURL(path, c.Model)
	case VertexAI:
		pub := vertexPublisher(c.Model)
		switch {
		case pub == "anthropic" && c.API == wire.Anthropic:
			// Claude on Vertex: the model is in the URL, the version in
			// the body.
			body = anthropic.ForPlatform(body, anthropic.Vertex, nil)
			verb := ":rawPredict"
			if c.Stream {
				verb = ":streamRawPredict"
			}
			u = p.base + p.vertexPath + pub + "/models/" + url.PathEscape(c.Model) + verb
		case c.API == wire.Gemini:
			u = p.base + p.vertexPath + pub + path
		default:
			return nil, fmt.Errorf("provider %s: wire API %s not served on Vertex", p.Name, c.API)
		}
	case Bedrock:
		if c.API == wire.Anthropic {
			// Claude on Bedrock: the model and the streaming are in the
			// URL, the version and the betas in the body.
			body = anthropic.ForPlatform(body, anthropic.Bedrock, c.Header.Values("Anthropic-Beta"))
			verb := "/invoke"
			if c.Stream {
				verb = "/invoke-with-response-stream"
			}
			u = p.base + "/model/" + url.PathEscape(c.Model) + verb
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("provider %s: build request: %w", p.Name, err)
	}
	h := req.Header
	h["Content-Type"] = []string{"application/json"}
	if c.Stream {
		h["Accept"] = []string{"text/event-stream"}
	} else {
		h["Accept"] = []string{"application/json"}
	}
	h["User-Agent"] = []string{"moat-gateway"}
	h["X-Request-Id"] = []string{c.RequestID}
	for k, v := range p.headers {
		h[k] = v
	}
	var tokens TokenSource
	switch {
	case p.Kind == VertexAI:
		tokens = p.google
	case p.Kind == AzureOpenAI && p.azure != nil:
		tokens = p.azure
	}
	if tokens != nil {
		tok, err := tokens.Token()
		if err != nil {
			return nil, fmt.Errorf("provider %s: %w", p.Name, err)
		}
		h["Authorization"] = []string{"Bearer " + tok}
	}
	if p.Kind == Bedrock && c.Stream {
		h["Accept"] = []string{"application/vnd.amazon.eventstream"}
	}
	if p.Kind == Anthropic {
		h["Anthropic-Version"] = []string{AnthropicVersion}
		if v := c.Header.Get("Anthropic-Version"); v != "" {
			h["Anthropic-Version"] = []string{v}
		}
		if v := c.Header.Values("Anthropic-Beta"); len(v) > 0 {
			h["Anthropic-Beta"] = v
		}
	}
	if p.Kind == Bedrock {
		// Last: the signature covers the headers set above.
		if err := p.aws.Sign(req, body, time.Now()); err != nil {
			return nil, fmt.Errorf("provider %s: sign: %w", p.Name, err)
		}
	}
	return req, nil
}

// AWSErrors reports whether the provider answers errors in AWS's shape,
// {"message"} with the type in the X-Amzn-ErrorType header, whatever the
// wire API of its successful answers: Bedrock's InvokeModel answers in
// Anthropic's format, but fails in AWS's.
func (p *Provider) AWSErrors() bool { return p.Kind == Bedrock }

// Class is what a provider's answer means for the call.
type Class uint8

// The classes of answers.
const (
	// Success is a 2xx.
	Success Class = iota
	// Retryable may succeed on another attempt or target: 408, 429, 5xx,
	// 529 (overloaded).
	Retryable
	// Credential says the provider refused the gateway's credential
	// (401, 403): the client's key was fine, so the client must not see the
	// provider's status.
	Credential
	// Redirect is a 3xx, never followed (it could point at another host).
	Redirect
	// ClientError is a 4xx about the request itself; relayed to the client.
	ClientError
)

// Classify classifies an answer by its status.
func (p *Provider) Classify(status int) Class {
	switch {
	case status >= 200 && status < 300:
		return Success
	case status >= 300 && status < 400:
		return Redirect
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return Credential
	case status == http.StatusRequestTimeout || status == http.StatusTooManyRequests || status >= 500:
		return Retryable
	default:
		return ClientError
	}
}

// azureURL is the URL of an Azure OpenAI call: the deployment path with
// api-version when one is configured, else Azure's v1 API, which takes the
// model (the deployment) in the body like OpenAI.
func (p *Provider) azureURL(path, deployment string) string {
	if p.azureVersion == "" {
		return p.base + "/openai/v1" + path
	}
	if path == "/responses" {
		// Responses has no deployment path: the model is in the body.
		return p.base + "/openai/responses?api-version=" + p.azureVersion
	}
	return p.base + "/openai/deployments/" + url.PathEscape(deployment) + path + "?api-version=" + p.azureVersion
}
