package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/moat-ai/moat/libs/pg"
	"github.com/moat-ai/moat/services/identity/internal/identity"
)

const memberColumns = `organization, user_id, role, source, identity_provider, email,
	created_at, updated_at, deleted_at, version`

// querier is what reads need: a pool or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func scanMember(row pgx.Row) (identity.Member, error) {
	var (
		m         identity.Member
		role, src string
		deletedAt *time.Time
	)
	if err := row.Scan(&m.Organization, &m.UserID, &role, &src, &m.IdentityProvider, &m.Email,
		&m.CreateTime, &m.UpdateTime, &deletedAt, &m.Version); err != nil {
		return identity.Member{}, err
	}
	m.Role, m.Source = identity.ParseOrgRole(role), identity.Source(src)
	m.CreateTime, m.UpdateTime = m.CreateTime.UTC(), m.UpdateTime.UTC()
	if deletedAt != nil {
		m.DeleteTime = deletedAt.UTC()
	}
	return m, nil
}

func queryMembers(ctx context.Context, q querier, sql string, args ...any) ([]identity.Member, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (identity.Member, error) { return scanMember(r) })
}

func isMember(ctx context.Context, q querier, org, userID string) (bool, error) {
	var ok bool
	err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM memberships
		WHERE organization = $1 AND user_id = $2 AND deleted_at IS NULL)`, org, userID).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("look up membership: %w", err)
	}
	return ok, nil
}

// IsMember implements identity.Store.
func (s *Store) IsMember(ctx context.Context, org, userID string) (bool, error) {
	ok, err := isMember(ctx, s.pool, org, userID)
	return ok, markUnavailable(err)
}

// CreateMember implements identity.Store.
func (s *Store) CreateMember(ctx context.Context, m identity.Member, revive bool, audit func(identity.Member) identity.AuditRecord) (identity.Member, error) {
	var got identity.Member
	err := pg.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lockVersions(ctx, tx); err != nil {
			return err
		}
		// An ended membership is revived in place (when asked: an admin's
		// add, never a just-in-time join, which must not undo a removal),
		// with a new version, so that watchers see it start again.
		var err error
		got, err = scanMember(tx.QueryRow(ctx, `
			INSERT INTO memberships (organization, user_id, role, source, identity_provider, email, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
			ON CONFLICT (organization, user_id) DO UPDATE
			SET role = excluded.role, source = excluded.source, identity_provider = excluded.identity_provider,
				email = excluded.email, created_at = excluded.created_at, updated_at = excluded.updated_at,
				deleted_at = NULL, version = nextval('api_keys_version_seq')
			WHERE memberships.deleted_at IS NOT NULL AND $8
			RETURNING `+memberColumns,
			m.Organization, m.UserID, m.Role.String(), string(m.Source), m.IdentityProvider, m.Email, m.CreateTime, revive))
		if errors.Is(err, pgx.ErrNoRows) {
			return identity.ErrMemberExists
		}
		if err != nil {
			return fmt.Errorf("insert membership: %w", err)
		}
		if err := notify(ctx, tx); err != nil {
			return err
		}
		return s.enqueue(ctx, tx, audit(got))
	})
	if err != nil {
		return identity.Member{}, markUnavailable(err)
	}
	return got, nil
}

// GetMember implements identity.Store.
func (s *Store) GetMember(ctx context.Context, org, userID string) (identity.Member, error) {
	m, err := scanMember(s.pool.QueryRow(ctx, `SELECT `+memberColumns+` FROM memberships
		WHERE organization = $1 AND user_id = $2 AND deleted_at IS NULL`, org, userID))
	if errors.Is(err, pgx.ErrNoRows) {
		return identity.Member{}, identity.ErrMemberNotFound
	}
	return m, storeErr("read membership", err)
}

// ListMembers implements identity.Store.
func (s *Store) ListMembers(ctx context.Context, org string, after *identity.MemberCursor, limit int) ([]identity.Member, error) {
	var (
		ms  []identity.Member
		err error
	)
	if after == nil {
		ms, err = queryMembers(ctx, s.pool, `SELECT `+memberColumns+` FROM memberships
			WHERE organization = $1 AND deleted_at IS NULL
			ORDER BY created_at, user_id LIMIT $2`, org, limit)
	} else {
		ms, err = queryMembers(ctx, s.pool, `SELECT `+memberColumns+` FROM memberships
			WHERE organization = $1 AND deleted_at IS NULL AND (created_at, user_id) > ($2, $3)
			ORDER BY created_at, user_id LIMIT $4`, org, after.CreateTime, after.UserID, limit)
	}
	return ms, storeErr("list memberships", err)
}

// UpdateMember implements identity.Store.
func (s *Store) UpdateMember(ctx context.Context, org, userID string, fn func(*identity.Member) bool, audit func(identity.Member) identity.AuditRecord) (identity.Member, error) {
	var m identity.Member
	err := pg.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lockVersions(ctx, tx); err != nil {
			return err
		}
		var err error
		m, err = scanMember(tx.QueryRow(ctx, `SELECT `+memberColumns+` FROM memberships
			WHERE organization = $1 AND user_id = $2 AND deleted_at IS NULL FOR UPDATE`, org, userID))
		if errors.Is(err, pgx.ErrNoRows) {
			return identity.ErrMemberNotFound
		}
		if err != nil {
			return fmt.Errorf("read membership: %w", err)
		}
		if fn(&m) {
			if err := tx.QueryRow(ctx, `UPDATE memberships
				SET role = $3, updated_at = $4, version = nextval('api_keys_version_seq')
				WHERE organization = $1 AND user_id = $2
				RETURNING version`, org, userID, m.Role.String(), m.UpdateTime).Scan(&m.Version); err != nil {
				return fmt.Errorf("update membership: %w", err)
			}
			if err := notify(ctx, tx); err != nil {
				return err
			}
		}
		return s.enqueue(ctx, tx, audit(m))
	})
	if err != nil {
		return identity.Member{}, markUnavailable(err)
	}
	return m, nil
}

// DeleteMember implements identity.Store.
func (s *Store) DeleteMember(ctx context.Context, org, userID string, now time.Time, audit func(identity.Member) identity.AuditRecord) (int, error) {
	var revoked int
	err := pg.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lockVersions(ctx, tx); err != nil {
			return err
		}
		m, err := scanMember(tx.QueryRow(ctx, `UPDATE memberships
			SET deleted_at = $3, updated_at = $3, version = nextval('api_keys_version_seq')
			WHERE organization = $1 AND user_id = $2 AND deleted_at IS NULL
			RETURNING `+memberColumns, org, userID, now))
		if errors.Is(err, pgx.ErrNoRows) {
			return identity.ErrMemberNotFound
		}
		if err != nil {
			return fmt.Errorf("end membership: %w", err)
		}
		// Looked for after the membership row is locked by the update:
		// agents take a share lock on it (holdMemberships), so one naming
		// the user either committed before and is seen here, or waits and
		// then finds the membership ended.
		named, err := agentsNameUser(ctx, tx, org, m.User())
		if err != nil {
			return err
		}
		if named {
			return identity.ErrMemberHasAgents
		}
		// Each revoked key draws its own version, as the index needs.
		tag, err := tx.Exec(ctx, `UPDATE api_keys
			SET revoked_at = $3, version = nextval('api_keys_version_seq')
			WHERE organization = $1 AND owner = $2 AND revoked_at IS NULL`, org, m.User(), now)
		if err != nil {
			return fmt.Errorf("revoke the member's keys: %w", err)
		}
		revoked = int(tag.RowsAffected())
		if err := notify(ctx, tx); err != nil {
			return err
		}
		return s.enqueue(ctx, tx, audit(m))
	})
	if err != nil {
		return 0, markUnavailable(err)
	}
	return revoked, nil
}

// MembershipsOf implements identity.Store.
func (s *Store) MembershipsOf(ctx context.Context, userID string) ([]identity.Member, error) {
	ms, err := queryMembers(ctx, s.pool, `SELECT `+memberColumns+` FROM memberships
		WHERE user_id = $1 AND deleted_at IS NULL ORDER BY created_at, organization`, userID)
	return ms, storeErr("read memberships", err)
}
