package openairesp

import (
	"github.com/moat-ai/moat/services/gateway/internal/ir"
	"github.com/moat-ai/moat/services/gateway/internal/wire/jsonx"
	"github.com/moat-ai/moat/services/gateway/internal/wire/sse"
)

// itemKind is the kind of the output item a stream encoder has open.
type itemKind uint8

const (
	itemNone itemKind = iota
	itemMessage
	itemReasoning
	itemCall
)

// streamEncoder writes IR events as the Responses event stream. It keeps
// the grammar whatever the IR's source does: a missing message start is
// supplied, a block still open when another starts or the message ends is
// closed, deltas that do not fit the open block are left out, and blocks
// of types an answer cannot hold are left out with their events.
//
// A run of text blocks is one message item, a content part each (so a
// message item stays open across its text blocks, and closes when another
// kind of block starts or the answer ends); a thinking block is a
// reasoning item whose one summary part opens with its first text; a tool
// use is a function_call item. Every item, part and the final response
// are built with EncodeResponse's functions, so the response that
// response.completed carries is the one EncodeResponse writes for the
// same answer.
type streamEncoder struct {
	model            string
	created          int64
	base             string // what the ids are built on
	seq              int    // the next sequence_number
	started, stopped bool

	// The IR block open, and whether it is left out.
	open, skip bool
	openIR     int
	openType   ir.BlockType

	// The output item open: its kind, id and output index; the finished
	// text parts of an open message; the text of the open part (text,
	// summary or arguments) and whether a summary part is open.
	item        itemKind
	itemID      string
	index       int
	parts       []string
	text        []byte
	summaryOpen bool
	callID      string
	name        string

	output []byte // the finished items, for the final response
	items  int
	stop   ir.StopReason
	usage  ir.Usage
	buf    []byte // one event's data
	resp   []byte // a response object
}

// NewStreamEncoder returns an encoder of IR events as a Responses event
// stream for model (the name the client asked for; the IR's when empty),
// created at the given Unix time: `event: <type>` and `data: {...}` with
// "type" and a "sequence_number" from 0, no [DONE]. The stream opens with
// response.created and response.in_progress, carries per output item
// response.output_item.added, its content events and
// response.output_item.done, and ends with response.completed, or
// response.incomplete when the IR's stop reason is ir.StopMaxTokens or
// ir.StopRefusal, carrying the whole response with its usage. The gateway
// ends a stream that stopped without EventMessageStop by encoding one.
//
// The encoder also has a method NextSequence() int, the sequence number
// of the next event: a stream the gateway must end with an error takes
// StreamErrorEvent with it. An encoder is for one stream and not safe for
// concurrent use.
func NewStreamEncoder(model string, created int64) ir.StreamEncoder {
	return &streamEncoder{model: model, created: created, base: "moat"}
}

// NextSequence is the sequence number of the next event the stream gets.
func (s *streamEncoder) NextSequence() int { return s.seq }

