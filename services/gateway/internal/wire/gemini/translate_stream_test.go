package gemini

import (
	"bytes"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-ai/moat/services/gateway/internal/ir"
	"github.com/moat-ai/moat/services/gateway/internal/wire/wiretest"
)

// TestStreamGolden decodes each stream of testdata/golden/streams into IR
// events (NAME.events.json) and re-encodes them for an Anthropic client
// (NAME.anthropic.sse) and an OpenAI one (NAME.openai.sse); both must
// pass their protocol's validator, once closed by the gateway's message
// stop when the stream broke. Reading the stream in small pieces must
// give the same events.
func TestStreamGolden(t *testing.T) {
	t.Parallel()
	for _, in := range goldenInputs(t, "streams", "*.in.sse") {
		name := strings.TrimSuffix(in, ".in.sse")
		t.Run(filepath.Base(name), func(t *testing.T) {
			t.Parallel()
			stream := readFile(t, in)
			got := decodeStream(bytes.NewReader(stream), 1<<16)
			for _, sizes := range [][]byte{{0}, {1, 2, 3, 5, 8, 13}, {200, 7}} {
				split := decodeStream(&wiretest.SplitReader{B: stream, Sizes: sizes}, 16)
				if diff := cmp.Diff(got, split); diff != "" {
					t.Errorf("split reading %v differs (-whole +split):\n%s", sizes, diff)
				}
			}
			checkGolden(t, name+".events.json", dump(t, got))
			if len(got.Events) == 0 {
				return // an error before any content: the gateway answers it, or falls back
			}
			complete := got.complete()
			out := encodeAnthropic(got.Events, !complete)
			if err := validateAnthropic(out, validation{Complete: true, ToolJSON: true}); err != nil {
				t.Errorf("Anthropic stream breaks the grammar: %v\n%s", err, out)
			}
			checkGolden(t, name+".anthropic.sse", out)
			oai := encodeOpenAI(got.Events, !complete)
			if err := validateOpenAI(oai, true); err != nil {
				t.Errorf("OpenAI stream breaks the grammar: %v\n%s", err, oai)
			}
			checkGolden(t, name+".openai.sse", oai)
		})
	}
}

// TestStreamMatchesResponse checks that a stream and the whole answer
// it amounts to decode to the same blocks, stop reason and usage.
func TestStreamMatchesResponse(t *testing.T) {
	t.Parallel()
	const (
		chunk1 = `{"candidates":[{"content":{"role":"model","parts":[{"text":"Let me see.","thought":true,"thoughtSignature":"czE="}]},"index":0}],"modelVersion":"g","responseId":"r"}`
		chunk2 = `{"candidates":[{"content":{"role":"model","parts":[{"text":"Calling."},{"functionCall":{"name":"f","args":{"a":1}},"thoughtSignature":"czI="},{"functionCall":{"name":"g","args":{}}}]},"index":0}],"modelVersion":"g","responseId":"r"}`
		chunk3 = `{"candidates":[{"content":{"role":"model","parts":[{"text":""}]},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":10,"cachedContentTokenCount":4,"candidatesTokenCount":6,"thoughtsTokenCount":3},"modelVersion":"g","responseId":"r"}`
		whole  = `{"candidates":[{"content":{"role":"model","parts":[{"text":"Let me see.","thought":true,"thoughtSignature":"czE="},{"text":"Calling."},{"functionCall":{"name":"f","args":{"a":1}},"thoughtSignature":"czI="},{"functionCall":{"name":"g","args":{}}},{"text":""}]},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":10,"cachedContentTokenCount":4,"candidatesTokenCount":6,"thoughtsTokenCount":3},"modelVersion":"g","responseId":"r"}`
	)
	got := decodeStream(strings.NewReader("data: "+chunk1+"\n\ndata: "+chunk2+"\n\ndata: "+chunk3+"\n\n"), 1<<16)
	if !got.complete() {
		t.Fatalf("stream did not complete: %+v", got)
	}
	r, err := DecodeResponse([]byte(whole))
	if err != nil {
		t.Fatal(err)
	}
	last := got.Events[len(got.Events)-2]
	fromStream := &ir.Response{ID: got.Events[0].ID, Model: got.Events[0].Model, Content: assemble(got.Events),
		StopReason: last.StopReason, Usage: last.Usage}
	if diff := cmp.Diff(r, fromStream); diff != "" {
		t.Errorf("stream and answer differ (-answer +stream):\n%s", diff)
	}
	want := []ir.Block{
		{Type: ir.BlockThinking, Text: "Let me see.", Signature: "czE="},
		{Type: ir.BlockText, Text: "Calling."},
		{Type: ir.BlockThinking, Signature: "czI="},
		{Type: ir.BlockToolUse, ID: "call_0", Name: "f", Input: ir.Raw(`{"a":1}`)},
		{Type: ir.BlockToolUse, ID: "call_1", Name: "g", Input: ir.Raw(`{}`)},
	}
	if diff := cmp.Diff(want, r.Content); diff != "" {
		t.Errorf("blocks mismatch (-want +got):\n%s", diff)
	}
	if r.StopReason != ir.StopToolUse {
		t.Errorf("stop reason = %v, want tool use", r.StopReason)
	}
}

