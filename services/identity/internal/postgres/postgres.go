// Package postgres is the identity service's PostgreSQL adapter: its schema,
// embedded as goose migrations, and the identity.Store that keeps API keys,
// versions the key index, wakes its watchers with NOTIFY and writes audit
// events to the outbox in the transaction of each change.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/propagation"

	"github.com/moat-ai/moat/libs/events"
	"github.com/moat-ai/moat/libs/pg"
	auditv1 "github.com/moat-ai/moat/proto/gen/go/moat/audit/v1"
	"github.com/moat-ai/moat/services/identity/internal/identity"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrations is the identity schema, applied by the migrate subcommand.
var Migrations = func() pg.Migrations {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		panic(err) // the embed pattern guarantees the directory
	}
	return pg.Migrations{Name: "identity", FS: sub}
}()

// The audit events identity publishes.
const (
	// AuditSource is their ce-source.
	AuditSource = "moat/identity"
	// AuditSubject is their subject in the IDENTITY stream.
	AuditSubject = "identity.v1.audit_event.recorded"
)

// KeysChannel is the NOTIFY channel of key changes: every transaction that
// changes a key notifies it, and key index watchers listen on it.
const KeysChannel = "identity_keys"

// Lock names. versionLock serialises the transactions that draw key
// versions, so that versions become visible in order; bootstrapLock lets
// one replica at a time decide whether a platform admin key is needed.
var (
	versionLock   = pg.LockKey("identity:api_keys:version")
	bootstrapLock = pg.LockKey("identity:bootstrap")
)

// Store is identity.Store on PostgreSQL. It is safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool
	prop propagation.TextMapPropagator
}

var _ identity.Store = (*Store)(nil)

// NewStore returns a Store on pool. prop carries the trace context of each
// change into its audit event; it may be nil.
func NewStore(pool *pgxpool.Pool, prop propagation.TextMapPropagator) *Store {
	return &Store{pool: pool, prop: prop}
}

const keyColumns = `id, role, organization, project, display_name, prefix, key_hmac,
	request_id, created_at, expire_at, revoked_at, version, allowed_models, rotated_from, last_used_at,
	owner, allowed_mcp_tools`

func scanKey(row pgx.Row) (identity.Key, error) {
	var (
		k                   identity.Key
		id                  uuid.UUID
		role                string
		requestID           *string
		expireAt, revokedAt *time.Time
		rotatedFrom         *uuid.UUID
		lastUsedAt          *time.Time
	)
	if err := row.Scan(&id, &role, &k.Organization, &k.Project, &k.DisplayName, &k.Prefix, &k.HMAC,
		&requestID, &k.CreateTime, &expireAt, &revokedAt, &k.Version, &k.AllowedModels, &rotatedFrom, &lastUsedAt,
		&k.Owner, &k.AllowedMCPTools); err != nil {
		return identity.Key{}, err
	}
	k.ID = id.String()
	switch role {
	case "project":
		k.Role = identity.RoleProject
	case "platform_admin":
		k.Role = identity.RolePlatformAdmin
	}
	if requestID != nil {
		k.RequestID = *requestID
	}
	k.CreateTime = k.CreateTime.UTC()
	if expireAt != nil {
		k.ExpireTime = expireAt.UTC()
	}
	if revokedAt != nil {
		k.RevokeTime = revokedAt.UTC()
	}
	if len(k.AllowedModels) == 0 {
		k.AllowedModels = nil // every route, as the domain spells it
	}
	if len(k.AllowedMCPTools) == 0 {
		k.AllowedMCPTools = nil
	}
	if rotatedFrom != nil {
		k.RotatedFrom = rotatedFrom.String()
	}
	if lastUsedAt != nil {
		k.LastUseTime = lastUsedAt.UTC()
	}
	return k, nil
}

func collectKeys(rows pgx.Rows) ([]identity.Key, error) {
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (identity.Key, error) { return scanKey(r) })
}

