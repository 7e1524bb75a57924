package anthropic

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moat-ai/moat/services/gateway/internal/wire/wiretest"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-ai/moat/services/gateway/internal/ir"
	"github.com/moat-ai/moat/services/gateway/internal/wire/sse"
)

// decoded is what a stream decodes to.
type decoded struct {
	Events []ir.Event
	Error  string
	Done   bool
}

// decodeStream reads every event of r (through a bufio.Reader of size
// bytes) and decodes it, stopping at the first error.
func decodeStream(r io.Reader, size int) decoded {
	rd := sse.NewReader(bufio.NewReaderSize(r, size), 1<<20)
	dec := NewStreamDecoder()
	var out decoded
	for {
		ev, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err == nil {
			out.Events, err = dec.Decode(out.Events, ev.Name, ev.Data)
		}
		if err != nil {
			out.Error = err.Error()
			break
		}
	}
	out.Done = dec.Done()
	return out
}

// encodeEvents encodes events as an Anthropic stream for model; end adds
// the message stop the gateway sends when a stream ends early.
func encodeEvents(events []ir.Event, model string, end bool) []byte {
	enc := NewStreamEncoder(model)
	var out []byte
	for i := range events {
		out = enc.Encode(out, &events[i])
	}
	if end {
		out = enc.Encode(out, &ir.Event{Kind: ir.EventMessageStop})
	}
	return out
}

// TestStreamGolden decodes each stream of testdata/golden/streams into IR
// events (NAME.events.json) and encodes them again for an Anthropic
// client (NAME.out.sse), which must pass the protocol validator. Reading
// the stream in small pieces must give the same events.
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
			out := encodeEvents(got.Events, "client-model", false)
			complete := got.Done && got.Error == ""
			if err := validateStream(out, validation{Complete: complete, ToolJSON: true}); err != nil {
				t.Errorf("encoded stream breaks the grammar: %v\n%s", err, out)
			}
			if !complete {
				ended := encodeEvents(got.Events, "client-model", true)
				if err := validateStream(ended, validation{Complete: true, ToolJSON: true}); err != nil {
					t.Errorf("encoded stream, ended, breaks the grammar: %v\n%s", err, ended)
				}
			}
			checkGolden(t, name+".out.sse", out)
		})
	}
}

// TestStreamRoundTrip checks that a stream the encoder wrote decodes to
// the events it was written from (ids and model aside).
func TestStreamRoundTrip(t *testing.T) {
	t.Parallel()
	for _, in := range goldenInputs(t, "streams", "*.in.sse") {
		got := decodeStream(bytes.NewReader(readFile(t, in)), 1<<16)
		if !got.Done || got.Error != "" {
			continue
		}
		again := decodeStream(bytes.NewReader(encodeEvents(got.Events, "client-model", false)), 1<<16)
		first := got.Events[0]
		again.Events[0].Model = first.Model
		if diff := cmp.Diff(got, again); diff != "" {
			t.Errorf("%s: re-encoded stream decodes differently (-first +second):\n%s", in, diff)
		}
	}
}

func TestStreamUsage(t *testing.T) {
	t.Parallel()
	stream := `event: message_start
data: {"type":"message_start","message":{"id":"msg_1","model":"m","usage":{"input_tokens":10,"cache_read_input_tokens":100,"output_tokens":1}}}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"input_tokens":10,"cache_creation_input_tokens":5,"output_tokens":30}}

`
	got := decodeStream(strings.NewReader(stream), 1<<16)
	if got.Error != "" {
		t.Fatal(got.Error)
	}
	want := []ir.Usage{
		{Input: 10, CacheRead: 100, Output: 1, Found: true},
		{Input: 10, CacheRead: 100, CacheWrite: 5, Output: 30, Found: true},
	}
	var usages []ir.Usage
	for _, e := range got.Events {
		usages = append(usages, e.Usage)
	}
	if diff := cmp.Diff(want, usages); diff != "" {
		t.Errorf("usage mismatch (-want +got):\n%s", diff)
	}
}

