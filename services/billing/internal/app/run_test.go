package app_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/moat-ai/moat/libs/events"
	"github.com/moat-ai/moat/libs/events/eventstest"
	"github.com/moat-ai/moat/libs/pg"
	"github.com/moat-ai/moat/libs/pg/pgtest"
	"github.com/moat-ai/moat/libs/serve/servetest"
	"github.com/moat-ai/moat/services/billing/internal/app"
	"github.com/moat-ai/moat/services/billing/internal/postgres"
)

func env(t *testing.T, dbURL string) servetest.Env {
	t.Helper()
	return servetest.Env{
		"GRPC_ADDR":     servetest.FreeAddr(t),
		"HTTP_ADDR":     servetest.FreeAddr(t),
		"DATABASE_URL":  dbURL,
		"NATS_URL":      eventstest.NewServer(t).ClientURL(),
		"DRAIN_TIMEOUT": "2s",
	}
}

// The migrate subcommand brings an empty database to the current schema,
// and serve then starts, reports ready on gRPC and HTTP, owns its stream,
// and stops cleanly when its context ends.
func TestMigrateThenServe(t *testing.T) {
	t.Parallel()
	pool, dbURL := pgtest.NewDatabase(t) // empty: no migrations
	e := env(t, dbURL)

	if err := app.Run(context.Background(), []string{"migrate"}, e.Getenv, &servetest.SyncBuffer{}); err != nil {
		t.Fatalf("Run(migrate) = %v", err)
	}
	if err := pg.CheckMigrated(context.Background(), pool, events.Migrations, postgres.Migrations); err != nil {
		t.Fatalf("schema after migrate: %v", err)
	}

	p := servetest.Start(t, app.Run, e)
	servetest.WaitServing(t, p, e["GRPC_ADDR"], 20*time.Second)
	servetest.CheckProbes(t, e["HTTP_ADDR"])
	if err := p.Stop(t, 10*time.Second); err != nil {
		t.Fatalf("Run after cancel = %v, want nil", err)
	}
	for _, want := range []string{`"msg":"serving"`, `"msg":"outbox relay active"`, `"msg":"stopped"`} {
		if !p.Log.Contains(want) {
			t.Errorf("log lacks %s:\n%s", want, p.Log)
		}
	}
}

// serve refuses a database whose schema is behind: migrations never run
// implicitly.
func TestServeRefusesUnmigratedDatabase(t *testing.T) {
	t.Parallel()
	_, dbURL := pgtest.NewDatabase(t)
	err := app.Run(context.Background(), nil, env(t, dbURL).Getenv, &servetest.SyncBuffer{})
	if !errors.Is(err, pg.ErrSchemaBehind) {
		t.Fatalf("Run(serve) on an empty database = %v, want ErrSchemaBehind", err)
	}
}

func TestRunRejectsBadInvocation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		env  servetest.Env
		want []string
	}{
		{"unknown subcommand", []string{"serv"}, servetest.Env{}, []string{`unknown subcommand "serv"`}},
		{"extra argument", []string{"migrate", "now"}, servetest.Env{}, []string{"takes no arguments"}},
		{"every config problem at once", nil, servetest.Env{"NATS_REPLICAS": "9", "DRAIN_TIMEOUT": "-1s"},
			[]string{"DATABASE_URL is required", "NATS_REPLICAS must be 1 to 5", "DRAIN_TIMEOUT must be positive"}},
		{"bad log level", nil, servetest.Env{"DATABASE_URL": "postgres://x@127.0.0.1:1/x", "LOG_LEVEL": "loud"}, []string{"LOG_LEVEL"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := app.Run(context.Background(), tt.args, tt.env.Getenv, &servetest.SyncBuffer{})
			if err == nil {
				t.Fatalf("Run(%q) = nil, want an error", tt.args)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Run(%q) = %q, want it to mention %q", tt.args, err, w)
				}
			}
		})
	}
}

// A database URL's password never appears in the error for an unreachable
// database.
func TestRunDoesNotLeakDatabasePassword(t *testing.T) {
	t.Parallel()
	e := servetest.Env{"DATABASE_URL": "postgres://billing:hunter2-secret@127.0.0.1:1/billing?connect_timeout=1"}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	log := &servetest.SyncBuffer{}
	err := app.Run(ctx, nil, e.Getenv, log)
	if err == nil {
		t.Fatal("Run with an unreachable database = nil")
	}
	if strings.Contains(err.Error(), "hunter2-secret") || log.Contains("hunter2-secret") {
		t.Errorf("password leaked: err=%q log=%q", err, log)
	}
}
