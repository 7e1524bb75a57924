package anthropic

import (
	"fmt"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/moat-ai/moat/services/gateway/internal/ir"
	"github.com/moat-ai/moat/services/gateway/internal/wire/jsonx"
	"github.com/moat-ai/moat/services/gateway/internal/wire/sse"
)

// eventWire is the data of any Anthropic stream event: each event uses
// the members of its type.
type eventWire struct {
	Message *struct {
		ID    string `json:"id"`
		Model string `json:"model"`
	} `json:"message"`
	Index        *int64          `json:"index"`
	ContentBlock *blockStartWire `json:"content_block"`
	Delta        *struct {
		Type         string `json:"type"`
		Text         string `json:"text"`
		PartialJSON  string `json:"partial_json"`
		Thinking     string `json:"thinking"`
		Signature    string `json:"signature"`
		StopReason   string `json:"stop_reason"`
		StopSequence string `json:"stop_sequence"`
	} `json:"delta"`
}

// blockStartWire is the block of a content_block_start: empty, except
// for a tool use's id and name and a redacted thinking block's data.
type blockStartWire struct {
	Type      string         `json:"type"`
	Text      string         `json:"text"`
	ID        string         `json:"id"`
	Name      string         `json:"name"`
	Input     jsontext.Value `json:"input"`
	Thinking  string         `json:"thinking"`
	Signature string         `json:"signature"`
	Data      string         `json:"data"`
}

// streamDecoder reads Anthropic's stream grammar: message_start, then
// for each block content_block_start, deltas and content_block_stop (one
// block open at a time, indices increasing), then one message_delta and
// message_stop; ping anywhere.
type streamDecoder struct {
	started, delta, done bool
	open                 bool
	openType             ir.BlockType
	upIndex              int64 // the upstream index of the open block, or of the last one
	next                 int   // the IR index of the next block
	usage                ir.Usage
}

// NewStreamDecoder returns a decoder of one Anthropic stream into IR
// events. Block indices are renumbered from 0 in order, so the IR's are
// contiguous whatever the upstream's. Usage is cumulative: message_start
// and message_delta reports are merged by maximum and carried on
// EventMessageStart and EventMessageDelta. An error event returns a
// *ir.ProviderError; an event out of the grammar (a delta for a block
// never started, message_delta before message_start, a second
// message_start) an error wrapping ir.ErrProtocol. Events of unknown
// types are ignored, as Anthropic asks of clients; citations deltas are
// ignored, since the IR does not carry citations. The decoder is also an
// ir.StreamEnder (see End).
func NewStreamDecoder() ir.StreamDecoder { return &streamDecoder{upIndex: -1} }

var _ ir.StreamEnder = (*streamDecoder)(nil)

func (d *streamDecoder) Done() bool { return d.done }

// End closes a stream whose upstream ended without message_stop: after
// message_delta the answer is whole and only the marker is missing, so it
// ends as if message_stop had come; before, the answer is truncated,
// which is an error wrapping ir.ErrProtocol.
func (d *streamDecoder) End(dst []ir.Event) ([]ir.Event, error) {
	switch {
	case d.done:
		return dst, nil
	case !d.delta || d.open:
		return dst, protocol("stream ended before message_delta")
	}
	d.done = true
	return append(dst, ir.Event{Kind: ir.EventMessageStop}), nil
}

func protocol(format string, args ...any) error {
	return fmt.Errorf("anthropic stream: "+format+": %w", append(args, ir.ErrProtocol)...)
}

