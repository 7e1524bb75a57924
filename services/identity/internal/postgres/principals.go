package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/moat-ai/moat/libs/authn"
	"github.com/moat-ai/moat/libs/pg"
	"github.com/moat-ai/moat/services/identity/internal/identity"
)

const serviceAccountColumns = `project, id, display_name, description, created_at, updated_at`

func scanServiceAccount(row pgx.Row) (identity.ServiceAccount, error) {
	var a identity.ServiceAccount
	if err := row.Scan(&a.Project, &a.ID, &a.DisplayName, &a.Description, &a.CreateTime, &a.UpdateTime); err != nil {
		return identity.ServiceAccount{}, err
	}
	a.CreateTime, a.UpdateTime = a.CreateTime.UTC(), a.UpdateTime.UTC()
	return a, nil
}

const agentColumns = `project, id, display_name, description, owner, risk_tier, acts_for, created_at, updated_at`

func scanAgent(row pgx.Row) (identity.Agent, error) {
	var (
		a    identity.Agent
		tier string
	)
	if err := row.Scan(&a.Project, &a.ID, &a.DisplayName, &a.Description, &a.Owner, &tier, &a.ActsFor,
		&a.CreateTime, &a.UpdateTime); err != nil {
		return identity.Agent{}, err
	}
	a.RiskTier = identity.ParseRiskTier(tier)
	a.CreateTime, a.UpdateTime = a.CreateTime.UTC(), a.UpdateTime.UTC()
	return a, nil
}

// CreateServiceAccount implements identity.Store.
func (s *Store) CreateServiceAccount(ctx context.Context, a identity.ServiceAccount, audit identity.AuditRecord) error {
	err := pg.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO service_accounts (organization, project, id, display_name, description, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $6)`,
			authn.OrganizationOf(a.Project), a.Project, a.ID, a.DisplayName, a.Description, a.CreateTime)
		if uniqueViolation(err) {
			return identity.ErrServiceAccountExists
		}
		if err != nil {
			return fmt.Errorf("insert service account: %w", err)
		}
		return s.enqueue(ctx, tx, audit)
	})
	return markUnavailable(err)
}

// GetServiceAccount implements identity.Store.
func (s *Store) GetServiceAccount(ctx context.Context, project, id string) (identity.ServiceAccount, error) {
	a, err := scanServiceAccount(s.pool.QueryRow(ctx, `SELECT `+serviceAccountColumns+` FROM service_accounts
		WHERE project = $1 AND id = $2`, project, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return a, identity.ErrServiceAccountNotFound
	}
	return a, storeErr("read service account", err)
}

// ListServiceAccounts implements identity.Store.
func (s *Store) ListServiceAccounts(ctx context.Context, project, after string, limit int) ([]identity.ServiceAccount, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+serviceAccountColumns+` FROM service_accounts
		WHERE project = $1 AND id > $2 ORDER BY id LIMIT $3`, project, after, limit)
	if err != nil {
		return nil, storeErr("list service accounts", err)
	}
	as, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (identity.ServiceAccount, error) { return scanServiceAccount(r) })
	return as, storeErr("list service accounts", err)
}

// UpdateServiceAccount implements identity.Store.
func (s *Store) UpdateServiceAccount(ctx context.Context, project, id string, fn func(*identity.ServiceAccount) error, audit identity.AuditRecord) (identity.ServiceAccount, error) {
	var a identity.ServiceAccount
	err := pg.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		a, err = scanServiceAccount(tx.QueryRow(ctx, `SELECT `+serviceAccountColumns+` FROM service_accounts
			WHERE project = $1 AND id = $2 FOR UPDATE`, project, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return identity.ErrServiceAccountNotFound
		}
		if err != nil {
			return fmt.Errorf("read service account: %w", err)
		}
		if err := fn(&a); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE service_accounts SET display_name = $3, description = $4, updated_at = $5
			WHERE project = $1 AND id = $2`, project, id, a.DisplayName, a.Description, a.UpdateTime); err != nil {
			return fmt.Errorf("update service account: %w", err)
		}
		return s.enqueue(ctx, tx, audit)
	})
	if err != nil {
		return identity.ServiceAccount{}, markUnavailable(err)
	}
	return a, nil
}

// DeleteServiceAccount implements identity.Store.
func (s *Store) DeleteServiceAccount(ctx context.Context, project, id string, now time.Time, audit identity.AuditRecord) (int, error) {
	name := identity.ServiceAccount{Project: project, ID: id}.Name()
	return s.deletePrincipal(ctx, `DELETE FROM service_accounts WHERE project = $1 AND id = $2`,
		project, id, name, identity.ErrServiceAccountNotFound, now, audit)
}

