package converse

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"
	"github.com/google/go-cmp/cmp"

	"github.com/moat-ai/moat/services/gateway/internal/ir"
	"github.com/moat-ai/moat/services/gateway/internal/wire/anthropic"
	"github.com/moat-ai/moat/services/gateway/internal/wire/awsstream"
	"github.com/moat-ai/moat/services/gateway/internal/wire/openaichat"
	"github.com/moat-ai/moat/services/gateway/internal/wire/wiretest"
)

// fixtureEvent is one frame of a stream fixture: an event of a type, or
// an exception of a type, with its JSON payload.
type fixtureEvent struct {
	Event     string          `json:"event"`
	Exception string          `json:"exception"`
	Payload   json.RawMessage `json:"payload"`
}

// frames encodes stream fixture events as an eventstream with the SDK's
// encoder, with the headers Bedrock sends.
func frames(t testing.TB, events []fixtureEvent) []byte {
	t.Helper()
	var b bytes.Buffer
	enc := eventstream.NewEncoder()
	for _, e := range events {
		h := eventstream.Headers{
			{Name: ":event-type", Value: eventstream.StringValue(e.Event)},
			{Name: ":content-type", Value: eventstream.StringValue("application/json")},
			{Name: ":message-type", Value: eventstream.StringValue("event")},
		}
		if e.Exception != "" {
			h = eventstream.Headers{
				{Name: ":exception-type", Value: eventstream.StringValue(e.Exception)},
				{Name: ":content-type", Value: eventstream.StringValue("application/json")},
				{Name: ":message-type", Value: eventstream.StringValue("exception")},
			}
		}
		if err := enc.Encode(&b, eventstream.Message{Headers: h, Payload: e.Payload}); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

func fixtureStream(t testing.TB, path string) []byte {
	t.Helper()
	var events []fixtureEvent
	if err := json.Unmarshal(readFile(t, path), &events); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return frames(t, events)
}

// decoded is what a stream decodes to.
type decoded struct {
	Events []ir.Event
	Error  string
	// Overloaded is set when the error is a provider's saying so.
	Overloaded bool
	Done       bool
}

// decodeStream reads r (through a bufio.Reader of size bytes) with
// awsstream and decodes each event as the gateway does, Decode(dst,
// ev.Name, ev.Data), ending with End at the end of the stream; it stops
// at the first error.
func decodeStream(r io.Reader, size int, names *Names) decoded {
	rd := awsstream.NewReader(bufio.NewReaderSize(r, size), 1<<20)
	dec := NewStreamDecoder(names)
	var out decoded
	var err error
	for {
		var ev awsstream.Event
		ev, err = rd.Next()
		if errors.Is(err, io.EOF) {
			err = nil
			if !dec.Done() {
				out.Events, err = dec.(ir.StreamEnder).End(out.Events)
			}
			break
		}
		if err == nil {
			out.Events, err = dec.Decode(out.Events, ev.Name, ev.Data)
		}
		if err != nil {
			break
		}
	}
	if err != nil {
		out.Error = err.Error()
		var pe *ir.ProviderError
		if errors.As(err, &pe) {
			out.Error, out.Overloaded = pe.Type+": "+pe.Message, pe.Overloaded
		}
	}
	out.Done = dec.Done()
	return out
}

// encodeClients encodes events for both client formats, ending a stream
// that did not end as the gateway does, with a message stop.
func encodeClients(events []ir.Event, ended bool) (anthropicOut, openaiOut []byte) {
	encs := []ir.StreamEncoder{anthropic.NewStreamEncoder("client-model"), openaichat.NewStreamEncoder("client-model", 1700000000, true)}
	outs := make([][]byte, len(encs))
	for k, enc := range encs {
		for i := range events {
			outs[k] = enc.Encode(outs[k], &events[i])
		}
		if !ended {
			outs[k] = enc.Encode(outs[k], &ir.Event{Kind: ir.EventMessageStop})
		}
	}
	return outs[0], outs[1]
}

// TestStreamGolden builds each stream of testdata/golden/streams
// (NAME.in.json, its frames as JSON) as an eventstream, decodes it into
// IR events (NAME.events.json) and encodes them for an Anthropic client
// (NAME.anthropic.sse) and an OpenAI one (NAME.openai.sse), which must pass
// their protocol validators. Reading the stream in small pieces must give
// the same events.
func TestStreamGolden(t *testing.T) {
	t.Parallel()
	for _, in := range goldenInputs(t, "streams", "*.in.json") {
		name := strings.TrimSuffix(in, ".in.json")
		t.Run(name[strings.LastIndex(name, "/")+1:], func(t *testing.T) {
			t.Parallel()
			stream := fixtureStream(t, in)
			names := fixtureNames(t)
			got := decodeStream(bytes.NewReader(stream), 1<<16, names)
			for _, sizes := range [][]byte{{0}, {1, 2, 3, 5, 8, 13}, {200, 7}, {15, 16, 17}} {
				split := decodeStream(&wiretest.SplitReader{B: stream, Sizes: sizes}, 16, names)
				if diff := cmp.Diff(got, split); diff != "" {
					t.Errorf("split reading %v differs (-whole +split):\n%s", sizes, diff)
				}
			}
			checkGolden(t, name+".events.json", dump(t, got))
			a, o := encodeClients(got.Events, got.Done)
			if err := validateAnthropic(a, true); err != nil {
				t.Errorf("Anthropic stream breaks the grammar: %v\n%s", err, a)
			}
			if err := validateOpenAI(o); err != nil {
				t.Errorf("OpenAI stream breaks the grammar: %v\n%s", err, o)
			}
			checkGolden(t, name+".anthropic.sse", a)
			checkGolden(t, name+".openai.sse", o)
		})
	}
}

// TestStreamMatchesResponse checks that a stream and the whole answer it
// streams decode to the same content and usage.
func TestStreamMatchesResponse(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"tool_use_long_name"} {
		whole, err := DecodeResponse(readFile(t, "testdata/golden/responses/"+name+".in.json"), fixtureNames(t))
		if err != nil {
			t.Fatal(err)
		}
		got := decodeStream(bytes.NewReader(fixtureStream(t, "testdata/golden/streams/"+name+".in.json")), 1<<16, fixtureNames(t))
		r := &ir.Response{}
		var input []string
		for _, e := range got.Events {
			switch e.Kind {
			case ir.EventBlockStart:
				r.Content = append(r.Content, e.Block)
				input = append(input, "")
			case ir.EventBlockDelta:
				b := &r.Content[e.Index]
				switch e.Delta {
				case ir.DeltaText:
					b.Text += e.Text
				case ir.DeltaInputJSON:
					input[e.Index] += e.Text
				}
			case ir.EventMessageDelta:
				r.StopReason, r.Usage = e.StopReason, e.Usage
			}
		}
		for i := range r.Content {
			if r.Content[i].Type == ir.BlockToolUse {
				r.Content[i].Input = ir.Raw("{}")
				if input[i] != "" {
					r.Content[i].Input = ir.Raw(input[i])
				}
			}
		}
		if diff := cmp.Diff(whole, r); diff != "" {
			t.Errorf("%s: stream and answer differ (-answer +stream):\n%s", name, diff)
		}
	}
}

func TestStreamDecoderGrammar(t *testing.T) {
	t.Parallel()
	type ev struct{ name, data string }
	start := ev{"messageStart", `{"role":"assistant"}`}
	tests := []struct {
		name   string
		events []ev
		want   string // a substring of the error
	}{
		{"second message start", []ev{start, start}, "second messageStart"},
		{"tool input without start", []ev{start, {"contentBlockDelta", `{"contentBlockIndex":0,"delta":{"toolUse":{"input":"{}"}}}`}}, "no contentBlockStart"},
		{"delta for a closed block", []ev{start,
			{"contentBlockDelta", `{"contentBlockIndex":1,"delta":{"text":"a"}}`},
			{"contentBlockDelta", `{"contentBlockIndex":0,"delta":{"text":"b"}}`}}, "closed"},
		{"delta after stop", []ev{start,
			{"contentBlockDelta", `{"contentBlockIndex":0,"delta":{"text":"a"}}`},
			{"contentBlockStop", `{"contentBlockIndex":0}`},
			{"contentBlockDelta", `{"contentBlockIndex":0,"delta":{"text":"b"}}`}}, "closed"},
		{"delta of the wrong type", []ev{start,
			{"contentBlockDelta", `{"contentBlockIndex":0,"delta":{"text":"a"}}`},
			{"contentBlockDelta", `{"contentBlockIndex":0,"delta":{"reasoningContent":{"signature":"s"}}}`}}, "reasoning delta in a text block"},
		{"second redacted piece", []ev{start,
			{"contentBlockDelta", `{"contentBlockIndex":0,"delta":{"reasoningContent":{"redactedContent":"AA=="}}}`},
			{"contentBlockDelta", `{"contentBlockIndex":0,"delta":{"reasoningContent":{"redactedContent":"AA=="}}}`}}, "second redacted"},
		{"start reusing an index", []ev{start,
			{"contentBlockStart", `{"contentBlockIndex":0,"start":{"toolUse":{"toolUseId":"a","name":"f"}}}`},
			{"contentBlockStart", `{"contentBlockIndex":0,"start":{"toolUse":{"toolUseId":"b","name":"f"}}}`}}, "after 0"},
		{"start without a tool use", []ev{start, {"contentBlockStart", `{"contentBlockIndex":0,"start":{}}`}}, "without an index or a tool use"},
		{"tool use without a name", []ev{start, {"contentBlockStart", `{"contentBlockIndex":0,"start":{"toolUse":{"toolUseId":"a"}}}`}}, "without an id or a name"},
		{"stop for a closed block", []ev{start,
			{"contentBlockDelta", `{"contentBlockIndex":2,"delta":{"text":"a"}}`},
			{"contentBlockStop", `{"contentBlockIndex":1}`}}, "not open"},
		{"content after message stop", []ev{start,
			{"messageStop", `{"stopReason":"end_turn"}`},
			{"contentBlockDelta", `{"contentBlockIndex":0,"delta":{"text":"a"}}`}}, "after messageStop"},
		{"malformed payload", []ev{start, {"contentBlockDelta", `{"contentBlockIndex":"zero"}`}}, "malformed contentBlockDelta"},
		{"truncated", []ev{start, {"contentBlockDelta", `{"contentBlockIndex":0,"delta":{"text":"a"}}`}}, "ended before messageStop"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dec := NewStreamDecoder(nil)
			var err error
			for _, e := range tt.events {
				if _, err = dec.Decode(nil, []byte(e.name), []byte(e.data)); err != nil {
					break
				}
			}
			if err == nil {
				_, err = dec.(ir.StreamEnder).End(nil)
			}
			if !errors.Is(err, ir.ErrProtocol) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want ir.ErrProtocol with %q", err, tt.want)
			}
		})
	}
}

