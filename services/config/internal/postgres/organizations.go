package postgres

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/moat-ai/moat/services/config/internal/config"
)

const selectOrganizations = `
	SELECT o.id, o.name, o.display_name, o.version, o.created_at, o.updated_at, o.deleted_at IS NOT NULL
	FROM organizations o`

type orgRow struct {
	id      uuid.UUID
	deleted bool
	config.Organization
}

func scanOrg(row pgx.CollectableRow) (orgRow, error) {
	var r orgRow
	var org string
	err := row.Scan(&r.id, &org, &r.DisplayName, &r.Version, &r.CreateTime, &r.UpdateTime, &r.deleted)
	r.Name = config.OrganizationName(org)
	return r, err
}

func (r orgRow) rowID() uuid.UUID { return r.id }

// CreateOrganization inserts o, or returns what requestID created before.
// The name of a deleted organization is refused (config.Retired).
func (s *Store) CreateOrganization(ctx context.Context, o config.Organization, requestID string, a config.AuditRecord) (config.Organization, error) {
	org, _ := config.ParseOrganizationName(o.Name)
	var out orgRow
	err := s.write(ctx, &a, func(tx pgx.Tx) error {
		if requestID != "" {
			r, found, err := queryRow(ctx, tx, scanOrg, selectOrganizations+` WHERE o.request_id = $1`, requestID)
			if err != nil {
				return fmt.Errorf("look up request %s: %w", requestID, err)
			}
			if found {
				out, a = r, a.WithTarget(r.Name)
				return replayed(r.deleted, "organization", r.Name)
			}
		}
		// The write lock makes this check and the insert one step. The
		// unique index covers tombstones too; checking first only lets the
		// caller learn why the id is taken.
		var retired bool
		if err := tx.QueryRow(ctx,
			`SELECT EXISTS (SELECT 1 FROM organizations WHERE name = $1 AND deleted_at IS NOT NULL)`,
			org).Scan(&retired); err != nil {
			return fmt.Errorf("look up deleted organization %s: %w", o.Name, err)
		}
		if retired {
			return config.Retired("organization", o.Name)
		}
		id, err := newID()
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `
			INSERT INTO organizations (id, name, display_name, request_id)
			VALUES ($1, $2, $3, $4)`,
			id, org, o.DisplayName, nullable(requestID))
		if uniqueViolation(err, "organizations_name_idx") {
			return fmt.Errorf("organization %s: %w", o.Name, config.ErrAlreadyExists)
		}
		if err != nil {
			return fmt.Errorf("insert organization %s: %w", o.Name, err)
		}
		out, err = orgByID(ctx, tx, id)
		return err
	})
	return out.Organization, err
}

// Organization returns the live organization called name.
func (s *Store) Organization(ctx context.Context, name string) (config.Organization, error) {
	r, err := liveOrg(ctx, s.pool, name)
	return r.Organization, dbError(err)
}

// Organizations returns a page of live organizations in creation order.
func (s *Store) Organizations(ctx context.Context, p config.Page) ([]config.Organization, string, error) {
	rows, err := queryRows(ctx, s.pool, scanOrg, selectOrganizations+`
		WHERE o.deleted_at IS NULL AND ($1::uuid IS NULL OR o.id > $1::uuid)
		ORDER BY o.id
		LIMIT $2`,
		cursor(p), p.Size+1)
	if err != nil {
		return nil, "", dbError(fmt.Errorf("list organizations: %w", err))
	}
	rows, next := page(rows, p, orgRow.rowID)
	out := make([]config.Organization, len(rows))
	for i, r := range rows {
		out[i] = r.Organization
	}
	return out, next, nil
}

// UpdateOrganization applies update to the live organization called name.
func (s *Store) UpdateOrganization(ctx context.Context, name string, update func(*config.Organization) error, a config.AuditRecord) (config.Organization, error) {
	var out orgRow
	err := s.write(ctx, &a, func(tx pgx.Tx) error {
		r, err := liveOrg(ctx, tx, name)
		if err != nil {
			return err
		}
		o := r.Organization
		if err := update(&o); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `
			UPDATE organizations
			SET display_name = $2, version = nextval('config_version'), updated_at = now()
			WHERE id = $1`,
			r.id, o.DisplayName); err != nil {
			return fmt.Errorf("update organization %s: %w", name, err)
		}
		out, err = orgByID(ctx, tx, r.id)
		return err
	})
	return out.Organization, err
}

// DeleteOrganization leaves a tombstone of an organization without live
// projects or providers.
func (s *Store) DeleteOrganization(ctx context.Context, name string, a config.AuditRecord) error {
	return s.write(ctx, &a, func(tx pgx.Tx) error {
		r, err := liveOrg(ctx, tx, name)
		if err != nil {
			return err
		}
		var projects, providers bool
		if err := tx.QueryRow(ctx, `
			SELECT EXISTS (SELECT 1 FROM projects WHERE organization_id = $1 AND deleted_at IS NULL),
			       EXISTS (SELECT 1 FROM providers WHERE organization_id = $1 AND deleted_at IS NULL)`,
			r.id).Scan(&projects, &providers); err != nil {
			return fmt.Errorf("look up children of %s: %w", name, err)
		}
		switch {
		case projects && providers:
			return fmt.Errorf("%w: organization %s still has projects and providers; delete them first", config.ErrInUse, name)
		case projects:
			return fmt.Errorf("%w: organization %s still has projects; delete them first", config.ErrInUse, name)
		case providers:
			return fmt.Errorf("%w: organization %s still has providers; delete them first", config.ErrInUse, name)
		}
		if _, err := tx.Exec(ctx, `
			UPDATE organizations
			SET deleted_at = now(), updated_at = now(), version = nextval('config_version')
			WHERE id = $1`, r.id); err != nil {
			return fmt.Errorf("delete organization %s: %w", name, err)
		}
		return nil
	})
}

func liveOrg(ctx context.Context, q querier, name string) (orgRow, error) {
	org, _ := config.ParseOrganizationName(name)
	r, found, err := queryRow(ctx, q, scanOrg, selectOrganizations+` WHERE o.name = $1 AND o.deleted_at IS NULL`, org)
	if err != nil {
		return r, fmt.Errorf("get organization %s: %w", name, err)
	}
	if !found {
		return r, config.NotFound("organization", name)
	}
	return r, nil
}

func orgByID(ctx context.Context, q querier, id uuid.UUID) (orgRow, error) {
	r, found, err := queryRow(ctx, q, scanOrg, selectOrganizations+` WHERE o.id = $1`, id)
	if err == nil && !found {
		err = pgx.ErrNoRows
	}
	if err != nil {
		return r, fmt.Errorf("read organization %s back: %w", id, err)
	}
	return r, nil
}

// errRequestIDReused refuses a create whose request id created something
// under another parent: a request id is the idempotency key of one
// request, and replaying it must not hand out, or name, what another
// tenant created.
var errRequestIDReused = &config.ValidationError{Field: "request_id", Reason: "was used by a different request; send a new one"}

// replayed is the result of a create whose request id was used before: the
// first result, unless that resource has been deleted since.
func replayed(deleted bool, kind, name string) error {
	if deleted {
		return config.NotFound(kind, name)
	}
	return nil
}
