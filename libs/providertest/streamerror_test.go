package providertest_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moat-ai/moat/libs/providertest"
)

// streamOutcome is what a broken (or whole) stream delivered.
type streamOutcome struct {
	events  int
	content int
	failed  bool
}

// streamAPI is one streaming endpoint and how to read its outcome; the
// readers check that the mid-stream error is the API's own.
type streamAPI struct {
	name, path, body string
	header           map[string]string
	read             func(t *testing.T, resp *http.Response) streamOutcome
}

func streamAPIs() []streamAPI {
	anthropicSSE := func(t *testing.T, resp *http.Response) streamOutcome {
		events := readSSE(t, resp.Body)
		r := checkAnthropic(t, events)
		if r.failed != nil && r.failed["error"].(map[string]any)["type"] != "overloaded_error" {
			t.Errorf("error event %v, want overloaded_error", r.failed)
		}
		return streamOutcome{len(events), r.content, r.failed != nil}
	}
	return []streamAPI{
		{
			name: "chat", path: "/v1/chat/completions", body: chatWith(`"stream":true,`),
			read: func(t *testing.T, resp *http.Response) streamOutcome {
				events := readSSE(t, resp.Body)
				r := checkChat(t, events)
				if r.failed != nil && r.failed["type"] != "server_error" {
					t.Errorf("error %v, want server_error", r.failed)
				}
				if r.failed != nil && r.done {
					t.Error("[DONE] after an error")
				}
				return streamOutcome{len(events), r.chunks, r.failed != nil}
			},
		},
		{
			name: "completions", path: "/v1/completions", body: `{"model":"m","prompt":"a","stream":true}`,
			read: func(t *testing.T, resp *http.Response) streamOutcome {
				events := readSSE(t, resp.Body)
				var o streamOutcome
				o.events = len(events)
				for i, e := range events {
					if e.data != nil && e.data["error"] != nil {
						o.failed = i == len(events)-1
						continue
					}
					if e.data != nil && e.data["choices"].([]any)[0].(map[string]any)["text"] != "" {
						o.content++
					}
				}
				return o
			},
		},
		{
			name: "responses", path: "/v1/responses", body: `{"model":"m","input":"a","stream":true}`,
			read: func(t *testing.T, resp *http.Response) streamOutcome {
				events := readSSE(t, resp.Body)
				r := checkResponses(t, events)
				if r.failed != nil && r.failed["code"] != "server_error" {
					t.Errorf("error %v, want server_error", r.failed)
				}
				return streamOutcome{len(events), r.content, r.failed != nil}
			},
		},
		{
			name: "anthropic", path: "/v1/messages", body: anthropicBody(`"stream":true,`),
			header: map[string]string{"anthropic-version": "2023-06-01"}, read: anthropicSSE,
		},
		{
			name: "vertex anthropic", path: "/v1/projects/p/locations/l/publishers/anthropic/models/c:streamRawPredict",
			body: `{"anthropic_version":"vertex-2023-10-16","max_tokens":50,` + anthropicMessages + `}`, read: anthropicSSE,
		},
		{
			name: "gemini", path: studioPath + "streamGenerateContent?alt=sse", body: geminiBody + `}`,
			read: func(t *testing.T, resp *http.Response) streamOutcome {
				events := readSSE(t, resp.Body)
				var o streamOutcome
				o.events = len(events)
				for i, e := range events {
					if err, ok := e.data["error"].(map[string]any); ok {
						if err["status"] != "UNAVAILABLE" || i != len(events)-1 {
							t.Errorf("error %v at %d of %d, want UNAVAILABLE last", err, i, len(events))
						}
						o.failed = true
						continue
					}
					part := e.data["candidates"].([]any)[0].(map[string]any)["content"].(map[string]any)["parts"].([]any)[0]
					if part.(map[string]any)["text"] != "" {
						o.content++
					}
				}
				return o
			},
		},
		{
			name: "converse", path: "/model/m/converse-stream", body: converseBody + `}`,
			read: func(t *testing.T, resp *http.Response) streamOutcome {
				msgs := readAWS(t, resp.Body)
				r := checkConverse(t, msgs)
				if r.failed != "" && r.failed != "serviceUnavailableException" {
					t.Errorf("exception %q", r.failed)
				}
				return streamOutcome{len(msgs), r.content, r.failed != ""}
			},
		},
		{
			name: "bedrock invoke", path: "/model/m/invoke-with-response-stream",
			body: `{"anthropic_version":"bedrock-2023-05-31","max_tokens":50,` + anthropicMessages + `}`,
			read: func(t *testing.T, resp *http.Response) streamOutcome {
				events := bedrockChunks(t, readAWS(t, resp.Body))
				r := checkAnthropic(t, events)
				if r.failed != nil && events[len(events)-1].name != "exception:serviceUnavailableException" {
					t.Errorf("last event %q, want the exception", events[len(events)-1].name)
				}
				return streamOutcome{len(events), r.content, r.failed != nil}
			},
		},
	}
}