func TestStreamExceptions(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name       string
		overloaded bool
	}{
		{"throttlingException", true},
		{"serviceUnavailableException", true},
		{"modelStreamErrorException", false},
		{"internalServerException", false},
		{"validationException", false},
	} {
		dec := NewStreamDecoder(nil)
		evs, err := dec.Decode(nil, []byte("messageStart"), []byte(`{"role":"assistant"}`))
		if err != nil {
			t.Fatal(err)
		}
		_, err = dec.Decode(evs, []byte(tt.name), []byte(`{"message":"it failed"}`))
		var pe *ir.ProviderError
		if !errors.As(err, &pe) {
			t.Fatalf("%s: err = %v, want an *ir.ProviderError", tt.name, err)
		}
		want := &ir.ProviderError{Type: strings.ToUpper(tt.name[:1]) + tt.name[1:], Overloaded: tt.overloaded, Message: "it failed"}
		if diff := cmp.Diff(want, pe); diff != "" {
			t.Errorf("%s: mismatch (-want +got):\n%s", tt.name, diff)
		}
	}
}

// fuzzFrames turns a fuzz input into frames: one line per event, its name
// then a space then its payload; a name starting with ! is an exception.
func fuzzFrames(t testing.TB, in []byte) []byte {
	var events []fixtureEvent
	for line := range bytes.SplitSeq(in, []byte("\n")) {
		name, payload, _ := bytes.Cut(line, []byte(" "))
		e := fixtureEvent{Event: string(name), Payload: payload}
		if ex, ok := strings.CutPrefix(e.Event, "!"); ok {
			e = fixtureEvent{Exception: ex, Payload: payload}
		}
		if len(e.Event) > 255 || len(e.Exception) > 255 {
			continue // eventstream header values are bounded
		}
		events = append(events, e)
	}
	return frames(t, events)
}