func (d *streamDecoder) Decode(dst []ir.Event, name, data []byte) ([]ir.Event, error) {
	k := EventKind(name, data)
	switch k {
	case EventOther, EventPing:
		return dst, nil
	case EventError:
		e, ok := DecodeError(data)
		if !ok || e.Type == "" {
			e.Type = "api_error"
		}
		return dst, &e
	}
	var w eventWire
	if err := json.Unmarshal(data, &w); err != nil {
		return dst, protocol("malformed %s event", eventLabel(k))
	}
	if d.done {
		return dst, protocol("%s after message_stop", eventLabel(k))
	}
	switch k {
	case EventMessageStart:
		if d.started {
			return dst, protocol("second message_start")
		}
		if w.Message == nil {
			return dst, protocol("message_start without a message")
		}
		d.started = true
		d.usage.Merge(ReadStreamUsage(k, data))
		return append(dst, ir.Event{Kind: ir.EventMessageStart, ID: w.Message.ID, Model: w.Message.Model, Usage: d.usage}), nil
	case EventContentBlockStart:
		switch {
		case !d.started:
			return dst, protocol("content_block_start before message_start")
		case d.delta:
			return dst, protocol("content_block_start after message_delta")
		case d.open:
			return dst, protocol("content_block_start while block %d is open", d.upIndex)
		case w.Index == nil || w.ContentBlock == nil:
			return dst, protocol("content_block_start without index or block")
		case *w.Index <= d.upIndex:
			return dst, protocol("content_block_start index %d after %d", *w.Index, d.upIndex)
		}
		return d.start(dst, *w.Index, w.ContentBlock)
	case EventContentBlockDelta:
		if err := d.inBlock(w.Index, "content_block_delta"); err != nil {
			return dst, err
		}
		if w.Delta == nil {
			return dst, protocol("content_block_delta without delta")
		}
		e := ir.Event{Kind: ir.EventBlockDelta, Index: d.next}
		var want ir.BlockType
		switch w.Delta.Type {
		case "text_delta":
			e.Delta, e.Text, want = ir.DeltaText, w.Delta.Text, ir.BlockText
		case "input_json_delta":
			e.Delta, e.Text, want = ir.DeltaInputJSON, w.Delta.PartialJSON, ir.BlockToolUse
		case "thinking_delta":
			e.Delta, e.Text, want = ir.DeltaThinking, w.Delta.Thinking, ir.BlockThinking
		case "signature_delta":
			e.Delta, e.Text, want = ir.DeltaSignature, w.Delta.Signature, ir.BlockThinking
		case "citations_delta":
			if d.openType != ir.BlockText {
				return dst, protocol("citations_delta in a %s block", blockLabel(d.openType))
			}
			return dst, nil
		default:
			return dst, protocol("unknown delta type %q", short(w.Delta.Type))
		}
		if want != d.openType {
			return dst, protocol("%s in a %s block", w.Delta.Type, blockLabel(d.openType))
		}
		return append(dst, e), nil
	case EventContentBlockStop:
		if err := d.inBlock(w.Index, "content_block_stop"); err != nil {
			return dst, err
		}
		d.open = false
		d.next++
		return append(dst, ir.Event{Kind: ir.EventBlockStop, Index: d.next - 1}), nil
	case EventMessageDelta:
		switch {
		case !d.started:
			return dst, protocol("message_delta before message_start")
		case d.open:
			return dst, protocol("message_delta while block %d is open", d.upIndex)
		case d.delta:
			return dst, protocol("second message_delta")
		}
		d.delta = true
		d.usage.Merge(ReadStreamUsage(k, data))
		e := ir.Event{Kind: ir.EventMessageDelta, Usage: d.usage}
		if w.Delta != nil {
			e.StopReason, e.StopSequence = StopReasonOf(w.Delta.StopReason), w.Delta.StopSequence
		}
		return append(dst, e), nil
	case EventMessageStop:
		switch {
		case !d.started:
			return dst, protocol("message_stop before message_start")
		case d.open:
			return dst, protocol("message_stop while block %d is open", d.upIndex)
		}
		d.done = true
		return append(dst, ir.Event{Kind: ir.EventMessageStop}), nil
	}
	return dst, nil
}

// inBlock checks that a delta or stop event names the open block.
func (d *streamDecoder) inBlock(index *int64, event string) error {
	switch {
	case !d.open:
		return protocol("%s outside a block", event)
	case index == nil || *index != d.upIndex:
		return protocol("%s for a block that is not open", event)
	}
	return nil
}

