package openairesp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-ai/moat/libs/providertest"
	"github.com/moat-ai/moat/services/gateway/internal/ir"
	"github.com/moat-ai/moat/services/gateway/internal/wire/sse"
)

// nativeEvent is one event of a native stream, as the relay sees it.
type nativeEvent struct{ name, data []byte }

func nativeEvents(t testing.TB, b []byte) []nativeEvent {
	t.Helper()
	rd := sse.NewReader(bufio.NewReaderSize(bytes.NewReader(b), 64), 1<<20)
	var evs []nativeEvent
	for {
		ev, err := rd.Next()
		if errors.Is(err, io.EOF) {
			return evs
		}
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, nativeEvent{bytes.Clone(ev.Name), bytes.Clone(ev.Data)})
	}
}

// relayed is what the native path reads of a stream: the index of the
// commit point (-1 when none), the usage merged, and the error.
type relayed struct {
	Commit int
	Usage  ir.Usage
	Error  *ir.ProviderError
}

func relay(evs []nativeEvent) relayed {
	r := relayed{Commit: -1}
	for i, ev := range evs {
		if e, ok := StreamError(ev.name, ev.data); ok {
			r.Error = &e
		}
		r.Usage.Merge(ReadStreamUsage(ev.name, ev.data))
		if r.Commit < 0 && StreamHasContent(ev.name, ev.data) {
			r.Commit = i
		}
	}
	return r
}

var eventLine = regexp.MustCompile(`(?m)^event: .*\n`)

// TestNativeStream reads a stream as OpenAI sends it, with and without
// its event: lines (compatible servers that send data alone), and checks
// what the native path reads of it.
func TestNativeStream(t *testing.T) {
	t.Parallel()
	stream := readFile(t, filepath.Join("testdata", "native", "reasoning_text_tool.sse"))
	if err := validateStream(stream, validation{Complete: true, ToolJSON: true}); err != nil {
		t.Fatalf("the fixture breaks the grammar: %v", err)
	}
	want := relayed{Commit: 10, Usage: ir.Usage{Input: 20, CacheRead: 100, Output: 80, Reasoning: 64, Found: true}}
	for _, b := range [][]byte{stream, eventLine.ReplaceAll(stream, nil)} {
		evs := nativeEvents(t, b)
		if diff := cmp.Diff(want, relay(evs)); diff != "" {
			t.Errorf("relay mismatch (-want +got):\n%s", diff)
		}
		for i, ev := range evs {
			if n, ok := SequenceNumber(ev.data); !ok || n != int64(i) {
				t.Errorf("SequenceNumber(event %d) = %d, %v", i, n, ok)
			}
		}
	}
}

func TestStreamHasContent(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, data string
		want       bool
	}{
		{"response.created", `{"type":"response.created","response":{"status":"in_progress"}}`, false},
		{"response.in_progress", `{}`, false},
		{"response.output_item.added", `{"type":"response.output_item.added","item":{"type":"message","content":[]}}`, false},
		{"response.output_item.added", `{"type":"response.output_item.added","item":{"type":"reasoning","summary":[]}}`, false},
		{"response.output_item.added", `{"type":"response.output_item.added","item":{"type":"function_call","name":"f"}}`, true},
		{"response.output_item.added", `{"type":"response.output_item.added","item":7}`, true},
		{"response.content_part.added", `{}`, false},
		{"response.reasoning_summary_text.delta", `{"delta":"hmm"}`, false},
		{"response.output_text.delta", `{"delta":"Hi"}`, true},
		{"response.refusal.delta", `{"delta":"No"}`, true},
		{"response.function_call_arguments.delta", `{"delta":"{"}`, true},
		{"response.completed", `{}`, true},
		{"response.incomplete", `{}`, true},
		{"response.failed", `{}`, true},
		{"error", `{"type":"error","code":"server_error"}`, false},
		{"", `{"type":"response.output_text.delta","delta":"Hi"}`, true},
		{"", `{"type":"response.created"}`, false},
		{"", `{"type":"response.output_item.added","item":{"type":"function_call"}}`, true},
		{"", `{"type":`, true},
		{"", `not json`, true},
		{"", ``, false},
	}
	for _, tt := range tests {
		if got := StreamHasContent([]byte(tt.name), []byte(tt.data)); got != tt.want {
			t.Errorf("StreamHasContent(%q, %s) = %v, want %v", tt.name, tt.data, got, tt.want)
		}
	}
}

