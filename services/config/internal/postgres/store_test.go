package postgres_test

import (
	"context"
	"errors"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/proto"

	"github.com/moat-ai/moat/libs/events"
	"github.com/moat-ai/moat/libs/pg"
	"github.com/moat-ai/moat/libs/pg/pgtest"
	auditv1 "github.com/moat-ai/moat/proto/gen/go/moat/audit/v1"
	"github.com/moat-ai/moat/services/config/internal/config"
	"github.com/moat-ai/moat/services/config/internal/postgres"
)

func newStore(t *testing.T) (*postgres.Store, *pgxpool.Pool) {
	t.Helper()
	pool, _ := pgtest.NewDatabase(t, events.Migrations, postgres.Migrations)
	return postgres.NewStore(pool, nil), pool
}

// audit returns a distinct allowed record for a write.
func audit(action string) config.AuditRecord {
	return config.AuditRecord{
		Actor: "keys/k1", Action: "moat.config.v1.ConfigService." + action, Outcome: config.OutcomeAllowed,
		Status: "OK", SourceAddress: "127.0.0.1:1", RequestID: "req", Time: time.Now(),
	}
}

// ignoreServerFields leaves out what the store sets.
var ignoreServerFields = cmpopts.IgnoreFields(config.Organization{}, "CreateTime", "UpdateTime", "Version")

func must[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// seed creates orgs/acme with project web, provider openai (with a sealed
// credential) and route gpt on it.
func seed(t *testing.T, s *postgres.Store) {
	t.Helper()
	ctx := context.Background()
	must[config.Organization](t)(s.CreateOrganization(ctx, config.Organization{Name: "orgs/acme", DisplayName: "Acme"}, "", audit("CreateOrganization")))
	must[config.Project](t)(s.CreateProject(ctx, config.Project{Name: "orgs/acme/projects/web"}, "", audit("CreateProject")))
	must[config.Provider](t)(s.CreateProvider(ctx, config.Provider{
		Name: "orgs/acme/providers/openai", Type: config.ProviderOpenAICompatible, BaseURL: "https://api.example.com/v1",
		Credential: &config.Sealed{KEKID: "k1", WrappedKey: []byte("wrapped"), Ciphertext: []byte("sealed")},
	}, "", audit("CreateProvider")))
	must[config.Route](t)(s.CreateRoute(ctx, config.Route{
		Name: "orgs/acme/projects/web/routes/gpt", Model: "gpt", Provider: "orgs/acme/providers/openai", UpstreamModel: "gpt-4o",
	}, "", audit("CreateRoute")))
}

func outboxCount(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM outbox`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestCRUDAndVersions(t *testing.T) {
	t.Parallel()
	s, pool := newStore(t)
	ctx := context.Background()
	seed(t, s)

	org := must[config.Organization](t)(s.Organization(ctx, "orgs/acme"))
	if diff := cmp.Diff(config.Organization{Name: "orgs/acme", DisplayName: "Acme"}, org, ignoreServerFields); diff != "" {
		t.Errorf("Organization mismatch (-want +got):\n%s", diff)
	}
	if org.CreateTime.IsZero() || org.Version == 0 {
		t.Errorf("Organization = %+v, want create time and version set", org)
	}

	updated := must[config.Organization](t)(s.UpdateOrganization(ctx, "orgs/acme", func(o *config.Organization) error {
		o.DisplayName = "Acme Corp"
		return nil
	}, audit("UpdateOrganization")))
	if updated.DisplayName != "Acme Corp" || updated.Version <= org.Version || updated.UpdateTime.Before(org.UpdateTime) {
		t.Errorf("UpdateOrganization = %+v, want new display name and a higher version than %d", updated, org.Version)
	}

	provider := must[config.Provider](t)(s.Provider(ctx, "orgs/acme/providers/openai"))
	want := config.Provider{
		Name: "orgs/acme/providers/openai", Type: config.ProviderOpenAICompatible, BaseURL: "https://api.example.com/v1",
		Credential: &config.Sealed{KEKID: "k1", WrappedKey: []byte("wrapped"), Ciphertext: []byte("sealed")},
	}
	if diff := cmp.Diff(want, provider, cmpopts.IgnoreFields(config.Provider{}, "CreateTime", "UpdateTime", "Version")); diff != "" {
		t.Errorf("Provider mismatch (-want +got):\n%s", diff)
	}
	provider = must[config.Provider](t)(s.UpdateProvider(ctx, provider.Name, func(p *config.Provider) error {
		p.Credential = nil
		p.BaseURL = "http://127.0.0.1:8000/v1"
		return nil
	}, audit("UpdateProvider")))
	if provider.Credential != nil || provider.BaseURL != "http://127.0.0.1:8000/v1" {
		t.Errorf("UpdateProvider = %+v, want credential removed and new URL", provider)
	}

	route := must[config.Route](t)(s.Route(ctx, "orgs/acme/projects/web/routes/gpt"))
	if route.Provider != "orgs/acme/providers/openai" || route.Model != "gpt" || route.UpstreamModel != "gpt-4o" {
		t.Errorf("Route = %+v", route)
	}

	// Delete in dependency order; every step leaves the resource gone.
	steps := []struct {
		name string
		del  func() error
		get  func() error
	}{
		{"route", func() error { return s.DeleteRoute(ctx, route.Name, audit("DeleteRoute")) },
			func() error { _, err := s.Route(ctx, route.Name); return err }},
		{"provider", func() error { return s.DeleteProvider(ctx, provider.Name, audit("DeleteProvider")) },
			func() error { _, err := s.Provider(ctx, provider.Name); return err }},
		{"project", func() error { return s.DeleteProject(ctx, "orgs/acme/projects/web", audit("DeleteProject")) },
			func() error { _, err := s.Project(ctx, "orgs/acme/projects/web"); return err }},
		{"organization", func() error { return s.DeleteOrganization(ctx, "orgs/acme", audit("DeleteOrganization")) },
			func() error { _, err := s.Organization(ctx, "orgs/acme"); return err }},
	}
	for _, st := range steps {
		if err := st.del(); err != nil {
			t.Fatalf("delete %s: %v", st.name, err)
		}
		if err := st.get(); !errors.Is(err, config.ErrNotFound) {
			t.Errorf("get deleted %s = %v, want ErrNotFound", st.name, err)
		}
		if err := st.del(); !errors.Is(err, config.ErrNotFound) {
			t.Errorf("delete deleted %s = %v, want ErrNotFound", st.name, err)
		}
	}
	// 4 creates, 2 updates, 4 deletes; failed deletes write nothing here.
	if n := outboxCount(t, pool); n != 10 {
		t.Errorf("outbox rows = %d, want 10 (one per successful write)", n)
	}

	// The tombstoned provider keeps no credential.
	var sealedLeft int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM providers WHERE kek_id IS NOT NULL OR ciphertext IS NOT NULL`).Scan(&sealedLeft); err != nil {
		t.Fatal(err)
	}
	if sealedLeft != 0 {
		t.Errorf("%d provider rows keep a sealed credential after deletion", sealedLeft)
	}

	// A deleted organization's id is never used again (TestRetiredIDs).
	if _, err := s.CreateOrganization(ctx, config.Organization{Name: "orgs/acme"}, "", audit("CreateOrganization")); !errors.Is(err, config.ErrAlreadyExists) {
		t.Errorf("CreateOrganization of a deleted id = %v, want ErrAlreadyExists", err)
	}
}

