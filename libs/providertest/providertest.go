// Package providertest is a model provider for tests and benchmarks: an
// http.Handler that speaks the OpenAI chat-completions wire format with
// deterministic answers, so that the gateway's forwarding, usage accounting
// and timeouts can be checked without a real model.
//
// It serves:
//
//   - POST /v1/chat/completions: a JSON completion with `usage`, or with
//     `"stream": true` an SSE stream of `data: {chunk}` events ending with
//     `data: [DONE]`. With `stream_options.include_usage` the stream carries
//     `"usage": null` on every chunk and a final chunk with empty choices
//     and the usage, as OpenAI does.
//   - GET /v1/models: the configured model in the OpenAI list format.
//
// Token counts are a documented function of the request, so tests can
// predict them: the prompt tokens are the number of whitespace-separated
// words in the content of every message (string contents, and the `text`
// of content parts), and the completion tokens are the chunk count. The
// completion is that many words, "tok1 tok2 ...", one word per stream
// chunk.
//
// Behaviour is set by Config and can be overridden per request by headers:
// x-mock-delay-ms, x-mock-ttft-ms, x-mock-chunks, x-mock-chunk-delay-ms, and
// x-mock-error (an HTTP status from 400 to 599, answered with an OpenAI
// error body, e.g. 429 or 500). Every wait honours the request's context,
// so a caller that hangs up ends the handler at once; Canceled counts those
// requests.
package providertest

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for the zero values of Config.
const (
	DefaultModel  = "mock-model"
	DefaultChunks = 4
)

// Per-request override headers. Durations are whole milliseconds.
const (
	HeaderDelay      = "X-Mock-Delay-Ms"
	HeaderTTFT       = "X-Mock-Ttft-Ms"
	HeaderChunks     = "X-Mock-Chunks"
	HeaderChunkDelay = "X-Mock-Chunk-Delay-Ms"
	HeaderError      = "X-Mock-Error"
)

// maxBody bounds the request bodies the mock reads; a real provider has a
// limit too, and an unbounded read would let a test exhaust memory.
const maxBody = 16 << 20

// Config is the mock's default behaviour.
type Config struct {
	// Credential, when set, is the only API key accepted, as
	// `Authorization: Bearer <Credential>`; anything else gets 401
	// invalid_api_key. Empty accepts every caller.
	Credential string
	// Model is the model GET /v1/models lists; empty means DefaultModel.
	// Completions echo whatever model the request names.
	Model string
	// Delay is the wait before the response headers, in both modes.
	Delay time.Duration
	// TTFT is the wait between the headers and the first chunk of a
	// stream (time to first token). Non-streaming answers ignore it.
	TTFT time.Duration
	// Chunks is the number of content chunks of a stream, and the
	// completion tokens of every answer; 0 means DefaultChunks.
	Chunks int
	// ChunkDelay is the wait between two content chunks of a stream.
	ChunkDelay time.Duration
}

// Request is a request the mock received, as recorded for tests.
type Request struct {
	Method string
	Path   string
	Header http.Header
	Body   []byte
}

// Server is the mock provider. It is safe for concurrent use.
type Server struct {
	cfg Config
	mux *http.ServeMux

	seq      atomic.Int64 // completion ids
	requests atomic.Int64
	canceled atomic.Int64

	mu   sync.Mutex
	last *Request
}

// New returns a mock provider behaving as cfg says.
func New(cfg Config) *Server {
	if cfg.Model == "" {
		cfg.Model = DefaultModel
	}
	if cfg.Chunks <= 0 {
		cfg.Chunks = DefaultChunks
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux()}
	s.mux.HandleFunc("POST /v1/chat/completions", s.chatCompletions)
	s.mux.HandleFunc("GET /v1/models", s.models)
	return s
}

// ServeHTTP records the request, checks the credential and serves it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		writeError(w, http.StatusBadRequest, "could not read the request body", "invalid_request_error", "")
		return
	}
	if len(body) > maxBody {
		writeError(w, http.StatusRequestEntityTooLarge, "request body too large", "invalid_request_error", "")
		return
	}
	s.record(r, body)
	r.Body = io.NopCloser(bytes.NewReader(body))

	if s.cfg.Credential != "" && !s.authorized(r.Header.Get("Authorization")) {
		writeError(w, http.StatusUnauthorized, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
		return
	}
	s.mux.ServeHTTP(w, r)
}