func (s *streamEncoder) Encode(dst []byte, e *ir.Event) []byte {
	if s.stopped {
		return dst
	}
	switch e.Kind {
	case ir.EventMessageStart:
		dst = s.start(dst, e)
		s.usage.Merge(e.Usage)
	case ir.EventBlockStart:
		dst = s.closeBlock(s.start(dst, e))
		s.open, s.openIR, s.openType, s.skip = true, e.Index, e.Block.Type, false
		switch e.Block.Type {
		case ir.BlockText:
			if s.item != itemMessage {
				dst = s.openItem(dst, itemMessage, "msg_")
			}
			dst = s.openPart(dst)
		case ir.BlockThinking:
			dst = s.openItem(s.closeMessage(dst), itemReasoning, "rs_")
		case ir.BlockToolUse:
			dst = s.closeMessage(dst)
			s.callID, s.name = callID(e.Block.ID, s.items), e.Block.Name
			dst = s.openItem(dst, itemCall, "fc_")
		default:
			s.skip = true
		}
	case ir.EventBlockDelta:
		if !s.open || s.skip || e.Index != s.openIR || e.Text == "" {
			return dst
		}
		switch {
		case e.Delta == ir.DeltaText && s.openType == ir.BlockText:
			s.text = append(s.text, e.Text...)
			b := s.part(s.begin(typeTextDelta))
			b = jsonx.AppendString(append(b, `,"delta":`...), e.Text)
			dst = s.end(dst, append(b, `,"logprobs":[]`...), typeTextDelta)
		case e.Delta == ir.DeltaInputJSON && s.openType == ir.BlockToolUse:
			dst = s.argsDelta(dst, e.Text)
		case e.Delta == ir.DeltaThinking && s.openType == ir.BlockThinking:
			if !s.summaryOpen {
				s.summaryOpen = true
				b := s.summary(s.begin(typeSummaryAdded))
				dst = s.end(dst, appendSummaryPart(append(b, `,"part":`...), ""), typeSummaryAdded)
			}
			s.text = append(s.text, e.Text...)
			b := s.summary(s.begin(typeSummaryTextDelta))
			dst = s.end(dst, jsonx.AppendString(append(b, `,"delta":`...), e.Text), typeSummaryTextDelta)
		}
	case ir.EventBlockStop:
		if s.open && e.Index == s.openIR {
			dst = s.closeBlock(dst)
		}
	case ir.EventMessageDelta:
		dst = s.closeMessage(s.closeBlock(s.start(dst, e)))
		if e.StopReason != ir.StopUnknown {
			s.stop = e.StopReason
		}
		s.usage.Merge(e.Usage)
	case ir.EventMessageStop:
		dst = s.closeMessage(s.closeBlock(s.start(dst, e)))
		h := s.head(true)
		typ := typeCompleted
		if st, _ := h.status(); st == "incomplete" {
			typ = typeIncomplete
		}
		u := s.usage
		s.resp = appendResponse(s.resp[:0], h, append(s.output, ']'), &u)
		b := append(s.begin(typ), `,"response":`...)
		dst = s.end(dst, append(b, s.resp...), typ)
		s.stopped = true
	}
	return dst
}

func (s *streamEncoder) head(done bool) responseHead {
	return responseHead{id: "resp_" + s.base, model: s.model, created: s.created, stop: s.stop, done: done}
}

// start opens the stream unless it was opened; e supplies the id and the
// model when it is the IR's own message start.
func (s *streamEncoder) start(dst []byte, e *ir.Event) []byte {
	if s.started {
		return dst
	}
	s.started = true
	if e.Kind == ir.EventMessageStart {
		s.base = idBase(e.ID)
	}
	if s.model == "" {
		s.model = e.Model
	}
	s.output = append(s.output[:0], '[')
	s.resp = appendResponse(s.resp[:0], s.head(false), []byte("[]"), nil)
	for _, typ := range [...]string{typeCreated, typeInProgress} {
		b := append(s.begin(typ), `,"response":`...)
		dst = s.end(dst, append(b, s.resp...), typ)
	}
	return dst
}

// begin starts the data of an event of type typ, numbering it.
func (s *streamEncoder) begin(typ string) []byte {
	b := append(s.buf[:0], `{"type":"`...)
	b = append(b, typ...)
	b = append(b, `","sequence_number":`...)
	b = jsonx.AppendInt(b, int64(s.seq))
	s.seq++
	return b
}

// end closes the event data b and appends the event.
func (s *streamEncoder) end(dst, b []byte, typ string) []byte {
	s.buf = append(b, '}')
	return sse.AppendEvent(dst, typ, s.buf)
}

// ref appends the open item's item_id and output_index.
func (s *streamEncoder) ref(b []byte) []byte {
	b = append(b, `,"item_id":`...)
	b = jsonx.AppendString(b, s.itemID)
	b = append(b, `,"output_index":`...)
	return jsonx.AppendInt(b, int64(s.index))
}

// part appends the open text part's reference.
func (s *streamEncoder) part(b []byte) []byte {
	b = append(s.ref(b), `,"content_index":`...)
	return jsonx.AppendInt(b, int64(len(s.parts)))
}

// summary appends the open summary part's reference.
func (s *streamEncoder) summary(b []byte) []byte {
	return append(s.ref(b), `,"summary_index":0`...)
}

