package providertest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// anthropicDialect is where an Anthropic Messages body is served: the
// body is the same, but the model, the version, the framing of streams
// and the error shape are not.
type anthropicDialect int

const (
	// dialectAnthropic is api.anthropic.com: model in the body, version
	// in the anthropic-version header, SSE, Anthropic errors.
	dialectAnthropic anthropicDialect = iota
	// dialectVertex is Vertex AI's rawPredict: model in the path,
	// anthropic_version in the body, SSE, Anthropic errors.
	dialectVertex
	// dialectBedrock is Bedrock's InvokeModel: model in the path,
	// anthropic_version in the body, eventstream, Bedrock errors.
	dialectBedrock
)

func (s *Server) routeAnthropic() {
	s.mux.HandleFunc("POST /v1/messages", s.anthropicAuth(func(w http.ResponseWriter, r *http.Request) {
		s.anthropicMessages(w, r, dialectAnthropic, "", false)
	}))
	s.mux.HandleFunc("POST /v1/messages/count_tokens", s.anthropicAuth(s.anthropicCountTokens))
}

func (s *Server) anthropicAuth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.Credential != "" && !s.credentialIs(r.Header.Get("X-Api-Key")) {
			writeAnthropicError(w, http.StatusUnauthorized, "authentication_error", "invalid x-api-key")
			return
		}
		h(w, r)
	}
}

// anthropicRequest holds the fields of a Messages request the mock reads.
type anthropicRequest struct {
	Model     string          `json:"model"`
	MaxTokens *int64          `json:"max_tokens"`
	Stream    bool            `json:"stream"`
	System    json.RawMessage `json:"system"`
	Messages  []struct {
		Content json.RawMessage `json:"content"`
	} `json:"messages"`
	Thinking *struct {
		Type string `json:"type"`
	} `json:"thinking"`
	AnthropicVersion string `json:"anthropic_version"`
}

// texts returns the system prompt's text and every message's: a string
// content, the text of text blocks, and the text inside tool_result
// blocks.
func (r anthropicRequest) texts() []string {
	out := appendAnthropicText(nil, r.System)
	for _, m := range r.Messages {
		out = appendAnthropicText(out, m.Content)
	}
	return out
}

func appendAnthropicText(out []string, content json.RawMessage) []string {
	var s string
	if json.Unmarshal(content, &s) == nil {
		return append(out, s)
	}
	var blocks []struct {
		Type    string          `json:"type"`
		Text    string          `json:"text"`
		Content json.RawMessage `json:"content"`
	}
	if json.Unmarshal(content, &blocks) == nil {
		for _, b := range blocks {
			switch b.Type {
			case "text":
				out = append(out, b.Text)
			case "tool_result":
				out = appendAnthropicText(out, b.Content)
			}
		}
	}
	return out
}

// thinkingEnabled reports whether the request asks for thinking blocks.
func (r anthropicRequest) thinkingEnabled() bool {
	return r.Thinking != nil && (r.Thinking.Type == "enabled" || r.Thinking.Type == "adaptive")
}

