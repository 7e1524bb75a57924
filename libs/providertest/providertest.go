package providertest

import (
	"bytes"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for the zero values of Config.
const (
	DefaultModel               = "mock-model"
	DefaultChunks              = 4
	DefaultEmbeddingDimensions = 8
)

// Per-request override headers. Durations are whole milliseconds, token
// counts whole numbers.
const (
	HeaderDelay            = "X-Mock-Delay-Ms"
	HeaderTTFT             = "X-Mock-Ttft-Ms"
	HeaderChunks           = "X-Mock-Chunks"
	HeaderChunkDelay       = "X-Mock-Chunk-Delay-Ms"
	HeaderError            = "X-Mock-Error"
	HeaderCachedTokens     = "X-Mock-Cached-Tokens"      //nolint:gosec // a header name, not a credential
	HeaderCacheWriteTokens = "X-Mock-Cache-Write-Tokens" //nolint:gosec // a header name, not a credential
	HeaderReasoningTokens  = "X-Mock-Reasoning-Tokens"
	HeaderToolCall         = "X-Mock-Tool-Call"
	HeaderStreamError      = "X-Mock-Stream-Error"
)

// maxBody bounds the request bodies the mock reads; a real provider has a
// limit too, and an unbounded read would let a test exhaust memory. It
// also bounds the bodies History keeps.
const maxBody = 16 << 20

// maxHistory bounds the number of requests History keeps.
const maxHistory = 1024

// maxToolCalls bounds the calls one X-Mock-Tool-Call header may ask for.
const maxToolCalls = 128

// Config is the mock's default behaviour. Every field but Credential,
// Model, EmbeddingDimensions and Now can be overridden per request by a
// header (see the package documentation).
type Config struct {
	// Credential, when set, is the only credential accepted, in the
	// header each API uses (see the package documentation); anything else
	// is refused in that API's error shape. Empty accepts every caller.
	Credential string
	// Model is the model GET /v1/models lists; empty means DefaultModel.
	// Completions echo whatever model the request names.
	Model string
	// Delay is the wait before the response headers, in both modes.
	Delay time.Duration
	// TTFT is the wait between the headers and the first content event of
	// a stream (time to first token). Non-streaming answers ignore it.
	TTFT time.Duration
	// Chunks is the number of content chunks of a stream, and the
	// completion tokens of every answer; 0 means DefaultChunks.
	Chunks int
	// ChunkDelay is the wait between two content events of a stream.
	ChunkDelay time.Duration
	// CachedTokens is the part of the prompt tokens reported as read from
	// a prompt cache (clamped to the prompt).
	CachedTokens int64
	// CacheWriteTokens is the part of the prompt tokens reported as
	// written to a prompt cache, where the API reports that (Anthropic,
	// Bedrock); clamped to the prompt left after CachedTokens.
	CacheWriteTokens int64
	// ReasoningTokens is the part of the completion tokens reported as
	// reasoning (clamped to the completion).
	ReasoningTokens int64
	// ToolCalls, when set, makes every chat answer call these functions
	// (in parallel when more than one) instead of answering text.
	ToolCalls []string
	// StreamError, when true, breaks every stream with the API's
	// mid-stream error after StreamErrorAfter content events.
	StreamError      bool
	StreamErrorAfter int
	// EmbeddingDimensions is the length of the embedding vectors when the
	// request does not ask for one; 0 means DefaultEmbeddingDimensions.
	EmbeddingDimensions int
	// Now is the clock behind `created` timestamps; nil means time.Now.
	// Tests that compare whole bodies pin it.
	Now func() time.Time
}

// Request is a request the mock received, as recorded for tests.
type Request struct {
	Method string
	// Path is the unescaped path; EscapedPath is the path as sent, which
	// differs when the caller escaped a model id (a Bedrock ARN holds a
	// slash, sent as %2F).
	Path        string
	EscapedPath string
	Query       url.Values
	Header      http.Header
	Body        []byte
}

// Server is the mock provider. It is safe for concurrent use.
type Server struct {
	cfg Config
	mux *http.ServeMux

	seq      atomic.Int64 // response ids
	requests atomic.Int64
	canceled atomic.Int64

	mu          sync.Mutex
	history     []*Request // oldest first
	historySize int        // bytes of the bodies in history
}

// New returns a mock provider behaving as cfg says.
func New(cfg Config) *Server {
	if cfg.Model == "" {
		cfg.Model = DefaultModel
	}
	if cfg.Chunks <= 0 {
		cfg.Chunks = DefaultChunks
	}
	if cfg.EmbeddingDimensions <= 0 {
		cfg.EmbeddingDimensions = DefaultEmbeddingDimensions
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux()}
	s.routeOpenAI()
	s.routeAnthropic()
	s.routeGemini()
	s.routeBedrock()
	return s
}

// ServeHTTP records the request and serves it. Each API checks the
// credential in its own header and answers in its own error shape.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		writeOpenAIError(w, http.StatusBadRequest, "could not read the request body", "invalid_request_error", "")
		return
	}
	if len(body) > maxBody {
		writeOpenAIError(w, http.StatusRequestEntityTooLarge, "request body too large", "invalid_request_error", "")
		return
	}
	s.record(r, body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	s.mux.ServeHTTP(w, r)
}