// nullable maps Go's zero values to SQL NULL.
func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func nullString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// CreateKey implements identity.Store.
func (s *Store) CreateKey(ctx context.Context, k identity.Key, audit func(identity.Key) identity.AuditRecord) (identity.Key, bool, error) {
	var (
		got     identity.Key
		created bool
	)
	err := pg.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		got, created, err = s.insertKey(ctx, tx, k)
		if err != nil {
			return err
		}
		return s.enqueue(ctx, tx, audit(got))
	})
	if err != nil {
		return identity.Key{}, false, markUnavailable(err)
	}
	return got, created, nil
}

// insertKey inserts k, or returns the key created before under its request
// id.
func (s *Store) insertKey(ctx context.Context, tx pgx.Tx, k identity.Key) (identity.Key, bool, error) {
	if err := lockVersions(ctx, tx); err != nil {
		return identity.Key{}, false, err
	}
	// Under the version lock, which DeleteMember and the deletion of
	// service accounts and agents take too: a key is never created for an
	// owner whose membership is ending or who is being deleted.
	if err := checkOwner(ctx, tx, k); err != nil {
		return identity.Key{}, false, err
	}
	got, err := scanKey(tx.QueryRow(ctx, `
		INSERT INTO api_keys (id, role, organization, project, display_name, prefix, key_hmac,
			request_id, created_at, expire_at, allowed_models, rotated_from, owner, allowed_mcp_tools)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
		ON CONFLICT (request_id) DO NOTHING
		RETURNING `+keyColumns,
		k.ID, k.Role.String(), k.Organization, k.Project, k.DisplayName, k.Prefix, k.HMAC,
		nullString(k.RequestID), k.CreateTime, nullTime(k.ExpireTime),
		append([]string{}, k.AllowedModels...), nullString(k.RotatedFrom), k.Owner, append([]string{}, k.AllowedMCPTools...)))
	switch {
	case err == nil:
		return got, true, notify(ctx, tx)
	case !errors.Is(err, pgx.ErrNoRows):
		return identity.Key{}, false, fmt.Errorf("insert key: %w", err)
	}
	got, err = scanKey(tx.QueryRow(ctx, `SELECT `+keyColumns+` FROM api_keys WHERE request_id = $1`, k.RequestID))
	if err != nil {
		return identity.Key{}, false, fmt.Errorf("read key of request %s: %w", k.RequestID, err)
	}
	if got.Project != k.Project || got.Role != k.Role || got.RotatedFrom != k.RotatedFrom || got.Owner != k.Owner {
		return identity.Key{}, false, identity.ErrRequestIDReused
	}
	return got, false, nil
}

// checkOwner checks that k's owner exists: a user is a member of k's
// organization, a service account or agent one of k's project.
func checkOwner(ctx context.Context, tx pgx.Tx, k identity.Key) error {
	if k.Owner == "" {
		return nil
	}
	kind, project, id, ok := identity.ParsePrincipal(k.Owner)
	switch {
	case !ok:
		return identity.ErrOwnerNotFound
	case kind == identity.PrincipalUser:
		ok, err := isMember(ctx, tx, k.Organization, id)
		if err != nil {
			return err
		}
		if !ok {
			return identity.ErrOwnerNotMember
		}
	default:
		if project != k.Project {
			return identity.ErrOwnerNotFound
		}
		ok, err := ownerExists(ctx, tx, kind, project, id)
		if err != nil {
			return err
		}
		if !ok {
			return identity.ErrOwnerNotFound
		}
	}
	return nil
}

// UpdateKey implements identity.Store.
func (s *Store) UpdateKey(ctx context.Context, id string, fn func(*identity.Key) (bool, error), audit func(identity.Key) identity.AuditRecord) (identity.Key, error) {
	var k identity.Key
	err := pg.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lockVersions(ctx, tx); err != nil {
			return err
		}
		var err error
		k, err = scanKey(tx.QueryRow(ctx, `SELECT `+keyColumns+` FROM api_keys WHERE id = $1 FOR UPDATE`, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return identity.ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("read key %s: %w", id, err)
		}
		changed, err := fn(&k)
		if err != nil {
			return err
		}
		if changed {
			if err := tx.QueryRow(ctx, `
				UPDATE api_keys
				SET display_name = $2, expire_at = $3, revoked_at = $4, version = nextval('api_keys_version_seq')
				WHERE id = $1
				RETURNING version`,
				id, k.DisplayName, nullTime(k.ExpireTime), nullTime(k.RevokeTime)).Scan(&k.Version); err != nil {
				return fmt.Errorf("update key %s: %w", id, err)
			}
			if err := notify(ctx, tx); err != nil {
				return err
			}
		}
		return s.enqueue(ctx, tx, audit(k))
	})
	if err != nil {
		return identity.Key{}, markUnavailable(err)
	}
	return k, nil
}

