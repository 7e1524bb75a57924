package grpcapi_test

import (
	"encoding/json"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/moat-ai/moat/libs/secretbox"
	configv1 "github.com/moat-ai/moat/proto/gen/go/moat/config/v1"
	"github.com/moat-ai/moat/services/config/internal/grpcapi"
)

// serviceAccountKey returns a service-account key file shaped as Google
// Cloud issues them.
func serviceAccountKey(t *testing.T) string {
	t.Helper()
	b, err := json.MarshalIndent(map[string]string{
		"type":           "service_account",
		"project_id":     "my-project",
		"private_key_id": "0123456789abcdef",
		"private_key":    string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("not really a key")})),
		"client_email":   "moat@my-project.iam.gserviceaccount.com",
		"token_uri":      "https://oauth2.googleapis.com/token",
	}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Every provider type can be created with what it needs, reads back with
// its settings, and reaches gateways with them and its sealed credential.
func TestProviderTypes(t *testing.T) {
	t.Parallel()
	h := newHarness(t, grpcapi.Options{})
	c, ctx := h.client, h.admin
	if _, err := c.CreateOrganization(ctx, &configv1.CreateOrganizationRequest{OrganizationId: "acme"}); err != nil {
		t.Fatal(err)
	}
	sa := serviceAccountKey(t)
	tests := []struct {
		id         string
		provider   *configv1.Provider // as created, credential included
		credential string
	}{
		{"compat", &configv1.Provider{Type: configv1.Provider_TYPE_OPENAI_COMPATIBLE, BaseUrl: "http://vllm.internal:8000/v1"}, "sk-local"},
		{"openai", &configv1.Provider{Type: configv1.Provider_TYPE_OPENAI}, "sk-proj-abc"},
		{"azure", &configv1.Provider{Type: configv1.Provider_TYPE_AZURE_OPENAI, BaseUrl: "https://myres.openai.azure.com/",
			Azure: &configv1.AzureSettings{ApiVersion: "2025-04-01-preview"}}, "0123456789abcdef"},
		{"azure-entra", &configv1.Provider{Type: configv1.Provider_TYPE_AZURE_OPENAI, BaseUrl: "https://myres.openai.azure.com"},
			`{"tenantId": "contoso.onmicrosoft.com", "clientId": "c1", "clientSecret": "s~1"}`},
		{"anthropic", &configv1.Provider{Type: configv1.Provider_TYPE_ANTHROPIC}, "sk-ant-api03-abc"},
		{"gemini", &configv1.Provider{Type: configv1.Provider_TYPE_GEMINI}, "AIzaSyA-abc"},
		{"vertex", &configv1.Provider{Type: configv1.Provider_TYPE_VERTEX_AI,
			Vertex: &configv1.VertexSettings{Project: "my-project", Location: "us-central1"}}, sa},
		{"bedrock", &configv1.Provider{Type: configv1.Provider_TYPE_BEDROCK, Bedrock: &configv1.BedrockSettings{Region: "us-east-1"}},
			`{"accessKeyId": "AKIAIOSFODNN7EXAMPLE", "secretAccessKey": "wJalrXUtnFEMI/K7MDENG", "sessionToken": "IQoJb3=="}`},
		{"bedrock-chain", &configv1.Provider{Type: configv1.Provider_TYPE_BEDROCK, Bedrock: &configv1.BedrockSettings{Region: "eu-central-1"}}, ""},
	}
	want := map[string]*configv1.Provider{}
	for _, tt := range tests {
		req := proto.Clone(tt.provider).(*configv1.Provider)
		req.Credential = tt.credential
		got, err := c.CreateProvider(ctx, &configv1.CreateProviderRequest{Parent: "orgs/acme", ProviderId: tt.id, Provider: req})
		if err != nil {
			t.Errorf("CreateProvider %s = %v", tt.id, err)
			continue
		}
		w := proto.Clone(tt.provider).(*configv1.Provider)
		w.Name, w.HasCredential = "orgs/acme/providers/"+tt.id, tt.credential != ""
		w.BaseUrl = strings.TrimRight(w.BaseUrl, "/")
		want[w.Name] = w
		if diff := cmp.Diff(w, got.GetProvider(), ignoreAllTimes()); diff != "" {
			t.Errorf("CreateProvider %s mismatch (-want +got):\n%s", tt.id, diff)
		}
		read, err := c.GetProvider(ctx, &configv1.GetProviderRequest{Name: w.Name})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(w, read.GetProvider(), ignoreAllTimes()); diff != "" {
			t.Errorf("GetProvider %s mismatch (-want +got):\n%s", tt.id, diff)
		}
	}

	// Gateways get the same providers, settings included, and a credential
	// that opens to what was set, bound to its provider.
	snap := h.watch(t).next(t, 5*time.Second, "snapshot")
	got := map[string]*configv1.Provider{}
	for _, r := range snap.GetSnapshot().GetResources() {
		gp := r.GetProvider()
		if gp == nil {
			continue
		}
		got[gp.GetProvider().GetName()] = gp.GetProvider()
		if gp.GetProvider().GetName() == "orgs/acme/providers/vertex" {
			sealed := gp.GetCredential()
			pt, err := h.keyring.Open(secretbox.Sealed{KEKID: sealed.GetKekId(), WrappedKey: sealed.GetWrappedKey(), Ciphertext: sealed.GetCiphertext()},
				[]byte("orgs/acme/providers/vertex"))
			if err != nil || string(pt) != sa {
				t.Errorf("vertex credential opens to %q, %v; want the service-account key", pt, err)
			}
		}
	}
	if diff := cmp.Diff(want, got, ignoreAllTimes()); diff != "" {
		t.Errorf("WatchConfig providers mismatch (-want +got):\n%s", diff)
	}
}

