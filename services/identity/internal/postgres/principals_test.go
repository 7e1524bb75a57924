package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/moat-ai/moat/services/identity/internal/identity"
)

func allowedOn(target string) identity.AuditRecord {
	return identity.AuditRecord{Call: identity.Call{Actor: "keys/admin", Action: "test"}, Organization: "orgs/acme",
		Target: target, Outcome: identity.OutcomeAllowed, Status: "OK", Time: t0}
}

// A key created for a service account while it is being deleted is either
// refused or revoked with the others: no key of a deleted principal ever
// works.
func TestPrincipalDeletionRacesKeyCreation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, pool := newStore(t)
	const project = "orgs/acme/projects/web"
	for i := range 20 {
		sa := identity.ServiceAccount{Project: project, ID: fmt.Sprintf("sa-%02d", i), CreateTime: t0, UpdateTime: t0}
		if err := s.CreateServiceAccount(ctx, sa, allowedOn(sa.Name())); err != nil {
			t.Fatal(err)
		}
		k := newKey(t, project, t0)
		k.Owner = sa.Name()
		var wg sync.WaitGroup
		wg.Go(func() {
			if _, _, err := s.CreateKey(ctx, k, record("")); err != nil && !errors.Is(err, identity.ErrOwnerNotFound) {
				t.Errorf("CreateKey = %v, want success or ErrOwnerNotFound", err)
			}
		})
		wg.Go(func() {
			if _, err := s.DeleteServiceAccount(ctx, project, sa.ID, t0, allowedOn(sa.Name())); err != nil {
				t.Errorf("DeleteServiceAccount = %v", err)
			}
		})
		wg.Wait()
	}
	var working int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM api_keys WHERE owner <> '' AND revoked_at IS NULL`).Scan(&working); err != nil {
		t.Fatal(err)
	}
	if working != 0 {
		t.Errorf("%d keys of deleted service accounts are not revoked", working)
	}
}

// An agent created for a user whose membership is ending is either refused
// or makes the membership's end fail: every agent's owner stays a member.
func TestMemberDeletionRacesAgentCreation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, pool := newStore(t)
	const org, project = "orgs/acme", "orgs/acme/projects/web"
	for i := range 20 {
		user := fmt.Sprintf("user-%02d", i)
		m := identity.Member{Organization: org, UserID: user, Role: identity.OrgMember, Source: identity.SourceAdmin, CreateTime: t0, UpdateTime: t0}
		if _, err := s.CreateMember(ctx, m, true, func(m identity.Member) identity.AuditRecord { return allowedOn(m.Name()) }); err != nil {
			t.Fatal(err)
		}
		a := identity.Agent{Project: project, ID: fmt.Sprintf("agent-%02d", i), Owner: "users/" + user, RiskTier: identity.RiskHigh,
			CreateTime: t0, UpdateTime: t0}
		var wg sync.WaitGroup
		var created, deleted bool
		wg.Go(func() {
			err := s.CreateAgent(ctx, a, allowedOn(a.Name()))
			if err != nil && !errors.Is(err, identity.ErrAgentUserNotMember) {
				t.Errorf("CreateAgent = %v, want success or ErrAgentUserNotMember", err)
			}
			created = err == nil
		})
		wg.Go(func() {
			_, err := s.DeleteMember(ctx, org, user, t0, func(m identity.Member) identity.AuditRecord { return allowedOn(m.Name()) })
			if err != nil && !errors.Is(err, identity.ErrMemberHasAgents) {
				t.Errorf("DeleteMember = %v, want success or ErrMemberHasAgents", err)
			}
			deleted = err == nil
		})
		wg.Wait()
		if created == deleted {
			t.Errorf("round %d: agent created %v, membership ended %v; want exactly one", i, created, deleted)
		}
	}
	var orphans int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM agents a WHERE NOT EXISTS (SELECT 1 FROM memberships m
		WHERE m.organization = a.organization AND 'users/' || m.user_id = a.owner AND m.deleted_at IS NULL)`).Scan(&orphans); err != nil {
		t.Fatal(err)
	}
	if orphans != 0 {
		t.Errorf("%d agents are owned by users who are no longer members", orphans)
	}
}