// Organization and project ids are never used again, because other
// services key their state by them; provider and route ids are config's
// own and may be.
func TestRetiredIDs(t *testing.T) {
	t.Parallel()
	s, pool := newStore(t)
	ctx := context.Background()
	seed(t, s)
	must[config.Organization](t)(s.CreateOrganization(ctx, config.Organization{Name: "orgs/beta"}, "", audit("CreateOrganization")))
	must[config.Project](t)(s.CreateProject(ctx, config.Project{Name: "orgs/beta/projects/api"}, "", audit("CreateProject")))
	for _, del := range []func() error{
		func() error { return s.DeleteRoute(ctx, "orgs/acme/projects/web/routes/gpt", audit("DeleteRoute")) },
		func() error { return s.DeleteProvider(ctx, "orgs/acme/providers/openai", audit("DeleteProvider")) },
		func() error { return s.DeleteProject(ctx, "orgs/acme/projects/web", audit("DeleteProject")) },
		func() error { return s.DeleteProject(ctx, "orgs/beta/projects/api", audit("DeleteProject")) },
		func() error { return s.DeleteOrganization(ctx, "orgs/beta", audit("DeleteOrganization")) },
	} {
		if err := del(); err != nil {
			t.Fatal(err)
		}
	}
	before := outboxCount(t, pool)

	tests := []struct {
		name string
		call func() error
		want string // the whole message; "" for success
	}{
		{"deleted organization", func() error {
			_, err := s.CreateOrganization(ctx, config.Organization{Name: "orgs/beta"}, "", audit("CreateOrganization"))
			return err
		}, "organization orgs/beta: already exists: the id belonged to a deleted organization, and organization ids are never reused; choose another id"},
		{"deleted project", func() error {
			_, err := s.CreateProject(ctx, config.Project{Name: "orgs/acme/projects/web"}, "", audit("CreateProject"))
			return err
		}, "project orgs/acme/projects/web: already exists: the id belonged to a deleted project, and project ids are never reused; choose another id"},
		{"deleted project with a fresh request id", func() error {
			_, err := s.CreateProject(ctx, config.Project{Name: "orgs/acme/projects/web"}, "0190b0a4-7c2e-7000-8000-0000000000f1", audit("CreateProject"))
			return err
		}, "project orgs/acme/projects/web: already exists: the id belonged to a deleted project, and project ids are never reused; choose another id"},
		{"project in a deleted organization", func() error {
			_, err := s.CreateProject(ctx, config.Project{Name: "orgs/beta/projects/api"}, "", audit("CreateProject"))
			return err
		}, "organization orgs/beta: not found"},
	}
	for _, tt := range tests {
		err := tt.call()
		if err == nil || err.Error() != tt.want {
			t.Errorf("%s: got %v, want %q", tt.name, err, tt.want)
		}
	}
	if n := outboxCount(t, pool); n != before {
		t.Errorf("refused creates wrote %d outbox rows, want 0", n-before)
	}

	// A retired project id is retired in its organization only, and
	// provider and route ids may be used again.
	must[config.Project](t)(s.CreateProject(ctx, config.Project{Name: "orgs/acme/projects/api"}, "", audit("CreateProject")))
	must[config.Provider](t)(s.CreateProvider(ctx, config.Provider{Name: "orgs/acme/providers/openai", Type: config.ProviderOpenAICompatible, BaseURL: "http://localhost"}, "", audit("CreateProvider")))
	must[config.Route](t)(s.CreateRoute(ctx, config.Route{Name: "orgs/acme/projects/api/routes/gpt", Model: "gpt", Provider: "orgs/acme/providers/openai", UpstreamModel: "u"}, "", audit("CreateRoute")))
	if err := s.DeleteRoute(ctx, "orgs/acme/projects/api/routes/gpt", audit("DeleteRoute")); err != nil {
		t.Fatal(err)
	}
	must[config.Route](t)(s.CreateRoute(ctx, config.Route{Name: "orgs/acme/projects/api/routes/gpt", Model: "gpt", Provider: "orgs/acme/providers/openai", UpstreamModel: "u"}, "", audit("CreateRoute")))

	// A live duplicate is a plain conflict, without the deletion story.
	_, err := s.CreateProject(ctx, config.Project{Name: "orgs/acme/projects/api"}, "", audit("CreateProject"))
	if want := "project orgs/acme/projects/api: already exists"; err == nil || err.Error() != want {
		t.Errorf("duplicate live project: got %v, want %q", err, want)
	}
}

