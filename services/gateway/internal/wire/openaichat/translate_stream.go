package openaichat

import (
	"bytes"
	"fmt"
	"strconv"

	"github.com/go-json-experiment/json"

	"github.com/moat-ai/moat/services/gateway/internal/ir"
	"github.com/moat-ai/moat/services/gateway/internal/wire/jsonx"
	"github.com/moat-ai/moat/services/gateway/internal/wire/sse"
)

var doneData = []byte("[DONE]")

// streamDecoder turns chat-completion chunks into IR events. OpenAI's
// chunks carry no block structure: the decoder opens a block when the kind
// of delta changes (reasoning, text, a new tool call index) and closes the
// previous one, so that blocks never overlap, as the IR's grammar requires.
type streamDecoder struct {
	started, done, finished bool
	open                    int // index of the open block, -1 when none
	openType                ir.BlockType
	openTool                int64 // the tool call index of an open tool block
	next                    int   // index of the next block
	toolBlocks              map[int64]bool
	stop                    ir.StopReason
	usage                   ir.Usage
}

// NewStreamDecoder returns a decoder of one chat-completions stream.
func NewStreamDecoder() ir.StreamDecoder { return &streamDecoder{open: -1} }

func (d *streamDecoder) Done() bool { return d.done }

// End closes a stream that ended without `[DONE]` after its finish reason.
func (d *streamDecoder) End(dst []ir.Event) ([]ir.Event, error) {
	if d.done {
		return dst, nil
	}
	if !d.finished {
		return dst, fmt.Errorf("%w: the stream ended before its finish reason", ir.ErrProtocol)
	}
	return d.finish(dst), nil
}

func (d *streamDecoder) finish(dst []ir.Event) []ir.Event {
	dst = d.closeBlock(dst)
	if d.stop == ir.StopUnknown {
		d.stop = ir.StopEnd
	}
	d.done = true
	return append(dst, ir.Event{Kind: ir.EventMessageDelta, StopReason: d.stop, Usage: d.usage}, ir.Event{Kind: ir.EventMessageStop})
}

func (d *streamDecoder) closeBlock(dst []ir.Event) []ir.Event {
	if d.open < 0 {
		return dst
	}
	dst = append(dst, ir.Event{Kind: ir.EventBlockStop, Index: d.open})
	d.open = -1
	return dst
}

func (d *streamDecoder) openBlock(dst []ir.Event, b ir.Block) []ir.Event {
	dst = d.closeBlock(dst)
	d.open, d.openType = d.next, b.Type
	d.next++
	return append(dst, ir.Event{Kind: ir.EventBlockStart, Index: d.open, Block: b})
}

func (d *streamDecoder) Decode(dst []ir.Event, _, data []byte) ([]ir.Event, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return dst, nil // a comment or a keep-alive
	}
	if d.done {
		return dst, nil // nothing counts after the end
	}
	if bytes.Equal(data, doneData) {
		if !d.started {
			return dst, fmt.Errorf("%w: [DONE] before any chunk", ir.ErrProtocol)
		}
		return d.finish(dst), nil
	}
	if e, ok := StreamError(data); ok {
		return dst, &e
	}
	var ch chatResponse
	if err := json.Unmarshal(data, &ch); err != nil {
		return dst, fmt.Errorf("%w: chunk: %w", ir.ErrProtocol, err)
	}
	if u, _ := ReadUsage(data); u.Found {
		d.usage.Merge(u)
	}
	if !d.started {
		d.started = true
		dst = append(dst, ir.Event{Kind: ir.EventMessageStart, ID: ch.ID, Model: ch.Model, Usage: d.usage})
	}
	for _, c := range ch.Choices {
		if c.Index != 0 || c.Delta == nil {
			continue // n > 1 is never asked of a translated upstream
		}
		var err error
		if dst, err = d.delta(dst, c.Delta); err != nil {
			return dst, err
		}
		if c.FinishReason != nil {
			d.finished = true
			d.stop = stopReasonOf(c.FinishReason)
		}
	}
	return dst, nil
}

func (d *streamDecoder) delta(dst []ir.Event, m *chatMessage) ([]ir.Event, error) {
	if m.ReasoningContent != nil && *m.ReasoningContent != "" {
		if d.open < 0 || d.openType != ir.BlockThinking {
			dst = d.openBlock(dst, ir.Block{Type: ir.BlockThinking})
		}
		dst = append(dst, ir.Event{Kind: ir.EventBlockDelta, Index: d.open, Delta: ir.DeltaThinking, Text: *m.ReasoningContent})
	}
	text := ""
	if len(m.Content) > 0 && m.Content[0] == '"' {
		text, _ = jsonx.Unquote(m.Content)
	}
	if m.Refusal != nil {
		text += *m.Refusal
		d.stop = ir.StopRefusal
	}
	if text != "" {
		if d.open < 0 || d.openType != ir.BlockText {
			dst = d.openBlock(dst, ir.Block{Type: ir.BlockText})
		}
		dst = append(dst, ir.Event{Kind: ir.EventBlockDelta, Index: d.open, Delta: ir.DeltaText, Text: text})
	}
	for _, tc := range m.ToolCalls {
		var k int64
		if tc.Index != nil {
			k = *tc.Index
		}
		if d.open < 0 || d.openType != ir.BlockToolUse || d.openTool != k {
			if d.toolBlocks[k] {
				// Anthropic-style blocks cannot interleave: a delta for a
				// tool call whose block was closed cannot be placed.
				return dst, fmt.Errorf("%w: tool call %d resumed after another began", ir.ErrProtocol, k)
			}
			if d.toolBlocks == nil {
				d.toolBlocks = map[int64]bool{}
			}
			d.toolBlocks[k] = true
			dst = d.openBlock(dst, ir.Block{Type: ir.BlockToolUse, ID: tc.ID, Name: tc.Function.Name})
			d.openTool = k
		}
		if tc.Function.Arguments != "" {
			dst = append(dst, ir.Event{Kind: ir.EventBlockDelta, Index: d.open, Delta: ir.DeltaInputJSON, Text: tc.Function.Arguments})
		}
	}
	return dst, nil
}

