package httpapi_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	anthropic "github.com/anthropics/anthropic-sdk-go/v2"
	anthropicopt "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/openai/openai-go/v3"
	openaiopt "github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"
	"github.com/openai/openai-go/v3/shared"
	"google.golang.org/protobuf/proto"

	"github.com/moat-ai/moat/libs/authn"
	"github.com/moat-ai/moat/libs/events"
	"github.com/moat-ai/moat/libs/events/eventstest"
	"github.com/moat-ai/moat/libs/providertest"
	"github.com/moat-ai/moat/libs/secretbox"
	configv1 "github.com/moat-ai/moat/proto/gen/go/moat/config/v1"
	gatewayv1 "github.com/moat-ai/moat/proto/gen/go/moat/gateway/v1"
	identityv1 "github.com/moat-ai/moat/proto/gen/go/moat/identity/v1"
	"github.com/moat-ai/moat/services/gateway/internal/credential"
	"github.com/moat-ai/moat/services/gateway/internal/gateway"
	"github.com/moat-ai/moat/services/gateway/internal/httpapi"
	"github.com/moat-ai/moat/services/gateway/internal/ir"
	"github.com/moat-ai/moat/services/gateway/internal/snapshot"
	"github.com/moat-ai/moat/services/gateway/internal/usage"
	anthropicwire "github.com/moat-ai/moat/services/gateway/internal/wire/anthropic"
	"github.com/moat-ai/moat/services/gateway/internal/wire/awsstream"
	"github.com/moat-ai/moat/services/gateway/internal/wire/converse"
	"github.com/moat-ai/moat/services/gateway/internal/wire/gemini"
	"github.com/moat-ai/moat/services/gateway/internal/wire/openaichat"
	"github.com/moat-ai/moat/services/gateway/internal/wire/openairesp"
	ssewire "github.com/moat-ai/moat/services/gateway/internal/wire/sse"
)

// kinds are the provider kinds the SDK tests call, each with the wire
// format its mock answers in.
var kinds = []struct {
	name string
	typ  configv1.Provider_Type
	// path is appended to the mock's address for the base URL.
	path string
	// prefix starts the route's upstream model (Vertex picks the
	// publisher by it, Bedrock the API: Claude's own through InvokeModel
	// for Anthropic clients, Converse for the rest).
	prefix string
	// entra configures Entra ID client credentials instead of a key.
	entra   bool
	azure   *configv1.AzureSettings
	vertex  *configv1.VertexSettings
	bedrock *configv1.BedrockSettings
}{
	{name: "openai_compatible", typ: configv1.Provider_TYPE_OPENAI_COMPATIBLE, path: "/v1"},
	{name: "openai", typ: configv1.Provider_TYPE_OPENAI, path: "/v1"},
	{name: "anthropic", typ: configv1.Provider_TYPE_ANTHROPIC, path: "/v1"},
	{name: "azure_v1", typ: configv1.Provider_TYPE_AZURE_OPENAI},
	{name: "azure_deployment", typ: configv1.Provider_TYPE_AZURE_OPENAI, azure: &configv1.AzureSettings{ApiVersion: "2024-10-21"}},
	{name: "azure_entra", typ: configv1.Provider_TYPE_AZURE_OPENAI, entra: true},
	{name: "gemini", typ: configv1.Provider_TYPE_GEMINI, path: "/v1beta", prefix: "gemini-"},
	{name: "vertex_gemini", typ: configv1.Provider_TYPE_VERTEX_AI, prefix: "gemini-", vertex: &configv1.VertexSettings{Project: "p1", Location: "us-east5"}},
	{name: "vertex_claude", typ: configv1.Provider_TYPE_VERTEX_AI, prefix: "claude-", vertex: &configv1.VertexSettings{Project: "p1", Location: "us-east5"}},
	{name: "bedrock", typ: configv1.Provider_TYPE_BEDROCK, prefix: "amazon.nova-", bedrock: &configv1.BedrockSettings{Region: "us-east-1"}},
	{name: "bedrock_claude", typ: configv1.Provider_TYPE_BEDROCK, prefix: "us.anthropic.claude-", bedrock: &configv1.BedrockSettings{Region: "us-east-1"}},
}

// bedrockPaths are the paths, whole and streamed, that the calls of an
// Anthropic client (first pair) and of an OpenAI client (second) take at
// each Bedrock kind.
var bedrockPaths = map[string][2][2]string{
	"bedrock":        {{"/converse", "/converse-stream"}, {"/converse", "/converse-stream"}},
	"bedrock_claude": {{"/invoke", "/invoke-with-response-stream"}, {"/converse", "/converse-stream"}},
}

