package serve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/moat-ai/moat/libs/telemetry"
)

// Config is the part of a service's configuration that concerns serving.
// Every service embeds it (as a named field) in its own Config. In a
// cluster each service has its own pod, so all default to the same ports;
// locally the run scripts give each a port of its own.
type Config struct {
	GRPCAddr     string        `env:"GRPC_ADDR, default=:9090"`
	HTTPAddr     string        `env:"HTTP_ADDR, default=:8080"`
	LogLevel     string        `env:"LOG_LEVEL, default=info"`
	DrainTimeout time.Duration `env:"DRAIN_TIMEOUT, default=10s"`
	// PprofAddr, when set, serves net/http/pprof on its own listener, for
	// profiling (make bench uses it). Keep it on loopback: profiles reveal
	// internals and cost CPU while they run.
	PprofAddr string `env:"PPROF_ADDR"`
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.GRPCAddr == "" || c.HTTPAddr == "" {
		errs = append(errs, errors.New("GRPC_ADDR and HTTP_ADDR must not be empty"))
	}
	if _, err := telemetry.ParseLevel(c.LogLevel); err != nil {
		errs = append(errs, fmt.Errorf("LOG_LEVEL: %w", err))
	}
	if c.DrainTimeout <= 0 {
		errs = append(errs, errors.New("DRAIN_TIMEOUT must be positive"))
	}
	return errors.Join(errs...)
}

// Subcommand returns the subcommand named by args[0], "serve" when args is
// empty. Every service answers "serve" and "migrate".
func Subcommand(args []string) (string, error) {
	if len(args) == 0 {
		return "serve", nil
	}
	switch args[0] {
	case "serve", "migrate":
		if len(args) > 1 {
			return "", fmt.Errorf("%s takes no arguments, got %q", args[0], args[1:])
		}
		return args[0], nil
	default:
		return "", fmt.Errorf("unknown subcommand %q (want serve or migrate)", args[0])
	}
}

// Servers are one process's gRPC and HTTP servers and the readiness they
// share. NewServers listens at once; add interceptors with Use, register
// APIs on GRPC and handlers on Mux (or MountREST), then call Run.
type Servers struct {
	Health *Health
	GRPC   *grpc.Server
	// Mux already serves /healthz, /readyz and /metrics.
	Mux *http.ServeMux
	// MaxConns bounds the HTTP server's open connections (see LimitConns);
	// 0 means unbounded. Set before Run.
	MaxConns int
	// Untraced lists path prefixes served without the OpenTelemetry HTTP
	// middleware: a hot path that keeps its own, cheaper record of every
	// request (the gateway's data plane: usage events and its metrics)
	// need not pay for a span and histograms per request. Set before Run.
	Untraced []string

	log      *slog.Logger
	tel      *telemetry.Telemetry
	cfg      Config
	grpcLis  net.Listener
	httpLis  net.Listener
	proxy    proxyMark
	unary    []grpc.UnaryServerInterceptor
	stream   []grpc.StreamServerInterceptor
	restConn *grpc.ClientConn
	pprofLis net.Listener
}

// NewServers listens on the configured addresses and builds the servers of
// a process whose readiness is checks.
func NewServers(log *slog.Logger, tel *telemetry.Telemetry, cfg Config, checks ...Check) (*Servers, error) {
	grpcLis, err := Listen(cfg.GRPCAddr)
	if err != nil {
		return nil, err
	}
	httpLis, err := Listen(cfg.HTTPAddr)
	if err != nil {
		_ = grpcLis.Close()
		return nil, err
	}
	mark, err := newProxyMark()
	if err != nil {
		_ = grpcLis.Close()
		_ = httpLis.Close()
		return nil, err
	}
	s := &Servers{log: log, tel: tel, cfg: cfg, grpcLis: grpcLis, httpLis: httpLis, proxy: mark}
	if cfg.PprofAddr != "" {
		if s.pprofLis, err = Listen(cfg.PprofAddr); err != nil {
			_ = grpcLis.Close()
			_ = httpLis.Close()
			return nil, err
		}
	}
	s.Health = NewHealth(checks...)
	s.Mux = http.NewServeMux()
	s.Health.Mount(s.Mux)
	s.Mux.Handle("GET /metrics", tel.MetricsHandler())
	// The interceptors added by Use run inside these two, which read the
	// REST proxy's forwarded address and then hand over to Use's chain.
	s.GRPC = NewGRPCServer(log, tel, s.Health,
		grpc.ChainUnaryInterceptor(s.proxy.unary, s.chainUnary),
		grpc.ChainStreamInterceptor(s.proxy.stream, s.chainStream),
	)
	return s, nil
}

