package providertest

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/fnv"
	"math"
	"net/http"
	"strconv"
	"strings"
)

// routeOpenAI registers the OpenAI APIs and their Azure OpenAI paths.
func (s *Server) routeOpenAI() {
	for prefix, auth := range map[string]func(http.HandlerFunc) http.HandlerFunc{
		"/v1":        s.openAIAuth,
		"/openai/v1": s.azureAuth, // Azure's v1 API: the OpenAI paths under /openai
	} {
		s.mux.HandleFunc("POST "+prefix+"/chat/completions", auth(s.chatCompletions))
		s.mux.HandleFunc("POST "+prefix+"/completions", auth(s.completions))
		s.mux.HandleFunc("POST "+prefix+"/embeddings", auth(s.embeddings))
		s.mux.HandleFunc("POST "+prefix+"/responses", auth(s.responses))
		s.mux.HandleFunc("GET "+prefix+"/models", auth(s.models))
	}
	for _, op := range []struct {
		path string
		h    http.HandlerFunc
	}{
		{"/openai/deployments/{deployment}/chat/completions", s.chatCompletions},
		{"/openai/deployments/{deployment}/completions", s.completions},
		{"/openai/deployments/{deployment}/embeddings", s.embeddings},
		{"/openai/responses", s.responses},
	} {
		s.mux.HandleFunc("POST "+op.path, s.azureAuth(azureAPIVersion(op.h)))
	}
}

func (s *Server) openAIAuth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.Credential != "" && !s.bearerOK(r.Header.Get("Authorization")) {
			writeOpenAIError(w, http.StatusUnauthorized, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
			return
		}
		h(w, r)
	}
}

// azureAuth accepts the credential as an `api-key` (an Azure resource
// key) or as a Bearer token (an Entra ID token), as Azure OpenAI does.
func (s *Server) azureAuth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.Credential != "" && !s.credentialIs(r.Header.Get("Api-Key")) && !s.bearerOK(r.Header.Get("Authorization")) {
			writeJSON(w, http.StatusUnauthorized, map[string]any{"error": map[string]any{
				"code": "401",
				"message": "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide " +
					"a valid key for an active subscription and use a correct regional API endpoint for your resource.",
			}})
			return
		}
		h(w, r)
	}
}

// azureAPIVersion refuses a deployment request without ?api-version=,
// which Azure requires on every path outside /openai/v1.
func azureAPIVersion(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("api-version") == "" {
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": map[string]any{
				"code":    "MissingApiVersionParameter",
				"message": "The api-version query parameter (?api-version=) is required for all requests.",
			}})
			return
		}
		h(w, r)
	}
}

// openAIStart parses the overrides and the body into req, the common
// start of every OpenAI handler; it has answered when it returns false.
func (s *Server) openAIStart(w http.ResponseWriter, r *http.Request, req any) (behaviour, bool) {
	b, err := s.behaviourFor(r)
	if err != nil {
		writeOpenAIError(w, http.StatusBadRequest, err.Error(), "invalid_request_error", "")
		return b, false
	}
	if err := json.NewDecoder(r.Body).Decode(req); err != nil {
		writeOpenAIError(w, http.StatusBadRequest, "the request body is not valid JSON", "invalid_request_error", "")
		return b, false
	}
	return b, true
}

// openAIModel is the model an answer reports: the deployment of an Azure
// deployment path, else the body's, which is then required.
func openAIModel(w http.ResponseWriter, r *http.Request, model string) (string, bool) {
	if d := r.PathValue("deployment"); d != "" {
		return d, true
	}
	if model == "" {
		writeOpenAIError(w, http.StatusBadRequest, "you must provide a model parameter", "invalid_request_error", "")
		return "", false
	}
	return model, true
}

// delayOrInject waits the delay and answers an injected error; it has
// answered (or the caller left) when it returns false.
func (s *Server) delayOrInject(w http.ResponseWriter, r *http.Request, b behaviour, inject func(http.ResponseWriter, int)) bool {
	if !s.wait(r, b.delay) {
		return false
	}
	if b.errStatus != 0 {
		inject(w, b.errStatus)
		return false
	}
	return true
}