// checkPath checks that the last call to the mock behind model went to a
// path ending in the one bedrockPaths gives kind, for an Anthropic client
// or not, streamed or not; other kinds are not checked.
func (f *sdkFixture) checkPath(t *testing.T, kind, model string, anthropicClient, stream bool) {
	t.Helper()
	paths, ok := bedrockPaths[kind]
	if !ok {
		return
	}
	client, mode := 1, 0
	if anthropicClient {
		client = 0
	}
	if stream {
		mode = 1
	}
	last, _ := f.mocks[model].LastRequest()
	if want := paths[client][mode]; !strings.HasSuffix(last.Path, want) {
		t.Errorf("%s (anthropic client %v, stream %v) called %s, want .../%s", model, anthropicClient, stream, last.Path, want)
	}
}

// credentialOf is what a provider of kind typ is configured with: a
// service-account key for Vertex (whose token endpoint hands out the
// mock's credential), static access keys for Bedrock, Entra ID client
// credentials when entra (whose tokens are the mock's credential too),
// else the mock's key.
func credentialOf(t *testing.T, typ configv1.Provider_Type, entra bool, tokenURL string) []byte {
	t.Helper()
	if entra {
		return []byte(`{"tenantId": "moat-test.onmicrosoft.com", "clientId": "moat-gateway-test", "clientSecret": "` + entraSecret + `"}`)
	}
	switch typ {
	case configv1.Provider_TYPE_VERTEX_AI:
		return serviceAccountKey(t, tokenURL)
	case configv1.Provider_TYPE_BEDROCK:
		return []byte(`{"accessKeyId":"AKIDMOATTEST","secretAccessKey":"bedrock-secret-for-tests"}`)
	}
	return []byte(upstreamCredential)
}

// entraSecret is the client secret of the Entra ID application the
// azure_entra provider authenticates as.
const entraSecret = "entra-secret-for-tests"

