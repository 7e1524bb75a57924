package providertest_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-ai/moat/libs/providertest"
)

const credential = "sk-upstream-test"

func start(t *testing.T, cfg providertest.Config) (*providertest.Server, string) {
	t.Helper()
	m := providertest.New(cfg)
	srv := httptest.NewServer(m)
	t.Cleanup(srv.Close)
	return m, srv.URL
}

// do sends a request and returns the response; the caller closes its body.
func do(t *testing.T, ctx context.Context, method, url, body string, header map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return resp
}

func decode(t *testing.T, r io.Reader) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.NewDecoder(r).Decode(&v); err != nil {
		t.Fatalf("decode response: %v", err)
	}
	return v
}

// eventually polls cond until it holds, failing the test after within.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not true within %v: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

const chatBody = `{"model":"gpt-x","messages":[{"role":"system","content":"be brief"},` +
	`{"role":"user","content":[{"type":"text","text":"hello there mock"},{"type":"image_url","image_url":{"url":"x"}}]}]}`

func TestChatCompletion(t *testing.T) {
	t.Parallel()
	m, url := start(t, providertest.Config{Credential: credential, Chunks: 3})
	resp := do(t, t.Context(), http.MethodPost, url+"/v1/chat/completions", chatBody,
		map[string]string{"Authorization": "Bearer " + credential, "Content-Type": "application/json"})
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d, want 200", resp.StatusCode)
	}
	got := decode(t, resp.Body)
	for _, k := range []string{"id", "created"} {
		if _, ok := got[k]; !ok {
			t.Errorf("response lacks %q", k)
		}
		delete(got, k)
	}
	want := map[string]any{
		"object": "chat.completion",
		"model":  "gpt-x",
		"choices": []any{map[string]any{
			"index":         float64(0),
			"message":       map[string]any{"role": "assistant", "content": "tok1 tok2 tok3"},
			"finish_reason": "stop",
		}},
		// 2 words + 3 words of text parts; the image part has no text.
		"usage": map[string]any{"prompt_tokens": float64(5), "completion_tokens": float64(3), "total_tokens": float64(8)},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("completion mismatch (-want +got):\n%s", diff)
	}
	last, ok := m.LastRequest()
	if !ok {
		t.Fatal("LastRequest() = false after a request")
	}
	if last.Header.Get("Authorization") != "Bearer "+credential || string(last.Body) != chatBody || last.Path != "/v1/chat/completions" {
		t.Errorf("LastRequest() = %s %s %q, want the request just sent", last.Method, last.Path, last.Body)
	}
}

// event is one SSE data payload, decoded unless it is [DONE].
type event struct {
	raw  string
	data map[string]any
}

// readEvents reads SSE events until [DONE] or the end of the body.
func readEvents(t *testing.T, r io.Reader) []event {
	t.Helper()
	var out []event
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		payload, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			t.Fatalf("not an SSE data line: %q", line)
		}
		e := event{raw: payload}
		if payload != "[DONE]" {
			if err := json.Unmarshal([]byte(payload), &e.data); err != nil {
				t.Fatalf("chunk %q: %v", payload, err)
			}
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read stream: %v", err)
	}
	return out
}