// credentialIs compares in constant time, as a provider does, so that a
// test of the gateway's key handling cannot pass by timing accident.
func (s *Server) credentialIs(got string) bool {
	return subtle.ConstantTimeCompare([]byte(got), []byte(s.cfg.Credential)) == 1
}

// bearerOK reports whether header is `Bearer <Credential>`.
func (s *Server) bearerOK(header string) bool {
	got, ok := strings.CutPrefix(header, "Bearer ")
	return ok && s.credentialIs(got)
}

func (s *Server) record(r *http.Request, body []byte) {
	req := &Request{
		Method:      r.Method,
		Path:        r.URL.Path,
		EscapedPath: r.URL.EscapedPath(),
		Query:       r.URL.Query(),
		Header:      r.Header.Clone(),
		Body:        body,
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.history = append(s.history, req)
	s.historySize += len(body)
	// Drop the oldest until both bounds hold, but keep the latest even if
	// it alone is maxBody, so LastRequest always answers.
	for len(s.history) > 1 && (len(s.history) > maxHistory || s.historySize > maxBody) {
		s.historySize -= len(s.history[0].Body)
		s.history[0] = nil
		s.history = s.history[1:]
	}
}

// LastRequest returns the latest request received, whatever its outcome,
// and false before the first one.
func (s *Server) LastRequest() (Request, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.history) == 0 {
		return Request{}, false
	}
	return *s.history[len(s.history)-1], true
}

// History returns the requests received, oldest first: the latest 1024
// at most, and fewer when their bodies add up to more than 16 MiB (the
// latest is always kept). Tests of retries and fallbacks read every
// attempt from it.
func (s *Server) History() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Request, len(s.history))
	for i, r := range s.history {
		out[i] = *r
	}
	return out
}

// Requests counts the requests received.
func (s *Server) Requests() int64 { return s.requests.Load() }

// Canceled counts the answers whose caller went away (the request's
// context ended, or a write failed) before the answer was complete.
func (s *Server) Canceled() int64 { return s.canceled.Load() }

// behaviour is Config with the request's overrides applied.
type behaviour struct {
	delay, ttft, chunkDelay       time.Duration
	chunks                        int
	errStatus                     int
	cached, cacheWrite, reasoning int64
	tools                         []string
	breakAt                       int // content events before a stream breaks; -1: never
}