// chatRequest holds the fields of a chat-completions request the mock
// reads; the rest is ignored, as a provider ignores what it does not know.
type chatRequest struct {
	Model    string `json:"model"`
	Stream   bool   `json:"stream"`
	Messages []struct {
		Content json.RawMessage `json:"content"`
	} `json:"messages"`
	StreamOptions       *streamOptions `json:"stream_options"`
	MaxTokens           int64          `json:"max_tokens"`
	MaxCompletionTokens int64          `json:"max_completion_tokens"`
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

func (o *streamOptions) includeUsage() bool { return o != nil && o.IncludeUsage }

// Usage is the OpenAI usage object. The details are present only when
// they are not zero, as OpenAI-compatible servers without caching or
// reasoning send them.
type Usage struct {
	PromptTokens            int64                    `json:"prompt_tokens"`
	CompletionTokens        int64                    `json:"completion_tokens"`
	TotalTokens             int64                    `json:"total_tokens"`
	PromptTokensDetails     *PromptTokensDetails     `json:"prompt_tokens_details,omitempty"`
	CompletionTokensDetails *CompletionTokensDetails `json:"completion_tokens_details,omitempty"`
}

// PromptTokensDetails is the part of the prompt read from the cache.
type PromptTokensDetails struct {
	CachedTokens int64 `json:"cached_tokens"`
}

// CompletionTokensDetails is the part of the completion spent reasoning.
type CompletionTokensDetails struct {
	ReasoningTokens int64 `json:"reasoning_tokens"`
}

func (p plan) openAIUsage() Usage {
	u := Usage{PromptTokens: p.prompt, CompletionTokens: p.completion, TotalTokens: p.total()}
	if p.cached > 0 {
		u.PromptTokensDetails = &PromptTokensDetails{CachedTokens: p.cached}
	}
	if p.reasoning > 0 {
		u.CompletionTokensDetails = &CompletionTokensDetails{ReasoningTokens: p.reasoning}
	}
	return u
}

// openAIFinish is a chat or completion choice's finish_reason.
func (p plan) openAIFinish() string {
	switch {
	case len(p.tools) > 0:
		return "tool_calls"
	case p.truncated:
		return "length"
	}
	return "stop"
}

func (s *Server) chatCompletions(w http.ResponseWriter, r *http.Request) {
	var req chatRequest
	b, ok := s.openAIStart(w, r, &req)
	if !ok {
		return
	}
	model, ok := openAIModel(w, r, req.Model)
	if !ok || !s.delayOrInject(w, r, b, writeOpenAIInjected) {
		return
	}
	limit := req.MaxCompletionTokens
	if limit == 0 {
		limit = req.MaxTokens
	}
	p := s.planFor(b, model, PromptTokens(req.messageContents()), limit, false)
	if req.Stream {
		s.chatStream(w, r, b, p, req.StreamOptions.includeUsage())
		return
	}
	message := map[string]any{"role": "assistant", "content": p.text()}
	if len(p.tools) > 0 {
		calls := make([]any, len(p.tools))
		for i, t := range p.tools {
			calls[i] = map[string]any{
				"id": p.toolID("call_mock_", i), "type": "function",
				"function": map[string]any{"name": t.name, "arguments": t.args},
			}
		}
		message["content"], message["tool_calls"] = nil, calls
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"id":      p.id("chatcmpl-mock-"),
		"object":  "chat.completion",
		"created": p.created,
		"model":   p.model,
		"choices": []any{map[string]any{"index": 0, "message": message, "finish_reason": p.openAIFinish()}},
		"usage":   p.openAIUsage(),
	})
}

// openAIStreamError is the event that breaks an OpenAI stream whose
// headers are sent.
var openAIStreamError = map[string]any{"error": map[string]any{
	"message": "The server had an error while processing your request (injected by the mock provider).",
	"type":    "server_error", "param": nil, "code": nil,
}}

