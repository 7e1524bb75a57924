// Package app is the gateway's composition root: it reads the
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

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/moat-ai/moat/libs/events"
	"github.com/moat-ai/moat/libs/serve"
	"github.com/moat-ai/moat/libs/telemetry"
)

const service = "gateway"

// stream is the gateway's own event stream (usage and denials). It carries
// money, so it keeps discard: new and a long dedupe window (the defaults of
// events.EnsureStream).
func stream(cfg Config) events.StreamConfig {
	return events.StreamConfig{Name: "GATEWAY", Subjects: []string{"gateway.>"}, Replicas: cfg.NATSReplicas}
}

// Run builds the gateway from its environment and blocks until ctx ends or
// a component fails; it returns only after every component has shut down.
// args[0] may name a subcommand: "serve" (default) or "migrate", which is a
// no-op kept so every service answers the same commands (the gateway has no
// database).
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
	if cmd == "migrate" {
		log.Info("nothing to migrate: the gateway has no database")
		return nil
	}

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

	nc, js, err := events.Connect(cfg.NATSURL, service, log)
	if err != nil {
		return err
	}
	defer events.Drain(nc, cfg.DrainTimeout)

	health := serve.NewHealth()
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

	// Shutdown order: readiness fails first, then the servers drain; the
	// deferred calls close NATS and telemetry last.
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
	g.Go(func() error { return ensureStream(gctx, js, stream(cfg), log) })
	err = g.Wait()
	log.Info("stopped")
	return err
}

// ensureStream creates or updates the gateway's stream, retrying while NATS
// is unreachable: the gateway serves traffic without NATS and spools events.
func ensureStream(ctx context.Context, js jetstream.JetStream, cfg events.StreamConfig, log *slog.Logger) error {
	for {
		_, err := events.EnsureStream(ctx, js, cfg)
		if err == nil {
			log.Info("stream ready", "stream", cfg.Name)
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
		log.Warn("ensure stream; retrying", "stream", cfg.Name, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
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
