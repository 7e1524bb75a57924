package pg_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/moat-ai/moat/libs/pg"
	"github.com/moat-ai/moat/libs/pg/pgtest"
)

func testMigrations(t *testing.T) pg.Migrations {
	t.Helper()
	sub, err := fs.Sub(os.DirFS("testdata"), "migrations")
	if err != nil {
		t.Fatal(err)
	}
	return pg.Migrations{Name: "pgtest_widgets", FS: sub}
}

func TestInTx(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewDatabase(t, testMigrations(t))
	ctx := context.Background()
	errBoom := errors.New("boom")

	if err := pg.InTx(ctx, pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "INSERT INTO widgets (id, name) VALUES (1, 'kept')")
		return err
	}); err != nil {
		t.Fatalf("InTx(commit) = %v", err)
	}
	err := pg.InTx(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO widgets (id, name) VALUES (2, 'rolled back')"); err != nil {
			return err
		}
		return errBoom
	})
	if !errors.Is(err, errBoom) {
		t.Fatalf("InTx(error) = %v, want %v", err, errBoom)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("InTx swallowed a panic")
			}
		}()
		_ = pg.InTx(ctx, pool, func(tx pgx.Tx) error {
			_, _ = tx.Exec(ctx, "INSERT INTO widgets (id, name) VALUES (3, 'panicked')")
			panic("bug")
		})
	}()

	var ids []int64
	rows, err := pool.Query(ctx, "SELECT id FROM widgets ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	ids, err = pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 1 || ids[0] != 1 {
		t.Errorf("rows after InTx = %v, want [1]", ids)
	}
}

func TestMigrateUpDownUp(t *testing.T) {
	t.Parallel()
	m := testMigrations(t)
	pool, _ := pgtest.NewDatabase(t, m) // already migrated
	ctx := context.Background()

	if err := pg.CheckMigrated(ctx, pool, m); err != nil {
		t.Fatalf("CheckMigrated after template = %v", err)
	}
	if err := pg.MigrateDown(ctx, pool, m); err != nil {
		t.Fatalf("MigrateDown = %v", err)
	}
	if err := pg.CheckMigrated(ctx, pool, m); !errors.Is(err, pg.ErrSchemaBehind) {
		t.Fatalf("CheckMigrated after down = %v, want ErrSchemaBehind", err)
	}
	// Two concurrent migrators apply each migration exactly once.
	var g errgroup.Group
	for range 2 {
		g.Go(func() error { return pg.Migrate(ctx, pool, m) })
	}
	if err := g.Wait(); err != nil {
		t.Fatalf("concurrent Migrate = %v", err)
	}
	if err := pg.CheckMigrated(ctx, pool, m); err != nil {
		t.Fatalf("CheckMigrated after up = %v", err)
	}
	if _, err := pool.Exec(ctx, "INSERT INTO widgets (id, name, color) VALUES (1, 'w', 'red')"); err != nil {
		t.Fatalf("schema after re-migration unusable: %v", err)
	}
}

func TestCheckMigratedSeesNewMigration(t *testing.T) {
	t.Parallel()
	m := testMigrations(t)
	pool, _ := pgtest.NewDatabase(t, m)
	grown := fstest.MapFS{
		"00001_widgets.sql":      {Data: mustRead(t, m.FS, "00001_widgets.sql")},
		"00002_widget_color.sql": {Data: mustRead(t, m.FS, "00002_widget_color.sql")},
		"00003_widget_size.sql":  {Data: []byte("-- +goose Up\nALTER TABLE widgets ADD COLUMN size int;\n-- +goose Down\nALTER TABLE widgets DROP COLUMN size;\n")},
	}
	next := pg.Migrations{Name: m.Name, FS: grown}
	if err := pg.CheckMigrated(context.Background(), pool, next); !errors.Is(err, pg.ErrSchemaBehind) {
		t.Fatalf("CheckMigrated with a new migration = %v, want ErrSchemaBehind", err)
	}
}

func TestOpenHidesPassword(t *testing.T) {
	t.Parallel()
	_, err := pg.Open(context.Background(), "postgres://u:s3cret-value@127.0.0.1:1/x?sslmode=%zz", nil, nil)
	if err == nil {
		t.Fatal("Open(bad url) = nil error")
	}
	if got := err.Error(); contains(got, "s3cret-value") {
		t.Errorf("Open error leaks the password: %q", got)
	}
	_, err = pg.Open(context.Background(), "postgres://u:s3cret-value@127.0.0.1:1/x?connect_timeout=1", nil, nil)
	if err == nil || contains(err.Error(), "s3cret-value") {
		t.Errorf("Open(unreachable) = %v, want an error without the password", err)
	}
}

func TestRunExclusive(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewDatabase(t, testMigrations(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var running, maxRunning, runs atomic.Int32
	job := func(ctx context.Context) error {
		n := running.Add(1)
		defer running.Add(-1)
		for {
			m := maxRunning.Load()
			if n <= m || maxRunning.CompareAndSwap(m, n) {
				break
			}
		}
		runs.Add(1)
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
		return nil
	}
	opts := pg.LockOptions{Retry: 20 * time.Millisecond, Check: 50 * time.Millisecond}
	var g errgroup.Group
	for range 4 {
		g.Go(func() error { return pg.RunExclusive(ctx, pool, "test-job", opts, job) })
	}
	if err := g.Wait(); err != nil {
		t.Fatalf("RunExclusive = %v", err)
	}
	if got := maxRunning.Load(); got != 1 {
		t.Errorf("max concurrent holders = %d, want 1", got)
	}
	if got := runs.Load(); got != 4 {
		t.Errorf("runs = %d, want 4 (each waiter gets its turn)", got)
	}
}

func TestRunExclusiveLosesLockWithSession(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewDatabase(t, testMigrations(t))
	ctx := context.Background()
	opts := pg.LockOptions{Retry: 20 * time.Millisecond, Check: 30 * time.Millisecond}

	err := pg.RunExclusive(ctx, pool, "doomed-job", opts, func(ctx context.Context) error {
		// Kill our own lock session from another connection.
		if _, err := pool.Exec(context.Background(), `
			SELECT pg_terminate_backend(pid) FROM pg_locks
			WHERE locktype = 'advisory' AND objid = ($1::bigint & x'ffffffff'::bigint)::oid AND pid <> pg_backend_pid()`,
			pg.LockKey("doomed-job")); err != nil {
			return err
		}
		<-ctx.Done()
		return ctx.Err()
	})
	if err == nil || !contains(err.Error(), "advisory lock session lost") {
		t.Fatalf("RunExclusive after session loss = %v, want lock-lost error", err)
	}
}

func mustRead(t *testing.T, fsys fs.FS, name string) []byte {
	t.Helper()
	b, err := fs.ReadFile(fsys, name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