// RotateKey implements identity.Store.
func (s *Store) RotateKey(ctx context.Context, id, requestID string, check func(identity.Key) error, fn func(*identity.Key) (identity.Key, error), audit func(identity.Key) identity.AuditRecord) (identity.Key, identity.Key, bool, error) {
	var (
		old, successor identity.Key
		created        bool
	)
	err := pg.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		// The version lock also serialises rotations, so that a retry
		// finds the successor its first attempt committed.
		if err := lockVersions(ctx, tx); err != nil {
			return err
		}
		if requestID != "" {
			prev, err := scanKey(tx.QueryRow(ctx, `SELECT `+keyColumns+` FROM api_keys WHERE request_id = $1`, requestID))
			switch {
			case err == nil:
				if prev.RotatedFrom != id {
					return identity.ErrRequestIDReused
				}
				if old, err = scanKey(tx.QueryRow(ctx, `SELECT `+keyColumns+` FROM api_keys WHERE id = $1`, id)); err != nil {
					return fmt.Errorf("read key %s: %w", id, err)
				}
				if err := check(old); err != nil {
					return err
				}
				successor = prev
				return s.enqueue(ctx, tx, audit(old))
			case !errors.Is(err, pgx.ErrNoRows):
				return fmt.Errorf("read key of request %s: %w", requestID, err)
			}
		}
		var err error
		old, err = scanKey(tx.QueryRow(ctx, `SELECT `+keyColumns+` FROM api_keys WHERE id = $1 FOR UPDATE`, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return identity.ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("read key %s: %w", id, err)
		}
		if err := check(old); err != nil {
			return err
		}
		next, err := fn(&old)
		if err != nil {
			return err
		}
		if successor, created, err = s.insertKey(ctx, tx, next); err != nil {
			return err
		}
		if !created {
			return identity.ErrRequestIDReused // unreachable under the version lock
		}
		if err := tx.QueryRow(ctx, `
			UPDATE api_keys SET expire_at = $2, version = nextval('api_keys_version_seq')
			WHERE id = $1
			RETURNING version`, id, nullTime(old.ExpireTime)).Scan(&old.Version); err != nil {
			return fmt.Errorf("update key %s: %w", id, err)
		}
		return s.enqueue(ctx, tx, audit(old))
	})
	if err != nil {
		return identity.Key{}, identity.Key{}, false, markUnavailable(err)
	}
	return old, successor, created, nil
}

// ListKeys implements identity.Store.
func (s *Store) ListKeys(ctx context.Context, project, owner string, after *identity.Cursor, limit int) ([]identity.Key, error) {
	var (
		rows pgx.Rows
		err  error
	)
	if after == nil {
		rows, err = s.pool.Query(ctx, `SELECT `+keyColumns+` FROM api_keys
			WHERE project = $1 AND ($3 = '' OR owner = $3)
			ORDER BY created_at DESC, id DESC
			LIMIT $2`, project, limit, owner)
	} else {
		rows, err = s.pool.Query(ctx, `SELECT `+keyColumns+` FROM api_keys
			WHERE project = $1 AND (created_at, id) < ($2, $3) AND ($5 = '' OR owner = $5)
			ORDER BY created_at DESC, id DESC
			LIMIT $4`, project, after.CreateTime, after.ID, limit, owner)
	}
	if err != nil {
		return nil, storeErr("list keys", err)
	}
	keys, err := collectKeys(rows)
	if err != nil {
		return nil, storeErr("list keys", err)
	}
	return keys, nil
}

