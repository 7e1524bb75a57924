package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/moat-ai/moat/services/gateway/internal/httpapi"
)

type anthropicError struct {
	Type  string `json:"type"`
	Error struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
}

// postTo sends body to path with the given headers.
func (f *sdkFixture) postTo(t *testing.T, path, body string, header map[string]string) response {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	return do(t, req)
}

// Every bad input gets a clear error in the client's own format, with a
// stable code, and reaches no provider.
func TestBadInputs(t *testing.T) {
	t.Parallel()
	f := newSDKFixture(t)
	anth := map[string]string{"x-api-key": f.key, "anthropic-version": "2023-06-01"}
	oai := map[string]string{"Authorization": "Bearer " + f.key}
	tests := []struct {
		name, path, body string
		header           map[string]string
		status           int
		code, param      string // param: OpenAI only
	}{
		{"anthropic without max_tokens", "/v1/messages", `{"model":"anthropic-model","messages":[{"role":"user","content":"hi"}]}`, anth, 400, "missing_max_tokens", ""},
		{"anthropic malformed", "/v1/messages", `{"model":"anthropic-model",`, anth, 400, "invalid_json", ""},
		{"anthropic duplicate model", "/v1/messages", `{"model":"anthropic-model","model":"openai-model","max_tokens":5,"messages":[]}`, anth, 400, "duplicate_parameter", ""},
		{"anthropic without a key", "/v1/messages", `{"model":"anthropic-model","max_tokens":5,"messages":[]}`, map[string]string{"anthropic-version": "2023-06-01"}, 401, "invalid_api_key", ""},
		{"anthropic unknown model", "/v1/messages", `{"model":"nope","max_tokens":5,"messages":[]}`, anth, 404, "model_not_found", ""},
		{"anthropic unknown block type, translated", "/v1/messages", `{"model":"openai-model","max_tokens":5,"messages":[{"role":"user","content":[{"type":"hologram"}]}]}`, anth, 400, "invalid_value", ""},
		{"anthropic model over the limit", "/v1/messages", `{"model":"` + strings.Repeat("x", 300) + `","max_tokens":5,"messages":[]}`, anth, 400, "invalid_value", ""},
		{"openai unknown part type, translated", "/v1/chat/completions", `{"model":"anthropic-model","messages":[{"role":"user","content":[{"type":"hologram"}]}]}`, oai, 400, "invalid_value", "messages[0].content[0].type"},
		{"openai duplicate member inside a message, translated", "/v1/chat/completions", `{"model":"anthropic-model","messages":[{"role":"user","role":"system","content":"x"}]}`, oai, 400, "duplicate_parameter", ""},
		{"openai logprobs to anthropic", "/v1/chat/completions", `{"model":"anthropic-model","logprobs":true,"messages":[{"role":"user","content":"x"}]}`, oai, 400, "unsupported_parameter", "logprobs"},
		{"openai audio to anthropic", "/v1/chat/completions", `{"model":"anthropic-model","messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"","format":"wav"}}]}]}`, oai, 400, "unsupported_parameter", "messages[0].content[0]"},
		{"openai malformed", "/v1/chat/completions", `{"model":`, oai, 400, "invalid_json", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := 0
			for _, m := range f.mocks {
				before += int(m.Requests())
			}
			r := f.postTo(t, tt.path, tt.body, tt.header)
			if r.status != tt.status {
				t.Fatalf("status = %d %s, want %d", r.status, r.body, tt.status)
			}
			if got := r.header.Get(httpapi.HeaderErrorCode); got != tt.code {
				t.Errorf("%s = %q, want %q (%s)", httpapi.HeaderErrorCode, got, tt.code, r.body)
			}
			if strings.HasPrefix(tt.path, "/v1/messages") {
				var e anthropicError
				if err := json.Unmarshal(r.body, &e); err != nil || e.Type != "error" || e.Error.Type == "" || e.Error.Message == "" {
					t.Errorf("body %s is not an Anthropic error (%v)", r.body, err)
				}
			} else {
				var e openAIError
				if err := json.Unmarshal(r.body, &e); err != nil || e.Error.Code != tt.code || e.Error.Message == "" {
					t.Errorf("body %s is not an OpenAI error with code %s (%v)", r.body, tt.code, err)
				}
				if tt.param != "" && (e.Error.Param == nil || *e.Error.Param != tt.param) {
					t.Errorf("param = %v, want %s", e.Error.Param, tt.param)
				}
			}
			if bytes.Contains(r.body, []byte(f.key)) {
				t.Error("the error echoes the key")
			}
			after := 0
			for _, m := range f.mocks {
				after += int(m.Requests())
			}
			if after != before {
				t.Errorf("a refused request reached a provider")
			}
		})
	}
}

// A translated request reports the members it dropped.
func TestDroppedParameters(t *testing.T) {
	t.Parallel()
	f := newSDKFixture(t)
	r := f.postTo(t, "/v1/chat/completions", `{"model":"anthropic-model","seed":3,"presence_penalty":0.5,"messages":[{"role":"user","content":"one two three four"}]}`,
		map[string]string{"Authorization": "Bearer " + f.key})
	if r.status != http.StatusOK {
		t.Fatalf("status = %d %s", r.status, r.body)
	}
	if got := r.header.Get("Moat-Dropped-Parameters"); got != "presence_penalty,seed" {
		t.Errorf("Moat-Dropped-Parameters = %q, want presence_penalty,seed", got)
	}
	f.nextUsage(t)
}

// Beyond MAX_IN_FLIGHT calls are shed at once in the client's format.
func TestShedding(t *testing.T) {
	t.Parallel()
	f := newSDKFixture(t, withMaxInFlight(1), withSlowModel())
	done := make(chan response, 1)
	go func() {
		done <- f.postTo(t, "/v1/chat/completions", `{"model":"slow-model","messages":[{"role":"user","content":"hi"}]}`,
			map[string]string{"Authorization": "Bearer " + f.key})
	}()
	eventually(t, 5*time.Second, "the slow call reaches the provider", func() bool { return f.mocks["slow-model"].Requests() == 1 })
	r := f.postTo(t, "/v1/messages", `{"model":"anthropic-model","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`,
		map[string]string{"x-api-key": f.key, "anthropic-version": "2023-06-01"})
	var e anthropicError
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" || json.Unmarshal(r.body, &e) != nil || e.Error.Type != "overloaded_error" {
		t.Errorf("over the limit = %d %v %s, want 503 overloaded_error with Retry-After", r.status, r.header, r.body)
	}
	if r := <-done; r.status != http.StatusOK {
		t.Errorf("the admitted call = %d %s", r.status, r.body)
	}
}