// behaviourFor applies the override headers of r to the defaults. A
// malformed header is the test's mistake, so it is refused, not ignored.
func (s *Server) behaviourFor(r *http.Request) (behaviour, error) {
	b := behaviour{
		delay: s.cfg.Delay, ttft: s.cfg.TTFT, chunkDelay: s.cfg.ChunkDelay, chunks: s.cfg.Chunks,
		cached: s.cfg.CachedTokens, cacheWrite: s.cfg.CacheWriteTokens, reasoning: s.cfg.ReasoningTokens,
		tools: s.cfg.ToolCalls, breakAt: -1,
	}
	if s.cfg.StreamError {
		b.breakAt = max(s.cfg.StreamErrorAfter, 0)
	}
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
	for _, o := range []struct {
		header string
		limit  int
		into   *int
	}{{HeaderChunks, 100000, &b.chunks}, {HeaderStreamError, 100000, &b.breakAt}} {
		if v := r.Header.Get(o.header); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > o.limit {
				return b, fmt.Errorf("%s must be 0 to %d", o.header, o.limit)
			}
			*o.into = n
		}
	}
	for _, o := range []struct {
		header string
		into   *int64
	}{{HeaderCachedTokens, &b.cached}, {HeaderCacheWriteTokens, &b.cacheWrite}, {HeaderReasoningTokens, &b.reasoning}} {
		if v := r.Header.Get(o.header); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 || n > 1<<40 {
				return b, fmt.Errorf("%s must be a whole number of tokens", o.header)
			}
			*o.into = n
		}
	}
	if v := r.Header.Get(HeaderToolCall); v != "" {
		names := strings.Split(v, ",")
		if len(names) > maxToolCalls {
			return b, fmt.Errorf("%s names more than %d functions", HeaderToolCall, maxToolCalls)
		}
		b.tools = make([]string, len(names))
		for i, n := range names {
			if b.tools[i] = strings.TrimSpace(n); b.tools[i] == "" {
				return b, fmt.Errorf("%s must be function names separated by commas", HeaderToolCall)
			}
		}
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

// toolCall is one function call of an answer.
type toolCall struct {
	name string
	args string // JSON object text
}

// argPieces splits the arguments in two, as a stream delivers them: the
// split falls inside the object so that a relay which forwards pieces as
// if they were whole JSON is caught.
func (t toolCall) argPieces() []string {
	cut := strings.IndexByte(t.args, ':') + 1
	return []string{t.args[:cut], t.args[cut:]}
}

// plan is an answer, decided once and rendered by each API's encoder.
type plan struct {
	seq     int64
	created int64
	model   string
	// prompt counts every prompt token, cached and cache-written ones
	// included; cached and cacheWrite are parts of it.
	prompt, cached, cacheWrite int64
	// completion counts every completion token; reasoning is a part of it.
	completion, reasoning int64
	words                 []string // the answer's text, one word per chunk; nil with tool calls
	thinking              []string // the reasoning text shown, nil when none is
	tools                 []toolCall
	truncated             bool // the request's token limit cut the text
}

// planFor decides the answer to a request holding prompt tokens, naming
// model, limited to limit completion tokens (0: no limit), and showing its
// reasoning when showThinking.
func (s *Server) planFor(b behaviour, model string, prompt, limit int64, showThinking bool) plan {
	p := plan{
		seq:        s.seq.Add(1),
		created:    s.cfg.Now().Unix(),
		model:      model,
		prompt:     prompt,
		completion: int64(b.chunks),
	}
	p.cached = min(b.cached, prompt)
	p.cacheWrite = min(b.cacheWrite, prompt-p.cached)
	if len(b.tools) > 0 {
		p.tools = make([]toolCall, len(b.tools))
		for i, name := range b.tools {
			p.tools[i] = toolCall{name: name, args: `{"n":` + strconv.Itoa(i+1) + `}`}
		}
	} else {
		if limit > 0 && limit < p.completion {
			p.completion, p.truncated = limit, true
		}
		p.words = words("tok", int(p.completion))
	}
	p.reasoning = min(b.reasoning, p.completion)
	if showThinking {
		p.thinking = words("think", int(max(p.reasoning, 1)))
	}
	return p
}

func (p plan) text() string         { return strings.Join(p.words, " ") }
func (p plan) thinkingText() string { return strings.Join(p.thinking, " ") }
func (p plan) total() int64         { return p.prompt + p.completion }

// uncached is the prompt tokens neither read from nor written to a cache,
// which Anthropic and Bedrock report as their input tokens.
func (p plan) uncached() int64 { return p.prompt - p.cached - p.cacheWrite }

// id is the answer's id with an API's prefix; toolID is call i's.
func (p plan) id(prefix string) string { return prefix + strconv.FormatInt(p.seq, 10) }
func (p plan) toolID(prefix string, i int) string {
	return p.id(prefix) + "_" + strconv.Itoa(i+1)
}

// Signature is the signature the mock gives a reasoning text (Anthropic
// thinking blocks, Gemini thought parts, Bedrock reasoning content): a
// function of the text alone, so a test can check that the gateway sent
// back the signature it was given, with the text it was given.
func Signature(thinking string) string {
	return base64.StdEncoding.EncodeToString([]byte("providertest-signature:" + thinking))
}

// words returns n words "<prefix>1" ... "<prefix>n".
func words(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = prefix + strconv.Itoa(i+1)
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

// gate paces a stream's content events and decides where it breaks.
type gate struct {
	s    *Server
	r    *http.Request
	b    behaviour
	sent int // content events written
}

// breaksFirst reports whether the stream breaks before its first event.
func (g *gate) breaksFirst() bool { return g.b.breakAt == 0 }

// content is called before each content event. It waits (TTFT before the
// first, the chunk delay before the others) and reports ok false when the
// caller went away, or brk true when the stream breaks instead.
func (g *gate) content() (brk, ok bool) {
	d := g.b.chunkDelay
	if g.sent == 0 {
		d = g.b.ttft
	}
	if !g.s.wait(g.r, d) {
		return false, false
	}
	if g.b.breakAt >= 0 && g.sent >= g.b.breakAt {
		return true, true
	}
	g.sent++
	return false, true
}

// end is called before the events that finish a stream: it waits TTFT
// if no content went out, and reports brk true when the break point lies
// at or beyond the last content event, so that a stream with a break
// always breaks.
func (g *gate) end() (brk, ok bool) {
	if g.sent == 0 && !g.s.wait(g.r, g.b.ttft) {
		return false, false
	}
	return g.b.breakAt >= 0, true
}
