package providertest

import (
	"encoding/json"
	"net/http"
	"strings"
)

// awsPadding is the `p` member Bedrock adds to every stream event payload
// (random there, to hide the lengths of the tokens; fixed here), which a
// decoder must ignore.
const awsPadding = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"

// The exception that breaks a Bedrock stream (X-Mock-Stream-Error).
const (
	bedrockStreamException = "serviceUnavailableException"
	bedrockStreamMessage   = "Bedrock is unable to process your request (injected by the mock provider)."
)

func (s *Server) routeBedrock() {
	for path, h := range map[string]http.HandlerFunc{
		"converse":        func(w http.ResponseWriter, r *http.Request) { s.converse(w, r, false) },
		"converse-stream": func(w http.ResponseWriter, r *http.Request) { s.converse(w, r, true) },
		"invoke": func(w http.ResponseWriter, r *http.Request) {
			s.anthropicMessages(w, r, dialectBedrock, r.PathValue("modelId"), false)
		},
		"invoke-with-response-stream": func(w http.ResponseWriter, r *http.Request) {
			s.anthropicMessages(w, r, dialectBedrock, r.PathValue("modelId"), true)
		},
	} {
		s.mux.HandleFunc("POST /model/{modelId}/"+path, s.bedrockAuth(h))
	}
}

// bedrockAuth requires an Authorization header when a credential is
// configured: a SigV4 signature, which the mock does not verify (tests
// read it from the recorded request, see ParseSigV4), or a Bedrock API key
// as a Bearer, which must be the credential.
func (s *Server) bedrockAuth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.Credential != "" {
			a := r.Header.Get("Authorization")
			switch {
			case a == "":
				writeBedrockError(w, http.StatusForbidden, "MissingAuthenticationTokenException", "Missing Authentication Token")
				return
			case strings.HasPrefix(a, "AWS4-HMAC-SHA256 "):
			case !s.bearerOK(a):
				writeBedrockError(w, http.StatusForbidden, "UnrecognizedClientException", "The security token included in the request is invalid.")
				return
			}
		}
		h(w, r)
	}
}

// SigV4 is the Authorization header of an AWS Signature Version 4 request,
// parsed: what a test checks to see that the gateway signed for the right
// key, region and service.
type SigV4 struct {
	AccessKeyID   string
	Date          string // YYYYMMDD
	Region        string
	Service       string
	SignedHeaders []string
	Signature     string
}

// ParseSigV4 parses an `AWS4-HMAC-SHA256 Credential=<key>/<date>/<region>/
// <service>/aws4_request, SignedHeaders=<a;b>, Signature=<hex>` header; it
// reports false for anything else. It does not verify the signature.
func ParseSigV4(authorization string) (SigV4, bool) {
	rest, ok := strings.CutPrefix(authorization, "AWS4-HMAC-SHA256 ")
	if !ok {
		return SigV4{}, false
	}
	var v SigV4
	var seen int
	for _, f := range strings.Split(rest, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(f), "=")
		if !ok {
			return SigV4{}, false
		}
		switch k {
		case "Credential":
			scope := strings.Split(val, "/")
			if len(scope) != 5 || scope[4] != "aws4_request" {
				return SigV4{}, false
			}
			v.AccessKeyID, v.Date, v.Region, v.Service = scope[0], scope[1], scope[2], scope[3]
		case "SignedHeaders":
			v.SignedHeaders = strings.Split(val, ";")
		case "Signature":
			v.Signature = val
		default:
			return SigV4{}, false
		}
		seen++
	}
	if seen != 3 || v.AccessKeyID == "" || v.Signature == "" || len(v.SignedHeaders) == 0 {
		return SigV4{}, false
	}
	return v, true
}

type converseBlock struct {
	Text       *string `json:"text"`
	ToolResult *struct {
		Content []converseBlock `json:"content"`
	} `json:"toolResult"`
}