// start opens a block. Content in the start event itself (which
// Anthropic leaves empty, but compatible servers may fill) becomes
// deltas, so that nothing is lost.
func (d *streamDecoder) start(dst []ir.Event, index int64, w *blockStartWire) ([]ir.Event, error) {
	e := ir.Event{Kind: ir.EventBlockStart, Index: d.next}
	var initial [2]ir.Event
	n := 0
	delta := func(t ir.DeltaType, s string) {
		if s != "" {
			initial[n] = ir.Event{Kind: ir.EventBlockDelta, Index: d.next, Delta: t, Text: s}
			n++
		}
	}
	switch w.Type {
	case "text":
		e.Block.Type = ir.BlockText
		delta(ir.DeltaText, w.Text)
	case "thinking":
		e.Block.Type = ir.BlockThinking
		delta(ir.DeltaThinking, w.Thinking)
		delta(ir.DeltaSignature, w.Signature)
	case "redacted_thinking":
		// Its whole content comes in the start event.
		e.Block.Type, e.Block.Data = ir.BlockRedactedThinking, w.Data
	case "tool_use":
		e.Block.Type, e.Block.ID, e.Block.Name = ir.BlockToolUse, w.ID, w.Name
		if w.ID == "" || w.Name == "" {
			return dst, protocol("tool_use block without id or name")
		}
		if jsonx.Kind(w.Input) != 0 && !isEmptyObject(w.Input) {
			delta(ir.DeltaInputJSON, string(w.Input))
		}
	default:
		return dst, protocol("content block type %q cannot be translated", short(w.Type))
	}
	d.open, d.openType, d.upIndex = true, e.Block.Type, index
	dst = append(dst, e)
	return append(dst, initial[:n]...), nil
}

// isEmptyObject reports whether v is {} with any inner whitespace.
func isEmptyObject(v []byte) bool {
	n := 0
	_, err := jsonx.Object(v, func(jsonx.Member) error { n++; return nil })
	return err == nil && n == 0
}

func eventLabel(k Event) string {
	for name, e := range eventNames {
		if e == k {
			return name
		}
	}
	return "unknown"
}

func blockLabel(t ir.BlockType) string {
	switch t {
	case ir.BlockText:
		return "text"
	case ir.BlockToolUse:
		return "tool_use"
	case ir.BlockThinking:
		return "thinking"
	case ir.BlockRedactedThinking:
		return "redacted_thinking"
	}
	return "other"
}

// streamEncoder writes IR events as Anthropic's stream. It keeps the
// grammar whatever the IR's source does: a missing message_start is
// supplied, a block still open when another starts or the message ends
// is closed, deltas that do not fit the open block are left out, blocks
// of types an answer cannot hold are left out with their events, and
// the output's indices run from 0 without gaps. message_delta is held
// until message_stop, so that several IR deltas (OpenAI sends its stop
// reason and its usage in separate chunks) become the one message_delta
// Anthropic's grammar allows, with the usage merged by maximum.
type streamEncoder struct {
	model            string
	started, stopped bool
	open, skip       bool
	openIR           int // the IR index of the open block
	openType         ir.BlockType
	out              int // the output index of the open block, or of the next
	stopReason       ir.StopReason
	stopSequence     string
	usage            ir.Usage
	buf              []byte
}

// NewStreamEncoder returns an encoder of IR events as an Anthropic
// stream for model (the name the client asked for). It is for one
// stream and not safe for concurrent use. Message ids keep or gain the
// msg_ prefix (an IR stream without an id gets msg_ alone: the caller
// sets one); tool use ids are kept as given. The gateway ends a stream
// that stopped without EventMessageStop by encoding one.
func NewStreamEncoder(model string) ir.StreamEncoder { return &streamEncoder{model: model} }

