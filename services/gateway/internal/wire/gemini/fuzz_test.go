package gemini

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-ai/moat/services/gateway/internal/ir"
	"github.com/moat-ai/moat/services/gateway/internal/wire/anthropic"
	"github.com/moat-ai/moat/services/gateway/internal/wire/openaichat"
	"github.com/moat-ai/moat/services/gateway/internal/wire/wiretest"
)

// FuzzStreamDecoder feeds a stream through sse.Reader whole and in random
// pieces, which must decode to the same IR events and error; the events
// are then re-encoded for Anthropic and OpenAI clients, whose validators
// must pass (after the gateway's closing message stop when the stream
// did not complete).
func FuzzStreamDecoder(f *testing.F) {
	for _, in := range goldenInputs(f, "streams", "*.in.sse") {
		f.Add(readFile(f, in), []byte{3, 1, 4, 1, 5, 9, 2, 6})
	}
	for _, s := range []string{
		"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\",\"thoughtSignature\":\"s\"},{\"thought\":true,\"thoughtSignature\":\"t\"},{\"functionCall\":{\"name\":\"f\",\"args\":null}}]},\"finishReason\":\"STOP\"}]}\n\n",
		"data: {\"candidates\":[{\"content\":{\"parts\":[{\"thought\":true,\"text\":\"x\"},{\"thought\":true,\"text\":\"y\"}]},\"index\":1}]}\n\ndata: {\"promptFeedback\":{\"blockReason\":\"OTHER\"}}\n\n",
		"data: {\"error\":{\"code\":\"500\"}}\r\n\r\n",
		": comment\n\ndata: {}\n\n",
	} {
		f.Add([]byte(s), []byte{0, 7, 1})
	}
	f.Fuzz(func(t *testing.T, stream, sizes []byte) {
		whole := decodeStream(bytes.NewReader(stream), 1<<16)
		split := decodeStream(&wiretest.SplitReader{B: stream, Sizes: sizes}, 16)
		if diff := cmp.Diff(whole, split); diff != "" {
			t.Fatalf("split reading differs (-whole +split):\n%s", diff)
		}
		if len(whole.Events) == 0 {
			return
		}
		complete := whole.complete()
		if out := encodeAnthropic(whole.Events, !complete); validateAnthropic(out, validation{Complete: true, ToolJSON: true}) != nil {
			t.Fatalf("Anthropic re-encoding breaks the grammar: %v\n%s", validateAnthropic(out, validation{Complete: true, ToolJSON: true}), out)
		}
		if out := encodeOpenAI(whole.Events, !complete); validateOpenAI(out, true) != nil {
			t.Fatalf("OpenAI re-encoding breaks the grammar: %v\n%s", validateOpenAI(out, true), out)
		}
	})
}

// FuzzDecodeResponse checks that no body panics DecodeResponse, that it
// fails only with ErrProtocol or a *ir.ProviderError, and that what it
// accepts encodes into valid client answers.
func FuzzDecodeResponse(f *testing.F) {
	for _, in := range goldenInputs(f, "responses", "*.in.json") {
		f.Add(readFile(f, in))
	}
	f.Add([]byte(`{"error":{"code":503,"status":"UNAVAILABLE"}}`))
	f.Add([]byte(`{"candidates":[{"content":{"parts":[{"functionCall":{"id":"x","name":"f","args":{"a":[1,{"b":null}]}}},{"text":"t","thought":true}]},"finishReason":"SPII"}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := DecodeResponse(body)
		if err != nil {
			var pe *ir.ProviderError
			if !errors.Is(err, ir.ErrProtocol) && !errors.As(err, &pe) {
				t.Fatalf("DecodeResponse error %T %v, want ErrProtocol or a *ir.ProviderError", err, err)
			}
			return
		}
		if u := ReadUsage(body); u != r.Usage {
			t.Fatalf("ReadUsage = %+v, DecodeResponse's %+v", u, r.Usage)
		}
		for _, b := range r.Content {
			if b.Type == ir.BlockToolUse && !json.Valid(b.Input) {
				t.Fatalf("tool input %q is not JSON", b.Input)
			}
		}
		if out := anthropic.EncodeResponse(nil, r, "m"); !json.Valid(out) {
			t.Fatalf("Anthropic answer is not JSON: %s", out)
		}
		if out := openaichat.EncodeResponse(nil, r, "m", 1); !json.Valid(out) {
			t.Fatalf("OpenAI answer is not JSON: %s", out)
		}
	})
}

// FuzzEncodeRequest takes Anthropic request bodies through the
// Anthropic decoder and EncodeRequest, which must not panic, must fail
// only with an *ir.UnsupportedError, and must write a body that keeps
// Gemini's rules (checkRequest).
func FuzzEncodeRequest(f *testing.F) {
	for _, in := range goldenInputs(f, "requests", "*.anthropic.json") {
		f.Add(readFile(f, in))
	}
	f.Add([]byte(`{"model":"m","max_tokens":9,"messages":[{"role":"assistant","content":[{"type":"thinking","thinking":"","signature":"s"},{"type":"tool_use","id":"a","name":"f","input":{}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"a"}]}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		if _, err := anthropic.ParseRequest(body); err != nil {
			return
		}
		r, _, err := anthropic.DecodeRequest(body)
		if err != nil {
			return
		}
		out, err := EncodeRequest(nil, r)
		if err != nil {
			var ue *ir.UnsupportedError
			if !errors.As(err, &ue) {
				t.Fatalf("EncodeRequest error %T %v, want an *ir.UnsupportedError", err, err)
			}
			return
		}
		checkRequest(t, out)
	})
}
