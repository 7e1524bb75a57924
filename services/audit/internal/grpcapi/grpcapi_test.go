package grpcapi_test

import (
	"context"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/moat-ai/moat/libs/authn"
	"github.com/moat-ai/moat/libs/authn/authntest"
	"github.com/moat-ai/moat/libs/events"
	"github.com/moat-ai/moat/libs/pg"
	"github.com/moat-ai/moat/libs/pg/pgtest"
	auditv1 "github.com/moat-ai/moat/proto/gen/go/moat/audit/v1"
	identityv1 "github.com/moat-ai/moat/proto/gen/go/moat/identity/v1"
	"github.com/moat-ai/moat/services/audit/internal/audit"
	"github.com/moat-ai/moat/services/audit/internal/grpcapi"
	"github.com/moat-ai/moat/services/audit/internal/postgres"
)

var base = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// fixture is a served AuditService over a log of known records, and the
// keys to call it with; the users of tenancyUsers may call it too.
type fixture struct {
	client     auditv1.AuditServiceClient
	adminKey   string
	projectKey string // a project key of orgs/acme/projects/web
	records    []audit.Record
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	pool, _ := pgtest.NewDatabase(t, events.Migrations, postgres.Migrations)

	// orgs/acme has 6 records (two sharing an event time), orgs/umbrella 3,
	// and 2 platform-level records belong to no organization.
	var records []audit.Record
	add := func(org string, minute int, outcome audit.Outcome, status string) {
		records = append(records, audit.Record{
			EventID: uuid.Must(uuid.NewV7()), Organization: org, Actor: "keys/k1",
			Action: "moat.config.v1.ConfigService.UpdateRoute", Target: org + "/projects/web/routes/r1",
			Outcome: outcome, Status: status, SourceAddress: "192.0.2.1", RequestID: "r",
			EventTime: base.Add(time.Duration(minute) * time.Minute), Producer: "moat/config",
		})
	}
	add("orgs/acme", 1, audit.OutcomeAllowed, "OK")
	add("orgs/umbrella", 1, audit.OutcomeAllowed, "OK")
	add("", 2, audit.OutcomeAllowed, "OK")
	add("orgs/acme", 2, audit.OutcomeDenied, "PERMISSION_DENIED")
	add("orgs/acme", 3, audit.OutcomeFailed, "INTERNAL")
	add("orgs/acme", 3, audit.OutcomeAllowed, "OK")
	add("orgs/umbrella", 4, audit.OutcomeDenied, "UNAUTHENTICATED")
	add("orgs/acme", 5, audit.OutcomeAllowed, "OK")
	add("", 6, audit.OutcomeDenied, "UNAUTHENTICATED")
	add("orgs/acme", 7, audit.OutcomeAllowed, "OK")
	add("orgs/umbrella", 8, audit.OutcomeAllowed, "OK")
	if err := pg.InTx(ctx, pool, func(tx pgx.Tx) error {
		for _, r := range records {
			env := audit.Envelope{Subject: "config.v1.audit_event.recorded", Type: "moat.audit.v1.AuditEvent", Payload: []byte{1}}
			if _, err := postgres.InsertRecord(ctx, tx, r, env); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	h := authntest.Hasher(t)
	adminKey, projectKey := authntest.Key(t), authntest.Key(t)
	ix := authn.NewIndex(h)
	ix.Replace(1, []*identityv1.KeyIndexEntry{
		authntest.Entry(h, "admin", adminKey, identityv1.KeyIndexEntry_ROLE_PLATFORM_ADMIN, "", ""),
		authntest.Entry(h, "web", projectKey, identityv1.KeyIndexEntry_ROLE_PROJECT, "orgs/acme", "orgs/acme/projects/web"),
	}, tenancyMemberships()...)
	ic := &authn.Interceptor{Auth: ix, Tokens: tenancyTokens()}
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(ic.Unary()))
	auditv1.RegisterAuditServiceServer(srv, grpcapi.New(audit.NewService(postgres.NewStore(pool)), slog.New(slog.DiscardHandler)))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &fixture{client: auditv1.NewAuditServiceClient(conn), adminKey: adminKey, projectKey: projectKey, records: records}
}

func as(key string) context.Context {
	if key == "" {
		return context.Background()
	}
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+key)
}

var outcomes = map[audit.Outcome]auditv1.AuditEvent_Outcome{
	audit.OutcomeAllowed: auditv1.AuditEvent_OUTCOME_ALLOWED,
	audit.OutcomeDenied:  auditv1.AuditEvent_OUTCOME_DENIED,
	audit.OutcomeFailed:  auditv1.AuditEvent_OUTCOME_FAILED,
}

// want returns the fixture's records of org as the API returns them,
// newest first by (event_time, event_id).
func (f *fixture) want(org string) []*auditv1.AuditEvent {
	var out []*auditv1.AuditEvent
	for _, r := range f.records {
		if r.Organization != org {
			continue
		}
		out = append(out, &auditv1.AuditEvent{
			Name: org + "/auditEvents/" + r.EventID.String(), Organization: org, Actor: r.Actor, Action: r.Action,
			Target: r.Target, Outcome: outcomes[r.Outcome], Status: r.Status, SourceAddress: r.SourceAddress,
			RequestId: r.RequestID, EventTime: timestamppb.New(r.EventTime), Producer: r.Producer,
		})
	}
	slices.SortFunc(out, func(a, b *auditv1.AuditEvent) int {
		if c := b.GetEventTime().AsTime().Compare(a.GetEventTime().AsTime()); c != 0 {
			return c
		}
		return strings.Compare(b.GetName(), a.GetName())
	})
	return out
}

func (f *fixture) listAll(t *testing.T, parent string, pageSize int32) ([]*auditv1.AuditEvent, int) {
	t.Helper()
	var all []*auditv1.AuditEvent
	token, pages := "", 0
	for {
		resp, err := f.client.ListAuditEvents(as(f.adminKey), &auditv1.ListAuditEventsRequest{Parent: parent, PageSize: pageSize, PageToken: token})
		if err != nil {
			t.Fatalf("ListAuditEvents(%s, page %d) = %v", parent, pages+1, err)
		}
		pages++
		all = append(all, resp.GetAuditEvents()...)
		if token = resp.GetNextPageToken(); token == "" {
			return all, pages
		}
		if pages > 100 {
			t.Fatal("pagination does not end")
		}
	}
}

func TestListAuditEvents(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	tests := []struct {
		parent    string
		pageSize  int32
		wantLen   int
		wantPages int
	}{
		{"orgs/acme", 0, 6, 1},
		{"orgs/acme", 4, 6, 2},
		{"orgs/acme", 3, 6, 2},
		{"orgs/acme", 1, 6, 6},
		{"orgs/umbrella", 2, 3, 2},
		{"orgs/nobody", 0, 0, 1},
	}
	for _, tt := range tests {
		got, pages := f.listAll(t, tt.parent, tt.pageSize)
		if diff := cmp.Diff(f.want(tt.parent), got, protocmp.Transform(), protocmp.IgnoreFields(&auditv1.AuditEvent{}, "record_time")); diff != "" {
			t.Errorf("ListAuditEvents(%s, page_size %d) mismatch (-want +got):\n%s", tt.parent, tt.pageSize, diff)
		}
		if len(got) != tt.wantLen || pages != tt.wantPages {
			t.Errorf("ListAuditEvents(%s, page_size %d) = %d events in %d pages, want %d in %d",
				tt.parent, tt.pageSize, len(got), pages, tt.wantLen, tt.wantPages)
		}
		for _, e := range got {
			if !e.GetRecordTime().IsValid() || e.GetRecordTime().AsTime().IsZero() {
				t.Errorf("event %s has no record_time", e.GetName())
			}
		}
	}
}

// TestTenantIsolation checks that one organization's list never shows
// another's records or platform-level ones, that a page token does not
// cross organizations, and that a project key reads nothing.
func TestTenantIsolation(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for _, org := range []string{"orgs/acme", "orgs/umbrella"} {
		got, _ := f.listAll(t, org, 2)
		for _, e := range got {
			if e.GetOrganization() != org || !strings.HasPrefix(e.GetName(), org+"/auditEvents/") {
				t.Errorf("ListAuditEvents(%s) returned %s of %q", org, e.GetName(), e.GetOrganization())
			}
		}
	}
	resp, err := f.client.ListAuditEvents(as(f.adminKey), &auditv1.ListAuditEventsRequest{Parent: "orgs/acme", PageSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.client.ListAuditEvents(as(f.adminKey), &auditv1.ListAuditEventsRequest{Parent: "orgs/umbrella", PageToken: resp.GetNextPageToken()})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("ListAuditEvents(umbrella, acme's token) = %v, want InvalidArgument", err)
	}
	for _, parent := range []string{"orgs/acme", "orgs/umbrella"} {
		_, err := f.client.ListAuditEvents(as(f.projectKey), &auditv1.ListAuditEventsRequest{Parent: parent})
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("ListAuditEvents(%s) with a project key = %v, want PermissionDenied", parent, err)
		}
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	tests := []struct {
		name string
		key  string
		req  *auditv1.ListAuditEventsRequest
		want codes.Code
	}{
		{"no key", "", &auditv1.ListAuditEventsRequest{Parent: "orgs/acme"}, codes.Unauthenticated},
		{"unknown key", authntest.Key(t), &auditv1.ListAuditEventsRequest{Parent: "orgs/acme"}, codes.Unauthenticated},
		{"not a key", "hunter2", &auditv1.ListAuditEventsRequest{Parent: "orgs/acme"}, codes.Unauthenticated},
		{"project key", f.projectKey, &auditv1.ListAuditEventsRequest{Parent: "orgs/acme"}, codes.PermissionDenied},
		{"empty parent", f.adminKey, &auditv1.ListAuditEventsRequest{}, codes.InvalidArgument},
		{"platform-level parent", f.adminKey, &auditv1.ListAuditEventsRequest{Parent: "orgs/"}, codes.InvalidArgument},
		{"project parent", f.adminKey, &auditv1.ListAuditEventsRequest{Parent: "orgs/acme/projects/web"}, codes.InvalidArgument},
		{"negative page size", f.adminKey, &auditv1.ListAuditEventsRequest{Parent: "orgs/acme", PageSize: -5}, codes.InvalidArgument},
		{"garbage page token", f.adminKey, &auditv1.ListAuditEventsRequest{Parent: "orgs/acme", PageToken: "!!"}, codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp, err := f.client.ListAuditEvents(as(tt.key), tt.req)
			if status.Code(err) != tt.want || resp != nil {
				t.Errorf("ListAuditEvents(%v) = %v, %v; want %v", tt.req, resp, err, tt.want)
			}
		})
	}
}
