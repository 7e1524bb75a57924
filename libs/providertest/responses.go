package providertest

import (
	"encoding/json"
	"net/http"
	"strings"
)

// responsesRequest holds the fields of a Responses API request the mock
// reads.
type responsesRequest struct {
	Model           string          `json:"model"`
	Input           json.RawMessage `json:"input"`
	Instructions    json.RawMessage `json:"instructions"`
	Stream          bool            `json:"stream"`
	MaxOutputTokens int64           `json:"max_output_tokens"`
}

// texts returns the instructions, a string input, and for each input item
// its string content or the text of its content parts, and the output of
// a function_call_output item.
func (r responsesRequest) texts() []string {
	out := appendContentText(nil, r.Instructions)
	var one string
	if json.Unmarshal(r.Input, &one) == nil {
		return append(out, one)
	}
	var items []struct {
		Content json.RawMessage `json:"content"`
		Output  json.RawMessage `json:"output"`
	}
	_ = json.Unmarshal(r.Input, &items) // input that is not a list of items holds no tool outputs: items stays empty
	for _, it := range items {
		out = appendContentText(out, it.Content)
		out = appendContentText(out, it.Output)
	}
	return out
}

type responsesUsage struct {
	InputTokens        int64 `json:"input_tokens"`
	InputTokensDetails struct {
		CachedTokens int64 `json:"cached_tokens"`
	} `json:"input_tokens_details"`
	OutputTokens        int64 `json:"output_tokens"`
	OutputTokensDetails struct {
		ReasoningTokens int64 `json:"reasoning_tokens"`
	} `json:"output_tokens_details"`
	TotalTokens int64 `json:"total_tokens"`
}

type responseObject struct {
	ID                string          `json:"id"`
	Object            string          `json:"object"`
	CreatedAt         int64           `json:"created_at"`
	Status            string          `json:"status"`
	Error             any             `json:"error"`
	IncompleteDetails any             `json:"incomplete_details"`
	Model             string          `json:"model"`
	Output            []any           `json:"output"`
	Usage             *responsesUsage `json:"usage"`
}

type outputText struct {
	Type        string `json:"type"`
	Text        string `json:"text"`
	Annotations []any  `json:"annotations"`
}

type messageItem struct {
	ID      string       `json:"id"`
	Type    string       `json:"type"`
	Status  string       `json:"status"`
	Role    string       `json:"role"`
	Content []outputText `json:"content"`
}

