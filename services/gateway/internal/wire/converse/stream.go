package converse

import (
	"bytes"

	"github.com/go-json-experiment/json"

	"github.com/moat-ai/moat/services/gateway/internal/ir"
	"github.com/moat-ai/moat/services/gateway/internal/wire/jsonx"
)

// eventWire is the payload of any ConverseStream event: each event uses
// the members of its type. Bedrock's padding member p, and metrics, are
// ignored.
type eventWire struct {
	ContentBlockIndex *int64 `json:"contentBlockIndex"`
	Start             *struct {
		ToolUse *struct {
			ToolUseID string `json:"toolUseId"`
			Name      string `json:"name"`
		} `json:"toolUse"`
	} `json:"start"`
	Delta *struct {
		Text    *string `json:"text"`
		ToolUse *struct {
			Input string `json:"input"`
		} `json:"toolUse"`
		ReasoningContent *struct {
			Text            *string `json:"text"`
			Signature       *string `json:"signature"`
			RedactedContent *string `json:"redactedContent"`
		} `json:"reasoningContent"`
	} `json:"delta"`
	StopReason                    string                  `json:"stopReason"`
	AdditionalModelResponseFields *additionalResponseWire `json:"additionalModelResponseFields"`
}

// The ConverseStream event types.
const (
	evMessageStart      = "messageStart"
	evContentBlockStart = "contentBlockStart"
	evContentBlockDelta = "contentBlockDelta"
	evContentBlockStop  = "contentBlockStop"
	evMessageStop       = "messageStop"
	evMetadata          = "metadata"
)

var exceptionSuffix = []byte("Exception")

// streamDecoder reads ConverseStream's grammar: messageStart, then per
// block optional contentBlockStart (tool uses only: text and reasoning
// blocks begin with their first delta), deltas and contentBlockStop,
// then messageStop with the stop reason and metadata with the usage.
type streamDecoder struct {
	names                  *Names
	started, stopped, meta bool
	done                   bool
	open                   bool
	openType               ir.BlockType
	upIndex                int64 // the upstream index of the open block, or of the last one
	next                   int   // the IR index of the next block
	stopReason             ir.StopReason
	stopSequence           string
	usage                  ir.Usage
}

// NewStreamDecoder returns a decoder of one ConverseStream answer into IR
// events, fed the name and payload of each awsstream event (Decode(dst,
// ev.Name, ev.Data)); names is the request's tool-name map (nil: none
// renamed). Block indices are renumbered from 0 in order. A block's
// first delta opens it when no contentBlockStart did (Bedrock sends one
// for tool uses only), and a block still open when a later one begins is
// closed, since blocks never overlap in the IR; a delta for a block
// already closed, a tool use's input without its start, or a delta that
// does not fit its block breaks the grammar and is an error wrapping
// ir.ErrProtocol. Bedrock's end comes in two events, messageStop (the stop
// reason) then metadata (the usage): the decoder holds the stop reason
// and emits EventMessageDelta, with the usage, and EventMessageStop once
// both came; Done is true then. An exception event
// (throttlingException, serviceUnavailableException,
// modelStreamErrorException, internalServerException,
// validationException: any name ending in Exception) returns a
// *ir.ProviderError, see DecodeError. Events of other unknown names are
// ignored, as are unknown delta members (citations). The decoder is also
// an ir.StreamEnder (see End). It is for one stream and not safe for
// concurrent use.
func NewStreamDecoder(names *Names) ir.StreamDecoder {
	return &streamDecoder{names: names, upIndex: -1}
}

var _ ir.StreamEnder = (*streamDecoder)(nil)

func (d *streamDecoder) Done() bool { return d.done }

// End closes a stream that ended after messageStop without metadata: the
// answer is whole and only its usage is missing, so it ends with the
// usage not Found (the gateway estimates it). Before messageStop the
// answer is truncated, an error wrapping ir.ErrProtocol.
func (d *streamDecoder) End(dst []ir.Event) ([]ir.Event, error) {
	switch {
	case d.done:
		return dst, nil
	case !d.stopped:
		return dst, errorf("stream ended before messageStop")
	}
	return d.finish(dst), nil
}