func TestStream(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		body         string
		wantUsage    bool
		wantEvents   int // content chunks + finish chunk (+ usage chunk) + [DONE]
		wantChunkKey bool
	}{
		{
			name:       "without usage",
			body:       `{"model":"m","stream":true,"messages":[{"role":"user","content":"a b"}]}`,
			wantEvents: 2 + 1 + 1,
		},
		{
			name:         "with include_usage",
			body:         `{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"a b"}]}`,
			wantUsage:    true,
			wantEvents:   2 + 1 + 1 + 1,
			wantChunkKey: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, url := start(t, providertest.Config{Chunks: 2})
			resp := do(t, t.Context(), http.MethodPost, url+"/v1/chat/completions", tt.body, nil)
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
				t.Fatalf("status %d, Content-Type %q; want 200 text/event-stream", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			events := readEvents(t, resp.Body)
			if len(events) != tt.wantEvents {
				t.Fatalf("got %d events, want %d: %v", len(events), tt.wantEvents, events)
			}
			if events[len(events)-1].raw != "[DONE]" {
				t.Errorf("last event = %q, want [DONE]", events[len(events)-1].raw)
			}
			var content strings.Builder
			for _, e := range events[:len(events)-1] {
				if e.data["object"] != "chat.completion.chunk" || e.data["model"] != "m" {
					t.Errorf("chunk %s: want object chat.completion.chunk and model m", e.raw)
				}
				if _, ok := e.data["usage"]; ok != tt.wantChunkKey {
					t.Errorf("chunk %s: usage key present = %v, want %v", e.raw, ok, tt.wantChunkKey)
				}
				for _, c := range e.data["choices"].([]any) {
					if s, ok := c.(map[string]any)["delta"].(map[string]any)["content"].(string); ok {
						content.WriteString(s)
					}
				}
			}
			if got, want := content.String(), "tok1 tok2 "; got != want {
				t.Errorf("streamed content = %q, want %q", got, want)
			}
			if tt.wantUsage {
				last := events[len(events)-2].data
				want := map[string]any{"prompt_tokens": float64(2), "completion_tokens": float64(2), "total_tokens": float64(4)}
				if diff := cmp.Diff(want, last["usage"]); diff != "" {
					t.Errorf("usage chunk mismatch (-want +got):\n%s", diff)
				}
				if diff := cmp.Diff([]any{}, last["choices"]); diff != "" {
					t.Errorf("usage chunk choices (-want +got):\n%s", diff)
				}
				for _, e := range events[:len(events)-2] {
					if e.data["usage"] != nil {
						t.Errorf("chunk %s: usage = %v, want null before the last chunk", e.raw, e.data["usage"])
					}
				}
			}
		})
	}
}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	_, url := start(t, providertest.Config{Credential: credential})
	tests := []struct {
		name, method, path, body, auth string
		want                           int
	}{
		{"models without key", http.MethodGet, "/v1/models", "", "", http.StatusUnauthorized},
		{"models wrong key", http.MethodGet, "/v1/models", "", "Bearer nope", http.StatusUnauthorized},
		{"models right key", http.MethodGet, "/v1/models", "", "Bearer " + credential, http.StatusOK},
		{"chat without key", http.MethodPost, "/v1/chat/completions", chatBody, "", http.StatusUnauthorized},
		{"chat basic scheme", http.MethodPost, "/v1/chat/completions", chatBody, "Basic " + credential, http.StatusUnauthorized},
		{"chat right key", http.MethodPost, "/v1/chat/completions", chatBody, "Bearer " + credential, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := map[string]string{}
			if tt.auth != "" {
				h["Authorization"] = tt.auth
			}
			resp := do(t, t.Context(), tt.method, url+tt.path, tt.body, h)
			defer resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("status = %d, want %d", resp.StatusCode, tt.want)
			}
			if tt.want == http.StatusUnauthorized {
				got := decode(t, resp.Body)
				want := map[string]any{"error": map[string]any{
					"message": "Incorrect API key provided.", "type": "invalid_request_error", "param": nil, "code": "invalid_api_key",
				}}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("401 body mismatch (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestModels(t *testing.T) {
	t.Parallel()
	_, url := start(t, providertest.Config{Model: "llama-mock"})
	resp := do(t, t.Context(), http.MethodGet, url+"/v1/models", "", nil)
	defer resp.Body.Close()
	want := map[string]any{"object": "list", "data": []any{
		map[string]any{"id": "llama-mock", "object": "model", "created": float64(0), "owned_by": "moat-mock"},
	}}
	if diff := cmp.Diff(want, decode(t, resp.Body)); diff != "" {
		t.Errorf("models mismatch (-want +got):\n%s", diff)
	}
}

func TestOverrideHeaders(t *testing.T) {
	t.Parallel()
	_, url := start(t, providertest.Config{})
	tests := []struct {
		name       string
		header     map[string]string
		wantStatus int
		wantCode   any // error.code, when an error is expected
		wantTokens float64
	}{
		{"default chunks", nil, http.StatusOK, nil, providertest.DefaultChunks},
		{"chunks override", map[string]string{providertest.HeaderChunks: "7"}, http.StatusOK, nil, 7},
		{"rate limited", map[string]string{providertest.HeaderError: "429"}, http.StatusTooManyRequests, "rate_limit_exceeded", 0},
		{"server error", map[string]string{providertest.HeaderError: "500"}, http.StatusInternalServerError, nil, 0},
		{"bad error status", map[string]string{providertest.HeaderError: "200"}, http.StatusBadRequest, nil, 0},
		{"bad delay", map[string]string{providertest.HeaderDelay: "soon"}, http.StatusBadRequest, nil, 0},
		{"bad chunks", map[string]string{providertest.HeaderChunks: "-1"}, http.StatusBadRequest, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp := do(t, t.Context(), http.MethodPost, url+"/v1/chat/completions", chatBody, tt.header)
			defer resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status = %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			got := decode(t, resp.Body)
			if tt.wantStatus != http.StatusOK {
				e, ok := got["error"].(map[string]any)
				if !ok || e["message"] == "" {
					t.Fatalf("body %v is not an OpenAI error", got)
				}
				if e["code"] != tt.wantCode {
					t.Errorf("error.code = %v, want %v", e["code"], tt.wantCode)
				}
				return
			}
			if u := got["usage"].(map[string]any); u["completion_tokens"] != tt.wantTokens {
				t.Errorf("completion_tokens = %v, want %v", u["completion_tokens"], tt.wantTokens)
			}
		})
	}
}

func TestBadRequests(t *testing.T) {
	t.Parallel()
	_, url := start(t, providertest.Config{})
	tests := []struct {
		name, method, path, body string
		want                     int
	}{
		{"malformed JSON", http.MethodPost, "/v1/chat/completions", `{"model":`, http.StatusBadRequest},
		{"no model", http.MethodPost, "/v1/chat/completions", `{"messages":[]}`, http.StatusBadRequest},
		{"unknown path", http.MethodGet, "/v1/no-such-endpoint", "", http.StatusNotFound},
		{"wrong method", http.MethodGet, "/v1/chat/completions", "", http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp := do(t, t.Context(), tt.method, url+tt.path, tt.body, nil)
			defer resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("status = %d, want %d", resp.StatusCode, tt.want)
			}
		})
	}
}

