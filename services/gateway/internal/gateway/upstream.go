package gateway

import (
	"bufio"
	"context"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/moat-ai/moat/services/gateway/internal/egress"
	"github.com/moat-ai/moat/services/gateway/internal/provider"
	"github.com/moat-ai/moat/services/gateway/internal/wire"
	"github.com/moat-ai/moat/services/gateway/internal/wire/anthropic"
	"github.com/moat-ai/moat/services/gateway/internal/wire/awsstream"
	"github.com/moat-ai/moat/services/gateway/internal/wire/sse"
)

// Limits of what the gateway holds of an answer.
const (
	// maxResponseBody bounds a non-streamed provider answer, which is
	// held whole to read its usage; a stream is never held.
	maxResponseBody = 64 << 20
	// maxStreamEvent bounds one event of a stream.
	maxStreamEvent = 8 << 20
	// maxHold bounds the pre-content events held before the commit point;
	// beyond it the stream commits anyway.
	maxHold = 64 << 10
	// streamBufferSize is the read buffer of a relayed stream.
	streamBufferSize = 32 << 10
)

var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, streamBufferSize) }}

// call makes the attempt at the route's provider and relays the answer.
func (g *Gateway) call(w http.ResponseWriter, r *http.Request, c *Call) {
	p := c.route.Provider
	if p.Unusable != "" {
		g.fail(w, c, &Refusal{Status: http.StatusBadGateway, Type: TypeAPI, Code: CodeUpstreamUnavailable, Gate: GateUpstream,
			Message: "The provider of this model is misconfigured; ask an administrator to check it."})
		return
	}
	upAPI, ok := p.UpstreamFor(c.API, c.route.UpstreamModel)
	var pa path
	if ok {
		pa = pathFor(c.API, upAPI)
	}
	if pa == nil {
		g.fail(w, c, &Refusal{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Code: CodeUnsupportedRoute, Param: "model", Gate: GateUpstream,
			Message: "The provider of the model `" + Truncate(c.Model, 128) + "` cannot serve this API (" + c.API.String() + ")."})
		return
	}
	if lp, ok := pa.(localPath); ok {
		lp.answer(w, c)
		return
	}
	body, d := pa.request(c)
	if d != nil {
		g.fail(w, c, d)
		return
	}
	if len(c.dropped) > 0 {
		w.Header().Set(HeaderDropped, droppedHeader(c.dropped))
		g.dropped.Add(r.Context(), 1, metric.WithAttributes(attribute.String("client_api", c.API.String()), attribute.String("upstream_api", upAPI.String())))
	}

	// The client's context is the parent: a client that hangs up cancels
	// the provider call.
	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(nil)
	up, err := p.NewRequest(ctx, provider.Call{API: upAPI, Model: c.route.UpstreamModel, Stream: c.Stream, Body: body, RequestID: c.ID.String(), Header: c.Header})
	if err != nil {
		g.o.Log.Warn("build provider request", "request_id", c.ID.String(), "provider", p.Name, "err", err)
		g.fail(w, c, &Refusal{Status: http.StatusBadGateway, Type: TypeAPI, Code: CodeUpstreamUnavailable, Gate: GateUpstream,
			Message: "The provider's URL is not valid."})
		return
	}
	resp, err := g.o.Transport.RoundTrip(up)
	if err != nil {
		g.upstreamFailed(w, r, ctx, c, err)
		return
	}
	defer resp.Body.Close()
	var respBody io.Reader = resp.Body
	if g.o.IdleTimeout > 0 {
		idle := time.AfterFunc(g.o.IdleTimeout, func() { cancel(errIdle) })
		defer idle.Stop()
		respBody = &idleReader{r: resp.Body, t: idle, d: g.o.IdleTimeout}
	}

	switch p.Classify(resp.StatusCode) {
	case provider.Redirect:
		// Redirects are not followed, nor passed on: they would point
		// the client at the provider.
		g.o.Log.Warn("provider answered with a redirect", "request_id", c.ID.String(), "provider", p.Name, "status", resp.StatusCode)
		g.fail(w, c, &Refusal{Status: http.StatusBadGateway, Type: TypeAPI, Code: CodeUpstreamUnavailable, Gate: GateUpstream,
			Message: "The provider answered with a redirect, which the gateway does not follow."})
		return
	case provider.Credential:
		// The client's key was accepted; the provider refused the
		// gateway's credential. Relaying 401 would tell the client its
		// own key is wrong.
		g.o.Log.Warn("provider refused the gateway's credential", "request_id", c.ID.String(), "provider", p.Name, "status", resp.StatusCode)
		g.fail(w, c, &Refusal{Status: http.StatusBadGateway, Type: TypeAPI, Code: CodeUpstreamCredential, Gate: GateUpstream,
			Message: "The provider refused the gateway's credential for this model; ask an administrator to check the provider."})
		return
	case provider.Success:
		ct := resp.Header.Get("Content-Type")
		if c.Stream && (isEventStream(ct) || isAWSEventStream(ct)) {
			fr := framingSSE
			switch {
			case isAWSEventStream(ct) && upAPI == wire.Anthropic:
				fr = framingAWSChunks
			case isAWSEventStream(ct):
				fr = framingAWS
			}
			g.relayStream(w, r, ctx, c, respBody, pa.stream(c), fr)
			return
		}
	}
	c.upstreamErrorType = resp.Header.Get("X-Amzn-Errortype")
	g.relayWhole(w, r, ctx, c, resp, respBody, pa)
}