// newEntraServer is a fake Microsoft Entra ID authority handing out the
// mock's credential as the access token to the client credentials of
// credentialOf; MSAL reads the tenant's OpenID configuration first.
func newEntraServer(t *testing.T) *httptest.Server {
	t.Helper()
	var srv *httptest.Server
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{tenant}/v2.0/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		base := srv.URL + "/" + r.PathValue("tenant")
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": base + "/v2.0",
			"token_endpoint": base + "/oauth2/v2.0/token", "authorization_endpoint": base + "/oauth2/v2.0/authorize"})
	})
	mux.HandleFunc("POST /moat-test.onmicrosoft.com/oauth2/v2.0/token", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.ParseForm() != nil || r.PostForm.Get("grant_type") != "client_credentials" ||
			r.PostForm.Get("client_id") != "moat-gateway-test" || r.PostForm.Get("client_secret") != entraSecret ||
			!strings.Contains(r.PostForm.Get("scope"), credential.AzureScope) {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"error":"invalid_client"}`)
			return
		}
		_, _ = io.WriteString(w, `{"token_type":"Bearer","expires_in":3599,"access_token":"`+upstreamCredential+`"}`)
	})
	srv = httptest.NewTLSServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// serviceAccountKey is a Google service-account key whose tokens come from
// tokenURL.
func serviceAccountKey(t *testing.T, tokenURL string) []byte {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(map[string]string{"type": "service_account", "client_email": "moat-test@p1.iam.gserviceaccount.com",
		"private_key": string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), "token_uri": tokenURL})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sdkFixture is a gateway in front of one mock per provider kind (and one
// more per kind that answers with tool calls), every mock reporting
// cached, cache-write and reasoning tokens.
type sdkFixture struct {
	gw    *gateway.Gateway
	url   string
	key   string
	mocks map[string]*providertest.Server // by route model
	usage jetstream.Consumer
}

type sdkOptions struct {
	maxInFlight int
	slowModel   bool
	failing     bool
}

type sdkOption func(*sdkOptions)

// withMaxInFlight bounds the calls the gateway serves at once.
func withMaxInFlight(n int) sdkOption { return func(o *sdkOptions) { o.maxInFlight = n } }

// withFailingProviders adds wrongkey-model, whose mock expects another
// key than the one configured, and down-model, whose address refuses
// connections.
func withFailingProviders() sdkOption { return func(o *sdkOptions) { o.failing = true } }

// withSlowModel adds route slow-model to a mock that answers after 1.5 s.
func withSlowModel() sdkOption { return func(o *sdkOptions) { o.slowModel = true } }

func newSDKFixture(t *testing.T, opts ...sdkOption) *sdkFixture {
	t.Helper()
	var o sdkOptions
	for _, opt := range opts {
		opt(&o)
	}
	f := &sdkFixture{key: newKey(t), mocks: map[string]*providertest.Server{}}
	logs := &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	hasher, err := authn.NewHasher(random(t, 32))
	if err != nil {
		t.Fatal(err)
	}
	keys := authn.NewIndex(hasher)
	keys.Replace(1, []*identityv1.KeyIndexEntry{{KeyId: "sdk-key", KeyHmac: hasher.Hash(f.key), Role: identityv1.KeyIndexEntry_ROLE_PROJECT, Organization: org, Project: project}})
	keyring, err := secretbox.ParseKeyring("k1:" + base64.StdEncoding.EncodeToString(random(t, 32)))
	if err != nil {
		t.Fatal(err)
	}
	resources := []*configv1.ConfigResource{
		{Resource: &configv1.ConfigResource_Organization{Organization: &configv1.Organization{Name: org}}},
		{Resource: &configv1.ConfigResource_Project{Project: &configv1.Project{Name: project}}},
	}
	// Vertex's tokens: a fake Google token endpoint handing out the mock's
	// credential as the access token.
	tokens := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ParseForm() != nil || r.PostForm.Get("assertion") == "" {
			http.Error(w, `{"error":"invalid_grant"}`, http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"access_token":"`+upstreamCredential+`","token_type":"Bearer","expires_in":3600}`)
	}))
	t.Cleanup(tokens.Close)
	entra := newEntraServer(t)
	type mock struct {
		model, upstream string
		cfg             providertest.Config
		provider        *configv1.Provider
		entra           bool
	}
	var mocks []mock
	for _, k := range kinds {
		cfg := providertest.Config{Credential: upstreamCredential, Chunks: 3, CachedTokens: 2, CacheWriteTokens: 1, ReasoningTokens: 1}
		for _, tools := range []bool{false, true} {
			model := k.name + "-model"
			if tools {
				cfg.ToolCalls = []string{"get_weather"}
				model = k.name + "-tools"
			}
			prefix := k.prefix
			if prefix == "" {
				prefix = "upstream-"
			}
			mocks = append(mocks, mock{model, prefix + model, cfg, &configv1.Provider{Type: k.typ, BaseUrl: k.path, Azure: k.azure, Vertex: k.vertex, Bedrock: k.bedrock}, k.entra})
		}
	}
	if o.slowModel {
		mocks = append(mocks, mock{"slow-model", "upstream-slow-model", providertest.Config{Credential: upstreamCredential, Delay: 1500 * time.Millisecond},
			&configv1.Provider{Type: configv1.Provider_TYPE_OPENAI_COMPATIBLE, BaseUrl: "/v1"}, false})
	}
	if o.failing {
		mocks = append(mocks,
			mock{"wrongkey-model", "upstream-wrongkey-model", providertest.Config{Credential: "sk-another-key"},
				&configv1.Provider{Type: configv1.Provider_TYPE_OPENAI_COMPATIBLE, BaseUrl: "/v1"}, false},
			mock{"down-model", "upstream-down-model", providertest.Config{Credential: upstreamCredential},
				&configv1.Provider{Type: configv1.Provider_TYPE_ANTHROPIC, BaseUrl: "/v1"}, false})
	}
	for _, mk := range mocks {
		m := providertest.New(mk.cfg)
		srv := httptest.NewServer(m)
		t.Cleanup(srv.Close)
		f.mocks[mk.model] = m
		p := mk.provider
		p.Name, p.BaseUrl, p.HasCredential = org+"/providers/"+mk.model, srv.URL+p.BaseUrl, true
		if mk.model == "down-model" {
			p.BaseUrl = "http://" + closedAddr(t) + "/v1"
		}
		sealed, err := keyring.Seal(credentialOf(t, p.Type, mk.entra, tokens.URL), []byte(p.Name))
		if err != nil {
			t.Fatal(err)
		}
		resources = append(resources,
			&configv1.ConfigResource{Resource: &configv1.ConfigResource_Provider{Provider: &configv1.GatewayProvider{
				Provider:   p,
				Credential: &configv1.SealedSecret{KekId: sealed.KEKID, WrappedKey: sealed.WrappedKey, Ciphertext: sealed.Ciphertext},
			}}},
			&configv1.ConfigResource{Resource: &configv1.ConfigResource_Route{Route: &configv1.Route{
				Name: project + "/routes/" + mk.model, Model: mk.model, Provider: p.Name, UpstreamModel: mk.upstream,
			}}})
	}
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	// The Keeper's client is the gateway's, trusting the fake Entra ID's
	// certificate.
	credTransport := gateway.NewTransport(gateway.Timeouts{Dial: 2 * time.Second, Header: 10 * time.Second}, loopback)
	entraRoots := x509.NewCertPool()
	entraRoots.AddCert(entra.Certificate())
	credTransport.TLSClientConfig = &tls.Config{RootCAs: entraRoots, MinVersion: tls.VersionTLS12}
	t.Cleanup(credTransport.CloseIdleConnections)
	creds := credential.NewKeeper(&http.Client{Transport: credTransport}, log).WithEntraAuthority(entra.URL)
	credCtx, stopCreds := context.WithCancel(context.Background())
	t.Cleanup(stopCreds)
	go func() { _ = creds.Run(credCtx) }()
	store := snapshot.NewStore(keyring, log).WithCredentials(creds)
	store.Replace(1, resources)

	ns := eventstest.NewServer(t)
	_, js := eventstest.Connect(t, ns)
	ctx := context.Background()
	if _, err := events.EnsureStream(ctx, js, events.StreamConfig{Name: "GATEWAY", Subjects: []string{"gateway.>"}}); err != nil {
		t.Fatal(err)
	}
	pub, err := usage.New(js, usage.Options{Drain: 5 * time.Second, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	pubCtx, stopPub := context.WithCancel(ctx)
	pubDone := make(chan struct{})
	go func() {
		_ = pub.Run(pubCtx)
		close(pubDone)
	}()
	t.Cleanup(func() {
		stopPub()
		<-pubDone
	})
	if f.usage, err = js.OrderedConsumer(ctx, "GATEWAY", jetstream.OrderedConsumerConfig{FilterSubjects: []string{usage.Subject}}); err != nil {
		t.Fatal(err)
	}
	transport := gateway.NewTransport(gateway.Timeouts{Dial: 2 * time.Second, Header: 10 * time.Second}, loopback)
	t.Cleanup(transport.CloseIdleConnections)
	mux := http.NewServeMux()
	f.gw = gateway.New(gateway.Options{Keys: keys, Routes: store, Usage: pub, Renderer: httpapi.Render{}, Transport: transport, MaxInFlight: o.maxInFlight, Log: log})
	httpapi.New(f.gw).Mount(mux)
	gw := httptest.NewServer(mux)
	t.Cleanup(gw.Close)
	f.url = gw.URL
	// Vertex and Entra ID calls work once the keeper holds a first token.
	for _, model := range []string{"vertex_gemini-model", "azure_entra-model"} {
		eventually(t, 10*time.Second, model+" has a token", func() bool {
			r := f.postTo(t, "/v1/chat/completions", `{"model":"`+model+`","messages":[{"role":"user","content":"warm up"}]}`,
				map[string]string{"Authorization": "Bearer " + f.key})
			f.nextUsage(t)
			return r.status == http.StatusOK
		})
	}
	// Entra ID credentials reach Azure as a bearer token, never as a key.
	if last, _ := f.mocks["azure_entra-model"].LastRequest(); last.Header.Get("Authorization") != "Bearer "+upstreamCredential || last.Header.Get("Api-Key") != "" {
		t.Fatalf("azure_entra sent Authorization %q, api-key %q; want the Entra ID token as a bearer", last.Header.Get("Authorization"), last.Header.Get("Api-Key"))
	}
	t.Cleanup(func() {
		if l := logs.String(); strings.Contains(l, upstreamCredential) || strings.Contains(l, f.key) || strings.Contains(l, "bedrock-secret-for-tests") || strings.Contains(l, entraSecret) {
			t.Errorf("a secret reached the logs:\n%s", l)
		}
	})
	return f
}

// nextUsage returns the next usage event.
func (f *sdkFixture) nextUsage(t *testing.T) *gatewayv1.UsageRecorded {
	t.Helper()
	msg, err := f.usage.Next(jetstream.FetchMaxWait(10 * time.Second))
	if err != nil {
		t.Fatalf("no usage event within 10s: %v", err)
	}
	var u gatewayv1.UsageRecorded
	if err := proto.Unmarshal(msg.Data(), &u); err != nil {
		t.Fatal(err)
	}
	return &u
}

// reported replays the gateway's last request to the mock behind model
// and reads the usage the mock reports for it, in the mock's own format:
// what the ledger must match, kind by kind.
func (f *sdkFixture) reported(t *testing.T, model string) ir.Usage {
	t.Helper()
	m := f.mocks[model]
	last, ok := m.LastRequest()
	if !ok {
		t.Fatalf("mock %s got no request", model)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(last.Method, last.Path, bytes.NewReader(last.Body))
	req.Header = last.Header.Clone()
	req.URL.RawQuery = last.Query.Encode()
	m.ServeHTTP(rec, req)
	body := rec.Body.Bytes()
	format := "openai"
	switch {
	case strings.HasSuffix(last.Path, "/messages"), strings.Contains(last.Path, "awPredict"), strings.Contains(last.Path, "/invoke"):
		format = "anthropic"
	case strings.Contains(last.Path, "enerateContent"):
		format = "gemini"
	case strings.Contains(last.Path, "/converse"):
		format = "converse"
	case strings.HasSuffix(last.Path, "/responses"):
		format = "responses"
	}
	whole := func(b []byte) ir.Usage {
		switch format {
		case "anthropic":
			return anthropicwire.ReadUsage(b)
		case "gemini":
			return gemini.ReadUsage(b)
		case "converse":
			return converse.ReadUsage(b)
		case "responses":
			return openairesp.ReadUsage(b)
		}
		u, _ := openaichat.ReadUsage(b)
		return u
	}
	ct := rec.Header().Get("Content-Type")
	var u ir.Usage
	switch {
	case strings.HasPrefix(ct, "application/vnd.amazon.eventstream"):
		rd := awsstream.NewReader(bytes.NewReader(body), 1<<20)
		for {
			ev, err := rd.Next()
			if errors.Is(err, io.EOF) {
				return u
			}
			if err != nil {
				t.Fatal(err)
			}
			switch string(ev.Name) {
			case "metadata":
				u.Merge(converse.ReadUsage(ev.Data))
			case "chunk":
				// InvokeModel's: an Anthropic event in base64.
				var c struct{ Bytes []byte }
				if err := json.Unmarshal(ev.Data, &c); err != nil {
					t.Fatal(err)
				}
				u.Merge(anthropicwire.ReadStreamUsage(anthropicwire.EventKind(nil, c.Bytes), c.Bytes))
			}
		}
	case !strings.HasPrefix(ct, "text/event-stream"):
		return whole(body)
	}
	rd := ssewire.NewReader(bufio.NewReader(bytes.NewReader(body)), 1<<20)
	for {
		ev, err := rd.Next()
		if errors.Is(err, io.EOF) {
			return u
		}
		if err != nil {
			t.Fatal(err)
		}
		if format == "anthropic" {
			u.Merge(anthropicwire.ReadStreamUsage(anthropicwire.EventKind(ev.Name, ev.Data), ev.Data))
		} else if format == "responses" {
			u.Merge(openairesp.ReadStreamUsage(ev.Name, ev.Data))
		} else if v := whole(ev.Data); v.Found {
			u.Merge(v)
		}
	}
}

// checkUsage compares the usage event of the last call with what the mock
// reported, token kind by token kind.
func (f *sdkFixture) checkUsage(t *testing.T, model string, stream bool) {
	t.Helper()
	got := f.nextUsage(t)
	want := f.reported(t, model)
	if !want.Found || want.Input == 0 || want.Output == 0 || want.CacheRead == 0 {
		t.Fatalf("the mock reported %+v: want every kind set", want)
	}
	g := ir.Usage{Input: got.GetInputTokens(), CacheRead: got.GetCacheReadInputTokens(), CacheWrite: got.GetCacheWriteInputTokens(),
		Output: got.GetOutputTokens(), Reasoning: got.GetReasoningTokens(), Found: true}
	if g != want || got.GetModel() != model || got.GetHttpStatus() != 200 || got.GetStream() != stream {
		t.Errorf("usage event %v\nwant tokens %+v for %s (stream %v, status 200)", got, want, model, stream)
	}
}

func openAIClient(f *sdkFixture) openai.Client {
	return openai.NewClient(openaiopt.WithBaseURL(f.url+"/v1"), openaiopt.WithAPIKey(f.key), openaiopt.WithMaxRetries(0))
}

func anthropicClient(f *sdkFixture) anthropic.Client {
	return anthropic.NewClient(anthropicopt.WithBaseURL(f.url), anthropicopt.WithAPIKey(f.key), anthropicopt.WithMaxRetries(0))
}

// The official OpenAI SDK calls every provider kind: plain, streamed, and
// a tool call answered with a tool result; the usage event matches what
// the provider reported.
func TestOpenAISDK(t *testing.T) {
	t.Parallel()
	f := newSDKFixture(t)
	client := openAIClient(f)
	ctx := t.Context()
	weather := openai.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{Name: "get_weather",
		Parameters: shared.FunctionParameters{"type": "object", "properties": map[string]any{"n": map[string]any{"type": "integer"}}}})
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			model := k.name + "-model"
			params := openai.ChatCompletionNewParams{Model: model, Messages: []openai.ChatCompletionMessageParamUnion{
				openai.SystemMessage("be brief"), openai.UserMessage("count to three please")}}
			c, err := client.Chat.Completions.New(ctx, params)
			if err != nil {
				t.Fatalf("plain: %v", err)
			}
			if len(c.Choices) != 1 || !strings.HasPrefix(c.Choices[0].Message.Content, "tok1") || c.Choices[0].FinishReason != "stop" {
				t.Errorf("plain answer = %s", c.RawJSON())
			}
			if c.Usage.PromptTokens == 0 || c.Usage.PromptTokensDetails.CachedTokens != 2 {
				t.Errorf("plain usage = %+v, want prompt tokens with 2 cached", c.Usage)
			}
			f.checkUsage(t, model, false)
			f.checkPath(t, k.name, model, false, false)

			params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
			stream := client.Chat.Completions.NewStreaming(ctx, params)
			var acc openai.ChatCompletionAccumulator
			for stream.Next() {
				acc.AddChunk(stream.Current())
			}
			if err := stream.Err(); err != nil {
				t.Fatalf("stream: %v", err)
			}
			if len(acc.Choices) != 1 || !strings.HasPrefix(acc.Choices[0].Message.Content, "tok1") || acc.Usage.CompletionTokens == 0 {
				t.Errorf("streamed answer = %+v", acc.ChatCompletion)
			}
			f.checkUsage(t, model, true)
			f.checkPath(t, k.name, model, false, true)

			tools := k.name + "-tools"
			tp := openai.ChatCompletionNewParams{Model: tools, Tools: []openai.ChatCompletionToolUnionParam{weather},
				Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("what is the weather in Paris today")}}
			c, err = client.Chat.Completions.New(ctx, tp)
			if err != nil {
				t.Fatalf("tools: %v", err)
			}
			calls := c.Choices[0].Message.ToolCalls
			if len(calls) != 1 || calls[0].Function.Name != "get_weather" || calls[0].ID == "" || c.Choices[0].FinishReason != "tool_calls" {
				t.Fatalf("tool answer = %s", c.RawJSON())
			}
			f.checkUsage(t, tools, false)
			f.checkPath(t, k.name, tools, false, false)
			tp.Messages = append(tp.Messages, c.Choices[0].Message.ToParam(), openai.ToolMessage("sunny and warm", calls[0].ID))
			stream = client.Chat.Completions.NewStreaming(ctx, tp)
			acc = openai.ChatCompletionAccumulator{}
			for stream.Next() {
				acc.AddChunk(stream.Current())
			}
			if err := stream.Err(); err != nil {
				t.Fatalf("tool result turn: %v", err)
			}
			if len(acc.Choices) != 1 || len(acc.Choices[0].Message.ToolCalls) != 1 || acc.Choices[0].Message.ToolCalls[0].Function.Arguments == "" {
				t.Errorf("streamed tool answer = %+v", acc.ChatCompletion)
			}
			f.checkUsage(t, tools, true)
			f.checkPath(t, k.name, tools, false, true)
			// What the provider got holds the tool result, in its own format.
			last, _ := f.mocks[tools].LastRequest()
			if !bytes.Contains(last.Body, []byte("sunny and warm")) || (!strings.Contains(k.name, "gemini") && !bytes.Contains(last.Body, []byte(calls[0].ID))) {
				t.Errorf("the provider did not get the tool result: %s", last.Body)
			}
		})
	}
}

