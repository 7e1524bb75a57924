package gemini

// The client protocol validators of the anthropic and openaichat codecs'
// tests, copied because test helpers are not importable: every stream
// this codec decodes is re-encoded for both client APIs and must pass
// them.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/moat-ai/moat/services/gateway/internal/wire/anthropic"
	"github.com/moat-ai/moat/services/gateway/internal/wire/sse"
)

// validation says how strictly validateStream checks a stream.
type validation struct {
	// Complete requires the stream to reach message_stop (or a terminal
	// error event).
	Complete bool
	// ToolJSON requires a tool use's partial_json, joined, to be valid
	// JSON: true for streams we wrote, false where the upstream's model
	// may have broken its arguments (fuzzing).
	ToolJSON bool
}

// validateAnthropic checks b against the grammar Anthropic's SDKs read:
// every event named and its data a one-line JSON object of that type;
// message_start first, with the message object the SDK accumulates into;
// then blocks, each content_block_start, deltas of its type and
// content_block_stop, one open at a time, indices from 0 without gaps;
// then exactly one message_delta and message_stop last. ping may come
// anywhere; an error event ends the stream.
func validateAnthropic(b []byte, v validation) error {
	rd := sse.NewReader(bufio.NewReader(bytes.NewReader(b)), 1<<24)
	var (
		n                int
		started, delta   bool
		ended            string // message_stop or error once the stream ended
		open             bool
		openType         string
		index            = -1
		partial          strings.Builder
		seenBlockContent bool
	)
	for ; ; n++ {
		ev, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("event %d: %w", n, err)
		}
		at := func(format string, args ...any) error {
			return fmt.Errorf("event %d (%s): %s", n, ev.Name, fmt.Sprintf(format, args...))
		}
		if ended != "" {
			return at("event after %s", ended)
		}
		if len(ev.Name) == 0 || ev.Data == nil {
			return at("an event needs a name and data: %q", ev.Raw)
		}
		if bytes.IndexByte(ev.Data, '\n') >= 0 {
			return at("data spans several lines")
		}
		var d map[string]any
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			return at("data is not a JSON object: %v", err)
		}
		name := string(ev.Name)
		if d["type"] != name {
			return at("data type %v differs from the event name", d["type"])
		}
		if name != "message_start" && name != "ping" && name != "error" && !started {
			return at("before message_start")
		}
		switch name {
		case "ping":
		case "error":
			e, _ := d["error"].(map[string]any)
			if _, ok := e["type"].(string); !ok {
				return at("error without error.type")
			}
			ended = name
		case "message_start":
			if started {
				return at("second message_start")
			}
			started = true
			if err := checkMessage(d["message"]); err != nil {
				return at("%v", err)
			}
		case "content_block_start":
			switch {
			case delta:
				return at("block after message_delta")
			case open:
				return at("block %d still open", index)
			case d["index"] != float64(index+1):
				return at("index %v, want %d", d["index"], index+1)
			}
			index++
			open, seenBlockContent = true, false
			partial.Reset()
			var err error
			if openType, err = checkStartBlock(d["content_block"]); err != nil {
				return at("%v", err)
			}
		case "content_block_delta":
			if !open || d["index"] != float64(index) {
				return at("delta for index %v, open block %d (open %v)", d["index"], index, open)
			}
			dl, _ := d["delta"].(map[string]any)
			field, ok := deltaFields[deltaKey{openType, fmt.Sprint(dl["type"])}]
			if !ok {
				return at("delta %v in a %s block", dl["type"], openType)
			}
			s, ok := dl[field].(string)
			if !ok {
				return at("delta %v without a string %s", dl["type"], field)
			}
			if field == "partial_json" {
				partial.WriteString(s)
			}
			seenBlockContent = true
		case "content_block_stop":
			if !open || d["index"] != float64(index) {
				return at("stop for index %v, open block %d (open %v)", d["index"], index, open)
			}
			open = false
			if openType == "tool_use" && v.ToolJSON && seenBlockContent && partial.Len() > 0 && !json.Valid([]byte(partial.String())) {
				return at("tool input %q is not valid JSON", partial.String())
			}
		case "message_delta":
			if open || delta {
				return at("message_delta with a block open (%v) or twice (%v)", open, delta)
			}
			delta = true
			dl, _ := d["delta"].(map[string]any)
			if r, ok := dl["stop_reason"]; !ok || (r != nil && anthropic.StopReasonOf(fmt.Sprint(r)) == 0) {
				return at("stop_reason %v", dl["stop_reason"])
			}
			if sq, ok := dl["stop_sequence"]; !ok || (sq != nil && fmt.Sprintf("%T", sq) != "string") {
				return at("stop_sequence %v", dl["stop_sequence"])
			}
			if err := checkUsage(d["usage"]); err != nil {
				return at("%v", err)
			}
		case "message_stop":
			if !delta {
				return at("message_stop without message_delta")
			}
			ended = name
		default:
			return at("unknown event")
		}
	}
	if v.Complete && ended == "" {
		return fmt.Errorf("stream of %d events ends without message_stop", n)
	}
	return nil
}

type deltaKey struct{ block, delta string }

// deltaFields names the string member each delta type carries, for the
// block types it may appear in.
var deltaFields = map[deltaKey]string{
	{"text", "text_delta"}:           "text",
	{"tool_use", "input_json_delta"}: "partial_json",
	{"thinking", "thinking_delta"}:   "thinking",
	{"thinking", "signature_delta"}:  "signature",
}