func TestAuditEventInTransaction(t *testing.T) {
	t.Parallel()
	s, pool := newStore(t)
	ctx := context.Background()
	a := audit("CreateOrganization")
	a.Time = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	must[config.Organization](t)(s.CreateOrganization(ctx, config.Organization{Name: "orgs/acme"}, "", a.WithTarget("orgs/acme")))

	var subject, eventType string
	var payload []byte
	var headers map[string][]string
	if err := pool.QueryRow(ctx, `SELECT subject, event_type, payload, headers FROM outbox`).Scan(&subject, &eventType, &payload, &headers); err != nil {
		t.Fatal(err)
	}
	var got auditv1.AuditEvent
	if err := proto.Unmarshal(payload, &got); err != nil {
		t.Fatal(err)
	}
	if subject != "config.v1.audit_event.recorded" || eventType != "moat.audit.v1.AuditEvent" {
		t.Errorf("outbox row = %s %s, want config.v1.audit_event.recorded moat.audit.v1.AuditEvent", subject, eventType)
	}
	for h, want := range map[string]string{"ce-source": "moat/config", "ce-subject": "orgs/acme", "ce-type": "moat.audit.v1.AuditEvent"} {
		if len(headers[h]) != 1 || headers[h][0] != want {
			t.Errorf("header %s = %q, want %q", h, headers[h], want)
		}
	}
	want := &auditv1.AuditEvent{
		Organization: "orgs/acme", Actor: "keys/k1", Action: "moat.config.v1.ConfigService.CreateOrganization",
		Target: "orgs/acme", Outcome: auditv1.AuditEvent_OUTCOME_ALLOWED, Status: "OK",
		SourceAddress: "127.0.0.1:1", RequestId: "req", EventTime: events.Timestamp(a.Time),
	}
	if !proto.Equal(want, &got) {
		t.Errorf("audit event = %v, want %v", &got, want)
	}

	// A refused write rolls its audit event back with it.
	_, err := s.CreateOrganization(ctx, config.Organization{Name: "orgs/acme"}, "", audit("CreateOrganization"))
	if !errors.Is(err, config.ErrAlreadyExists) {
		t.Fatalf("second CreateOrganization = %v, want ErrAlreadyExists", err)
	}
	if n := outboxCount(t, pool); n != 1 {
		t.Errorf("outbox rows = %d, want 1", n)
	}
	if err := s.RecordAudit(ctx, audit("CreateOrganization")); err != nil {
		t.Fatal(err)
	}
	if n := outboxCount(t, pool); n != 2 {
		t.Errorf("outbox rows after RecordAudit = %d, want 2", n)
	}
}

