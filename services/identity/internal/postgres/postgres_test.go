package postgres_test

import (
	"context"
	"crypto/rand"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/moat-ai/moat/libs/authn"
	"github.com/moat-ai/moat/libs/events"
	"github.com/moat-ai/moat/libs/pg"
	"github.com/moat-ai/moat/libs/pg/pgtest"
	auditv1 "github.com/moat-ai/moat/proto/gen/go/moat/audit/v1"
	"github.com/moat-ai/moat/services/identity/internal/identity"
	"github.com/moat-ai/moat/services/identity/internal/postgres"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func newStore(t *testing.T) (*postgres.Store, *pgxpool.Pool) {
	t.Helper()
	pool, _ := pgtest.NewDatabase(t, events.Migrations, postgres.Migrations)
	return postgres.NewStore(pool, nil), pool
}

func newKey(t *testing.T, project string, created time.Time) identity.Key {
	t.Helper()
	id, err := uuid.NewV7()
	if err != nil {
		t.Fatal(err)
	}
	h := make([]byte, 32)
	_, _ = rand.Read(h)
	k := identity.Key{ID: id.String(), Role: identity.RoleProject, Project: project, DisplayName: "ci",
		Prefix: "moat_abcdefg", HMAC: h, CreateTime: created}
	if project == "" {
		k.Role = identity.RolePlatformAdmin
	} else {
		k.Organization = authn.OrganizationOf(project)
	}
	return k
}

func record(target string) func(identity.Key) identity.AuditRecord {
	return func(k identity.Key) identity.AuditRecord {
		if target == "" {
			target = k.Name()
		}
		return identity.AuditRecord{
			Call:         identity.Call{Actor: "keys/admin", Action: "moat.identity.v1.IdentityService.CreateApiKey", SourceAddress: "127.0.0.1:1", RequestID: "r"},
			Organization: k.Organization, Target: target, Outcome: identity.OutcomeAllowed, Status: "OK", Time: t0,
		}
	}
}

// auditEvents returns the audit events in the outbox, oldest first.
func auditEvents(t *testing.T, pool *pgxpool.Pool) []*auditv1.AuditEvent {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT subject, event_type, payload FROM outbox ORDER BY created_at, event_id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []*auditv1.AuditEvent
	for rows.Next() {
		var subject, typ string
		var payload []byte
		if err := rows.Scan(&subject, &typ, &payload); err != nil {
			t.Fatal(err)
		}
		if subject != postgres.AuditSubject || typ != "moat.audit.v1.AuditEvent" {
			t.Errorf("outbox row %s %s, want %s moat.audit.v1.AuditEvent", subject, typ, postgres.AuditSubject)
		}
		ev := &auditv1.AuditEvent{}
		if err := proto.Unmarshal(payload, ev); err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

var ignoreVersion = cmpopts.IgnoreFields(identity.Key{}, "Version")

func TestCreateKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, pool := newStore(t)

	k := newKey(t, "orgs/acme/projects/web", t0)
	k.RequestID = uuid.NewString()
	k.ExpireTime = t0.Add(time.Hour)
	got, created, err := s.CreateKey(ctx, k, record(""))
	if err != nil || !created {
		t.Fatalf("CreateKey = %v, created %v", err, created)
	}
	if diff := cmp.Diff(k, got, ignoreVersion); diff != "" {
		t.Errorf("created key mismatch (-want +got):\n%s", diff)
	}

	// The same request id: the first key, not a second one.
	retry := newKey(t, k.Project, t0.Add(time.Minute))
	retry.RequestID = k.RequestID
	again, created, err := s.CreateKey(ctx, retry, record(""))
	if err != nil || created {
		t.Fatalf("CreateKey(retry) = %v, created %v; want the first key", err, created)
	}
	if diff := cmp.Diff(got, again); diff != "" {
		t.Errorf("retry returned another key (-want +got):\n%s", diff)
	}

	// The same request id in another project is refused, and writes nothing.
	other := newKey(t, "orgs/acme/projects/api", t0)
	other.RequestID = k.RequestID
	if _, _, err := s.CreateKey(ctx, other, record("")); !errors.Is(err, identity.ErrRequestIDReused) {
		t.Errorf("CreateKey(request id of another project) = %v, want ErrRequestIDReused", err)
	}

	// A project outside its organization breaks the schema's check.
	bad := newKey(t, "orgs/acme/projects/web", t0)
	bad.Organization = "orgs/evil"
	if _, _, err := s.CreateKey(ctx, bad, record("")); err == nil {
		t.Error("CreateKey(project outside its organization) = nil, want an error")
	}

	want := []*auditv1.AuditEvent{
		{Organization: "orgs/acme", Actor: "keys/admin", Action: "moat.identity.v1.IdentityService.CreateApiKey", Target: k.Name(),
			Outcome: auditv1.AuditEvent_OUTCOME_ALLOWED, Status: "OK", SourceAddress: "127.0.0.1:1", RequestId: "r", EventTime: timestamppb.New(t0)},
	}
	want = append(want, want[0]) // the retry is audited too, with the first key as target
	if diff := cmp.Diff(want, auditEvents(t, pool), protocmp.Transform()); diff != "" {
		t.Errorf("audit events mismatch (-want +got):\n%s", diff)
	}
}

func TestUpdateKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, pool := newStore(t)
	k, _, err := s.CreateKey(ctx, newKey(t, "orgs/acme/projects/web", t0), record(""))
	if err != nil {
		t.Fatal(err)
	}

	revoke := func(k *identity.Key) (bool, error) {
		if !k.RevokeTime.IsZero() {
			return false, nil
		}
		k.RevokeTime = t0.Add(time.Minute)
		return true, nil
	}
	got, err := s.UpdateKey(ctx, k.ID, revoke, record(""))
	if err != nil {
		t.Fatalf("UpdateKey = %v", err)
	}
	if got.Version <= k.Version || !got.RevokeTime.Equal(t0.Add(time.Minute)) {
		t.Errorf("revoked key: version %d (was %d), revoke time %v", got.Version, k.Version, got.RevokeTime)
	}
	// Unchanged: same version.
	again, err := s.UpdateKey(ctx, k.ID, revoke, record(""))
	if err != nil || again.Version != got.Version {
		t.Errorf("UpdateKey(no change) = version %d, %v; want version %d", again.Version, err, got.Version)
	}
	// fn's error aborts: nothing written, no audit.
	boom := errors.New("boom")
	if _, err := s.UpdateKey(ctx, k.ID, func(*identity.Key) (bool, error) { return false, boom }, record("")); !errors.Is(err, boom) {
		t.Errorf("UpdateKey(failing fn) = %v, want boom", err)
	}
	if _, err := s.UpdateKey(ctx, uuid.NewString(), revoke, record("")); !errors.Is(err, identity.ErrNotFound) {
		t.Errorf("UpdateKey(missing) = %v, want ErrNotFound", err)
	}
	if n := len(auditEvents(t, pool)); n != 3 {
		t.Errorf("audit events: %d, want 3 (create and two revokes)", n)
	}
}

func TestListKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	var want []identity.Key
	for i := range 5 {
		// Two keys share a creation time: the id breaks the tie.
		k, _, err := s.CreateKey(ctx, newKey(t, "orgs/acme/projects/web", t0.Add(time.Duration(i/2)*time.Second)), record(""))
		if err != nil {
			t.Fatal(err)
		}
		want = append([]identity.Key{k}, want...)
	}
	if _, _, err := s.CreateKey(ctx, newKey(t, "orgs/acme/projects/api", t0), record("")); err != nil {
		t.Fatal(err)
	}

	var got []identity.Key
	var after *identity.Cursor
	for {
		page, err := s.ListKeys(ctx, "orgs/acme/projects/web", "", after, 2)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, page...)
		if len(page) < 2 {
			break
		}
		last := page[len(page)-1]
		after = &identity.Cursor{CreateTime: last.CreateTime, ID: last.ID}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("pages mismatch (-want +got):\n%s", diff)
	}
}