func TestStreamDecoderEnd(t *testing.T) {
	t.Parallel()
	dec := NewStreamDecoder()
	ender := dec.(ir.StreamEnder)
	if _, err := ender.End(nil); !errors.Is(err, ir.ErrProtocol) {
		t.Errorf("End of an empty stream = %v, want ErrProtocol", err)
	}
	evs, err := dec.Decode(nil, nil, []byte(`{"candidates":[{"content":{"parts":[{"text":"a"}]},"finishReason":"STOP"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if dec.Done() {
		t.Error("Done before End: Gemini streams have no end marker")
	}
	evs, err = ender.End(evs)
	if err != nil {
		t.Fatal(err)
	}
	if !dec.Done() {
		t.Error("not Done after End")
	}
	kinds := make([]ir.EventKind, len(evs))
	for i, e := range evs {
		kinds[i] = e.Kind
	}
	want := []ir.EventKind{ir.EventMessageStart, ir.EventBlockStart, ir.EventBlockDelta, ir.EventBlockStop, ir.EventMessageDelta, ir.EventMessageStop}
	if diff := cmp.Diff(want, kinds); diff != "" {
		t.Errorf("events mismatch (-want +got):\n%s", diff)
	}
	again, err := ender.End(nil)
	if err != nil || len(again) != 0 {
		t.Errorf("second End = %v, %v; want nothing", again, err)
	}
	if more, err := dec.Decode(nil, nil, []byte(`{"candidates":[{"content":{"parts":[{"text":"late"}]}}]}`)); err != nil || len(more) != 0 {
		t.Errorf("Decode after End = %v, %v; want nothing", more, err)
	}
}

func TestStreamDecoderErrors(t *testing.T) {
	t.Parallel()
	protocolCases := []struct{ name, data string }{
		{"not JSON", `{"candidates":[`},
		{"done marker", `[DONE]`},
		{"array", `[{"candidates":[]}]`},
		{"duplicate member", `{"candidates":[],"candidates":[]}`},
		{"unnamed call", `{"candidates":[{"content":{"parts":[{"functionCall":{"args":{}}}]}}]}`},
		{"args not an object", `{"candidates":[{"content":{"parts":[{"functionCall":{"name":"f","args":[1]}}]}}]}`},
		{"inline image", `{"candidates":[{"content":{"parts":[{"inlineData":{"mimeType":"image/png","data":"AA=="}}]}}]}`},
		{"code execution", `{"candidates":[{"content":{"parts":[{"executableCode":{"language":"PYTHON","code":"1"}}]}}]}`},
	}
	for _, tt := range protocolCases {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := NewStreamDecoder().Decode(nil, nil, []byte(tt.data))
			if !errors.Is(err, ir.ErrProtocol) {
				t.Errorf("Decode(%s) = %v, want ErrProtocol", tt.data, err)
			}
		})
	}
	t.Run("provider error", func(t *testing.T) {
		t.Parallel()
		_, err := NewStreamDecoder().Decode(nil, nil, []byte(`{"error":{"code":503,"message":"busy","status":"UNAVAILABLE"}}`))
		var pe *ir.ProviderError
		if !errors.As(err, &pe) {
			t.Fatalf("Decode = %v, want a *ir.ProviderError", err)
		}
		if diff := cmp.Diff(ir.ProviderError{Type: "UNAVAILABLE", Overloaded: true, Message: "busy"}, *pe); diff != "" {
			t.Errorf("error mismatch (-want +got):\n%s", diff)
		}
	})
	t.Run("null error is no error", func(t *testing.T) {
		t.Parallel()
		if _, err := NewStreamDecoder().Decode(nil, nil, []byte(`{"error":null,"candidates":[]}`)); err != nil {
			t.Errorf("Decode = %v, want nil", err)
		}
	})
}
