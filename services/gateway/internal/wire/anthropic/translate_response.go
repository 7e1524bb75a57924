package anthropic

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/moat-ai/moat/services/gateway/internal/ir"
	"github.com/moat-ai/moat/services/gateway/internal/wire/jsonx"
)

var stopReasons = map[string]ir.StopReason{
	"end_turn":      ir.StopEnd,
	"max_tokens":    ir.StopMaxTokens,
	"stop_sequence": ir.StopSequence,
	"tool_use":      ir.StopToolUse,
	"refusal":       ir.StopRefusal,
	"pause_turn":    ir.StopPause,
	// The model ran out of context rather than of max_tokens: to a
	// client it is the same truncation.
	"model_context_window_exceeded": ir.StopMaxTokens,
}

var stopNames = [...]string{
	ir.StopEnd:       "end_turn",
	ir.StopMaxTokens: "max_tokens",
	ir.StopSequence:  "stop_sequence",
	ir.StopToolUse:   "tool_use",
	ir.StopRefusal:   "refusal",
	ir.StopPause:     "pause_turn",
}

// StopReasonOf maps Anthropic's stop_reason to the IR's; a reason it does
// not know is ir.StopUnknown.
func StopReasonOf(s string) ir.StopReason { return stopReasons[s] }

// StopReasonName is Anthropic's stop_reason for r, empty for
// ir.StopUnknown (encoded as null).
func StopReasonName(r ir.StopReason) string {
	if int(r) < len(stopNames) {
		return stopNames[r]
	}
	return ""
}

// responseWire is a whole message as Anthropic returns it. Members the
// IR does not carry (container, citations) are ignored: an answer has no
// policy for unknown members, only for what it must not lose, and every
// content block type the IR cannot carry is an error.
type responseWire struct {
	ID           string           `json:"id"`
	Type         string           `json:"type"`
	Role         string           `json:"role"`
	Model        string           `json:"model"`
	Content      []jsontext.Value `json:"content"`
	StopReason   string           `json:"stop_reason"`
	StopSequence string           `json:"stop_sequence"`
}

// DecodeResponse reads a whole Anthropic message into the IR. Its usage
// is read by ReadUsage, as on the native path, so both paths bill the
// same tokens. A body that is not a message, or holds a block type the
// IR cannot carry (a server tool's), is an error wrapping ir.ErrProtocol.
func DecodeResponse(body []byte) (*ir.Response, error) {
	var w responseWire
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, fmt.Errorf("anthropic message: %s: %w", jsonError("", err).Message, ir.ErrProtocol)
	}
	if w.Type != "message" {
		return nil, fmt.Errorf("anthropic message: type %q, want message: %w", short(w.Type), ir.ErrProtocol)
	}
	r := &ir.Response{
		ID:           w.ID,
		Model:        w.Model,
		StopReason:   StopReasonOf(w.StopReason),
		StopSequence: w.StopSequence,
		Usage:        ReadUsage(body),
		Content:      make([]ir.Block, 0, len(w.Content)),
	}
	var d *decoder // nil: nothing is listed as dropped
	for i, v := range w.Content {
		b, err := d.block(v, "content["+strconv.Itoa(i)+"]", inResponse)
		if err != nil {
			return nil, fmt.Errorf("anthropic message: %s: %w", err.Error(), ir.ErrProtocol)
		}
		r.Content = append(r.Content, b)
	}
	return r, nil
}

// EncodeResponse appends r as an Anthropic message for model (the name
// the client asked for) to dst. The id keeps a msg_ prefix, which
// Anthropic's SDKs show and some clients check; tool use ids are kept as
// given, since a later request refers to them. A tool input that is not
// a JSON object (an upstream model's broken arguments) is sent as {}:
// the message must stay valid JSON. Blocks an answer cannot hold (images,
// documents, tool results) are left out.
func EncodeResponse(dst []byte, r *ir.Response, model string) []byte {
	if model == "" {
		model = r.Model
	}
	b := append(dst, `{"id":`...)
	b = jsonx.AppendString(b, messageID(r.ID))
	b = append(b, `,"type":"message","role":"assistant","model":`...)
	b = jsonx.AppendString(b, model)
	b = append(b, `,"content":[`...)
	first := true
	for i := range r.Content {
		blk := &r.Content[i]
		if !answerBlock(blk.Type) {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = appendAnswerBlock(b, blk)
	}
	b = append(b, `],"stop_reason":`...)
	b = appendStopReason(b, r.StopReason)
	b = append(b, `,"stop_sequence":`...)
	b = appendOptString(b, r.StopSequence)
	b = append(b, `,"usage":`...)
	b = appendUsage(b, r.Usage)
	return append(b, '}')
}

func answerBlock(t ir.BlockType) bool {
	switch t {
	case ir.BlockText, ir.BlockToolUse, ir.BlockThinking, ir.BlockRedactedThinking:
		return true
	}
	return false
}

// appendAnswerBlock appends a whole block of an answer.
func appendAnswerBlock(b []byte, blk *ir.Block) []byte {
	switch blk.Type {
	case ir.BlockText:
		b = append(b, `{"type":"text","text":`...)
		b = jsonx.AppendString(b, blk.Text)
	case ir.BlockToolUse:
		b = append(b, `{"type":"tool_use","id":`...)
		b = jsonx.AppendString(b, blk.ID)
		b = append(b, `,"name":`...)
		b = jsonx.AppendString(b, blk.Name)
		b = append(b, `,"input":`...)
		if jsonx.IsObject(blk.Input) {
			b = append(b, blk.Input...)
		} else {
			b = append(b, "{}"...)
		}
	case ir.BlockThinking:
		b = append(b, `{"type":"thinking","thinking":`...)
		b = jsonx.AppendString(b, blk.Text)
		b = append(b, `,"signature":`...)
		b = jsonx.AppendString(b, blk.Signature)
	case ir.BlockRedactedThinking:
		b = append(b, `{"type":"redacted_thinking","data":`...)
		b = jsonx.AppendString(b, blk.Data)
	}
	return append(b, '}')
}

// messageID is the id an Anthropic client sees: r's own when it is
// Anthropic's, else prefixed.
func messageID(id string) string {
	if strings.HasPrefix(id, "msg_") {
		return id
	}
	return "msg_" + id
}

func appendStopReason(b []byte, r ir.StopReason) []byte {
	return appendOptString(b, StopReasonName(r))
}

// appendOptString appends s, or null when it is empty.
func appendOptString(b []byte, s string) []byte {
	if s == "" {
		return append(b, "null"...)
	}
	return jsonx.AppendString(b, s)
}

// appendUsage appends Anthropic's usage object, whose input_tokens
// exclude the cached kinds, as the IR's Input does.
func appendUsage(b []byte, u ir.Usage) []byte {
	b = append(b, `{"input_tokens":`...)
	b = jsonx.AppendInt(b, u.Input)
	b = append(b, `,"cache_creation_input_tokens":`...)
	b = jsonx.AppendInt(b, u.CacheWrite)
	b = append(b, `,"cache_read_input_tokens":`...)
	b = jsonx.AppendInt(b, u.CacheRead)
	b = append(b, `,"output_tokens":`...)
	b = jsonx.AppendInt(b, u.Output)
	return append(b, '}')
}
