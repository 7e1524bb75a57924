package config

import (
	"encoding/json"
	"encoding/pem"
	"strings"
	"testing"
)

func TestCheckProviderType(t *testing.T) {
	t.Parallel()
	for typ := range providerTypes {
		if err := checkProviderType("provider.type", typ); err != nil {
			t.Errorf("checkProviderType(%q) = %v, want nil", typ, err)
		}
	}
	for _, typ := range []ProviderType{"", "OPENAI", "cohere"} {
		if err := checkProviderType("provider.type", typ); !strings.Contains(reason(err, "provider.type"), "TYPE_BEDROCK") {
			t.Errorf("checkProviderType(%q) = %v, want a validation error listing the types", typ, err)
		}
	}
}

func TestCheckProvider(t *testing.T) {
	t.Parallel()
	vertex := &VertexSettings{Project: "my-project", Location: "us-central1"}
	bedrock := &BedrockSettings{Region: "us-east-1"}
	tests := []struct {
		name  string
		p     Provider
		field string // "" for valid
		want  string // a word of the reason
	}{
		// Every type, with what it needs and no more.
		{"openai compatible", Provider{Type: ProviderOpenAICompatible, BaseURL: "http://vllm:8000/v1"}, "", ""},
		{"openai default endpoint", Provider{Type: ProviderOpenAI}, "", ""},
		{"openai through a proxy", Provider{Type: ProviderOpenAI, BaseURL: "https://proxy.example.com/v1"}, "", ""},
		{"azure", Provider{Type: ProviderAzureOpenAI, BaseURL: "https://myres.openai.azure.com"}, "", ""},
		{"azure dated version", Provider{Type: ProviderAzureOpenAI, BaseURL: "https://myres.openai.azure.com", Azure: &AzureSettings{APIVersion: "2024-10-21"}}, "", ""},
		{"azure preview version", Provider{Type: ProviderAzureOpenAI, BaseURL: "https://myres.openai.azure.com", Azure: &AzureSettings{APIVersion: "2025-04-01-preview"}}, "", ""},
		{"azure v1 api", Provider{Type: ProviderAzureOpenAI, BaseURL: "https://myres.openai.azure.com", Azure: &AzureSettings{}}, "", ""},
		{"azure behind a gateway path", Provider{Type: ProviderAzureOpenAI, BaseURL: "https://apim.example.com/aoai"}, "", ""},
		{"anthropic", Provider{Type: ProviderAnthropic}, "", ""},
		{"gemini", Provider{Type: ProviderGemini}, "", ""},
		{"vertex", Provider{Type: ProviderVertexAI, Vertex: vertex}, "", ""},
		{"vertex global", Provider{Type: ProviderVertexAI, Vertex: &VertexSettings{Project: "my-project", Location: "global"}}, "", ""},
		{"vertex project number", Provider{Type: ProviderVertexAI, Vertex: &VertexSettings{Project: "123456789012", Location: "europe-west4"}}, "", ""},
		{"vertex domain-scoped project", Provider{Type: ProviderVertexAI, Vertex: &VertexSettings{Project: "example.com:my-project", Location: "us-east5"}}, "", ""},
		{"vertex private endpoint", Provider{Type: ProviderVertexAI, BaseURL: "https://psc.example.internal", Vertex: vertex}, "", ""},
		{"bedrock", Provider{Type: ProviderBedrock, Bedrock: bedrock}, "", ""},
		{"bedrock govcloud", Provider{Type: ProviderBedrock, Bedrock: &BedrockSettings{Region: "us-gov-west-1"}}, "", ""},

		// base_url.
		{"openai compatible without base_url", Provider{Type: ProviderOpenAICompatible}, "provider.base_url", "required for TYPE_OPENAI_COMPATIBLE"},
		{"azure without base_url", Provider{Type: ProviderAzureOpenAI}, "provider.base_url", "required for TYPE_AZURE_OPENAI"},
		{"azure base_url with the api path", Provider{Type: ProviderAzureOpenAI, BaseURL: "https://myres.openai.azure.com/openai/v1"}, "provider.base_url", "without the /openai path"},
		{"azure base_url with a deployment", Provider{Type: ProviderAzureOpenAI, BaseURL: "https://myres.openai.azure.com/openai/deployments/gpt"}, "provider.base_url", "without the /openai path"},

		// Settings of the type.
		{"azure version not a version", Provider{Type: ProviderAzureOpenAI, BaseURL: "https://r.openai.azure.com", Azure: &AzureSettings{APIVersion: "v1"}}, "provider.azure.api_version", "2024-10-21"},
		{"azure version not a date", Provider{Type: ProviderAzureOpenAI, BaseURL: "https://r.openai.azure.com", Azure: &AzureSettings{APIVersion: "2024-13-01"}}, "provider.azure.api_version", "valid date"},
		{"azure version other suffix", Provider{Type: ProviderAzureOpenAI, BaseURL: "https://r.openai.azure.com", Azure: &AzureSettings{APIVersion: "2024-10-21-beta"}}, "provider.azure.api_version", "2025-04-01-preview"},
		{"vertex without settings", Provider{Type: ProviderVertexAI}, "provider.vertex", "required for TYPE_VERTEX_AI"},
		{"vertex without project", Provider{Type: ProviderVertexAI, Vertex: &VertexSettings{Location: "us-central1"}}, "provider.vertex.project", "required"},
		{"vertex project with a slash", Provider{Type: ProviderVertexAI, Vertex: &VertexSettings{Project: "p/../x", Location: "us-central1"}}, "provider.vertex.project", "project id"},
		{"vertex project upper case", Provider{Type: ProviderVertexAI, Vertex: &VertexSettings{Project: "My-Project", Location: "us-central1"}}, "provider.vertex.project", "project id"},
		{"vertex without location", Provider{Type: ProviderVertexAI, Vertex: &VertexSettings{Project: "p1"}}, "provider.vertex.location", "required"},
		{"vertex location upper case", Provider{Type: ProviderVertexAI, Vertex: &VertexSettings{Project: "p1", Location: "US-Central1"}}, "provider.vertex.location", "us-central1"},
		{"vertex location with a dot", Provider{Type: ProviderVertexAI, Vertex: &VertexSettings{Project: "p1", Location: "evil.example.com"}}, "provider.vertex.location", "hyphens"},
		{"bedrock without settings", Provider{Type: ProviderBedrock}, "provider.bedrock", "required for TYPE_BEDROCK"},
		{"bedrock without region", Provider{Type: ProviderBedrock, Bedrock: &BedrockSettings{}}, "provider.bedrock.region", "required"},
		{"bedrock region upper case", Provider{Type: ProviderBedrock, Bedrock: &BedrockSettings{Region: "US-EAST-1"}}, "provider.bedrock.region", "us-east-1"},
		{"bedrock region with a dot", Provider{Type: ProviderBedrock, Bedrock: &BedrockSettings{Region: "us-east-1.evil.com"}}, "provider.bedrock.region", "us-east-1"},
		{"bedrock region without a number", Provider{Type: ProviderBedrock, Bedrock: &BedrockSettings{Region: "useast"}}, "provider.bedrock.region", "us-east-1"},

		// Settings of another type.
		{"openai with vertex settings", Provider{Type: ProviderOpenAI, Vertex: vertex}, "provider.vertex", "only to TYPE_VERTEX_AI"},
		{"azure with bedrock settings", Provider{Type: ProviderAzureOpenAI, BaseURL: "https://r.openai.azure.com", Bedrock: bedrock}, "provider.bedrock", "only to TYPE_BEDROCK"},
		{"bedrock with azure settings", Provider{Type: ProviderBedrock, Bedrock: bedrock, Azure: &AzureSettings{}}, "provider.azure", "only to TYPE_AZURE_OPENAI"},
		{"vertex with bedrock settings too", Provider{Type: ProviderVertexAI, Vertex: vertex, Bedrock: bedrock}, "provider.bedrock", "not TYPE_VERTEX_AI"},
		{"openai compatible with azure settings", Provider{Type: ProviderOpenAICompatible, BaseURL: "http://x", Azure: &AzureSettings{}}, "provider.azure", "only to TYPE_AZURE_OPENAI"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := checkProvider(tt.p)
			switch {
			case tt.field == "" && err != nil:
				t.Errorf("checkProvider(%+v) = %v, want nil", tt.p, err)
			case tt.field != "" && !strings.Contains(reason(err, tt.field), tt.want):
				t.Errorf("checkProvider(%+v) = %v, want a validation error on %s mentioning %q", tt.p, err, tt.field, tt.want)
			}
		})
	}
}

