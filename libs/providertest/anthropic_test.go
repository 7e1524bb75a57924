package providertest_test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-ai/moat/libs/providertest"
)

// anthropicMessages holds 10 prompt words: 2 of system, 2 + 1 of text,
// 3 inside a tool_result, 2 of a text block; tool_use input counts none.
const anthropicMessages = `"system":"be brief","messages":[` +
	`{"role":"user","content":"hello there"},` +
	`{"role":"assistant","content":[{"type":"text","text":"hi"},{"type":"tool_use","id":"t","name":"f","input":{"q":"not counted"}}]},` +
	`{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"result words here"}]},{"type":"text","text":"and more"}]}]`

func anthropicBody(extra string) string {
	return `{"model":"claude-x","max_tokens":100,` + extra + anthropicMessages + `}`
}

func anthropicHeaders(extra ...string) map[string]string {
	h := map[string]string{"x-api-key": credential, "anthropic-version": "2023-06-01"}
	for i := 0; i+1 < len(extra); i += 2 {
		h[extra[i]] = extra[i+1]
	}
	return h
}

func anthropicUsage(in, write, read, out float64) map[string]any {
	return map[string]any{"input_tokens": in, "cache_creation_input_tokens": write, "cache_read_input_tokens": read, "output_tokens": out}
}

