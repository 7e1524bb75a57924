package openaichat

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-ai/moat/services/gateway/internal/ir"
	"github.com/moat-ai/moat/services/gateway/internal/wire/jsonx"
)

func TestParseChatRequest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		body       string
		wantErr    error
		wantModel  string
		wantStream bool
		wantClient bool // the client asked for usage itself
	}{
		{name: "minimal", body: `{"model":"m","messages":[]}`, wantModel: "m"},
		{name: "whitespace everywhere", body: " \n{ \"model\" : \"m\" ,\t\"messages\" : [ ] } \r\n", wantModel: "m"},
		{name: "stream", body: `{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}`, wantModel: "m", wantStream: true},
		{name: "stream false", body: `{"model":"m","messages":[],"stream":false}`, wantModel: "m"},
		{name: "stream null", body: `{"model":"m","messages":[],"stream":null}`, wantModel: "m"},
		{name: "client asks usage", body: `{"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":true}}`, wantModel: "m", wantStream: true, wantClient: true},
		{name: "escaped model", body: `{"model":"a\"b\u00e9","messages":[]}`, wantModel: "a\"bé"},
		{name: "escaped key", body: `{"mod\u0065l":"m","messages":[]}`, wantModel: "m"},
		{name: "unknown fields kept", body: `{"model":"m","messages":[],"temperature":0.2,"tools":[{"a":{"b":[1,2,{"c":null}]}}],"n":-1e-3}`, wantModel: "m"},

		{name: "empty", body: ``, wantErr: ErrMalformed},
		{name: "array", body: `[]`, wantErr: ErrMalformed},
		{name: "truncated", body: `{"model":"m","messages":[`, wantErr: ErrMalformed},
		{name: "trailing garbage", body: `{"model":"m","messages":[]}x`, wantErr: ErrMalformed},
		{name: "two objects", body: `{"model":"m","messages":[]}{}`, wantErr: ErrMalformed},
		{name: "bad escape", body: `{"model":"m\q","messages":[]}`, wantErr: ErrMalformed},
		{name: "control character", body: "{\"model\":\"m\x01\",\"messages\":[]}", wantErr: ErrMalformed},
		{name: "leading zero", body: `{"model":"m","messages":[],"n":01}`, wantErr: ErrMalformed},
		{name: "trailing comma", body: `{"model":"m","messages":[],}`, wantErr: ErrMalformed},
		{name: "single quotes", body: `{'model':'m'}`, wantErr: ErrMalformed},
		{name: "too deep", body: `{"model":"m","messages":[],"x":` + strings.Repeat("[", 300) + strings.Repeat("]", 300) + `}`, wantErr: ErrNested},
		{name: "no model", body: `{"messages":[]}`, wantErr: ErrNoModel},
		{name: "null model", body: `{"model":null,"messages":[]}`, wantErr: ErrNoModel},
		{name: "empty model", body: `{"model":"","messages":[]}`, wantErr: ErrNoModel},
		{name: "model not a string", body: `{"model":1,"messages":[]}`, wantErr: ErrModelType},
		{name: "no messages", body: `{"model":"m"}`, wantErr: ErrNoMessages},
		{name: "messages not an array", body: `{"model":"m","messages":"hi"}`, wantErr: ErrMessagesType},
		{name: "messages object", body: `{"model":"m","messages":{}}`, wantErr: ErrMessagesType},
		{name: "stream not a boolean", body: `{"model":"m","messages":[],"stream":"yes"}`, wantErr: ErrStreamType},
		{name: "stream_options not an object", body: `{"model":"m","messages":[],"stream_options":[]}`, wantErr: ErrOptionsType},
		{name: "include_usage not a boolean", body: `{"model":"m","messages":[],"stream_options":{"include_usage":1}}`, wantErr: ErrIncludeType},
		{name: "duplicate model", body: `{"model":"a","messages":[],"model":"b"}`, wantErr: ErrDuplicateName},
		{name: "duplicate escaped model", body: `{"model":"a","messages":[],"mod\u0065l":"b"}`, wantErr: ErrDuplicateName},
		{name: "duplicate stream", body: `{"model":"a","messages":[],"stream":false,"stream":true}`, wantErr: ErrDuplicateName},
		{name: "duplicate include_usage", body: `{"model":"a","messages":[],"stream_options":{"include_usage":false,"include_usage":true}}`, wantErr: ErrDuplicateName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req, err := ParseRequest([]byte(tt.body))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("ParseRequest(%q) error = %v, want %v", tt.body, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseRequest(%q) = %v", tt.body, err)
			}
			got := []any{req.Model, req.Stream, req.ClientUsage}
			want := []any{tt.wantModel, tt.wantStream, tt.wantClient}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("model, stream, client usage mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRewrite(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
		want map[string]any
	}{
		{
			name: "model only when not streaming",
			body: `{"model":"logical","messages":[{"role":"user","content":"hi"}],"stream_options":{"include_usage":false}}`,
			want: map[string]any{"model": "upstream", "messages": []any{map[string]any{"role": "user", "content": "hi"}}, "stream_options": map[string]any{"include_usage": false}},
		},
		{
			name: "stream without options",
			body: `{"messages":[],"stream":true,"model":"logical"}`,
			want: map[string]any{"model": "upstream", "messages": []any{}, "stream": true, "stream_options": map[string]any{"include_usage": true}},
		},
		{
			name: "stream with null options",
			body: `{"model":"logical","messages":[],"stream":true,"stream_options":null}`,
			want: map[string]any{"model": "upstream", "messages": []any{}, "stream": true, "stream_options": map[string]any{"include_usage": true}},
		},
		{
			name: "stream with empty options",
			body: `{"model":"logical","messages":[],"stream":true,"stream_options":{ }}`,
			want: map[string]any{"model": "upstream", "messages": []any{}, "stream": true, "stream_options": map[string]any{"include_usage": true}},
		},
		{
			name: "stream with other options",
			body: `{"model":"logical","messages":[],"stream":true,"stream_options":{"x":1}}`,
			want: map[string]any{"model": "upstream", "messages": []any{}, "stream": true, "stream_options": map[string]any{"include_usage": true, "x": float64(1)}},
		},
		{
			name: "stream with usage off",
			body: `{"stream_options":{"include_usage":false,"x":1},"model":"logical","messages":[],"stream":true}`,
			want: map[string]any{"model": "upstream", "messages": []any{}, "stream": true, "stream_options": map[string]any{"include_usage": true, "x": float64(1)}},
		},
		{
			name: "stream with usage null",
			body: `{"model":"logical","messages":[],"stream":true,"stream_options":{"include_usage":null}}`,
			want: map[string]any{"model": "upstream", "messages": []any{}, "stream": true, "stream_options": map[string]any{"include_usage": true}},
		},
		{
			name: "client already asked",
			body: `{"model":"logical","messages":[],"stream":true,"stream_options":{"include_usage":true}}`,
			want: map[string]any{"model": "upstream", "messages": []any{}, "stream": true, "stream_options": map[string]any{"include_usage": true}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req, err := ParseRequest([]byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			out := req.Rewrite([]byte(tt.body), []byte(`"upstream"`))
			var got map[string]any
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("rewrite(%s) = %s, not JSON: %v", tt.body, out, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("rewrite(%s) mismatch (-want +got):\n%s", tt.body, diff)
			}
		})
	}
}

func TestReadUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		in        string
		want      ir.Usage
		wantEmpty bool
	}{
		{"completion", `{"id":"x","choices":[{"index":0}],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}`, ir.Usage{Input: 12, Output: 3, Found: true}, false},
		{"usage chunk", `{"choices":[ ],"usage":{"completion_tokens":7,"prompt_tokens":2}}`, ir.Usage{Input: 2, Output: 7, Found: true}, true},
		{"null usage", `{"choices":[{"delta":{"content":"\"usage\":{"}}],"usage":null}`, ir.Usage{}, false},
		{"no usage", `{"choices":[]}`, ir.Usage{}, true},
		{"nested usage ignored", `{"choices":[{"usage":{"prompt_tokens":1}}]}`, ir.Usage{}, false},
		{"negative and float counts", `{"usage":{"prompt_tokens":-1,"completion_tokens":2.5}}`, ir.Usage{Found: true}, false},
		{"malformed", `{"usage":{"prompt_tokens":1}`, ir.Usage{}, false},
		{"cached and reasoning", `{"choices":[],"usage":{"prompt_tokens":100,"completion_tokens":30,"prompt_tokens_details":{"cached_tokens":80,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":20}}}`, ir.Usage{Input: 20, CacheRead: 80, Output: 30, Reasoning: 20, Found: true}, true},
		{"more cached than prompt", `{"usage":{"prompt_tokens":5,"prompt_tokens_details":{"cached_tokens":9}}}`, ir.Usage{Input: 0, CacheRead: 5, Found: true}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, empty := ReadUsage([]byte(tt.in))
			if got != tt.want || empty != tt.wantEmpty {
				t.Errorf("ReadUsage(%s) = %+v, %v; want %+v, %v", tt.in, got, empty, tt.want, tt.wantEmpty)
			}
		})
	}
}

