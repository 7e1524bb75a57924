package provider

import (
	"errors"
	"strings"
	"testing"

	"github.com/moat-ai/moat/services/gateway/internal/wire"
)

type fakeTokens struct {
	tok string
	err error
}

func (f fakeTokens) Token() (string, error) { return f.tok, f.err }

// TestAzureCredentials checks how an Azure OpenAI provider authenticates:
// an API key as api-key, Entra ID client credentials as a bearer token
// from their token source, asked for on each request.
func TestAzureCredentials(t *testing.T) {
	t.Parallel()
	const entra = ` {"tenantId": "t1", "clientId": "c1", "clientSecret": "SECRET-entra"}`
	base := "https://res.openai.azure.com"
	call := Call{API: wire.OpenAIChat, Model: "gpt-4o", Body: []byte(`{}`), RequestID: "r1"}

	key := New(Config{Name: "p", Kind: AzureOpenAI, BaseURL: base, Credential: []byte("azure-key-1")})
	req, err := key.NewRequest(t.Context(), call)
	if err != nil || key.Unusable != "" {
		t.Fatalf("API key provider: %v, unusable %q", err, key.Unusable)
	}
	if got := req.Header.Get("Api-Key"); got != "azure-key-1" || req.Header.Get("Authorization") != "" {
		t.Errorf("API key provider sent api-key %q, Authorization %q", got, req.Header.Get("Authorization"))
	}

	tokens := &fakeTokens{tok: "entra-token-1"}
	p := New(Config{Name: "p", Kind: AzureOpenAI, BaseURL: base, Credential: []byte(entra), Azure: tokens})
	if p.Unusable != "" {
		t.Fatalf("Entra provider unusable: %s", p.Unusable)
	}
	req, err = p.NewRequest(t.Context(), call)
	if err != nil {
		t.Fatal(err)
	}
	if got := req.Header.Get("Authorization"); got != "Bearer entra-token-1" || req.Header.Get("Api-Key") != "" {
		t.Errorf("Entra provider sent Authorization %q, api-key %q", got, req.Header.Get("Api-Key"))
	}
	if req.URL.String() != base+"/openai/v1/chat/completions" {
		t.Errorf("URL %s", req.URL)
	}
	tokens.tok = "entra-token-2"
	if req, _ = p.NewRequest(t.Context(), call); req.Header.Get("Authorization") != "Bearer entra-token-2" {
		t.Errorf("the next request sent %q, want the current token", req.Header.Get("Authorization"))
	}
	tokens.err = errors.New("azure credential: no token yet")
	if _, err := p.NewRequest(t.Context(), call); err == nil || !strings.Contains(err.Error(), "no token yet") {
		t.Errorf("NewRequest without a token = %v, want the token source's error", err)
	}

	for _, c := range []Config{
		{Name: "p", Kind: AzureOpenAI, BaseURL: base, Credential: []byte(entra)},
		{Name: "p", Kind: AzureOpenAI, Credential: []byte(entra), Azure: tokens},
	} {
		p := New(c)
		if p.Unusable == "" || strings.Contains(p.Unusable, "SECRET") {
			t.Errorf("New(Azure: %v, base %q).Unusable = %q, want a reason without the secret", c.Azure, c.BaseURL, p.Unusable)
		}
	}
}