// openItem opens an output item of kind k and announces it.
func (s *streamEncoder) openItem(dst []byte, k itemKind, prefix string) []byte {
	s.item, s.index = k, s.items
	s.itemID = itemID(prefix, s.base, s.index)
	s.text, s.summaryOpen = s.text[:0], false
	b := s.begin(typeItemAdded)
	b = append(b, `,"output_index":`...)
	b = append(jsonx.AppendInt(b, int64(s.index)), `,"item":`...)
	switch k {
	case itemMessage:
		b = appendMessageItem(b, s.itemID, "in_progress", nil)
	case itemReasoning:
		b = appendReasoningItem(b, s.itemID, "")
	case itemCall:
		b = appendCallItem(b, s.itemID, "in_progress", s.callID, s.name, "")
	}
	return s.end(dst, b, typeItemAdded)
}

// openPart opens a text part in the open message.
func (s *streamEncoder) openPart(dst []byte) []byte {
	s.text = s.text[:0]
	b := s.part(s.begin(typePartAdded))
	return s.end(dst, appendTextPart(append(b, `,"part":`...), ""), typePartAdded)
}

func (s *streamEncoder) argsDelta(dst []byte, text string) []byte {
	s.text = append(s.text, text...)
	b := s.ref(s.begin(typeArgsDelta))
	return s.end(dst, jsonx.AppendString(append(b, `,"delta":`...), text), typeArgsDelta)
}

// closeBlock ends the open IR block: a text block's part (its message
// stays open for the next text block), a thinking block's or a tool use's
// whole item.
func (s *streamEncoder) closeBlock(dst []byte) []byte {
	if !s.open {
		return dst
	}
	s.open = false
	if s.skip {
		return dst
	}
	text := string(s.text)
	switch s.openType {
	case ir.BlockText:
		b := s.part(s.begin(typeTextDone))
		b = jsonx.AppendString(append(b, `,"text":`...), text)
		dst = s.end(dst, append(b, `,"logprobs":[]`...), typeTextDone)
		b = s.part(s.begin(typePartDone))
		dst = s.end(dst, appendTextPart(append(b, `,"part":`...), text), typePartDone)
		s.parts = append(s.parts, text)
		s.text = s.text[:0]
		return dst
	case ir.BlockThinking:
		if s.summaryOpen {
			b := s.summary(s.begin(typeSummaryTextDone))
			dst = s.end(dst, jsonx.AppendString(append(b, `,"text":`...), text), typeSummaryTextDone)
			b = s.summary(s.begin(typeSummaryDone))
			dst = s.end(dst, appendSummaryPart(append(b, `,"part":`...), text), typeSummaryDone)
		}
		return s.closeItem(dst, appendReasoningItem(s.resp[:0], s.itemID, text))
	default: // a tool use
		if text == "" {
			// A call without arguments: clients parse them as JSON.
			text = "{}"
			dst = s.argsDelta(dst, text)
		}
		b := s.ref(s.begin(typeArgsDone))
		dst = s.end(dst, jsonx.AppendString(append(b, `,"arguments":`...), text), typeArgsDone)
		return s.closeItem(dst, appendCallItem(s.resp[:0], s.itemID, "completed", s.callID, s.name, text))
	}
}

// closeMessage ends the open message item, if any.
func (s *streamEncoder) closeMessage(dst []byte) []byte {
	if s.item != itemMessage {
		return dst
	}
	dst = s.closeItem(dst, appendMessageItem(s.resp[:0], s.itemID, "completed", s.parts))
	s.parts = s.parts[:0]
	return dst
}

// closeItem announces the open item done, as item (which may be s.resp),
// and keeps it for the final response.
func (s *streamEncoder) closeItem(dst, item []byte) []byte {
	b := s.begin(typeItemDone)
	b = append(b, `,"output_index":`...)
	b = append(jsonx.AppendInt(b, int64(s.index)), `,"item":`...)
	dst = s.end(dst, append(b, item...), typeItemDone)
	if s.items > 0 {
		s.output = append(s.output, ',')
	}
	s.output = append(s.output, item...)
	s.resp = item[:0]
	s.items++
	s.item = itemNone
	return dst
}
