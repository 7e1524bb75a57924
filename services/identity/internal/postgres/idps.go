package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/moat-ai/moat/libs/pg"
	"github.com/moat-ai/moat/services/identity/internal/identity"
)

const idpColumns = `organization, id, display_name, protocol, settings, group_role_mappings,
	default_role, email_domains, created_at, updated_at`

// idpSettings is the settings column: the protocol configuration, never
// a secret.
type idpSettings struct {
	OIDC *identity.OIDCSettings `json:"oidc,omitempty"`
	SAML *identity.SAMLSettings `json:"saml,omitempty"`
}

// groupRole is a group_role_mappings element as stored.
type groupRole struct {
	Group string `json:"group"`
	Role  string `json:"role"`
}

func scanIdP(row pgx.Row) (identity.Provider, error) {
	var (
		p                  identity.Provider
		protocol, defRole  string
		settings, mappings []byte
	)
	if err := row.Scan(&p.Organization, &p.ID, &p.DisplayName, &protocol, &settings, &mappings,
		&defRole, &p.EmailDomains, &p.CreateTime, &p.UpdateTime); err != nil {
		return identity.Provider{}, err
	}
	var st idpSettings
	if err := json.Unmarshal(settings, &st); err != nil {
		return identity.Provider{}, fmt.Errorf("decode settings of %s: %w", p.ID, err)
	}
	p.OIDC, p.SAML = st.OIDC, st.SAML
	var grs []groupRole
	if err := json.Unmarshal(mappings, &grs); err != nil {
		return identity.Provider{}, fmt.Errorf("decode group mappings of %s: %w", p.ID, err)
	}
	for _, g := range grs {
		p.GroupRoles = append(p.GroupRoles, identity.GroupRole{Group: g.Group, Role: identity.ParseOrgRole(g.Role)})
	}
	p.DefaultRole = identity.ParseOrgRole(defRole)
	p.CreateTime, p.UpdateTime = p.CreateTime.UTC(), p.UpdateTime.UTC()
	return p, nil
}

// idpValues are p's stored settings and mappings.
func idpValues(p identity.Provider) (protocol string, settings, mappings []byte, err error) {
	protocol = "oidc"
	if p.SAML != nil {
		protocol = "saml"
	}
	if settings, err = json.Marshal(idpSettings{OIDC: p.OIDC, SAML: p.SAML}); err != nil {
		return "", nil, nil, err
	}
	grs := make([]groupRole, 0, len(p.GroupRoles))
	for _, g := range p.GroupRoles {
		grs = append(grs, groupRole{Group: g.Group, Role: g.Role.String()})
	}
	if mappings, err = json.Marshal(grs); err != nil {
		return "", nil, nil, err
	}
	return protocol, settings, mappings, nil
}

// putDomains makes p's email domains exactly its list.
func putDomains(ctx context.Context, tx pgx.Tx, p identity.Provider) error {
	if _, err := tx.Exec(ctx, `DELETE FROM email_domains WHERE organization = $1 AND identity_provider = $2`, p.Organization, p.ID); err != nil {
		return fmt.Errorf("clear email domains: %w", err)
	}
	for _, d := range p.EmailDomains {
		_, err := tx.Exec(ctx, `INSERT INTO email_domains (domain, organization, identity_provider) VALUES ($1, $2, $3)`, d, p.Organization, p.ID)
		if uniqueViolation(err) {
			return fmt.Errorf("%w: %s", identity.ErrDomainTaken, d)
		}
		if err != nil {
			return fmt.Errorf("claim email domain: %w", err)
		}
	}
	return nil
}

func uniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// CreateIdP implements identity.Store.
func (s *Store) CreateIdP(ctx context.Context, p identity.Provider, apply func(context.Context) error, a identity.AuditRecord) error {
	protocol, settings, mappings, err := idpValues(p)
	if err != nil {
		return err
	}
	err = pg.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO identity_providers (organization, id, alias, display_name, protocol,
			settings, group_role_mappings, default_role, email_domains, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)`,
			p.Organization, p.ID, p.Alias(), p.DisplayName, protocol, settings, mappings, p.DefaultRole.String(), p.EmailDomains, p.CreateTime)
		if uniqueViolation(err) {
			return identity.ErrIdPExists
		}
		if err != nil {
			return fmt.Errorf("insert identity provider: %w", err)
		}
		if err := putDomains(ctx, tx, p); err != nil {
			return err
		}
		if err := apply(ctx); err != nil {
			return err
		}
		return s.enqueue(ctx, tx, a)
	})
	return markUnavailable(err)
}

// GetIdP implements identity.Store.
func (s *Store) GetIdP(ctx context.Context, org, id string) (identity.Provider, error) {
	p, err := scanIdP(s.pool.QueryRow(ctx, `SELECT `+idpColumns+` FROM identity_providers WHERE organization = $1 AND id = $2`, org, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return p, identity.ErrIdPNotFound
	}
	return p, storeErr("read identity provider", err)
}

// IdPByAlias implements identity.Store.
func (s *Store) IdPByAlias(ctx context.Context, alias string) (identity.Provider, error) {
	p, err := scanIdP(s.pool.QueryRow(ctx, `SELECT `+idpColumns+` FROM identity_providers WHERE alias = $1`, alias))
	if errors.Is(err, pgx.ErrNoRows) {
		return p, identity.ErrIdPNotFound
	}
	return p, storeErr("read identity provider", err)
}

// ListIdPs implements identity.Store.
func (s *Store) ListIdPs(ctx context.Context, org, after string, limit int) ([]identity.Provider, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+idpColumns+` FROM identity_providers
		WHERE organization = $1 AND id > $2 ORDER BY id LIMIT $3`, org, after, limit)
	if err != nil {
		return nil, storeErr("list identity providers", err)
	}
	ps, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (identity.Provider, error) { return scanIdP(r) })
	return ps, storeErr("list identity providers", err)
}

// UpdateIdP implements identity.Store.
func (s *Store) UpdateIdP(ctx context.Context, org, id string, change func(*identity.Provider) error, apply func(context.Context, identity.Provider) error, a identity.AuditRecord) (identity.Provider, error) {
	var p identity.Provider
	err := pg.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		p, err = scanIdP(tx.QueryRow(ctx, `SELECT `+idpColumns+` FROM identity_providers
			WHERE organization = $1 AND id = $2 FOR UPDATE`, org, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return identity.ErrIdPNotFound
		}
		if err != nil {
			return fmt.Errorf("read identity provider: %w", err)
		}
		if err := change(&p); err != nil {
			return err
		}
		protocol, settings, mappings, err := idpValues(p)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE identity_providers
			SET display_name = $3, protocol = $4, settings = $5, group_role_mappings = $6, default_role = $7,
				email_domains = $8, updated_at = $9
			WHERE organization = $1 AND id = $2`,
			org, id, p.DisplayName, protocol, settings, mappings, p.DefaultRole.String(), p.EmailDomains, p.UpdateTime); err != nil {
			return fmt.Errorf("update identity provider: %w", err)
		}
		if err := putDomains(ctx, tx, p); err != nil {
			return err
		}
		// Keycloak last: a refusal above must leave it as it was.
		if err := apply(ctx, p); err != nil {
			return err
		}
		return s.enqueue(ctx, tx, a)
	})
	if err != nil {
		return identity.Provider{}, markUnavailable(err)
	}
	return p, nil
}

// DeleteIdP implements identity.Store.
func (s *Store) DeleteIdP(ctx context.Context, org, id string, apply func(context.Context, identity.Provider) error, a identity.AuditRecord) error {
	err := pg.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		p, err := scanIdP(tx.QueryRow(ctx, `DELETE FROM identity_providers
			WHERE organization = $1 AND id = $2
			RETURNING `+idpColumns, org, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return identity.ErrIdPNotFound
		}
		if err != nil {
			return fmt.Errorf("delete identity provider: %w", err)
		}
		if err := apply(ctx, p); err != nil {
			return err
		}
		return s.enqueue(ctx, tx, a)
	})
	return markUnavailable(err)
}