type functionCallItem struct {
	ID        string `json:"id"`
	Type      string `json:"type"`
	Status    string `json:"status"`
	CallID    string `json:"call_id"`
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

type reasoningItem struct {
	ID      string `json:"id"`
	Type    string `json:"type"`
	Summary []any  `json:"summary"`
}

// response is the response object in a state: status "in_progress" with
// no output and no usage at the start of a stream, else complete with
// the message text given (streams join their deltas, whole answers their
// words).
func (p plan) response(status, text string) responseObject {
	o := responseObject{
		ID: p.id("resp_mock_"), Object: "response", CreatedAt: p.created,
		Status: status, Model: p.model, Output: []any{},
	}
	if status == "in_progress" {
		return o
	}
	if p.truncated {
		o.Status = "incomplete"
		o.IncompleteDetails = map[string]string{"reason": "max_output_tokens"}
	}
	if p.reasoning > 0 {
		o.Output = append(o.Output, p.reasoningItem())
	}
	for i := range p.tools {
		o.Output = append(o.Output, p.functionCallItem(i, "completed", p.tools[i].args))
	}
	if len(p.tools) == 0 {
		o.Output = append(o.Output, p.messageItem("completed", []outputText{{Type: "output_text", Text: text, Annotations: []any{}}}))
	}
	u := &responsesUsage{InputTokens: p.prompt, OutputTokens: p.completion, TotalTokens: p.total()}
	u.InputTokensDetails.CachedTokens = p.cached
	u.OutputTokensDetails.ReasoningTokens = p.reasoning
	o.Usage = u
	return o
}

func (p plan) reasoningItem() reasoningItem {
	return reasoningItem{ID: p.id("rs_mock_"), Type: "reasoning", Summary: []any{}}
}

func (p plan) messageItem(status string, content []outputText) messageItem {
	return messageItem{ID: p.id("msg_mock_"), Type: "message", Status: status, Role: "assistant", Content: content}
}

func (p plan) functionCallItem(i int, status, args string) functionCallItem {
	return functionCallItem{
		ID: p.toolID("fc_mock_", i), Type: "function_call", Status: status,
		CallID: p.toolID("call_mock_", i), Name: p.tools[i].name, Arguments: args,
	}
}

// responses serves the Responses API. A reasoning item comes first when
// reasoning tokens are set; tool calls replace the message.
func (s *Server) responses(w http.ResponseWriter, r *http.Request) {
	var req responsesRequest
	b, ok := s.openAIStart(w, r, &req)
	if !ok {
		return
	}
	model, ok := openAIModel(w, r, req.Model)
	if !ok || !s.delayOrInject(w, r, b, writeOpenAIInjected) {
		return
	}
	p := s.planFor(b, model, PromptTokens(req.texts()), req.MaxOutputTokens, false)
	if !req.Stream {
		writeJSON(w, http.StatusOK, p.response("completed", p.text()))
		return
	}
	s.responsesStream(w, r, b, p)
}

// responsesStream writes the typed event stream of the Responses API:
// `event: <type>` and `data: {..., "type", "sequence_number"}` per event,
// no [DONE].
func (s *Server) responsesStream(w http.ResponseWriter, r *http.Request, b behaviour, p plan) {
	st := s.startSSE(w, "\n")
	g := &gate{s: s, r: r, b: b}
	seq := 0
	send := func(typ string, fields map[string]any) bool {
		fields["type"], fields["sequence_number"] = typ, seq
		seq++
		return st.send(typ, fields)
	}
	fail := func() {
		send("error", map[string]any{
			"code": "server_error", "param": nil,
			"message": "The server had an error while processing your request (injected by the mock provider).",
		})
	}
	// content gates one content event: false when the stream ends here.
	content := func() bool {
		brk, ok := g.content()
		if ok && brk {
			fail()
		}
		return ok && !brk
	}
	if g.breaksFirst() {
		fail()
		return
	}
	start := p.response("in_progress", "")
	if !send("response.created", map[string]any{"response": start}) ||
		!send("response.in_progress", map[string]any{"response": start}) {
		return
	}
	out := 0 // output_index
	if p.reasoning > 0 {
		item := p.reasoningItem()
		if !send("response.output_item.added", map[string]any{"output_index": out, "item": item}) ||
			!send("response.output_item.done", map[string]any{"output_index": out, "item": item}) {
			return
		}
		out++
	}
	for i, t := range p.tools {
		id := p.toolID("fc_mock_", i)
		if !content() || !send("response.output_item.added", map[string]any{
			"output_index": out, "item": p.functionCallItem(i, "in_progress", ""),
		}) {
			return
		}
		for _, piece := range t.argPieces() {
			if !content() || !send("response.function_call_arguments.delta", map[string]any{
				"item_id": id, "output_index": out, "delta": piece,
			}) {
				return
			}
		}
		if !send("response.function_call_arguments.done", map[string]any{
			"item_id": id, "output_index": out, "arguments": t.args,
		}) || !send("response.output_item.done", map[string]any{
			"output_index": out, "item": p.functionCallItem(i, "completed", t.args),
		}) {
			return
		}
		out++
	}
	var text strings.Builder
	if len(p.tools) == 0 {
		id := p.id("msg_mock_")
		empty := outputText{Type: "output_text", Text: "", Annotations: []any{}}
		if !send("response.output_item.added", map[string]any{"output_index": out, "item": p.messageItem("in_progress", []outputText{})}) ||
			!send("response.content_part.added", map[string]any{"item_id": id, "output_index": out, "content_index": 0, "part": empty}) {
			return
		}
		for _, wd := range p.words {
			if !content() || !send("response.output_text.delta", map[string]any{
				"item_id": id, "output_index": out, "content_index": 0, "delta": wd + " ", "logprobs": []any{},
			}) {
				return
			}
			text.WriteString(wd + " ")
		}
		if brk, ok := g.end(); !ok {
			return
		} else if brk {
			fail()
			return
		}
		part := outputText{Type: "output_text", Text: text.String(), Annotations: []any{}}
		if !send("response.output_text.done", map[string]any{
			"item_id": id, "output_index": out, "content_index": 0, "text": part.Text, "logprobs": []any{},
		}) || !send("response.content_part.done", map[string]any{"item_id": id, "output_index": out, "content_index": 0, "part": part}) ||
			!send("response.output_item.done", map[string]any{"output_index": out, "item": p.messageItem("completed", []outputText{part})}) {
			return
		}
	} else if brk, ok := g.end(); !ok {
		return
	} else if brk {
		fail()
		return
	}
	final := p.response("completed", text.String())
	event := "response.completed"
	if final.Status == "incomplete" {
		event = "response.incomplete"
	}
	send(event, map[string]any{"response": final})
}
