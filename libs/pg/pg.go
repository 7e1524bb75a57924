// Package pg opens PostgreSQL connection pools, runs transactions and
// embedded goose migrations, and coordinates singleton jobs with advisory
// locks. It knows nothing about any service's schema.
package pg

import (
	"context"
	"errors"
	"fmt"

	"github.com/exaring/otelpgx"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// Open connects a pool to the database at url and checks that it answers.
// Every query is traced with tp; pool statistics are exported through mp
// when it is not nil.
func Open(ctx context.Context, url string, tp trace.TracerProvider, mp metric.MeterProvider) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// The parse error can quote the URL, password included.
		return nil, errors.New("parse database url: invalid connection string")
	}
	if tp != nil {
		cfg.ConnConfig.Tracer = otelpgx.NewTracer(otelpgx.WithTracerProvider(tp), otelpgx.WithDisableConnectionDetailsInAttributes())
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("create pool: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("ping database %s/%s: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Database, err)
	}
	if mp != nil {
		if err := otelpgx.RecordStats(pool, otelpgx.WithStatsMeterProvider(mp)); err != nil {
			pool.Close()
			return nil, fmt.Errorf("record pool stats: %w", err)
		}
	}
	return pool, nil
}

// Beginner is what InTx needs: a pool, a connection or an outer transaction
// (which then yields a savepoint).
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// InTx runs fn in a transaction that commits when fn returns nil and rolls
// back otherwise, including when fn panics.
func InTx(ctx context.Context, db Beginner, fn func(pgx.Tx) error) (err error) {
	tx, err := db.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	defer func() {
		if p := recover(); p != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx))
			panic(p)
		}
		if err != nil {
			// The rollback error adds nothing to fn's error; a broken
			// connection is discarded by the pool either way.
			_ = tx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit transaction: %w", err)
	}
	return nil
}

// Config is the part of a service's configuration that concerns its
// database.
type Config struct {
	DatabaseURL string `env:"DATABASE_URL"`
}

// Validate reports a missing URL.
func (c Config) Validate() error {
	if c.DatabaseURL == "" {
		return errors.New("DATABASE_URL is required")
	}
	return nil
}