// chatStream writes the SSE answer one chunk at a time, flushing each, with
// the configured waits.
func (s *Server) chatStream(w http.ResponseWriter, r *http.Request, b behaviour, p plan, includeUsage bool) {
	st := s.startSSE(w, "\n")
	g := &gate{s: s, r: r, b: b}
	id := p.id("chatcmpl-mock-")
	send := func(choices []any, u *Usage) bool {
		chunk := map[string]any{
			"id":      id,
			"object":  "chat.completion.chunk",
			"created": p.created,
			"model":   p.model,
			"choices": choices,
		}
		if includeUsage {
			chunk["usage"] = u // null on every chunk but the last
		}
		return st.send("", chunk)
	}
	first := true
	// content sends one content chunk; the first carries the role.
	content := func(delta map[string]any) bool {
		brk, ok := g.content()
		if !ok {
			return false
		}
		if brk {
			st.send("", openAIStreamError)
			return false
		}
		if first {
			delta["role"], first = "assistant", false
		}
		return send([]any{map[string]any{"index": 0, "delta": delta, "finish_reason": nil}}, nil)
	}
	if g.breaksFirst() {
		st.send("", openAIStreamError)
		return
	}
	for i, t := range p.tools {
		call := map[string]any{
			"index": i, "id": p.toolID("call_mock_", i), "type": "function",
			"function": map[string]any{"name": t.name, "arguments": ""},
		}
		delta := map[string]any{"tool_calls": []any{call}}
		if first {
			delta["content"] = nil
		}
		if !content(delta) {
			return
		}
		for _, piece := range t.argPieces() {
			call := map[string]any{"index": i, "function": map[string]any{"arguments": piece}}
			if !content(map[string]any{"tool_calls": []any{call}}) {
				return
			}
		}
	}
	for _, wd := range p.words {
		if !content(map[string]any{"content": wd + " "}) {
			return
		}
	}
	if brk, ok := g.end(); !ok {
		return
	} else if brk {
		st.send("", openAIStreamError)
		return
	}
	if !send([]any{map[string]any{"index": 0, "delta": map[string]any{}, "finish_reason": p.openAIFinish()}}, nil) {
		return
	}
	if includeUsage {
		u := p.openAIUsage()
		if !send([]any{}, &u) {
			return
		}
	}
	st.write([]byte("data: [DONE]\n\n"))
}

// messageContents returns the text of every message: a string content
// as is, and the text of each part of an array content.
func (r chatRequest) messageContents() []string {
	var out []string
	for _, m := range r.Messages {
		out = appendContentText(out, m.Content)
	}
	return out
}

// appendContentText appends the text of a content that is either a string
// or an array of parts with a `text` member, as OpenAI and Anthropic
// contents are.
func appendContentText(out []string, content json.RawMessage) []string {
	var s string
	if json.Unmarshal(content, &s) == nil {
		return append(out, s)
	}
	var parts []struct {
		Text string `json:"text"`
	}
	if json.Unmarshal(content, &parts) == nil {
		for _, p := range parts {
			out = append(out, p.Text)
		}
	}
	return out
}

// inputItem is one prompt of a legacy completion or one input of an
// embedding request.
type inputItem struct {
	key    string // the text, or the token ids in decimal joined by spaces
	tokens int64
}

// inputItems parses an OpenAI `prompt` or `input`: a string, an array of
// strings, an array of token ids or an array of arrays of token ids.
func inputItems(raw json.RawMessage) ([]inputItem, error) {
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return []inputItem{{key: one, tokens: PromptTokens([]string{one})}}, nil
	}
	var many []string
	if json.Unmarshal(raw, &many) == nil {
		out := make([]inputItem, len(many))
		for i, t := range many {
			out[i] = inputItem{key: t, tokens: PromptTokens([]string{t})}
		}
		return out, nil
	}
	var ids []int64
	if json.Unmarshal(raw, &ids) == nil {
		return []inputItem{tokenItem(ids)}, nil
	}
	var idLists [][]int64
	if json.Unmarshal(raw, &idLists) == nil {
		out := make([]inputItem, len(idLists))
		for i, ids := range idLists {
			out[i] = tokenItem(ids)
		}
		return out, nil
	}
	return nil, errors.New("must be a string, an array of strings, an array of tokens or an array of token arrays")
}

func tokenItem(ids []int64) inputItem {
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = strconv.FormatInt(id, 10)
	}
	return inputItem{key: strings.Join(parts, " "), tokens: int64(len(ids))}
}

