// Package app is the gateway's composition root: it reads the
// configuration, builds every component by hand and runs them until the
// context ends.
package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/moat-ai/moat/libs/events"
	"github.com/moat-ai/moat/libs/serve"
	"github.com/moat-ai/moat/libs/telemetry"
)

const service = "gateway"

// Run builds the gateway from its environment and blocks until ctx ends or
// a component fails; it returns only after every component has shut down.
// args[0] may name a subcommand: "serve" (default) or "migrate", which is a
// no-op kept so every service answers the same commands (the gateway has no
// database).
func Run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cmd, err := serve.Subcommand(args)
	if err != nil {
		return err
	}
	cfg, err := LoadConfig(ctx, getenv)
	if err != nil {
		return fmt.Errorf("load config: %w", err)
	}
	log, err := telemetry.NewLogger(stderr, cfg.Serve.LogLevel, service)
	if err != nil {
		return fmt.Errorf("load config: %w", err)
	}
	if cmd == "migrate" {
		log.Info("nothing to migrate: the gateway has no database")
		return nil
	}
	tel, err := telemetry.Start(ctx, service, getenv)
	if err != nil {
		return fmt.Errorf("start telemetry: %w", err)
	}
	defer tel.Close(log)

	nc, js, err := events.Connect(cfg.Events.NATSURL, service, log)
	if err != nil {
		return err
	}
	defer events.Drain(nc, cfg.Serve.DrainTimeout)

	srv, err := serve.NewServers(log, tel, cfg.Serve)
	if err != nil {
		return err
	}
	stream := events.StreamConfig{Name: "GATEWAY", Subjects: []string{"gateway.>"}, Replicas: cfg.Events.NATSReplicas}
	return srv.Run(ctx, func(ctx context.Context) error { return ensureStream(ctx, js, stream, log) })
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
