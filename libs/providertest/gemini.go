package providertest

import (
	"encoding/json"
	"net/http"
	"strings"
)

func (s *Server) routeGemini() {
	for _, v := range []string{"v1beta", "v1"} {
		s.mux.HandleFunc("POST /"+v+"/models/{action}", s.geminiAuth(s.geminiStudio))
	}
	for _, v := range []string{"v1", "v1beta1"} {
		s.mux.HandleFunc("POST /"+v+"/projects/{project}/locations/{location}/publishers/{publisher}/models/{action}",
			s.vertexAuth(s.vertex))
	}
}

// geminiAuth checks an AI Studio key, sent as x-goog-api-key or as the
// `key` query parameter, answering as Google does: 403 without a key, 400
// API_KEY_INVALID with a wrong one.
func (s *Server) geminiAuth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.Credential != "" {
			key := r.Header.Get("X-Goog-Api-Key")
			if key == "" {
				key = r.URL.Query().Get("key")
			}
			switch {
			case key == "":
				writeGeminiError(w, http.StatusForbidden, "Method doesn't allow unregistered callers (callers without "+
					"established identity). Please use API Key or other form of API consumer identity to call this API.")
				return
			case !s.credentialIs(key):
				writeGeminiError(w, http.StatusBadRequest, "API key not valid. Please pass a valid API key.")
				return
			}
		}
		h(w, r)
	}
}

// vertexAuth checks a Vertex AI OAuth access token, sent as a Bearer.
func (s *Server) vertexAuth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.Credential != "" && !s.bearerOK(r.Header.Get("Authorization")) {
			writeGeminiError(w, http.StatusUnauthorized, "Request had invalid authentication credentials. Expected OAuth 2 "+
				"access token, login cookie or other valid authentication credential.")
			return
		}
		h(w, r)
	}
}

// modelAction splits a `{model}:{method}` path segment.
func modelAction(r *http.Request) (model, method string) {
	a := r.PathValue("action")
	if i := strings.LastIndexByte(a, ':'); i >= 0 {
		return a[:i], a[i+1:]
	}
	return a, ""
}

func (s *Server) geminiStudio(w http.ResponseWriter, r *http.Request) {
	model, method := modelAction(r)
	s.gemini(w, r, model, method)
}

// vertex serves Vertex AI's publisher models: Google's in the Gemini
// format, Anthropic's in the Messages format (rawPredict).
func (s *Server) vertex(w http.ResponseWriter, r *http.Request) {
	model, method := modelAction(r)
	switch r.PathValue("publisher") {
	case "google":
		s.gemini(w, r, model, method)
	case "anthropic":
		switch method {
		case "rawPredict", "streamRawPredict":
			s.anthropicMessages(w, r, dialectVertex, model, method == "streamRawPredict")
		default:
			writeGeminiError(w, http.StatusNotFound, "Method "+method+" is not served by the mock for publisher anthropic.")
		}
	default:
		writeGeminiError(w, http.StatusNotFound, "Publisher "+r.PathValue("publisher")+" is not served by the mock.")
	}
}

type geminiContent struct {
	Role  string       `json:"role,omitempty"`
	Parts []geminiPart `json:"parts"`
}

type geminiFunctionCall struct {
	Name string          `json:"name"`
	Args json.RawMessage `json:"args"`
}

type geminiPart struct {
	Text             *string             `json:"text,omitempty"`
	Thought          bool                `json:"thought,omitempty"`
	FunctionCall     *geminiFunctionCall `json:"functionCall,omitempty"`
	ThoughtSignature string              `json:"thoughtSignature,omitempty"`
}

// geminiConfig is generationConfig. Google's JSON parser accepts the
// proto field names as well as their lowerCamelCase, and clients send
// both, so the mock reads both.
type geminiConfig struct {
	MaxOutputTokens      int64           `json:"maxOutputTokens"`
	MaxOutputTokensSnake int64           `json:"max_output_tokens"`
	ThinkingConfig       *geminiThinking `json:"thinkingConfig"`
	ThinkingConfigSnake  *geminiThinking `json:"thinking_config"`
}

type geminiThinking struct {
	IncludeThoughts      bool `json:"includeThoughts"`
	IncludeThoughtsSnake bool `json:"include_thoughts"`
}

type geminiRequest struct {
	Contents               []geminiContent `json:"contents"`
	SystemInstruction      *geminiContent  `json:"systemInstruction"`
	SystemInstructionSnake *geminiContent  `json:"system_instruction"`
	GenerationConfig       *geminiConfig   `json:"generationConfig"`
	GenerationConfigSnake  *geminiConfig   `json:"generation_config"`
}