// The official Anthropic SDK calls every provider kind the same way.
func TestAnthropicSDK(t *testing.T) {
	t.Parallel()
	f := newSDKFixture(t)
	client := anthropicClient(f)
	ctx := t.Context()
	weather := anthropic.ToolUnionParam{OfTool: &anthropic.ToolParam{Name: "get_weather",
		InputSchema: anthropic.ToolInputSchemaParam{Properties: map[string]any{"n": map[string]any{"type": "integer"}}}}}
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			model := k.name + "-model"
			params := anthropic.MessageNewParams{Model: model, MaxTokens: 100,
				System:   []anthropic.TextBlockParam{{Text: "be brief"}},
				Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("count to three please"))}}
			m, err := client.Messages.New(ctx, params)
			if err != nil {
				t.Fatalf("plain: %v", err)
			}
			if !strings.HasPrefix(lastText(m.Content), "tok1") || m.StopReason != anthropic.StopReasonEndTurn {
				t.Errorf("plain answer = %s", m.RawJSON())
			}
			if m.Usage.CacheReadInputTokens != 2 || m.Usage.InputTokens == 0 {
				t.Errorf("plain usage = %+v, want input tokens with 2 read from the cache", m.Usage)
			}
			f.checkUsage(t, model, false)
			f.checkPath(t, k.name, model, true, false)

			stream := client.Messages.NewStreaming(ctx, params)
			var acc anthropic.Message
			for stream.Next() {
				if err := acc.Accumulate(stream.Current()); err != nil {
					t.Fatalf("accumulate: %v", err)
				}
			}
			if err := stream.Err(); err != nil {
				t.Fatalf("stream: %v", err)
			}
			if !strings.HasPrefix(lastText(acc.Content), "tok1") || acc.Usage.OutputTokens == 0 {
				t.Errorf("streamed answer = %+v", acc)
			}
			f.checkUsage(t, model, true)
			f.checkPath(t, k.name, model, true, true)

			tools := k.name + "-tools"
			tp := anthropic.MessageNewParams{Model: tools, MaxTokens: 100, Tools: []anthropic.ToolUnionParam{weather},
				Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("what is the weather in Paris today"))}}
			m, err = client.Messages.New(ctx, tp)
			if err != nil {
				t.Fatalf("tools: %v", err)
			}
			var use *anthropic.ContentBlockUnion
			for i := range m.Content {
				if m.Content[i].Type == "tool_use" {
					use = &m.Content[i]
				}
			}
			if use == nil || use.Name != "get_weather" || use.ID == "" || m.StopReason != anthropic.StopReasonToolUse {
				t.Fatalf("tool answer = %s", m.RawJSON())
			}
			f.checkUsage(t, tools, false)
			f.checkPath(t, k.name, tools, true, false)
			tp.Messages = append(tp.Messages, m.ToParam(), anthropic.NewUserMessage(anthropic.NewToolResultBlock(use.ID, "sunny and warm", false)))
			stream = client.Messages.NewStreaming(ctx, tp)
			acc = anthropic.Message{}
			for stream.Next() {
				if err := acc.Accumulate(stream.Current()); err != nil {
					t.Fatalf("accumulate: %v", err)
				}
			}
			if err := stream.Err(); err != nil {
				t.Fatalf("tool result turn: %v", err)
			}
			if acc.StopReason != anthropic.StopReasonToolUse {
				t.Errorf("streamed tool answer = %+v", acc)
			}
			f.checkUsage(t, tools, true)
			f.checkPath(t, k.name, tools, true, true)
			last, _ := f.mocks[tools].LastRequest()
			// Gemini pairs results with calls by name and order: it has no ids.
			if !bytes.Contains(last.Body, []byte("sunny and warm")) || (!strings.Contains(k.name, "gemini") && !bytes.Contains(last.Body, []byte(use.ID))) {
				t.Errorf("the provider did not get the tool result: %s", last.Body)
			}
		})
	}
}