func TestRequestIDReplay(t *testing.T) {
	t.Parallel()
	s, pool := newStore(t)
	ctx := context.Background()
	const rid = "0190b0a4-7c2e-7000-8000-000000000001"
	first := must[config.Organization](t)(s.CreateOrganization(ctx, config.Organization{Name: "orgs/acme", DisplayName: "one"}, rid, audit("CreateOrganization")))
	again := must[config.Organization](t)(s.CreateOrganization(ctx, config.Organization{Name: "orgs/other", DisplayName: "two"}, rid, audit("CreateOrganization")))
	if diff := cmp.Diff(first, again); diff != "" {
		t.Errorf("replayed create mismatch (-first +replay):\n%s", diff)
	}
	if _, err := s.Organization(ctx, "orgs/other"); !errors.Is(err, config.ErrNotFound) {
		t.Errorf("replay created orgs/other: %v", err)
	}
	if n := outboxCount(t, pool); n != 2 {
		t.Errorf("outbox rows = %d, want 2: every call is audited", n)
	}

	// Request ids are per resource type; each create type replays its own.
	const pid = "0190b0a4-7c2e-7000-8000-000000000002"
	p1 := must[config.Project](t)(s.CreateProject(ctx, config.Project{Name: "orgs/acme/projects/web"}, pid, audit("CreateProject")))
	p2 := must[config.Project](t)(s.CreateProject(ctx, config.Project{Name: "orgs/acme/projects/web"}, pid, audit("CreateProject")))
	if diff := cmp.Diff(p1, p2); diff != "" {
		t.Errorf("replayed project mismatch (-first +replay):\n%s", diff)
	}

	// After the resource is deleted, its request id replays as not found.
	if err := s.DeleteProject(ctx, p1.Name, audit("DeleteProject")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateProject(ctx, config.Project{Name: p1.Name}, pid, audit("CreateProject")); !errors.Is(err, config.ErrNotFound) {
		t.Errorf("replay of a deleted project = %v, want ErrNotFound", err)
	}
}

func TestRefusals(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	ctx := context.Background()
	seed(t, s)
	must[config.Organization](t)(s.CreateOrganization(ctx, config.Organization{Name: "orgs/beta"}, "", audit("CreateOrganization")))
	must[config.Provider](t)(s.CreateProvider(ctx, config.Provider{Name: "orgs/beta/providers/local", Type: config.ProviderOpenAICompatible, BaseURL: "http://localhost"}, "", audit("CreateProvider")))
	must[config.Project](t)(s.CreateProject(ctx, config.Project{Name: "orgs/acme/projects/api"}, "", audit("CreateProject")))

	var verr *config.ValidationError
	tests := []struct {
		name string
		call func() error
		is   func(error) bool
		want string
	}{
		{"org in use", func() error { return s.DeleteOrganization(ctx, "orgs/acme", audit("DeleteOrganization")) },
			isErr(config.ErrInUse), "projects and providers"},
		{"org with providers only", func() error { return s.DeleteOrganization(ctx, "orgs/beta", audit("DeleteOrganization")) },
			isErr(config.ErrInUse), "still has providers"},
		{"project with routes", func() error { return s.DeleteProject(ctx, "orgs/acme/projects/web", audit("DeleteProject")) },
			isErr(config.ErrInUse), "still has routes"},
		{"provider used by a route", func() error { return s.DeleteProvider(ctx, "orgs/acme/providers/openai", audit("DeleteProvider")) },
			isErr(config.ErrInUse), "used by route orgs/acme/projects/web/routes/gpt"},
		{"project in a missing org", func() error {
			_, err := s.CreateProject(ctx, config.Project{Name: "orgs/nope/projects/web"}, "", audit("CreateProject"))
			return err
		}, isErr(config.ErrNotFound), "organization orgs/nope"},
		{"route in a missing project", func() error {
			_, err := s.CreateRoute(ctx, config.Route{Name: "orgs/acme/projects/nope/routes/rt1", Model: "m", Provider: "orgs/acme/providers/openai", UpstreamModel: "u"}, "", audit("CreateRoute"))
			return err
		}, isErr(config.ErrNotFound), "project orgs/acme/projects/nope"},
		{"route to a missing provider", func() error {
			_, err := s.CreateRoute(ctx, config.Route{Name: "orgs/acme/projects/web/routes/rt1", Model: "m", Provider: "orgs/acme/providers/nope", UpstreamModel: "u"}, "", audit("CreateRoute"))
			return err
		}, func(err error) bool { return errors.As(err, &verr) && verr.Field == "route.provider" }, "does not exist"},
		{"route to another org's provider", func() error {
			// The service refuses this by name; the store refuses it by row.
			_, err := s.CreateRoute(ctx, config.Route{Name: "orgs/acme/projects/web/routes/rt1", Model: "m", Provider: "orgs/beta/providers/local", UpstreamModel: "u"}, "", audit("CreateRoute"))
			return err
		}, func(err error) bool { return errors.As(err, &verr) && verr.Field == "route.provider" }, "does not exist"},
		{"duplicate org", func() error {
			_, err := s.CreateOrganization(ctx, config.Organization{Name: "orgs/acme"}, "", audit("CreateOrganization"))
			return err
		}, isErr(config.ErrAlreadyExists), "orgs/acme"},
		{"duplicate project", func() error {
			_, err := s.CreateProject(ctx, config.Project{Name: "orgs/acme/projects/web"}, "", audit("CreateProject"))
			return err
		}, isErr(config.ErrAlreadyExists), "orgs/acme/projects/web"},
		{"duplicate provider", func() error {
			_, err := s.CreateProvider(ctx, config.Provider{Name: "orgs/acme/providers/openai", Type: config.ProviderOpenAICompatible, BaseURL: "http://x"}, "", audit("CreateProvider"))
			return err
		}, isErr(config.ErrAlreadyExists), "orgs/acme/providers/openai"},
		{"duplicate route id", func() error {
			_, err := s.CreateRoute(ctx, config.Route{Name: "orgs/acme/projects/web/routes/gpt", Model: "other", Provider: "orgs/acme/providers/openai", UpstreamModel: "u"}, "", audit("CreateRoute"))
			return err
		}, isErr(config.ErrAlreadyExists), "route orgs/acme/projects/web/routes/gpt"},
		{"duplicate route model", func() error {
			_, err := s.CreateRoute(ctx, config.Route{Name: "orgs/acme/projects/web/routes/rt2", Model: "gpt", Provider: "orgs/acme/providers/openai", UpstreamModel: "u"}, "", audit("CreateRoute"))
			return err
		}, isErr(config.ErrAlreadyExists), `model "gpt"`},
		{"model taken by update", func() error {
			must[config.Route](t)(s.CreateRoute(ctx, config.Route{Name: "orgs/acme/projects/web/routes/rt3", Model: "m3", Provider: "orgs/acme/providers/openai", UpstreamModel: "u"}, "", audit("CreateRoute")))
			_, err := s.UpdateRoute(ctx, "orgs/acme/projects/web/routes/rt3", func(r *config.Route) error { r.Model = "gpt"; return nil }, audit("UpdateRoute"))
			return err
		}, isErr(config.ErrAlreadyExists), `model "gpt"`},
		{"update of a missing route", func() error {
			_, err := s.UpdateRoute(ctx, "orgs/acme/projects/web/routes/nope", func(*config.Route) error { return nil }, audit("UpdateRoute"))
			return err
		}, isErr(config.ErrNotFound), "route orgs/acme/projects/web/routes/nope"},
		{"list of a missing org", func() error { _, _, err := s.Projects(ctx, "orgs/nope", config.Page{Size: 10}); return err },
			isErr(config.ErrNotFound), "orgs/nope"},
		{"list of a missing project", func() error {
			_, _, err := s.Routes(ctx, "orgs/acme/projects/nope", config.Page{Size: 10})
			return err
		}, isErr(config.ErrNotFound), "orgs/acme/projects/nope"},
	}
	for _, tt := range tests {
		err := tt.call()
		if err == nil || !tt.is(err) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want an error of the right kind mentioning %q", tt.name, err, tt.want)
		}
	}

	// The same model in another project is fine.
	must[config.Route](t)(s.CreateRoute(ctx, config.Route{Name: "orgs/acme/projects/api/routes/gpt", Model: "gpt", Provider: "orgs/acme/providers/openai", UpstreamModel: "u"}, "", audit("CreateRoute")))
}