func TestProviderTypeRules(t *testing.T) {
	t.Parallel()
	h := newHarness(t, grpcapi.Options{})
	c, ctx := h.client, h.admin
	if _, err := c.CreateOrganization(ctx, &configv1.CreateOrganizationRequest{OrganizationId: "acme"}); err != nil {
		t.Fatal(err)
	}
	sa := serviceAccountKey(t)
	create := func(id string, p *configv1.Provider) error {
		_, err := c.CreateProvider(ctx, &configv1.CreateProviderRequest{Parent: "orgs/acme", ProviderId: id, Provider: p})
		return err
	}
	vertex := func() *configv1.Provider {
		return &configv1.Provider{Type: configv1.Provider_TYPE_VERTEX_AI, Credential: sa,
			Vertex: &configv1.VertexSettings{Project: "my-project", Location: "us-central1"}}
	}
	for id, p := range map[string]*configv1.Provider{
		"openai":  {Type: configv1.Provider_TYPE_OPENAI, Credential: "sk-openai"},
		"azure":   {Type: configv1.Provider_TYPE_AZURE_OPENAI, BaseUrl: "https://myres.openai.azure.com", Credential: "az-key"},
		"vertex":  vertex(),
		"bedrock": {Type: configv1.Provider_TYPE_BEDROCK, Bedrock: &configv1.BedrockSettings{Region: "us-east-1"}},
	} {
		if err := create(id, p); err != nil {
			t.Fatalf("CreateProvider %s: %v", id, err)
		}
	}

	refusals := []struct {
		name  string
		call  func() error
		field string
		want  string // in the message
	}{
		{"azure without base_url", func() error {
			return create("prov2", &configv1.Provider{Type: configv1.Provider_TYPE_AZURE_OPENAI, Credential: "az-key"})
		}, "provider.base_url", "required for TYPE_AZURE_OPENAI"},
		{"openai compatible without base_url", func() error {
			return create("prov2", &configv1.Provider{Type: configv1.Provider_TYPE_OPENAI_COMPATIBLE})
		}, "provider.base_url", "required"},
		{"unknown type", func() error {
			return create("prov2", &configv1.Provider{Type: configv1.Provider_Type(99), BaseUrl: "https://x.example.com"})
		}, "provider.type", "TYPE_VERTEX_AI"},
		{"vertex credential not a service-account key", func() error {
			p := vertex()
			p.Credential = "AIzaSyA-abc"
			return create("prov2", p)
		}, "provider.credential", `must be a service-account key JSON (type "service_account" with client_email and private_key)`},
		{"vertex without credential", func() error {
			p := vertex()
			p.Credential = ""
			return create("prov2", p)
		}, "provider.credential", "service-account key"},
		{"vertex without settings", func() error {
			p := vertex()
			p.Vertex = nil
			return create("prov2", p)
		}, "provider.vertex", "required"},
		{"vertex bad location", func() error {
			p := vertex()
			p.Vertex.Location = "US Central"
			return create("prov2", p)
		}, "provider.vertex.location", "us-central1"},
		{"bedrock JSON credential without secretAccessKey", func() error {
			return create("prov2", &configv1.Provider{Type: configv1.Provider_TYPE_BEDROCK, Bedrock: &configv1.BedrockSettings{Region: "us-east-1"},
				Credential: `{"accessKeyId": "AKIAIOSFODNN7EXAMPLE"}`})
		}, "provider.credential", "secretAccessKey"},
		{"bedrock without region", func() error {
			return create("prov2", &configv1.Provider{Type: configv1.Provider_TYPE_BEDROCK})
		}, "provider.bedrock", "required"},
		{"settings of another type", func() error {
			return create("prov2", &configv1.Provider{Type: configv1.Provider_TYPE_OPENAI, Bedrock: &configv1.BedrockSettings{Region: "us-east-1"}})
		}, "provider.bedrock", "only to TYPE_BEDROCK"},
		{"azure settings on vertex", func() error {
			p := vertex()
			p.Azure = &configv1.AzureSettings{}
			return create("prov2", p)
		}, "provider.azure", "only to TYPE_AZURE_OPENAI"},

		// Updates are checked on the provider they would leave.
		{"clearing the base_url of azure", func() error {
			_, err := c.UpdateProvider(ctx, &configv1.UpdateProviderRequest{Provider: &configv1.Provider{Name: "orgs/acme/providers/azure"}, UpdateMask: mask("base_url")})
			return err
		}, "provider.base_url", "required for TYPE_AZURE_OPENAI"},
		{"clearing the vertex settings", func() error {
			_, err := c.UpdateProvider(ctx, &configv1.UpdateProviderRequest{Provider: &configv1.Provider{Name: "orgs/acme/providers/vertex"}, UpdateMask: mask("vertex")})
			return err
		}, "provider.vertex", "required"},
		{"clearing one vertex field", func() error {
			_, err := c.UpdateProvider(ctx, &configv1.UpdateProviderRequest{Provider: &configv1.Provider{Name: "orgs/acme/providers/vertex"}, UpdateMask: mask("vertex.project")})
			return err
		}, "provider.vertex.project", "required"},
		{"removing the vertex credential", func() error {
			_, err := c.UpdateProvider(ctx, &configv1.UpdateProviderRequest{Provider: &configv1.Provider{Name: "orgs/acme/providers/vertex"}, UpdateMask: mask("credential")})
			return err
		}, "provider.credential", "service-account key"},
		{"an API key for vertex", func() error {
			_, err := c.UpdateProvider(ctx, &configv1.UpdateProviderRequest{Provider: &configv1.Provider{Name: "orgs/acme/providers/vertex", Credential: "sk-x"}, UpdateMask: mask("credential")})
			return err
		}, "provider.credential", "service-account key"},
		{"type change keeping the settings of the old type", func() error {
			_, err := c.UpdateProvider(ctx, &configv1.UpdateProviderRequest{
				Provider:   &configv1.Provider{Name: "orgs/acme/providers/vertex", Type: configv1.Provider_TYPE_BEDROCK, Bedrock: &configv1.BedrockSettings{Region: "us-east-1"}},
				UpdateMask: mask("type", "bedrock.region", "credential")})
			return err
		}, "provider.vertex", "only to TYPE_VERTEX_AI"},
		{"type change that needs another kind of credential", func() error {
			_, err := c.UpdateProvider(ctx, &configv1.UpdateProviderRequest{
				Provider:   &configv1.Provider{Name: "orgs/acme/providers/openai", Type: configv1.Provider_TYPE_VERTEX_AI, Vertex: &configv1.VertexSettings{Project: "p1", Location: "global"}},
				UpdateMask: mask("type", "vertex")})
			return err
		}, "provider.credential", "must be set again"},
		{"type change to one without a default endpoint", func() error {
			_, err := c.UpdateProvider(ctx, &configv1.UpdateProviderRequest{
				Provider: &configv1.Provider{Name: "orgs/acme/providers/openai", Type: configv1.Provider_TYPE_AZURE_OPENAI}, UpdateMask: mask("type")})
			return err
		}, "provider.base_url", "required for TYPE_AZURE_OPENAI"},
		{"settings field of another type", func() error {
			_, err := c.UpdateProvider(ctx, &configv1.UpdateProviderRequest{
				Provider: &configv1.Provider{Name: "orgs/acme/providers/openai", Azure: &configv1.AzureSettings{ApiVersion: "2024-10-21"}}, UpdateMask: mask("azure.api_version")})
			return err
		}, "provider.azure", "only to TYPE_AZURE_OPENAI"},
	}
	for _, tt := range refusals {
		err := tt.call()
		if status.Code(err) != codes.InvalidArgument || fieldOf(err) != tt.field || !strings.Contains(status.Convert(err).Message(), tt.want) {
			t.Errorf("%s: got %v (field %q), want InvalidArgument on %s saying %q", tt.name, err, fieldOf(err), tt.field, tt.want)
		}
		if strings.Contains(status.Convert(err).Message(), "AKIA") || strings.Contains(status.Convert(err).Message(), "AIza") {
			t.Errorf("%s: the message quotes the credential: %v", tt.name, err)
		}
	}

	// Updates that are allowed.
	updates := []struct {
		name string
		req  *configv1.UpdateProviderRequest
		want *configv1.Provider
	}{
		{"one vertex field, as REST infers it", &configv1.UpdateProviderRequest{
			Provider: &configv1.Provider{Name: "orgs/acme/providers/vertex", Vertex: &configv1.VertexSettings{Location: "europe-west4"}}, UpdateMask: mask("vertex.location")},
			&configv1.Provider{Name: "orgs/acme/providers/vertex", Type: configv1.Provider_TYPE_VERTEX_AI, HasCredential: true,
				Vertex: &configv1.VertexSettings{Project: "my-project", Location: "europe-west4"}}},
		{"an empty base_url means the default endpoint", &configv1.UpdateProviderRequest{
			Provider: &configv1.Provider{Name: "orgs/acme/providers/openai", BaseUrl: ""}, UpdateMask: mask("base_url")},
			&configv1.Provider{Name: "orgs/acme/providers/openai", Type: configv1.Provider_TYPE_OPENAI, HasCredential: true}},
		{"an azure api version, settings created by field", &configv1.UpdateProviderRequest{
			Provider: &configv1.Provider{Name: "orgs/acme/providers/azure", Azure: &configv1.AzureSettings{ApiVersion: "2024-10-21"}}, UpdateMask: mask("azure.api_version")},
			&configv1.Provider{Name: "orgs/acme/providers/azure", Type: configv1.Provider_TYPE_AZURE_OPENAI, BaseUrl: "https://myres.openai.azure.com", HasCredential: true,
				Azure: &configv1.AzureSettings{ApiVersion: "2024-10-21"}}},
		{"azure entra credentials instead of a key", &configv1.UpdateProviderRequest{
			Provider:   &configv1.Provider{Name: "orgs/acme/providers/azure", Credential: `{"tenantId": "t1", "clientId": "c1", "clientSecret": "s1"}`},
			UpdateMask: mask("credential")},
			&configv1.Provider{Name: "orgs/acme/providers/azure", Type: configv1.Provider_TYPE_AZURE_OPENAI, BaseUrl: "https://myres.openai.azure.com", HasCredential: true,
				Azure: &configv1.AzureSettings{ApiVersion: "2024-10-21"}}},
		{"a type change within the API-key types keeps the key", &configv1.UpdateProviderRequest{
			Provider: &configv1.Provider{Name: "orgs/acme/providers/openai", Type: configv1.Provider_TYPE_ANTHROPIC}, UpdateMask: mask("type")},
			&configv1.Provider{Name: "orgs/acme/providers/openai", Type: configv1.Provider_TYPE_ANTHROPIC, HasCredential: true}},
		{"a type change with everything it needs", &configv1.UpdateProviderRequest{
			Provider: &configv1.Provider{Name: "orgs/acme/providers/vertex", Type: configv1.Provider_TYPE_BEDROCK,
				Bedrock: &configv1.BedrockSettings{Region: "ap-southeast-2"}, Credential: `{"accessKeyId": "AKIA1", "secretAccessKey": "s"}`},
			UpdateMask: mask("type", "bedrock", "vertex", "credential")},
			&configv1.Provider{Name: "orgs/acme/providers/vertex", Type: configv1.Provider_TYPE_BEDROCK, HasCredential: true,
				Bedrock: &configv1.BedrockSettings{Region: "ap-southeast-2"}}},
		{"bedrock back to the default credential chain", &configv1.UpdateProviderRequest{
			Provider: &configv1.Provider{Name: "orgs/acme/providers/vertex"}, UpdateMask: mask("credential")},
			&configv1.Provider{Name: "orgs/acme/providers/vertex", Type: configv1.Provider_TYPE_BEDROCK,
				Bedrock: &configv1.BedrockSettings{Region: "ap-southeast-2"}}},
		{"without a credential, a type change needs none to be set", &configv1.UpdateProviderRequest{
			Provider: &configv1.Provider{Name: "orgs/acme/providers/bedrock", Type: configv1.Provider_TYPE_GEMINI}, UpdateMask: mask("type", "bedrock")},
			&configv1.Provider{Name: "orgs/acme/providers/bedrock", Type: configv1.Provider_TYPE_GEMINI}},
	}
	for _, tt := range updates {
		got, err := c.UpdateProvider(ctx, tt.req)
		if err != nil {
			t.Errorf("%s: UpdateProvider = %v", tt.name, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got.GetProvider(), ignoreAllTimes()); diff != "" {
			t.Errorf("%s: UpdateProvider mismatch (-want +got):\n%s", tt.name, diff)
		}
	}
}
