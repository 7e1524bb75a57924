package serve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"

	"github.com/moat-ai/moat/libs/telemetry"
)

// Timeouts HTTP applies to a server whose fields are zero.
const (
	defaultReadHeaderTimeout = 10 * time.Second
	defaultIdleTimeout       = 2 * time.Minute
)

// HTTP serves srv on lis until ctx is done, then shuts it down gracefully:
// the listener closes at once, so new connections are refused, idle
// connections close, and in-flight requests may finish. If they outlive
// grace, it closes every connection so shutdown stays bounded; handlers keep
// running in the background until they notice. HTTP returns nil after a
// shutdown caused by ctx, and an error if the server stopped for any other
// reason.
//
// When zero, ReadHeaderTimeout becomes 10s, because without it a client can
// hold a connection forever by sending headers slowly (Slowloris), and
// IdleTimeout becomes 2m, because without it idle keep-alive connections are
// kept forever. ReadTimeout and WriteTimeout stay as given, zero by default:
// they bound the whole request and response, and would cut off uploads and
// the long streamed responses of model providers; a handler that needs a
// deadline sets one with http.ResponseController. HTTP refuses a server
// without a Handler, which would otherwise serve http.DefaultServeMux and
// whatever other packages registered there.
func HTTP(ctx context.Context, srv *http.Server, lis net.Listener, grace time.Duration) error {
	if srv.Handler == nil {
		_ = lis.Close()
		return errors.New("serve http: server has no handler")
	}
	if srv.ReadHeaderTimeout == 0 {
		srv.ReadHeaderTimeout = defaultReadHeaderTimeout
	}
	if srv.IdleTimeout == 0 {
		srv.IdleTimeout = defaultIdleTimeout
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(lis) }()

	select {
	case err := <-serveErr:
		return fmt.Errorf("serve http on %s: %w", lis.Addr(), err)
	case <-ctx.Done():
	}

	// The shutdown gets its own deadline: ctx is already done.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		// Only the deadline can fail Shutdown; force the rest closed.
		_ = srv.Close()
	}
	// Serve has returned ErrServerClosed by now, or does so promptly.
	if err := <-serveErr; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve http on %s: %w", lis.Addr(), err)
	}
	return nil
}

// NewHTTPHandler wraps h with OpenTelemetry tracing and metrics from tel,
// continuing traces from incoming traceparent headers. Spans are named after
// the http.ServeMux pattern that matched. The probe and scrape paths
// /healthz, /readyz and /metrics are not traced, since they are called every
// few seconds and would bury real traffic.
func NewHTTPHandler(tel *telemetry.Telemetry, h http.Handler) http.Handler {
	return otelhttp.NewHandler(h, "http.server",
		otelhttp.WithTracerProvider(tel.TracerProvider),
		otelhttp.WithMeterProvider(tel.MeterProvider),
		otelhttp.WithPropagators(tel.Propagator),
		otelhttp.WithFilter(func(r *http.Request) bool {
			switch r.URL.Path {
			case "/healthz", "/readyz", "/metrics":
				return false
			}
			return true
		}),
	)
}
