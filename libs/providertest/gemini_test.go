package providertest_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-ai/moat/libs/providertest"
)

// geminiBody holds 4 prompt words: 2 of the system instruction and 2 of
// text parts; images, function calls and responses count none.
const geminiBody = `{"systemInstruction":{"parts":[{"text":"be brief"}]},"contents":[` +
	`{"role":"user","parts":[{"text":"hello there"},{"inlineData":{"mimeType":"image/png","data":"AAAA"}}]},` +
	`{"role":"model","parts":[{"functionCall":{"name":"f","args":{"q":"x y"}}}]},` +
	`{"role":"user","parts":[{"functionResponse":{"name":"f","response":{"r":"not counted"}}}]}]`

const studioPath = "/v1beta/models/gemini-x:"

func geminiKey(extra ...string) map[string]string {
	h := map[string]string{"x-goog-api-key": credential}
	for i := 0; i+1 < len(extra); i += 2 {
		h[extra[i]] = extra[i+1]
	}
	return h
}

func TestGeminiGenerateContent(t *testing.T) {
	t.Parallel()
	text := func(s string) map[string]any { return map[string]any{"text": s} }
	tests := []struct {
		name       string
		body       string
		header     map[string]string
		wantParts  []any
		wantFinish string
		wantUsage  map[string]any
	}{
		{
			name: "text", body: geminiBody + `}`, header: geminiKey(),
			wantParts: []any{text("tok1 tok2 tok3 tok4")}, wantFinish: "STOP",
			wantUsage: map[string]any{"promptTokenCount": 4.0, "candidatesTokenCount": 4.0, "totalTokenCount": 8.0},
		},
		{
			name: "cached and thoughts counted, thoughts hidden", body: geminiBody + `}`,
			header:    geminiKey(providertest.HeaderCachedTokens, "3", providertest.HeaderReasoningTokens, "1"),
			wantParts: []any{text("tok1 tok2 tok3 tok4")}, wantFinish: "STOP",
			wantUsage: map[string]any{
				"promptTokenCount": 4.0, "cachedContentTokenCount": 3.0, "candidatesTokenCount": 3.0,
				"thoughtsTokenCount": 1.0, "totalTokenCount": 8.0,
			},
		},
		{
			name: "thoughts included", body: geminiBody + `,"generationConfig":{"thinkingConfig":{"includeThoughts":true}}}`,
			header: geminiKey(providertest.HeaderReasoningTokens, "2"),
			wantParts: []any{
				map[string]any{"text": "think1 think2", "thought": true, "thoughtSignature": providertest.Signature("think1 think2")},
				text("tok1 tok2 tok3 tok4"),
			},
			wantFinish: "STOP",
			wantUsage: map[string]any{
				"promptTokenCount": 4.0, "candidatesTokenCount": 2.0, "thoughtsTokenCount": 2.0, "totalTokenCount": 8.0,
			},
		},
		{
			name: "snake_case names", body: `{"system_instruction":{"parts":[{"text":"a b c"}]},"contents":[{"parts":[{"text":"d"}]}],` +
				`"generation_config":{"max_output_tokens":2,"thinking_config":{"include_thoughts":true}}}`,
			header: geminiKey(),
			wantParts: []any{
				map[string]any{"text": "think1", "thought": true, "thoughtSignature": providertest.Signature("think1")},
				text("tok1 tok2"),
			},
			wantFinish: "MAX_TOKENS",
			wantUsage:  map[string]any{"promptTokenCount": 4.0, "candidatesTokenCount": 2.0, "totalTokenCount": 6.0},
		},
		{
			name: "function calls whole, signed with reasoning", body: geminiBody + `}`,
			header: geminiKey(providertest.HeaderToolCall, "f,g", providertest.HeaderReasoningTokens, "1"),
			wantParts: []any{
				map[string]any{"functionCall": map[string]any{"name": "f", "args": map[string]any{"n": 1.0}}, "thoughtSignature": providertest.Signature("f")},
				map[string]any{"functionCall": map[string]any{"name": "g", "args": map[string]any{"n": 2.0}}},
			},
			wantFinish: "STOP",
			wantUsage: map[string]any{
				"promptTokenCount": 4.0, "candidatesTokenCount": 3.0, "thoughtsTokenCount": 1.0, "totalTokenCount": 8.0,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, url := start(t, providertest.Config{Credential: credential})
			got, _ := postJSON(t, url+studioPath+"generateContent", tt.body, tt.header, http.StatusOK)
			want := map[string]any{
				"candidates": []any{map[string]any{
					"content": map[string]any{"role": "model", "parts": tt.wantParts}, "finishReason": tt.wantFinish, "index": 0.0,
				}},
				"usageMetadata": tt.wantUsage, "modelVersion": "gemini-x", "responseId": "mock-response-1",
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("response mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// geminiChunks reads the parts, finish reasons and usage of stream chunks.
func geminiChunks(t *testing.T, chunks []map[string]any) (parts []any, finish []any, usage []any) {
	t.Helper()
	for _, c := range chunks {
		cand := c["candidates"].([]any)[0].(map[string]any)
		parts = append(parts, cand["content"].(map[string]any)["parts"].([]any)...)
		finish = append(finish, cand["finishReason"])
		usage = append(usage, c["usageMetadata"])
	}
	return parts, finish, usage
}

func TestGeminiStream(t *testing.T) {
	t.Parallel()
	wantUsage := map[string]any{"promptTokenCount": 4.0, "candidatesTokenCount": 1.0, "thoughtsTokenCount": 1.0, "totalTokenCount": 6.0}
	wantParts := []any{
		map[string]any{"text": "think1 ", "thought": true, "thoughtSignature": providertest.Signature("think1 ")},
		map[string]any{"text": "tok1 "},
		map[string]any{"text": "tok2 "},
		map[string]any{"text": ""},
	}
	body := geminiBody + `,"generationConfig":{"thinkingConfig":{"includeThoughts":true}}}`
	header := geminiKey(providertest.HeaderChunks, "2", providertest.HeaderReasoningTokens, "1")
	check := func(t *testing.T, chunks []map[string]any) {
		parts, finish, usage := geminiChunks(t, chunks)
		if diff := cmp.Diff(wantParts, parts); diff != "" {
			t.Errorf("parts (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]any{nil, nil, nil, "STOP"}, finish); diff != "" {
			t.Errorf("finish reasons (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]any{nil, nil, nil, wantUsage}, usage); diff != "" {
			t.Errorf("usage (-want +got):\n%s", diff)
		}
	}
	t.Run("sse", func(t *testing.T) {
		t.Parallel()
		_, url := start(t, providertest.Config{Credential: credential})
		resp := post(t, url+studioPath+"streamGenerateContent?alt=sse", body, header, http.StatusOK)
		raw := readAll(t, resp)
		if resp.Header.Get("Content-Type") != "text/event-stream" || !bytes.HasSuffix(raw, []byte("}\r\n\r\n")) ||
			bytes.Count(raw, []byte("\n")) != bytes.Count(raw, []byte("\r\n")) {
			t.Errorf("stream %q: want SSE with CRLF line ends", raw)
		}
		var chunks []map[string]any
		for _, e := range readSSE(t, bytes.NewReader(raw)) {
			if e.name != "" {
				t.Errorf("event name %q, Gemini sends data lines only", e.name)
			}
			chunks = append(chunks, e.data)
		}
		check(t, chunks)
	})
	t.Run("json array", func(t *testing.T) {
		t.Parallel()
		_, url := start(t, providertest.Config{Credential: credential})
		resp := post(t, url+studioPath+"streamGenerateContent", body, header, http.StatusOK)
		defer resp.Body.Close() // readAll closes it too; a second Close is harmless
		var chunks []map[string]any
		if err := json.Unmarshal(readAll(t, resp), &chunks); err != nil {
			t.Fatalf("not a JSON array: %v", err)
		}
		check(t, chunks)
	})
	t.Run("function calls", func(t *testing.T) {
		t.Parallel()
		_, url := start(t, providertest.Config{})
		resp := post(t, url+studioPath+"streamGenerateContent?alt=sse", geminiBody+`}`, map[string]string{providertest.HeaderToolCall: "f,g"}, http.StatusOK)
		defer resp.Body.Close()
		var chunks []map[string]any
		for _, e := range readSSE(t, resp.Body) {
			chunks = append(chunks, e.data)
		}
		parts, _, _ := geminiChunks(t, chunks)
		want := []any{
			map[string]any{"functionCall": map[string]any{"name": "f", "args": map[string]any{"n": 1.0}}},
			map[string]any{"functionCall": map[string]any{"name": "g", "args": map[string]any{"n": 2.0}}},
			map[string]any{"text": ""},
		}
		if diff := cmp.Diff(want, parts); diff != "" {
			t.Errorf("parts (-want +got):\n%s", diff)
		}
	})
}

func TestGeminiAuthAndErrors(t *testing.T) {
	t.Parallel()
	_, url := start(t, providertest.Config{Credential: credential})
	vertex := "/v1/projects/p1/locations/us-central1/publishers/google/models/gemini-x:"
	bearer := map[string]string{"Authorization": "Bearer " + credential}
	tests := []struct {
		name, path string
		header     map[string]string
		want       int
		wantStatus string
	}{
		{"studio header key", studioPath + "generateContent", geminiKey(), 200, ""},
		{"studio query key", studioPath + "generateContent?key=" + credential, nil, 200, ""},
		{"studio v1", "/v1/models/gemini-x:generateContent", geminiKey(), 200, ""},
		{"studio no key", studioPath + "generateContent", nil, 403, "PERMISSION_DENIED"},
		{"studio wrong key", studioPath + "generateContent", map[string]string{"x-goog-api-key": "nope"}, 400, "INVALID_ARGUMENT"},
		{"studio Bearer is not a key", studioPath + "generateContent", bearer, 403, "PERMISSION_DENIED"},
		{"vertex Bearer", vertex + "generateContent", bearer, 200, ""},
		{"vertex v1beta1", strings.Replace(vertex, "/v1/", "/v1beta1/", 1) + "streamGenerateContent?alt=sse", bearer, 200, ""},
		{"vertex no token", vertex + "generateContent", nil, 401, "UNAUTHENTICATED"},
		{"vertex api key is not a token", vertex + "generateContent", geminiKey(), 401, "UNAUTHENTICATED"},
		{"unknown method", studioPath + "embedContent", geminiKey(), 404, "NOT_FOUND"},
		{"unknown publisher", "/v1/projects/p/locations/l/publishers/meta/models/m:rawPredict", bearer, 404, "NOT_FOUND"},
		{"injected 429", studioPath + "generateContent", geminiKey(providertest.HeaderError, "429"), 429, "RESOURCE_EXHAUSTED"},
		{"injected 503", studioPath + "generateContent", geminiKey(providertest.HeaderError, "503"), 503, "UNAVAILABLE"},
		{"injected 418", studioPath + "generateContent", geminiKey(providertest.HeaderError, "418"), 418, "FAILED_PRECONDITION"},
		{"malformed header", studioPath + "generateContent", geminiKey(providertest.HeaderReasoningTokens, "-1"), 400, "INVALID_ARGUMENT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp := post(t, url+tt.path, geminiBody+`}`, tt.header, tt.want)
			defer resp.Body.Close() // readAll closes it too; a second Close is harmless
			raw := readAll(t, resp)
			if tt.want == http.StatusOK {
				return
			}
			got := obj(t, string(raw))
			e, ok := got["error"].(map[string]any)
			if !ok || e["status"] != tt.wantStatus || e["code"] != float64(tt.want) || e["message"] == "" {
				t.Errorf("body %s, want a Google error %d %s", raw, tt.want, tt.wantStatus)
			}
		})
	}
	t.Run("no contents", func(t *testing.T) {
		t.Parallel()
		post(t, url+studioPath+"generateContent", `{"contents":[]}`, geminiKey(), http.StatusBadRequest).Body.Close()
	})
}

func TestVertexAnthropic(t *testing.T) {
	t.Parallel()
	_, url := start(t, providertest.Config{Credential: credential})
	path := "/v1/projects/p1/locations/us-east5/publishers/anthropic/models/claude-v@20250101:"
	body := `{"anthropic_version":"vertex-2023-10-16","max_tokens":50,` + anthropicMessages + `}`
	bearer := map[string]string{"Authorization": "Bearer " + credential}
	t.Run("rawPredict", func(t *testing.T) {
		t.Parallel()
		got, _ := postJSON(t, url+path+"rawPredict", body, bearer, http.StatusOK)
		if got["model"] != "claude-v@20250101" || got["type"] != "message" {
			t.Errorf("answer %v: want a message from the path's model", got)
		}
		if diff := cmp.Diff(anthropicUsage(10, 0, 0, 4), got["usage"]); diff != "" {
			t.Errorf("usage (-want +got):\n%s", diff)
		}
	})
	for _, tt := range []struct{ name, method, body string }{
		{"streamRawPredict", "streamRawPredict", body},
		{"rawPredict with stream true", "rawPredict", strings.Replace(body, `{`, `{"stream":true,`, 1)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp := post(t, url+path+tt.method, tt.body, bearer, http.StatusOK)
			defer resp.Body.Close()
			got := checkAnthropic(t, readSSE(t, resp.Body))
			if diff := cmp.Diff([]map[string]any{{"type": "text", "text": "tok1 tok2 tok3 tok4 "}}, got.blocks); diff != "" {
				t.Errorf("blocks (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("no anthropic_version", func(t *testing.T) {
		t.Parallel()
		got, _ := postJSON(t, url+path+"rawPredict", `{"max_tokens":5,"messages":[]}`, bearer, http.StatusBadRequest)
		if e := got["error"].(map[string]any); e["type"] != "invalid_request_error" {
			t.Errorf("body %v, want an Anthropic invalid_request_error", got)
		}
	})
	t.Run("injected overloaded", func(t *testing.T) {
		t.Parallel()
		h := map[string]string{"Authorization": "Bearer " + credential, providertest.HeaderError: strconv.Itoa(529)}
		got, _ := postJSON(t, url+path+"rawPredict", body, h, 529)
		if e := got["error"].(map[string]any); e["type"] != "overloaded_error" {
			t.Errorf("body %v, want overloaded_error", got)
		}
	})
}
