package gemini

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/moat-ai/moat/services/gateway/internal/ir"
	"github.com/moat-ai/moat/services/gateway/internal/wire/anthropic"
	"github.com/moat-ai/moat/services/gateway/internal/wire/openaichat"
	"github.com/moat-ai/moat/services/gateway/internal/wire/sse"
	"github.com/moat-ai/moat/services/gateway/internal/wire/wiretest"
)

// goldenInputs lists the inputs of one golden directory.
func goldenInputs(t testing.TB, dir, pattern string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "golden", dir, pattern))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no golden inputs in testdata/golden/%s/%s", dir, pattern)
	}
	return files
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func checkGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	wiretest.Golden(t, path, got)
}

// indent is a JSON document indented for review; member order is kept.
func indent(t testing.TB, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		t.Fatalf("not valid JSON: %v\n%s", err, b)
	}
	return append(out.Bytes(), '\n')
}

// The golden dump of IR values is the anthropic codec's (its test helpers
// are not importable): enumerations named, zero members left out except
// Index, raw JSON shown whole.
var irNames = map[string][]string{
	"Type":       {"", "text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking"},
	"Kind":       {"", "message_start", "block_start", "block_delta", "block_stop", "message_delta", "message_stop"},
	"Delta":      {"", "text", "input_json", "thinking", "signature"},
	"StopReason": {"unknown", "end", "max_tokens", "stop_sequence", "tool_use", "refusal", "pause"},
	"Mode":       {"auto", "any", "none", "named"},
}

var rawKeys = map[string]bool{"Input": true, "Schema": true, "CacheControl": true}

func dump(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var x any
	if err := dec.Decode(&x); err != nil {
		t.Fatal(err)
	}
	out, err := json.MarshalIndent(prune(x), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(out, '\n')
}

func prune(x any) any {
	switch v := x.(type) {
	case map[string]any:
		for k, e := range v {
			switch e.(type) {
			case map[string]any, []any:
				if rawKeys[k] {
					continue
				}
			}
			if n, ok := e.(json.Number); ok {
				if names, ok := irNames[k]; ok {
					i, err := n.Int64()
					switch {
					case err != nil || i < 0 || int(i) >= len(names):
					case i == 0 && (k != "Mode" || v["Set"] != true):
						delete(v, k)
						continue
					default:
						v[k] = names[i]
						continue
					}
				}
			}
			e = prune(e)
			v[k] = e
			if isZeroValue(e) && k != "Index" {
				delete(v, k)
			}
		}
		return v
	case []any:
		for i := range v {
			v[i] = prune(v[i])
		}
		return v
	}
	return x
}

func isZeroValue(x any) bool {
	switch v := x.(type) {
	case nil:
		return true
	case string:
		return v == ""
	case bool:
		return !v
	case json.Number:
		return v == "0"
	case map[string]any:
		return len(v) == 0
	case []any:
		return len(v) == 0
	}
	return false
}

// decoded is what a stream decodes to: its events (with End's when the
// stream ended without an error), the error that stopped it, and
// whether the decoder reached its end.
type decoded struct {
	Events []ir.Event
	Error  string
	Done   bool
}

// decodeStream reads every event of r through a bufio.Reader of size
// bytes and decodes it, stopping at the first error; at the end of the
// input it calls End, as the gateway does.
func decodeStream(r io.Reader, size int) decoded {
	rd := sse.NewReader(bufio.NewReaderSize(r, size), 1<<20)
	dec := NewStreamDecoder()
	var out decoded
	for {
		ev, err := rd.Next()
		if errors.Is(err, io.EOF) {
			if !dec.Done() {
				out.Events, err = dec.(ir.StreamEnder).End(out.Events)
			}
		} else if err == nil {
			out.Events, err = dec.Decode(out.Events, ev.Name, ev.Data)
			if err == nil {
				continue
			}
		}
		if err != nil {
			out.Error = err.Error()
		}
		break
	}
	out.Done = dec.Done()
	return out
}

// complete reports whether the stream reached its end without an error.
func (d decoded) complete() bool { return d.Done && d.Error == "" }

// encodeAnthropic encodes events as an Anthropic stream; end adds the
// message stop the gateway sends when a stream ends early.
func encodeAnthropic(events []ir.Event, end bool) []byte {
	enc := anthropic.NewStreamEncoder("client-model")
	var out []byte
	for i := range events {
		out = enc.Encode(out, &events[i])
	}
	if end {
		out = enc.Encode(out, &ir.Event{Kind: ir.EventMessageStop})
	}
	return out
}

// encodeOpenAI encodes events as an OpenAI chat stream with the usage
// chunk; end adds a message stop as encodeAnthropic's does.
func encodeOpenAI(events []ir.Event, end bool) []byte {
	enc := openaichat.NewStreamEncoder("client-model", 7, true)
	var out []byte
	for i := range events {
		out = enc.Encode(out, &events[i])
	}
	if end {
		out = enc.Encode(out, &ir.Event{Kind: ir.EventMessageStop})
	}
	return out
}