func isErr(target error) func(error) bool {
	return func(err error) bool { return errors.Is(err, target) }
}

func TestPagination(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	ctx := context.Background()
	var want []string
	for _, id := range []string{"org-e", "org-a", "org-d", "org-b", "org-c"} {
		o := must[config.Organization](t)(s.CreateOrganization(ctx, config.Organization{Name: "orgs/" + id}, "", audit("CreateOrganization")))
		want = append(want, o.Name)
	}
	if err := s.DeleteOrganization(ctx, "orgs/org-d", audit("DeleteOrganization")); err != nil {
		t.Fatal(err)
	}
	want = append(want[:2], want[3:]...)

	var got []string
	p := config.Page{Size: 2}
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		items, next, err := s.Organizations(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range items {
			got = append(got, o.Name)
		}
		if next == "" {
			break
		}
		p.After = next
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("organizations in creation order mismatch (-want +got):\n%s", diff)
	}
}

func TestSnapshotAndChanges(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	ctx := context.Background()

	empty := must[config.Snapshot](t)(s.Snapshot(ctx))
	if empty.Version != 0 || len(empty.Organizations) != 0 {
		t.Errorf("Snapshot of an empty database = %+v, want version 0 and nothing", empty)
	}

	seed(t, s)
	snap := must[config.Snapshot](t)(s.Snapshot(ctx))
	if len(snap.Organizations) != 1 || len(snap.Projects) != 1 || len(snap.Providers) != 1 || len(snap.Routes) != 1 {
		t.Fatalf("Snapshot = %+v, want one of each", snap)
	}
	if snap.Providers[0].Credential == nil || snap.Providers[0].Credential.KEKID != "k1" {
		t.Errorf("snapshot provider credential = %+v, want the sealed credential", snap.Providers[0].Credential)
	}
	if snap.Version != snap.Routes[0].Version {
		t.Errorf("snapshot version = %d, want the latest change %d", snap.Version, snap.Routes[0].Version)
	}
	if got := must[[]config.Change](t)(s.Changes(ctx, snap.Version, 100)); len(got) != 0 {
		t.Errorf("Changes after the snapshot = %+v, want none", got)
	}

	// Change the organization (an old row), delete the route, add a project.
	must[config.Organization](t)(s.UpdateOrganization(ctx, "orgs/acme", func(o *config.Organization) error { o.DisplayName = "x"; return nil }, audit("UpdateOrganization")))
	if err := s.DeleteRoute(ctx, "orgs/acme/projects/web/routes/gpt", audit("DeleteRoute")); err != nil {
		t.Fatal(err)
	}
	must[config.Project](t)(s.CreateProject(ctx, config.Project{Name: "orgs/acme/projects/api"}, "", audit("CreateProject")))

	changes := must[[]config.Change](t)(s.Changes(ctx, snap.Version, 100))
	type brief struct {
		Name    string
		Deleted bool
		Kind    string
	}
	var got []brief
	last := snap.Version
	for _, c := range changes {
		if c.Version <= last {
			t.Errorf("change versions not increasing: %d after %d", c.Version, last)
		}
		last = c.Version
		kind := ""
		switch {
		case c.Organization != nil:
			kind = "organization"
		case c.Project != nil:
			kind = "project"
		case c.Route != nil:
			kind = "route"
		case c.Provider != nil:
			kind = "provider"
		}
		got = append(got, brief{c.Name, c.Deleted, kind})
	}
	want := []brief{
		{"orgs/acme", false, "organization"},
		{"orgs/acme/projects/web/routes/gpt", true, ""},
		{"orgs/acme/projects/api", false, "project"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Changes mismatch (-want +got):\n%s", diff)
	}

	// A limit cuts the list without skipping anything.
	first := must[[]config.Change](t)(s.Changes(ctx, snap.Version, 2))
	rest := must[[]config.Change](t)(s.Changes(ctx, first[len(first)-1].Version, 2))
	if diff := cmp.Diff(changes, append(first, rest...)); diff != "" {
		t.Errorf("Changes in pages of 2 mismatch (-all +paged):\n%s", diff)
	}
	if after := must[config.Snapshot](t)(s.Snapshot(ctx)); after.Version != last || len(after.Routes) != 0 || len(after.Projects) != 2 {
		t.Errorf("Snapshot after changes = version %d, %d routes, %d projects; want %d, 0, 2", after.Version, len(after.Routes), len(after.Projects), last)
	}
}

func TestMigrationsRoundTrip(t *testing.T) {
	t.Parallel()
	_, pool := newStore(t)
	ctx := context.Background()
	sets := []pg.Migrations{events.Migrations, postgres.Migrations}
	if err := pg.MigrateDown(ctx, pool, sets...); err != nil {
		t.Fatalf("migrate down: %v", err)
	}
	if err := pg.Migrate(ctx, pool, sets...); err != nil {
		t.Fatalf("migrate up again: %v", err)
	}
}

// migrationsBefore returns the config migrations older than version (a
// file name prefix such as "00003"): the schema an older release left.
func migrationsBefore(t *testing.T, version string) pg.Migrations {
	t.Helper()
	names, err := fs.Glob(postgres.Migrations.FS, "*.sql")
	if err != nil {
		t.Fatal(err)
	}
	old := fstest.MapFS{}
	for _, n := range names {
		if n >= version {
			continue
		}
		b, err := fs.ReadFile(postgres.Migrations.FS, n)
		if err != nil {
			t.Fatal(err)
		}
		old[n] = &fstest.MapFile{Data: b}
	}
	return pg.Migrations{Name: postgres.Migrations.Name, FS: old}
}

// Migration 00003 makes organization and project ids unique over deleted
// rows too. A database where an id was already used again cannot take
// that; the migration must say so by name and change nothing, rather than
// fail on an index build.
func TestMigrationRetiresDeletedIDs(t *testing.T) {
	t.Parallel()
	const (
		acme = "'0190b0a4-7c2e-7000-8000-00000000000a'"
		beta = "'0190b0a4-7c2e-7000-8000-00000000000b'"
	)
	tests := []struct {
		name string
		seed string
		want string // in the migration error; "" for success
	}{
		{"organization id used again",
			`INSERT INTO organizations (id, name, deleted_at) VALUES (gen_random_uuid(), 'acme', now()), (` + acme + `, 'acme', NULL);
			 INSERT INTO organizations (id, name, deleted_at) VALUES (gen_random_uuid(), 'beta', now()), (gen_random_uuid(), 'beta', now());`,
			"organization ids were used again after a deletion: orgs/acme, orgs/beta"},
		{"project id used again",
			`INSERT INTO organizations (id, name) VALUES (` + acme + `, 'acme');
			 INSERT INTO projects (id, organization_id, name, deleted_at)
			 VALUES (gen_random_uuid(), ` + acme + `, 'web', now()), (gen_random_uuid(), ` + acme + `, 'web', NULL),
			        (gen_random_uuid(), ` + acme + `, 'api', NULL);`,
			"project ids were used again after a deletion: orgs/acme/projects/web"},
		{"deleted ids not used again",
			`INSERT INTO organizations (id, name, deleted_at) VALUES (gen_random_uuid(), 'acme', now()), (` + beta + `, 'beta', NULL);
			 INSERT INTO projects (id, organization_id, name, deleted_at) VALUES (gen_random_uuid(), ` + beta + `, 'web', now());`,
			""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			old := migrationsBefore(t, "00003")
			pool, _ := pgtest.NewDatabase(t, events.Migrations, old)
			if _, err := pool.Exec(ctx, tt.seed); err != nil {
				t.Fatalf("seed the old schema: %v", err)
			}
			err := pg.Migrate(ctx, pool, events.Migrations, postgres.Migrations)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("migrate: %v", err)
				}
				s := postgres.NewStore(pool, nil)
				if _, err := s.CreateOrganization(ctx, config.Organization{Name: "orgs/acme"}, "", audit("CreateOrganization")); !errors.Is(err, config.ErrAlreadyExists) {
					t.Errorf("CreateOrganization of a deleted id after the migration = %v, want ErrAlreadyExists", err)
				}
				if _, err := s.CreateProject(ctx, config.Project{Name: "orgs/beta/projects/web"}, "", audit("CreateProject")); !errors.Is(err, config.ErrAlreadyExists) {
					t.Errorf("CreateProject of a deleted id after the migration = %v, want ErrAlreadyExists", err)
				}
				return
			}
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || !strings.Contains(pe.Message, tt.want) || pe.Hint == "" {
				t.Fatalf("migrate = %v, want a PostgreSQL error saying %q, with a hint", err, tt.want)
			}
			if err := pg.CheckMigrated(ctx, pool, postgres.Migrations); !errors.Is(err, pg.ErrSchemaBehind) {
				t.Errorf("schema after the refused migration: %v, want it left behind (ErrSchemaBehind)", err)
			}
		})
	}
}

