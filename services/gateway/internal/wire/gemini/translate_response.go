package gemini

import (
	"strings"

	"github.com/go-json-experiment/json"

	"github.com/moat-ai/moat/services/gateway/internal/ir"
)

// DecodeResponse reads a generateContent answer into the IR: the first
// candidate's parts, its finishReason, and the usage (as ReadUsage reads
// it, so both paths bill the same tokens). ID and Model are responseId
// and modelVersion.
//
// Parts: consecutive text parts make one text block; consecutive thought
// parts one thinking block with the thoughtSignature that closes them; a
// functionCall a tool_use block whose ID is the part's id when it has one
// (Vertex and newer models send it), else call_<n>, n counting the
// answer's function calls from 0, so that the same answer always gets the
// same ids. A signature on any other part travels as a thinking block
// with no text just before that part's block (see EncodeRequest, which
// puts it back). Parts the gateway never asks for (inline images, code
// execution) and function calls whose args are not an object are an
// error wrapping ir.ErrProtocol, as is a body that is not an answer.
//
// Stop reasons: STOP is ir.StopEnd, or ir.StopToolUse when the answer
// calls a function; MAX_TOKENS is ir.StopMaxTokens; SAFETY, RECITATION,
// BLOCKLIST, PROHIBITED_CONTENT, SPII (and the IMAGE_ variants) are
// ir.StopRefusal, as is a prompt Gemini blocked (promptFeedback.blockReason
// without candidates), which has no content. An error body
// ({"error": {...}}) returns a *ir.ProviderError.
func DecodeResponse(body []byte) (*ir.Response, error) {
	var w responseWire
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, protocol("malformed generateContent answer")
	}
	if kind(w.Error) == '{' {
		e, _ := DecodeError(body) // found: the member is an object
		return nil, &e
	}
	r := &ir.Response{ID: w.ResponseID, Model: w.ModelVersion, Usage: ReadUsage(body)}
	if len(w.Candidates) == 0 {
		if w.PromptFeedback != nil && w.PromptFeedback.BlockReason != "" {
			r.StopReason = ir.StopRefusal
			return r, nil
		}
		return nil, protocol("answer without a candidate")
	}
	c := &w.Candidates[0]
	p := newPartReader()
	var (
		events  []ir.Event
		toolUse bool
	)
	if c.Content != nil {
		for k := range c.Content.Parts {
			part := &c.Content.Parts[k]
			var err error
			if events, err = p.part(events, part); err != nil {
				return nil, err
			}
			toolUse = toolUse || part.FunctionCall != nil
		}
	}
	r.Content = assemble(p.closeBlock(events))
	r.StopReason = stopReason(c.FinishReason, toolUse)
	return r, nil
}

// assemble folds block events into whole blocks.
func assemble(events []ir.Event) []ir.Block {
	var (
		blocks []ir.Block
		text   strings.Builder
		sig    strings.Builder
	)
	for i := range events {
		e := &events[i]
		switch e.Kind {
		case ir.EventBlockStart:
			blocks = append(blocks, e.Block)
			text.Reset()
			sig.Reset()
		case ir.EventBlockDelta:
			if e.Delta == ir.DeltaSignature {
				sig.WriteString(e.Text)
			} else {
				text.WriteString(e.Text)
			}
		case ir.EventBlockStop:
			b := &blocks[len(blocks)-1]
			switch b.Type {
			case ir.BlockToolUse:
				b.Input = ir.Raw(text.String())
			default:
				b.Text, b.Signature = text.String(), sig.String()
			}
		}
	}
	return blocks
}