// RecordKeyUse moves key id's last use forward to at, unless the stored
// last use is already at or less than minInterval before at: a busy key
// then costs one write per minInterval, and an older event never moves it
// back. It reports whether the row was written; an unknown key is not an
// error (written == false).
//
// The write leaves the key's version alone and notifies no watcher: last
// use is not part of the key index, and bumping the version would resend
// every busy key to every gateway once a minute. Nor does it take the
// version lock, so it never waits behind key changes for longer than
// their row lock.
func (s *Store) RecordKeyUse(ctx context.Context, id uuid.UUID, at time.Time, minInterval time.Duration) (written bool, err error) {
	tag, err := s.pool.Exec(ctx, `
		UPDATE api_keys SET last_used_at = greatest(last_used_at, $2::timestamptz)
		WHERE id = $1 AND (last_used_at IS NULL OR last_used_at <= $2::timestamptz - $3::interval)`,
		id, at, minInterval)
	if err != nil {
		return false, storeErr("record use of key "+id.String(), err)
	}
	return tag.RowsAffected() == 1, nil
}

// RecordAudit implements identity.Store.
func (s *Store) RecordAudit(ctx context.Context, a identity.AuditRecord) error {
	return markUnavailable(pg.InTx(ctx, s.pool, func(tx pgx.Tx) error { return s.enqueue(ctx, tx, a) }))
}

// IndexSnapshot implements identity.Store.
func (s *Store) IndexSnapshot(ctx context.Context, now time.Time) (int64, []identity.Key, []identity.Member, error) {
	var (
		version int64
		keys    []identity.Key
	)
	// One snapshot of the database for both reads: the version matches
	// the keys exactly.
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return 0, nil, nil, storeErr("begin snapshot", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // read-only; nothing to undo
	if err := tx.QueryRow(ctx, `SELECT greatest((SELECT coalesce(max(version), 0) FROM api_keys),
		(SELECT coalesce(max(version), 0) FROM memberships))`).Scan(&version); err != nil {
		return 0, nil, nil, storeErr("read index version", err)
	}
	rows, err := tx.Query(ctx, `SELECT `+keyColumns+` FROM api_keys
		WHERE revoked_at IS NULL AND (expire_at IS NULL OR expire_at > $1)`, now)
	if err != nil {
		return 0, nil, nil, storeErr("read active keys", err)
	}
	if keys, err = collectKeys(rows); err != nil {
		return 0, nil, nil, storeErr("read active keys", err)
	}
	members, err := queryMembers(ctx, tx, `SELECT `+memberColumns+` FROM memberships WHERE deleted_at IS NULL`)
	if err != nil {
		return 0, nil, nil, storeErr("read memberships", err)
	}
	return version, keys, members, nil
}

// ChangesSince implements identity.Store: both reads see one snapshot of
// the database. Read apart, a key change committed between them could be
// skipped for good by a watcher that moved past it on a later membership
// change.
func (s *Store) ChangesSince(ctx context.Context, version int64, limit int) ([]identity.Key, []identity.Member, error) {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, nil, storeErr("begin change read", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // read-only; nothing to undo
	rows, err := tx.Query(ctx, `SELECT `+keyColumns+` FROM api_keys
		WHERE version > $1 ORDER BY version LIMIT $2`, version, limit)
	if err != nil {
		return nil, nil, storeErr("read key changes", err)
	}
	keys, err := collectKeys(rows)
	if err != nil {
		return nil, nil, storeErr("read key changes", err)
	}
	members, err := queryMembers(ctx, tx, `SELECT `+memberColumns+` FROM memberships
		WHERE version > $1 ORDER BY version LIMIT $2`, version, limit)
	if err != nil {
		return nil, nil, storeErr("read membership changes", err)
	}
	return keys, members, nil
}

// Bootstrap implements identity.Store: fn runs under a transaction-level
// advisory lock, so replicas starting together take turns, and the second
// sees the key the first committed.
func (s *Store) Bootstrap(ctx context.Context, fn func(context.Context, identity.BootstrapTx) error) error {
	err := pg.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, bootstrapLock); err != nil {
			return fmt.Errorf("take bootstrap lock: %w", err)
		}
		return fn(ctx, bootstrapTx{s: s, tx: tx})
	})
	return markUnavailable(err)
}