// streamEncoder writes IR events as chat-completion chunks.
type streamEncoder struct {
	id, model   []byte // JSON strings
	created     int64
	clientUsage bool
	tools       map[int]int // block index -> tool call index
	usage       ir.Usage
	stop        ir.StopReason
}

// NewStreamEncoder returns an encoder of one stream for model, created at
// the given Unix time; clientUsage is whether the client asked for the
// usage chunk (stream_options.include_usage).
func NewStreamEncoder(model string, created int64, clientUsage bool) ir.StreamEncoder {
	return &streamEncoder{model: jsonx.AppendString(nil, model), created: created, clientUsage: clientUsage, id: []byte(`"chatcmpl-moat"`)}
}

// chunk appends one chunk whose choice has delta (a JSON object) and
// finish reason (empty: null).
func (e *streamEncoder) chunk(dst []byte, delta []byte, finish string) []byte {
	dst = append(dst, `data: {"id":`...)
	dst = append(dst, e.id...)
	dst = append(dst, `,"object":"chat.completion.chunk","created":`...)
	dst = strconv.AppendInt(dst, e.created, 10)
	dst = append(dst, `,"model":`...)
	dst = append(dst, e.model...)
	dst = append(dst, `,"choices":[{"index":0,"delta":`...)
	dst = append(dst, delta...)
	dst = append(dst, `,"finish_reason":`...)
	if finish == "" {
		dst = append(dst, "null"...)
	} else {
		dst = jsonx.AppendString(dst, finish)
	}
	return append(dst, "}]}\n\n"...)
}

func (e *streamEncoder) Encode(dst []byte, ev *ir.Event) []byte {
	var delta []byte
	switch ev.Kind {
	case ir.EventMessageStart:
		if ev.ID != "" {
			e.id = jsonx.AppendString(e.id[:0], completionID(ev.ID))
		}
		e.usage.Merge(ev.Usage)
		return e.chunk(dst, []byte(`{"role":"assistant","content":""}`), "")
	case ir.EventBlockStart:
		if ev.Block.Type != ir.BlockToolUse {
			return dst
		}
		if e.tools == nil {
			e.tools = map[int]int{}
		}
		k := len(e.tools)
		e.tools[ev.Index] = k
		delta = append(delta, `{"tool_calls":[{"index":`...)
		delta = strconv.AppendInt(delta, int64(k), 10)
		delta = append(delta, `,"id":`...)
		delta = jsonx.AppendString(delta, ev.Block.ID)
		delta = append(delta, `,"type":"function","function":{"name":`...)
		delta = jsonx.AppendString(delta, ev.Block.Name)
		delta = append(delta, `,"arguments":""}}]}`...)
	case ir.EventBlockDelta:
		switch ev.Delta {
		case ir.DeltaText:
			delta = append(jsonx.AppendString(append(delta, `{"content":`...), ev.Text), '}')
		case ir.DeltaThinking:
			delta = append(jsonx.AppendString(append(delta, `{"reasoning_content":`...), ev.Text), '}')
		case ir.DeltaInputJSON:
			k, ok := e.tools[ev.Index]
			if !ok {
				return dst
			}
			delta = append(delta, `{"tool_calls":[{"index":`...)
			delta = strconv.AppendInt(delta, int64(k), 10)
			delta = append(delta, `,"function":{"arguments":`...)
			delta = jsonx.AppendString(delta, ev.Text)
			delta = append(delta, "}}]}"...)
		default:
			return dst // signatures have no place in OpenAI's format
		}
		if len(ev.Text) == 0 {
			return dst
		}
	case ir.EventMessageDelta:
		e.usage.Merge(ev.Usage)
		e.stop = ev.StopReason
		return dst
	case ir.EventMessageStop:
		dst = e.chunk(dst, []byte("{}"), FinishReason(e.stop))
		if e.clientUsage {
			dst = append(dst, `data: {"id":`...)
			dst = append(dst, e.id...)
			dst = append(dst, `,"object":"chat.completion.chunk","created":`...)
			dst = strconv.AppendInt(dst, e.created, 10)
			dst = append(dst, `,"model":`...)
			dst = append(dst, e.model...)
			dst = append(dst, `,"choices":[],"usage":`...)
			dst = appendUsage(dst, e.usage)
			dst = append(dst, "}\n\n"...)
		}
		return sse.AppendEvent(dst, "", doneData)
	default:
		return dst
	}
	return e.chunk(dst, delta, "")
}
