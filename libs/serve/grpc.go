package serve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"strings"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"github.com/moat-ai/moat/libs/telemetry"
)

// NewGRPCServer returns a gRPC server with tracing and metrics from tel,
// panic recovery, the health service of h and server reflection (so grpcurl
// and moatctl can discover the API without proto files). Register the
// service's own APIs on it, then run it with GRPC.
//
// opts are appended after the defaults. Add interceptors with
// grpc.ChainUnaryInterceptor / grpc.ChainStreamInterceptor: they run inside
// the recovery interceptor, so their panics are caught too. A
// grpc.UnaryInterceptor option would instead run outside it.
func NewGRPCServer(log *slog.Logger, tel *telemetry.Telemetry, h *Health, opts ...grpc.ServerOption) *grpc.Server {
	defaults := []grpc.ServerOption{
		grpc.StatsHandler(otelgrpc.NewServerHandler(
			otelgrpc.WithTracerProvider(tel.TracerProvider),
			otelgrpc.WithMeterProvider(tel.MeterProvider),
			otelgrpc.WithPropagators(tel.Propagator),
			// Probes arrive every few seconds from every kubelet; tracing
			// them would bury real traffic.
			otelgrpc.WithFilter(func(info *stats.RPCTagInfo) bool {
				return !strings.HasPrefix(info.FullMethodName, "/"+healthpb.Health_ServiceDesc.ServiceName+"/")
			}),
		)),
		// Clients of Moat's long-lived watch streams ping every 30s
		// (libs/grpcclient); grpc-go's default policy would call that abuse
		// and cut idle streams.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 20 * time.Second, PermitWithoutStream: true}),
		grpc.ChainUnaryInterceptor(recoverUnary(log)),
		grpc.ChainStreamInterceptor(recoverStream(log)),
	}
	s := grpc.NewServer(append(defaults, opts...)...)
	healthpb.RegisterHealthServer(s, h.GRPCServer())
	reflection.Register(s)
	return s
}

// recoverUnary turns a handler panic into codes.Internal, so that one bad
// request fails alone instead of taking down every in-flight RPC.
func recoverUnary(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if r := recover(); r != nil {
				err = recovered(ctx, log, info.FullMethod, r)
			}
		}()
		return handler(ctx, req)
	}
}

// recoverStream is recoverUnary for streaming RPCs.
func recoverStream(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = recovered(ss.Context(), log, info.FullMethod, r)
			}
		}()
		return handler(srv, ss)
	}
}

// recovered logs a panic with its stack, which the client never sees, and
// returns the opaque status the client gets instead.
func recovered(ctx context.Context, log *slog.Logger, method string, r any) error {
	log.ErrorContext(ctx, "grpc handler panicked",
		"method", method,
		"panic", fmt.Sprint(r),
		"stack", string(debug.Stack()),
	)
	return status.Error(codes.Internal, "internal error")
}

// GRPC serves s on lis until ctx is done, then stops it gracefully: the
// listener closes at once, so new connections are refused, and in-flight
// RPCs may finish. If they outlive grace, it forces the stop, which fails
// them with Unavailable on the client, so shutdown stays bounded; handlers
// that ignore their context may keep running in the background after that.
// GRPC returns nil after a shutdown caused by ctx, and an error if the
// server stopped for any other reason.
func GRPC(ctx context.Context, s *grpc.Server, lis net.Listener, grace time.Duration) error {
	serveErr := make(chan error, 1)
	go func() { serveErr <- s.Serve(lis) }()

	select {
	case err := <-serveErr:
		if err == nil {
			err = errors.New("server stopped before its context ended")
		}
		return fmt.Errorf("serve grpc on %s: %w", lis.Addr(), err)
	case <-ctx.Done():
	}

	stopped := make(chan struct{})
	go func() {
		s.GracefulStop()
		close(stopped)
	}()
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-stopped:
	case <-timer.C:
		// GracefulStop keeps waiting for handlers even after Stop, so
		// its goroutine is left behind rather than waited for.
		s.Stop()
	}
	// Serve returns once the stop has completed. ErrServerStopped means ctx
	// ended before Serve started, which is still a clean shutdown.
	if err := <-serveErr; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serve grpc on %s: %w", lis.Addr(), err)
	}
	return nil
}