// Errors reach each SDK in its own shape: the Anthropic SDK sees an
// Anthropic error with the gateway's code in a header.
func TestSDKErrors(t *testing.T) {
	t.Parallel()
	f := newSDKFixture(t)
	ac := anthropicClient(f)
	_, err := ac.Messages.New(t.Context(), anthropic.MessageNewParams{Model: "no-such-model", MaxTokens: 10,
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))}})
	var ae *anthropic.Error
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusNotFound || !strings.Contains(ae.RawJSON(), `"not_found_error"`) ||
		ae.Response.Header.Get(httpapi.HeaderErrorCode) != "model_not_found" {
		t.Errorf("unknown model via the Anthropic SDK = %v", err)
	}
	oc := openAIClient(f)
	_, err = oc.Chat.Completions.New(t.Context(), openai.ChatCompletionNewParams{Model: "anthropic-model", N: openai.Int(2),
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}})
	var oe *openai.Error
	if !errors.As(err, &oe) || oe.StatusCode != http.StatusBadRequest || oe.Code != "unsupported_parameter" || oe.Param != "n" {
		t.Errorf("n=2 to an Anthropic provider via the OpenAI SDK = %v", err)
	}
}

// Embeddings (float and base64, batched, with dimensions), legacy
// completions and token counts through the official SDKs.
func TestOtherEndpoints(t *testing.T) {
	t.Parallel()
	f := newSDKFixture(t)
	ctx := t.Context()
	oc := openAIClient(f)
	for _, format := range []openai.EmbeddingNewParamsEncodingFormat{openai.EmbeddingNewParamsEncodingFormatFloat, openai.EmbeddingNewParamsEncodingFormatBase64} {
		e, err := oc.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "openai_compatible-model", Dimensions: openai.Int(8), EncodingFormat: format,
			Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"one two", "three"}}})
		if err != nil {
			t.Fatalf("embeddings (%s): %v", format, err)
		}
		want := providertest.Embedding("one two", 8)
		if len(e.Data) != 2 || len(e.Data[0].Embedding) != 8 || float32(e.Data[0].Embedding[0]) != want[0] || e.Usage.PromptTokens != 3 {
			t.Errorf("embeddings (%s) = %s", format, e.RawJSON())
		}
		if u := f.nextUsage(t); u.GetInputTokens() != 3 || u.GetOutputTokens() != 0 || u.GetHttpStatus() != 200 {
			t.Errorf("embeddings usage event = %v, want 3 input tokens", u)
		}
	}
	c, err := oc.Completions.New(ctx, openai.CompletionNewParams{Model: "openai_compatible-model", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("please say hello to everyone here")}})
	if err != nil {
		t.Fatalf("completions: %v", err)
	}
	if len(c.Choices) != 1 || !strings.HasPrefix(c.Choices[0].Text, "tok1") {
		t.Errorf("completion = %s", c.RawJSON())
	}
	f.checkUsage(t, "openai_compatible-model", false)
	// Embeddings of a provider without them: a clear 400, nothing recorded.
	_, err = oc.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "anthropic-model", Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("x")}})
	var oe *openai.Error
	if !errors.As(err, &oe) || oe.StatusCode != http.StatusBadRequest || oe.Code != "unsupported_for_model" {
		t.Errorf("embeddings from an Anthropic provider = %v, want 400 unsupported_for_model", err)
	}
	f.nextUsage(t) // the refused embeddings call was routed: it is recorded with its 400

	ac := anthropicClient(f)
	msgs := []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("one two three four five"))}
	n, err := ac.Messages.CountTokens(ctx, anthropic.MessageCountTokensParams{Model: "anthropic-model", Messages: msgs})
	if err != nil || n.InputTokens != 5 {
		t.Errorf("count_tokens by the provider = %+v, %v; want 5", n, err)
	}
	var resp *http.Response
	n, err = ac.Messages.CountTokens(ctx, anthropic.MessageCountTokensParams{Model: "openai_compatible-model", Messages: msgs}, anthropicopt.WithResponseInto(&resp))
	if err != nil || n.InputTokens < 5 || n.InputTokens > 20 || resp.Header.Get("Moat-Token-Count") != "estimate" {
		t.Errorf("count_tokens estimated = %+v, %v, header %q; want about 9, marked estimate", n, err, resp.Header.Get("Moat-Token-Count"))
	}
	// Counting bills nothing: the next usage event is the next call's.
	if _, err := oc.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "openai-model", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("a b c d")}}); err != nil {
		t.Fatal(err)
	}
	if u := f.nextUsage(t); u.GetModel() != "openai-model" {
		t.Errorf("usage event after count_tokens is for %s, want openai-model", u.GetModel())
	}
}