// converseRequest holds the fields of a Converse request the mock reads.
type converseRequest struct {
	Messages []struct {
		Content []converseBlock `json:"content"`
	} `json:"messages"`
	System          []converseBlock `json:"system"`
	InferenceConfig *struct {
		MaxTokens int64 `json:"maxTokens"`
	} `json:"inferenceConfig"`
	AdditionalModelRequestFields *struct {
		Thinking *struct {
			Type string `json:"type"`
		} `json:"thinking"`
	} `json:"additionalModelRequestFields"`
}

// texts returns the text of the system blocks, of the messages' text
// blocks, and of the text blocks inside toolResult blocks.
func (r converseRequest) texts() []string {
	var out []string
	var add func([]converseBlock)
	add = func(blocks []converseBlock) {
		for _, b := range blocks {
			if b.Text != nil {
				out = append(out, *b.Text)
			}
			if b.ToolResult != nil {
				add(b.ToolResult.Content)
			}
		}
	}
	add(r.System)
	for _, m := range r.Messages {
		add(m.Content)
	}
	return out
}

// showsReasoning: Claude on Bedrock reasons when asked through
// additionalModelRequestFields; reasoning models (the mock's reasoning
// tokens set) show theirs unasked.
func (r converseRequest) showsReasoning(b behaviour) bool {
	f := r.AdditionalModelRequestFields
	asked := f != nil && f.Thinking != nil && (f.Thinking.Type == "enabled" || f.Thinking.Type == "adaptive")
	return asked || b.reasoning > 0
}

type converseUsage struct {
	InputTokens           int64 `json:"inputTokens"`
	OutputTokens          int64 `json:"outputTokens"`
	TotalTokens           int64 `json:"totalTokens"`
	CacheReadInputTokens  int64 `json:"cacheReadInputTokens,omitempty"`
	CacheWriteInputTokens int64 `json:"cacheWriteInputTokens,omitempty"`
}

// converseUsage reports input tokens without the cached and cache-write
// ones and a total of all of them, as Bedrock does.
func (p plan) converseUsage() converseUsage {
	return converseUsage{
		InputTokens: p.uncached(), OutputTokens: p.completion, TotalTokens: p.total(),
		CacheReadInputTokens: p.cached, CacheWriteInputTokens: p.cacheWrite,
	}
}

func (s *Server) converse(w http.ResponseWriter, r *http.Request, stream bool) {
	b, err := s.behaviourFor(r)
	if err != nil {
		writeBedrockError(w, http.StatusBadRequest, "ValidationException", err.Error())
		return
	}
	var req converseRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeBedrockError(w, http.StatusBadRequest, "ValidationException", "the request body is not valid JSON")
		return
	}
	if len(req.Messages) == 0 {
		writeBedrockError(w, http.StatusBadRequest, "ValidationException",
			"1 validation error detected: Value null at 'messages' failed to satisfy constraint: Member must not be null")
		return
	}
	if !s.delayOrInject(w, r, b, writeBedrockInjected) {
		return
	}
	var limit int64
	if req.InferenceConfig != nil {
		limit = req.InferenceConfig.MaxTokens
	}
	p := s.planFor(b, r.PathValue("modelId"), PromptTokens(req.texts()), limit, req.showsReasoning(b))
	if stream {
		s.converseStream(w, r, b, p)
		return
	}
	var content []any
	if p.thinking != nil {
		t := p.thinkingText()
		content = append(content, map[string]any{"reasoningContent": map[string]any{
			"reasoningText": map[string]any{"text": t, "signature": Signature(t)},
		}})
	}
	for i, t := range p.tools {
		content = append(content, map[string]any{"toolUse": map[string]any{
			"toolUseId": p.toolID("tooluse_mock_", i), "name": t.name, "input": json.RawMessage(t.args),
		}})
	}
	if len(p.tools) == 0 {
		content = append(content, map[string]any{"text": p.text()})
	}
	w.Header().Set("X-Amzn-Requestid", p.id("mock-request-"))
	writeJSON(w, http.StatusOK, map[string]any{
		"output":     map[string]any{"message": map[string]any{"role": "assistant", "content": content}},
		"stopReason": p.anthropicStop(), // Converse uses Anthropic's stop reasons
		"usage":      p.converseUsage(),
		"metrics":    map[string]int64{"latencyMs": b.delay.Milliseconds()},
	})
}

