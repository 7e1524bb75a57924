package openaichat

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moat-ai/moat/services/gateway/internal/wire/wiretest"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-ai/moat/services/gateway/internal/ir"
	"github.com/moat-ai/moat/services/gateway/internal/wire"
	"github.com/moat-ai/moat/services/gateway/internal/wire/sse"
)

// golden compares got with testdata/golden/name, or rewrites it with
// -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	wiretest.Golden(t, filepath.Join("testdata", "golden", name), got)
}

func TestDecodeRequest(t *testing.T) {
	t.Parallel()
	body := `{"model":"m","max_completion_tokens":100,"temperature":0.5,"stop":"END","stream":true,
		"stream_options":{"include_usage":true},"presence_penalty":0.1,"seed":7,"x_unknown":{"a":1},
		"reasoning_effort":"high","user":"u1","parallel_tool_calls":false,
		"tools":[{"type":"function","function":{"name":"get_weather","description":"d","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}],
		"tool_choice":{"type":"function","function":{"name":"get_weather"}},
		"messages":[
			{"role":"system","content":"be brief"},
			{"role":"developer","content":[{"type":"text","text":"and kind"}]},
			{"role":"user","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBO"}},{"type":"image_url","image_url":{"url":"https://example.com/a.png"}},{"type":"file","file":{"file_data":"data:application/pdf;base64,JVBE","filename":"a.pdf"}}]},
			{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},{"id":"call_2","type":"function","function":{"name":"get_weather","arguments":""}}]},
			{"role":"tool","tool_call_id":"call_1","content":"sunny"},
			{"role":"tool","tool_call_id":"call_2","content":[{"type":"text","text":"rain"}]}
		]}`
	r, dropped, err := DecodeRequest([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"presence_penalty", "seed", "x_unknown"}, dropped); diff != "" {
		t.Errorf("dropped mismatch (-want +got):\n%s", diff)
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "request_all.ir.json", append(b, '\n'))
	out, err := EncodeRequest(nil, r, "upstream")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseRequest(out); err != nil {
		t.Errorf("EncodeRequest output does not parse: %v\n%s", err, out)
	}
	golden(t, "request_all.encoded.json", indent(t, out))
}

func indent(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Indent(&buf, b, "", "  "); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, b)
	}
	return append(buf.Bytes(), '\n')
}

func TestDecodeRequestErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, body, code, param string
	}{
		{"audio input", `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"input_audio","input_audio":{}}]}]}`, wire.CodeUnsupported, "messages[0].content[1]"},
		{"unknown part type", `{"model":"m","messages":[{"role":"user","content":[{"type":"hologram"}]}]}`, wire.CodeInvalidValue, "messages[0].content[0].type"},
		{"image in a system message", `{"model":"m","messages":[{"role":"system","content":[{"type":"image_url","image_url":{"url":"https://x"}}]}]}`, wire.CodeInvalidValue, "messages[0].content[0].type"},
		{"arguments not an object", `{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"[1"}}]}]}`, wire.CodeInvalidValue, "messages[0].tool_calls[0].function.arguments"},
		{"tool message without id", `{"model":"m","messages":[{"role":"tool","content":"x"}]}`, wire.CodeInvalidValue, "messages[0].tool_call_id"},
		{"bad role", `{"model":"m","messages":[{"role":"wizard","content":"x"}]}`, wire.CodeInvalidValue, "messages[0].role"},
		{"wrong type", `{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":"hot"}`, wire.CodeInvalidType, "temperature"},
		{"duplicate member deep inside", `{"model":"m","messages":[{"role":"user","role":"system","content":"x"}]}`, wire.CodeDuplicateParameter, ""},
		{"audio output", `{"model":"m","modalities":["text","audio"],"messages":[]}`, wire.CodeUnsupported, "modalities"},
		{"file by id", `{"model":"m","messages":[{"role":"user","content":[{"type":"file","file":{"file_id":"f1"}}]}]}`, wire.CodeUnsupported, "messages[0].content[0].file.file_id"},
		{"non-function tool", `{"model":"m","messages":[],"tools":[{"type":"web_search"}]}`, wire.CodeUnsupported, "tools[0].type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, _, err := DecodeRequest([]byte(tt.body))
			var re *wire.RequestError
			if !errors.As(err, &re) {
				t.Fatalf("DecodeRequest = %v, want a request error", err)
			}
			if re.Code != tt.code || re.Param != tt.param {
				t.Errorf("code, param = %q, %q; want %q, %q (%s)", re.Code, re.Param, tt.code, tt.param, re.Message)
			}
		})
	}
}

