package serve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
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
// share. Register APIs on GRPC and REST handlers on Mux, then call Run.
type Servers struct {
	Health *Health
	GRPC   *grpc.Server
	// Mux already serves /healthz, /readyz and /metrics.
	Mux *http.ServeMux

	log *slog.Logger
	tel *telemetry.Telemetry
	cfg Config
}

// NewServers builds the servers of a process whose readiness is checks.
func NewServers(log *slog.Logger, tel *telemetry.Telemetry, cfg Config, checks ...Check) *Servers {
	h := NewHealth(checks...)
	mux := http.NewServeMux()
	h.Mount(mux)
	mux.Handle("GET /metrics", tel.MetricsHandler())
	return &Servers{Health: h, GRPC: NewGRPCServer(log, tel, h), Mux: mux, log: log, tel: tel, cfg: cfg}
}

// Run listens on both addresses, serves, and runs workers (outbox relays,
// consumers, snapshot streams) until ctx ends or one of them fails. Then it
// shuts down in order: readiness fails first, so load balancers stop
// sending; the servers drain in-flight calls for at most DrainTimeout while
// the workers stop. It returns after everything has stopped, with nil when
// ctx ended it.
func (s *Servers) Run(ctx context.Context, workers ...func(context.Context) error) error {
	grpcLis, err := Listen(s.cfg.GRPCAddr)
	if err != nil {
		return err
	}
	httpLis, err := Listen(s.cfg.HTTPAddr)
	if err != nil {
		_ = grpcLis.Close()
		return err
	}
	httpSrv := &http.Server{
		Handler:           NewHTTPHandler(s.tel, s.Mux),
		ReadHeaderTimeout: defaultReadHeaderTimeout,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	s.log.Info("serving", "grpc_addr", grpcLis.Addr().String(), "http_addr", httpLis.Addr().String())

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
	g.Go(func() error { return GRPC(serversCtx, s.GRPC, grpcLis, s.cfg.DrainTimeout) })
	g.Go(func() error { return HTTP(serversCtx, httpSrv, httpLis, s.cfg.DrainTimeout) })
	for _, w := range workers {
		g.Go(func() error { return w(gctx) })
	}
	err = g.Wait()
	s.log.Info("stopped")
	return err
}