func (s *Server) authorized(header string) bool {
	got, ok := strings.CutPrefix(header, "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(s.cfg.Credential)) == 1
}

func (s *Server) record(r *http.Request, body []byte) {
	req := &Request{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: body}
	s.mu.Lock()
	s.last = req
	s.mu.Unlock()
}

// LastRequest returns the latest request received, whatever its outcome,
// and false before the first one.
func (s *Server) LastRequest() (Request, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.last == nil {
		return Request{}, false
	}
	return *s.last, true
}

// Requests counts the requests received.
func (s *Server) Requests() int64 { return s.requests.Load() }

// Canceled counts the completions whose caller went away (the request's
// context ended) before the answer was complete.
func (s *Server) Canceled() int64 { return s.canceled.Load() }

// behaviour is Config with the request's overrides applied.
type behaviour struct {
	delay, ttft, chunkDelay time.Duration
	chunks                  int
	errStatus               int
}

// behaviourFor applies the override headers of r to the defaults. A
// malformed header is the test's mistake, so it is refused, not ignored.
func (s *Server) behaviourFor(r *http.Request) (behaviour, error) {
	b := behaviour{delay: s.cfg.Delay, ttft: s.cfg.TTFT, chunkDelay: s.cfg.ChunkDelay, chunks: s.cfg.Chunks}
	for _, o := range []struct {
		header string
		into   *time.Duration
	}{{HeaderDelay, &b.delay}, {HeaderTTFT, &b.ttft}, {HeaderChunkDelay, &b.chunkDelay}} {
		if v := r.Header.Get(o.header); v != "" {
			ms, err := strconv.Atoi(v)
			if err != nil || ms < 0 {
				return b, fmt.Errorf("%s must be a whole number of milliseconds", o.header)
			}
			*o.into = time.Duration(ms) * time.Millisecond
		}
	}
	if v := r.Header.Get(HeaderChunks); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 100000 {
			return b, fmt.Errorf("%s must be 0 to 100000", HeaderChunks)
		}
		b.chunks = n
	}
	if v := r.Header.Get(HeaderError); v != "" {
		code, err := strconv.Atoi(v)
		if err != nil || code < 400 || code > 599 {
			return b, fmt.Errorf("%s must be an HTTP status from 400 to 599", HeaderError)
		}
		b.errStatus = code
	}
	return b, nil
}

