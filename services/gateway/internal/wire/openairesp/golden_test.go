package openairesp

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/moat-ai/moat/services/gateway/internal/wire/wiretest"
)

// goldenInputs lists the files of testdata/golden/dir matching pattern.
func goldenInputs(t testing.TB, dir, pattern string) []string {
	t.Helper()
	return globNonEmpty(t, filepath.Join("testdata", "golden", dir, pattern))
}

// globNonEmpty lists the files matching pattern, failing when none does.
func globNonEmpty(t testing.TB, pattern string) []string {
	t.Helper()
	files, err := filepath.Glob(pattern)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no files match %s", pattern)
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

// Names of the IR's enumerations, so that a golden dump reads "tool_use"
// where encoding/json writes 4.
var irNames = map[string][]string{
	"Type":       {"", "text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking"},
	"Kind":       {"", "message_start", "block_start", "block_delta", "block_stop", "message_delta", "message_stop"},
	"Delta":      {"", "text", "input_json", "thinking", "signature"},
	"StopReason": {"unknown", "end", "max_tokens", "stop_sequence", "tool_use", "refusal", "pause"},
	"Mode":       {"auto", "any", "none", "named"},
}

// rawKeys hold raw JSON (tool inputs, schemas), whose zero members are
// part of the value and stay.
var rawKeys = map[string]bool{"Input": true, "Schema": true, "CacheControl": true}

// dump renders an IR value as indented JSON for a golden file, the
// enumerations named and zero members left out (except Index, which is
// meaningful at 0), so that a fixture shows what it carries.
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
			if isZero(e) && k != "Index" {
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

func isZero(x any) bool {
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