func TestStreamError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, data string
		want       ir.ProviderError
		ok         bool
	}{
		{"error", `{"type":"error","code":"server_error","message":"The server had an error.","param":null,"sequence_number":4}`,
			ir.ProviderError{Type: "server_error", Message: "The server had an error."}, true},
		{"", `{"type":"error","code":"server_overloaded","message":"Busy."}`, ir.ProviderError{Type: "server_overloaded", Overloaded: true, Message: "Busy."}, true},
		{"error", `{"type":"error","error":{"type":"server_error","code":"overloaded","message":"Try again."}}`,
			ir.ProviderError{Type: "overloaded", Overloaded: true, Message: "Try again."}, true},
		{"error", `{"type":"error","code":null,"message":"?"}`, ir.ProviderError{Type: "server_error", Message: "?"}, true},
		{"response.failed", `{"type":"response.failed","response":{"id":"resp_1","status":"failed","error":{"code":"rate_limit_exceeded","message":"Slow down."}}}`,
			ir.ProviderError{Type: "rate_limit_exceeded", Message: "Slow down."}, true},
		{"", `{"type":"response.failed","response":{"status":"failed","error":null}}`, ir.ProviderError{Type: "server_error"}, true},
		{"response.completed", `{"type":"response.completed","response":{"error":null}}`, ir.ProviderError{}, false},
		{"response.incomplete", `{}`, ir.ProviderError{}, false},
		{"", `{"type":"response.output_text.delta","delta":"error"}`, ir.ProviderError{}, false},
	}
	for _, tt := range tests {
		got, ok := StreamError([]byte(tt.name), []byte(tt.data))
		if ok != tt.ok || got != tt.want {
			t.Errorf("StreamError(%q, %s) = %+v, %v; want %+v, %v", tt.name, tt.data, got, ok, tt.want, tt.ok)
		}
	}
}

func TestReadUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, body string
		want       ir.Usage
	}{
		{"cached and reasoning", `{"id":"resp_1","usage":{"input_tokens":100,"input_tokens_details":{"cached_tokens":80},"output_tokens":30,"output_tokens_details":{"reasoning_tokens":20},"total_tokens":130}}`,
			ir.Usage{Input: 20, CacheRead: 80, Output: 30, Reasoning: 20, Found: true}},
		{"cache writes", `{"usage":{"input_tokens":100,"input_tokens_details":{"cached_tokens":10,"cache_write_tokens":50},"output_tokens":1}}`,
			ir.Usage{Input: 40, CacheRead: 10, CacheWrite: 50, Output: 1, Found: true}},
		{"no details", `{"usage":{"input_tokens":7,"output_tokens":2,"total_tokens":9}}`, ir.Usage{Input: 7, Output: 2, Found: true}},
		{"impossible counts", `{"usage":{"input_tokens":5,"input_tokens_details":{"cached_tokens":9,"cache_write_tokens":3},"output_tokens":1,"output_tokens_details":{"reasoning_tokens":4}}}`,
			ir.Usage{CacheRead: 5, Output: 1, Reasoning: 1, Found: true}},
		{"null usage", `{"id":"resp_1","usage":null}`, ir.Usage{}},
		{"no usage", `{"id":"resp_1"}`, ir.Usage{}},
		{"malformed", `{"usage":{"input_tokens":1}`, ir.Usage{}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, ReadUsage([]byte(tt.body))); diff != "" {
			t.Errorf("%s: ReadUsage mismatch (-want +got):\n%s", tt.name, diff)
		}
	}
	u := ReadStreamUsage([]byte("response.created"), []byte(`{"response":{"usage":{"input_tokens":1}}}`))
	if u.Found {
		t.Errorf("ReadStreamUsage(response.created) = %+v, want nothing", u)
	}
}