func TestStreamError(t *testing.T) {
	t.Parallel()
	for _, api := range streamAPIs() {
		for _, tt := range []struct {
			at           string
			header       map[string]string
			cfg          providertest.Config
			wantEvents   int // 0: not checked
			wantContent  int
			wantFailed   bool
			wantComplete bool
		}{
			{at: "none", wantContent: 4},
			{at: "0", header: map[string]string{providertest.HeaderStreamError: "0"}, wantEvents: 1, wantFailed: true},
			{at: "2", header: map[string]string{providertest.HeaderStreamError: "2"}, wantContent: 2, wantFailed: true},
			{at: "beyond", header: map[string]string{providertest.HeaderStreamError: "99"}, wantContent: 4, wantFailed: true},
			{at: "config", cfg: providertest.Config{StreamError: true, StreamErrorAfter: 1}, wantContent: 1, wantFailed: true},
			{at: "tool call", header: map[string]string{providertest.HeaderStreamError: "1", providertest.HeaderToolCall: "f"}, wantContent: 1, wantFailed: true},
		} {
			if api.name == "completions" && tt.at == "tool call" {
				continue // the legacy API has no tool calls
			}
			t.Run(api.name+"/"+tt.at, func(t *testing.T) {
				t.Parallel()
				_, url := start(t, tt.cfg)
				h := map[string]string{}
				for k, v := range api.header {
					h[k] = v
				}
				for k, v := range tt.header {
					h[k] = v
				}
				resp := post(t, url+api.path, api.body, h, http.StatusOK)
				defer resp.Body.Close()
				got := api.read(t, resp)
				if got.failed != tt.wantFailed || got.content != tt.wantContent || (tt.wantEvents != 0 && got.events != tt.wantEvents) {
					t.Errorf("got %+v, want failed %v after %d content events (events %d)", got, tt.wantFailed, tt.wantContent, tt.wantEvents)
				}
			})
		}
	}
}

// Every stream writes its headers before the first token is due, and a
// caller that hangs up while waiting for it ends the handler.
func TestStreamCancel(t *testing.T) {
	t.Parallel()
	for _, api := range streamAPIs() {
		t.Run(api.name, func(t *testing.T) {
			t.Parallel()
			m, url := start(t, providertest.Config{TTFT: time.Hour})
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			resp := do(t, ctx, http.MethodPost, url+api.path, api.body, api.header)
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			cancel()
			eventually(t, 5*time.Second, "the handler sees the caller hang up", func() bool { return m.Canceled() == 1 })
		})
	}
}

// A malformed override header is refused in each API's error shape.
func TestMalformedHeaders(t *testing.T) {
	t.Parallel()
	_, url := start(t, providertest.Config{})
	for _, api := range streamAPIs() {
		for _, h := range []string{
			providertest.HeaderCachedTokens, providertest.HeaderCacheWriteTokens, providertest.HeaderReasoningTokens,
			providertest.HeaderStreamError, providertest.HeaderToolCall,
		} {
			t.Run(api.name+"/"+h, func(t *testing.T) {
				t.Parallel()
				header := map[string]string{h: "-1"}
				if h == providertest.HeaderToolCall {
					header[h] = " , "
				}
				for k, v := range api.header {
					header[k] = v
				}
				resp := post(t, url+api.path, api.body, header, http.StatusBadRequest)
				defer resp.Body.Close() // readAll closes it too; a second Close is harmless
				body := string(readAll(t, resp))
				if !strings.Contains(body, h) {
					t.Errorf("refusal %s does not name %s", body, h)
				}
			})
		}
	}
}

func TestHistory(t *testing.T) {
	t.Parallel()
	m := providertest.New(providertest.Config{})
	send := func(path, body string) {
		m.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, path, strings.NewReader(body)))
	}
	for i := range 1030 {
		send("/none?i="+strconv.Itoa(i), "")
	}
	h := m.History()
	if len(h) != 1024 || h[0].Query.Get("i") != "6" || h[1023].Query.Get("i") != "1029" {
		t.Fatalf("History() holds %d requests from i=%s; want the latest 1024", len(h), h[0].Query.Get("i"))
	}
	big := strings.Repeat("x", 6<<20)
	for range 3 {
		send("/big", big)
	}
	if h := m.History(); len(h) != 2 || h[0].Path != "/big" {
		t.Errorf("History() after three 6 MiB bodies holds %d requests, want the 2 within 16 MiB", len(h))
	}
	if last, ok := m.LastRequest(); !ok || len(last.Body) != 6<<20 || m.Requests() != 1033 {
		t.Errorf("LastRequest() = %d bytes, %v; Requests() = %d", len(last.Body), ok, m.Requests())
	}
}
