// Package openai serves the gateway's OpenAI-compatible data plane:
// POST /v1/chat/completions and GET /v1/models, as plain net/http handlers
// over in-memory state. A chat request passes a chain of gates, each
// answering with an OpenAI error body when it refuses:
//
//	body limit (413) → JSON shape (400) → API key (401, 403 for keys
//	that are not project keys) → route by (project, model) (404) →
//	the key's allowed models (403) →
//	forward to the provider (502, 504; 502 upstream_blocked when the
//	egress policy refuses its address) → usage event
//
// Nothing on that path waits on another service, takes a lock, or starts a
// goroutine: keys and routes are read from atomically swapped snapshots,
// bodies are read into pooled buffers and only the few fields the gateway
// needs are parsed, streams are forwarded chunk by chunk as they arrive,
// and usage events are handed to an asynchronous publisher.
package openai

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/moat-ai/moat/libs/authn"
	gatewayv1 "github.com/moat-ai/moat/proto/gen/go/moat/gateway/v1"
	identityv1 "github.com/moat-ai/moat/proto/gen/go/moat/identity/v1"
	"github.com/moat-ai/moat/services/gateway/internal/egress"
	"github.com/moat-ai/moat/services/gateway/internal/snapshot"
)

// Limits.
const (
	// MaxRequestBody is the largest request body accepted (413 above).
	MaxRequestBody = 10 << 20
	// maxResponseBody bounds a non-streamed provider answer, which is
	// held whole to read its usage; a stream is never held.
	maxResponseBody = 64 << 20
	// statusClientClosed is recorded for requests whose client went away
	// before an answer (nginx's convention); it is never sent.
	statusClientClosed = 499
)

// Authenticator verifies an API key; *authn.Index is one.
type Authenticator interface {
	Authenticate(key string, now time.Time) (authn.Principal, error)
}

// Routes returns the configuration in force; *snapshot.Store is one.
type Routes interface {
	Load() *snapshot.Snapshot
}

// UsageRecorder takes a request's usage record without blocking;
// *usage.Publisher is one.
type UsageRecorder interface {
	Record(ctx context.Context, id uuid.UUID, msg *gatewayv1.UsageRecorded) bool
}

// Options configures a Handler.
type Options struct {
	Keys   Authenticator
	Routes Routes
	Usage  UsageRecorder
	// Transport sends requests to providers; NewTransport builds the
	// shared, pooled one. Redirects are never followed: a RoundTripper
	// does not follow them.
	Transport http.RoundTripper
	// IdleTimeout bounds the silence of a provider once its response has
	// started (between two reads of the body); 0 means no bound.
	IdleTimeout time.Duration
	Log         *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Handler serves the data plane.
type Handler struct {
	o Options
}

// New returns a Handler.
func New(o Options) *Handler {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Handler{o: o}
}

// Mount registers the data plane on mux, under /v1/.
func (h *Handler) Mount(mux *http.ServeMux) {
	mux.HandleFunc("/v1/chat/completions", h.chatCompletions)
	mux.HandleFunc("/v1/models", h.models)
	mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, typeInvalidRequest, codeUnknownURL, "",
			"Unknown request URL: "+r.Method+" "+r.URL.Path+".")
	})
}

// Timeouts bound the calls to providers.
type Timeouts struct {
	// Dial bounds connecting (TCP and TLS).
	Dial time.Duration
	// Header bounds the wait for the response headers, which for a
	// non-streamed completion is the whole generation.
	Header time.Duration
}

// NewTransport returns the transport shared by every provider call:
// keep-alive connections in a pool sized for a busy gateway, HTTP/2 where
// the provider offers it, bounded connect and header waits. Compression is
// off: a provider answers in plain bytes that the gateway forwards and
// reads the usage from without inflating.
//
// Every connection passes the egress policy at dial time, on the address
// actually dialed: internal addresses are refused unless one of allow
// contains them (see package egress). No HTTP proxy is used, even when
// HTTP(S)_PROXY is set: the policy would then see only the proxy's address,
// and the proxy could reach internal hosts on the gateway's behalf.
func NewTransport(t Timeouts, allow []netip.Prefix) *http.Transport {
	dialer := &net.Dialer{Timeout: t.Dial, KeepAlive: 30 * time.Second, ControlContext: egress.New(allow).Control}
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   t.Dial,
		ResponseHeaderTimeout: t.Header,
		ExpectContinueTimeout: 0,
		DisableCompression:    true,
		WriteBufferSize:       32 << 10,
		ReadBufferSize:        32 << 10,
	}
}

var bufferPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func getBuffer() *bytes.Buffer { return bufferPool.Get().(*bytes.Buffer) }

// putBuffer returns b to the pool unless it grew large: one huge body
// must not pin its memory for the life of the process.
func putBuffer(b *bytes.Buffer) {
	if b.Cap() > 1<<20 {
		return
	}
	b.Reset()
	bufferPool.Put(b)
}

// call is one chat request as it moves through the gates.
type call struct {
	id        uuid.UUID
	start     time.Time
	principal authn.Principal
	route     *snapshot.Route
	stream    bool
	status    int
	usage     usage
}

func (h *Handler) chatCompletions(w http.ResponseWriter, r *http.Request) {
	c := call{start: h.o.Now()}
	c.id = newRequestID(c.start)
	w.Header().Set("X-Request-Id", c.id.String())
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, typeInvalidRequest, codeMethodNotAllowed, "", "Use POST for /v1/chat/completions.")
		return
	}

	buf := getBuffer()
	defer putBuffer(buf)
	if r.ContentLength > MaxRequestBody {
		writeTooLarge(w)
		return
	}
	if _, err := buf.ReadFrom(io.LimitReader(r.Body, MaxRequestBody+1)); err != nil {
		// The client went away or sent a broken body; there is no one
		// to answer in the first case, and 400 says enough in the second.
		writeError(w, http.StatusBadRequest, typeInvalidRequest, codeInvalidBody, "", "We could not read the body of your request.")
		return
	}
	if buf.Len() > MaxRequestBody {
		writeTooLarge(w)
		return
	}
	req, err := parseChatRequest(buf.Bytes())
	if err != nil {
		var re *requestError
		if !errors.As(err, &re) {
			re = errMalformed
		}
		writeRequestError(w, http.StatusBadRequest, re)
		return
	}
	c.stream = req.stream

	var ok bool
	if c.principal, ok = h.authenticate(w, r, c.start); !ok {
		return
	}
	if c.route, ok = h.o.Routes.Load().Route(c.principal.Project, req.model); !ok {
		writeError(w, http.StatusNotFound, typeInvalidRequest, codeModelNotFound, "model",
			"The model `"+truncate(req.model, 128)+"` does not exist or you do not have access to it.")
		return
	}
	if !c.principal.MayUseModel(c.route.Model) {
		writeError(w, http.StatusForbidden, typeInvalidRequest, codeModelNotAllowed, "model",
			"This API key may not call the model `"+truncate(req.model, 128)+"`.")
		return
	}

	// From here on the request reached a provider's route: whatever
	// happens, it is recorded.
	body := req.rewrite(buf.Bytes(), c.route.UpstreamModelJSON)
	h.forward(w, r, &c, body, req.clientUsage)
	h.record(r.Context(), &c)
}

// truncate bounds the client's text echoed in an error.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "..."
}

func writeTooLarge(w http.ResponseWriter) {
	writeError(w, http.StatusRequestEntityTooLarge, typeInvalidRequest, codeRequestTooLarge, "",
		"Your request body is larger than the "+strconv.Itoa(MaxRequestBody>>20)+" MiB the gateway accepts.")
}

// authenticate checks the API key: a project key passes; a missing or
// unknown key gets 401, and any other key (a platform admin's) 403.
func (h *Handler) authenticate(w http.ResponseWriter, r *http.Request, now time.Time) (authn.Principal, bool) {
	key, ok := authn.Bearer(r.Header.Get("Authorization"))
	if !ok {
		writeError(w, http.StatusUnauthorized, typeAuthentication, codeInvalidAPIKey, "",
			"You didn't provide an API key. Send it as `Authorization: Bearer <key>`.")
		return authn.Principal{}, false
	}
	p, err := h.o.Keys.Authenticate(key, now)
	if err != nil {
		// Never echo the key, not even masked.
		writeError(w, http.StatusUnauthorized, typeAuthentication, codeInvalidAPIKey, "",
			"Incorrect API key provided: it is unknown, revoked or expired.")
		return authn.Principal{}, false
	}
	if p.Role != identityv1.KeyIndexEntry_ROLE_PROJECT || p.Project == "" {
		writeError(w, http.StatusForbidden, typePermission, codePermissionDenied, "",
			"This key cannot call models: the data plane takes project keys.")
		return authn.Principal{}, false
	}
	return p, true
}

// errIdle is the cause of a cancellation by the idle timeout.
var errIdle = errors.New("provider went silent")

