package servetest

import (
	"context"
	"errors"
	"io"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/moat-ai/moat/libs/events/eventstest"
	"github.com/moat-ai/moat/libs/pg"
	"github.com/moat-ai/moat/libs/pg/pgtest"
)

// RunFunc is a service's app.Run.
type RunFunc func(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error

// Service describes a service to the common component tests.
type Service struct {
	Run RunFunc
	// Migrations is the service's whole schema; nil for the gateway.
	Migrations []pg.Migrations
	// Stream is the stream the service owns and creates at start.
	Stream string
	// Env holds the service's own variables (secrets, peers' addresses).
	// Every environment the suite builds gets them wherever it does not
	// set the variable itself, so that a case stays about what it sets.
	Env Env
}

// Environ returns a working environment for s: free loopback ports, a
// fresh in-process NATS server, dbURL for a service with a database, and
// s.Env.
func (s Service) Environ(t testing.TB, dbURL string) Env {
	t.Helper()
	e := Env{
		"GRPC_ADDR":     FreeAddr(t),
		"HTTP_ADDR":     FreeAddr(t),
		"NATS_URL":      eventstest.NewServer(t).ClientURL(),
		"DRAIN_TIMEOUT": "2s",
	}
	if s.Migrations != nil {
		e["DATABASE_URL"] = dbURL
	}
	return s.complete(e)
}

// complete returns a copy of e with s.Env's variables where e has none.
func (s Service) complete(e Env) Env {
	out := make(Env, len(e)+len(s.Env))
	maps.Copy(out, s.Env)
	maps.Copy(out, e)
	return out
}

// TestCommon runs the behaviour every Moat service shares: migrate brings an
// empty database to the current schema, serve refuses an unmigrated one,
// a started service is ready on gRPC and HTTP and owns its stream, it stops
// cleanly when its context ends, bad invocations fail with every problem
// named, and no database password reaches an error or a log line.
func TestCommon(t *testing.T, s Service) {
	t.Helper()
	t.Run("migrate then serve", func(t *testing.T) {
		t.Parallel()
		dbURL := ""
		if s.Migrations != nil {
			pool, u := pgtest.NewDatabase(t) // empty: no migrations
			dbURL = u
			defer func() {
				if err := pg.CheckMigrated(context.Background(), pool, s.Migrations...); err != nil {
					t.Errorf("schema after migrate: %v", err)
				}
			}()
		}
		e := s.Environ(t, dbURL)
		if err := s.Run(context.Background(), []string{"migrate"}, e.Getenv, &SyncBuffer{}); err != nil {
			t.Fatalf("Run(migrate) = %v", err)
		}

		p := Start(t, s.Run, e)
		WaitServing(t, p, e["GRPC_ADDR"], 20*time.Second)
		CheckProbes(t, e["HTTP_ADDR"])
		WaitStream(t, p, e["NATS_URL"], s.Stream, 10*time.Second)
		if err := p.Stop(t, 10*time.Second); err != nil {
			t.Fatalf("Run after cancel = %v, want nil", err)
		}
		for _, want := range []string{`"msg":"serving"`, `"msg":"stopped"`} {
			if !p.Log.Contains(want) {
				t.Errorf("log lacks %s:\n%s", want, p.Log)
			}
		}
	})

	if s.Migrations != nil {
		t.Run("serve refuses an unmigrated database", func(t *testing.T) {
			t.Parallel()
			_, dbURL := pgtest.NewDatabase(t)
			err := s.Run(context.Background(), nil, s.Environ(t, dbURL).Getenv, &SyncBuffer{})
			if !errors.Is(err, pg.ErrSchemaBehind) {
				t.Fatalf("Run(serve) on an empty database = %v, want ErrSchemaBehind", err)
			}
		})
		t.Run("no database password in errors or logs", func(t *testing.T) {
			t.Parallel()
			e := s.complete(Env{"DATABASE_URL": "postgres://svc:hunter2-secret@127.0.0.1:1/svc?connect_timeout=1"}) //nolint:gosec // a fake password the test looks for
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			log := &SyncBuffer{}
			err := s.Run(ctx, nil, e.Getenv, log)
			if err == nil {
				t.Fatal("Run with an unreachable database = nil")
			}
			if strings.Contains(err.Error(), "hunter2-secret") || log.Contains("hunter2-secret") {
				t.Errorf("password leaked: err=%q log=%q", err, log)
			}
		})
	}

	tests := []struct {
		name string
		args []string
		env  Env
		want []string
	}{
		{"unknown subcommand", []string{"serv"}, Env{}, []string{`unknown subcommand "serv"`}},
		{"extra argument", []string{"serve", "now"}, Env{}, []string{"takes no arguments"}},
		{"every config problem at once", nil, Env{"NATS_REPLICAS": "9", "DRAIN_TIMEOUT": "-1s", "LOG_LEVEL": "loud"},
			[]string{"NATS_REPLICAS must be 1 to 5", "DRAIN_TIMEOUT must be positive", "LOG_LEVEL"}},
		{"a malformed value names its variable", nil, Env{"DRAIN_TIMEOUT": "soon"}, []string{"DRAIN_TIMEOUT"}},
	}
	if s.Migrations != nil {
		tests[2].want = append(tests[2].want, "DATABASE_URL is required")
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := s.Run(context.Background(), tt.args, s.complete(tt.env).Getenv, &SyncBuffer{})
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
