package pg

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

// Migrations is one independently versioned set of goose SQL migrations.
// A service has its own set and may include sets owned by libraries (the
// event tables, for instance); each set keeps its version in its own table,
// so that a library can add a migration without renumbering any service's.
type Migrations struct {
	// Name identifies the set; its versions live in goose_<name>_version.
	Name string
	// FS holds the *.sql files at its root.
	FS fs.FS
}

// ErrSchemaBehind reports that a database has migrations still to apply.
var ErrSchemaBehind = errors.New("database schema is behind: run the migrate subcommand")

func (m Migrations) table() string { return "goose_" + m.Name + "_version" }

func (m Migrations) provider(pool *pgxpool.Pool) (*goose.Provider, func() error, error) {
	if m.Name == "" || strings.ContainsAny(m.Name, " .\"'") {
		return nil, nil, fmt.Errorf("migration set name %q is not a plain identifier", m.Name)
	}
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return nil, nil, fmt.Errorf("create migration locker: %w", err)
	}
	db := stdlib.OpenDBFromPool(pool)
	p, err := goose.NewProvider(goose.DialectPostgres, db, m.FS,
		goose.WithTableName(m.table()),
		goose.WithSessionLocker(locker),
		goose.WithDisableGlobalRegistry(true),
	)
	if err != nil {
		_ = db.Close()
		return nil, nil, fmt.Errorf("load migrations %s: %w", m.Name, err)
	}
	return p, db.Close, nil
}

// Migrate applies every pending migration of each set, in order. It holds a
// PostgreSQL session lock while it works, so concurrent runs (two replicas'
// migrate jobs) apply each migration once.
func Migrate(ctx context.Context, pool *pgxpool.Pool, sets ...Migrations) error {
	for _, m := range sets {
		p, closeDB, err := m.provider(pool)
		if err != nil {
			return err
		}
		_, err = p.Up(ctx)
		_ = closeDB()
		if err != nil {
			return fmt.Errorf("apply migrations %s: %w", m.Name, err)
		}
	}
	return nil
}

// MigrateDown rolls every set back to version zero, in reverse order. Tests
// use it to prove that each Down section undoes its Up.
func MigrateDown(ctx context.Context, pool *pgxpool.Pool, sets ...Migrations) error {
	for i := len(sets) - 1; i >= 0; i-- {
		p, closeDB, err := sets[i].provider(pool)
		if err != nil {
			return err
		}
		_, err = p.DownTo(ctx, 0)
		_ = closeDB()
		if err != nil {
			return fmt.Errorf("roll back migrations %s: %w", sets[i].Name, err)
		}
	}
	return nil
}

// CheckMigrated returns ErrSchemaBehind when any set has pending migrations.
// Servers call it at start and refuse to serve an old schema: migrations run
// from the migrate subcommand only, never implicitly.
func CheckMigrated(ctx context.Context, pool *pgxpool.Pool, sets ...Migrations) error {
	for _, m := range sets {
		p, closeDB, err := m.provider(pool)
		if err != nil {
			return err
		}
		current, target, err := p.GetVersions(ctx)
		_ = closeDB()
		if err != nil {
			return fmt.Errorf("read schema version %s: %w", m.Name, err)
		}
		if current < target {
			return fmt.Errorf("%w (%s at version %d of %d)", ErrSchemaBehind, m.Name, current, target)
		}
	}
	return nil
}
