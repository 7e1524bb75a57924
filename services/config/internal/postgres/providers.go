package postgres

import (
	"context"
	"fmt"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/moat-ai/moat/services/config/internal/config"
)

const selectProviders = `
	SELECT v.id, v.organization_id, o.name, v.name, v.display_name, v.type, v.base_url,
	       v.azure_api_version, v.vertex_project, v.vertex_location, v.bedrock_region,
	       v.kek_id, v.wrapped_key, v.ciphertext, v.version,
	       v.created_at, v.updated_at, v.deleted_at IS NOT NULL
	FROM providers v
	JOIN organizations o ON o.id = v.organization_id`

type providerRow struct {
	id, orgID uuid.UUID
	deleted   bool
	config.Provider
}

func scanProvider(row pgx.CollectableRow) (providerRow, error) {
	var r providerRow
	var org, provider string
	var kekID, azureAPIVersion, vertexProject, vertexLocation, bedrockRegion *string
	var wrapped, ciphertext []byte
	err := row.Scan(&r.id, &r.orgID, &org, &provider, &r.DisplayName, &r.Type, &r.BaseURL,
		&azureAPIVersion, &vertexProject, &vertexLocation, &bedrockRegion,
		&kekID, &wrapped, &ciphertext, &r.Version, &r.CreateTime, &r.UpdateTime, &r.deleted)
	r.Name = config.ProviderName(org, provider)
	if azureAPIVersion != nil {
		r.Azure = &config.AzureSettings{APIVersion: *azureAPIVersion}
	}
	if vertexProject != nil && vertexLocation != nil {
		r.Vertex = &config.VertexSettings{Project: *vertexProject, Location: *vertexLocation}
	}
	if bedrockRegion != nil {
		r.Bedrock = &config.BedrockSettings{Region: *bedrockRegion}
	}
	if kekID != nil {
		r.Credential = &config.Sealed{KEKID: *kekID, WrappedKey: wrapped, Ciphertext: ciphertext}
	}
	return r, err
}

func (r providerRow) rowID() uuid.UUID { return r.id }

// settingsColumns returns the azure_api_version, vertex_project,
// vertex_location and bedrock_region values of p: NULL for the settings p
// has none of.
func settingsColumns(p config.Provider) (azureAPIVersion, vertexProject, vertexLocation, bedrockRegion any) {
	if p.Azure != nil {
		azureAPIVersion = p.Azure.APIVersion
	}
	if p.Vertex != nil {
		vertexProject, vertexLocation = p.Vertex.Project, p.Vertex.Location
	}
	if p.Bedrock != nil {
		bedrockRegion = p.Bedrock.Region
	}
	return azureAPIVersion, vertexProject, vertexLocation, bedrockRegion
}

// sealedColumns returns the kek_id, wrapped_key and ciphertext values of c:
// all NULL when there is no credential.
func sealedColumns(c *config.Sealed) (kekID, wrapped, ciphertext any) {
	if c == nil {
		return nil, nil, nil
	}
	return c.KEKID, c.WrappedKey, c.Ciphertext
}

// CreateProvider inserts p into its live organization, or returns what
// requestID created before.
func (s *Store) CreateProvider(ctx context.Context, p config.Provider, requestID string, a config.AuditRecord) (config.Provider, error) {
	org, provider, _ := config.ParseProviderName(p.Name)
	var out providerRow
	err := s.write(ctx, &a, func(tx pgx.Tx) error {
		if requestID != "" {
			r, found, err := queryRow(ctx, tx, scanProvider, selectProviders+` WHERE v.request_id = $1`, requestID)
			if err != nil {
				return fmt.Errorf("look up request %s: %w", requestID, err)
			}
			if found {
				if !strings.HasPrefix(r.Name, config.OrganizationName(org)+"/") {
					return errRequestIDReused
				}
				out, a = r, a.WithTarget(r.Name)
				return replayed(r.deleted, "provider", r.Name)
			}
		}
		parent, err := liveOrg(ctx, tx, config.OrganizationName(org))
		if err != nil {
			return err
		}
		id, err := newID()
		if err != nil {
			return err
		}
		kekID, wrapped, ciphertext := sealedColumns(p.Credential)
		azureAPIVersion, vertexProject, vertexLocation, bedrockRegion := settingsColumns(p)
		_, err = tx.Exec(ctx, `
			INSERT INTO providers (id, organization_id, name, display_name, type, base_url,
			                       azure_api_version, vertex_project, vertex_location, bedrock_region,
			                       kek_id, wrapped_key, ciphertext, request_id)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`,
			id, parent.id, provider, p.DisplayName, string(p.Type), p.BaseURL,
			azureAPIVersion, vertexProject, vertexLocation, bedrockRegion,
			kekID, wrapped, ciphertext, nullable(requestID))
		if uniqueViolation(err, "providers_live_name_idx") {
			return fmt.Errorf("provider %s: %w", p.Name, config.ErrAlreadyExists)
		}
		if err != nil {
			return fmt.Errorf("insert provider %s: %w", p.Name, err)
		}
		out, err = providerByID(ctx, tx, id)
		return err
	})
	return out.Provider, err
}

