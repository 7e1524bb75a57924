package config

import (
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/url"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits of provider credentials.
const (
	maxAPIKey = 4096 // bytes of visible ASCII
	// maxJSONCredential bounds credentials that are JSON documents: a
	// Google service-account key is about 2.3 KB, so this leaves room
	// without letting a provider row grow without bound.
	maxJSONCredential = 16 << 10 // bytes
)

// credentialKind groups the types that accept the same credentials. A
// stored credential stays valid when the type changes within a group; it
// cannot be re-checked otherwise, because config seals credentials and
// never opens them.
type credentialKind int

const (
	apiKeyCredential         credentialKind = iota + 1 // an API key
	azureCredential                                    // an API key or Entra ID client credentials
	serviceAccountCredential                           // a Google service-account key
	awsCredential                                      // nothing, AWS access keys or a Bedrock API key
)

// typeRules are the rules that differ by provider type.
type typeRules struct {
	// api is the type's name in the API, which messages use.
	api string
	// baseURLRequired is set for types without a public endpoint that a
	// gateway could default to.
	baseURLRequired bool
	credential      credentialKind
}

var providerTypes = map[ProviderType]typeRules{
	ProviderOpenAICompatible: {api: "TYPE_OPENAI_COMPATIBLE", baseURLRequired: true, credential: apiKeyCredential},
	ProviderOpenAI:           {api: "TYPE_OPENAI", credential: apiKeyCredential},
	ProviderAzureOpenAI:      {api: "TYPE_AZURE_OPENAI", baseURLRequired: true, credential: azureCredential},
	ProviderAnthropic:        {api: "TYPE_ANTHROPIC", credential: apiKeyCredential},
	ProviderGemini:           {api: "TYPE_GEMINI", credential: apiKeyCredential},
	ProviderVertexAI:         {api: "TYPE_VERTEX_AI", credential: serviceAccountCredential},
	ProviderBedrock:          {api: "TYPE_BEDROCK", credential: awsCredential},
}

// typeList is every type's API name, for the message that refuses others.
const typeList = "TYPE_OPENAI_COMPATIBLE, TYPE_OPENAI, TYPE_AZURE_OPENAI, TYPE_ANTHROPIC, TYPE_GEMINI, TYPE_VERTEX_AI or TYPE_BEDROCK"

func checkProviderType(field string, t ProviderType) error {
	if _, ok := providerTypes[t]; !ok {
		return invalid(field, "must be one of %s", typeList)
	}
	return nil
}

var (
	// azureAPIVersion is a dated Azure OpenAI API version; the date itself
	// is checked with time.Parse.
	azureAPIVersion = regexp.MustCompile(`^([0-9]{4}-[0-9]{2}-[0-9]{2})(-preview)?$`)
	// vertexProject is a Google Cloud project id or number, optionally
	// domain-scoped (example.com:my-project). It becomes a URL path
	// segment, so nothing that could leave the segment is allowed.
	vertexProject = regexp.MustCompile(`^([a-z0-9][a-z0-9.-]*[a-z0-9]:)?[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
	// vertexLocation and bedrockRegion become part of a host name, so they
	// are held to DNS-label characters.
	vertexLocation = regexp.MustCompile(`^[a-z][a-z0-9-]{0,48}[a-z0-9]$`)
	bedrockRegion  = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$`)
)

// checkProvider checks the rules that tie a provider's fields to its type,
// on the provider as it will be stored: after an update has been applied,
// so that changing only the type (or only base_url) cannot leave a
// provider its new type refuses. The type itself was checked already.
func checkProvider(p Provider) error {
	rules := providerTypes[p.Type]
	if p.BaseURL == "" && rules.baseURLRequired {
		return invalid("provider.base_url", "is required for %s", rules.api)
	}
	if p.Type == ProviderAzureOpenAI && p.BaseURL != "" && azureAPIPath(p.BaseURL) {
		// The gateway appends /openai/v1/... (or /openai/deployments/...)
		// itself; a base URL that already has it would double it.
		return invalid("provider.base_url", "must be the resource endpoint, e.g. https://myres.openai.azure.com, without the /openai path")
	}
	settings := []struct {
		field string
		set   bool
		owner ProviderType
	}{
		{"provider.azure", p.Azure != nil, ProviderAzureOpenAI},
		{"provider.vertex", p.Vertex != nil, ProviderVertexAI},
		{"provider.bedrock", p.Bedrock != nil, ProviderBedrock},
	}
	for _, s := range settings {
		if s.set && s.owner != p.Type {
			return invalid(s.field, "applies only to %s providers, not %s; leave it unset (on update, name it in update_mask without a value to clear it)",
				providerTypes[s.owner].api, rules.api)
		}
	}
	switch p.Type {
	case ProviderAzureOpenAI:
		if p.Azure != nil {
			return checkAzureAPIVersion("provider.azure.api_version", p.Azure.APIVersion)
		}
	case ProviderVertexAI:
		if p.Vertex == nil {
			return invalid("provider.vertex", "is required for TYPE_VERTEX_AI: set project and location")
		}
		if p.Vertex.Project == "" {
			return invalid("provider.vertex.project", "is required")
		}
		if len(p.Vertex.Project) > 128 || !vertexProject.MatchString(p.Vertex.Project) {
			return invalid("provider.vertex.project", "must be a Google Cloud project id or number: lowercase letters, digits and hyphens, with a domain prefix such as example.com: for domain-scoped projects")
		}
		if p.Vertex.Location == "" {
			return invalid("provider.vertex.location", "is required")
		}
		if !vertexLocation.MatchString(p.Vertex.Location) {
			return invalid("provider.vertex.location", "must be a Vertex AI location such as us-central1 or global: lowercase letters, digits and hyphens")
		}
	case ProviderBedrock:
		if p.Bedrock == nil {
			return invalid("provider.bedrock", "is required for TYPE_BEDROCK: set region")
		}
		if p.Bedrock.Region == "" {
			return invalid("provider.bedrock.region", "is required")
		}
		if len(p.Bedrock.Region) > 32 || !bedrockRegion.MatchString(p.Bedrock.Region) {
			return invalid("provider.bedrock.region", "must be an AWS region such as us-east-1")
		}
	}
	return nil
}

// azureAPIPath reports whether a base URL already ends in the path the
// gateway appends to an Azure resource endpoint.
func azureAPIPath(baseURL string) bool {
	u, err := url.Parse(baseURL)
	if err != nil {
		return false // checkBaseURL reports it
	}
	path := strings.ToLower(strings.TrimRight(u.Path, "/"))
	return strings.HasSuffix(path, "/openai") || strings.HasSuffix(path, "/openai/v1") || strings.Contains(path, "/openai/deployments")
}

func checkAzureAPIVersion(field, v string) error {
	if v == "" {
		return nil
	}
	m := azureAPIVersion.FindStringSubmatch(v)
	if m == nil {
		return invalid(field, "must be an API version such as 2024-10-21 or 2025-04-01-preview, or empty for the v1 API")
	}
	if _, err := time.Parse(time.DateOnly, m[1]); err != nil {
		return invalid(field, "must start with a valid date, such as 2024-10-21")
	}
	return nil
}

// The reasons credential checks give. They never quote the value, not even
// a part of it: a refused credential is usually a real secret with a typo.
const (
	apiKeyRule         = "must be visible ASCII characters without spaces"
	serviceAccountRule = `must be a service-account key JSON (type "service_account" with client_email and private_key)`
	awsRule            = `must be empty (the default AWS credentials), a Bedrock API key, or a JSON object with non-empty "accessKeyId" and "secretAccessKey" and an optional "sessionToken"`
	entraRule          = `must be an API key, or a JSON object with non-empty "tenantId", "clientId" and "clientSecret"`
)

// checkCredential checks credential against the formats providers of type
// t accept (see Provider.credential in the API). The empty credential means
// none: allowed for every type but TYPE_VERTEX_AI, whose requests can only
// be authorized with a key.
func checkCredential(field string, t ProviderType, s string) error {
	switch providerTypes[t].credential {
	case serviceAccountCredential:
		return checkServiceAccountKey(field, s)
	case azureCredential:
		if jsonObject(s) {
			return checkEntraCredential(field, s)
		}
		return checkAPIKey(field, s)
	case awsCredential:
		if jsonObject(s) {
			return checkAWSKeys(field, s)
		}
		return checkAPIKey(field, s)
	default:
		return checkAPIKey(field, s)
	}
}

// checkAPIKey allows what an HTTP Authorization header can carry as a
// token: visible ASCII without spaces. Anything else (a newline in
// particular) would let a credential inject headers at the gateway.
func checkAPIKey(field, s string) error {
	if len(s) > maxAPIKey {
		return invalid(field, "must be at most %d bytes", maxAPIKey)
	}
	if !visibleASCII(s) {
		return invalid(field, apiKeyRule)
	}
	return nil
}

func visibleASCII(s string) bool {
	for i := range len(s) {
		if s[i] <= 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// jsonObject reports whether s looks like a JSON object, which is how the
// types that also take an API key tell the two apart: no API key starts
// with a brace.
func jsonObject(s string) bool {
	return strings.HasPrefix(strings.TrimLeft(s, " \t\r\n"), "{")
}

// decodeJSON decodes s, one JSON object and nothing after it, into v.
// strict refuses fields v does not have: the small fixed formats refuse
// them so that a misspelt key is reported rather than ignored.
func decodeJSON(s string, v any, strict bool) bool {
	if !utf8.ValidString(s) {
		return false
	}
	dec := json.NewDecoder(strings.NewReader(s))
	if strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		return false
	}
	var rest json.RawMessage
	return errors.Is(dec.Decode(&rest), io.EOF)
}

// checkServiceAccountKey checks the JSON key file Google Cloud issues for a
// service account. Only what the gateway needs to mint access tokens is
// checked; the other fields of the file (project_id, private_key_id...)
// are allowed and ignored.
func checkServiceAccountKey(field, s string) error {
	if len(s) > maxJSONCredential {
		return invalid(field, "must be at most %d bytes", maxJSONCredential)
	}
	var key struct {
		Type        string `json:"type"`
		ClientEmail string `json:"client_email"`
		PrivateKey  string `json:"private_key"`
		TokenURI    string `json:"token_uri"`
	}
	if !jsonObject(s) || !decodeJSON(s, &key, false) || key.Type != "service_account" || key.ClientEmail == "" || !pemPrivateKey(key.PrivateKey) {
		return invalid(field, serviceAccountRule)
	}
	if key.TokenURI != "" {
		// The gateway posts a signed assertion there: anything but an https
		// URL would hand it to whoever listens.
		u, err := url.Parse(key.TokenURI)
		if err != nil || u.Scheme != "https" || u.Hostname() == "" || u.User != nil {
			return invalid(field, "must be a service-account key JSON whose token_uri, when set, is an https URL")
		}
	}
	return nil
}

// pemPrivateKey reports whether s holds a PEM block of a private key.
func pemPrivateKey(s string) bool {
	block, _ := pem.Decode([]byte(s))
	return block != nil && strings.HasSuffix(block.Type, "PRIVATE KEY") && len(block.Bytes) > 0
}

// checkAWSKeys checks AWS access keys. Their values travel in request
// headers (the signature's credential scope, X-Amz-Security-Token), so they
// obey the API key rule.
func checkAWSKeys(field, s string) error {
	if len(s) > maxJSONCredential {
		return invalid(field, "must be at most %d bytes", maxJSONCredential)
	}
	var keys struct {
		AccessKeyID     string `json:"accessKeyId"`
		SecretAccessKey string `json:"secretAccessKey"`
		SessionToken    string `json:"sessionToken"`
	}
	if !decodeJSON(s, &keys, true) || keys.AccessKeyID == "" || keys.SecretAccessKey == "" {
		return invalid(field, awsRule)
	}
	if !visibleASCII(keys.AccessKeyID) || !visibleASCII(keys.SecretAccessKey) || !visibleASCII(keys.SessionToken) {
		return invalid(field, "accessKeyId, secretAccessKey and sessionToken must be visible ASCII characters without spaces")
	}
	return nil
}

// entraTenant is a tenant id or domain; it becomes a path segment of the
// token endpoint.
var entraTenant = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.-]{0,253}[A-Za-z0-9]$`)

// checkEntraCredential checks Microsoft Entra ID client credentials, which
// the gateway exchanges for access tokens.
func checkEntraCredential(field, s string) error {
	if len(s) > maxJSONCredential {
		return invalid(field, "must be at most %d bytes", maxJSONCredential)
	}
	var c struct {
		TenantID     string `json:"tenantId"`
		ClientID     string `json:"clientId"`
		ClientSecret string `json:"clientSecret"`
	}
	if !decodeJSON(s, &c, true) || c.TenantID == "" || c.ClientID == "" || c.ClientSecret == "" {
		return invalid(field, entraRule)
	}
	if !entraTenant.MatchString(c.TenantID) || !visibleASCII(c.ClientID) || !visibleASCII(c.ClientSecret) {
		return invalid(field, "tenantId must be a tenant id or domain, and clientId and clientSecret visible ASCII characters without spaces")
	}
	return nil
}