// fail answers a routed call that could not be served.
func (g *Gateway) fail(w http.ResponseWriter, c *Call, d *Refusal) { c.refuse(w, d) }

// isAWSEventStream reports AWS's binary event stream (Bedrock's
// converse-stream and invoke-with-response-stream).
func isAWSEventStream(contentType string) bool {
	return strings.HasPrefix(contentType, "application/vnd.amazon.eventstream")
}

func isEventStream(contentType string) bool {
	if strings.HasPrefix(contentType, "text/event-stream") {
		return true
	}
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "text/event-stream"
}

// relayWhole relays a non-streamed answer (or an error a stream request
// got instead of a stream), reading its usage.
func (g *Gateway) relayWhole(w http.ResponseWriter, r *http.Request, ctx context.Context, c *Call, resp *http.Response, body io.Reader, pa path) {
	buf := GetBuffer()
	defer PutBuffer(buf)
	if _, err := buf.ReadFrom(io.LimitReader(body, maxResponseBody+1)); err != nil {
		g.upstreamFailed(w, r, ctx, c, err)
		return
	}
	if buf.Len() > maxResponseBody {
		g.o.Log.Warn("provider answer too large", "request_id", c.ID.String(), "provider", c.route.Provider.Name)
		g.fail(w, c, &Refusal{Status: http.StatusBadGateway, Type: TypeAPI, Code: CodeUpstreamUnavailable, Gate: GateUpstream,
			Message: "The provider's answer is larger than the gateway relays."})
		return
	}
	out, d := buf.Bytes(), (*Refusal)(nil)
	if resp.StatusCode < 300 {
		out, d = pa.whole(c, out)
	} else {
		out, d = pa.upstreamError(c, resp.StatusCode, out)
	}
	if d != nil {
		if d.RetryAfter == 0 {
			d.RetryAfter = retryAfter(resp.Header.Get("Retry-After"))
		}
		g.fail(w, c, d)
		return
	}
	h := w.Header()
	if ct := resp.Header.Get("Content-Type"); ct != "" && pa.native() {
		h.Set("Content-Type", ct)
	} else {
		h.Set("Content-Type", "application/json")
	}
	if v := resp.Header.Get("Retry-After"); v != "" {
		h.Set("Retry-After", v)
	}
	if c.countedByProvider {
		h.Set(HeaderTokenCount, "provider")
	}
	h.Set("Content-Length", strconv.Itoa(len(out)))
	c.status = resp.StatusCode
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(out) // a failed write means the client left; the usage is recorded either way
}

