// Package postgres is the config service's PostgreSQL adapter: its schema,
// embedded as goose migrations, and Store, the config.Store on pgx.
//
// Versions. Every configuration row carries the version of its last change,
// drawn from the one sequence config_version, and a deletion leaves a
// tombstone row with a fresh version. A sequence alone does not tell a
// reader "everything up to N is visible": a transaction that drew 10 may
// commit after one that drew 11. So every writing transaction first takes
// the transaction-level advisory lock config:write and only then draws
// versions: writers are serialized, and a version becomes visible only
// after every smaller one. Configuration writes are rare admin actions, so
// one writer at a time costs nothing that matters, and it also makes the
// parent and reference checks of a write race-free without row locks.
//
// Every writing transaction also writes its audit event to the outbox and
// notifies the channel config_changes (pg_notify, empty payload), which
// wakes the WatchConfig streams.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/propagation"

	"github.com/moat-ai/moat/libs/pg"
	"github.com/moat-ai/moat/services/config/internal/config"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrations is the config schema, applied by the migrate subcommand.
var Migrations = func() pg.Migrations {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		panic(err) // the embed pattern guarantees the directory
	}
	return pg.Migrations{Name: "config", FS: sub}
}()

// NotifyChannel is the PostgreSQL channel every configuration change
// notifies, with an empty payload.
const NotifyChannel = "config_changes"

// writeLock names the advisory lock every writing transaction holds.
var writeLock = pg.LockKey("config:write")

// Store is config.Store on PostgreSQL. It is safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool
	prop propagation.TextMapPropagator
}

var _ config.Store = (*Store)(nil)

// NewStore returns a Store on pool. prop injects the trace context into
// the audit events it enqueues; nil injects none.
func NewStore(pool *pgxpool.Pool, prop propagation.TextMapPropagator) *Store {
	return &Store{pool: pool, prop: prop}
}

// querier is what reads need: the pool or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// write runs fn in a transaction that holds the write lock, then writes the
// audit record (which fn may retarget) and wakes the watchers, all in the
// same transaction.
func (s *Store) write(ctx context.Context, a *config.AuditRecord, fn func(pgx.Tx) error) error {
	err := pg.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, writeLock); err != nil {
			return fmt.Errorf("take configuration write lock: %w", err)
		}
		if err := fn(tx); err != nil {
			return err
		}
		if err := s.enqueueAudit(ctx, tx, *a); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `SELECT pg_notify($1, '')`, NotifyChannel); err != nil {
			return fmt.Errorf("notify watchers: %w", err)
		}
		return nil
	})
	return dbError(err)
}

// read runs fn in a read-only REPEATABLE READ transaction: every query of
// fn sees the same committed state.
func (s *Store) read(ctx context.Context, fn func(pgx.Tx) error) error {
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, fn)
	return dbError(err)
}

// queryRow returns the one row sql selects, or found == false for none.
func queryRow[T any](ctx context.Context, q querier, scan pgx.RowToFunc[T], sql string, args ...any) (v T, found bool, err error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return v, false, err
	}
	v, err = pgx.CollectExactlyOneRow(rows, scan)
	if errors.Is(err, pgx.ErrNoRows) {
		return v, false, nil
	}
	return v, err == nil, err
}

// queryRows returns every row sql selects.
func queryRows[T any](ctx context.Context, q querier, scan pgx.RowToFunc[T], sql string, args ...any) ([]T, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, scan)
}

// page trims rows fetched with limit Size+1 to one page and returns the
// cursor of the next page, "" when there is none.
func page[T any](rows []T, p config.Page, id func(T) uuid.UUID) ([]T, string) {
	if len(rows) <= p.Size {
		return rows, ""
	}
	rows = rows[:p.Size]
	return rows, id(rows[len(rows)-1]).String()
}

// cursor is the SQL argument for a page's After: NULL on the first page.
func cursor(p config.Page) any {
	if p.After == "" {
		return nil
	}
	return p.After
}

// uniqueViolation reports whether err is a unique violation of constraint.
func uniqueViolation(err error, constraint string) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505" && pe.ConstraintName == constraint
}

// dbError marks errors that mean "the database cannot be reached" with
// config.ErrUnavailable, so that callers can tell an outage (retry later)
// from a bug. Domain errors and context errors pass through unchanged.
func dbError(err error) error {
	if err == nil {
		return nil
	}
	var ce *pgconn.ConnectError
	var ne net.Error
	var pe *pgconn.PgError
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.As(err, &ce), errors.As(err, &ne):
		return fmt.Errorf("%w: %w", config.ErrUnavailable, err)
	case errors.As(err, &pe) && (pe.Code == "53300" || pe.Code == "57P01" || pe.Code == "57P02" || pe.Code == "57P03"):
		// too_many_connections, admin_shutdown, crash_shutdown, cannot_connect_now
		return fmt.Errorf("%w: %w", config.ErrUnavailable, err)
	}
	return err
}

func newID() (uuid.UUID, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return uuid.UUID{}, fmt.Errorf("new row id: %w", err)
	}
	return id, nil
}

// nullable maps "" to SQL NULL, for request ids.
func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}