// completionRequest holds the fields of a legacy completions request the
// mock reads.
type completionRequest struct {
	Model         string          `json:"model"`
	Prompt        json.RawMessage `json:"prompt"`
	Suffix        string          `json:"suffix"`
	Stream        bool            `json:"stream"`
	StreamOptions *streamOptions  `json:"stream_options"`
	MaxTokens     int64           `json:"max_tokens"`
}

// completions serves the legacy completions API: one choice whatever the
// number of prompts, and text only (tool calls do not exist there).
func (s *Server) completions(w http.ResponseWriter, r *http.Request) {
	var req completionRequest
	b, ok := s.openAIStart(w, r, &req)
	if !ok {
		return
	}
	model, ok := openAIModel(w, r, req.Model)
	if !ok {
		return
	}
	prompt := PromptTokens([]string{req.Suffix})
	if len(req.Prompt) > 0 && string(req.Prompt) != "null" {
		items, err := inputItems(req.Prompt)
		if err != nil {
			writeOpenAIError(w, http.StatusBadRequest, "prompt "+err.Error(), "invalid_request_error", "")
			return
		}
		for _, it := range items {
			prompt += it.tokens
		}
	}
	if !s.delayOrInject(w, r, b, writeOpenAIInjected) {
		return
	}
	b.tools = nil
	p := s.planFor(b, model, prompt, req.MaxTokens, false)
	if !req.Stream {
		writeJSON(w, http.StatusOK, map[string]any{
			"id":      p.id("cmpl-mock-"),
			"object":  "text_completion",
			"created": p.created,
			"model":   p.model,
			"choices": []any{map[string]any{"text": p.text(), "index": 0, "logprobs": nil, "finish_reason": p.openAIFinish()}},
			"usage":   p.openAIUsage(),
		})
		return
	}
	includeUsage := req.StreamOptions.includeUsage()
	st := s.startSSE(w, "\n")
	g := &gate{s: s, r: r, b: b}
	send := func(choices []any, u *Usage) bool {
		chunk := map[string]any{
			"id": p.id("cmpl-mock-"), "object": "text_completion", "created": p.created, "model": p.model, "choices": choices,
		}
		if includeUsage {
			chunk["usage"] = u
		}
		return st.send("", chunk)
	}
	if g.breaksFirst() {
		st.send("", openAIStreamError)
		return
	}
	for _, wd := range p.words {
		brk, ok := g.content()
		if !ok {
			return
		}
		if brk {
			st.send("", openAIStreamError)
			return
		}
		if !send([]any{map[string]any{"text": wd + " ", "index": 0, "logprobs": nil, "finish_reason": nil}}, nil) {
			return
		}
	}
	if brk, ok := g.end(); !ok {
		return
	} else if brk {
		st.send("", openAIStreamError)
		return
	}
	if !send([]any{map[string]any{"text": "", "index": 0, "logprobs": nil, "finish_reason": p.openAIFinish()}}, nil) {
		return
	}
	if includeUsage {
		u := p.openAIUsage()
		if !send([]any{}, &u) {
			return
		}
	}
	st.write([]byte("data: [DONE]\n\n"))
}

// Bounds of an embedding request, OpenAI's for the inputs; the vector
// bound keeps one answer within a few MB.
const (
	maxEmbeddingInputs     = 2048
	maxEmbeddingDimensions = 4096
	maxEmbeddingFloats     = 1 << 20
)

type embeddingRequest struct {
	Model          string          `json:"model"`
	Input          json.RawMessage `json:"input"`
	EncodingFormat string          `json:"encoding_format"`
	Dimensions     *int            `json:"dimensions"`
}

