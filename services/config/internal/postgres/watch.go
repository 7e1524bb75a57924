package postgres

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/moat-ai/moat/services/config/internal/config"
)

// Snapshot returns every live resource and the version they are at, read
// in one REPEATABLE READ transaction. Because writers draw versions under
// the write lock, every change up to that version is in the snapshot and
// none after it.
func (s *Store) Snapshot(ctx context.Context) (config.Snapshot, error) {
	var snap config.Snapshot
	err := s.read(ctx, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `
			SELECT coalesce(greatest(
				(SELECT max(version) FROM organizations),
				(SELECT max(version) FROM projects),
				(SELECT max(version) FROM providers),
				(SELECT max(version) FROM routes)), 0)`).Scan(&snap.Version); err != nil {
			return fmt.Errorf("read configuration version: %w", err)
		}
		orgs, err := queryRows(ctx, tx, scanOrg, selectOrganizations+` WHERE o.deleted_at IS NULL ORDER BY o.id`)
		if err != nil {
			return fmt.Errorf("read organizations: %w", err)
		}
		projects, err := queryRows(ctx, tx, scanProject, selectProjects+` WHERE p.deleted_at IS NULL ORDER BY p.id`)
		if err != nil {
			return fmt.Errorf("read projects: %w", err)
		}
		providers, err := queryRows(ctx, tx, scanProvider, selectProviders+` WHERE v.deleted_at IS NULL ORDER BY v.id`)
		if err != nil {
			return fmt.Errorf("read providers: %w", err)
		}
		routes, err := queryRows(ctx, tx, scanRoute, selectRoutes+` WHERE r.deleted_at IS NULL ORDER BY r.id`)
		if err != nil {
			return fmt.Errorf("read routes: %w", err)
		}
		for _, r := range orgs {
			snap.Organizations = append(snap.Organizations, r.Organization)
		}
		for _, r := range projects {
			snap.Projects = append(snap.Projects, r.Project)
		}
		for _, r := range providers {
			snap.Providers = append(snap.Providers, r.Provider)
		}
		for _, r := range routes {
			snap.Routes = append(snap.Routes, r.Route)
		}
		return nil
	})
	return snap, err
}

// Changes returns up to limit changes after version after, in version
// order. Each table is read in version order with the same limit, in one
// REPEATABLE READ transaction; the merged list is cut at limit. That cut is
// complete: a table whose read stopped at its limit-th row has that row at
// a version no lower than the merged list's limit-th, so no row below the
// cut is missing.
func (s *Store) Changes(ctx context.Context, after int64, limit int) ([]config.Change, error) {
	var changes []config.Change
	err := s.read(ctx, func(tx pgx.Tx) error {
		const tail = ` > $1 ORDER BY version LIMIT $2`
		orgs, err := queryRows(ctx, tx, scanOrg, selectOrganizations+` WHERE o.version`+tail, after, limit)
		if err != nil {
			return fmt.Errorf("read changed organizations: %w", err)
		}
		projects, err := queryRows(ctx, tx, scanProject, selectProjects+` WHERE p.version`+tail, after, limit)
		if err != nil {
			return fmt.Errorf("read changed projects: %w", err)
		}
		providers, err := queryRows(ctx, tx, scanProvider, selectProviders+` WHERE v.version`+tail, after, limit)
		if err != nil {
			return fmt.Errorf("read changed providers: %w", err)
		}
		routes, err := queryRows(ctx, tx, scanRoute, selectRoutes+` WHERE r.version`+tail, after, limit)
		if err != nil {
			return fmt.Errorf("read changed routes: %w", err)
		}
		for _, r := range orgs {
			c := config.Change{Version: r.Version, Name: r.Name, Deleted: r.deleted}
			if !r.deleted {
				c.Organization = &r.Organization
			}
			changes = append(changes, c)
		}
		for _, r := range projects {
			c := config.Change{Version: r.Version, Name: r.Name, Deleted: r.deleted}
			if !r.deleted {
				c.Project = &r.Project
			}
			changes = append(changes, c)
		}
		for _, r := range providers {
			c := config.Change{Version: r.Version, Name: r.Name, Deleted: r.deleted}
			if !r.deleted {
				c.Provider = &r.Provider
			}
			changes = append(changes, c)
		}
		for _, r := range routes {
			c := config.Change{Version: r.Version, Name: r.Name, Deleted: r.deleted}
			if !r.deleted {
				c.Route = &r.Route
			}
			changes = append(changes, c)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(changes, func(a, b config.Change) int { return cmp.Compare(a.Version, b.Version) })
	if len(changes) > limit {
		changes = changes[:limit]
	}
	return changes, nil
}