type anthropicUsage struct {
	InputTokens              int64 `json:"input_tokens"`
	CacheCreationInputTokens int64 `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     int64 `json:"cache_read_input_tokens"`
	OutputTokens             int64 `json:"output_tokens"`
}

type anthropicMessage struct {
	ID           string         `json:"id"`
	Type         string         `json:"type"`
	Role         string         `json:"role"`
	Model        string         `json:"model"`
	Content      []any          `json:"content"`
	StopReason   *string        `json:"stop_reason"`
	StopSequence *string        `json:"stop_sequence"`
	Usage        anthropicUsage `json:"usage"`
}

// anthropicUsage reports input tokens without the cached and cache-write
// ones, as Anthropic does.
func (p plan) anthropicUsage(output int64) anthropicUsage {
	return anthropicUsage{
		InputTokens: p.uncached(), CacheCreationInputTokens: p.cacheWrite,
		CacheReadInputTokens: p.cached, OutputTokens: output,
	}
}

func (p plan) anthropicStop() string {
	switch {
	case len(p.tools) > 0:
		return "tool_use"
	case p.truncated:
		return "max_tokens"
	}
	return "end_turn"
}

type textBlock struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

type thinkingBlock struct {
	Type      string `json:"type"`
	Thinking  string `json:"thinking"`
	Signature string `json:"signature,omitempty"`
}

type toolUseBlock struct {
	Type  string          `json:"type"`
	ID    string          `json:"id"`
	Name  string          `json:"name"`
	Input json.RawMessage `json:"input"`
}

func (p plan) anthropicMessage() anthropicMessage {
	stop := p.anthropicStop()
	m := anthropicMessage{
		ID: p.id("msg_mock_"), Type: "message", Role: "assistant", Model: p.model,
		StopReason: &stop, Usage: p.anthropicUsage(p.completion),
	}
	if p.thinking != nil {
		t := p.thinkingText()
		m.Content = append(m.Content, thinkingBlock{Type: "thinking", Thinking: t, Signature: Signature(t)})
	}
	for i, t := range p.tools {
		m.Content = append(m.Content, toolUseBlock{Type: "tool_use", ID: p.toolID("toolu_mock_", i), Name: t.name, Input: json.RawMessage(t.args)})
	}
	if len(p.tools) == 0 {
		m.Content = append(m.Content, textBlock{Type: "text", Text: p.text()})
	}
	return m
}

// anthropicMessages serves a Messages request in dialect d. For Vertex and
// Bedrock the model comes from the path; stream forces a stream (Vertex's
// streamRawPredict, Bedrock's invoke-with-response-stream).
func (s *Server) anthropicMessages(w http.ResponseWriter, r *http.Request, d anthropicDialect, model string, stream bool) {
	refuse := func(msg string) {
		if d == dialectBedrock {
			writeBedrockError(w, http.StatusBadRequest, "ValidationException", msg)
			return
		}
		writeAnthropicError(w, http.StatusBadRequest, "invalid_request_error", msg)
	}
	b, err := s.behaviourFor(r)
	if err != nil {
		refuse(err.Error())
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		refuse("the request body could not be read")
		return
	}
	var req anthropicRequest
	if err := json.NewDecoder(bytes.NewReader(body)).Decode(&req); err != nil {
		refuse("the request body is not valid JSON")
		return
	}
	if d == dialectBedrock {
		if msg := bedrockInvokeProblem(body); msg != "" {
			refuse(msg)
			return
		}
	}
	switch d {
	case dialectAnthropic:
		model = req.Model
		switch {
		case r.Header.Get("Anthropic-Version") == "":
			refuse("anthropic-version: header is required")
			return
		case model == "":
			refuse("model: Field required")
			return
		}
	case dialectVertex, dialectBedrock:
		if req.AnthropicVersion == "" {
			if d == dialectBedrock {
				refuse("Malformed input request: #: required key [anthropic_version] not found, please reformat your input and try again.")
			} else {
				refuse("anthropic_version: Field required")
			}
			return
		}
	}
	if req.MaxTokens == nil {
		refuse("max_tokens: Field required")
		return
	}
	if *req.MaxTokens < 1 {
		refuse("max_tokens: must be greater than or equal to 1")
		return
	}
	inject := writeAnthropicInjected
	if d == dialectBedrock {
		inject = writeBedrockInjected
	}
	if !s.delayOrInject(w, r, b, inject) {
		return
	}
	p := s.planFor(b, model, PromptTokens(req.texts()), *req.MaxTokens, req.thinkingEnabled())
	stream = stream || (req.Stream && d != dialectBedrock)
	switch {
	case !stream && d == dialectBedrock:
		u := p.anthropicUsage(p.completion)
		h := w.Header()
		h.Set("X-Amzn-Requestid", p.id("mock-request-"))
		h.Set("X-Amzn-Bedrock-Input-Token-Count", strconv.FormatInt(u.InputTokens, 10))
		h.Set("X-Amzn-Bedrock-Output-Token-Count", strconv.FormatInt(u.OutputTokens, 10))
		h.Set("X-Amzn-Bedrock-Cache-Read-Input-Token-Count", strconv.FormatInt(u.CacheReadInputTokens, 10))
		h.Set("X-Amzn-Bedrock-Cache-Write-Input-Token-Count", strconv.FormatInt(u.CacheCreationInputTokens, 10))
		h.Set("X-Amzn-Bedrock-Invocation-Latency", strconv.FormatInt(b.delay.Milliseconds(), 10))
		writeJSON(w, http.StatusOK, p.anthropicMessage())
	case !stream:
		writeJSON(w, http.StatusOK, p.anthropicMessage())
	case d == dialectBedrock:
		st := s.startAWSStream(w, p.id("mock-request-"))
		s.anthropicStream(r, b, p, anthropicSink{
			emit: func(_ string, v any) bool {
				data, err := json.Marshal(v)
				if err != nil {
					return false
				}
				return st.event("chunk", map[string]string{"bytes": base64.StdEncoding.EncodeToString(data), "p": awsPadding})
			},
			fail:    func() { st.exception(bedrockStreamException, bedrockStreamMessage) },
			bedrock: true,
		})
	default:
		st := s.startSSE(w, "\n")
		s.anthropicStream(r, b, p, anthropicSink{
			emit: st.send,
			fail: func() {
				st.send("error", anthropicErrorBody("overloaded_error", "Overloaded (injected by the mock provider)."))
			},
		})
	}
}

// bedrockInvokeProblem is the message of Bedrock's ValidationException for
// an InvokeModel body it refuses, empty when it takes it: Bedrock
// validates the body against a schema without `model` (it is in the path)
// or `stream` (the path chooses), and anthropic_beta must be a list of
// strings.
func bedrockInvokeProblem(body []byte) string {
	var members map[string]json.RawMessage
	if json.Unmarshal(body, &members) != nil {
		return ""
	}
	var problems strings.Builder
	for _, k := range []string{"stream", "model"} {
		if _, ok := members[k]; ok {
			problems.WriteString("#: extraneous key [" + k + "] is not permitted")
		}
	}
	if raw, ok := members["anthropic_beta"]; ok {
		var betas []string
		if json.Unmarshal(raw, &betas) != nil {
			problems.WriteString("#/anthropic_beta: expected type: JSONArray of strings")
		}
	}
	if problems.Len() == 0 {
		return ""
	}
	return "Malformed input request: " + problems.String() + ", please reformat your input and try again."
}

// anthropicDelta is one content_block_delta; content ones (text, thinking,
// argument pieces) are gated, a signature is not.
type anthropicDelta struct {
	v       map[string]any
	content bool
}

// anthropicSink is where an Anthropic event stream goes: SSE, or the
// chunks of a Bedrock eventstream.
type anthropicSink struct {
	emit func(event string, v any) bool
	fail func() // the terminal error of a stream whose headers are sent
	// bedrock adds Bedrock's invocation metrics to message_stop and drops
	// the pings.
	bedrock bool
}

// anthropicStream writes the Messages event grammar: message_start, ping,
// per block content_block_start, content_block_delta..., content_block_stop
// with indices from 0, message_delta, message_stop.
func (s *Server) anthropicStream(r *http.Request, b behaviour, p plan, sink anthropicSink) {
	g := &gate{s: s, r: r, b: b}
	if g.breaksFirst() {
		sink.fail()
		return
	}
	emit := func(typ string, fields map[string]any) bool {
		fields["type"] = typ
		return sink.emit(typ, fields)
	}
	content := func() bool {
		brk, ok := g.content()
		if ok && brk {
			sink.fail()
		}
		return ok && !brk
	}
	start := anthropicMessage{
		ID: p.id("msg_mock_"), Type: "message", Role: "assistant", Model: p.model,
		Content: []any{}, Usage: p.anthropicUsage(1),
	}
	if !emit("message_start", map[string]any{"message": start}) {
		return
	}
	if !sink.bedrock && !emit("ping", map[string]any{}) {
		return
	}
	index := 0
	// block writes one content block; deltas marked content are gated.
	block := func(first any, deltas []anthropicDelta) bool {
		if !emit("content_block_start", map[string]any{"index": index, "content_block": first}) {
			return false
		}
		for _, d := range deltas {
			if d.content && !content() {
				return false
			}
			if !emit("content_block_delta", map[string]any{"index": index, "delta": d.v}) {
				return false
			}
		}
		ok := emit("content_block_stop", map[string]any{"index": index})
		index++
		return ok
	}
	if p.thinking != nil {
		var deltas []anthropicDelta
		var text strings.Builder
		for _, wd := range p.thinking {
			deltas = append(deltas, anthropicDelta{map[string]any{"type": "thinking_delta", "thinking": wd + " "}, true})
			text.WriteString(wd + " ")
		}
		// The signature is of the text as the stream delivers it.
		deltas = append(deltas, anthropicDelta{map[string]any{"type": "signature_delta", "signature": Signature(text.String())}, false})
		if !block(thinkingBlock{Type: "thinking", Thinking: ""}, deltas) {
			return
		}
	}
	for i, t := range p.tools {
		// A tool_use start carries the call's name: it is content.
		if !content() {
			return
		}
		var deltas []anthropicDelta
		for _, piece := range t.argPieces() {
			deltas = append(deltas, anthropicDelta{map[string]any{"type": "input_json_delta", "partial_json": piece}, true})
		}
		if !block(toolUseBlock{Type: "tool_use", ID: p.toolID("toolu_mock_", i), Name: t.name, Input: json.RawMessage(`{}`)}, deltas) {
			return
		}
	}
	if len(p.tools) == 0 {
		deltas := make([]anthropicDelta, len(p.words))
		for i, wd := range p.words {
			deltas[i] = anthropicDelta{map[string]any{"type": "text_delta", "text": wd + " "}, true}
		}
		if !block(textBlock{Type: "text", Text: ""}, deltas) {
			return
		}
	}
	if brk, ok := g.end(); !ok {
		return
	} else if brk {
		sink.fail()
		return
	}
	if !emit("message_delta", map[string]any{
		"delta": map[string]any{"stop_reason": p.anthropicStop(), "stop_sequence": nil},
		"usage": map[string]int64{"output_tokens": p.completion},
	}) {
		return
	}
	stop := map[string]any{}
	if sink.bedrock {
		stop["amazon-bedrock-invocationMetrics"] = map[string]int64{
			"inputTokenCount":           p.uncached(),
			"outputTokenCount":          p.completion,
			"invocationLatency":         b.delay.Milliseconds(),
			"firstByteLatency":          b.delay.Milliseconds(),
			"cacheReadInputTokenCount":  p.cached,
			"cacheWriteInputTokenCount": p.cacheWrite,
		}
	}
	emit("message_stop", stop)
}

func (s *Server) anthropicCountTokens(w http.ResponseWriter, r *http.Request) {
	b, err := s.behaviourFor(r)
	if err != nil {
		writeAnthropicError(w, http.StatusBadRequest, "invalid_request_error", err.Error())
		return
	}
	var req anthropicRequest
	switch {
	case json.NewDecoder(r.Body).Decode(&req) != nil:
		writeAnthropicError(w, http.StatusBadRequest, "invalid_request_error", "the request body is not valid JSON")
		return
	case r.Header.Get("Anthropic-Version") == "":
		writeAnthropicError(w, http.StatusBadRequest, "invalid_request_error", "anthropic-version: header is required")
		return
	case req.Model == "":
		writeAnthropicError(w, http.StatusBadRequest, "invalid_request_error", "model: Field required")
		return
	}
	if !s.delayOrInject(w, r, b, writeAnthropicInjected) {
		return
	}
	writeJSON(w, http.StatusOK, map[string]int64{"input_tokens": PromptTokens(req.texts())})
}

func anthropicErrorBody(typ, message string) map[string]any {
	return map[string]any{"type": "error", "error": map[string]any{"type": typ, "message": message}}
}

func writeAnthropicError(w http.ResponseWriter, status int, typ, message string) {
	writeJSON(w, status, anthropicErrorBody(typ, message))
}

// anthropicErrorTypes are Anthropic's error types by HTTP status.
var anthropicErrorTypes = map[int]string{
	400: "invalid_request_error",
	401: "authentication_error",
	403: "permission_error",
	404: "not_found_error",
	413: "request_too_large",
	429: "rate_limit_error",
	500: "api_error",
	529: "overloaded_error",
}

// writeAnthropicInjected answers an X-Mock-Error request as Anthropic
// would: a status without a type of its own gets invalid_request_error
// (4xx) or api_error (5xx).
func writeAnthropicInjected(w http.ResponseWriter, status int) {
	typ, ok := anthropicErrorTypes[status]
	if !ok {
		typ = "invalid_request_error"
		if status >= 500 {
			typ = "api_error"
		}
	}
	if status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "1")
	}
	writeAnthropicError(w, status, typ, "Injected "+typ+" (injected by the mock provider).")
}
