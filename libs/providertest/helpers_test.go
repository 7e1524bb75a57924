package providertest_test

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"
)

// pinned is the clock of tests that compare whole bodies.
func pinned() time.Time { return time.Unix(1700000000, 0) }

// post sends a POST and fails the test unless the status is want; the
// caller closes the body.
func post(t *testing.T, url, body string, header map[string]string, want int) *http.Response {
	t.Helper()
	resp := do(t, t.Context(), http.MethodPost, url, body, header)
	if resp.StatusCode != want {
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		t.Fatalf("POST %s = %d %s, want %d", url, resp.StatusCode, b, want)
	}
	return resp
}

// postJSON posts and decodes the JSON answer.
func postJSON(t *testing.T, url, body string, header map[string]string, want int) (map[string]any, http.Header) {
	t.Helper()
	resp := post(t, url, body, header, want)
	defer resp.Body.Close()
	return decode(t, resp.Body), resp.Header
}

func obj(t *testing.T, s string) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("not a JSON object: %q: %v", s, err)
	}
	return v
}

// sseEvent is one server-sent event: its `event:` name, if any, and its
// data decoded (nil for [DONE]).
type sseEvent struct {
	name string
	raw  string
	data map[string]any
}

// readSSE parses a whole event stream, with LF or CRLF line ends.
func readSSE(t *testing.T, r io.Reader) []sseEvent {
	t.Helper()
	var out []sseEvent
	var cur sseEvent
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text() // the scanner drops a \r before the \n
		switch {
		case line == "":
			if cur.raw == "" {
				t.Fatalf("event without data (name %q)", cur.name)
			}
			if cur.raw != "[DONE]" {
				cur.data = obj(t, cur.raw)
			}
			out = append(out, cur)
			cur = sseEvent{}
		case strings.HasPrefix(line, "event: "):
			cur.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			if cur.raw != "" {
				t.Fatalf("two data lines in one event: %q", line)
			}
			cur.raw = strings.TrimPrefix(line, "data: ")
		default:
			t.Fatalf("not an SSE line: %q", line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read stream: %v", err)
	}
	if cur.raw != "" || cur.name != "" {
		t.Fatalf("stream ends inside an event: %+v", cur)
	}
	return out
}

// awsMessage is one eventstream message.
type awsMessage struct {
	headers map[string]string
	payload map[string]any
}

// readAWS decodes a whole eventstream; the decoder checks both CRCs.
func readAWS(t *testing.T, r io.Reader) []awsMessage {
	t.Helper()
	dec := eventstream.NewDecoder()
	var out []awsMessage
	for {
		m, err := dec.Decode(r, nil)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("decode eventstream message %d: %v", len(out), err)
		}
		h := map[string]string{}
		for _, hd := range m.Headers {
			h[hd.Name] = hd.Value.String()
		}
		var p map[string]any
		if err := json.Unmarshal(m.Payload, &p); err != nil {
			t.Fatalf("eventstream payload %q: %v", m.Payload, err)
		}
		out = append(out, awsMessage{headers: h, payload: p})
	}
}

// bedrockChunks turns InvokeModelWithResponseStream messages into the
// Anthropic events they carry; an exception becomes an "exception" event.
func bedrockChunks(t *testing.T, msgs []awsMessage) []sseEvent {
	t.Helper()
	var out []sseEvent
	for _, m := range msgs {
		if m.headers[":message-type"] == "exception" {
			out = append(out, sseEvent{name: "exception:" + m.headers[":exception-type"], data: m.payload})
			continue
		}
		if m.headers[":event-type"] != "chunk" || m.payload["p"] == nil {
			t.Fatalf("message %v: want a chunk event with padding", m)
		}
		raw, err := base64.StdEncoding.DecodeString(m.payload["bytes"].(string))
		if err != nil {
			t.Fatalf("chunk bytes: %v", err)
		}
		ev := sseEvent{raw: string(raw), data: obj(t, string(raw))}
		ev.name, _ = ev.data["type"].(string)
		out = append(out, ev)
	}
	return out
}

// anthropicResult is an Anthropic stream put back together.
type anthropicResult struct {
	start      map[string]any   // message_start's message
	blocks     []map[string]any // each block with its deltas applied
	stopReason any
	output     any // message_delta usage.output_tokens
	stop       map[string]any
	failed     map[string]any // the error that ended the stream, if one did
	content    int            // content events (text, thinking, tool names, argument pieces)
}

