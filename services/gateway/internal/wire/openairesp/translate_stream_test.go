package openairesp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moat-ai/moat/services/gateway/internal/ir"
	"github.com/moat-ai/moat/services/gateway/internal/wire/anthropic"
	"github.com/moat-ai/moat/services/gateway/internal/wire/openaichat"
	"github.com/moat-ai/moat/services/gateway/internal/wire/sse"
)

const (
	clientModel = "client-model"
	created     = 1700000000
)

// upstreams are the other codecs whose stream goldens feed the encoder:
// their decoders make the IR event sequences a Responses client is sent.
var upstreams = []struct {
	name, pattern string
	decoder       func() ir.StreamDecoder
}{
	{"chat", filepath.Join("..", "openaichat", "testdata", "golden", "*.upstream.sse"), openaichat.NewStreamDecoder},
	{"anthropic", filepath.Join("..", "anthropic", "testdata", "golden", "streams", "*.in.sse"), anthropic.NewStreamDecoder},
}

// decoded is what an upstream stream decodes to.
type decoded struct {
	Events []ir.Event
	Err    error
}

// decodeUpstream reads every event of stream and decodes it, stopping at
// the first error, and closes the stream as the gateway does when it
// ends without its proper end marker.
func decodeUpstream(stream []byte, dec ir.StreamDecoder) decoded {
	rd := sse.NewReader(bufio.NewReader(bytes.NewReader(stream)), 1<<20)
	var out decoded
	for {
		ev, err := rd.Next()
		if errors.Is(err, io.EOF) {
			if e, ok := dec.(ir.StreamEnder); ok && !dec.Done() {
				out.Events, out.Err = e.End(out.Events)
			}
			return out
		}
		if err == nil {
			out.Events, err = dec.Decode(out.Events, ev.Name, ev.Data)
		}
		if err != nil {
			out.Err = err
			return out
		}
	}
}

// encodeStream encodes events for a Responses client and ends the stream
// as the gateway does: with the stream's error event when the upstream
// failed, else with the message stop the encoder needs (a no-op when the
// events held one).
func encodeStream(d decoded) []byte {
	enc := NewStreamEncoder(clientModel, created)
	var out []byte
	for i := range d.Events {
		out = enc.Encode(out, &d.Events[i])
	}
	stopped := slices.ContainsFunc(d.Events, func(e ir.Event) bool { return e.Kind == ir.EventMessageStop })
	switch {
	case stopped:
	case d.Err != nil:
		code, message := "upstream_error", "The provider's stream broke off."
		if pe := (*ir.ProviderError)(nil); errors.As(d.Err, &pe) {
			code, message = pe.Type, pe.Message
		}
		out = StreamErrorEvent(out, code, message, enc.(interface{ NextSequence() int }).NextSequence())
	default:
		out = enc.Encode(out, &ir.Event{Kind: ir.EventMessageStop})
	}
	return out
}

// accumulate builds the whole answer a well-formed IR event sequence
// carries.
func accumulate(events []ir.Event) *ir.Response {
	r := &ir.Response{}
	started := false
	open := -1 // the IR index of the open block
	for _, e := range events {
		switch e.Kind {
		case ir.EventMessageStart:
			if !started {
				r.ID, r.Model = e.ID, e.Model
			}
			r.Usage.Merge(e.Usage)
		case ir.EventBlockStart:
			r.Content = append(r.Content, ir.Block{Type: e.Block.Type, ID: e.Block.ID, Name: e.Block.Name})
			open = e.Index
		case ir.EventBlockDelta:
			if e.Index != open {
				continue
			}
			b := &r.Content[len(r.Content)-1]
			switch e.Delta {
			case ir.DeltaText, ir.DeltaThinking:
				b.Text += e.Text
			case ir.DeltaInputJSON:
				b.Input = append(b.Input, e.Text...)
			case ir.DeltaSignature:
				b.Signature += e.Text
			}
		case ir.EventBlockStop:
			open = -1
		case ir.EventMessageDelta:
			if e.StopReason != ir.StopUnknown {
				r.StopReason = e.StopReason
			}
			r.Usage.Merge(e.Usage)
		}
		started = true
	}
	return r
}

// checkEncodedStream checks an encoded stream: the grammar, the SDK's
// types, and, for a stream that completed, that its final response is
// the one EncodeResponse writes for the answer its events carry.
func checkEncodedStream(t *testing.T, out []byte, events []ir.Event, v validation) {
	t.Helper()
	v.Complete, v.SDK = true, true
	if err := validateStream(out, v); err != nil {
		t.Fatalf("encoded stream breaks the grammar: %v\n%s", err, out)
	}
	evs := nativeEvents(t, out)
	last := evs[len(evs)-1]
	if string(last.name) != typeCompleted && string(last.name) != typeIncomplete {
		return
	}
	final := member(last.data, "response")
	if _, err := sdkResponse(final); err != nil {
		t.Fatalf("the SDK refuses the final response: %v", err)
	}
	if want := EncodeResponse(nil, accumulate(events), clientModel, created); !bytes.Equal(final, want) {
		t.Errorf("the final response differs from EncodeResponse's:\nstream %s\nwhole  %s", final, want)
	}
	u := relay(evs).Usage
	if want := accumulate(events).Usage; u.Input != want.Input || u.CacheRead != want.CacheRead || u.Output != want.Output {
		t.Errorf("the native path reads usage %+v from the encoded stream, want %+v", u, want)
	}
}

