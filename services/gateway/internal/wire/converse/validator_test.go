package converse

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

// The client-side protocol validators. They restate, for the streams this
// package's output becomes, the grammars the anthropic and openaichat
// packages' own tests check (test code cannot be imported across
// packages).

// validateAnthropic checks b against the grammar Anthropic's SDKs read:
// every event named and its data a one-line JSON object of that type;
// message_start first; blocks each content_block_start, deltas of its
// type and content_block_stop, one open at a time, indices from 0
// without gaps; then one message_delta and message_stop last. A tool
// use's partial JSON, joined, must be a JSON object when toolJSON is set.
func validateAnthropic(b []byte, toolJSON bool) error {
	rd := sse.NewReader(bufio.NewReader(bytes.NewReader(b)), 1<<24)
	var (
		started, delta, stopped, open bool
		openType                      string
		index                         = -1
		partial                       strings.Builder
	)
	for n := 0; ; n++ {
		ev, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		at := func(format string, args ...any) error {
			return fmt.Errorf("event %d (%s): %s", n, ev.Name, fmt.Sprintf(format, args...))
		}
		if stopped {
			return at("event after message_stop")
		}
		if len(ev.Name) == 0 || ev.Data == nil || bytes.IndexByte(ev.Data, '\n') >= 0 {
			return at("an event needs a name and one line of data: %q", ev.Raw)
		}
		var d map[string]any
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			return at("data is not a JSON object: %v", err)
		}
		name := string(ev.Name)
		if d["type"] != name {
			return at("data type %v differs from the event name", d["type"])
		}
		if name != "message_start" && !started {
			return at("before message_start")
		}
		switch name {
		case "message_start":
			if started {
				return at("second message_start")
			}
			started = true
			m, _ := d["message"].(map[string]any)
			if id, _ := m["id"].(string); !strings.HasPrefix(id, "msg_") || m["role"] != "assistant" || m["model"] == "" {
				return at("message %v", m)
			}
		case "content_block_start":
			if delta || open || d["index"] != float64(index+1) {
				return at("block start at index %v (open %v, after message_delta %v)", d["index"], open, delta)
			}
			index++
			open = true
			partial.Reset()
			cb, _ := d["content_block"].(map[string]any)
			openType, _ = cb["type"].(string)
			switch openType {
			case "text", "thinking", "redacted_thinking":
			case "tool_use":
				if cb["id"] == "" || cb["name"] == "" {
					return at("tool use without id or name")
				}
			default:
				return at("block type %q", openType)
			}
		case "content_block_delta":
			if !open || d["index"] != float64(index) {
				return at("delta for index %v, open block %d (open %v)", d["index"], index, open)
			}
			dl, _ := d["delta"].(map[string]any)
			field, ok := map[string]string{
				"text/text_delta":           "text",
				"tool_use/input_json_delta": "partial_json",
				"thinking/thinking_delta":   "thinking",
				"thinking/signature_delta":  "signature",
			}[openType+"/"+fmt.Sprint(dl["type"])]
			if !ok {
				return at("delta %v in a %s block", dl["type"], openType)
			}
			s, ok := dl[field].(string)
			if !ok {
				return at("delta without a string %s", field)
			}
			partial.WriteString(s)
		case "content_block_stop":
			if !open || d["index"] != float64(index) {
				return at("stop for index %v, open block %d (open %v)", d["index"], index, open)
			}
			open = false
			if openType == "tool_use" && toolJSON && partial.Len() > 0 && !json.Valid([]byte(partial.String())) {
				return at("tool input %q is not JSON", partial.String())
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
			u, _ := d["usage"].(map[string]any)
			for _, k := range []string{"input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens"} {
				if v, ok := u[k].(float64); !ok || v < 0 {
					return at("usage.%s = %v", k, u[k])
				}
			}
		case "message_stop":
			if !delta {
				return at("message_stop without message_delta")
			}
			stopped = true
		default:
			return at("unknown event")
		}
	}
	if !stopped {
		return errors.New("the stream ends without message_stop")
	}
	return nil
}

// validateOpenAI checks the OpenAI chat stream grammar: the role first,
// tool call indices contiguous from 0, one finish_reason, the usage chunk
// after it, and [DONE] last.
func validateOpenAI(b []byte) error {
	rd := sse.NewReader(bufio.NewReader(bytes.NewReader(b)), 1<<24)
	var (
		n, finishes, nextTool int
		usageSeen, done       bool
	)
	for ; ; n++ {
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
	}
	switch {
	case !done:
		return errors.New("no [DONE]")
	case finishes != 1:
		return fmt.Errorf("%d finish reasons, want 1", finishes)
	case !usageSeen:
		return errors.New("no usage chunk")
	}
	return nil
}