// checkAnthropic validates the Messages event grammar (message_start
// first, blocks with indices from 0 opened, filled with deltas of their
// type and closed in turn, message_delta, message_stop last, or an error
// as the last event) and returns the reassembled stream.
func checkAnthropic(t *testing.T, events []sseEvent) anthropicResult {
	t.Helper()
	var res anthropicResult
	state := "start"
	var open map[string]any
	for i, e := range events {
		typ, _ := e.data["type"].(string)
		if e.name != typ && !strings.HasPrefix(e.name, "exception:") {
			t.Fatalf("event %d: name %q, data type %q", i, e.name, typ)
		}
		if typ == "error" || strings.HasPrefix(e.name, "exception:") {
			if i != len(events)-1 {
				t.Fatalf("event %d: error before the end of the stream", i)
			}
			res.failed = e.data
			return res
		}
		switch {
		case state == "start" && typ == "message_start":
			res.start = e.data["message"].(map[string]any)
			state = "blocks"
		case state == "blocks" && typ == "ping":
		case state == "blocks" && typ == "content_block_start":
			if int(e.data["index"].(float64)) != len(res.blocks) {
				t.Fatalf("event %d: block index %v, want %d", i, e.data["index"], len(res.blocks))
			}
			open = e.data["content_block"].(map[string]any)
			res.blocks = append(res.blocks, open)
			if open["type"] == "tool_use" {
				res.content++ // it carries the call's name
			}
			state = "block"
		case state == "block" && typ == "content_block_delta":
			if int(e.data["index"].(float64)) != len(res.blocks)-1 {
				t.Fatalf("event %d: delta for block %v inside block %d", i, e.data["index"], len(res.blocks)-1)
			}
			d := e.data["delta"].(map[string]any)
			want := map[string]string{"text_delta": "text", "thinking_delta": "thinking", "signature_delta": "thinking", "input_json_delta": "tool_use"}
			if want[d["type"].(string)] != open["type"] {
				t.Fatalf("event %d: %v delta in a %v block", i, d["type"], open["type"])
			}
			switch d["type"] {
			case "text_delta":
				open["text"] = open["text"].(string) + d["text"].(string)
				res.content++
			case "thinking_delta":
				open["thinking"] = open["thinking"].(string) + d["thinking"].(string)
				res.content++
			case "signature_delta":
				open["signature"] = d["signature"]
			case "input_json_delta":
				s, _ := open["partial"].(string)
				open["partial"] = s + d["partial_json"].(string)
				res.content++
			}
		case state == "block" && typ == "content_block_stop":
			if int(e.data["index"].(float64)) != len(res.blocks)-1 {
				t.Fatalf("event %d: stop of block %v inside block %d", i, e.data["index"], len(res.blocks)-1)
			}
			state = "blocks"
		case state == "blocks" && typ == "message_delta":
			res.stopReason = e.data["delta"].(map[string]any)["stop_reason"]
			res.output = e.data["usage"].(map[string]any)["output_tokens"]
			state = "delta"
		case state == "delta" && typ == "message_stop":
			res.stop = e.data
			state = "done"
		default:
			t.Fatalf("event %d: %q not allowed in state %s", i, typ, state)
		}
	}
	if state != "done" {
		t.Fatalf("stream ended in state %s", state)
	}
	return res
}

// responsesResult is a Responses stream put back together.
type responsesResult struct {
	types   []string
	final   map[string]any // the response of response.completed or .incomplete
	text    string         // the output_text deltas
	args    map[string]string
	failed  map[string]any
	content int
}

// checkResponses validates the Responses stream: event names equal data
// types, sequence numbers count from 0, deltas match their done events,
// and it ends with response.completed, response.incomplete or error.
func checkResponses(t *testing.T, events []sseEvent) responsesResult {
	t.Helper()
	res := responsesResult{args: map[string]string{}}
	for i, e := range events {
		typ, _ := e.data["type"].(string)
		res.types = append(res.types, typ)
		if e.name != typ {
			t.Fatalf("event %d: name %q, data type %q", i, e.name, typ)
		}
		if e.data["sequence_number"] != float64(i) {
			t.Fatalf("event %d: sequence_number %v", i, e.data["sequence_number"])
		}
		last := i == len(events)-1
		switch typ {
		case "error":
			if !last {
				t.Fatalf("event %d: error before the end", i)
			}
			res.failed = e.data
		case "response.output_text.delta":
			res.text += e.data["delta"].(string)
			res.content++
		case "response.output_text.done":
			if e.data["text"] != res.text {
				t.Errorf("output_text.done text %q, deltas %q", e.data["text"], res.text)
			}
		case "response.output_item.added":
			if item := e.data["item"].(map[string]any); item["type"] == "function_call" {
				res.content++
			}
		case "response.function_call_arguments.delta":
			res.args[e.data["item_id"].(string)] += e.data["delta"].(string)
			res.content++
		case "response.function_call_arguments.done":
			if id := e.data["item_id"].(string); res.args[id] != e.data["arguments"] {
				t.Errorf("arguments.done %q, deltas %q", e.data["arguments"], res.args[id])
			}
		case "response.completed", "response.incomplete":
			if !last {
				t.Fatalf("event %d: %s before the end", i, typ)
			}
			res.final = e.data["response"].(map[string]any)
		}
	}
	if res.final == nil && res.failed == nil {
		t.Fatalf("stream without a terminal event: %v", res.types)
	}
	return res
}

// chatResult is an OpenAI chat stream put back together.
type chatResult struct {
	content string
	calls   []map[string]string // id, name, arguments by index
	finish  any
	usage   any
	done    bool
	failed  map[string]any
	chunks  int // chunks with a content or tool-call delta
}