// lastText is the text of the last text block (providers that reason put
// a thinking block first).
func lastText(blocks []anthropic.ContentBlockUnion) string {
	text := ""
	for _, b := range blocks {
		if b.Type == "text" {
			text = b.Text
		}
	}
	return text
}

// TestProvider reaches every kind with the minimal request and says why a
// provider fails, never with its credential.
func TestTestProvider(t *testing.T) {
	t.Parallel()
	f := newSDKFixture(t, withFailingProviders())
	ctx := t.Context()
	for _, k := range kinds {
		res, err := f.gw.TestProvider(ctx, org+"/providers/"+k.name+"-model", "")
		if err != nil || res.Class != gateway.TestOK || res.HTTPStatus != http.StatusOK || res.Latency <= 0 || !strings.HasSuffix(res.Model, k.name+"-model") {
			t.Errorf("TestProvider(%s) = %+v, %v; want success", k.name, res, err)
		}
	}
	for name, want := range map[string]gateway.ErrorClass{
		"wrongkey-model": gateway.TestCredential,
		"down-model":     gateway.TestUnreachable,
	} {
		res, err := f.gw.TestProvider(ctx, org+"/providers/"+name, "")
		if err != nil || res.Class != want || res.Message == "" || strings.Contains(res.Message, upstreamCredential) {
			t.Errorf("TestProvider(%s) = %+v, %v; want class %d with a message", name, res, err, want)
		}
	}
	if _, err := f.gw.TestProvider(ctx, org+"/providers/nope", ""); !errors.Is(err, gateway.ErrNoProvider) {
		t.Errorf("TestProvider(nope) = %v, want ErrNoProvider", err)
	}
	// A test call records no usage: the next event is the next call's.
	oc := openAIClient(f)
	if _, err := oc.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "openai-model", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("a b c")}}); err != nil {
		t.Fatal(err)
	}
	if u := f.nextUsage(t); u.GetModel() != "openai-model" {
		t.Errorf("usage event after the tests is for %s, want openai-model", u.GetModel())
	}
}