// A stream is written as it is produced: the first chunk arrives while the
// next is still minutes away, and hanging up ends the handler.
func TestStreamChunksAndCancel(t *testing.T) {
	t.Parallel()
	m, url := start(t, providertest.Config{Chunks: 3, ChunkDelay: time.Hour})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	resp := do(t, ctx, http.MethodPost, url+"/v1/chat/completions",
		`{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`, nil)
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || !strings.Contains(line, `"tok1 "`) {
		t.Fatalf("first line = %q, %v; want the first chunk", line, err)
	}
	cancel()
	eventually(t, 5*time.Second, "the handler sees the caller hang up", func() bool { return m.Canceled() == 1 })
}

// The delay holds the headers back; a caller that gives up first is counted.
func TestDelayHonoursCancellation(t *testing.T) {
	t.Parallel()
	m, url := start(t, providertest.Config{})
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/chat/completions", strings.NewReader(chatBody))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(providertest.HeaderDelay, "60000")
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		_ = resp.Body.Close()
		t.Fatal("request with a 60s delay answered within 50ms")
	}
	eventually(t, 5*time.Second, "the delayed handler sees the caller give up", func() bool { return m.Canceled() == 1 })
	if m.Requests() != 1 {
		t.Errorf("Requests() = %d, want 1", m.Requests())
	}
}

func TestPromptTokens(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   []string
		want int64
	}{
		{nil, 0},
		{[]string{""}, 0},
		{[]string{"one"}, 1},
		{[]string{"  two\twords\n", "and three more"}, 5},
	}
	for _, tt := range tests {
		if got := providertest.PromptTokens(tt.in); got != tt.want {
			t.Errorf("PromptTokens(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}
