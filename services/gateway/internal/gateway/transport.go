package gateway

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/moat-ai/moat/services/gateway/internal/egress"
)

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

// GetBuffer returns an empty pooled buffer; PutBuffer gives it back.
func GetBuffer() *bytes.Buffer { return bufferPool.Get().(*bytes.Buffer) }

// PutBuffer returns b to the pool unless it grew large: one huge body
// must not pin its memory for the life of the process.
func PutBuffer(b *bytes.Buffer) {
	if b.Cap() > 1<<20 {
		return
	}
	b.Reset()
	bufferPool.Put(b)
}

// errIdle is the cause of a cancellation by the idle timeout.
var errIdle = errors.New("provider went silent")

func timedOut(ctx context.Context, err error) bool {
	if errors.Is(context.Cause(ctx), errIdle) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
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