// FuzzParseRequest checks the scanner against encoding/json (it accepts
// exactly the objects json.Valid accepts within the depth limit), that a
// body it accepts is rewritten into valid JSON, and that nothing panics.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"model":"m","messages":[]}`, `{"a":[1,-2.5e+3,true,false,null,"\u00e9\n"]}`,
		`{"a":{"b":{"c":[]}}}`, `{"a":01}`, `{"a":1.}`, `{"a":"\x"}`, `{"a" 1}`, `{"a":1,}`, `{"a":tru}`,
		"{\"a\":\"\x00\"}", `{"a":"\ud800"}`, ` {"a":-0} `, `{"a":[1,]}`,
		// Long strings, for the eight-bytes-at-a-time path: specials at
		// every offset, bytes at 0x1f/0x20/0x7f/0xff.
		`{"a":"12345678\"9abcdefgh"}`, `{"a":"1234567\\n9abcdefghijklmnop"}`, "{\"a\":\"1234567\x1f9abcdefgh\"}",
		"{\"a\":\"\x7f\x7f\x7f\x7f\x7f\x7f\x7f\x7f\x7f \"}", "{\"a\":\"\xff\xfe\xe9\xc3\xa9\x80\x80\x80\x80\x80\x80\x1f\"}",
		`{"model":"m","messages":[{"role":"user","content":"a fairly long prompt with \"quotes\" and \\ slashes"}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_, err := jsonx.Object(b, func(jsonx.Member) error { return nil })
		if errors.Is(err, jsonx.ErrTooDeep) {
			return
		}
		var v any
		want := json.Valid(b) && json.Unmarshal(b, &v) == nil
		if want {
			_, isObject := v.(map[string]any)
			want = isObject
		}
		if got := err == nil; got != want {
			t.Errorf("scanObject(%q) accepted = %v, encoding/json = %v (err %v)", b, got, want, err)
		}
		if err == nil {
			// A body the scanner accepts can be parsed and rewritten
			// into valid JSON.
			if req, err := ParseRequest(b); err == nil {
				if out := req.Rewrite(b, []byte(`"u"`)); !json.Valid(out) {
					t.Errorf("rewrite(%q) = %q, not valid JSON", b, out)
				}
			}
		}
		_, _ = ReadUsage(b)
	})
}

// BenchmarkParseRewrite measures the gateway's work on a typical body: a
// few kilobytes of conversation, streamed.
func BenchmarkParseRewrite(b *testing.B) {
	msgs := make([]string, 0, 8)
	for i := range 8 {
		msgs = append(msgs, `{"role":"user","content":"`+strings.Repeat("word ", 100)+`\n`+strings.Repeat("x", i)+`"}`)
	}
	body := []byte(`{"model":"demo-model","stream":true,"temperature":0.7,"messages":[` + strings.Join(msgs, ",") + `]}`)
	upstream := []byte(`"upstream-model"`)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		req, err := ParseRequest(body)
		if err != nil {
			b.Fatal(err)
		}
		_ = req.Rewrite(body, upstream)
	}
}

// BenchmarkJSONValid is the reference: encoding/json only validating a
// body of the same kind, which the scanner must beat while doing more.
func BenchmarkJSONValid(b *testing.B) {
	body := []byte(`{"model":"demo-model","stream":true,"messages":[{"role":"user","content":"` + strings.Repeat("word ", 800) + `"}]}`)
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		_ = json.Valid(body)
	}
}
