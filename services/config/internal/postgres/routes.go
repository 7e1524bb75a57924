package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/moat-ai/moat/services/config/internal/config"
)

const selectRoutes = `
	SELECT r.id, r.organization_id, o.name, p.name, r.name, r.model, v.name, r.upstream_model,
	       r.version, r.created_at, r.updated_at, r.deleted_at IS NOT NULL
	FROM routes r
	JOIN organizations o ON o.id = r.organization_id
	JOIN projects p ON p.id = r.project_id
	JOIN providers v ON v.id = r.provider_id`

type routeRow struct {
	id, orgID uuid.UUID
	deleted   bool
	config.Route
}

func scanRoute(row pgx.CollectableRow) (routeRow, error) {
	var r routeRow
	var org, project, route, provider string
	err := row.Scan(&r.id, &r.orgID, &org, &project, &route, &r.Model, &provider, &r.UpstreamModel,
		&r.Version, &r.CreateTime, &r.UpdateTime, &r.deleted)
	r.Name = config.RouteName(org, project, route)
	r.Provider = config.ProviderName(org, provider)
	return r, err
}

func (r routeRow) rowID() uuid.UUID { return r.id }

// CreateRoute inserts r into its live project, or returns what requestID
// created before.
func (s *Store) CreateRoute(ctx context.Context, r config.Route, requestID string, a config.AuditRecord) (config.Route, error) {
	org, project, route, _ := config.ParseRouteName(r.Name)
	var out routeRow
	err := s.write(ctx, &a, func(tx pgx.Tx) error {
		if requestID != "" {
			row, found, err := queryRow(ctx, tx, scanRoute, selectRoutes+` WHERE r.request_id = $1`, requestID)
			if err != nil {
				return fmt.Errorf("look up request %s: %w", requestID, err)
			}
			if found {
				if !strings.HasPrefix(row.Name, config.ProjectName(org, project)+"/") {
					return errRequestIDReused
				}
				out, a = row, a.WithTarget(row.Name)
				return replayed(row.deleted, "route", row.Name)
			}
		}
		parent, err := liveProject(ctx, tx, config.ProjectName(org, project))
		if err != nil {
			return err
		}
		providerID, err := routeProvider(ctx, tx, r.Provider, parent.orgID)
		if err != nil {
			return err
		}
		id, err := newID()
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `
			INSERT INTO routes (id, organization_id, project_id, provider_id, name, model, upstream_model, request_id)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
			id, parent.orgID, parent.id, providerID, route, r.Model, r.UpstreamModel, nullable(requestID))
		if err := routeConflict(err, r); err != nil {
			return err
		}
		out, err = routeByID(ctx, tx, id)
		return err
	})
	return out.Route, err
}

// Route returns the live route called name.
func (s *Store) Route(ctx context.Context, name string) (config.Route, error) {
	r, err := liveRoute(ctx, s.pool, name)
	return r.Route, dbError(err)
}

// Routes returns a page of the live routes of project in creation order.
func (s *Store) Routes(ctx context.Context, project string, p config.Page) ([]config.Route, string, error) {
	parent, err := liveProject(ctx, s.pool, project)
	if err != nil {
		return nil, "", dbError(err)
	}
	rows, err := queryRows(ctx, s.pool, scanRoute, selectRoutes+`
		WHERE r.project_id = $1 AND r.deleted_at IS NULL AND ($2::uuid IS NULL OR r.id > $2::uuid)
		ORDER BY r.id
		LIMIT $3`,
		parent.id, cursor(p), p.Size+1)
	if err != nil {
		return nil, "", dbError(fmt.Errorf("list routes of %s: %w", project, err))
	}
	rows, next := page(rows, p, routeRow.rowID)
	out := make([]config.Route, len(rows))
	for i, r := range rows {
		out[i] = r.Route
	}
	return out, next, nil
}

// UpdateRoute applies update to the live route called name.
func (s *Store) UpdateRoute(ctx context.Context, name string, update func(*config.Route) error, a config.AuditRecord) (config.Route, error) {
	var out routeRow
	err := s.write(ctx, &a, func(tx pgx.Tx) error {
		cur, err := liveRoute(ctx, tx, name)
		if err != nil {
			return err
		}
		r := cur.Route
		if err := update(&r); err != nil {
			return err
		}
		providerID, err := routeProvider(ctx, tx, r.Provider, cur.orgID)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `
			UPDATE routes
			SET model = $2, provider_id = $3, upstream_model = $4,
			    version = nextval('config_version'), updated_at = now()
			WHERE id = $1`,
			cur.id, r.Model, providerID, r.UpstreamModel)
		if err := routeConflict(err, r); err != nil {
			return err
		}
		out, err = routeByID(ctx, tx, cur.id)
		return err
	})
	return out.Route, err
}

// DeleteRoute leaves a tombstone of a route.
func (s *Store) DeleteRoute(ctx context.Context, name string, a config.AuditRecord) error {
	return s.write(ctx, &a, func(tx pgx.Tx) error {
		r, err := liveRoute(ctx, tx, name)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `
			UPDATE routes
			SET deleted_at = now(), updated_at = now(), version = nextval('config_version')
			WHERE id = $1`, r.id); err != nil {
			return fmt.Errorf("delete route %s: %w", name, err)
		}
		return nil
	})
}

// routeProvider returns the row id of the live provider a route names,
// which must belong to orgID; a missing one is the caller's mistake.
func routeProvider(ctx context.Context, tx pgx.Tx, name string, orgID uuid.UUID) (uuid.UUID, error) {
	p, err := liveProvider(ctx, tx, name)
	if errors.Is(err, config.ErrNotFound) || (err == nil && p.orgID != orgID) {
		return uuid.UUID{}, &config.ValidationError{Field: "route.provider", Reason: fmt.Sprintf("provider %s does not exist", name)}
	}
	return p.id, err
}

// routeConflict maps the result of writing r: a taken name or model is
// ErrAlreadyExists.
func routeConflict(err error, r config.Route) error {
	switch {
	case err == nil:
		return nil
	case uniqueViolation(err, "routes_live_name_idx"):
		return fmt.Errorf("route %s: %w", r.Name, config.ErrAlreadyExists)
	case uniqueViolation(err, "routes_live_model_idx"):
		org, project, _, _ := config.ParseRouteName(r.Name)
		return fmt.Errorf("a route for model %q in project %s: %w", r.Model, config.ProjectName(org, project), config.ErrAlreadyExists)
	default:
		return fmt.Errorf("write route %s: %w", r.Name, err)
	}
}

func liveRoute(ctx context.Context, q querier, name string) (routeRow, error) {
	org, project, route, _ := config.ParseRouteName(name)
	r, found, err := queryRow(ctx, q, scanRoute, selectRoutes+`
		WHERE o.name = $1 AND o.deleted_at IS NULL
		  AND p.name = $2 AND p.deleted_at IS NULL
		  AND r.name = $3 AND r.deleted_at IS NULL`,
		org, project, route)
	if err != nil {
		return r, fmt.Errorf("get route %s: %w", name, err)
	}
	if !found {
		return r, config.NotFound("route", name)
	}
	return r, nil
}

func routeByID(ctx context.Context, q querier, id uuid.UUID) (routeRow, error) {
	r, found, err := queryRow(ctx, q, scanRoute, selectRoutes+` WHERE r.id = $1`, id)
	if err == nil && !found {
		err = pgx.ErrNoRows
	}
	if err != nil {
		return r, fmt.Errorf("read route %s back: %w", id, err)
	}
	return r, nil
}
