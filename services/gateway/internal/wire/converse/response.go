package converse

import (
	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/moat-ai/moat/services/gateway/internal/ir"
	"github.com/moat-ai/moat/services/gateway/internal/wire/jsonx"
)

// responseWire is a Converse answer. Members the IR does not carry
// (metrics, trace, performanceConfig) are ignored.
type responseWire struct {
	Output struct {
		Message *struct {
			Role    string      `json:"role"`
			Content []blockWire `json:"content"`
		} `json:"message"`
	} `json:"output"`
	StopReason                    string                  `json:"stopReason"`
	AdditionalModelResponseFields *additionalResponseWire `json:"additionalModelResponseFields"`
}

// additionalResponseWire is what Claude adds to an answer beside
// Converse's members: the stop sequence that ended it.
type additionalResponseWire struct {
	StopSequence jsontext.Value `json:"stop_sequence"`
}

// DecodeResponse reads a Converse answer into the IR, giving tool uses
// the client's tool names back through names (which may be nil). Its
// usage is read by ReadUsage. The answer has no id or model (the model is
// the request's path, the id Bedrock's X-Amzn-RequestId header): the
// caller sets them. A body that is not a Converse answer, or holds a
// block the IR cannot carry, is an error wrapping ir.ErrProtocol.
func DecodeResponse(body []byte, names *Names) (*ir.Response, error) {
	var w responseWire
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, errorf("answer: %v", err)
	}
	m := w.Output.Message
	if m == nil {
		return nil, errorf("answer without output.message")
	}
	r := &ir.Response{
		StopReason: StopReasonOf(w.StopReason),
		Usage:      ReadUsage(body),
		Content:    make([]ir.Block, 0, len(m.Content)),
	}
	if a := w.AdditionalModelResponseFields; a != nil && len(a.StopSequence) > 0 && a.StopSequence[0] == '"' {
		r.StopSequence, _ = jsonx.Unquote(a.StopSequence)
	}
	for i := range m.Content {
		b, err := answerBlock(&m.Content[i], names)
		if err != nil {
			return nil, errorf("output.message.content[%d]: %v", i, err)
		}
		r.Content = append(r.Content, b)
	}
	return r, nil
}

// blockError is a content block the IR cannot carry.
type blockError string

func (e blockError) Error() string { return string(e) }

// answerBlock is the IR form of one block of an answer.
func answerBlock(w *blockWire, names *Names) (ir.Block, error) {
	switch {
	case len(w.Unknown) > 0:
		return ir.Block{}, blockError("a block of a type the gateway cannot translate")
	case w.Text != nil:
		return ir.Block{Type: ir.BlockText, Text: *w.Text}, nil
	case w.ToolUse != nil:
		input := ir.Raw(w.ToolUse.Input)
		if len(input) == 0 || jsonx.IsNull(input) {
			input = ir.Raw("{}")
		}
		return ir.Block{Type: ir.BlockToolUse, ID: w.ToolUse.ToolUseID, Name: names.Client(w.ToolUse.Name), Input: input}, nil
	case w.ReasoningContent != nil && w.ReasoningContent.ReasoningText != nil:
		t := w.ReasoningContent.ReasoningText
		return ir.Block{Type: ir.BlockThinking, Text: t.Text, Signature: t.Signature}, nil
	case w.ReasoningContent != nil && w.ReasoningContent.RedactedContent != "":
		return ir.Block{Type: ir.BlockRedactedThinking, Data: w.ReasoningContent.RedactedContent}, nil
	}
	return ir.Block{}, blockError("a block an answer cannot hold, or an empty one")
}
