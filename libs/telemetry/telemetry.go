// Package telemetry sets up logs, traces and metrics for a Moat process: a
// JSON slog handler that stamps each line with the active trace, and
// OpenTelemetry providers configured from the standard OTEL_* variables,
// with a Prometheus endpoint that works without any collector.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// Telemetry holds the providers of one process. Pass it explicitly to the
// code that instruments servers, clients and pools; its fields are set by
// Start and must not be changed afterwards.
type Telemetry struct {
	// TracerProvider creates spans. Spans are recorded even when no
	// exporter is configured, so log lines still carry trace ids.
	TracerProvider trace.TracerProvider
	// MeterProvider creates instruments. Everything recorded through it is
	// served by MetricsHandler, and also pushed over OTLP when configured.
	MeterProvider metric.MeterProvider
	// Propagator reads and writes W3C traceparent, tracestate and baggage.
	Propagator propagation.TextMapPropagator
	// Registry is the private Prometheus registry behind MetricsHandler.
	// It already has the Go runtime and process collectors; other
	// libraries register their own collectors on it.
	Registry *prometheus.Registry

	metrics   http.Handler
	shutdowns []func(context.Context) error
	once      sync.Once
	err       error
}

// Start builds the process's telemetry from the OTEL_* variables returned by
// getenv, following the OpenTelemetry SDK environment specification:
//
//   - service.name is OTEL_SERVICE_NAME, else service; the other resource
//     attributes come from OTEL_RESOURCE_ATTRIBUTES.
//   - Each signal gets an OTLP exporter only when OTEL_EXPORTER_OTLP_ENDPOINT
//     or its per-signal variant is set, over HTTP/protobuf unless
//     OTEL_EXPORTER_OTLP[_<SIGNAL>]_PROTOCOL is grpc. Headers, timeout and
//     compression come from the matching variables; OTEL_TRACES_EXPORTER and
//     OTEL_METRICS_EXPORTER set to none turn a signal's exporter off.
//   - OTEL_TRACES_SAMPLER(_ARG) and OTEL_METRIC_EXPORT_INTERVAL/_TIMEOUT are
//     honoured; batching and TLS variables are read by the SDK exporters
//     from the process environment.
//   - OTEL_SDK_DISABLED=true gives no-op tracer and meter providers; the
//     Prometheus registry and its runtime collectors still work.
//
// Start sets the otel global tracer provider, meter provider and propagator.
// That is the one deliberate global in Moat: third-party instrumentation
// that is not handed a provider falls back to the globals, and would
// otherwise drop its spans. Call Shutdown before the process exits.
func Start(ctx context.Context, service string, getenv func(string) string) (*Telemetry, error) {
	s, err := loadSettings(service, getenv)
	if err != nil {
		return nil, fmt.Errorf("read otel environment: %w", err)
	}

	reg := prometheus.NewRegistry()
	if err := reg.Register(collectors.NewGoCollector()); err != nil {
		return nil, fmt.Errorf("register go collector: %w", err)
	}
	if err := reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return nil, fmt.Errorf("register process collector: %w", err)
	}
	t := &Telemetry{
		Propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		Registry:   reg,
		// One broken collector must not blank the whole scrape, so serve
		// what can be gathered and report the rest in the response.
		metrics: promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}),
	}

	if s.disabled {
		t.TracerProvider = tracenoop.NewTracerProvider()
		t.MeterProvider = metricnoop.NewMeterProvider()
	} else {
		res, err := newResource(ctx, s.resource)
		if err != nil {
			return nil, err
		}
		tp, err := newTracerProvider(ctx, s, res)
		if err != nil {
			return nil, err
		}
		mp, err := newMeterProvider(ctx, s, res, reg)
		if err != nil {
			// Nothing was exported yet; shutting down only releases the
			// exporter's connection.
			_ = tp.Shutdown(ctx)
			return nil, err
		}
		t.TracerProvider, t.MeterProvider = tp, mp
		t.shutdowns = []func(context.Context) error{tp.Shutdown, mp.Shutdown}
	}

	otel.SetTracerProvider(t.TracerProvider)
	otel.SetMeterProvider(t.MeterProvider)
	otel.SetTextMapPropagator(t.Propagator)
	return t, nil
}

// MetricsHandler serves the Registry in the Prometheus exposition format,
// for mounting at /metrics.
func (t *Telemetry) MetricsHandler() http.Handler {
	return t.metrics
}

// Shutdown flushes buffered spans and metrics to the exporters and stops the
// providers, giving up when ctx ends. Traces and metrics flush concurrently
// so that a slow collector for one does not eat the other's time. Only the
// first call does work; later calls return its result, so a deferred
// Shutdown after an explicit one is harmless.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	t.once.Do(func() {
		errs := make([]error, len(t.shutdowns))
		var wg sync.WaitGroup
		for i, shutdown := range t.shutdowns {
			wg.Go(func() { errs[i] = shutdown(ctx) })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.err = fmt.Errorf("shut down telemetry: %w", err)
		}
	})
	return t.err
}

