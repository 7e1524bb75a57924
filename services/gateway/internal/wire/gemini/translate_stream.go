package gemini

import (
	"fmt"
	"strconv"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/moat-ai/moat/services/gateway/internal/ir"
	"github.com/moat-ai/moat/services/gateway/internal/wire"
)

// responseWire is a GenerateContentResponse: a whole answer, or one
// chunk of a stream, which has the same shape. A chunk may instead be an
// error object.
type responseWire struct {
	Candidates     []candidateWire `json:"candidates"`
	PromptFeedback *struct {
		BlockReason string `json:"blockReason"`
	} `json:"promptFeedback"`
	UsageMetadata *usageWire     `json:"usageMetadata"`
	ModelVersion  string         `json:"modelVersion"`
	ResponseID    string         `json:"responseId"`
	Error         jsontext.Value `json:"error"`
}

type candidateWire struct {
	Content      *contentWire `json:"content"`
	FinishReason string       `json:"finishReason"`
	Index        int64        `json:"index"`
}

func protocol(format string, args ...any) error {
	return fmt.Errorf("gemini: "+format+": %w", append(args, ir.ErrProtocol)...)
}

// partReader turns a candidate's parts into IR block events. Gemini's
// parts carry no block structure: consecutive text parts (across chunks
// too) make one text block, consecutive thought parts one thinking block
// that a signature closes, and each functionCall, always whole, a
// tool_use block of its own.
//
// A thoughtSignature on a part that is not a thought (Gemini puts them on
// function calls, and on a last, often empty, text part) has no place in
// the IR's tool_use or text blocks; it travels as a thinking block with
// no text and that signature, right before the part's own block, which
// EncodeRequest turns back into the signature of the part that follows.
// Client APIs with thinking blocks (Anthropic's) thus return it; the
// others lose it, and EncodeRequest makes up for it (SkipSignature).
type partReader struct {
	open     int // the IR index of the open block, -1 when none
	openType ir.BlockType
	sealed   bool // the open thinking block has its signature
	next     int  // the IR index of the next block
	calls    int  // function calls so far, for synthesized ids
}

func newPartReader() partReader { return partReader{open: -1} }

func (p *partReader) closeBlock(dst []ir.Event) []ir.Event {
	if p.open < 0 {
		return dst
	}
	dst = append(dst, ir.Event{Kind: ir.EventBlockStop, Index: p.open})
	p.open = -1
	return dst
}

func (p *partReader) openBlock(dst []ir.Event, b ir.Block) []ir.Event {
	dst = p.closeBlock(dst)
	p.open, p.openType, p.sealed = p.next, b.Type, false
	p.next++
	return append(dst, ir.Event{Kind: ir.EventBlockStart, Index: p.open, Block: b})
}

func (p *partReader) delta(dst []ir.Event, t ir.DeltaType, s string) []ir.Event {
	return append(dst, ir.Event{Kind: ir.EventBlockDelta, Index: p.open, Delta: t, Text: s})
}

// signature appends a thinking block holding only sig.
func (p *partReader) signature(dst []ir.Event, sig string) []ir.Event {
	dst = p.openBlock(dst, ir.Block{Type: ir.BlockThinking})
	dst = p.delta(dst, ir.DeltaSignature, sig)
	return p.closeBlock(dst)
}

// part appends the events of one part.
func (p *partReader) part(dst []ir.Event, w *partWire) ([]ir.Event, error) {
	text := ""
	if w.Text != nil {
		text = *w.Text
	}
	sig := w.ThoughtSignature
	switch {
	case w.Thought:
		if p.open < 0 || p.openType != ir.BlockThinking || p.sealed {
			dst = p.openBlock(dst, ir.Block{Type: ir.BlockThinking})
		}
		if text != "" {
			dst = p.delta(dst, ir.DeltaThinking, text)
		}
		if sig != "" {
			dst = p.delta(dst, ir.DeltaSignature, sig)
			p.sealed = true
		}
	case w.FunctionCall != nil:
		fc := w.FunctionCall
		if fc.Name == "" {
			return dst, protocol("functionCall without a name")
		}
		args := fc.Args
		switch {
		case len(args) == 0 || kind(args) == 'n':
			args = jsontext.Value("{}")
		case kind(args) != '{':
			return dst, protocol("functionCall %s with args that are not an object", strconv.Quote(wire.Bound(fc.Name)))
		default:
			// Answers come indented; the IR's inputs are compact. The
			// value was validated by the decode, so this cannot fail.
			_ = args.Compact()
		}
		if sig != "" {
			dst = p.signature(dst, sig)
		}
		id := fc.ID
		if id == "" {
			id = "call_" + strconv.Itoa(p.calls)
		}
		p.calls++
		dst = p.openBlock(dst, ir.Block{Type: ir.BlockToolUse, ID: id, Name: fc.Name})
		dst = p.delta(dst, ir.DeltaInputJSON, string(args))
		dst = p.closeBlock(dst)
	case w.InlineData != nil, w.FileData != nil, w.FunctionResponse != nil, len(w.ExecutableCode) > 0, len(w.CodeExecutionResult) > 0:
		// Output the gateway never asks for (images, code execution):
		// the IR's answer cannot carry it, and dropping it would hand
		// the client half an answer.
		return dst, protocol("a part of a kind the IR cannot carry (%s)", partKind(w))
	default: // a text part, or a part with only a signature
		if sig != "" {
			dst = p.signature(dst, sig)
		}
		if text != "" {
			if p.open < 0 || p.openType != ir.BlockText {
				dst = p.openBlock(dst, ir.Block{Type: ir.BlockText})
			}
			dst = p.delta(dst, ir.DeltaText, text)
		}
	}
	return dst, nil
}

