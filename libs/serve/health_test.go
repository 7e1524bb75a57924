package serve

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func pass(context.Context) error { return nil }

// failWith returns a check function failing with an error whose text must
// never reach a client.
func failWith(context.Context) error {
	return errors.New("dial postgres://billing:s3cret@db:5432: connection refused")
}

// probe serves one request to the mux with h mounted.
func probe(t *testing.T, h *Health, path string) (int, string) {
	t.Helper()
	mux := http.NewServeMux()
	h.Mount(mux)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

func grpcStatus(t *testing.T, h *Health) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	resp, err := h.GRPCServer().Check(t.Context(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("health Check: %v", err)
	}
	return resp.GetStatus()
}

func TestReadiness(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		checks   []Check
		shutdown bool
		wantCode int
		wantBody readiness
		wantGRPC healthpb.HealthCheckResponse_ServingStatus
	}{
		{
			name:     "no checks",
			wantCode: http.StatusOK,
			wantBody: readiness{Status: "ok"},
			wantGRPC: healthpb.HealthCheckResponse_SERVING,
		},
		{
			name:     "all pass",
			checks:   []Check{{Name: "postgres", Fn: pass}, {Name: "nats", Fn: pass}},
			wantCode: http.StatusOK,
			wantBody: readiness{Status: "ok"},
			wantGRPC: healthpb.HealthCheckResponse_SERVING,
		},
		{
			name:     "failing checks are named in order",
			checks:   []Check{{Name: "postgres", Fn: failWith}, {Name: "nats", Fn: pass}, {Name: "snapshot", Fn: failWith}},
			wantCode: http.StatusServiceUnavailable,
			wantBody: readiness{Status: "failing", Failing: []string{"postgres", "snapshot"}},
			wantGRPC: healthpb.HealthCheckResponse_NOT_SERVING,
		},
		{
			name: "check outliving its timeout fails",
			checks: []Check{{Name: "slow", Fn: func(ctx context.Context) error {
				<-ctx.Done()
				return ctx.Err()
			}}},
			wantCode: http.StatusServiceUnavailable,
			wantBody: readiness{Status: "failing", Failing: []string{"slow"}},
			wantGRPC: healthpb.HealthCheckResponse_NOT_SERVING,
		},
		{
			name:     "shutdown wins over passing checks",
			checks:   []Check{{Name: "postgres", Fn: pass}},
			shutdown: true,
			wantCode: http.StatusServiceUnavailable,
			wantBody: readiness{Status: "shutting down"},
			wantGRPC: healthpb.HealthCheckResponse_NOT_SERVING,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := NewHealth(tt.checks...)
			h.timeout = 50 * time.Millisecond
			if tt.shutdown {
				h.Shutdown()
			}
			code, body := probe(t, h, "/readyz")
			if code != tt.wantCode {
				t.Errorf("GET /readyz = %d, want %d", code, tt.wantCode)
			}
			var got readiness
			if err := json.Unmarshal([]byte(body), &got); err != nil {
				t.Fatalf("decode /readyz body %q: %v", body, err)
			}
			if diff := cmp.Diff(tt.wantBody, got); diff != "" {
				t.Errorf("/readyz body mismatch (-want +got):\n%s", diff)
			}
			if strings.Contains(body, "s3cret") || strings.Contains(body, "refused") {
				t.Errorf("/readyz body leaks a check's error: %s", body)
			}
			if got := grpcStatus(t, h); got != tt.wantGRPC {
				t.Errorf("gRPC health after /readyz = %v, want %v", got, tt.wantGRPC)
			}
		})
	}
}

func TestHealthz(t *testing.T) {
	t.Parallel()
	h := NewHealth(Check{Name: "postgres", Fn: failWith})
	for _, stage := range []string{"not ready", "shutting down"} {
		if stage == "shutting down" {
			h.Shutdown()
		}
		// Liveness ignores readiness: failing it would get a draining
		// process killed.
		if code, body := probe(t, h, "/healthz"); code != http.StatusOK || body != "ok" {
			t.Errorf("GET /healthz while %s = %d %q, want 200 %q", stage, code, body, "ok")
		}
	}
}

func TestHealthStartsNotServingUntilChecked(t *testing.T) {
	t.Parallel()
	h := NewHealth(Check{Name: "postgres", Fn: pass})
	if got := grpcStatus(t, h); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("gRPC health before any evaluation = %v, want NOT_SERVING", got)
	}
}

func TestHealthRunFollowsChecks(t *testing.T) {
	t.Parallel()
	var failing atomic.Bool
	h := NewHealth(Check{Name: "nats", Fn: func(context.Context) error {
		if failing.Load() {
			return errors.New("disconnected")
		}
		return nil
	}})
	h.interval = 10 * time.Millisecond
	done := make(chan error, 1)
	go func() { done <- h.Run(t.Context()) }()

	wantStatus := func(want healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		eventually(t, waitLong, "gRPC health "+want.String(), func() bool { return grpcStatus(t, h) == want })
	}
	wantStatus(healthpb.HealthCheckResponse_SERVING)
	failing.Store(true)
	wantStatus(healthpb.HealthCheckResponse_NOT_SERVING)
	failing.Store(false)
	wantStatus(healthpb.HealthCheckResponse_SERVING)

	h.Shutdown()
	if err := receive(t, done, "Run to return after Shutdown"); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
	if got := grpcStatus(t, h); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("gRPC health after Shutdown = %v, want NOT_SERVING", got)
	}
	// Shutdown is final: passing checks no longer make the process ready.
	if code, _ := probe(t, h, "/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("GET /readyz after Shutdown = %d, want 503", code)
	}
	if got := grpcStatus(t, h); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("gRPC health after Shutdown and a passing check = %v, want NOT_SERVING", got)
	}
	h.Shutdown() // idempotent
}

func TestHealthRunStopsWithContext(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		checks []Check
	}{
		{name: "no checks"},
		{name: "with checks", checks: []Check{{Name: "postgres", Fn: pass}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- NewHealth(tt.checks...).Run(ctx) }()
			cancel()
			if err := receive(t, done, "Run to return"); err != nil {
				t.Errorf("Run = %v, want nil", err)
			}
		})
	}
}