// The official OpenAI SDK's Responses API reaches every provider kind:
// natively where the provider serves it (OpenAI, Azure), translated
// elsewhere; plain and streamed, the usage event matching the provider.
func TestResponsesSDK(t *testing.T) {
	t.Parallel()
	f := newSDKFixture(t)
	oc := openAIClient(f)
	ctx := t.Context()
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			model := k.name + "-model"
			params := responses.ResponseNewParams{Model: model, Instructions: openai.String("be brief"),
				Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("count to three please")}}
			r, err := oc.Responses.New(ctx, params)
			if err != nil {
				t.Fatalf("plain: %v", err)
			}
			if !strings.HasPrefix(r.OutputText(), "tok1") || r.Status != responses.ResponseStatusCompleted || r.Usage.InputTokens == 0 {
				t.Errorf("plain answer = %s", r.RawJSON())
			}
			f.checkUsage(t, model, false)
			stream := oc.Responses.NewStreaming(ctx, params)
			var text strings.Builder
			var completed *responses.Response
			for stream.Next() {
				ev := stream.Current()
				switch ev.Type {
				case "response.output_text.delta":
					text.WriteString(ev.Delta)
				case "response.completed":
					c := ev.AsResponseCompleted().Response
					completed = &c
				}
			}
			if err := stream.Err(); err != nil {
				t.Fatalf("stream: %v", err)
			}
			if !strings.HasPrefix(text.String(), "tok1") || completed == nil || completed.Usage.OutputTokens == 0 {
				t.Errorf("streamed answer %q, completed %v", text.String(), completed)
			}
			f.checkUsage(t, model, true)
		})
	}
	// What needs stored state is refused on a translated path, naming it.
	_, err := oc.Responses.New(ctx, responses.ResponseNewParams{Model: "anthropic-model", PreviousResponseID: openai.String("resp_1"),
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("and then?")}})
	var oe *openai.Error
	if !errors.As(err, &oe) || oe.StatusCode != http.StatusBadRequest || oe.Param != "previous_response_id" {
		t.Errorf("previous_response_id to Anthropic = %v, want 400 naming it", err)
	}
	f.nextUsage(t) // routed, refused: recorded with its 400
}