// texts returns the text of every part of the system instruction and of
// the contents.
func (r geminiRequest) texts() []string {
	var out []string
	add := func(c *geminiContent) {
		for _, p := range c.Parts {
			if p.Text != nil {
				out = append(out, *p.Text)
			}
		}
	}
	for _, c := range []*geminiContent{r.SystemInstruction, r.SystemInstructionSnake} {
		if c != nil {
			add(c)
		}
	}
	for i := range r.Contents {
		add(&r.Contents[i])
	}
	return out
}

func (r geminiRequest) config() (limit int64, includeThoughts bool) {
	for _, c := range []*geminiConfig{r.GenerationConfig, r.GenerationConfigSnake} {
		if c == nil {
			continue
		}
		limit = max(limit, c.MaxOutputTokens, c.MaxOutputTokensSnake)
		for _, t := range []*geminiThinking{c.ThinkingConfig, c.ThinkingConfigSnake} {
			includeThoughts = includeThoughts || (t != nil && (t.IncludeThoughts || t.IncludeThoughtsSnake))
		}
	}
	return limit, includeThoughts
}

type geminiCandidate struct {
	Content      geminiContent `json:"content"`
	FinishReason string        `json:"finishReason,omitempty"`
	Index        int           `json:"index"`
}

type geminiUsage struct {
	PromptTokenCount        int64 `json:"promptTokenCount"`
	CandidatesTokenCount    int64 `json:"candidatesTokenCount"`
	TotalTokenCount         int64 `json:"totalTokenCount"`
	CachedContentTokenCount int64 `json:"cachedContentTokenCount,omitempty"`
	ThoughtsTokenCount      int64 `json:"thoughtsTokenCount,omitempty"`
}

type geminiResponse struct {
	Candidates    []geminiCandidate `json:"candidates"`
	UsageMetadata *geminiUsage      `json:"usageMetadata,omitempty"`
	ModelVersion  string            `json:"modelVersion"`
	ResponseID    string            `json:"responseId"`
}

// geminiUsage reports the prompt with its cached part included, and the
// candidates without the thoughts, as Gemini does: the total is the
// prompt plus the completion.
func (p plan) geminiUsage() *geminiUsage {
	return &geminiUsage{
		PromptTokenCount:        p.prompt,
		CandidatesTokenCount:    p.completion - p.reasoning,
		TotalTokenCount:         p.total(),
		CachedContentTokenCount: p.cached,
		ThoughtsTokenCount:      p.reasoning,
	}
}

func (p plan) geminiFinish() string {
	if p.truncated {
		return "MAX_TOKENS"
	}
	return "STOP" // function calls end with STOP too
}

func (p plan) geminiResponse(parts []geminiPart, finish string, usage *geminiUsage) geminiResponse {
	return geminiResponse{
		Candidates:    []geminiCandidate{{Content: geminiContent{Role: "model", Parts: parts}, FinishReason: finish, Index: 0}},
		UsageMetadata: usage,
		ModelVersion:  p.model,
		ResponseID:    p.id("mock-response-"),
	}
}

// functionCallPart is call i's part; with reasoning tokens set, the first
// carries a thought signature, as Gemini's thinking models send one that
// must come back with the call.
func (p plan) functionCallPart(i int) geminiPart {
	part := geminiPart{FunctionCall: &geminiFunctionCall{Name: p.tools[i].name, Args: json.RawMessage(p.tools[i].args)}}
	if i == 0 && p.reasoning > 0 {
		part.ThoughtSignature = Signature(p.tools[i].name)
	}
	return part
}

func ptr[T any](v T) *T { return &v }

