// Package pgtest gives each test its own PostgreSQL database, cloned from a
// template that has every migration applied (the exposure-notifications
// server's pattern): migrations run once per package, a clone costs
// milliseconds, and tests never see each other's rows.
//
// The server comes from TEST_DATABASE_URL, a URL of a role allowed to create
// databases; `make test` starts a private PostgreSQL and sets it.
package pgtest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/url"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/moat-ai/moat/libs/pg"
)

// EnvURL names the variable holding the administrative database URL.
const EnvURL = "TEST_DATABASE_URL"

// templates remembers which templates this process has already built, so
// that only the first test of a package pays for the migrations.
var templates sync.Map // template name -> *sync.Once-guarded result

type templateResult struct {
	once sync.Once
	err  error
}

// AdminURL returns TEST_DATABASE_URL. Without it the test fails (it does
// not skip) and says how to get one; under -short, which selects unit tests
// only, it skips instead.
func AdminURL(t testing.TB) string {
	t.Helper()
	u := lookupEnv(EnvURL)
	if u == "" {
		if testing.Short() {
			t.Skip("integration test: needs PostgreSQL; run without -short (make test starts it)")
		}
		t.Fatalf("%s is not set: this test needs PostgreSQL. Run `make test`, which installs and starts it, or export %s=postgres://user:pass@host:port/postgres", EnvURL, EnvURL)
	}
	return u
}

// NewDatabase creates an empty database with every migration of sets
// applied, returns a pool connected to it and its URL, and drops it when the
// test ends.
func NewDatabase(t testing.TB, sets ...pg.Migrations) (*pgxpool.Pool, string) {
	t.Helper()
	admin := AdminURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	tmpl, err := templateName(sets)
	if err != nil {
		t.Fatalf("hash migrations: %v", err)
	}
	v, _ := templates.LoadOrStore(tmpl, &templateResult{})
	res := v.(*templateResult)
	res.once.Do(func() { res.err = buildTemplate(ctx, admin, tmpl, sets) })
	if res.err != nil {
		t.Fatalf("build template database: %v", res.err)
	}

	name := "moat_test_" + randomSuffix()
	if err := adminExec(ctx, admin, fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", ident(name), ident(tmpl))); err != nil {
		t.Fatalf("clone template: %v", err)
	}
	dbURL, err := withDatabase(admin, name)
	if err != nil {
		t.Fatalf("database url: %v", err)
	}
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatalf("connect to test database: %v", err)
	}
	t.Cleanup(func() {
		pool.Close()
		dctx, dcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer dcancel()
		if err := adminExec(dctx, admin, fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", ident(name))); err != nil {
			t.Errorf("drop test database: %v", err)
		}
	})
	return pool, dbURL
}

// templateName derives the template from the migrations' content, so that a
// changed migration gets a fresh template and an unchanged one is reused
// across test binaries and runs.
func templateName(sets []pg.Migrations) (string, error) {
	h := sha256.New()
	for _, m := range sets {
		fmt.Fprintf(h, "set %s\n", m.Name)
		names, err := fs.Glob(m.FS, "*.sql")
		if err != nil {
			return "", err
		}
		sort.Strings(names)
		for _, n := range names {
			b, err := fs.ReadFile(m.FS, n)
			if err != nil {
				return "", err
			}
			fmt.Fprintf(h, "%s %d\n", n, len(b))
			h.Write(b)
		}
	}
	return "moat_tpl_" + hex.EncodeToString(h.Sum(nil))[:16], nil
}

func buildTemplate(ctx context.Context, admin, tmpl string, sets []pg.Migrations) error {
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", EnvURL, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	// Test binaries of several packages run at once and may build the same
	// template: serialise on an advisory lock and re-check under it.
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", pg.LockKey("pgtest:"+tmpl)); err != nil {
		return fmt.Errorf("lock template: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", pg.LockKey("pgtest:"+tmpl)) //nolint:errcheck // closing the session unlocks too

	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", tmpl).Scan(&exists); err != nil {
		return fmt.Errorf("look up template: %w", err)
	}
	if exists {
		return nil
	}
	// Build under a scratch name and rename at the end, so that a crash
	// half-way never leaves a template that looks complete.
	scratch := tmpl + "_build_" + randomSuffix()
	if _, err := conn.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s", ident(scratch))); err != nil {
		return fmt.Errorf("create template: %w", err)
	}
	scratchURL, err := withDatabase(admin, scratch)
	if err != nil {
		return err
	}
	if err := migrate(ctx, scratchURL, sets); err != nil {
		_, _ = conn.Exec(context.WithoutCancel(ctx), fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", ident(scratch)))
		return err
	}
	if _, err := conn.Exec(ctx, fmt.Sprintf("ALTER DATABASE %s RENAME TO %s", ident(scratch), ident(tmpl))); err != nil {
		return fmt.Errorf("publish template: %w", err)
	}
	return nil
}

func migrate(ctx context.Context, dbURL string, sets []pg.Migrations) error {
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return fmt.Errorf("connect to template: %w", err)
	}
	defer pool.Close()
	if err := pg.Migrate(ctx, pool, sets...); err != nil {
		return fmt.Errorf("migrate template: %w", err)
	}
	return nil
}

func adminExec(ctx context.Context, admin, sql string) error {
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", EnvURL, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, sql)
	return err
}

func withDatabase(rawURL, name string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", fmt.Errorf("parse %s: invalid URL", EnvURL)
	}
	u.Path = "/" + name
	return u.String(), nil
}

func ident(s string) string { return pgx.Identifier{s}.Sanitize() }

func randomSuffix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