// The settings of each type are stored and read back as set, and the
// database refuses settings of another type than the row's.
func TestProviderSettings(t *testing.T) {
	t.Parallel()
	s, pool := newStore(t)
	ctx := context.Background()
	seed(t, s)
	ignore := cmpopts.IgnoreFields(config.Provider{}, "CreateTime", "UpdateTime", "Version")
	providers := []config.Provider{
		{Name: "orgs/acme/providers/azure", Type: config.ProviderAzureOpenAI, BaseURL: "https://myres.openai.azure.com",
			Azure: &config.AzureSettings{APIVersion: "2024-10-21"}},
		{Name: "orgs/acme/providers/azure-v1", Type: config.ProviderAzureOpenAI, BaseURL: "https://myres.openai.azure.com",
			Azure: &config.AzureSettings{}},
		{Name: "orgs/acme/providers/vertex", Type: config.ProviderVertexAI,
			Vertex:     &config.VertexSettings{Project: "my-project", Location: "global"},
			Credential: &config.Sealed{KEKID: "k1", WrappedKey: []byte("w"), Ciphertext: []byte("c")}},
		{Name: "orgs/acme/providers/bedrock", Type: config.ProviderBedrock, Bedrock: &config.BedrockSettings{Region: "us-east-1"}},
		{Name: "orgs/acme/providers/anthropic", Type: config.ProviderAnthropic},
	}
	for _, p := range providers {
		created := must[config.Provider](t)(s.CreateProvider(ctx, p, "", audit("CreateProvider")))
		if diff := cmp.Diff(p, created, ignore); diff != "" {
			t.Errorf("CreateProvider %s mismatch (-want +got):\n%s", p.Name, diff)
		}
		if diff := cmp.Diff(p, must[config.Provider](t)(s.Provider(ctx, p.Name)), ignore); diff != "" {
			t.Errorf("Provider %s mismatch (-want +got):\n%s", p.Name, diff)
		}
	}
	changed := must[config.Provider](t)(s.UpdateProvider(ctx, "orgs/acme/providers/vertex", func(p *config.Provider) error {
		p.Type, p.Vertex, p.Bedrock, p.Credential = config.ProviderBedrock, nil, &config.BedrockSettings{Region: "eu-west-1"}, nil
		return nil
	}, audit("UpdateProvider")))
	want := config.Provider{Name: "orgs/acme/providers/vertex", Type: config.ProviderBedrock, Bedrock: &config.BedrockSettings{Region: "eu-west-1"}}
	if diff := cmp.Diff(want, changed, ignore); diff != "" {
		t.Errorf("UpdateProvider mismatch (-want +got):\n%s", diff)
	}
	snap := must[config.Snapshot](t)(s.Snapshot(ctx))
	if len(snap.Providers) != len(providers)+1 || snap.Providers[1].Azure == nil || snap.Providers[1].Azure.APIVersion != "2024-10-21" {
		t.Errorf("Snapshot providers = %+v, want every provider with its settings", snap.Providers)
	}

	for _, sql := range []string{
		`UPDATE providers SET vertex_project = 'p', vertex_location = 'global' WHERE name = 'anthropic'`,
		`UPDATE providers SET azure_api_version = '' WHERE name = 'bedrock'`,
		`UPDATE providers SET bedrock_region = 'us-east-1' WHERE name = 'azure'`,
		`UPDATE providers SET type = 'vertex_ai', azure_api_version = NULL, vertex_project = 'p' WHERE name = 'azure-v1'`,
		`UPDATE providers SET type = 'cohere' WHERE name = 'anthropic'`,
	} {
		var pe *pgconn.PgError
		if _, err := pool.Exec(ctx, sql); !errors.As(err, &pe) || pe.Code != "23514" {
			t.Errorf("%s = %v, want a check violation", sql, err)
		}
	}
}