func (d *streamDecoder) Decode(dst []ir.Event, name, data []byte) ([]ir.Event, error) {
	if d.done {
		return dst, nil // nothing counts after the end
	}
	ev := string(name)
	switch ev {
	case evMessageStart, evContentBlockStart, evContentBlockDelta, evContentBlockStop, evMessageStop, evMetadata:
	default:
		if bytes.HasSuffix(name, exceptionSuffix) {
			e, _ := DecodeError(data, ev)
			return dst, &e
		}
		return dst, nil
	}
	var w eventWire
	if err := json.Unmarshal(data, &w); err != nil {
		return dst, errorf("malformed %s event", ev)
	}
	if d.stopped && ev != evMetadata {
		return dst, errorf("%s after messageStop", ev)
	}
	switch ev {
	case evMessageStart:
		if d.started {
			return dst, errorf("second messageStart")
		}
		return d.start(dst), nil
	case evContentBlockStart:
		dst = d.start(dst)
		if w.ContentBlockIndex == nil || w.Start == nil || w.Start.ToolUse == nil {
			return dst, errorf("contentBlockStart without an index or a tool use")
		}
		i := *w.ContentBlockIndex
		if i <= d.upIndex {
			return dst, errorf("contentBlockStart for index %d after %d", i, d.upIndex)
		}
		t := w.Start.ToolUse
		if t.ToolUseID == "" || t.Name == "" {
			return dst, errorf("tool use without an id or a name")
		}
		return d.openBlock(dst, i, ir.Block{Type: ir.BlockToolUse, ID: t.ToolUseID, Name: d.names.Client(t.Name)}), nil
	case evContentBlockDelta:
		dst = d.start(dst)
		if w.ContentBlockIndex == nil || w.Delta == nil {
			return dst, errorf("contentBlockDelta without an index or a delta")
		}
		return d.delta(dst, *w.ContentBlockIndex, &w)
	case evContentBlockStop:
		dst = d.start(dst)
		if w.ContentBlockIndex == nil {
			return dst, errorf("contentBlockStop without an index")
		}
		switch i := *w.ContentBlockIndex; {
		case d.open && i == d.upIndex:
			return d.closeBlock(dst), nil
		case i > d.upIndex:
			// A block with neither start nor delta: nothing to show.
			dst = d.closeBlock(dst)
			d.upIndex = i
			return dst, nil
		default:
			return dst, errorf("contentBlockStop for index %d, which is not open", i)
		}
	case evMessageStop:
		dst = d.closeBlock(d.start(dst))
		d.stopped = true
		d.stopReason = StopReasonOf(w.StopReason)
		if a := w.AdditionalModelResponseFields; a != nil && len(a.StopSequence) > 0 && a.StopSequence[0] == '"' {
			d.stopSequence, _ = jsonx.Unquote(a.StopSequence)
		}
		if d.meta {
			return d.finish(dst), nil
		}
		return dst, nil
	default: // metadata
		d.meta = true
		if u := ReadUsage(data); u.Found {
			d.usage.Merge(u)
		}
		if d.stopped {
			return d.finish(dst), nil
		}
		return dst, nil
	}
}

// start emits the message start unless it was, which Bedrock's
// messageStart does (an event before it starts the message implicitly).
func (d *streamDecoder) start(dst []ir.Event) []ir.Event {
	if d.started {
		return dst
	}
	d.started = true
	return append(dst, ir.Event{Kind: ir.EventMessageStart})
}

// delta appends the events of a contentBlockDelta for upstream block i.
func (d *streamDecoder) delta(dst []ir.Event, i int64, w *eventWire) ([]ir.Event, error) {
	dl := w.Delta
	e := ir.Event{Kind: ir.EventBlockDelta}
	var want ir.BlockType
	var redacted *string
	switch rc := dl.ReasoningContent; {
	case dl.Text != nil:
		e.Delta, e.Text, want = ir.DeltaText, *dl.Text, ir.BlockText
	case dl.ToolUse != nil:
		e.Delta, e.Text, want = ir.DeltaInputJSON, dl.ToolUse.Input, ir.BlockToolUse
	case rc != nil && rc.Text != nil:
		e.Delta, e.Text, want = ir.DeltaThinking, *rc.Text, ir.BlockThinking
	case rc != nil && rc.Signature != nil:
		e.Delta, e.Text, want = ir.DeltaSignature, *rc.Signature, ir.BlockThinking
	case rc != nil && rc.RedactedContent != nil:
		redacted, want = rc.RedactedContent, ir.BlockRedactedThinking
	default:
		return dst, nil // a delta the IR does not carry (citations)
	}
	switch {
	case i == d.upIndex && d.open:
		if want != d.openType {
			return dst, errorf("a %s delta in a %s block", blockLabel(want), blockLabel(d.openType))
		}
		if redacted != nil {
			// Its whole content went with the block's start; a second
			// piece has no place in the IR.
			return dst, errorf("a second redacted reasoning delta in one block")
		}
	case i > d.upIndex:
		switch want {
		case ir.BlockToolUse:
			return dst, errorf("tool use input for block %d, which has no contentBlockStart", i)
		case ir.BlockRedactedThinking:
			return d.openBlock(dst, i, ir.Block{Type: ir.BlockRedactedThinking, Data: *redacted}), nil
		}
		dst = d.openBlock(dst, i, ir.Block{Type: want})
	default:
		return dst, errorf("a delta for block %d, which was closed", i)
	}
	e.Index = d.next
	return append(dst, e), nil
}

// openBlock closes the open block, if any, and opens upstream block i.
func (d *streamDecoder) openBlock(dst []ir.Event, i int64, b ir.Block) []ir.Event {
	dst = d.closeBlock(dst)
	d.open, d.openType, d.upIndex = true, b.Type, i
	return append(dst, ir.Event{Kind: ir.EventBlockStart, Index: d.next, Block: b})
}

// closeBlock closes the open block, if any.
func (d *streamDecoder) closeBlock(dst []ir.Event) []ir.Event {
	if !d.open {
		return dst
	}
	d.open = false
	d.next++
	return append(dst, ir.Event{Kind: ir.EventBlockStop, Index: d.next - 1})
}

// finish ends the message: the held stop reason and the usage, then the
// stop.
func (d *streamDecoder) finish(dst []ir.Event) []ir.Event {
	d.done = true
	return append(dst,
		ir.Event{Kind: ir.EventMessageDelta, StopReason: d.stopReason, StopSequence: d.stopSequence, Usage: d.usage},
		ir.Event{Kind: ir.EventMessageStop})
}

func blockLabel(t ir.BlockType) string {
	switch t {
	case ir.BlockText:
		return "text"
	case ir.BlockToolUse:
		return "tool use"
	case ir.BlockThinking:
		return "reasoning"
	case ir.BlockRedactedThinking:
		return "redacted reasoning"
	}
	return "other"
}
