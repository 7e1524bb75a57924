// Package app is the billing service's composition root: it reads the
// configuration, builds every component by hand and runs them until the
// context ends.
package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/moat-ai/moat/libs/events"
	"github.com/moat-ai/moat/libs/pg"
	"github.com/moat-ai/moat/libs/serve"
	"github.com/moat-ai/moat/libs/telemetry"
	"github.com/moat-ai/moat/services/billing/internal/postgres"
)

const service = "billing"

// stream is the billing service's own event stream.
func stream(cfg Config) events.StreamConfig {
	return events.StreamConfig{Name: "BILLING", Subjects: []string{"billing.>"}, Replicas: cfg.NATSReplicas}
}

// Run builds the service from its environment and blocks until ctx ends or a
// component fails; it returns only after every component has shut down.
// args[0] may name a subcommand: "serve" (default) or "migrate".
func Run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cmd, err := subcommand(args)
	if err != nil {
		return err
	}
	cfg, err := LoadConfig(ctx, getenv)
	if err != nil {
		return fmt.Errorf("load config: %w", err)
	}
	level, err := telemetry.ParseLevel(cfg.LogLevel)
	if err != nil {
		return fmt.Errorf("load config: LOG_LEVEL: %w", err)
	}
	log := slog.New(telemetry.NewHandler(stderr, level)).With("service", service)

	tel, err := telemetry.Start(ctx, service, getenv)
	if err != nil {
		return fmt.Errorf("start telemetry: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := tel.Shutdown(sctx); err != nil {
			log.Warn("flush telemetry", "err", err)
		}
	}()

	pool, err := pg.Open(ctx, cfg.DatabaseURL, tel.TracerProvider, tel.MeterProvider)
	if err != nil {
		return fmt.Errorf("open database: %w", err)
	}
	defer pool.Close()

	migrations := []pg.Migrations{events.Migrations, postgres.Migrations}
	if cmd == "migrate" {
		if err := pg.Migrate(ctx, pool, migrations...); err != nil {
			return err
		}
		log.Info("database migrated")
		return nil
	}
	if err := pg.CheckMigrated(ctx, pool, migrations...); err != nil {
		return err
	}

	nc, js, err := events.Connect(cfg.NATSURL, service, log)
	if err != nil {
		return err
	}
	defer events.Drain(nc, cfg.DrainTimeout)

	health := serve.NewHealth(serve.Check{Name: "postgres", Fn: pool.Ping})
	grpcSrv := serve.NewGRPCServer(log, tel, health)
	mux := http.NewServeMux()
	health.Mount(mux)
	mux.Handle("GET /metrics", tel.MetricsHandler())
	httpSrv := &http.Server{Handler: serve.NewHTTPHandler(tel, mux), ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}

	grpcLis, err := serve.Listen(cfg.GRPCAddr)
	if err != nil {
		return err
	}
	httpLis, err := serve.Listen(cfg.HTTPAddr)
	if err != nil {
		_ = grpcLis.Close()
		return err
	}
	log.Info("serving", "grpc_addr", grpcLis.Addr().String(), "http_addr", httpLis.Addr().String())

	relay := &events.Relay{Pool: pool, JS: js, Stream: stream(cfg), Log: log, Meter: tel.MeterProvider}

	// Shutdown order: readiness fails first, then the servers drain, then
	// the background workers stop; the deferred calls close NATS, the pool
	// and telemetry last.
	serversCtx, stopServers := context.WithCancel(context.WithoutCancel(ctx))
	defer stopServers()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		<-gctx.Done()
		health.Shutdown()
		stopServers()
		return nil
	})
	g.Go(func() error { return health.Run(gctx) })
	g.Go(func() error { return serve.GRPC(serversCtx, grpcSrv, grpcLis, cfg.DrainTimeout) })
	g.Go(func() error { return serve.HTTP(serversCtx, httpSrv, httpLis, cfg.DrainTimeout) })
	g.Go(func() error { return relay.Run(gctx) })
	err = g.Wait()
	log.Info("stopped")
	return err
}

func subcommand(args []string) (string, error) {
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
