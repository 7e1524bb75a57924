package providertest_test

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-ai/moat/libs/providertest"
)

// chatBody holds 5 prompt words (see TestChatCompletion).
func chatWith(extra string) string {
	return strings.Replace(chatBody, `{"model":"gpt-x",`, `{"model":"gpt-x",`+extra, 1)
}

func TestChatUsageAndLimits(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		cfg         providertest.Config
		body        string
		header      map[string]string
		wantContent string
		wantFinish  string
		wantUsage   map[string]any
	}{
		{
			name: "cached and reasoning headers", body: chatBody,
			header:      map[string]string{providertest.HeaderCachedTokens: "3", providertest.HeaderReasoningTokens: "2"},
			wantContent: "tok1 tok2 tok3 tok4", wantFinish: "stop",
			wantUsage: map[string]any{
				"prompt_tokens": 5.0, "completion_tokens": 4.0, "total_tokens": 9.0,
				"prompt_tokens_details":     map[string]any{"cached_tokens": 3.0},
				"completion_tokens_details": map[string]any{"reasoning_tokens": 2.0},
			},
		},
		{
			name: "parts clamped to the whole", body: chatBody,
			header:      map[string]string{providertest.HeaderCachedTokens: "99", providertest.HeaderReasoningTokens: "99"},
			wantContent: "tok1 tok2 tok3 tok4", wantFinish: "stop",
			wantUsage: map[string]any{
				"prompt_tokens": 5.0, "completion_tokens": 4.0, "total_tokens": 9.0,
				"prompt_tokens_details":     map[string]any{"cached_tokens": 5.0},
				"completion_tokens_details": map[string]any{"reasoning_tokens": 4.0},
			},
		},
		{
			name: "defaults from Config, cache writes not reported", body: chatBody,
			cfg:         providertest.Config{CachedTokens: 1, CacheWriteTokens: 2},
			wantContent: "tok1 tok2 tok3 tok4", wantFinish: "stop",
			wantUsage: map[string]any{
				"prompt_tokens": 5.0, "completion_tokens": 4.0, "total_tokens": 9.0,
				"prompt_tokens_details": map[string]any{"cached_tokens": 1.0},
			},
		},
		{
			name: "max_tokens cuts the text", body: chatWith(`"max_tokens":2,`),
			wantContent: "tok1 tok2", wantFinish: "length",
			wantUsage: map[string]any{"prompt_tokens": 5.0, "completion_tokens": 2.0, "total_tokens": 7.0},
		},
		{
			name: "max_completion_tokens wins over max_tokens", body: chatWith(`"max_tokens":2,"max_completion_tokens":3,`),
			wantContent: "tok1 tok2 tok3", wantFinish: "length",
			wantUsage: map[string]any{"prompt_tokens": 5.0, "completion_tokens": 3.0, "total_tokens": 8.0},
		},
		{
			name: "a limit above the chunks changes nothing", body: chatWith(`"max_tokens":100,`),
			wantContent: "tok1 tok2 tok3 tok4", wantFinish: "stop",
			wantUsage: map[string]any{"prompt_tokens": 5.0, "completion_tokens": 4.0, "total_tokens": 9.0},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.cfg.Now = pinned
			_, url := start(t, tt.cfg)
			got, _ := postJSON(t, url+"/v1/chat/completions", tt.body, tt.header, http.StatusOK)
			want := map[string]any{
				"id": "chatcmpl-mock-1", "object": "chat.completion", "created": 1700000000.0, "model": "gpt-x",
				"choices": []any{map[string]any{
					"index": 0.0, "message": map[string]any{"role": "assistant", "content": tt.wantContent}, "finish_reason": tt.wantFinish,
				}},
				"usage": tt.wantUsage,
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("completion mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestChatToolCalls(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		header string
		want   []map[string]string
	}{
		{"one call", "get_weather", []map[string]string{
			{"id": "call_mock_1_1", "name": "get_weather", "arguments": `{"n":1}`},
		}},
		{"parallel calls", "get_weather, get_time,lookup", []map[string]string{
			{"id": "call_mock_1_1", "name": "get_weather", "arguments": `{"n":1}`},
			{"id": "call_mock_1_2", "name": "get_time", "arguments": `{"n":2}`},
			{"id": "call_mock_1_3", "name": "lookup", "arguments": `{"n":3}`},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name+" whole", func(t *testing.T) {
			t.Parallel()
			_, url := start(t, providertest.Config{})
			got, _ := postJSON(t, url+"/v1/chat/completions", chatBody, map[string]string{providertest.HeaderToolCall: tt.header}, http.StatusOK)
			var calls []any
			for _, c := range tt.want {
				calls = append(calls, map[string]any{
					"id": c["id"], "type": "function", "function": map[string]any{"name": c["name"], "arguments": c["arguments"]},
				})
			}
			want := []any{map[string]any{
				"index": 0.0, "finish_reason": "tool_calls",
				"message": map[string]any{"role": "assistant", "content": nil, "tool_calls": calls},
			}}
			if diff := cmp.Diff(want, got["choices"]); diff != "" {
				t.Errorf("choices mismatch (-want +got):\n%s", diff)
			}
			if u := got["usage"].(map[string]any); u["completion_tokens"] != float64(providertest.DefaultChunks) {
				t.Errorf("completion_tokens = %v, want the chunk count", u["completion_tokens"])
			}
		})
		t.Run(tt.name+" streamed", func(t *testing.T) {
			t.Parallel()
			_, url := start(t, providertest.Config{})
			resp := post(t, url+"/v1/chat/completions", chatWith(`"stream":true,"stream_options":{"include_usage":true},`),
				map[string]string{providertest.HeaderToolCall: tt.header}, http.StatusOK)
			defer resp.Body.Close()
			got := checkChat(t, readSSE(t, resp.Body))
			if diff := cmp.Diff(tt.want, got.calls); diff != "" {
				t.Errorf("streamed calls mismatch (-want +got):\n%s", diff)
			}
			if got.finish != "tool_calls" || got.content != "" || !got.done || got.usage == nil {
				t.Errorf("finish %v, content %q, done %v, usage %v; want tool_calls, no text, [DONE], usage", got.finish, got.content, got.done, got.usage)
			}
			// A name chunk and two argument pieces per call.
			if got.chunks != 3*len(tt.want) {
				t.Errorf("%d content chunks, want %d", got.chunks, 3*len(tt.want))
			}
		})
	}
}

func TestChatStreamUsageDetails(t *testing.T) {
	t.Parallel()
	_, url := start(t, providertest.Config{ReasoningTokens: 1})
	resp := post(t, url+"/v1/chat/completions", chatWith(`"stream":true,"max_tokens":3,"stream_options":{"include_usage":true},`),
		map[string]string{providertest.HeaderCachedTokens: "4"}, http.StatusOK)
	defer resp.Body.Close()
	got := checkChat(t, readSSE(t, resp.Body))
	want := map[string]any{
		"prompt_tokens": 5.0, "completion_tokens": 3.0, "total_tokens": 8.0,
		"prompt_tokens_details":     map[string]any{"cached_tokens": 4.0},
		"completion_tokens_details": map[string]any{"reasoning_tokens": 1.0},
	}
	if diff := cmp.Diff(want, got.usage); diff != "" {
		t.Errorf("usage mismatch (-want +got):\n%s", diff)
	}
	if got.content != "tok1 tok2 tok3 " || got.finish != "length" {
		t.Errorf("content %q finish %v, want 3 words and length", got.content, got.finish)
	}
}

func TestCompletions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		prompt     string
		wantPrompt float64
	}{
		{"string", `"one two three"`, 3},
		{"strings", `["one two","three"]`, 3},
		{"tokens", `[11,12,13,14]`, 4},
		{"token arrays", `[[1,2],[3]]`, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, url := start(t, providertest.Config{Chunks: 2, Now: pinned})
			got, _ := postJSON(t, url+"/v1/completions", `{"model":"davinci","suffix":"x y","prompt":`+tt.prompt+`}`, nil, http.StatusOK)
			want := map[string]any{
				"id": "cmpl-mock-1", "object": "text_completion", "created": 1700000000.0, "model": "davinci",
				"choices": []any{map[string]any{"text": "tok1 tok2", "index": 0.0, "logprobs": nil, "finish_reason": "stop"}},
				"usage":   map[string]any{"prompt_tokens": tt.wantPrompt + 2, "completion_tokens": 2.0, "total_tokens": tt.wantPrompt + 4},
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("completion mismatch (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("streamed", func(t *testing.T) {
		t.Parallel()
		_, url := start(t, providertest.Config{Chunks: 3})
		resp := post(t, url+"/v1/completions",
			`{"model":"davinci","prompt":"a b","max_tokens":2,"stream":true,"stream_options":{"include_usage":true}}`, nil, http.StatusOK)
		defer resp.Body.Close()
		events := readSSE(t, resp.Body)
		var text []string
		var finish any
		for _, e := range events[:len(events)-2] {
			if e.data["object"] != "text_completion" || e.data["usage"] != nil {
				t.Errorf("chunk %s: want a text_completion with null usage", e.raw)
			}
			c := e.data["choices"].([]any)[0].(map[string]any)
			text = append(text, c["text"].(string))
			if c["finish_reason"] != nil {
				finish = c["finish_reason"]
			}
		}
		if diff := cmp.Diff([]string{"tok1 ", "tok2 ", ""}, text); diff != "" {
			t.Errorf("streamed texts (-want +got):\n%s", diff)
		}
		wantUsage := map[string]any{"prompt_tokens": 2.0, "completion_tokens": 2.0, "total_tokens": 4.0}
		if diff := cmp.Diff(wantUsage, events[len(events)-2].data["usage"]); diff != "" || finish != "length" {
			t.Errorf("usage chunk (-want +got):\n%s; finish %v, want length", diff, finish)
		}
		if events[len(events)-1].raw != "[DONE]" {
			t.Errorf("last event %q, want [DONE]", events[len(events)-1].raw)
		}
	})
	t.Run("bad prompt", func(t *testing.T) {
		t.Parallel()
		_, url := start(t, providertest.Config{})
		resp := post(t, url+"/v1/completions", `{"model":"m","prompt":{"a":1}}`, nil, http.StatusBadRequest)
		_ = resp.Body.Close()
	})
}

// embeddingAnswer is the typed embeddings answer, so that floats are read
// back as float32 exactly.
type embeddingAnswer struct {
	Object string `json:"object"`
	Model  string `json:"model"`
	Data   []struct {
		Object    string          `json:"object"`
		Index     int             `json:"index"`
		Embedding json.RawMessage `json:"embedding"`
	} `json:"data"`
	Usage map[string]int64 `json:"usage"`
}

func TestEmbeddings(t *testing.T) {
	t.Parallel()
	_, url := start(t, providertest.Config{})
	tests := []struct {
		name       string
		body       string
		wantKeys   []string
		wantDims   int
		wantBase64 bool
		wantTokens int64
	}{
		{"string", `{"model":"emb","input":"hello big world"}`, []string{"hello big world"}, 8, false, 3},
		{"strings with dimensions", `{"model":"emb","input":["a b","c"],"dimensions":3}`, []string{"a b", "c"}, 3, false, 3},
		{"base64", `{"model":"emb","input":["a b","c"],"encoding_format":"base64"}`, []string{"a b", "c"}, 8, true, 3},
		{"tokens", `{"model":"emb","input":[7,8,9],"encoding_format":"float"}`, []string{"7 8 9"}, 8, false, 3},
		{"token arrays", `{"model":"emb","input":[[1,2],[3]]}`, []string{"1 2", "3"}, 8, false, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp := post(t, url+"/v1/embeddings", tt.body, nil, http.StatusOK)
			defer resp.Body.Close() // readAll closes it too; a second Close is harmless
			var got embeddingAnswer
			if err := json.Unmarshal(readAll(t, resp), &got); err != nil {
				t.Fatal(err)
			}
			if got.Object != "list" || got.Model != "emb" || len(got.Data) != len(tt.wantKeys) {
				t.Fatalf("answer %+v: want a list of %d from model emb", got, len(tt.wantKeys))
			}
			if diff := cmp.Diff(map[string]int64{"prompt_tokens": tt.wantTokens, "total_tokens": tt.wantTokens}, got.Usage); diff != "" {
				t.Errorf("usage (-want +got):\n%s", diff)
			}
			for i, d := range got.Data {
				want := providertest.Embedding(tt.wantKeys[i], tt.wantDims)
				var vec []float32
				if tt.wantBase64 {
					var s string
					if err := json.Unmarshal(d.Embedding, &s); err != nil {
						t.Fatalf("embedding %d is not a base64 string: %s", i, d.Embedding)
					}
					raw, err := base64.StdEncoding.DecodeString(s)
					if err != nil {
						t.Fatal(err)
					}
					for j := 0; j+4 <= len(raw); j += 4 {
						vec = append(vec, math.Float32frombits(binary.LittleEndian.Uint32(raw[j:])))
					}
				} else if err := json.Unmarshal(d.Embedding, &vec); err != nil {
					t.Fatalf("embedding %d: %v", i, err)
				}
				if d.Object != "embedding" || d.Index != i {
					t.Errorf("datum %d: object %q index %d", i, d.Object, d.Index)
				}
				if diff := cmp.Diff(want, vec); diff != "" {
					t.Errorf("embedding %d (-want +got):\n%s", i, diff)
				}
			}
		})
	}
}

func TestEmbeddingRefusals(t *testing.T) {
	t.Parallel()
	_, url := start(t, providertest.Config{})
	for _, body := range []string{
		`{"model":"emb"}`,
		`{"input":"a"}`,
		`{"model":"emb","input":""}`,
		`{"model":"emb","input":[]}`,
		`{"model":"emb","input":{"a":1}}`,
		`{"model":"emb","input":"a","dimensions":0}`,
		`{"model":"emb","input":"a","dimensions":5000}`,
		`{"model":"emb","input":"a","encoding_format":"hex"}`,
	} {
		resp := post(t, url+"/v1/embeddings", body, nil, http.StatusBadRequest)
		if e, ok := decode(t, resp.Body)["error"].(map[string]any); !ok || e["type"] != "invalid_request_error" {
			t.Errorf("%s: body is not an OpenAI invalid_request_error", body)
		}
		_ = resp.Body.Close()
	}
}

func TestEmbedding(t *testing.T) {
	t.Parallel()
	a, b := providertest.Embedding("same text", 16), providertest.Embedding("same text", 16)
	if diff := cmp.Diff(a, b); diff != "" {
		t.Errorf("Embedding is not deterministic (-first +second):\n%s", diff)
	}
	if cmp.Equal(a, providertest.Embedding("other text", 16)) {
		t.Error("two inputs have the same embedding")
	}
	var norm float64
	for _, f := range a {
		norm += float64(f) * float64(f)
	}
	if math.Abs(norm-1) > 1e-5 {
		t.Errorf("|Embedding| = %v, want 1", math.Sqrt(norm))
	}
}

func TestAzure(t *testing.T) {
	t.Parallel()
	m, url := start(t, providertest.Config{Credential: credential})
	key := map[string]string{"api-key": credential}
	tests := []struct {
		name, path, body string
		header           map[string]string
		want             int
		wantModel        string
		wantCode         string // error.code of a refusal
	}{
		{"deployment chat by api-key", "/openai/deployments/my-gpt/chat/completions?api-version=2024-10-21",
			`{"messages":[{"role":"user","content":"hi"}]}`, key, http.StatusOK, "my-gpt", ""},
		{"deployment chat by Entra token", "/openai/deployments/my-gpt/chat/completions?api-version=2024-10-21",
			`{"messages":[]}`, map[string]string{"Authorization": "Bearer " + credential}, http.StatusOK, "my-gpt", ""},
		{"deployment completions", "/openai/deployments/inst/completions?api-version=2024-10-21",
			`{"prompt":"a"}`, key, http.StatusOK, "inst", ""},
		{"deployment embeddings", "/openai/deployments/emb/embeddings?api-version=2024-10-21",
			`{"input":"a"}`, key, http.StatusOK, "emb", ""},
		{"responses with api-version", "/openai/responses?api-version=2025-04-01-preview",
			`{"model":"dep","input":"a"}`, key, http.StatusOK, "dep", ""},
		{"v1 chat", "/openai/v1/chat/completions", `{"model":"dep","messages":[]}`, key, http.StatusOK, "dep", ""},
		{"v1 responses", "/openai/v1/responses", `{"model":"dep","input":"a"}`, key, http.StatusOK, "dep", ""},
		{"v1 embeddings", "/openai/v1/embeddings", `{"model":"dep","input":"a"}`, key, http.StatusOK, "dep", ""},
		{"no key", "/openai/v1/chat/completions", `{"model":"dep","messages":[]}`, nil, http.StatusUnauthorized, "", "401"},
		{"wrong key", "/openai/deployments/d/chat/completions?api-version=1", `{}`, map[string]string{"api-key": "nope"},
			http.StatusUnauthorized, "", "401"},
		{"no api-version", "/openai/deployments/d/chat/completions", `{}`, key, http.StatusBadRequest, "", "MissingApiVersionParameter"},
		{"api-key on an OpenAI path", "/v1/chat/completions", `{"model":"m","messages":[]}`, key, http.StatusUnauthorized, "", "invalid_api_key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, _ := postJSON(t, url+tt.path, tt.body, tt.header, tt.want)
			if tt.want != http.StatusOK {
				if e := got["error"].(map[string]any); e["code"] != tt.wantCode || e["message"] == "" {
					t.Errorf("error %v, want code %q", e, tt.wantCode)
				}
				return
			}
			if got["model"] != tt.wantModel {
				t.Errorf("model = %v, want %q", got["model"], tt.wantModel)
			}
		})
	}
	t.Run("query recorded", func(t *testing.T) {
		// Not parallel with the table: it reads the last request.
		post(t, url+"/openai/deployments/x/embeddings?api-version=2024-10-21", `{"input":"a"}`, key, http.StatusOK).Body.Close()
		last, _ := m.LastRequest()
		if last.Query.Get("api-version") != "2024-10-21" || last.Header.Get("Api-Key") != credential {
			t.Errorf("recorded query %v, api-key %q", last.Query, last.Header.Get("Api-Key"))
		}
	})
}