func (s *Server) gemini(w http.ResponseWriter, r *http.Request, model, method string) {
	if method != "generateContent" && method != "streamGenerateContent" {
		writeGeminiError(w, http.StatusNotFound, "Method "+method+" is not served by the mock.")
		return
	}
	b, err := s.behaviourFor(r)
	if err != nil {
		writeGeminiError(w, http.StatusBadRequest, err.Error())
		return
	}
	var req geminiRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeGeminiError(w, http.StatusBadRequest, "Invalid JSON payload received.")
		return
	}
	if len(req.Contents) == 0 {
		writeGeminiError(w, http.StatusBadRequest, "* GenerateContentRequest.contents: contents is not specified")
		return
	}
	if !s.delayOrInject(w, r, b, writeGeminiInjected) {
		return
	}
	limit, includeThoughts := req.config()
	p := s.planFor(b, model, PromptTokens(req.texts()), limit, includeThoughts)
	if method == "generateContent" {
		var parts []geminiPart
		if p.thinking != nil {
			t := p.thinkingText()
			parts = append(parts, geminiPart{Text: &t, Thought: true, ThoughtSignature: Signature(t)})
		}
		for i := range p.tools {
			parts = append(parts, p.functionCallPart(i))
		}
		if len(p.tools) == 0 {
			parts = append(parts, geminiPart{Text: ptr(p.text())})
		}
		writeJSON(w, http.StatusOK, p.geminiResponse(parts, p.geminiFinish(), p.geminiUsage()))
		return
	}
	s.geminiStream(w, r, b, p, r.URL.Query().Get("alt") == "sse")
}

// geminiStreamError is the chunk that breaks a Gemini stream.
var geminiStreamError = map[string]any{"error": map[string]any{
	"code": 503, "message": "The model is overloaded. Please try again later (injected by the mock provider).", "status": "UNAVAILABLE",
}}

// geminiStream writes streamGenerateContent: with ?alt=sse, SSE `data:`
// events separated by CRLF as Google sends them; without, one JSON array
// written element by element. Each chunk is a GenerateContentResponse with
// one part; the last, with an empty text part, carries the finishReason
// and the usage.
func (s *Server) geminiStream(w http.ResponseWriter, r *http.Request, b behaviour, p plan, asSSE bool) {
	var send func(v any) bool
	var close func()
	if asSSE {
		st := s.startSSE(w, "\r\n")
		send = func(v any) bool { return st.send("", v) }
		close = func() {}
	} else {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		st := &sse{s: s, w: w}
		st.f, _ = w.(http.Flusher)
		sep := "["
		send = func(v any) bool {
			data, err := json.Marshal(v)
			if err != nil {
				return false
			}
			ok := st.write(append([]byte(sep), data...))
			sep = ",\r\n"
			return ok
		}
		close = func() { st.write([]byte("]")) }
	}
	g := &gate{s: s, r: r, b: b}
	fail := func() {
		if send(geminiStreamError) {
			close()
		}
	}
	if g.breaksFirst() {
		fail()
		return
	}
	chunk := func(part geminiPart) bool {
		brk, ok := g.content()
		if ok && brk {
			fail()
		}
		return ok && !brk && send(p.geminiResponse([]geminiPart{part}, "", nil))
	}
	var thought strings.Builder
	for i, wd := range p.thinking {
		thought.WriteString(wd + " ")
		part := geminiPart{Text: ptr(wd + " "), Thought: true}
		if i == len(p.thinking)-1 {
			part.ThoughtSignature = Signature(thought.String())
		}
		if !chunk(part) {
			return
		}
	}
	for i := range p.tools {
		if !chunk(p.functionCallPart(i)) {
			return
		}
	}
	for _, wd := range p.words {
		if !chunk(geminiPart{Text: ptr(wd + " ")}) {
			return
		}
	}
	if brk, ok := g.end(); !ok {
		return
	} else if brk {
		fail()
		return
	}
	if send(p.geminiResponse([]geminiPart{{Text: ptr("")}}, p.geminiFinish(), p.geminiUsage())) {
		close()
	}
}

// geminiStatuses are Google's canonical codes by HTTP status.
var geminiStatuses = map[int]string{
	400: "INVALID_ARGUMENT",
	401: "UNAUTHENTICATED",
	403: "PERMISSION_DENIED",
	404: "NOT_FOUND",
	409: "ABORTED",
	429: "RESOURCE_EXHAUSTED",
	499: "CANCELLED",
	500: "INTERNAL",
	501: "NOT_IMPLEMENTED",
	503: "UNAVAILABLE",
	504: "DEADLINE_EXCEEDED",
}

func geminiStatus(status int) string {
	if s, ok := geminiStatuses[status]; ok {
		return s
	}
	if status >= 500 {
		return "INTERNAL"
	}
	return "FAILED_PRECONDITION"
}

func writeGeminiError(w http.ResponseWriter, status int, message string) {
	writeJSON(w, status, map[string]any{"error": map[string]any{
		"code": status, "message": message, "status": geminiStatus(status),
	}})
}

func writeGeminiInjected(w http.ResponseWriter, status int) {
	if status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "1")
	}
	writeGeminiError(w, status, "Injected "+geminiStatus(status)+" (injected by the mock provider).")
}