func checkMessage(x any) error {
	m, ok := x.(map[string]any)
	if !ok {
		return errors.New("message_start without a message")
	}
	id, _ := m["id"].(string)
	model, _ := m["model"].(string)
	content, isList := m["content"].([]any)
	switch {
	case !strings.HasPrefix(id, "msg_"):
		return fmt.Errorf("message id %q", id)
	case m["type"] != "message" || m["role"] != "assistant":
		return fmt.Errorf("message type %v role %v", m["type"], m["role"])
	case model == "":
		return errors.New("message without a model")
	case !isList || len(content) != 0:
		return fmt.Errorf("message content %v, want []", m["content"])
	case m["stop_reason"] != nil || m["stop_sequence"] != nil:
		return errors.New("message_start with a stop reason")
	}
	if _, ok := m["stop_reason"]; !ok {
		return errors.New("message without stop_reason")
	}
	if _, ok := m["stop_sequence"]; !ok {
		return errors.New("message without stop_sequence")
	}
	return checkUsage(m["usage"])
}

func checkUsage(x any) error {
	u, ok := x.(map[string]any)
	if !ok {
		return errors.New("no usage object")
	}
	for _, k := range []string{"input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens"} {
		if n, ok := u[k].(float64); !ok || n < 0 || n != float64(int64(n)) {
			return fmt.Errorf("usage.%s = %v", k, u[k])
		}
	}
	return nil
}

// checkStartBlock checks the empty block of a content_block_start and
// returns its type.
func checkStartBlock(x any) (string, error) {
	b, ok := x.(map[string]any)
	if !ok {
		return "", errors.New("content_block_start without a block")
	}
	typ, _ := b["type"].(string)
	switch typ {
	case "text":
		if b["text"] != "" || len(b) != 2 {
			return typ, fmt.Errorf("text block start %v, want empty text", b)
		}
	case "thinking":
		if b["thinking"] != "" || b["signature"] != "" || len(b) != 3 {
			return typ, fmt.Errorf("thinking block start %v, want empty thinking and signature", b)
		}
	case "tool_use":
		id, _ := b["id"].(string)
		name, _ := b["name"].(string)
		in, isObj := b["input"].(map[string]any)
		if id == "" || name == "" || !isObj || len(in) != 0 || len(b) != 4 {
			return typ, fmt.Errorf("tool_use block start %v, want id, name and input {}", b)
		}
	case "redacted_thinking":
		if _, ok := b["data"].(string); !ok || len(b) != 2 {
			return typ, fmt.Errorf("redacted_thinking block start %v, want data", b)
		}
	default:
		return typ, fmt.Errorf("block type %q", typ)
	}
	return typ, nil
}

// validateOpenAI checks the OpenAI chat stream grammar: the role first,
// tool call indices contiguous from 0, one finish_reason, the usage chunk
// (when asked) after it, and [DONE] last.
func validateOpenAI(b []byte, wantUsage bool) error {
	rd := sse.NewReader(bufio.NewReader(bytes.NewReader(b)), 1<<20)
	var (
		n, finishes, nextTool int
		usageSeen, done       bool
	)
	for {
		ev, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if done {
			return errors.New("event after [DONE]")
		}
		if string(ev.Data) == "[DONE]" {
			done = true
			continue
		}
		var ch struct {
			Object  string `json:"object"`
			Choices []struct {
				Delta struct {
					Role      string `json:"role"`
					ToolCalls []struct {
						Index int    `json:"index"`
						ID    string `json:"id"`
					} `json:"tool_calls"`
				} `json:"delta"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
			Usage *json.RawMessage `json:"usage"`
		}
		if err := json.Unmarshal(ev.Data, &ch); err != nil {
			return fmt.Errorf("chunk %d: %w", n, err)
		}
		if ch.Object != "chat.completion.chunk" {
			return fmt.Errorf("chunk %d: object %q", n, ch.Object)
		}
		if usageSeen {
			return errors.New("a chunk after the usage chunk")
		}
		if ch.Usage != nil {
			if len(ch.Choices) != 0 || finishes != 1 {
				return errors.New("the usage chunk must have empty choices and follow the finish reason")
			}
			usageSeen = true
		}
		for _, c := range ch.Choices {
			if n == 0 && c.Delta.Role != "assistant" {
				return errors.New("the first chunk does not carry the role")
			}
			if finishes > 0 {
				return errors.New("a choice after the finish reason")
			}
			for _, tc := range c.Delta.ToolCalls {
				switch {
				case tc.ID != "" && tc.Index == nextTool:
					nextTool++
				case tc.ID != "":
					return fmt.Errorf("tool call index %d starts out of order (next %d)", tc.Index, nextTool)
				case tc.Index != nextTool-1:
					return fmt.Errorf("arguments for tool call %d while %d is open", tc.Index, nextTool-1)
				}
			}
			if c.FinishReason != nil {
				finishes++
			}
		}
		n++
	}
	switch {
	case !done:
		return errors.New("no [DONE]")
	case finishes != 1:
		return fmt.Errorf("%d finish reasons, want 1", finishes)
	case usageSeen != wantUsage:
		return fmt.Errorf("usage chunk present = %v, want %v", usageSeen, wantUsage)
	}
	return nil
}