// GRPCAddr is the address the gRPC server listens on.
func (s *Servers) GRPCAddr() string { return s.grpcLis.Addr().String() }

// HTTPAddr is the address the HTTP server listens on.
func (s *Servers) HTTPAddr() string { return s.httpLis.Addr().String() }

// Use adds server interceptors (e.g. authentication), in order. Call it
// before Run; it is not safe for use while serving.
func (s *Servers) Use(u grpc.UnaryServerInterceptor, st grpc.StreamServerInterceptor) {
	if u != nil {
		s.unary = append(s.unary, u)
	}
	if st != nil {
		s.stream = append(s.stream, st)
	}
}

func (s *Servers) chainUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	next := handler
	for i := len(s.unary) - 1; i >= 0; i-- {
		ic, h := s.unary[i], next
		next = func(ctx context.Context, req any) (any, error) { return ic(ctx, req, info, h) }
	}
	return next(ctx, req)
}

func (s *Servers) chainStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	next := handler
	for i := len(s.stream) - 1; i >= 0; i-- {
		ic, h := s.stream[i], next
		next = func(srv any, ss grpc.ServerStream) error { return ic(srv, ss, info, h) }
	}
	return next(srv, ss)
}

// Run serves, and runs workers (outbox relays, consumers, snapshot
// streams) until ctx ends or one of them fails. Then it shuts down in
// order: readiness fails first, so load balancers stop sending; the servers
// drain in-flight calls for at most DrainTimeout while the workers stop. It
// returns after everything has stopped, with nil when ctx ended it.
func (s *Servers) Run(ctx context.Context, workers ...func(context.Context) error) error {
	handler := NewHTTPHandler(s.tel, s.Mux)
	if len(s.Untraced) > 0 {
		traced, untraced := handler, s.Untraced
		handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			for _, p := range untraced {
				if strings.HasPrefix(r.URL.Path, p) {
					s.Mux.ServeHTTP(w, r)
					return
				}
			}
			traced.ServeHTTP(w, r)
		})
	}
	httpSrv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: defaultReadHeaderTimeout,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	s.log.Info("serving", "grpc_addr", s.GRPCAddr(), "http_addr", s.HTTPAddr())
	if s.restConn != nil {
		defer s.restConn.Close()
	}

	serversCtx, stopServers := context.WithCancel(context.WithoutCancel(ctx))
	defer stopServers()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		<-gctx.Done()
		s.Health.Shutdown()
		stopServers()
		return nil
	})
	g.Go(func() error { return s.Health.Run(gctx) })
	g.Go(func() error { return GRPC(serversCtx, s.GRPC, s.grpcLis, s.cfg.DrainTimeout) })
	httpLis := LimitConns(s.httpLis, s.MaxConns)
	httpSrv.ConnState = ConnState(httpLis)
	g.Go(func() error { return HTTP(serversCtx, httpSrv, httpLis, s.cfg.DrainTimeout) })
	if s.pprofLis != nil {
		s.log.Info("serving pprof", "addr", s.pprofLis.Addr().String())
		g.Go(func() error {
			return HTTP(serversCtx, &http.Server{Handler: pprofMux(), ReadHeaderTimeout: defaultReadHeaderTimeout}, s.pprofLis, time.Second)
		})
	}
	for _, w := range workers {
		g.Go(func() error { return w(gctx) })
	}
	err := g.Wait()
	s.log.Info("stopped")
	return err
}

// pprofMux serves the runtime profiles under /debug/pprof/ without touching
// http.DefaultServeMux.
func pprofMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
