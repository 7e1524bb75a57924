package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/google/go-cmp/cmp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

func TestHandlerTraceIDs(t *testing.T) {
	t.Parallel()
	tp := sdktrace.NewTracerProvider()
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	spanCtx, span := tp.Tracer("test").Start(context.Background(), "op")
	defer span.End()
	traceID := span.SpanContext().TraceID().String()
	spanID := span.SpanContext().SpanID().String()

	// A remote parent that was never sampled is still a valid span
	// context, and its ids are worth logging.
	remote := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, Remote: true,
	}))

	tests := []struct {
		name string
		ctx  context.Context
		log  func(*slog.Logger, context.Context)
		want map[string]any
	}{
		{
			name: "span in context",
			ctx:  spanCtx,
			log:  func(l *slog.Logger, ctx context.Context) { l.InfoContext(ctx, "hello", "k", "v") },
			want: map[string]any{"level": "INFO", "msg": "hello", "k": "v", "trace_id": traceID, "span_id": spanID},
		},
		{
			name: "no span",
			ctx:  context.Background(),
			log:  func(l *slog.Logger, ctx context.Context) { l.InfoContext(ctx, "hello", "k", "v") },
			want: map[string]any{"level": "INFO", "msg": "hello", "k": "v"},
		},
		{
			name: "invalid span context",
			ctx:  trace.ContextWithSpanContext(context.Background(), trace.SpanContext{}),
			log:  func(l *slog.Logger, ctx context.Context) { l.WarnContext(ctx, "hello") },
			want: map[string]any{"level": "WARN", "msg": "hello"},
		},
		{
			name: "unsampled remote span",
			ctx:  remote,
			log:  func(l *slog.Logger, ctx context.Context) { l.ErrorContext(ctx, "hello") },
			want: map[string]any{
				"level": "ERROR", "msg": "hello",
				"trace_id": "01000000000000000000000000000000", "span_id": "0200000000000000",
			},
		},
		{
			name: "with attrs",
			ctx:  spanCtx,
			log: func(l *slog.Logger, ctx context.Context) {
				l.With("a", 1).InfoContext(ctx, "hello", "b", 2)
			},
			want: map[string]any{"level": "INFO", "msg": "hello", "a": 1.0, "b": 2.0, "trace_id": traceID, "span_id": spanID},
		},
		{
			name: "ids stay top-level under groups",
			ctx:  spanCtx,
			log: func(l *slog.Logger, ctx context.Context) {
				l.With("a", 1).WithGroup("g").With("b", 2).WithGroup("h").InfoContext(ctx, "hello", "c", 3)
			},
			want: map[string]any{
				"level": "INFO", "msg": "hello", "a": 1.0, "trace_id": traceID, "span_id": spanID,
				"g": map[string]any{"b": 2.0, "h": map[string]any{"c": 3.0}},
			},
		},
		{
			name: "groups without a span",
			ctx:  context.Background(),
			log: func(l *slog.Logger, ctx context.Context) {
				l.With("a", 1).WithGroup("g").With("b", 2).WithGroup("h").InfoContext(ctx, "hello", "c", 3)
			},
			want: map[string]any{
				"level": "INFO", "msg": "hello", "a": 1.0,
				"g": map[string]any{"b": 2.0, "h": map[string]any{"c": 3.0}},
			},
		},
		{
			name: "empty groups are omitted",
			ctx:  spanCtx,
			log: func(l *slog.Logger, ctx context.Context) {
				l.WithGroup("g").WithGroup("h").InfoContext(ctx, "hello")
			},
			want: map[string]any{"level": "INFO", "msg": "hello", "trace_id": traceID, "span_id": spanID},
		},
		{
			name: "siblings do not share group attributes",
			ctx:  spanCtx,
			log: func(l *slog.Logger, ctx context.Context) {
				g := l.WithGroup("g").With("x", 1)
				_ = g.With("y", 2)
				g.With("z", 3).InfoContext(ctx, "hello")
			},
			want: map[string]any{
				"level": "INFO", "msg": "hello", "trace_id": traceID, "span_id": spanID,
				"g": map[string]any{"x": 1.0, "z": 3.0},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			tt.log(slog.New(NewHandler(&buf, slog.LevelInfo)), tt.ctx)
			var got map[string]any
			if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
				t.Fatalf("decode log line %q: %v", buf.String(), err)
			}
			delete(got, "time")
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("log line mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHandlerLevel(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	l := slog.New(NewHandler(&buf, slog.LevelWarn))
	l.Info("dropped")
	if buf.Len() != 0 {
		t.Errorf("info line at warn level was written: %s", buf.String())
	}
	l.Warn("kept")
	if buf.Len() == 0 {
		t.Error("warn line at warn level was not written")
	}
}

func TestParseLevel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    slog.Level
		wantErr bool
	}{
		{in: "", want: slog.LevelInfo},
		{in: "debug", want: slog.LevelDebug},
		{in: "info", want: slog.LevelInfo},
		{in: "warn", want: slog.LevelWarn},
		{in: "error", want: slog.LevelError},
		{in: " DEBUG ", want: slog.LevelDebug},
		{in: "Warn", want: slog.LevelWarn},
		{in: "verbose", wantErr: true},
		{in: "info+2", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseLevel(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseLevel(%q) error = %v, want error: %v", tt.in, err, tt.wantErr)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseLevel(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}