// CreateAgent implements identity.Store.
func (s *Store) CreateAgent(ctx context.Context, a identity.Agent, audit identity.AuditRecord) error {
	org := authn.OrganizationOf(a.Project)
	err := pg.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		if err := holdMemberships(ctx, tx, org, a.Users()); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO agents (organization, project, id, display_name, description, owner, risk_tier,
			acts_for, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)`,
			org, a.Project, a.ID, a.DisplayName, a.Description, a.Owner, a.RiskTier.String(), a.ActsFor, a.CreateTime)
		if uniqueViolation(err) {
			return identity.ErrAgentExists
		}
		if err != nil {
			return fmt.Errorf("insert agent: %w", err)
		}
		return s.enqueue(ctx, tx, audit)
	})
	return markUnavailable(err)
}

// GetAgent implements identity.Store.
func (s *Store) GetAgent(ctx context.Context, project, id string) (identity.Agent, error) {
	a, err := scanAgent(s.pool.QueryRow(ctx, `SELECT `+agentColumns+` FROM agents WHERE project = $1 AND id = $2`, project, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return a, identity.ErrAgentNotFound
	}
	return a, storeErr("read agent", err)
}

// ListAgents implements identity.Store.
func (s *Store) ListAgents(ctx context.Context, project, after string, limit int) ([]identity.Agent, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+agentColumns+` FROM agents
		WHERE project = $1 AND id > $2 ORDER BY id LIMIT $3`, project, after, limit)
	if err != nil {
		return nil, storeErr("list agents", err)
	}
	as, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (identity.Agent, error) { return scanAgent(r) })
	return as, storeErr("list agents", err)
}

// UpdateAgent implements identity.Store.
func (s *Store) UpdateAgent(ctx context.Context, project, id string, fn func(*identity.Agent) error, audit identity.AuditRecord) (identity.Agent, error) {
	var a identity.Agent
	err := pg.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		a, err = scanAgent(tx.QueryRow(ctx, `SELECT `+agentColumns+` FROM agents WHERE project = $1 AND id = $2 FOR UPDATE`, project, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return identity.ErrAgentNotFound
		}
		if err != nil {
			return fmt.Errorf("read agent: %w", err)
		}
		if err := fn(&a); err != nil {
			return err
		}
		if err := holdMemberships(ctx, tx, authn.OrganizationOf(project), a.Users()); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE agents
			SET display_name = $3, description = $4, owner = $5, risk_tier = $6, acts_for = $7, updated_at = $8
			WHERE project = $1 AND id = $2`,
			project, id, a.DisplayName, a.Description, a.Owner, a.RiskTier.String(), a.ActsFor, a.UpdateTime); err != nil {
			return fmt.Errorf("update agent: %w", err)
		}
		return s.enqueue(ctx, tx, audit)
	})
	if err != nil {
		return identity.Agent{}, markUnavailable(err)
	}
	return a, nil
}

// DeleteAgent implements identity.Store.
func (s *Store) DeleteAgent(ctx context.Context, project, id string, now time.Time, audit identity.AuditRecord) (int, error) {
	name := identity.Agent{Project: project, ID: id}.Name()
	return s.deletePrincipal(ctx, `DELETE FROM agents WHERE project = $1 AND id = $2`,
		project, id, name, identity.ErrAgentNotFound, now, audit)
}

// deletePrincipal runs del (which deletes the principal project/id, called
// name) and revokes the keys the principal owns, each with a new version,
// and writes audit, in one transaction. The version lock, which key
// creation holds while it checks that an owner exists, makes sure no key
// is created for the principal after its keys were revoked.
func (s *Store) deletePrincipal(ctx context.Context, del, project, id, name string, notFound error, now time.Time, audit identity.AuditRecord) (int, error) {
	var revoked int
	err := pg.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lockVersions(ctx, tx); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, del, project, id)
		if err != nil {
			return fmt.Errorf("delete %s: %w", name, err)
		}
		if tag.RowsAffected() == 0 {
			return notFound
		}
		// Each revoked key draws its own version, as the index needs.
		tag, err = tx.Exec(ctx, `UPDATE api_keys
			SET revoked_at = $3, version = nextval('api_keys_version_seq')
			WHERE organization = $1 AND owner = $2 AND revoked_at IS NULL`, authn.OrganizationOf(project), name, now)
		if err != nil {
			return fmt.Errorf("revoke the keys of %s: %w", name, err)
		}
		revoked = int(tag.RowsAffected())
		if revoked > 0 {
			if err := notify(ctx, tx); err != nil {
				return err
			}
		}
		return s.enqueue(ctx, tx, audit)
	})
	if err != nil {
		return 0, markUnavailable(err)
	}
	return revoked, nil
}

// holdMemberships checks that every user (users/{user}) is a lasting
// member of org, and share-locks their memberships until the transaction
// ends, so that none of them ends before an agent naming the user commits
// (DeleteMember updates the membership row first, then looks for agents).
func holdMemberships(ctx context.Context, tx pgx.Tx, org string, users []string) error {
	for _, u := range users {
		var one int
		err := tx.QueryRow(ctx, `SELECT 1 FROM memberships
			WHERE organization = $1 AND user_id = $2 AND deleted_at IS NULL FOR SHARE`, org, identity.UserIDOf(u)).Scan(&one)
		if errors.Is(err, pgx.ErrNoRows) {
			return identity.ErrAgentUserNotMember
		}
		if err != nil {
			return fmt.Errorf("look up membership: %w", err)
		}
	}
	return nil
}

// ownerExists reports whether a service account or agent owner (its full
// name) exists in project. Callers hold the version lock, which deleting a
// principal takes too.
func ownerExists(ctx context.Context, tx pgx.Tx, kind identity.PrincipalKind, project, id string) (bool, error) {
	table := "service_accounts"
	if kind == identity.PrincipalAgent {
		table = "agents"
	}
	var ok bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+table+` WHERE project = $1 AND id = $2)`, project, id).Scan(&ok); err != nil {
		return false, fmt.Errorf("look up key owner: %w", err)
	}
	return ok, nil
}

// agentsNameUser reports whether an agent of org names user (users/{user})
// as its owner or acts_for.
func agentsNameUser(ctx context.Context, tx pgx.Tx, org, user string) (bool, error) {
	var ok bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM agents WHERE organization = $1 AND owner = $2)
		OR EXISTS (SELECT 1 FROM agents WHERE organization = $1 AND acts_for = $2)`, org, user).Scan(&ok); err != nil {
		return false, fmt.Errorf("look up the user's agents: %w", err)
	}
	return ok, nil
}