func TestStreamDecoderErrors(t *testing.T) {
	t.Parallel()
	const (
		start     = `{"type":"message_start","message":{"id":"msg_1","model":"m","usage":{"input_tokens":1,"output_tokens":1}}}`
		textStart = `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`
		toolStart = `{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"t","name":"n","input":{}}}`
		textDelta = `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a"}}`
		stop0     = `{"type":"content_block_stop","index":0}`
		mdelta    = `{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":2}}`
		mstop     = `{"type":"message_stop"}`
	)
	type ev struct{ name, data string }
	protocolCases := []struct {
		name   string
		events []ev
	}{
		{"delta before start", []ev{{"message_start", start}, {"content_block_delta", textDelta}}},
		{"delta for another index", []ev{{"message_start", start}, {"content_block_start", textStart},
			{"content_block_delta", strings.Replace(textDelta, `"index":0`, `"index":1`, 1)}}},
		{"stop without start", []ev{{"message_start", start}, {"content_block_stop", stop0}}},
		{"message_delta before message_start", []ev{{"message_delta", mdelta}}},
		{"block before message_start", []ev{{"content_block_start", textStart}}},
		{"second message_start", []ev{{"message_start", start}, {"message_start", start}}},
		{"overlapping blocks", []ev{{"message_start", start}, {"content_block_start", textStart},
			{"content_block_start", strings.Replace(textStart, `"index":0`, `"index":1`, 1)}}},
		{"index goes back", []ev{{"message_start", start}, {"content_block_start", textStart}, {"content_block_stop", stop0},
			{"content_block_start", textStart}}},
		{"text delta in tool block", []ev{{"message_start", start}, {"content_block_start", toolStart}, {"content_block_delta", textDelta}}},
		{"json delta in text block", []ev{{"message_start", start}, {"content_block_start", textStart},
			{"content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{"}}`}}},
		{"unknown delta", []ev{{"message_start", start}, {"content_block_start", textStart},
			{"content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"magic_delta"}}`}}},
		{"server tool block", []ev{{"message_start", start},
			{"content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"server_tool_use","id":"s","name":"web_search"}}`}}},
		{"tool use without id", []ev{{"message_start", start},
			{"content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","name":"n"}}`}}},
		{"message_delta with block open", []ev{{"message_start", start}, {"content_block_start", textStart}, {"message_delta", mdelta}}},
		{"second message_delta", []ev{{"message_start", start}, {"message_delta", mdelta}, {"message_delta", mdelta}}},
		{"block after message_delta", []ev{{"message_start", start}, {"message_delta", mdelta}, {"content_block_start", textStart}}},
		{"message_stop with block open", []ev{{"message_start", start}, {"content_block_start", textStart}, {"message_stop", mstop}}},
		{"event after message_stop", []ev{{"message_start", start}, {"message_stop", mstop}, {"message_delta", mdelta}}},
		{"malformed data", []ev{{"message_start", `{"type":"message_start","message":`}}},
		{"duplicate member", []ev{{"message_start", start}, {"content_block_start", `{"type":"content_block_start","index":0,"index":1,"content_block":{"type":"text"}}`}}},
	}
	for _, tt := range protocolCases {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dec := NewStreamDecoder()
			var (
				events []ir.Event
				err    error
			)
			for _, e := range tt.events {
				if events, err = dec.Decode(events, []byte(e.name), []byte(e.data)); err != nil {
					break
				}
			}
			if !errors.Is(err, ir.ErrProtocol) {
				t.Errorf("Decode = %v, want ErrProtocol (events %+v)", err, events)
			}
		})
	}

	errorCases := []struct {
		data       string
		want       ir.ProviderError
		overloaded bool
	}{
		{`{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`, ir.ProviderError{Type: "overloaded_error", Overloaded: true}, true},
		{`{"type":"error","error":{"type":"api_error","message":"Internal"}}`, ir.ProviderError{Type: "api_error"}, false},
		{`not json`, ir.ProviderError{Type: "api_error"}, false},
	}
	for _, tt := range errorCases {
		dec := NewStreamDecoder()
		_, err := dec.Decode(nil, []byte("error"), []byte(tt.data))
		var pe *ir.ProviderError
		if !errors.As(err, &pe) || pe.Type != tt.want.Type || pe.Overloaded != tt.want.Overloaded {
			t.Errorf("Decode(error %s) = %v, want %+v", tt.data, err, tt.want)
		}
	}
}

func TestStreamDecoderIgnores(t *testing.T) {
	t.Parallel()
	dec := NewStreamDecoder()
	for _, e := range []struct{ name, data string }{
		{"ping", `{"type":"ping"}`},
		{"", ""}, // a comment
		{"future_event", `{"type":"future_event","x":1}`},
		{"", `{"type":"ping"}`},
	} {
		events, err := dec.Decode(nil, []byte(e.name), []byte(e.data))
		if err != nil || len(events) != 0 {
			t.Errorf("Decode(%q, %q) = %v, %v; want nothing", e.name, e.data, events, err)
		}
	}
	if dec.Done() {
		t.Error("Done() = true before message_stop")
	}
}

// encoderCases are IR event sequences as other upstreams' decoders may
// make them, each encoded to testdata/golden/encoder/NAME.sse, which must
// pass the validator.
var encoderCases = []struct {
	name   string
	events []ir.Event
}{
	{"openai_shape", []ir.Event{
		// OpenAI: role chunk, text, two parallel tool calls, then the
		// finish reason and the usage in separate chunks.
		{Kind: ir.EventMessageStart, ID: "chatcmpl-9x", Model: "gpt-4o"},
		{Kind: ir.EventBlockStart, Index: 0, Block: ir.Block{Type: ir.BlockText}},
		{Kind: ir.EventBlockDelta, Index: 0, Delta: ir.DeltaText, Text: "Checking "},
		{Kind: ir.EventBlockDelta, Index: 0, Delta: ir.DeltaText, Text: "both."},
		{Kind: ir.EventBlockStop, Index: 0},
		{Kind: ir.EventBlockStart, Index: 1, Block: ir.Block{Type: ir.BlockToolUse, ID: "call_1", Name: "get_weather"}},
		{Kind: ir.EventBlockDelta, Index: 1, Delta: ir.DeltaInputJSON, Text: `{"city":`},
		{Kind: ir.EventBlockDelta, Index: 1, Delta: ir.DeltaInputJSON, Text: `"Paris"}`},
		{Kind: ir.EventBlockStop, Index: 1},
		{Kind: ir.EventBlockStart, Index: 2, Block: ir.Block{Type: ir.BlockToolUse, ID: "call_2", Name: "get_weather"}},
		{Kind: ir.EventBlockDelta, Index: 2, Delta: ir.DeltaInputJSON, Text: `{"city":"Rome"}`},
		{Kind: ir.EventBlockStop, Index: 2},
		{Kind: ir.EventMessageDelta, StopReason: ir.StopToolUse},
		{Kind: ir.EventMessageDelta, Usage: ir.Usage{Input: 80, CacheRead: 20, Output: 31, Found: true}},
		{Kind: ir.EventMessageStop},
	}},
	{"sloppy_source", []ir.Event{
		// No message start; a block never stopped; a delta of the wrong
		// type; a block type an answer cannot hold; a delta for a block
		// long closed; events after the stop.
		{Kind: ir.EventBlockStart, Index: 0, Block: ir.Block{Type: ir.BlockThinking}},
		{Kind: ir.EventBlockDelta, Index: 0, Delta: ir.DeltaThinking, Text: "hmm"},
		{Kind: ir.EventBlockDelta, Index: 0, Delta: ir.DeltaText, Text: "wrong type"},
		{Kind: ir.EventBlockStart, Index: 1, Block: ir.Block{Type: ir.BlockImage}},
		{Kind: ir.EventBlockDelta, Index: 1, Delta: ir.DeltaText, Text: "dropped"},
		{Kind: ir.EventBlockStop, Index: 1},
		{Kind: ir.EventBlockStart, Index: 2, Block: ir.Block{Type: ir.BlockText}},
		{Kind: ir.EventBlockDelta, Index: 0, Delta: ir.DeltaThinking, Text: "late"},
		{Kind: ir.EventBlockDelta, Index: 2, Delta: ir.DeltaText, Text: "answer"},
		{Kind: ir.EventMessageDelta, StopReason: ir.StopEnd, Usage: ir.Usage{Output: 5, Found: true}},
		{Kind: ir.EventBlockStart, Index: 3, Block: ir.Block{Type: ir.BlockToolUse, ID: "toolu_late", Name: "late"}},
		{Kind: ir.EventBlockStop, Index: 3},
		{Kind: ir.EventMessageStop},
		{Kind: ir.EventBlockStart, Index: 4, Block: ir.Block{Type: ir.BlockText}},
		{Kind: ir.EventMessageStop},
	}},
	{"empty_answer", []ir.Event{
		{Kind: ir.EventMessageStop},
	}},
	{"redacted_and_stop_sequence", []ir.Event{
		{Kind: ir.EventMessageStart, ID: "msg_kept", Usage: ir.Usage{Input: 4, Found: true}},
		{Kind: ir.EventBlockStart, Index: 0, Block: ir.Block{Type: ir.BlockRedactedThinking, Data: "opaque=="}},
		{Kind: ir.EventBlockStop, Index: 0},
		{Kind: ir.EventBlockStart, Index: 1, Block: ir.Block{Type: ir.BlockText}},
		{Kind: ir.EventBlockDelta, Index: 1, Delta: ir.DeltaText, Text: "line\nbreak \u2028 and \"quotes\""},
		{Kind: ir.EventBlockStop, Index: 1},
		{Kind: ir.EventMessageDelta, StopReason: ir.StopSequence, StopSequence: "STOP", Usage: ir.Usage{Input: 4, Output: 3, Found: true}},
		{Kind: ir.EventMessageStop},
	}},
}

func TestStreamEncoderGolden(t *testing.T) {
	t.Parallel()
	for _, tt := range encoderCases {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out := encodeEvents(tt.events, "client-model", false)
			if err := validateStream(out, validation{Complete: true, ToolJSON: true}); err != nil {
				t.Errorf("encoded stream breaks the grammar: %v\n%s", err, out)
			}
			checkGolden(t, filepath.Join("testdata", "golden", "encoder", tt.name+".sse"), out)
		})
	}
}

// TestValidator checks that the validator itself refuses what breaks the
// grammar, so that a passing encoder means something.
func TestValidator(t *testing.T) {
	t.Parallel()
	good := string(encodeEvents(encoderCases[0].events, "m", false))
	tests := []struct{ name, stream string }{
		{"no message_start", good[strings.Index(good, "event: content_block_start"):]},
		{"gap in indices", strings.Replace(good, `"index":1`, `"index":2`, 3)},
		{"no message_stop", good[:strings.Index(good, "event: message_stop")]},
		{"no message_delta", good[:strings.Index(good, "event: message_delta")] + good[strings.Index(good, "event: message_stop"):]},
		{"name and type differ", strings.Replace(good, "event: content_block_stop", "event: content_block_end", 1)},
		{"wrong delta", strings.Replace(good, "text_delta", "input_json_delta", 1)},
		{"broken tool json", strings.Replace(good, `"partial_json":"\"Paris\"}"`, `"partial_json":"\"Paris\""`, 1)},
		{"event after stop", good + "event: ping\ndata: {\"type\":\"ping\"}\n\n"},
		{"id prefix", strings.Replace(good, `"id":"msg_`, `"id":"chat_`, 1)},
	}
	if err := validateStream([]byte(good), validation{Complete: true, ToolJSON: true}); err != nil {
		t.Fatalf("validateStream(good) = %v", err)
	}
	for _, tt := range tests {
		if err := validateStream([]byte(tt.stream), validation{Complete: true, ToolJSON: true}); err == nil {
			t.Errorf("validateStream(%s) = nil, want an error", tt.name)
		}
	}
}

func TestStreamEnd(t *testing.T) {
	t.Parallel()
	const (
		start  = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"m\"}}\n\n"
		block  = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"
		stop   = "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
		mdelta = "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":1}}\n\n"
	)
	tests := []struct {
		name, stream string
		whole        bool
	}{
		{"only message_stop missing", start + block + stop + mdelta, true},
		{"cut in a block", start + block, false},
		{"cut before message_delta", start + block + stop, false},
		{"nothing", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rd := sse.NewReader(bufio.NewReader(strings.NewReader(tt.stream)), 1<<20)
			dec := NewStreamDecoder()
			var events []ir.Event
			for {
				ev, err := rd.Next()
				if err != nil {
					break
				}
				if events, err = dec.Decode(events, ev.Name, ev.Data); err != nil {
					t.Fatal(err)
				}
			}
			events, err := dec.(ir.StreamEnder).End(events)
			if tt.whole {
				if err != nil || !dec.Done() || events[len(events)-1].Kind != ir.EventMessageStop {
					t.Fatalf("End = %v, %v (Done %v); want a message stop", events, err, dec.Done())
				}
				if err := validateStream(encodeEvents(events, "m", false), validation{Complete: true, ToolJSON: true}); err != nil {
					t.Error(err)
				}
				return
			}
			if !errors.Is(err, ir.ErrProtocol) || dec.Done() {
				t.Errorf("End = %v (Done %v), want ErrProtocol", err, dec.Done())
			}
		})
	}
}

// BenchmarkStreamTextDelta measures the translated path's work per text
// delta, the most frequent event: decoding it and encoding it again.
func BenchmarkStreamTextDelta(b *testing.B) {
	name := []byte("content_block_delta")
	data := []byte(`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello, this is a typical chunk of text."}}`)
	dec := NewStreamDecoder().(*streamDecoder)
	dec.started, dec.open, dec.openType, dec.upIndex = true, true, ir.BlockText, 0
	enc := NewStreamEncoder("m").(*streamEncoder)
	enc.started, enc.open, enc.openType = true, true, ir.BlockText
	var (
		events []ir.Event
		out    []byte
		err    error
	)
	b.ReportAllocs()
	for b.Loop() {
		if events, err = dec.Decode(events[:0], name, data); err != nil {
			b.Fatal(err)
		}
		out = enc.Encode(out[:0], &events[0])
	}
}