// Migration 00004 keeps the providers an older release stored, without
// settings; migrating back down is refused while providers of the new
// types are live, naming them.
func TestMigrationProviderTypes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := pgtest.NewDatabase(t, events.Migrations, migrationsBefore(t, "00004"))
	if _, err := pool.Exec(ctx, `
		INSERT INTO organizations (id, name) VALUES ('0190b0a4-7c2e-7000-8000-00000000000a', 'acme');
		INSERT INTO providers (id, organization_id, name, type, base_url)
		VALUES ('0190b0a4-7c2e-7000-8000-0000000000b1', '0190b0a4-7c2e-7000-8000-00000000000a', 'old', 'openai_compatible', 'http://x');`); err != nil {
		t.Fatalf("seed the old schema: %v", err)
	}
	if err := pg.Migrate(ctx, pool, events.Migrations, postgres.Migrations); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	s := postgres.NewStore(pool, nil)
	old := must[config.Provider](t)(s.Provider(ctx, "orgs/acme/providers/old"))
	if old.Type != config.ProviderOpenAICompatible || old.BaseURL != "http://x" || old.Azure != nil || old.Vertex != nil || old.Bedrock != nil {
		t.Errorf("provider from before the migration = %+v, want it unchanged, without settings", old)
	}
	must[config.Provider](t)(s.CreateProvider(ctx, config.Provider{Name: "orgs/acme/providers/claude", Type: config.ProviderAnthropic}, "", audit("CreateProvider")))
	err := pg.MigrateDown(ctx, pool, postgres.Migrations)
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || !strings.Contains(pe.Message, "orgs/acme/providers/claude") || pe.Hint == "" {
		t.Fatalf("migrate down = %v, want a PostgreSQL error naming orgs/acme/providers/claude, with a hint", err)
	}
	if err := s.DeleteProvider(ctx, "orgs/acme/providers/claude", audit("DeleteProvider")); err != nil {
		t.Fatal(err)
	}
	if err := pg.MigrateDown(ctx, pool, postgres.Migrations); err != nil {
		t.Fatalf("migrate down without live providers of the new types: %v", err)
	}
}