func newResource(ctx context.Context, attrs map[string]string) (*resource.Resource, error) {
	kvs := make([]attribute.KeyValue, 0, len(attrs))
	for k, v := range attrs {
		kvs = append(kvs, attribute.String(k, v))
	}
	res, err := resource.New(ctx,
		resource.WithSchemaURL(semconv.SchemaURL),
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithAttributes(kvs...),
	)
	if err != nil {
		return nil, fmt.Errorf("build otel resource: %w", err)
	}
	return res, nil
}

func newTracerProvider(ctx context.Context, s settings, res *resource.Resource) (*sdktrace.TracerProvider, error) {
	opts := []sdktrace.TracerProviderOption{
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sampler(s.sampler, s.samplerArg)),
	}
	e := s.traces
	var (
		exp sdktrace.SpanExporter
		err error
	)
	switch e.protocol {
	case "":
	case protoGRPC:
		o := []otlptracegrpc.Option{
			otlptracegrpc.WithEndpointURL(e.endpoint),
			otlptracegrpc.WithHeaders(e.headers),
			otlptracegrpc.WithTimeout(e.timeout),
		}
		if e.gzip {
			o = append(o, otlptracegrpc.WithCompressor("gzip"))
		}
		exp, err = otlptracegrpc.New(ctx, o...)
	default:
		compression := otlptracehttp.NoCompression
		if e.gzip {
			compression = otlptracehttp.GzipCompression
		}
		exp, err = otlptracehttp.New(ctx,
			otlptracehttp.WithEndpointURL(e.endpoint),
			otlptracehttp.WithHeaders(e.headers),
			otlptracehttp.WithTimeout(e.timeout),
			otlptracehttp.WithCompression(compression),
		)
	}
	if err != nil {
		return nil, fmt.Errorf("create otlp trace exporter: %w", err)
	}
	if exp != nil {
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	return sdktrace.NewTracerProvider(opts...), nil
}

func newMeterProvider(ctx context.Context, s settings, res *resource.Resource, reg *prometheus.Registry) (*sdkmetric.MeterProvider, error) {
	prom, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, fmt.Errorf("create prometheus exporter: %w", err)
	}
	opts := []sdkmetric.Option{sdkmetric.WithResource(res), sdkmetric.WithReader(prom)}

	e := s.metrics
	var exp sdkmetric.Exporter
	switch e.protocol {
	case "":
	case protoGRPC:
		o := []otlpmetricgrpc.Option{
			otlpmetricgrpc.WithEndpointURL(e.endpoint),
			otlpmetricgrpc.WithHeaders(e.headers),
			otlpmetricgrpc.WithTimeout(e.timeout),
		}
		if e.gzip {
			o = append(o, otlpmetricgrpc.WithCompressor("gzip"))
		}
		exp, err = otlpmetricgrpc.New(ctx, o...)
	default:
		compression := otlpmetrichttp.NoCompression
		if e.gzip {
			compression = otlpmetrichttp.GzipCompression
		}
		exp, err = otlpmetrichttp.New(ctx,
			otlpmetrichttp.WithEndpointURL(e.endpoint),
			otlpmetrichttp.WithHeaders(e.headers),
			otlpmetrichttp.WithTimeout(e.timeout),
			otlpmetrichttp.WithCompression(compression),
		)
	}
	if err != nil {
		return nil, fmt.Errorf("create otlp metric exporter: %w", err)
	}
	if exp != nil {
		opts = append(opts, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp,
			sdkmetric.WithInterval(s.metricEvery),
			sdkmetric.WithTimeout(s.metricTimeout),
		)))
	}
	return sdkmetric.NewMeterProvider(opts...), nil
}

// sampler maps a validated OTEL_TRACES_SAMPLER value to its sampler.
func sampler(name string, ratio float64) sdktrace.Sampler {
	switch name {
	case "always_on":
		return sdktrace.AlwaysSample()
	case "always_off":
		return sdktrace.NeverSample()
	case "traceidratio":
		return sdktrace.TraceIDRatioBased(ratio)
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample())
	case "parentbased_traceidratio":
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))
	default:
		return sdktrace.ParentBased(sdktrace.AlwaysSample())
	}
}

// Close flushes and stops the providers within five seconds, logging a
// failure instead of returning it: it runs last, deferred, when nothing can
// act on the error any more.
func (t *Telemetry) Close(log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := t.Shutdown(ctx); err != nil {
		log.Warn("flush telemetry", "err", err)
	}
}