func TestAnthropicMessages(t *testing.T) {
	t.Parallel()
	text := func(s string) map[string]any { return map[string]any{"type": "text", "text": s} }
	tests := []struct {
		name        string
		body        string
		header      map[string]string
		wantContent []any
		wantStop    string
		wantUsage   map[string]any
	}{
		{
			name: "text", body: anthropicBody(""), header: anthropicHeaders(),
			wantContent: []any{text("tok1 tok2 tok3 tok4")}, wantStop: "end_turn", wantUsage: anthropicUsage(10, 0, 0, 4),
		},
		{
			name: "input tokens exclude cache reads and writes", body: anthropicBody(""),
			header:      anthropicHeaders(providertest.HeaderCachedTokens, "3", providertest.HeaderCacheWriteTokens, "2"),
			wantContent: []any{text("tok1 tok2 tok3 tok4")}, wantStop: "end_turn", wantUsage: anthropicUsage(5, 2, 3, 4),
		},
		{
			name: "cache write clamped to what reads leave", body: anthropicBody(""),
			header:      anthropicHeaders(providertest.HeaderCachedTokens, "8", providertest.HeaderCacheWriteTokens, "5"),
			wantContent: []any{text("tok1 tok2 tok3 tok4")}, wantStop: "end_turn", wantUsage: anthropicUsage(0, 2, 8, 4),
		},
		{
			name: "thinking", body: anthropicBody(`"thinking":{"type":"enabled","budget_tokens":1024},`),
			header: anthropicHeaders(providertest.HeaderReasoningTokens, "2"),
			wantContent: []any{
				map[string]any{"type": "thinking", "thinking": "think1 think2", "signature": providertest.Signature("think1 think2")},
				text("tok1 tok2 tok3 tok4"),
			},
			wantStop: "end_turn", wantUsage: anthropicUsage(10, 0, 0, 4),
		},
		{
			name: "thinking without reasoning tokens has one word", body: anthropicBody(`"thinking":{"type":"enabled","budget_tokens":1024},`),
			header: anthropicHeaders(),
			wantContent: []any{
				map[string]any{"type": "thinking", "thinking": "think1", "signature": providertest.Signature("think1")},
				text("tok1 tok2 tok3 tok4"),
			},
			wantStop: "end_turn", wantUsage: anthropicUsage(10, 0, 0, 4),
		},
		{
			name: "parallel tool use", body: anthropicBody(""), header: anthropicHeaders(providertest.HeaderToolCall, "f,g"),
			wantContent: []any{
				map[string]any{"type": "tool_use", "id": "toolu_mock_1_1", "name": "f", "input": map[string]any{"n": 1.0}},
				map[string]any{"type": "tool_use", "id": "toolu_mock_1_2", "name": "g", "input": map[string]any{"n": 2.0}},
			},
			wantStop: "tool_use", wantUsage: anthropicUsage(10, 0, 0, 4),
		},
		{
			name: "max_tokens", body: strings.Replace(anthropicBody(""), `"max_tokens":100`, `"max_tokens":3`, 1), header: anthropicHeaders(),
			wantContent: []any{text("tok1 tok2 tok3")}, wantStop: "max_tokens", wantUsage: anthropicUsage(10, 0, 0, 3),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, url := start(t, providertest.Config{Credential: credential})
			got, _ := postJSON(t, url+"/v1/messages", tt.body, tt.header, http.StatusOK)
			want := map[string]any{
				"id": "msg_mock_1", "type": "message", "role": "assistant", "model": "claude-x",
				"content": tt.wantContent, "stop_reason": tt.wantStop, "stop_sequence": nil, "usage": tt.wantUsage,
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("message mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAnthropicStream(t *testing.T) {
	t.Parallel()
	textBlock := func(s string) map[string]any { return map[string]any{"type": "text", "text": s} }
	tests := []struct {
		name       string
		body       string
		header     map[string]string
		wantBlocks []map[string]any
		wantStop   string
		wantOutput float64
		wantStart  map[string]any
	}{
		{
			name: "text", body: anthropicBody(`"stream":true,`), header: anthropicHeaders(),
			wantBlocks: []map[string]any{textBlock("tok1 tok2 tok3 tok4 ")}, wantStop: "end_turn", wantOutput: 4,
			wantStart: anthropicUsage(10, 0, 0, 1),
		},
		{
			name: "thinking, then tools, with cache", body: anthropicBody(`"stream":true,"thinking":{"type":"enabled","budget_tokens":2000},`),
			header: anthropicHeaders(providertest.HeaderToolCall, "f,g", providertest.HeaderReasoningTokens, "3",
				providertest.HeaderCachedTokens, "4", providertest.HeaderCacheWriteTokens, "1"),
			wantBlocks: []map[string]any{
				{"type": "thinking", "thinking": "think1 think2 think3 ", "signature": providertest.Signature("think1 think2 think3 ")},
				{"type": "tool_use", "id": "toolu_mock_1_1", "name": "f", "input": map[string]any{}, "partial": `{"n":1}`},
				{"type": "tool_use", "id": "toolu_mock_1_2", "name": "g", "input": map[string]any{}, "partial": `{"n":2}`},
			},
			wantStop: "tool_use", wantOutput: 4, wantStart: anthropicUsage(5, 1, 4, 1),
		},
		{
			name: "max_tokens", body: strings.Replace(anthropicBody(`"stream":true,`), `"max_tokens":100`, `"max_tokens":1`, 1),
			header:     anthropicHeaders(),
			wantBlocks: []map[string]any{textBlock("tok1 ")}, wantStop: "max_tokens", wantOutput: 1,
			wantStart: anthropicUsage(10, 0, 0, 1),
		},
		{
			name: "no chunks", body: anthropicBody(`"stream":true,`), header: anthropicHeaders(providertest.HeaderChunks, "0"),
			wantBlocks: []map[string]any{textBlock("")}, wantStop: "end_turn", wantOutput: 0,
			wantStart: anthropicUsage(10, 0, 0, 1),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, url := start(t, providertest.Config{Credential: credential})
			resp := post(t, url+"/v1/messages", tt.body, tt.header, http.StatusOK)
			defer resp.Body.Close()
			events := readSSE(t, resp.Body)
			got := checkAnthropic(t, events)
			if events[1].name != "ping" {
				t.Errorf("second event %q, want ping", events[1].name)
			}
			if diff := cmp.Diff(tt.wantBlocks, got.blocks); diff != "" {
				t.Errorf("blocks (-want +got):\n%s", diff)
			}
			if got.stopReason != tt.wantStop || got.output != tt.wantOutput {
				t.Errorf("stop_reason %v output_tokens %v, want %s %v", got.stopReason, got.output, tt.wantStop, tt.wantOutput)
			}
			if diff := cmp.Diff(tt.wantStart, got.start["usage"]); diff != "" {
				t.Errorf("message_start usage (-want +got):\n%s", diff)
			}
			if got.start["id"] != "msg_mock_1" || got.start["model"] != "claude-x" {
				t.Errorf("message_start %v", got.start)
			}
		})
	}
}

func TestAnthropicRefusals(t *testing.T) {
	t.Parallel()
	_, url := start(t, providertest.Config{Credential: credential})
	noVersion := anthropicHeaders()
	delete(noVersion, "anthropic-version")
	tests := []struct {
		name, path, body string
		header           map[string]string
		want             int
		wantType         string
	}{
		{"no key", "/v1/messages", anthropicBody(""), map[string]string{"anthropic-version": "2023-06-01"}, 401, "authentication_error"},
		{"Bearer instead of x-api-key", "/v1/messages", anthropicBody(""),
			map[string]string{"Authorization": "Bearer " + credential, "anthropic-version": "2023-06-01"}, 401, "authentication_error"},
		{"no anthropic-version", "/v1/messages", anthropicBody(""), noVersion, 400, "invalid_request_error"},
		{"no max_tokens", "/v1/messages", `{"model":"m","messages":[]}`, anthropicHeaders(), 400, "invalid_request_error"},
		{"zero max_tokens", "/v1/messages", `{"model":"m","max_tokens":0,"messages":[]}`, anthropicHeaders(), 400, "invalid_request_error"},
		{"no model", "/v1/messages", `{"max_tokens":5,"messages":[]}`, anthropicHeaders(), 400, "invalid_request_error"},
		{"malformed JSON", "/v1/messages", `{"model":`, anthropicHeaders(), 400, "invalid_request_error"},
		{"malformed header", "/v1/messages", anthropicBody(""), anthropicHeaders(providertest.HeaderCachedTokens, "many"), 400, "invalid_request_error"},
		{"count_tokens without version", "/v1/messages/count_tokens", anthropicBody(""), noVersion, 400, "invalid_request_error"},
		{"count_tokens without key", "/v1/messages/count_tokens", anthropicBody(""), nil, 401, "authentication_error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, _ := postJSON(t, url+tt.path, tt.body, tt.header, tt.want)
			e, ok := got["error"].(map[string]any)
			if got["type"] != "error" || !ok || e["type"] != tt.wantType || e["message"] == "" {
				t.Errorf("body %v, want an Anthropic %s", got, tt.wantType)
			}
		})
	}
}

func TestAnthropicInjectedErrors(t *testing.T) {
	t.Parallel()
	_, url := start(t, providertest.Config{})
	for status, want := range map[int]string{
		400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
		413: "request_too_large", 429: "rate_limit_error", 500: "api_error", 529: "overloaded_error",
		418: "invalid_request_error", 503: "api_error",
	} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			t.Parallel()
			got, h := postJSON(t, url+"/v1/messages", anthropicBody(""),
				map[string]string{"anthropic-version": "2023-06-01", providertest.HeaderError: strconv.Itoa(status)}, status)
			if e := got["error"].(map[string]any); got["type"] != "error" || e["type"] != want {
				t.Errorf("body %v, want type %s", got, want)
			}
			if (status == 429) != (h.Get("Retry-After") != "") {
				t.Errorf("Retry-After = %q", h.Get("Retry-After"))
			}
		})
	}
}

func TestAnthropicCountTokens(t *testing.T) {
	t.Parallel()
	_, url := start(t, providertest.Config{Credential: credential})
	got, _ := postJSON(t, url+"/v1/messages/count_tokens", `{"model":"claude-x",`+anthropicMessages+`}`,
		anthropicHeaders(providertest.HeaderCachedTokens, "3"), http.StatusOK)
	if diff := cmp.Diff(map[string]any{"input_tokens": 10.0}, got); diff != "" {
		t.Errorf("count_tokens (-want +got):\n%s", diff)
	}
}