func partKind(w *partWire) string {
	switch {
	case w.InlineData != nil:
		return "inlineData"
	case w.FileData != nil:
		return "fileData"
	case w.FunctionResponse != nil:
		return "functionResponse"
	case len(w.ExecutableCode) > 0:
		return "executableCode"
	}
	return "codeExecutionResult"
}

// kind is the first byte of a JSON value past any whitespace, 0 when
// empty.
func kind(v []byte) byte {
	v = trimSpace(v)
	if len(v) == 0 {
		return 0
	}
	return v[0]
}

// streamDecoder reads the SSE stream of streamGenerateContent?alt=sse.
type streamDecoder struct {
	started, done bool
	parts         partReader
	finish        string
	finished      bool
	refused       bool // the prompt was blocked
	toolUse       bool
	usage         ir.Usage
}

// NewStreamDecoder returns a decoder of one streamGenerateContent?alt=sse
// stream into IR events. Every event's data is a GenerateContentResponse
// of the first candidate's next parts: text parts become text deltas of
// one text block, thought parts thinking deltas then a signature delta,
// each functionCall (which Gemini always sends whole) a tool_use block
// with one input_json delta holding all its arguments; see DecodeResponse
// for ids, signatures on other parts, and stop reasons. Usage is merged
// by maximum across chunks (some deployments repeat a growing count on
// every chunk, others send it only with the last), never added. The
// first chunk makes EventMessageStart.
//
// Gemini ends a stream with no marker of its own (no [DONE]): Done stays
// false, and the decoder is an ir.StreamEnder whose End closes the
// stream (EventMessageDelta with the stop reason and usage, then
// EventMessageStop) once a chunk gave a finishReason, or reports a
// truncated stream, an error wrapping ir.ErrProtocol, when none did. An
// error chunk ({"error": {...}}) returns a *ir.ProviderError; a chunk
// that is not a GenerateContentResponse, an error wrapping
// ir.ErrProtocol. Candidates other than the first are ignored.
func NewStreamDecoder() ir.StreamDecoder { return &streamDecoder{parts: newPartReader()} }

var _ ir.StreamEnder = (*streamDecoder)(nil)

func (d *streamDecoder) Done() bool { return d.done }

// End closes the stream at the upstream's end (see NewStreamDecoder).
func (d *streamDecoder) End(dst []ir.Event) ([]ir.Event, error) {
	switch {
	case d.done:
		return dst, nil
	case !d.finished:
		return dst, protocol("stream ended before a finishReason")
	}
	dst = d.parts.closeBlock(dst)
	d.done = true
	stop := stopReason(d.finish, d.toolUse)
	if d.refused {
		stop = ir.StopRefusal
	}
	return append(dst, ir.Event{Kind: ir.EventMessageDelta, StopReason: stop, Usage: d.usage}, ir.Event{Kind: ir.EventMessageStop}), nil
}

func (d *streamDecoder) Decode(dst []ir.Event, _, data []byte) ([]ir.Event, error) {
	data = trimSpace(data)
	if len(data) == 0 || d.done {
		return dst, nil // a comment or keep-alive; nothing counts after the end
	}
	var w responseWire
	if err := json.Unmarshal(data, &w); err != nil {
		return dst, protocol("malformed chunk")
	}
	if kind(w.Error) == '{' {
		e, _ := DecodeError(data) // found: the member is an object
		return dst, &e
	}
	if w.UsageMetadata != nil {
		d.usage.Merge(w.UsageMetadata.usage())
	}
	if !d.started {
		d.started = true
		dst = append(dst, ir.Event{Kind: ir.EventMessageStart, ID: w.ResponseID, Model: w.ModelVersion, Usage: d.usage})
	}
	if len(w.Candidates) == 0 && w.PromptFeedback != nil && w.PromptFeedback.BlockReason != "" {
		d.finished, d.refused = true, true
		return dst, nil
	}
	for i := range w.Candidates {
		c := &w.Candidates[i]
		if c.Index != 0 {
			continue
		}
		if c.Content != nil {
			for k := range c.Content.Parts {
				p := &c.Content.Parts[k]
				var err error
				if dst, err = d.parts.part(dst, p); err != nil {
					return dst, err
				}
				d.toolUse = d.toolUse || p.FunctionCall != nil
			}
		}
		if c.FinishReason != "" {
			d.finish, d.finished = c.FinishReason, true
		}
	}
	return dst, nil
}
