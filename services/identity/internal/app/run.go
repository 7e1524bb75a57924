// Package app is the identity service's composition root: it reads the
// configuration, builds every component by hand and runs them until the
// context ends.
package app

import (
	"context"
	"fmt"
	"io"

	"github.com/moat-ai/moat/libs/events"
	"github.com/moat-ai/moat/libs/pg"
	"github.com/moat-ai/moat/libs/serve"
	"github.com/moat-ai/moat/libs/telemetry"
	"github.com/moat-ai/moat/services/identity/internal/postgres"
)

const service = "identity"

// Migrations is the whole schema, applied by the migrate subcommand: the
// event tables and the service's own.
var Migrations = []pg.Migrations{events.Migrations, postgres.Migrations}

// Run builds the service from its environment and blocks until ctx ends or a
// component fails; it returns only after every component has shut down.
// args[0] may name a subcommand: "serve" (default) or "migrate".
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
	tel, err := telemetry.Start(ctx, service, getenv)
	if err != nil {
		return fmt.Errorf("start telemetry: %w", err)
	}
	defer tel.Close(log)

	pool, err := pg.Open(ctx, cfg.DB.DatabaseURL, tel.TracerProvider, tel.MeterProvider)
	if err != nil {
		return fmt.Errorf("open database: %w", err)
	}
	defer pool.Close()
	if cmd == "migrate" {
		if err := pg.Migrate(ctx, pool, Migrations...); err != nil {
			return err
		}
		log.Info("database migrated")
		return nil
	}
	if err := pg.CheckMigrated(ctx, pool, Migrations...); err != nil {
		return err
	}

	nc, js, err := events.Connect(cfg.Events.NATSURL, service, log)
	if err != nil {
		return err
	}
	defer events.Drain(nc, cfg.Serve.DrainTimeout)

	srv, err := serve.NewServers(log, tel, cfg.Serve, serve.Check{Name: "postgres", Fn: pool.Ping})
	if err != nil {
		return err
	}
	relay := &events.Relay{
		Pool:   pool,
		JS:     js,
		Stream: events.StreamConfig{Name: "IDENTITY", Subjects: []string{"identity.>"}, Replicas: cfg.Events.NATSReplicas},
		Log:    log,
		Meter:  tel.MeterProvider,
	}
	return srv.Run(ctx, relay.Run)
}