// forward sends body to the route's provider and relays the answer.
func (h *Handler) forward(w http.ResponseWriter, r *http.Request, c *call, body []byte, clientUsage bool) {
	p := c.route.Provider
	if p.Unusable != "" {
		c.status = http.StatusBadGateway
		writeError(w, c.status, typeAPI, codeUpstreamUnavailable, "",
			"The provider of this model is misconfigured; ask an administrator to check it.")
		return
	}
	// The client's context is the parent: a client that hangs up cancels
	// the provider call.
	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(nil)
	up, err := http.NewRequestWithContext(ctx, http.MethodPost, p.ChatURL, bytes.NewReader(body))
	if err != nil {
		c.status = http.StatusBadGateway
		writeError(w, c.status, typeAPI, codeUpstreamUnavailable, "", "The provider's URL is not valid.")
		return
	}
	hdr := up.Header
	hdr["Content-Type"] = []string{"application/json"}
	if c.stream {
		hdr["Accept"] = []string{"text/event-stream"}
	} else {
		hdr["Accept"] = []string{"application/json"}
	}
	hdr["User-Agent"] = []string{"moat-gateway"}
	hdr["X-Request-Id"] = []string{c.id.String()}
	// The provider's credential, never the client's key.
	if a := p.Authorization(); a != "" {
		hdr["Authorization"] = []string{a}
	}

	resp, err := h.o.Transport.RoundTrip(up)
	if err != nil {
		h.upstreamFailed(w, r, ctx, c, err)
		return
	}
	defer resp.Body.Close()
	var respBody io.Reader = resp.Body
	if h.o.IdleTimeout > 0 {
		idle := time.AfterFunc(h.o.IdleTimeout, func() { cancel(errIdle) })
		defer idle.Stop()
		respBody = &idleReader{r: resp.Body, t: idle, d: h.o.IdleTimeout}
	}

	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		// Redirects are not followed, nor passed on: they would point
		// the client at the provider.
		h.o.Log.Warn("provider answered with a redirect", "request_id", c.id.String(), "provider", p.Name, "status", resp.StatusCode)
		c.status = http.StatusBadGateway
		writeError(w, c.status, typeAPI, codeUpstreamUnavailable, "", "The provider answered with a redirect, which the gateway does not follow.")
		return
	}
	if resp.StatusCode == http.StatusUnauthorized {
		// The client's key was accepted; the provider refused the
		// gateway's credential. Relaying 401 would tell the client its
		// own key is wrong.
		h.o.Log.Warn("provider refused the gateway's credential", "request_id", c.id.String(), "provider", p.Name)
		c.status = http.StatusBadGateway
		writeError(w, c.status, typeAPI, codeUpstreamUnavailable, "",
			"The provider refused the gateway's credential for this model; ask an administrator to check the provider.")
		return
	}
	if c.stream && resp.StatusCode == http.StatusOK && isEventStream(resp.Header.Get("Content-Type")) {
		h.relayStream(w, r, ctx, c, respBody, clientUsage)
		return
	}
	h.relayWhole(w, r, ctx, c, resp, respBody)
}

// relayWhole relays a non-streamed answer, reading its usage.
func (h *Handler) relayWhole(w http.ResponseWriter, r *http.Request, ctx context.Context, c *call, resp *http.Response, body io.Reader) {
	buf := getBuffer()
	defer putBuffer(buf)
	if _, err := buf.ReadFrom(io.LimitReader(body, maxResponseBody+1)); err != nil {
		h.upstreamFailed(w, r, ctx, c, err)
		return
	}
	if buf.Len() > maxResponseBody {
		h.o.Log.Warn("provider answer too large", "request_id", c.id.String(), "provider", c.route.Provider.Name)
		c.status = http.StatusBadGateway
		writeError(w, c.status, typeAPI, codeUpstreamUnavailable, "", "The provider's answer is larger than the gateway relays.")
		return
	}
	if resp.StatusCode < 300 {
		c.usage, _ = readUsage(buf.Bytes())
	}
	copyResponseHeaders(w.Header(), resp.Header)
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	c.status = resp.StatusCode
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(buf.Bytes()) // a failed write means the client left; the usage is recorded either way
}

// copyResponseHeaders passes on the provider headers a client needs and no
// others: provider-specific ones (rate limits of the organization's
// account, processing times, cookies) stay behind the gateway.
func copyResponseHeaders(dst, src http.Header) {
	if v := src.Get("Content-Type"); v != "" {
		dst.Set("Content-Type", v)
	}
	if v := src.Get("Retry-After"); v != "" {
		dst.Set("Retry-After", v)
	}
}