// chatRequest holds the fields of a chat-completions request the mock
// reads; the rest is ignored, as a provider ignores what it does not know.
type chatRequest struct {
	Model    string `json:"model"`
	Stream   bool   `json:"stream"`
	Messages []struct {
		Content json.RawMessage `json:"content"`
	} `json:"messages"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

// Usage is the OpenAI usage object.
type Usage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
}

func (s *Server) chatCompletions(w http.ResponseWriter, r *http.Request) {
	b, err := s.behaviourFor(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), "invalid_request_error", "")
		return
	}
	var req chatRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "the request body is not valid JSON", "invalid_request_error", "")
		return
	}
	if req.Model == "" {
		writeError(w, http.StatusBadRequest, "you must provide a model parameter", "invalid_request_error", "")
		return
	}
	if !s.wait(r, b.delay) {
		return
	}
	if b.errStatus != 0 {
		writeInjected(w, b.errStatus)
		return
	}
	usage := Usage{PromptTokens: PromptTokens(req.messageContents()), CompletionTokens: int64(b.chunks)}
	usage.TotalTokens = usage.PromptTokens + usage.CompletionTokens
	id := "chatcmpl-mock-" + strconv.FormatInt(s.seq.Add(1), 10)
	created := time.Now().Unix()
	if req.Stream {
		s.stream(w, r, b, req, id, created, usage)
		return
	}
	words := make([]string, b.chunks)
	for i := range words {
		words[i] = word(i)
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"id":      id,
		"object":  "chat.completion",
		"created": created,
		"model":   req.Model,
		"choices": []any{map[string]any{
			"index":         0,
			"message":       map[string]any{"role": "assistant", "content": strings.Join(words, " ")},
			"finish_reason": "stop",
		}},
		"usage": usage,
	})
}

// stream writes the SSE answer one chunk at a time, flushing each, with
// the configured waits.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, b behaviour, req chatRequest, id string, created int64, usage Usage) {
	flusher, _ := w.(http.Flusher)
	includeUsage := req.StreamOptions != nil && req.StreamOptions.IncludeUsage
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	if flusher != nil {
		flusher.Flush()
	}
	send := func(choices []any, u *Usage) bool {
		chunk := map[string]any{
			"id":      id,
			"object":  "chat.completion.chunk",
			"created": created,
			"model":   req.Model,
			"choices": choices,
		}
		if includeUsage {
			chunk["usage"] = u // null on every chunk but the last
		}
		data, err := json.Marshal(chunk)
		if err != nil {
			return false
		}
		if _, err := fmt.Fprintf(w, "data: %s\n\n", data); err != nil {
			return false
		}
		if flusher != nil {
			flusher.Flush()
		}
		return true
	}
	if !s.wait(r, b.ttft) {
		return
	}
	for i := range b.chunks {
		if i > 0 && !s.wait(r, b.chunkDelay) {
			return
		}
		delta := map[string]any{"content": word(i) + " "}
		if i == 0 {
			delta["role"] = "assistant"
		}
		if !send([]any{map[string]any{"index": 0, "delta": delta, "finish_reason": nil}}, nil) {
			s.canceled.Add(1)
			return
		}
	}
	if !send([]any{map[string]any{"index": 0, "delta": map[string]any{}, "finish_reason": "stop"}}, nil) {
		s.canceled.Add(1)
		return
	}
	if includeUsage && !send([]any{}, &usage) {
		s.canceled.Add(1)
		return
	}
	if _, err := io.WriteString(w, "data: [DONE]\n\n"); err != nil {
		s.canceled.Add(1)
		return
	}
	if flusher != nil {
		flusher.Flush()
	}
}

// wait sleeps for d unless the caller goes away first; it reports whether
// the handler should go on.
func (s *Server) wait(r *http.Request, d time.Duration) bool {
	if err := r.Context().Err(); err != nil {
		s.canceled.Add(1)
		return false
	}
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		s.canceled.Add(1)
		return false
	}
}

func (s *Server) models(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"object": "list",
		"data":   []any{map[string]any{"id": s.cfg.Model, "object": "model", "created": 0, "owned_by": "moat-mock"}},
	})
}

// messageContents returns the text of every message: a string content
// as is, and the text of each part of an array content.
func (r chatRequest) messageContents() []string {
	var out []string
	for _, m := range r.Messages {
		var s string
		if json.Unmarshal(m.Content, &s) == nil {
			out = append(out, s)
			continue
		}
		var parts []struct {
			Text string `json:"text"`
		}
		if json.Unmarshal(m.Content, &parts) == nil {
			for _, p := range parts {
				out = append(out, p.Text)
			}
		}
	}
	return out
}

// PromptTokens is the mock's tokenizer: the number of whitespace-separated
// words in contents.
func PromptTokens(contents []string) int64 {
	var n int64
	for _, c := range contents {
		n += int64(len(strings.Fields(c)))
	}
	return n
}

// word is the i-th word of a completion.
func word(i int) string { return "tok" + strconv.Itoa(i+1) }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError writes the OpenAI error body; an empty code is null.
func writeError(w http.ResponseWriter, status int, message, typ, code string) {
	var c any
	if code != "" {
		c = code
	}
	writeJSON(w, status, map[string]any{
		"error": map[string]any{"message": message, "type": typ, "param": nil, "code": c},
	})
}

// writeInjected answers an x-mock-error request as a provider would.
func writeInjected(w http.ResponseWriter, status int) {
	switch {
	case status == http.StatusTooManyRequests:
		w.Header().Set("Retry-After", "1")
		writeError(w, status, "Rate limit reached (injected by the mock provider).", "requests", "rate_limit_exceeded")
	case status >= 500:
		writeError(w, status, "The server had an error while processing your request (injected by the mock provider).", "server_error", "")
	default:
		writeError(w, status, "Injected error.", "invalid_request_error", "")
	}
}
