package serve

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Readiness timing. The check timeout stays under the one-second default of
// Kubernetes probes so that a slow dependency reports as failing rather than
// as a probe timeout; the interval keeps gRPC health at most a couple of
// seconds behind the truth without hammering dependencies.
const (
	checkTimeout  = 800 * time.Millisecond
	checkInterval = 2 * time.Second
)

// Check is one readiness condition, such as a database ping or a connected
// NATS client. Fn must honour ctx, which carries a short timeout. Its error
// is never shown to callers of /readyz, only Name is, because errors from
// drivers can carry connection strings; a Fn that wants its error seen
// should log it.
type Check struct {
	Name string
	Fn   func(ctx context.Context) error
}

// Health is the readiness state of one process, shared by the gRPC health
// service and the HTTP probes so both always agree. It is safe for
// concurrent use.
type Health struct {
	checks   []Check
	grpc     *health.Server
	timeout  time.Duration
	interval time.Duration

	seq      atomic.Uint64 // evaluations started
	mu       sync.Mutex
	written  uint64 // latest evaluation whose result was published
	down     bool   // Shutdown was called
	stopping chan struct{}
}

// NewHealth returns a Health that is ready while every check passes. With
// checks, it starts NOT_SERVING and becomes SERVING after the first passing
// evaluation by Run or /readyz, so no traffic arrives before the process can
// serve it. Without checks it is SERVING until Shutdown.
func NewHealth(checks ...Check) *Health {
	h := &Health{
		checks:   slices.Clone(checks),
		grpc:     health.NewServer(),
		timeout:  checkTimeout,
		interval: checkInterval,
		stopping: make(chan struct{}),
	}
	if len(checks) > 0 {
		h.grpc.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	}
	return h
}

// GRPCServer returns the gRPC health service to register on a server;
// NewGRPCServer does that already. Its status for service "" is the
// process's readiness. Callers must not call its Resume method, which would
// undo Shutdown.
func (h *Health) GRPCServer() *health.Server {
	return h.grpc
}

// Run evaluates the checks now and then every couple of seconds, publishing
// the result as the gRPC health status, until ctx is done or Shutdown is
// called. It returns nil then, so it can run under an errgroup without
// turning a clean shutdown into an error.
func (h *Health) Run(ctx context.Context) error {
	if len(h.checks) == 0 {
		select {
		case <-ctx.Done():
		case <-h.stopping:
		}
		return nil
	}
	t := time.NewTicker(h.interval)
	defer t.Stop()
	for {
		h.evaluate(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-h.stopping:
			return nil
		case <-t.C:
		}
	}
}

// Shutdown makes the process NOT_SERVING for good, on gRPC and /readyz,
// while servers keep serving in-flight and new requests. Call it first
// when shutdown begins, so load balancers stop routing before the servers
// drain. It is idempotent.
func (h *Health) Shutdown() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.down {
		return
	}
	h.down = true
	h.grpc.Shutdown()
	close(h.stopping)
}

// Mount adds the HTTP probes to mux: GET /healthz answers 200 "ok" for as
// long as the process serves HTTP, including while it drains, because a
// failing liveness probe gets a draining pod killed; GET /readyz runs the
// checks and answers 200 when all pass, else 503.
func (h *Health) Mount(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write([]byte("ok"))
	})
	mux.HandleFunc("GET /readyz", h.serveReady)
}

// readiness is the /readyz body. It names failing checks and nothing more.
type readiness struct {
	Status  string   `json:"status"`
	Failing []string `json:"failing,omitempty"`
}

func (h *Health) serveReady(w http.ResponseWriter, r *http.Request) {
	code, body := http.StatusOK, readiness{Status: "ok"}
	if h.shuttingDown() {
		code, body = http.StatusServiceUnavailable, readiness{Status: "shutting down"}
	} else if failing := h.evaluate(context.WithoutCancel(r.Context())); len(failing) > 0 {
		// WithoutCancel: a prober hanging up must not fail the checks and
		// so flip the gRPC status; the check timeout still bounds them.
		code, body = http.StatusServiceUnavailable, readiness{Status: "failing", Failing: failing}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body)
}

func (h *Health) shuttingDown() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.down
}

// evaluate runs the checks concurrently, so one slow dependency costs one
// timeout rather than a sum, publishes the result and returns the names of
// the failing checks in declaration order.
func (h *Health) evaluate(ctx context.Context) []string {
	seq := h.seq.Add(1)
	failed := make([]bool, len(h.checks))
	var wg sync.WaitGroup
	for i, c := range h.checks {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, h.timeout)
			defer cancel()
			failed[i] = c.Fn(ctx) != nil
		})
	}
	wg.Wait()

	var failing []string
	for i, f := range failed {
		if f {
			failing = append(failing, h.checks[i].Name)
		}
	}
	h.publish(seq, len(failing) == 0)
	return failing
}

// publish sets the gRPC status unless a newer evaluation (Run and /readyz
// overlap) has already done so, or Shutdown has fixed it.
func (h *Health) publish(seq uint64, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.down || seq < h.written {
		return
	}
	h.written = seq
	status := healthpb.HealthCheckResponse_NOT_SERVING
	if ok {
		status = healthpb.HealthCheckResponse_SERVING
	}
	h.grpc.SetServingStatus("", status)
}