// retryAfter reads a Retry-After given in seconds (0 when absent or a
// date, which providers do not send).
func retryAfter(v string) time.Duration {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n <= 0 {
		return 0
	}
	return time.Duration(min(n, 3600)) * time.Second
}

// relayStream relays a provider's SSE stream event by event in this
// goroutine. Until the commit point (the first content-bearing event) it
// holds what the path produced and sends no headers, so that an error as
// the first event is still answered as a whole error in the client's
// format; from then on every event is written as it arrives and flushed
// whenever no more input is at hand, so that nothing waits in a buffer. A
// failure after the commit point ends the stream with a terminal error in
// the client's format.
func (g *Gateway) relayStream(w http.ResponseWriter, r *http.Request, ctx context.Context, c *Call, body io.Reader, s streamer, fr framing) {
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(body)
	defer func() {
		br.Reset(nil)
		readerPool.Put(br)
	}()
	var rd frames
	switch fr {
	case framingAWS:
		rd = awsFrames{awsstream.NewReader(br, maxStreamEvent)}
	case framingAWSChunks:
		rd = anthropic.NewBedrockStream(awsstream.NewReader(br, maxStreamEvent))
	default:
		rd = sse.NewReader(br, maxStreamEvent)
	}
	buf := GetBuffer()
	defer PutBuffer(buf)
	out := buf.Bytes()[:0]

	var (
		rc        *http.ResponseController
		committed bool
	)
	commit := func() {
		committed = true
		hdr := w.Header()
		hdr.Set("Content-Type", "text/event-stream")
		hdr.Set("Cache-Control", "no-cache")
		hdr.Set("X-Accel-Buffering", "no") // no proxy in front may buffer either
		c.status = http.StatusOK
		w.WriteHeader(http.StatusOK)
		rc = http.NewResponseController(w)
	}
	// flush reports false when the client is gone.
	flush := func() bool {
		if rc == nil {
			return true
		}
		if err := rc.Flush(); err != nil {
			if errors.Is(err, http.ErrNotSupported) {
				// Without flushing, streaming degrades to buffering; go
				// on regardless, the bytes still arrive.
				rc = nil
				return true
			}
			return false
		}
		return true
	}
	write := func() bool {
		if len(out) == 0 {
			return true
		}
		_, err := w.Write(out)
		out = out[:0]
		return err == nil
	}

	for {
		ev, err := rd.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				var d *Refusal
				out, d = s.end(out)
				c.usage = s.usage()
				if d != nil {
					g.o.Log.Warn("provider stream ended early", "request_id", c.ID.String(), "provider", c.route.Provider.Name)
					if !committed {
						g.fail(w, c, d)
						return
					}
					out = g.streamError(out, c, s, d)
				}
				if !committed {
					commit()
				}
				_ = write() && flush() // best effort: the stream is over
				return
			}
			c.usage = s.usage()
			if r.Context().Err() != nil {
				if !committed {
					c.status = statusClientClosed
				}
				return
			}
			d := g.streamBroke(ctx, c, err)
			if !committed {
				g.fail(w, c, d)
				return
			}
			out = g.streamError(out, c, s, d)
			_ = write() && flush() // best effort: the stream is ending on an error already
			return
		}
		var content bool
		var d *Refusal
		out, content, d = s.event(out, ev)
		if d != nil {
			c.usage = s.usage()
			if !committed {
				g.fail(w, c, d)
				return
			}
			if _, relayed := s.(errorRelayer); !relayed {
				out = g.streamError(out, c, s, d)
			}
			_ = write() && flush() // best effort: the stream is ending on an error already
			return
		}
		if !committed {
			if !content && len(out) < maxHold {
				continue
			}
			commit()
		}
		if rd.Buffered() == 0 || len(out) >= streamBufferSize {
			if !write() || !flush() {
				c.usage = s.usage()
				return // the client went away; the deferred cancel stops the provider call
			}
		}
	}
}

// framing is how a provider's stream frames its events.
type framing uint8