// checkChat validates an OpenAI chat stream: the role on the first chunk,
// contiguous tool-call indices, one finish_reason, the usage chunk after
// it, [DONE] last, or an error event as the last event.
func checkChat(t *testing.T, events []sseEvent) chatResult {
	t.Helper()
	var res chatResult
	for i, e := range events {
		last := i == len(events)-1
		switch {
		case e.raw == "[DONE]":
			if !last {
				t.Fatalf("[DONE] before the end")
			}
			res.done = true
			continue
		case e.data["error"] != nil:
			if !last {
				t.Fatalf("event %d: error before the end", i)
			}
			res.failed = e.data["error"].(map[string]any)
			continue
		}
		if e.data["object"] != "chat.completion.chunk" {
			t.Fatalf("event %d: object %v", i, e.data["object"])
		}
		choices := e.data["choices"].([]any)
		if len(choices) == 0 {
			if res.finish == nil {
				t.Fatalf("event %d: usage chunk before the finish", i)
			}
			res.usage = e.data["usage"]
			continue
		}
		c := choices[0].(map[string]any)
		d := c["delta"].(map[string]any)
		if _, ok := d["role"]; ok != (i == 0 && res.finish == nil && len(d) > 0) {
			t.Fatalf("event %d: role present = %v", i, ok)
		}
		if s, ok := d["content"].(string); ok {
			res.content += s
			res.chunks++
		}
		if tcs, ok := d["tool_calls"].([]any); ok {
			res.chunks++
			for _, tc := range tcs {
				tc := tc.(map[string]any)
				idx := int(tc["index"].(float64))
				if idx == len(res.calls) {
					res.calls = append(res.calls, map[string]string{})
				} else if idx != len(res.calls)-1 {
					t.Fatalf("event %d: tool index %d after %d", i, idx, len(res.calls)-1)
				}
				call := res.calls[idx]
				if id, ok := tc["id"].(string); ok {
					call["id"] = id
				}
				f := tc["function"].(map[string]any)
				if n, ok := f["name"].(string); ok {
					call["name"] = n
				}
				call["arguments"] += f["arguments"].(string)
			}
		}
		if c["finish_reason"] != nil {
			if res.finish != nil {
				t.Fatalf("event %d: a second finish_reason", i)
			}
			res.finish = c["finish_reason"]
		}
	}
	return res
}

// converseResult is a ConverseStream put back together.
type converseResult struct {
	types     []string
	text      string
	reasoning string
	signature any
	tools     []map[string]string // toolUseId, name, input
	stop      any
	usage     any
	failed    string // the exception type that ended the stream
	content   int
}

// checkConverse validates a ConverseStream: messageStart first, block
// indices in order, messageStop then metadata last, or an exception last.
func checkConverse(t *testing.T, msgs []awsMessage) converseResult {
	t.Helper()
	var res converseResult
	index := 0
	for i, m := range msgs {
		last := i == len(msgs)-1
		if m.headers[":message-type"] == "exception" {
			if !last {
				t.Fatalf("message %d: exception before the end", i)
			}
			res.failed = m.headers[":exception-type"]
			return res
		}
		typ := m.headers[":event-type"]
		res.types = append(res.types, typ)
		if m.headers[":content-type"] != "application/json" || m.headers[":message-type"] != "event" || m.payload["p"] == nil {
			t.Fatalf("message %d: headers %v payload %v", i, m.headers, m.payload)
		}
		if (i == 0) != (typ == "messageStart") {
			t.Fatalf("message %d: %s", i, typ)
		}
		if idx, ok := m.payload["contentBlockIndex"].(float64); ok && int(idx) != index {
			t.Fatalf("message %d: block index %v, want %d", i, idx, index)
		}
		switch typ {
		case "contentBlockStart":
			tu := m.payload["start"].(map[string]any)["toolUse"].(map[string]any)
			res.tools = append(res.tools, map[string]string{"toolUseId": tu["toolUseId"].(string), "name": tu["name"].(string)})
			res.content++
		case "contentBlockDelta":
			d := m.payload["delta"].(map[string]any)
			switch {
			case d["text"] != nil:
				res.text += d["text"].(string)
				res.content++
			case d["toolUse"] != nil:
				res.tools[len(res.tools)-1]["input"] += d["toolUse"].(map[string]any)["input"].(string)
				res.content++
			case d["reasoningContent"] != nil:
				rc := d["reasoningContent"].(map[string]any)
				if s, ok := rc["text"].(string); ok {
					res.reasoning += s
					res.content++
				}
				if s, ok := rc["signature"]; ok {
					res.signature = s
				}
			}
		case "contentBlockStop":
			index++
		case "messageStop":
			res.stop = m.payload["stopReason"]
		case "metadata":
			if !last || res.stop == nil {
				t.Fatalf("message %d: metadata not last after messageStop", i)
			}
			res.usage = m.payload["usage"]
		}
	}
	if res.usage == nil {
		t.Fatalf("stream without metadata: %v", res.types)
	}
	return res
}

// readAll reads a response body whole.
func readAll(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return b
}