// Provider returns the live provider called name.
func (s *Store) Provider(ctx context.Context, name string) (config.Provider, error) {
	r, err := liveProvider(ctx, s.pool, name)
	return r.Provider, dbError(err)
}

// Providers returns a page of the live providers of org in creation order.
func (s *Store) Providers(ctx context.Context, org string, p config.Page) ([]config.Provider, string, error) {
	parent, err := liveOrg(ctx, s.pool, org)
	if err != nil {
		return nil, "", dbError(err)
	}
	rows, err := queryRows(ctx, s.pool, scanProvider, selectProviders+`
		WHERE v.organization_id = $1 AND v.deleted_at IS NULL AND ($2::uuid IS NULL OR v.id > $2::uuid)
		ORDER BY v.id
		LIMIT $3`,
		parent.id, cursor(p), p.Size+1)
	if err != nil {
		return nil, "", dbError(fmt.Errorf("list providers of %s: %w", org, err))
	}
	rows, next := page(rows, p, providerRow.rowID)
	out := make([]config.Provider, len(rows))
	for i, r := range rows {
		out[i] = r.Provider
	}
	return out, next, nil
}

// UpdateProvider applies update to the live provider called name.
func (s *Store) UpdateProvider(ctx context.Context, name string, update func(*config.Provider) error, a config.AuditRecord) (config.Provider, error) {
	var out providerRow
	err := s.write(ctx, &a, func(tx pgx.Tx) error {
		r, err := liveProvider(ctx, tx, name)
		if err != nil {
			return err
		}
		p := r.Provider
		if err := update(&p); err != nil {
			return err
		}
		kekID, wrapped, ciphertext := sealedColumns(p.Credential)
		azureAPIVersion, vertexProject, vertexLocation, bedrockRegion := settingsColumns(p)
		if _, err := tx.Exec(ctx, `
			UPDATE providers
			SET display_name = $2, type = $3, base_url = $4,
			    azure_api_version = $5, vertex_project = $6, vertex_location = $7, bedrock_region = $8,
			    kek_id = $9, wrapped_key = $10, ciphertext = $11,
			    version = nextval('config_version'), updated_at = now()
			WHERE id = $1`,
			r.id, p.DisplayName, string(p.Type), p.BaseURL,
			azureAPIVersion, vertexProject, vertexLocation, bedrockRegion,
			kekID, wrapped, ciphertext); err != nil {
			return fmt.Errorf("update provider %s: %w", name, err)
		}
		out, err = providerByID(ctx, tx, r.id)
		return err
	})
	return out.Provider, err
}

// DeleteProvider leaves a tombstone, without the sealed credential, of a
// provider no live route uses.
func (s *Store) DeleteProvider(ctx context.Context, name string, a config.AuditRecord) error {
	return s.write(ctx, &a, func(tx pgx.Tx) error {
		r, err := liveProvider(ctx, tx, name)
		if err != nil {
			return err
		}
		routes, err := queryRows(ctx, tx, scanRoute, selectRoutes+`
			WHERE r.provider_id = $1 AND r.deleted_at IS NULL
			ORDER BY r.id
			LIMIT 1`, r.id)
		if err != nil {
			return fmt.Errorf("look up routes using %s: %w", name, err)
		}
		if len(routes) > 0 {
			return fmt.Errorf("%w: provider %s is used by route %s; change or delete its routes first", config.ErrInUse, name, routes[0].Name)
		}
		if _, err := tx.Exec(ctx, `
			UPDATE providers
			SET deleted_at = now(), updated_at = now(), version = nextval('config_version'),
			    kek_id = NULL, wrapped_key = NULL, ciphertext = NULL
			WHERE id = $1`, r.id); err != nil {
			return fmt.Errorf("delete provider %s: %w", name, err)
		}
		return nil
	})
}

func liveProvider(ctx context.Context, q querier, name string) (providerRow, error) {
	org, provider, _ := config.ParseProviderName(name)
	r, found, err := queryRow(ctx, q, scanProvider, selectProviders+`
		WHERE o.name = $1 AND o.deleted_at IS NULL AND v.name = $2 AND v.deleted_at IS NULL`,
		org, provider)
	if err != nil {
		return r, fmt.Errorf("get provider %s: %w", name, err)
	}
	if !found {
		return r, config.NotFound("provider", name)
	}
	return r, nil
}

func providerByID(ctx context.Context, q querier, id uuid.UUID) (providerRow, error) {
	r, found, err := queryRow(ctx, q, scanProvider, selectProviders+` WHERE v.id = $1`, id)
	if err == nil && !found {
		err = pgx.ErrNoRows
	}
	if err != nil {
		return r, fmt.Errorf("read provider %s back: %w", id, err)
	}
	return r, nil
}