// fuzzSeed is a fixture in fuzzFrames' line form.
func fuzzSeed(t testing.TB, path string) []byte {
	var events []fixtureEvent
	if err := json.Unmarshal(readFile(t, path), &events); err != nil {
		t.Fatal(err)
	}
	var b []byte
	for i, e := range events {
		if i > 0 {
			b = append(b, '\n')
		}
		if e.Exception != "" {
			b = append(b, "!"+e.Exception...)
		} else {
			b = append(b, e.Event...)
		}
		var c bytes.Buffer
		if err := json.Compact(&c, e.Payload); err != nil {
			t.Fatal(err)
		}
		b = append(append(b, ' '), c.Bytes()...)
	}
	return b
}

// FuzzStreamDecoder builds a stream from fuzzed events, reads it through
// awsstream whole and in random pieces, which must decode to the same IR
// events and error; it then encodes the events for both client formats,
// which must pass their protocol validators (after the gateway's closing
// message stop when the stream did not end). A stream that failed before
// its first event is not encoded: the gateway answers it with an error.
func FuzzStreamDecoder(f *testing.F) {
	for _, in := range goldenInputs(f, "streams", "*.in.json") {
		f.Add(fuzzSeed(f, in), []byte{3, 1, 4, 1, 5, 9, 2, 6})
	}
	f.Add([]byte("contentBlockDelta {\"contentBlockIndex\":3,\"delta\":{\"reasoningContent\":{\"redactedContent\":\"AA==\"}}}\nmetadata {}\nmessageStop {}"), []byte{0})
	f.Add([]byte("contentBlockStop {\"contentBlockIndex\":4}\ncontentBlockStart {\"contentBlockIndex\":5,\"start\":{\"toolUse\":{\"toolUseId\":\"x\",\"name\":\"y\"}}}\ncontentBlockDelta {\"contentBlockIndex\":5,\"delta\":{\"toolUse\":{\"input\":\"[\"}}}\nmessageStop {\"stopReason\":\"tool_use\"}"), []byte{1, 2})
	f.Fuzz(func(t *testing.T, in, sizes []byte) {
		stream := fuzzFrames(t, in)
		names := fixtureNames(t)
		whole := decodeStream(bytes.NewReader(stream), 1<<16, names)
		split := decodeStream(&wiretest.SplitReader{B: stream, Sizes: sizes}, 16, names)
		if diff := cmp.Diff(whole, split); diff != "" {
			t.Fatalf("split reading differs (-whole +split):\n%s", diff)
		}
		if len(whole.Events) == 0 {
			return // nothing to deliver: the gateway answers with an error, not a stream
		}
		a, o := encodeClients(whole.Events, whole.Done)
		if err := validateAnthropic(a, false); err != nil {
			t.Fatalf("Anthropic stream breaks the grammar: %v\nevents %+v\n%s", err, whole, a)
		}
		if err := validateOpenAI(o); err != nil {
			t.Fatalf("OpenAI stream breaks the grammar: %v\nevents %+v\n%s", err, whole, o)
		}
	})
}

// FuzzDecodeResponse checks that DecodeResponse never panics, fails only
// with ir.ErrProtocol, and that what it accepts encodes into valid
// answers for both client formats.
func FuzzDecodeResponse(f *testing.F) {
	for _, in := range goldenInputs(f, "responses", "*.in.json") {
		f.Add(readFile(f, in))
	}
	f.Add([]byte(`{"output":{"message":{"content":[{"toolUse":{"toolUseId":"a","name":"b","input":null}},{"reasoningContent":{}}]}}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := DecodeResponse(body, fixtureNames(t))
		if err != nil {
			if !errors.Is(err, ir.ErrProtocol) {
				t.Fatalf("DecodeResponse error %v does not wrap ir.ErrProtocol", err)
			}
			return
		}
		if a := anthropic.EncodeResponse(nil, r, "m"); !json.Valid(a) {
			t.Errorf("Anthropic answer is not JSON: %s", a)
		}
		if o := openaichat.EncodeResponse(nil, r, "m", 1); !json.Valid(o) {
			t.Errorf("OpenAI answer is not JSON: %s", o)
		}
	})
}
