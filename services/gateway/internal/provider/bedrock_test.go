package provider

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/moat-ai/moat/services/gateway/internal/wire"
)

// fakeSigner records the body it signed.
type fakeSigner struct{ signed []byte }

func (f *fakeSigner) Sign(req *http.Request, body []byte, _ time.Time) error {
	f.signed = body
	req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=AKID/20250101/us-east-1/bedrock/aws4_request")
	return nil
}

// TestBedrockUpstream checks which wire API a Bedrock provider speaks per
// client and model: an Anthropic client calling Claude natively
// (InvokeModel), everything else through Converse, token counts locally.
func TestBedrockUpstream(t *testing.T) {
	t.Parallel()
	p := New(Config{Name: "p", Kind: Bedrock, BedrockRegion: "us-east-1", AWS: &fakeSigner{}})
	claude := []string{
		"anthropic.claude-sonnet-4-20250514-v1:0",
		"us.anthropic.claude-sonnet-4-20250514-v1:0",
		"global.anthropic.claude-sonnet-4-5-20250929-v1:0",
		"arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-7-sonnet-20250219-v1:0",
	}
	for _, model := range claude {
		for client, want := range map[wire.API]wire.API{
			wire.Anthropic:            wire.Anthropic,
			wire.OpenAIChat:           wire.Converse,
			wire.OpenAIResponses:      wire.Converse,
			wire.AnthropicCountTokens: wire.APIUnknown,
		} {
			if got, ok := p.UpstreamFor(client, model); got != want || !ok {
				t.Errorf("UpstreamFor(%s, %s) = %s, %v; want %s", client, model, got, ok, want)
			}
		}
	}
	for _, model := range []string{"amazon.nova-pro-v1:0", "meta.llama3-70b-instruct-v1:0", "claude-sonnet-4-5"} {
		if got, ok := p.UpstreamFor(wire.Anthropic, model); got != wire.Converse || !ok {
			t.Errorf("UpstreamFor(anthropic, %s) = %s, %v; want Converse", model, got, ok)
		}
	}
	if !p.AWSErrors() || New(Config{Kind: Anthropic}).AWSErrors() {
		t.Error("AWSErrors is for Bedrock only")
	}
}

// TestBedrockInvokeRequest checks the InvokeModel request of an Anthropic
// client: the model escaped in the path, the verb by streaming, the body
// without model and stream, with Bedrock's version and the client's betas,
// and signed as sent.
func TestBedrockInvokeRequest(t *testing.T) {
	t.Parallel()
	signer := &fakeSigner{}
	p := New(Config{Name: "p", Kind: Bedrock, BedrockRegion: "eu-west-1", AWS: signer})
	const arn = "arn:aws:bedrock:eu-west-1:123456789012:inference-profile/eu.anthropic.claude-sonnet-4-20250514-v1:0"
	body := `{"model":"` + arn + `","max_tokens":5,"stream":true,"messages":[{"role":"user","content":[{"type":"text","text":"hi","cache_control":{"type":"ephemeral"}}]}]}`
	header := http.Header{"Anthropic-Beta": {"interleaved-thinking-2025-05-14,context-1m-2025-08-07"}, "Anthropic-Version": {"2023-06-01"}}
	tests := []struct {
		stream           bool
		wantPath, accept string
	}{
		{false, "/invoke", "application/json"},
		{true, "/invoke-with-response-stream", "application/vnd.amazon.eventstream"},
	}
	for _, tt := range tests {
		req, err := p.NewRequest(t.Context(), Call{API: wire.Anthropic, Model: arn, Stream: tt.stream, Body: []byte(body), RequestID: "r1", Header: header})
		if err != nil {
			t.Fatal(err)
		}
		want := "https://bedrock-runtime.eu-west-1.amazonaws.com/model/arn:aws:bedrock:eu-west-1:123456789012:inference-profile%2Feu.anthropic.claude-sonnet-4-20250514-v1:0" + tt.wantPath
		if req.URL.String() != want {
			t.Errorf("stream %v: URL %s, want %s", tt.stream, req.URL, want)
		}
		got, _ := io.ReadAll(req.Body)
		wantBody := `{"max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","text":"hi","cache_control":{"type":"ephemeral"}}]}],` +
			`"anthropic_version":"bedrock-2023-05-31","anthropic_beta":["interleaved-thinking-2025-05-14","context-1m-2025-08-07"]}`
		if string(got) != wantBody || string(signer.signed) != wantBody {
			t.Errorf("stream %v: body %s, signed %s; want %s", tt.stream, got, signer.signed, wantBody)
		}
		if req.Header.Get("Accept") != tt.accept || req.Header.Get("Anthropic-Beta") != "" || req.Header.Get("Anthropic-Version") != "" || req.Header.Get("Authorization") == "" {
			t.Errorf("stream %v: headers %v", tt.stream, req.Header)
		}
	}
}
