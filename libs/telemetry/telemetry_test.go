package telemetry

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/propagation"
	collectormetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	collectortracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
)

func noEnv(string) string { return "" }

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func start(t *testing.T, getenv func(string) string) *Telemetry {
	t.Helper()
	tel, err := Start(t.Context(), "billing", getenv)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := tel.Shutdown(context.Background()); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return tel
}

func scrape(t *testing.T, tel *Telemetry) string {
	t.Helper()
	rec := httptest.NewRecorder()
	tel.MetricsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics = %d, want 200; body:\n%s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

func TestStartWithoutExporter(t *testing.T) {
	t.Parallel()
	tel := start(t, noEnv)
	if tel.TracerProvider == nil || tel.MeterProvider == nil || tel.Propagator == nil || tel.Registry == nil {
		t.Fatalf("Start() left a field nil: %+v", tel)
	}
	ctx, span := tel.TracerProvider.Tracer("test").Start(t.Context(), "op")
	sc := span.SpanContext()
	span.End()
	if !sc.IsValid() || !sc.IsSampled() {
		t.Errorf("span context = %+v, want valid and sampled with no exporter configured", sc)
	}

	carrier := propagation.MapCarrier{}
	tel.Propagator.Inject(ctx, carrier)
	if !strings.Contains(carrier["traceparent"], sc.TraceID().String()) {
		t.Errorf("injected traceparent = %q, want trace id %s", carrier["traceparent"], sc.TraceID())
	}

	// With nothing to flush, Shutdown must not wait on a network.
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if err := tel.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := tel.Shutdown(ctx); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
}

func TestStartRejectsBadEnvironment(t *testing.T) {
	t.Parallel()
	_, err := Start(t.Context(), "billing", envOf(map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "collector"}))
	if err == nil {
		t.Fatal("Start() with an endpoint without scheme = nil error, want error")
	}
}

func TestMetricsHandler(t *testing.T) {
	t.Parallel()
	tel := start(t, noEnv)
	counter, err := tel.MeterProvider.Meter("moat/test").Int64Counter("moat_test_requests")
	if err != nil {
		t.Fatalf("create counter: %v", err)
	}
	counter.Add(t.Context(), 3)

	body := scrape(t, tel)
	for _, want := range []string{"moat_test_requests_total{", "go_goroutines "} {
		if !strings.Contains(body, want) {
			t.Errorf("GET /metrics does not contain %q; body:\n%s", want, body)
		}
	}
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "moat_test_requests_total{") && !strings.HasSuffix(line, " 3") {
			t.Errorf("counter line = %q, want value 3", line)
		}
	}
}

func TestStartDisabled(t *testing.T) {
	t.Parallel()
	tel := start(t, envOf(map[string]string{
		"OTEL_SDK_DISABLED": "true",
		// Ignored while disabled: nothing may be sent here.
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1",
	}))
	_, span := tel.TracerProvider.Tracer("test").Start(t.Context(), "op")
	span.End()
	if span.SpanContext().IsValid() || span.IsRecording() {
		t.Errorf("span = %+v, want a no-op span", span.SpanContext())
	}
	counter, err := tel.MeterProvider.Meter("moat/test").Int64Counter("moat_test_disabled")
	if err != nil {
		t.Fatalf("create counter: %v", err)
	}
	counter.Add(t.Context(), 1)

	body := scrape(t, tel)
	if !strings.Contains(body, "go_goroutines ") {
		t.Errorf("GET /metrics lacks runtime metrics while disabled; body:\n%s", body)
	}
	if strings.Contains(body, "moat_test_disabled") {
		t.Errorf("GET /metrics shows a metric recorded through the disabled SDK")
	}
}

// collector counts OTLP/HTTP export requests by path.
type collector struct {
	mu    sync.Mutex
	posts map[string]int
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	if r.Method == http.MethodPost {
		c.mu.Lock()
		c.posts[r.URL.Path]++
		c.mu.Unlock()
	}
	// An empty body is a valid, empty Export*ServiceResponse.
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.WriteHeader(http.StatusOK)
}

func (c *collector) counts() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	for k, v := range c.posts {
		out[k] = min(v, 1) // batching may split exports; one is enough
	}
	return out
}

func TestOTLPHTTPExportOnShutdown(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  func(url string) map[string]string
		want map[string]int
	}{
		{
			name: "generic endpoint",
			env: func(url string) map[string]string {
				return map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": url}
			},
			want: map[string]int{"/v1/traces": 1, "/v1/metrics": 1},
		},
		{
			name: "traces endpoint only",
			env: func(url string) map[string]string {
				return map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": url + "/custom/traces"}
			},
			want: map[string]int{"/custom/traces": 1},
		},
		{
			name: "traces exporter off",
			env: func(url string) map[string]string {
				return map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": url, "OTEL_TRACES_EXPORTER": "none"}
			},
			want: map[string]int{"/v1/metrics": 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := &collector{posts: map[string]int{}}
			srv := httptest.NewServer(c)
			t.Cleanup(srv.Close)

			tel, err := Start(t.Context(), "billing", envOf(tt.env(srv.URL)))
			if err != nil {
				t.Fatalf("Start: %v", err)
			}
			_, span := tel.TracerProvider.Tracer("test").Start(t.Context(), "op")
			span.End()
			counter, err := tel.MeterProvider.Meter("moat/test").Int64Counter("moat_test_exported")
			if err != nil {
				t.Fatalf("create counter: %v", err)
			}
			counter.Add(t.Context(), 1)

			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			if err := tel.Shutdown(ctx); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			if diff := cmp.Diff(tt.want, c.counts()); diff != "" {
				t.Errorf("export requests by path mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// grpcCollector counts OTLP/gRPC exports.
type grpcCollector struct {
	collectortracepb.UnimplementedTraceServiceServer
	collectormetricpb.UnimplementedMetricsServiceServer
	spans, metrics atomic.Int64
}

func (c *grpcCollector) Export(context.Context, *collectortracepb.ExportTraceServiceRequest) (*collectortracepb.ExportTraceServiceResponse, error) {
	c.spans.Add(1)
	return &collectortracepb.ExportTraceServiceResponse{}, nil
}

type grpcMetricsCollector struct{ *grpcCollector }

func (c grpcMetricsCollector) Export(context.Context, *collectormetricpb.ExportMetricsServiceRequest) (*collectormetricpb.ExportMetricsServiceResponse, error) {
	c.metrics.Add(1)
	return &collectormetricpb.ExportMetricsServiceResponse{}, nil
}

func TestOTLPGRPCExportOnShutdown(t *testing.T) {
	t.Parallel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	c := &grpcCollector{}
	s := grpc.NewServer()
	collectortracepb.RegisterTraceServiceServer(s, c)
	collectormetricpb.RegisterMetricsServiceServer(s, grpcMetricsCollector{c})
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)

	tel, err := Start(t.Context(), "billing", envOf(map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://" + lis.Addr().String(),
		"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
	}))
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	_, span := tel.TracerProvider.Tracer("test").Start(t.Context(), "op")
	span.End()
	counter, err := tel.MeterProvider.Meter("moat/test").Int64Counter("moat_test_exported")
	if err != nil {
		t.Fatalf("create counter: %v", err)
	}
	counter.Add(t.Context(), 1)

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := tel.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if got := c.spans.Load(); got < 1 {
		t.Errorf("trace exports = %d, want at least 1", got)
	}
	if got := c.metrics.Load(); got < 1 {
		t.Errorf("metric exports = %d, want at least 1", got)
	}
}