func (s *streamEncoder) Encode(dst []byte, e *ir.Event) []byte {
	if s.stopped {
		return dst
	}
	switch e.Kind {
	case ir.EventMessageStart:
		if !s.started {
			dst = s.messageStart(dst, e)
		}
		s.usage.Merge(e.Usage)
	case ir.EventBlockStart:
		dst = s.messageStart(s.closeBlock(dst), e)
		s.open, s.openIR, s.openType = true, e.Index, e.Block.Type
		s.skip = !answerBlock(e.Block.Type)
		if s.skip {
			return dst
		}
		b := append(s.buf[:0], `{"type":"content_block_start","index":`...)
		b = jsonx.AppendInt(b, int64(s.out))
		b = append(b, `,"content_block":`...)
		switch e.Block.Type {
		case ir.BlockText:
			b = append(b, `{"type":"text","text":""}`...)
		case ir.BlockThinking:
			b = append(b, `{"type":"thinking","thinking":"","signature":""}`...)
		default: // tool use and redacted thinking: the start holds their ids and data
			blk := e.Block
			blk.Input = nil
			b = appendAnswerBlock(b, &blk)
		}
		s.buf = append(b, '}')
		dst = sse.AppendEvent(dst, "content_block_start", s.buf)
	case ir.EventBlockDelta:
		if !s.open || s.skip || e.Index != s.openIR || !deltaFits(e.Delta, s.openType) {
			return dst
		}
		b := append(s.buf[:0], `{"type":"content_block_delta","index":`...)
		b = jsonx.AppendInt(b, int64(s.out))
		switch e.Delta {
		case ir.DeltaText:
			b = append(b, `,"delta":{"type":"text_delta","text":`...)
		case ir.DeltaInputJSON:
			b = append(b, `,"delta":{"type":"input_json_delta","partial_json":`...)
		case ir.DeltaThinking:
			b = append(b, `,"delta":{"type":"thinking_delta","thinking":`...)
		case ir.DeltaSignature:
			b = append(b, `,"delta":{"type":"signature_delta","signature":`...)
		}
		b = jsonx.AppendString(b, e.Text)
		s.buf = append(b, "}}"...)
		dst = sse.AppendEvent(dst, "content_block_delta", s.buf)
	case ir.EventBlockStop:
		if s.open && e.Index == s.openIR {
			dst = s.closeBlock(dst)
		}
	case ir.EventMessageDelta:
		dst = s.messageStart(s.closeBlock(dst), e)
		if e.StopReason != ir.StopUnknown {
			s.stopReason = e.StopReason
		}
		if e.StopSequence != "" {
			s.stopSequence = e.StopSequence
		}
		s.usage.Merge(e.Usage)
	case ir.EventMessageStop:
		dst = s.messageStart(s.closeBlock(dst), e)
		b := append(s.buf[:0], `{"type":"message_delta","delta":{"stop_reason":`...)
		b = appendStopReason(b, s.stopReason)
		b = append(b, `,"stop_sequence":`...)
		b = appendOptString(b, s.stopSequence)
		b = append(b, `},"usage":`...)
		s.buf = append(appendUsage(b, s.usage), '}')
		dst = sse.AppendEvent(dst, "message_delta", s.buf)
		dst = sse.AppendEvent(dst, "message_stop", append(s.buf[:0], `{"type":"message_stop"}`...))
		s.stopped = true
	}
	return dst
}

// messageStart appends message_start unless it was sent; e supplies the
// id and usage when it is the IR's own message start.
func (s *streamEncoder) messageStart(dst []byte, e *ir.Event) []byte {
	if s.started {
		return dst
	}
	s.started = true
	var id string
	var u ir.Usage
	if e.Kind == ir.EventMessageStart {
		id, u = e.ID, e.Usage
	}
	model := s.model
	if model == "" {
		model = e.Model
	}
	b := append(s.buf[:0], `{"type":"message_start","message":{"id":`...)
	b = jsonx.AppendString(b, messageID(id))
	b = append(b, `,"type":"message","role":"assistant","model":`...)
	b = jsonx.AppendString(b, model)
	b = append(b, `,"content":[],"stop_reason":null,"stop_sequence":null,"usage":`...)
	s.buf = append(appendUsage(b, u), "}}"...)
	return sse.AppendEvent(dst, "message_start", s.buf)
}

// closeBlock appends content_block_stop for the open block, if any.
func (s *streamEncoder) closeBlock(dst []byte) []byte {
	if !s.open {
		return dst
	}
	s.open = false
	if s.skip {
		return dst
	}
	b := append(s.buf[:0], `{"type":"content_block_stop","index":`...)
	b = jsonx.AppendInt(b, int64(s.out))
	s.buf = append(b, '}')
	s.out++
	return sse.AppendEvent(dst, "content_block_stop", s.buf)
}

// deltaFits reports whether a delta belongs in a block of type t.
func deltaFits(d ir.DeltaType, t ir.BlockType) bool {
	switch d {
	case ir.DeltaText:
		return t == ir.BlockText
	case ir.DeltaInputJSON:
		return t == ir.BlockToolUse
	case ir.DeltaThinking, ir.DeltaSignature:
		return t == ir.BlockThinking
	}
	return false
}
