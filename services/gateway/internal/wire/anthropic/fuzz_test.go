package anthropic

import (
	"bytes"
	"errors"
	"testing"

	"github.com/moat-ai/moat/services/gateway/internal/wire/wiretest"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-ai/moat/services/gateway/internal/ir"
	"github.com/moat-ai/moat/services/gateway/internal/wire"
)

// FuzzDecodeRequest checks that DecodeRequest never panics and fails only
// with a *wire.RequestError, and that a request it accepts encodes (or
// is refused with an *ir.UnsupportedError) into valid JSON that
// ParseRequest accepts and that is a fixed point of decode and encode.
// Inputs ParseRequest refuses are skipped: the gateway never decodes
// them.
func FuzzDecodeRequest(f *testing.F) {
	for _, in := range goldenInputs(f, "requests", "*.in.json") {
		f.Add(readFile(f, in))
	}
	for _, s := range []string{
		`{"model":"m","max_tokens":1,"messages":[]}`,
		`{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":""},{"type":"text","text":"a"}]}]}]}`,
		`{"model":"m","max_tokens":5,"thinking":{"type":"enabled","budget_tokens":4},"tool_choice":{"type":"any"},"tools":[{"name":"a","input_schema":{}}],"messages":[]}`,
		`{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"url","url":"data:image/png;base64,AA=="}}]}]}`,
		`{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"document","source":{"type":"base64","media_type":"text/plain","data":"aGk="}}]}]}`,
		`{"model":"m","max_tokens":1,"temperature":1e-7,"top_p":0,"top_k":-1,"stop_sequences":[],"messages":[],"metadata":{"user_id":null}}`,
		`{"model":"m","max_tokens":1,"messages":[],"t\u0065mperature":0.5,"x":null}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if _, err := ParseRequest(body); err != nil {
			return
		}
		r, _, err := DecodeRequest(body)
		if err != nil {
			var re *wire.RequestError
			if !errors.As(err, &re) {
				t.Fatalf("DecodeRequest error %T %v, want a *wire.RequestError", err, err)
			}
			return
		}
		out, err := EncodeRequest(nil, r, "claude-upstream")
		if err != nil {
			var ue *ir.UnsupportedError
			if !errors.As(err, &ue) {
				t.Fatalf("EncodeRequest error %T %v, want an *ir.UnsupportedError", err, err)
			}
			return
		}
		checkEncodedRequest(t, out)
	})
}

// FuzzStreamDecoder feeds a stream through sse.Reader whole and in random
// pieces, which must decode to the same IR events and error; it then
// re-encodes the events for an Anthropic client, which must pass the
// protocol validator (complete when the decoder reached Done without an
// error, and after the gateway's closing message stop otherwise).
func FuzzStreamDecoder(f *testing.F) {
	for _, in := range goldenInputs(f, "streams", "*.in.sse") {
		f.Add(readFile(f, in), []byte{3, 1, 4, 1, 5, 9, 2, 6})
	}
	for _, s := range []string{
		"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{}}\n\nevent: message_stop\ndata: {}\n\n",
		// Content in the start events, as compatible servers send it.
		"data: {\"type\":\"message_start\",\"message\":{\"id\":\"x\"}}\n\n" +
			"data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"n\",\"input\":{\"a\":[1]}}}\n\n" +
			"data: {\"type\":\"content_block_stop\",\"index\":0}\n\n" +
			"data: {\"type\":\"content_block_start\",\"index\":3,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"t\",\"signature\":\"s\"}}\n\n" +
			"data: {\"type\":\"content_block_stop\",\"index\":3}\n\n" +
			"data: {\"type\":\"content_block_start\",\"index\":4,\"content_block\":{\"type\":\"text\",\"text\":\"pre\"}}\n\n" +
			"data: {\"type\":\"content_block_delta\",\"index\":4,\"delta\":{\"type\":\"citations_delta\"}}\n\n" +
			"data: {\"type\":\"content_block_stop\",\"index\":4}\n\n" +
			"data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"pause_turn\"}}\n\n" +
			"data: {\"type\":\"message_stop\"}\n\n",
		// Grammar violations.
		"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"a\"}}\n\n",
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"output_tokens\":1}}\n\n",
		"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{}}\n\nevent: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}\n\n",
	} {
		f.Add([]byte(s), []byte{0, 7, 1})
	}
	f.Fuzz(func(t *testing.T, stream, sizes []byte) {
		whole := decodeStream(bytes.NewReader(stream), 1<<16)
		split := decodeStream(&wiretest.SplitReader{B: stream, Sizes: sizes}, 16)
		if diff := cmp.Diff(whole, split); diff != "" {
			t.Fatalf("split reading differs (-whole +split):\n%s", diff)
		}
		complete := whole.Done && whole.Error == ""
		out := encodeEvents(whole.Events, "client-model", !complete)
		if err := validateStream(out, validation{Complete: true}); err != nil {
			t.Fatalf("re-encoded stream breaks the grammar: %v\nevents %+v\n%s", err, whole, out)
		}
	})
}