// TestStreamGolden decodes each stream golden of the chat-completions
// and Anthropic codecs with their decoders and encodes the IR events for
// a Responses client (testdata/golden/streams/UPSTREAM_NAME.sse).
func TestStreamGolden(t *testing.T) {
	t.Parallel()
	for _, up := range upstreams {
		for _, in := range globNonEmpty(t, up.pattern) {
			name := up.name + "_" + strings.SplitN(filepath.Base(in), ".", 2)[0]
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				d := decodeUpstream(readFile(t, in), up.decoder())
				out := encodeStream(d)
				checkEncodedStream(t, out, d.Events, validation{ToolJSON: true})
				checkGolden(t, filepath.Join("testdata", "golden", "streams", name+".sse"), out)
			})
		}
	}
}

func delta(i int, d ir.DeltaType, s string) ir.Event {
	return ir.Event{Kind: ir.EventBlockDelta, Index: i, Delta: d, Text: s}
}

func blockStart(i int, b ir.Block) ir.Event {
	return ir.Event{Kind: ir.EventBlockStart, Index: i, Block: b}
}
func blockStop(i int) ir.Event { return ir.Event{Kind: ir.EventBlockStop, Index: i} }

var (
	messageStart = ir.Event{Kind: ir.EventMessageStart, ID: "msg_01ABC", Model: "claude", Usage: ir.Usage{Input: 10, CacheRead: 90, Output: 1, Found: true}}
	messageStop  = ir.Event{Kind: ir.EventMessageStop}
)

func messageDelta(s ir.StopReason, u ir.Usage) ir.Event {
	return ir.Event{Kind: ir.EventMessageDelta, StopReason: s, Usage: u}
}

// irStreams are IR event sequences the upstream goldens do not make:
// text runs split by blocks an answer cannot hold, calls without
// arguments, each stop reason, and sources that break the IR's grammar.
var irStreams = []struct {
	name       string
	events     []ir.Event
	wellFormed bool // accumulate reads the answer the encoder writes
}{
	{"text_runs_thinking_tools", []ir.Event{
		messageStart,
		blockStart(0, ir.Block{Type: ir.BlockThinking}), delta(0, ir.DeltaThinking, "First "), delta(0, ir.DeltaThinking, "think."),
		delta(0, ir.DeltaSignature, "sig"), blockStop(0),
		blockStart(1, ir.Block{Type: ir.BlockText}), delta(1, ir.DeltaText, "Hello"), blockStop(1),
		blockStart(2, ir.Block{Type: ir.BlockRedactedThinking, Data: "x"}), blockStop(2),
		blockStart(3, ir.Block{Type: ir.BlockText}), delta(3, ir.DeltaText, ""), delta(3, ir.DeltaText, " world"), blockStop(3),
		blockStart(4, ir.Block{Type: ir.BlockThinking}), delta(4, ir.DeltaSignature, "only a signature"), blockStop(4),
		blockStart(5, ir.Block{Type: ir.BlockToolUse, ID: "toolu_1", Name: "get_weather"}),
		delta(5, ir.DeltaInputJSON, `{"city":`), delta(5, ir.DeltaInputJSON, `"Paris"}`), blockStop(5),
		blockStart(6, ir.Block{Type: ir.BlockToolUse, ID: "toolu_2", Name: "now"}), blockStop(6),
		messageDelta(ir.StopToolUse, ir.Usage{Input: 10, CacheRead: 90, CacheWrite: 4, Output: 40, Reasoning: 12, Found: true}),
		messageStop,
	}, true},
	{"max_tokens", []ir.Event{
		messageStart,
		blockStart(0, ir.Block{Type: ir.BlockText}), delta(0, ir.DeltaText, "The answer is"), blockStop(0),
		messageDelta(ir.StopMaxTokens, ir.Usage{Input: 10, Output: 3, Found: true}), messageStop,
	}, true},
	{"refusal_empty_text", []ir.Event{
		messageStart, blockStart(0, ir.Block{Type: ir.BlockText}), blockStop(0),
		messageDelta(ir.StopRefusal, ir.Usage{}), messageStop,
	}, true},
	{"no_content", []ir.Event{messageStart, messageDelta(ir.StopEnd, ir.Usage{}), messageStop}, true},
	{"implicit_start_overlap", []ir.Event{
		blockStart(0, ir.Block{Type: ir.BlockText}), delta(0, ir.DeltaText, "a"),
		blockStart(1, ir.Block{Type: ir.BlockToolUse, Name: "f"}), delta(1, ir.DeltaInputJSON, "{}"),
		messageStop,
	}, true},
	{"out_of_place", []ir.Event{
		delta(0, ir.DeltaText, "before any block"), blockStop(0),
		messageStart,
		blockStart(0, ir.Block{Type: ir.BlockText}),
		delta(1, ir.DeltaText, "wrong index"), delta(0, ir.DeltaInputJSON, "{}"), delta(0, ir.DeltaThinking, "t"),
		delta(0, ir.DeltaText, "right"), blockStop(1), delta(0, ir.DeltaText, "!"), blockStop(0), blockStop(0),
		blockStart(1, ir.Block{Type: ir.BlockToolUse, ID: "c", Name: "f"}), delta(1, ir.DeltaText, "x"), delta(1, ir.DeltaInputJSON, `{"a":1}`),
		messageDelta(ir.StopEnd, ir.Usage{Output: 2, Found: true}),
		delta(1, ir.DeltaInputJSON, "late"),
		messageStart, messageDelta(ir.StopUnknown, ir.Usage{Output: 5, Found: true}),
		messageStop,
		blockStart(2, ir.Block{Type: ir.BlockText}), messageStop,
	}, false},
}