func TestKeyIndex(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)

	v0, keys, _, err := s.IndexSnapshot(ctx, t0)
	if err != nil || v0 != 0 || len(keys) != 0 {
		t.Fatalf("IndexSnapshot(empty) = %d, %v, %v", v0, keys, err)
	}
	active, _, err := s.CreateKey(ctx, newKey(t, "orgs/acme/projects/web", t0), record(""))
	if err != nil {
		t.Fatal(err)
	}
	expiring := newKey(t, "orgs/acme/projects/web", t0)
	expiring.ExpireTime = t0.Add(time.Minute)
	expiring, _, err = s.CreateKey(ctx, expiring, record(""))
	if err != nil {
		t.Fatal(err)
	}
	admin, _, err := s.CreateKey(ctx, newKey(t, "", t0), record(""))
	if err != nil {
		t.Fatal(err)
	}
	revoked, _, err := s.CreateKey(ctx, newKey(t, "orgs/acme/projects/web", t0), record(""))
	if err != nil {
		t.Fatal(err)
	}
	revoked, err = s.UpdateKey(ctx, revoked.ID, func(k *identity.Key) (bool, error) { k.RevokeTime = t0; return true, nil }, record(""))
	if err != nil {
		t.Fatal(err)
	}

	version, keys, _, err := s.IndexSnapshot(ctx, t0.Add(2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if version != revoked.Version {
		t.Errorf("snapshot version %d, want the latest change's %d", version, revoked.Version)
	}
	byID := cmpopts.SortSlices(func(a, b identity.Key) bool { return a.ID < b.ID })
	if diff := cmp.Diff([]identity.Key{active, admin}, keys, byID); diff != "" {
		t.Errorf("snapshot mismatch (-want +got):\n%s", diff)
	}

	changes, _, err := s.ChangesSince(ctx, active.Version, 10)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]identity.Key{expiring, admin, revoked}, changes); diff != "" {
		t.Errorf("changes mismatch (-want +got):\n%s", diff)
	}
	if changes, _, _ := s.ChangesSince(ctx, active.Version, 1); len(changes) != 1 {
		t.Errorf("ChangesSince(limit 1) returned %d keys", len(changes))
	}
}