func TestResponseRoundTrip(t *testing.T) {
	t.Parallel()
	body := `{"id":"chatcmpl-9","object":"chat.completion","created":5,"model":"gpt","choices":[{"index":0,"message":{"role":"assistant","content":"Hi","reasoning_content":"hmm","tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}},{"id":"call_2","type":"function","function":{"name":"g","arguments":""}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":100,"completion_tokens":30,"total_tokens":130,"prompt_tokens_details":{"cached_tokens":80},"completion_tokens_details":{"reasoning_tokens":20}}}`
	r, err := DecodeResponse([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	want := &ir.Response{ID: "chatcmpl-9", Model: "gpt", StopReason: ir.StopToolUse,
		Content: []ir.Block{{Type: ir.BlockThinking, Text: "hmm"}, {Type: ir.BlockText, Text: "Hi"},
			{Type: ir.BlockToolUse, ID: "call_1", Name: "f", Input: ir.Raw(`{"a":1}`)}, {Type: ir.BlockToolUse, ID: "call_2", Name: "g", Input: ir.Raw(`{}`)}},
		Usage: ir.Usage{Input: 20, CacheRead: 80, Output: 30, Reasoning: 20, Found: true}}
	if diff := cmp.Diff(want, r); diff != "" {
		t.Errorf("DecodeResponse mismatch (-want +got):\n%s", diff)
	}
	golden(t, "response_tools.encoded.json", indent(t, EncodeResponse(nil, r, "gpt", 5)))
	back, err := DecodeResponse(EncodeResponse(nil, r, "gpt", 5))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(r, back); diff != "" {
		t.Errorf("round trip mismatch (-want +got):\n%s", diff)
	}
}

// decodeStream reads an SSE stream through the decoder, returning its IR
// events (with End applied at the end of input) and the error that ended
// it.
func decodeStream(r io.Reader) ([]ir.Event, error) {
	rd := sse.NewReader(bufio.NewReaderSize(r, 16), 1<<20)
	dec := NewStreamDecoder()
	var evs []ir.Event
	for {
		ev, err := rd.Next()
		if errors.Is(err, io.EOF) {
			if !dec.Done() {
				return dec.(ir.StreamEnder).End(evs)
			}
			return evs, nil
		}
		if err != nil {
			return evs, err
		}
		var derr error
		evs, derr = dec.Decode(evs, ev.Name, ev.Data)
		if derr != nil {
			return evs, derr
		}
	}
}

// dumpEvents renders IR events one per line, for goldens.
func dumpEvents(evs []ir.Event, err error) []byte {
	var b bytes.Buffer
	for _, e := range evs {
		j, _ := json.Marshal(e) // an ir.Event always marshals
		b.Write(j)
		b.WriteByte('\n')
	}
	if err != nil {
		fmt.Fprintf(&b, "error: %v\n", err)
	}
	return b.Bytes()
}

func TestStreamGoldens(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob(filepath.Join("testdata", "golden", "*.upstream.sse"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no stream goldens (%v)", err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".upstream.sse")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			in, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			evs, derr := decodeStream(bytes.NewReader(in))
			golden(t, name+".ir.jsonl", dumpEvents(evs, derr))
			if derr != nil {
				return
			}
			for _, clientUsage := range []bool{false, true} {
				enc := NewStreamEncoder("logical", 7, clientUsage)
				var out []byte
				for i := range evs {
					out = enc.Encode(out, &evs[i])
				}
				if err := validateStream(out, clientUsage); err != nil {
					t.Errorf("encoded stream (usage %v) is not a valid OpenAI stream: %v\n%s", clientUsage, err, out)
				}
				if clientUsage {
					golden(t, name+".client.sse", out)
				}
			}
		})
	}
}

// validateStream checks the OpenAI chat stream grammar: the role first,
// tool call indices contiguous from 0, one finish_reason, the usage chunk
// (when asked) after it, and [DONE] last.
func validateStream(b []byte, wantUsage bool) error {
	rd := sse.NewReader(bufio.NewReader(bytes.NewReader(b)), 1<<20)
	var (
		n, finishes, nextTool int
		usageSeen, done       bool
	)
	for {
		ev, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if done {
			return errors.New("event after [DONE]")
		}
		if string(ev.Data) == "[DONE]" {
			done = true
			continue
		}
		var ch struct {
			Object  string `json:"object"`
			Choices []struct {
				Delta struct {
					Role      string `json:"role"`
					ToolCalls []struct {
						Index int    `json:"index"`
						ID    string `json:"id"`
					} `json:"tool_calls"`
				} `json:"delta"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
			Usage *json.RawMessage `json:"usage"`
		}
		if err := json.Unmarshal(ev.Data, &ch); err != nil {
			return fmt.Errorf("chunk %d: %w", n, err)
		}
		if ch.Object != "chat.completion.chunk" {
			return fmt.Errorf("chunk %d: object %q", n, ch.Object)
		}
		if usageSeen {
			return errors.New("a chunk after the usage chunk")
		}
		if ch.Usage != nil {
			if len(ch.Choices) != 0 || finishes != 1 {
				return errors.New("the usage chunk must have empty choices and follow the finish reason")
			}
			usageSeen = true
		}
		for _, c := range ch.Choices {
			if n == 0 && c.Delta.Role != "assistant" {
				return errors.New("the first chunk does not carry the role")
			}
			if finishes > 0 {
				return errors.New("a choice after the finish reason")
			}
			for _, tc := range c.Delta.ToolCalls {
				switch {
				case tc.ID != "" && tc.Index == nextTool:
					nextTool++
				case tc.ID != "":
					return fmt.Errorf("tool call index %d starts out of order (next %d)", tc.Index, nextTool)
				case tc.Index != nextTool-1:
					return fmt.Errorf("arguments for tool call %d while %d is open", tc.Index, nextTool-1)
				}
			}
			if c.FinishReason != nil {
				finishes++
			}
		}
		n++
	}
	switch {
	case !done:
		return errors.New("no [DONE]")
	case finishes != 1:
		return fmt.Errorf("%d finish reasons, want 1", finishes)
	case usageSeen != wantUsage:
		return fmt.Errorf("usage chunk present = %v, want %v", usageSeen, wantUsage)
	}
	return nil
}

// FuzzStreamDecoder feeds a stream split at random boundaries and checks
// that the IR events are those of the whole stream, and that a stream the
// decoder accepts re-encodes into a valid OpenAI stream.
func FuzzStreamDecoder(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "golden", "*.upstream.sse"))
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, []byte{3, 1, 4, 1, 5, 9, 2, 6})
	}
	f.Fuzz(func(t *testing.T, stream, sizes []byte) {
		want, werr := decodeStream(bytes.NewReader(stream))
		got, err := decodeStream(&wiretest.SplitReader{B: stream, Sizes: sizes})
		if (werr == nil) != (err == nil) {
			t.Fatalf("errors differ: whole %v, split %v", werr, err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("split decoding differs (-whole +split):\n%s", diff)
		}
		if err != nil || len(got) == 0 {
			return
		}
		enc := NewStreamEncoder("m", 1, true)
		var out []byte
		for i := range got {
			out = enc.Encode(out, &got[i])
		}
		if err := validateStream(out, true); err != nil {
			t.Errorf("re-encoded stream invalid: %v\n%s", err, out)
		}
	})
}

// FuzzDecodeRequest checks that no body panics the translated decoder and
// that whatever it accepts encodes into a request ParseRequest accepts.
func FuzzDecodeRequest(f *testing.F) {
	f.Add([]byte(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`))
	f.Add([]byte(`{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"required"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := ParseRequest(b); err != nil {
			return
		}
		r, _, err := DecodeRequest(b)
		if err != nil {
			return
		}
		out, err := EncodeRequest(nil, r, "u")
		if err != nil {
			return
		}
		if _, err := ParseRequest(out); err != nil {
			t.Errorf("EncodeRequest(%s) = %s, which does not parse: %v", b, out, err)
		}
	})
}