// TestStreamIRGolden encodes the IR sequences of irStreams
// (testdata/golden/streams/ir_NAME.sse).
func TestStreamIRGolden(t *testing.T) {
	t.Parallel()
	for _, tt := range irStreams {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out := encodeStream(decoded{Events: tt.events})
			if tt.wellFormed {
				checkEncodedStream(t, out, tt.events, validation{ToolJSON: true})
			} else if err := validateStream(out, validation{Complete: true, ToolJSON: true, SDK: true}); err != nil {
				// Only the grammar: what the encoder keeps of a broken
				// sequence is its own judgement, shown by the golden.
				t.Fatalf("encoded stream breaks the grammar: %v\n%s", err, out)
			}
			checkGolden(t, filepath.Join("testdata", "golden", "streams", "ir_"+tt.name+".sse"), out)
		})
	}
}

// TestStreamErrorAfterCommit ends a stream the upstream broke off after
// content with the Responses error event, numbered after the last event.
func TestStreamErrorAfterCommit(t *testing.T) {
	t.Parallel()
	events := []ir.Event{messageStart, blockStart(0, ir.Block{Type: ir.BlockText}), delta(0, ir.DeltaText, "par")}
	out := encodeStream(decoded{Events: events, Err: &ir.ProviderError{Type: "overloaded_error", Overloaded: true, Message: "Overloaded"}})
	if err := validateStream(out, validation{Complete: true, SDK: true}); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	evs := nativeEvents(t, out)
	last := evs[len(evs)-1]
	if e, ok := StreamError(last.name, last.data); !ok || e.Type != "overloaded_error" || !e.Overloaded {
		t.Errorf("StreamError(last event) = %+v, %v; want the overloaded error", e, ok)
	}
}

// FuzzStreamEncoder feeds the encoder random IR event sequences: an
// upstream stream (seeded with the other codecs' goldens) decoded by the
// chat-completions or the Anthropic decoder, then perturbed by ops (each
// byte drops, repeats or swaps an event), so that the sequences break the
// IR's grammar too. Whatever it gets, the encoder must write a stream the
// validator and the SDK accept.
func FuzzStreamEncoder(f *testing.F) {
	for k, up := range upstreams {
		files, _ := filepath.Glob(up.pattern)
		for _, file := range files {
			b := readFile(f, file)
			f.Add(b, byte(k), []byte{})
			f.Add(b, byte(k), []byte{4, 9, 2, 6})
		}
	}
	f.Fuzz(func(t *testing.T, stream []byte, which byte, ops []byte) {
		up := upstreams[int(which)%len(upstreams)]
		d := decodeUpstream(stream, up.decoder())
		d.Events = perturb(d.Events, ops)
		out := encodeStream(d)
		if err := validateStream(out, validation{Complete: true, SDK: true}); err != nil {
			t.Fatalf("encoded stream breaks the grammar: %v\nevents %+v\n%s", err, d.Events, out)
		}
	})
}

// perturb applies ops to events: for each byte, the event at (byte/4)
// mod the length is dropped, repeated, swapped with the next or kept.
func perturb(events []ir.Event, ops []byte) []ir.Event {
	for _, op := range ops {
		if len(events) == 0 {
			return events
		}
		i := int(op/4) % len(events)
		switch op % 4 {
		case 0:
			events = slices.Delete(events, i, i+1)
		case 1:
			events = slices.Insert(events, i, events[i])
		case 2:
			if i+1 < len(events) {
				events[i], events[i+1] = events[i+1], events[i]
			}
		}
	}
	return events
}