// upstreamFailed answers a provider call that failed before an answer
// could be relayed: 502 upstream_blocked when the egress policy refused
// the provider's address, 504 when it timed out, 502 when it could not be
// reached or broke; nothing when the client itself went away.
func (h *Handler) upstreamFailed(w http.ResponseWriter, r *http.Request, ctx context.Context, c *call, err error) {
	if r.Context().Err() != nil {
		c.status = statusClientClosed
		return
	}
	if errors.Is(err, egress.ErrBlocked) {
		// Neither the log nor the answer names the address: the error
		// would tell a caller what a provider's name resolves to inside
		// the network.
		c.status = http.StatusBadGateway
		h.o.Log.Warn("provider address refused by the egress policy", "request_id", c.id.String(), "provider", c.route.Provider.Name)
		writeError(w, c.status, typeAPI, codeUpstreamBlocked, "",
			"The provider's address is not allowed by the gateway's egress policy; ask an administrator to check the provider.")
		return
	}
	if timedOut(ctx, err) {
		c.status = http.StatusGatewayTimeout
		h.o.Log.Warn("provider timed out", "request_id", c.id.String(), "provider", c.route.Provider.Name, "err", err)
		writeError(w, c.status, typeAPI, codeUpstreamTimeout, "", "The provider did not answer in time.")
		return
	}
	c.status = http.StatusBadGateway
	h.o.Log.Warn("provider unreachable", "request_id", c.id.String(), "provider", c.route.Provider.Name, "err", err)
	writeError(w, c.status, typeAPI, codeUpstreamUnavailable, "", "The provider could not be reached.")
}

func timedOut(ctx context.Context, err error) bool {
	if errors.Is(context.Cause(ctx), errIdle) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// record hands the usage of a routed request to the publisher.
func (h *Handler) record(ctx context.Context, c *call) {
	p := c.principal
	if c.status >= 200 && c.status < 300 && !c.usage.found {
		// The ledger entry will carry zero tokens: say so, rather than let
		// a provider that omits usage look free.
		h.o.Log.Warn("the provider reported no usage; recording zero tokens",
			"request_id", c.id.String(), "provider", c.route.Provider.Name, "stream", c.stream)
	}
	h.o.Usage.Record(ctx, c.id, &gatewayv1.UsageRecorded{
		RequestId:     c.id.String(),
		Organization:  p.Organization,
		Project:       p.Project,
		KeyId:         p.KeyID,
		Model:         c.route.Model,
		UpstreamModel: c.route.UpstreamModel,
		Provider:      c.route.Provider.Name,
		InputTokens:   c.usage.input,
		OutputTokens:  c.usage.output,
		Latency:       durationpb.New(h.o.Now().Sub(c.start)),
		HttpStatus:    int32(c.status), //nolint:gosec // an HTTP status fits
		Stream:        c.stream,
		RequestTime:   timestamppb.New(c.start),
	})
}

// idleReader pushes the idle deadline back on every read that returns
// data.
type idleReader struct {
	r io.Reader
	t *time.Timer
	d time.Duration
}

func (ir *idleReader) Read(p []byte) (int, error) {
	n, err := ir.r.Read(p)
	if n > 0 {
		ir.t.Reset(ir.d)
	}
	return n, err
}

// models lists the routes of the key's project that the key may call, in
// the OpenAI list format.
func (h *Handler) models(w http.ResponseWriter, r *http.Request) {
	now := h.o.Now()
	w.Header().Set("X-Request-Id", newRequestID(now).String())
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		writeError(w, http.StatusMethodNotAllowed, typeInvalidRequest, codeMethodNotAllowed, "", "Use GET for /v1/models.")
		return
	}
	p, ok := h.authenticate(w, r, now)
	if !ok {
		return
	}
	type model struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}
	routes := h.o.Routes.Load().Routes(p.Project)
	list := struct {
		Object string  `json:"object"`
		Data   []model `json:"data"`
	}{Object: "list", Data: make([]model, 0, len(routes))}
	for _, rt := range routes {
		if !p.MayUseModel(rt.Model) {
			continue
		}
		list.Data = append(list.Data, model{ID: rt.Model, Object: "model", Created: rt.Created, OwnedBy: "moat"})
	}
	b, err := json.Marshal(list)
	if err != nil {
		writeError(w, http.StatusInternalServerError, typeAPI, "internal_error", "", "internal error")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	_, _ = w.Write(b) // a failed write means the client left; nothing to tell it
}