type bootstrapTx struct {
	s  *Store
	tx pgx.Tx
}

func (b bootstrapTx) ActiveAdminExists(ctx context.Context, now time.Time) (bool, error) {
	var ok bool
	err := b.tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM api_keys
		WHERE role = 'platform_admin' AND revoked_at IS NULL AND (expire_at IS NULL OR expire_at > $1))`, now).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("look for a platform admin key: %w", err)
	}
	return ok, nil
}

func (b bootstrapTx) HMACKnown(ctx context.Context, hmac []byte) (bool, error) {
	var ok bool
	if err := b.tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM api_keys WHERE key_hmac = $1)`, hmac).Scan(&ok); err != nil {
		return false, fmt.Errorf("look up key: %w", err)
	}
	return ok, nil
}

func (b bootstrapTx) CreateKey(ctx context.Context, k identity.Key, a identity.AuditRecord) error {
	if _, _, err := b.s.insertKey(ctx, b.tx, k); err != nil {
		return err
	}
	return b.s.enqueue(ctx, b.tx, a)
}

// lockVersions takes the lock that orders version draws; it is held until
// the transaction ends.
func lockVersions(ctx context.Context, tx pgx.Tx) error {
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, versionLock); err != nil {
		return fmt.Errorf("take version lock: %w", err)
	}
	return nil
}

// notify wakes the key index watchers when the transaction commits.
func notify(ctx context.Context, tx pgx.Tx) error {
	if _, err := tx.Exec(ctx, `SELECT pg_notify($1, '')`, KeysChannel); err != nil {
		return fmt.Errorf("notify %s: %w", KeysChannel, err)
	}
	return nil
}

// enqueue writes a as a moat.audit.v1.AuditEvent to the outbox in tx.
func (s *Store) enqueue(ctx context.Context, tx pgx.Tx, a identity.AuditRecord) error {
	msg := &auditv1.AuditEvent{
		Organization:  a.Organization,
		Actor:         a.Actor,
		Action:        a.Action,
		Target:        a.Target,
		Outcome:       outcome(a.Outcome),
		Status:        a.Status,
		SourceAddress: a.SourceAddress,
		RequestId:     a.RequestID,
		EventTime:     events.Timestamp(a.Time),
	}
	ev, err := events.New(AuditSource, AuditSubject, a.Target, msg)
	if err != nil {
		return err
	}
	ev.Time = a.Time
	return events.Enqueue(ctx, tx, s.prop, ev)
}

func outcome(o identity.Outcome) auditv1.AuditEvent_Outcome {
	switch o {
	case identity.OutcomeAllowed:
		return auditv1.AuditEvent_OUTCOME_ALLOWED
	case identity.OutcomeDenied:
		return auditv1.AuditEvent_OUTCOME_DENIED
	case identity.OutcomeFailed:
		return auditv1.AuditEvent_OUTCOME_FAILED
	default:
		return auditv1.AuditEvent_OUTCOME_UNSPECIFIED
	}
}

// storeErr wraps err with what was being done and marks it as
// markUnavailable does.
func storeErr(op string, err error) error {
	if err == nil {
		return nil
	}
	return markUnavailable(fmt.Errorf("%s: %w", op, err))
}

// markUnavailable marks errors that mean the database cannot be reached
// with identity.ErrUnavailable, so that callers can tell "try again later"
// from a failed query. Transactions' errors already say what failed, and
// domain errors from inside them pass through unchanged.
func markUnavailable(err error) error {
	if err == nil || !unreachable(err) {
		return err
	}
	return fmt.Errorf("%w: %w", identity.ErrUnavailable, err)
}

// unreachable reports errors of a database that is down or going away, as
// opposed to errors of a query.
func unreachable(err error) bool {
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		// Class 08 is connection exceptions; 57P01-03 are shutdowns and a
		// server not yet accepting connections.
		return strings.HasPrefix(pe.Code, "08") || pe.Code == "57P01" || pe.Code == "57P02" || pe.Code == "57P03"
	}
	var ne net.Error
	return errors.As(err, &ne)
}