func TestStreamErrorEvent(t *testing.T) {
	t.Parallel()
	got := string(StreamErrorEvent([]byte("x"), "upstream_error", "The provider \"broke\".", 12))
	want := "xevent: error\ndata: {\"type\":\"error\",\"code\":\"upstream_error\",\"message\":\"The provider \\\"broke\\\".\",\"param\":null,\"sequence_number\":12}\n\n"
	if got != want {
		t.Errorf("StreamErrorEvent = %q, want %q", got, want)
	}
	if _, err := sdkEvent([]byte(strings.TrimSuffix(strings.TrimPrefix(got, "xevent: error\ndata: "), "\n\n"))); err != nil {
		t.Errorf("the SDK refuses the error event: %v", err)
	}
}

// TestMockStreams runs the streams the mock provider serves through the
// validator and the native path's readers: the usage of a stream must be
// that of the same answer unstreamed, the commit point the first content,
// and an injected failure an error.
func TestMockStreams(t *testing.T) {
	t.Parallel()
	srv := providertest.New(providertest.Config{})
	call := func(t *testing.T, body string, header map[string]string) []byte {
		t.Helper()
		req := httptest.NewRequest(http.MethodPost, "/v1/responses", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		for k, v := range header {
			req.Header.Set(k, v)
		}
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Fatalf("mock answered %d: %s", rec.Code, rec.Body)
		}
		return rec.Body.Bytes()
	}
	const body = `{"model":"gpt-r","instructions":"be brief","input":[{"role":"user","content":"hello there"}]`
	tests := []struct {
		name       string
		members    string
		header     map[string]string
		wantCommit string // the type of the commit event
		wantError  bool
	}{
		{"text", ``, nil, typeTextDelta, false},
		{"cached and reasoning", ``, map[string]string{providertest.HeaderCachedTokens: "3", providertest.HeaderReasoningTokens: "2"}, typeTextDelta, false},
		{"tools", ``, map[string]string{providertest.HeaderToolCall: "get_weather,now"}, typeItemAdded, false},
		{"truncated", `,"max_output_tokens":2`, nil, typeTextDelta, false},
		{"error mid-stream", ``, map[string]string{providertest.HeaderStreamError: "2"}, typeTextDelta, true},
		{"error first", ``, map[string]string{providertest.HeaderStreamError: "0"}, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			stream := call(t, body+tt.members+`,"stream":true}`, tt.header)
			if err := validateStream(stream, validation{Complete: true, ToolJSON: true}); err != nil {
				t.Fatalf("the mock's stream breaks the grammar: %v\n%s", err, stream)
			}
			evs := nativeEvents(t, stream)
			got := relay(evs)
			if (got.Error != nil) != tt.wantError {
				t.Errorf("error %+v, want one: %v", got.Error, tt.wantError)
			}
			switch {
			case tt.wantCommit == "" && got.Commit >= 0:
				t.Errorf("committed at event %d (%s), want no commit", got.Commit, evs[got.Commit].name)
			case tt.wantCommit != "" && (got.Commit < 0 || string(evs[got.Commit].name) != tt.wantCommit):
				t.Errorf("committed at event %d, want the first %s", got.Commit, tt.wantCommit)
			}
			if tt.wantError {
				return
			}
			whole := call(t, body+tt.members+`}`, tt.header)
			want := ReadUsage(whole)
			if !want.Found || want.Output == 0 {
				t.Fatalf("ReadUsage(%s) = %+v", whole, want)
			}
			if diff := cmp.Diff(want, got.Usage); diff != "" {
				t.Errorf("stream usage differs from the whole answer's (-whole +stream):\n%s", diff)
			}
		})
	}
}