func (s *Server) embeddings(w http.ResponseWriter, r *http.Request) {
	var req embeddingRequest
	b, ok := s.openAIStart(w, r, &req)
	if !ok {
		return
	}
	model, ok := openAIModel(w, r, req.Model)
	if !ok {
		return
	}
	bad := func(msg string) { writeOpenAIError(w, http.StatusBadRequest, msg, "invalid_request_error", "") }
	if len(req.Input) == 0 || string(req.Input) == "null" {
		bad("you must provide an input parameter")
		return
	}
	items, err := inputItems(req.Input)
	if err != nil {
		bad("input " + err.Error())
		return
	}
	dims := s.cfg.EmbeddingDimensions
	if req.Dimensions != nil {
		dims = *req.Dimensions
	}
	switch {
	case len(items) == 0 || len(items) > maxEmbeddingInputs:
		bad("input must hold 1 to " + strconv.Itoa(maxEmbeddingInputs) + " items")
		return
	case dims < 1 || dims > maxEmbeddingDimensions:
		bad("dimensions must be 1 to " + strconv.Itoa(maxEmbeddingDimensions))
		return
	case len(items)*dims > maxEmbeddingFloats:
		bad("the mock answers at most " + strconv.Itoa(maxEmbeddingFloats) + " floats per request")
		return
	case req.EncodingFormat != "" && req.EncodingFormat != "float" && req.EncodingFormat != "base64":
		bad("encoding_format must be float or base64")
		return
	}
	for _, it := range items {
		if it.key == "" {
			bad("input must not hold an empty string or token array")
			return
		}
	}
	if !s.delayOrInject(w, r, b, writeOpenAIInjected) {
		return
	}
	type datum struct {
		Object    string `json:"object"`
		Index     int    `json:"index"`
		Embedding any    `json:"embedding"`
	}
	data := make([]datum, len(items))
	var prompt int64
	for i, it := range items {
		prompt += it.tokens
		v := Embedding(it.key, dims)
		data[i] = datum{Object: "embedding", Index: i, Embedding: v}
		if req.EncodingFormat == "base64" {
			data[i].Embedding = EmbeddingBase64(v)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"object": "list",
		"data":   data,
		"model":  model,
		"usage":  map[string]int64{"prompt_tokens": prompt, "total_tokens": prompt},
	})
}

// Embedding is the mock's embedding of input: a unit vector of the given
// dimensions whose values are a pseudo-random function of input and
// dimensions alone (FNV-1a of the input seeding SplitMix64), so a test
// can compute what the gateway must have relayed. A token-array input is
// embedded as its ids in decimal joined by single spaces.
func Embedding(input string, dimensions int) []float32 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(input)) // a hash.Hash never returns an error
	x := h.Sum64()
	v := make([]float64, dimensions)
	var norm float64
	for i := range v {
		x += 0x9e3779b97f4a7c15
		z := x
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		z ^= z >> 31
		v[i] = float64(z>>11)/(1<<53)*2 - 1
		norm += v[i] * v[i]
	}
	out := make([]float32, dimensions)
	norm = math.Sqrt(norm)
	for i := range v {
		out[i] = float32(v[i] / norm)
	}
	return out
}

// EmbeddingBase64 encodes v as OpenAI's encoding_format "base64" does:
// the little-endian IEEE 754 float32 values, in standard base64.
func EmbeddingBase64(v []float32) string {
	b := make([]byte, 4*len(v))
	for i, f := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
	}
	return base64.StdEncoding.EncodeToString(b)
}

func (s *Server) models(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"object": "list",
		"data":   []any{map[string]any{"id": s.cfg.Model, "object": "model", "created": 0, "owned_by": "moat-mock"}},
	})
}

// writeOpenAIError writes the OpenAI error body; an empty code is null.
func writeOpenAIError(w http.ResponseWriter, status int, message, typ, code string) {
	var c any
	if code != "" {
		c = code
	}
	writeJSON(w, status, map[string]any{
		"error": map[string]any{"message": message, "type": typ, "param": nil, "code": c},
	})
}

// writeOpenAIInjected answers an X-Mock-Error request as OpenAI would.
func writeOpenAIInjected(w http.ResponseWriter, status int) {
	switch {
	case status == http.StatusTooManyRequests:
		w.Header().Set("Retry-After", "1")
		writeOpenAIError(w, status, "Rate limit reached (injected by the mock provider).", "requests", "rate_limit_exceeded")
	case status >= 500:
		writeOpenAIError(w, status, "The server had an error while processing your request (injected by the mock provider).", "server_error", "")
	default:
		writeOpenAIError(w, status, "Injected error.", "invalid_request_error", "")
	}
}