// serviceAccountKey returns a service-account key file as Google Cloud
// issues it (indented, newlines and all), with edit applied to its fields.
func serviceAccountKey(t *testing.T, edit func(map[string]any)) string {
	t.Helper()
	key := map[string]any{
		"type":                        "service_account",
		"project_id":                  "my-project",
		"private_key_id":              "0123456789abcdef0123456789abcdef01234567",
		"private_key":                 string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("SECRET-not-really-a-key")})),
		"client_email":                "moat@my-project.iam.gserviceaccount.com",
		"client_id":                   "123456789012345678901",
		"auth_uri":                    "https://accounts.google.com/o/oauth2/auth",
		"token_uri":                   "https://oauth2.googleapis.com/token",
		"auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
		"universe_domain":             "googleapis.com",
	}
	if edit != nil {
		edit(key)
	}
	b, err := json.MarshalIndent(key, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b) + "\n"
}

func TestCheckCredential(t *testing.T) {
	t.Parallel()
	sa := serviceAccountKey(t, nil)
	tests := []struct {
		name string
		typ  ProviderType
		cred string
		want string // "" for valid, else a word of the reason
	}{
		// The API-key types keep the API key rule.
		{"openai compatible key", ProviderOpenAICompatible, "sk-abc_DEF.123", ""},
		{"openai compatible none", ProviderOpenAICompatible, "", ""},
		{"openai key", ProviderOpenAI, "sk-proj-abc123", ""},
		{"anthropic key", ProviderAnthropic, "sk-ant-api03-abc", ""},
		{"gemini key", ProviderGemini, "AIzaSyA-abc", ""},
		{"gemini none", ProviderGemini, "", ""},
		{"openai key with a newline", ProviderOpenAI, "sk-SECRET\nX-Evil: 1", "visible ASCII"},
		{"anthropic key too long", ProviderAnthropic, strings.Repeat("k", maxAPIKey+1), "at most 4096"},
		{"gemini given a service-account key", ProviderGemini, sa, "visible ASCII"},

		// Azure: an API key or Entra ID client credentials.
		{"azure key", ProviderAzureOpenAI, "0123456789abcdef0123456789abcdef", ""},
		{"azure none", ProviderAzureOpenAI, "", ""},
		{"azure entra", ProviderAzureOpenAI, `{"tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47", "clientId": "c1", "clientSecret": "SECRET~x.y_z"}`, ""},
		{"azure entra tenant domain", ProviderAzureOpenAI, "{\n  \"tenantId\": \"contoso.onmicrosoft.com\",\n  \"clientId\": \"c1\",\n  \"clientSecret\": \"s\"\n}", ""},
		{"azure entra without secret", ProviderAzureOpenAI, `{"tenantId": "t1", "clientId": "c1"}`, "clientSecret"},
		{"azure entra misspelt field", ProviderAzureOpenAI, `{"tenantId": "t1", "clientId": "c1", "clientSecret": "SECRET", "secret": "x"}`, "clientSecret"},
		{"azure entra tenant with a slash", ProviderAzureOpenAI, `{"tenantId": "t1/../x", "clientId": "c1", "clientSecret": "SECRET"}`, "tenantId"},
		{"azure entra secret with a newline", ProviderAzureOpenAI, `{"tenantId": "t1", "clientId": "c1", "clientSecret": "SECRET\n"}`, "visible ASCII"},
		{"azure entra not JSON", ProviderAzureOpenAI, `{"tenantId": SECRET`, "tenantId"},
		{"azure key with a space", ProviderAzureOpenAI, "SECRET key", "visible ASCII"},

		// Vertex: a service-account key, required.
		{"vertex service account", ProviderVertexAI, sa, ""},
		{"vertex without token_uri", ProviderVertexAI, serviceAccountKey(t, func(m map[string]any) { delete(m, "token_uri") }), ""},
		{"vertex large key file", ProviderVertexAI, serviceAccountKey(t, func(m map[string]any) { m["padding"] = strings.Repeat("p", 14<<10) }), ""},
		{"vertex none", ProviderVertexAI, "", "service-account key JSON"},
		{"vertex API key", ProviderVertexAI, "AIzaSyA-SECRET", "service-account key JSON"},
		{"vertex not a service account", ProviderVertexAI, serviceAccountKey(t, func(m map[string]any) { m["type"] = "authorized_user" }), `type "service_account"`},
		{"vertex without client_email", ProviderVertexAI, serviceAccountKey(t, func(m map[string]any) { delete(m, "client_email") }), "client_email"},
		{"vertex private key not PEM", ProviderVertexAI, serviceAccountKey(t, func(m map[string]any) { m["private_key"] = "SECRET" }), "private_key"},
		{"vertex private key not a string", ProviderVertexAI, serviceAccountKey(t, func(m map[string]any) { m["private_key"] = 7 }), "private_key"},
		{"vertex public key", ProviderVertexAI, serviceAccountKey(t, func(m map[string]any) {
			m["private_key"] = string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("SECRET")}))
		}), "private_key"},
		{"vertex token_uri not https", ProviderVertexAI, serviceAccountKey(t, func(m map[string]any) { m["token_uri"] = "http://evil.example.com/token" }), "token_uri"},
		{"vertex token_uri relative", ProviderVertexAI, serviceAccountKey(t, func(m map[string]any) { m["token_uri"] = "/token" }), "token_uri"},
		{"vertex JSON array", ProviderVertexAI, `[` + sa + `]`, "service-account key JSON"},
		{"vertex trailing data", ProviderVertexAI, sa + `{"SECRET": 1}`, "service-account key JSON"},
		{"vertex key file too large", ProviderVertexAI, serviceAccountKey(t, func(m map[string]any) { m["padding"] = strings.Repeat("p", 16<<10) }), "at most 16384"},

		// Bedrock: nothing, AWS access keys, or a Bedrock API key.
		{"bedrock default credentials", ProviderBedrock, "", ""},
		{"bedrock API key", ProviderBedrock, "ABSKQmVkcm9ja0FQSUtleS1hYmM=", ""},
		{"bedrock access keys", ProviderBedrock, `{"accessKeyId": "AKIAIOSFODNN7EXAMPLE", "secretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}`, ""},
		{"bedrock session keys", ProviderBedrock, "{\n\"accessKeyId\": \"ASIA1\",\n\"secretAccessKey\": \"s\",\n\"sessionToken\": \"IQoJb3JpZ2luX2Vj+/=\"\n}", ""},
		{"bedrock access keys without secret", ProviderBedrock, `{"accessKeyId": "AKIASECRET"}`, "secretAccessKey"},
		{"bedrock access keys with an empty secret", ProviderBedrock, `{"accessKeyId": "AKIASECRET", "secretAccessKey": ""}`, "secretAccessKey"},
		{"bedrock access keys misspelt", ProviderBedrock, `{"accessKeyId": "AKIA1", "secretKey": "SECRET"}`, "secretAccessKey"},
		{"bedrock session token with a newline", ProviderBedrock, `{"accessKeyId": "AKIA1", "secretAccessKey": "SECRET", "sessionToken": "a\r\nX-Evil: 1"}`, "visible ASCII"},
		{"bedrock access keys not strings", ProviderBedrock, `{"accessKeyId": 1, "secretAccessKey": "SECRET"}`, "accessKeyId"},
		{"bedrock given a service-account key", ProviderBedrock, sa, "accessKeyId"},
		{"bedrock API key with a space", ProviderBedrock, "ABSK SECRET", "visible ASCII"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := checkCredential("provider.credential", tt.typ, tt.cred)
			if tt.want == "" {
				if err != nil {
					t.Errorf("checkCredential(%s) = %v, want nil", tt.typ, err)
				}
				return
			}
			if !strings.Contains(reason(err, "provider.credential"), tt.want) {
				t.Errorf("checkCredential(%s) = %v, want a validation error on provider.credential mentioning %q", tt.typ, err, tt.want)
			}
			// The refused values hold SECRET (or a key part) somewhere; no
			// message may quote any of it.
			for _, part := range []string{"SECRET", "AKIA", "BEGIN", "evil"} {
				if err != nil && strings.Contains(err.Error(), part) {
					t.Errorf("checkCredential(%s) = %v, quotes the credential", tt.typ, err)
				}
			}
		})
	}
}

func TestCheckCredentialServiceAccountMessage(t *testing.T) {
	t.Parallel()
	err := checkCredential("credential", ProviderVertexAI, "sk-not-a-key")
	const want = `credential: must be a service-account key JSON (type "service_account" with client_email and private_key)`
	if err == nil || err.Error() != want {
		t.Errorf("checkCredential(vertex, API key) = %v, want %s", err, want)
	}
}