func TestNotify(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, pool := newStore(t)
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = conn.Conn().Close(context.Background())
		conn.Release()
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+postgres.KeysChannel); err != nil {
		t.Fatal(err)
	}
	k, _, err := s.CreateKey(ctx, newKey(t, "orgs/acme/projects/web", t0), record(""))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Conn().WaitForNotification(ctx); err != nil {
		t.Fatalf("no notification after a create: %v", err)
	}
	if _, err := s.UpdateKey(ctx, k.ID, func(k *identity.Key) (bool, error) { k.RevokeTime = t0; return true, nil }, record("")); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Conn().WaitForNotification(ctx); err != nil {
		t.Fatalf("no notification after a revoke: %v", err)
	}
}

func TestRecordAudit(t *testing.T) {
	t.Parallel()
	s, pool := newStore(t)
	a := record("orgs/acme/projects/web")(identity.Key{Organization: "orgs/acme"})
	a.Outcome, a.Status, a.Actor = identity.OutcomeDenied, "UNAUTHENTICATED", "anonymous"
	if err := s.RecordAudit(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	got := auditEvents(t, pool)
	if len(got) != 1 || got[0].GetOutcome() != auditv1.AuditEvent_OUTCOME_DENIED || got[0].GetActor() != "anonymous" {
		t.Errorf("audit events = %v, want one denial by anonymous", got)
	}
}

func TestBootstrapSerialised(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	created := 0
	for range 4 {
		wg.Go(func() {
			err := s.Bootstrap(ctx, func(ctx context.Context, tx identity.BootstrapTx) error {
				exists, err := tx.ActiveAdminExists(ctx, t0)
				if err != nil || exists {
					return err
				}
				k := newKey(t, "", t0)
				if err := tx.CreateKey(ctx, k, record("")(k)); err != nil {
					return err
				}
				mu.Lock()
				created++
				mu.Unlock()
				return nil
			})
			if err != nil {
				t.Errorf("Bootstrap = %v", err)
			}
		})
	}
	wg.Wait()
	if created != 1 {
		t.Errorf("%d admin keys created, want 1", created)
	}
}

func TestMigrationsRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, pool := newStore(t)
	if _, _, err := s.CreateKey(ctx, newKey(t, "", t0), record("")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.CreateKey(ctx, newKey(t, "orgs/acme/projects/web", t0), record("")); err != nil {
		t.Fatal(err)
	}
	sets := []pg.Migrations{events.Migrations, postgres.Migrations}
	if err := pg.MigrateDown(ctx, pool, sets...); err != nil {
		t.Fatalf("down: %v", err)
	}
	if err := pg.Migrate(ctx, pool, sets...); err != nil {
		t.Fatalf("up again: %v", err)
	}
}