const (
	// framingSSE is server-sent events.
	framingSSE framing = iota
	// framingAWS is AWS's binary event stream, a frame per event
	// (Bedrock's ConverseStream).
	framingAWS
	// framingAWSChunks is AWS's binary event stream whose chunk frames
	// carry Anthropic's SSE events (InvokeModelWithResponseStream for
	// Claude), relayed as those events.
	framingAWSChunks
)

// frames is a reader of stream events: SSE, or AWS's binary event
// stream seen as events of the same shape.
type frames interface {
	Next() (sse.Event, error)
	Buffered() int
}

// awsFrames reads AWS event-stream messages as events: the event (or
// exception) type as the name, the JSON payload as the data.
type awsFrames struct{ r *awsstream.Reader }

func (a awsFrames) Next() (sse.Event, error) {
	ev, err := a.r.Next()
	if err != nil {
		return sse.Event{}, err
	}
	return sse.Event{Raw: ev.Raw, Name: ev.Name, Data: ev.Data}, nil
}

func (a awsFrames) Buffered() int { return a.r.Buffered() }

// streamBroke logs why a stream broke and returns what the client is told.
func (g *Gateway) streamBroke(ctx context.Context, c *Call, err error) *Refusal {
	what, d := "provider stream broke", &Refusal{Status: http.StatusBadGateway, Type: TypeAPI, Code: CodeUpstreamUnavailable, Gate: GateUpstream,
		Message: "The provider's stream broke."}
	switch {
	case timedOut(ctx, err):
		what = "provider stream went silent"
		d = &Refusal{Status: http.StatusGatewayTimeout, Type: TypeAPI, Code: CodeUpstreamTimeout, Gate: GateUpstream,
			Message: "The provider went silent in the middle of its stream."}
	case errors.Is(err, sse.ErrEventTooLarge):
		what = "provider stream event too large"
		d.Message = "The provider's stream holds an event larger than the gateway relays."
	}
	g.o.Log.Warn(what, "request_id", c.ID.String(), "provider", c.route.Provider.Name, "err", err)
	return d
}

// upstreamFailed answers a provider call that failed before an answer
// could be relayed: 502 upstream_blocked when the egress policy refused
// the provider's address, 504 when it timed out, 502 when it could not be
// reached or broke; nothing when the client itself went away.
func (g *Gateway) upstreamFailed(w http.ResponseWriter, r *http.Request, ctx context.Context, c *Call, err error) {
	if r.Context().Err() != nil {
		c.status = statusClientClosed
		return
	}
	name := c.route.Provider.Name
	switch {
	case errors.Is(err, egress.ErrBlocked):
		// Neither the log nor the answer names the address: the error
		// would tell a caller what a provider's name resolves to inside
		// the network.
		g.o.Log.Warn("provider address refused by the egress policy", "request_id", c.ID.String(), "provider", name)
		g.fail(w, c, &Refusal{Status: http.StatusBadGateway, Type: TypeAPI, Code: CodeUpstreamBlocked, Gate: GateUpstream,
			Message: "The provider's address is not allowed by the gateway's egress policy; ask an administrator to check the provider."})
	case timedOut(ctx, err):
		g.o.Log.Warn("provider timed out", "request_id", c.ID.String(), "provider", name, "err", err)
		g.fail(w, c, &Refusal{Status: http.StatusGatewayTimeout, Type: TypeAPI, Code: CodeUpstreamTimeout, Gate: GateUpstream,
			Message: "The provider did not answer in time."})
	default:
		g.o.Log.Warn("provider unreachable", "request_id", c.ID.String(), "provider", name, "err", err)
		g.fail(w, c, &Refusal{Status: http.StatusBadGateway, Type: TypeAPI, Code: CodeUpstreamUnavailable, Gate: GateUpstream,
			Message: "The provider could not be reached."})
	}
}

// streamError appends the terminal error of a committed stream in the
// client's format.
func (g *Gateway) streamError(out []byte, c *Call, s streamer, d *Refusal) []byte {
	if f, ok := s.(streamFailer); ok {
		if res, ok := f.fail(out, d); ok {
			return res
		}
	}
	return g.o.Renderer.AppendStreamError(out, c.API, d)
}