// converseStream writes ConverseStream's events as an eventstream:
// messageStart, per block contentBlockStart (tool use only, as Bedrock
// sends it), contentBlockDelta..., contentBlockStop, then messageStop and
// metadata with the usage.
func (s *Server) converseStream(w http.ResponseWriter, r *http.Request, b behaviour, p plan) {
	st := s.startAWSStream(w, p.id("mock-request-"))
	g := &gate{s: s, r: r, b: b}
	fail := func() { st.exception(bedrockStreamException, bedrockStreamMessage) }
	if g.breaksFirst() {
		fail()
		return
	}
	send := func(typ string, fields map[string]any) bool {
		fields["p"] = awsPadding
		return st.event(typ, fields)
	}
	content := func() bool {
		brk, ok := g.content()
		if ok && brk {
			fail()
		}
		return ok && !brk
	}
	index := 0
	delta := func(d map[string]any) bool {
		return send("contentBlockDelta", map[string]any{"contentBlockIndex": index, "delta": d})
	}
	stop := func() bool {
		ok := send("contentBlockStop", map[string]any{"contentBlockIndex": index})
		index++
		return ok
	}
	if !send("messageStart", map[string]any{"role": "assistant"}) {
		return
	}
	if p.thinking != nil {
		var text strings.Builder
		for _, wd := range p.thinking {
			if !content() || !delta(map[string]any{"reasoningContent": map[string]any{"text": wd + " "}}) {
				return
			}
			text.WriteString(wd + " ")
		}
		if !delta(map[string]any{"reasoningContent": map[string]any{"signature": Signature(text.String())}}) || !stop() {
			return
		}
	}
	for i, t := range p.tools {
		if !content() || !send("contentBlockStart", map[string]any{"contentBlockIndex": index, "start": map[string]any{
			"toolUse": map[string]any{"toolUseId": p.toolID("tooluse_mock_", i), "name": t.name},
		}}) {
			return
		}
		for _, piece := range t.argPieces() {
			if !content() || !delta(map[string]any{"toolUse": map[string]any{"input": piece}}) {
				return
			}
		}
		if !stop() {
			return
		}
	}
	if len(p.words) > 0 {
		for _, wd := range p.words {
			if !content() || !delta(map[string]any{"text": wd + " "}) {
				return
			}
		}
		if !stop() {
			return
		}
	}
	if brk, ok := g.end(); !ok {
		return
	} else if brk {
		fail()
		return
	}
	if !send("messageStop", map[string]any{"stopReason": p.anthropicStop()}) {
		return
	}
	send("metadata", map[string]any{"usage": p.converseUsage(), "metrics": map[string]int64{"latencyMs": b.delay.Milliseconds()}})
}

// bedrockErrorTypes are Bedrock's error types by HTTP status.
var bedrockErrorTypes = map[int]string{
	400: "ValidationException",
	403: "AccessDeniedException",
	404: "ResourceNotFoundException",
	408: "ModelTimeoutException",
	424: "ModelErrorException",
	429: "ThrottlingException",
	500: "InternalServerException",
	503: "ServiceUnavailableException",
}

// writeBedrockError writes an AWS JSON error: the type in the
// x-amzn-ErrorType header, the message in the body.
func writeBedrockError(w http.ResponseWriter, status int, typ, message string) {
	w.Header().Set("X-Amzn-Errortype", typ)
	writeJSON(w, status, map[string]string{"message": message})
}

func writeBedrockInjected(w http.ResponseWriter, status int) {
	typ, ok := bedrockErrorTypes[status]
	if !ok {
		typ = "ValidationException"
		if status >= 500 {
			typ = "InternalServerException"
		}
	}
	writeBedrockError(w, status, typ, "Injected "+typ+" (injected by the mock provider).")
}
