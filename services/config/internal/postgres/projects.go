package postgres

import (
	"context"
	"fmt"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/moat-ai/moat/services/config/internal/config"
)

const selectProjects = `
	SELECT p.id, p.organization_id, o.name, p.name, p.display_name, p.version,
	       p.created_at, p.updated_at, p.deleted_at IS NOT NULL
	FROM projects p
	JOIN organizations o ON o.id = p.organization_id`

type projectRow struct {
	id, orgID uuid.UUID
	deleted   bool
	config.Project
}

func scanProject(row pgx.CollectableRow) (projectRow, error) {
	var r projectRow
	var org, project string
	err := row.Scan(&r.id, &r.orgID, &org, &project, &r.DisplayName, &r.Version, &r.CreateTime, &r.UpdateTime, &r.deleted)
	r.Name = config.ProjectName(org, project)
	return r, err
}

func (r projectRow) rowID() uuid.UUID { return r.id }

// CreateProject inserts p into its live organization, or returns what
// requestID created before. The name of a deleted project of that
// organization is refused (config.Retired).
func (s *Store) CreateProject(ctx context.Context, p config.Project, requestID string, a config.AuditRecord) (config.Project, error) {
	org, project, _ := config.ParseProjectName(p.Name)
	var out projectRow
	err := s.write(ctx, &a, func(tx pgx.Tx) error {
		if requestID != "" {
			r, found, err := queryRow(ctx, tx, scanProject, selectProjects+` WHERE p.request_id = $1`, requestID)
			if err != nil {
				return fmt.Errorf("look up request %s: %w", requestID, err)
			}
			if found {
				if !strings.HasPrefix(r.Name, config.OrganizationName(org)+"/") {
					return errRequestIDReused
				}
				out, a = r, a.WithTarget(r.Name)
				return replayed(r.deleted, "project", r.Name)
			}
		}
		parent, err := liveOrg(ctx, tx, config.OrganizationName(org))
		if err != nil {
			return err
		}
		// As for organizations: the unique index covers tombstones, and
		// this check, under the write lock, only tells the caller why.
		var retired bool
		if err := tx.QueryRow(ctx,
			`SELECT EXISTS (SELECT 1 FROM projects WHERE organization_id = $1 AND name = $2 AND deleted_at IS NOT NULL)`,
			parent.id, project).Scan(&retired); err != nil {
			return fmt.Errorf("look up deleted project %s: %w", p.Name, err)
		}
		if retired {
			return config.Retired("project", p.Name)
		}
		id, err := newID()
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `
			INSERT INTO projects (id, organization_id, name, display_name, request_id)
			VALUES ($1, $2, $3, $4, $5)`,
			id, parent.id, project, p.DisplayName, nullable(requestID))
		if uniqueViolation(err, "projects_name_idx") {
			return fmt.Errorf("project %s: %w", p.Name, config.ErrAlreadyExists)
		}
		if err != nil {
			return fmt.Errorf("insert project %s: %w", p.Name, err)
		}
		out, err = projectByID(ctx, tx, id)
		return err
	})
	return out.Project, err
}

// Project returns the live project called name.
func (s *Store) Project(ctx context.Context, name string) (config.Project, error) {
	r, err := liveProject(ctx, s.pool, name)
	return r.Project, dbError(err)
}

// Projects returns a page of the live projects of org in creation order.
func (s *Store) Projects(ctx context.Context, org string, p config.Page) ([]config.Project, string, error) {
	parent, err := liveOrg(ctx, s.pool, org)
	if err != nil {
		return nil, "", dbError(err)
	}
	rows, err := queryRows(ctx, s.pool, scanProject, selectProjects+`
		WHERE p.organization_id = $1 AND p.deleted_at IS NULL AND ($2::uuid IS NULL OR p.id > $2::uuid)
		ORDER BY p.id
		LIMIT $3`,
		parent.id, cursor(p), p.Size+1)
	if err != nil {
		return nil, "", dbError(fmt.Errorf("list projects of %s: %w", org, err))
	}
	rows, next := page(rows, p, projectRow.rowID)
	out := make([]config.Project, len(rows))
	for i, r := range rows {
		out[i] = r.Project
	}
	return out, next, nil
}

// UpdateProject applies update to the live project called name.
func (s *Store) UpdateProject(ctx context.Context, name string, update func(*config.Project) error, a config.AuditRecord) (config.Project, error) {
	var out projectRow
	err := s.write(ctx, &a, func(tx pgx.Tx) error {
		r, err := liveProject(ctx, tx, name)
		if err != nil {
			return err
		}
		p := r.Project
		if err := update(&p); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `
			UPDATE projects
			SET display_name = $2, version = nextval('config_version'), updated_at = now()
			WHERE id = $1`,
			r.id, p.DisplayName); err != nil {
			return fmt.Errorf("update project %s: %w", name, err)
		}
		out, err = projectByID(ctx, tx, r.id)
		return err
	})
	return out.Project, err
}

// DeleteProject leaves a tombstone of a project without live routes.
func (s *Store) DeleteProject(ctx context.Context, name string, a config.AuditRecord) error {
	return s.write(ctx, &a, func(tx pgx.Tx) error {
		r, err := liveProject(ctx, tx, name)
		if err != nil {
			return err
		}
		var routes bool
		if err := tx.QueryRow(ctx,
			`SELECT EXISTS (SELECT 1 FROM routes WHERE project_id = $1 AND deleted_at IS NULL)`,
			r.id).Scan(&routes); err != nil {
			return fmt.Errorf("look up routes of %s: %w", name, err)
		}
		if routes {
			return fmt.Errorf("%w: project %s still has routes; delete them first", config.ErrInUse, name)
		}
		if _, err := tx.Exec(ctx, `
			UPDATE projects
			SET deleted_at = now(), updated_at = now(), version = nextval('config_version')
			WHERE id = $1`, r.id); err != nil {
			return fmt.Errorf("delete project %s: %w", name, err)
		}
		return nil
	})
}

func liveProject(ctx context.Context, q querier, name string) (projectRow, error) {
	org, project, _ := config.ParseProjectName(name)
	r, found, err := queryRow(ctx, q, scanProject, selectProjects+`
		WHERE o.name = $1 AND o.deleted_at IS NULL AND p.name = $2 AND p.deleted_at IS NULL`,
		org, project)
	if err != nil {
		return r, fmt.Errorf("get project %s: %w", name, err)
	}
	if !found {
		return r, config.NotFound("project", name)
	}
	return r, nil
}

func projectByID(ctx context.Context, q querier, id uuid.UUID) (projectRow, error) {
	r, found, err := queryRow(ctx, q, scanProject, selectProjects+` WHERE p.id = $1`, id)
	if err == nil && !found {
		err = pgx.ErrNoRows
	}
	if err != nil {
		return r, fmt.Errorf("read project %s back: %w", id, err)
	}
	return r, nil
}
