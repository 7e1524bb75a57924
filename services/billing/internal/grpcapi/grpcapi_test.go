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
	billingv1 "github.com/moat-ai/moat/proto/gen/go/moat/billing/v1"
	identityv1 "github.com/moat-ai/moat/proto/gen/go/moat/identity/v1"
	"github.com/moat-ai/moat/services/billing/internal/billing"
	"github.com/moat-ai/moat/services/billing/internal/grpcapi"
	"github.com/moat-ai/moat/services/billing/internal/postgres"
)

var base = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// fixture is a served BillingService over a ledger of known entries, and
// the keys to call it with; the users of tenancyUsers may call it too.
type fixture struct {
	client     billingv1.BillingServiceClient
	adminKey   string
	projectKey string // a project key of orgs/acme/projects/web
	entries    []billing.Entry
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	pool, _ := pgtest.NewDatabase(t, events.Migrations, postgres.Migrations)

	// orgs/acme: web has 5 entries (two sharing a request time), api has 3;
	// orgs/umbrella has 3 that must never show under acme.
	var entries []billing.Entry
	add := func(project string, minute int, model string, in, out, cost int64, priced bool) {
		org := strings.Join(strings.Split(project, "/")[:2], "/")
		entries = append(entries, billing.Entry{
			EventID: uuid.Must(uuid.NewV7()), Organization: org, Project: project, KeyID: "k-" + project[len(project)-3:],
			Model: "chat", UpstreamModel: model, Provider: org + "/providers/p1",
			InputTokens: in, OutputTokens: out, CostMicros: cost, Currency: "USD", Priced: priced, PriceVersion: "v1",
			HTTPStatus: 200, RequestTime: base.Add(time.Duration(minute) * time.Minute),
		})
	}
	add("orgs/acme/projects/web", 1, "mock-model", 10, 20, 50, true)
	add("orgs/acme/projects/web", 2, "mock-model", 1, 2, 5, true)
	add("orgs/acme/projects/api", 3, "mock-model", 100, 0, 100, true)
	add("orgs/acme/projects/web", 4, "unknown", 7, 7, 0, false)
	add("orgs/acme/projects/web", 4, "mock-model", 1000, 1000, 3000, true)
	add("orgs/acme/projects/api", 5, "mock-model", 3, 3, 9, true)
	add("orgs/acme/projects/web", 6, "mock-model", 2, 0, 2, true)
	add("orgs/umbrella/projects/web", 2, "mock-model", 9999, 9999, 99999, true)
	add("orgs/umbrella/projects/web", 5, "unknown", 1, 1, 0, false)
	add("orgs/umbrella/projects/lab", 7, "mock-model", 5, 5, 15, true)
	// One entry with every token kind, and estimated usage.
	add("orgs/acme/projects/api", 8, "mock-model", 50, 40, 200, true)
	kinds := &entries[len(entries)-1]
	kinds.CacheReadInputTokens, kinds.CacheWriteInputTokens, kinds.ReasoningTokens, kinds.UsageEstimated = 300, 30, 25, true
	if err := pg.InTx(ctx, pool, func(tx pgx.Tx) error {
		for _, e := range entries {
			if _, err := postgres.InsertEntry(ctx, tx, e); err != nil {
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
	billingv1.RegisterBillingServiceServer(srv, grpcapi.New(billing.NewService(postgres.NewStore(pool), "USD"), slog.New(slog.DiscardHandler)))
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
	return &fixture{client: billingv1.NewBillingServiceClient(conn), adminKey: adminKey, projectKey: projectKey, entries: entries}
}

func as(key string) context.Context {
	ctx := context.Background()
	if key == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
}

// want returns the fixture's entries under parent as the API returns them,
// newest first.
func (f *fixture) want(parent string) []*billingv1.UsageEntry {
	var out []*billingv1.UsageEntry
	for _, e := range f.entries {
		if e.Organization != parent && e.Project != parent {
			continue
		}
		out = append(out, &billingv1.UsageEntry{
			Name: e.Organization + "/usageEntries/" + e.EventID.String(), Project: e.Project, KeyId: e.KeyID,
			Model: e.Model, UpstreamModel: e.UpstreamModel, InputTokens: e.InputTokens, OutputTokens: e.OutputTokens,
			CacheReadInputTokens: e.CacheReadInputTokens, CacheWriteInputTokens: e.CacheWriteInputTokens,
			ReasoningTokens: e.ReasoningTokens, UsageEstimated: e.UsageEstimated,
			CostMicros: e.CostMicros, CurrencyCode: e.Currency, Priced: e.Priced, PriceVersion: e.PriceVersion,
			RequestTime: timestamppb.New(e.RequestTime),
		})
	}
	// Newest first by (request_time, event_id); within a parent the names
	// differ only in the event id, whose text order is its byte order.
	slices.SortFunc(out, func(a, b *billingv1.UsageEntry) int {
		if c := b.GetRequestTime().AsTime().Compare(a.GetRequestTime().AsTime()); c != 0 {
			return c
		}
		return strings.Compare(b.GetName(), a.GetName())
	})
	return out
}

// listAll pages through parent with pageSize and returns every entry.
func (f *fixture) listAll(t *testing.T, parent string, pageSize int32) ([]*billingv1.UsageEntry, int) {
	t.Helper()
	var all []*billingv1.UsageEntry
	token, pages := "", 0
	for {
		resp, err := f.client.ListUsageEntries(as(f.adminKey), &billingv1.ListUsageEntriesRequest{Parent: parent, PageSize: pageSize, PageToken: token})
		if err != nil {
			t.Fatalf("ListUsageEntries(%s, page %d) = %v", parent, pages+1, err)
		}
		pages++
		all = append(all, resp.GetUsageEntries()...)
		if token = resp.GetNextPageToken(); token == "" {
			return all, pages
		}
		if pages > 100 {
			t.Fatal("pagination does not end")
		}
	}
}

var ignoreRecordTime = protocmp.IgnoreFields(&billingv1.UsageEntry{}, "record_time")

func TestListUsageEntries(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	tests := []struct {
		parent    string
		pageSize  int32
		wantLen   int
		wantPages int
	}{
		{"orgs/acme", 0, 8, 1},
		{"orgs/acme", 3, 8, 3},
		{"orgs/acme", 8, 8, 1},
		{"orgs/acme", 1, 8, 8},
		{"orgs/acme/projects/web", 2, 5, 3},
		{"orgs/acme/projects/api", 0, 3, 1},
		{"orgs/umbrella", 2, 3, 2},
		{"orgs/nobody", 0, 0, 1},
		{"orgs/acme/projects/nothing", 0, 0, 1},
	}
	for _, tt := range tests {
		got, pages := f.listAll(t, tt.parent, tt.pageSize)
		if diff := cmp.Diff(f.want(tt.parent), got, protocmp.Transform(), ignoreRecordTime); diff != "" {
			t.Errorf("ListUsageEntries(%s, page_size %d) mismatch (-want +got):\n%s", tt.parent, tt.pageSize, diff)
		}
		if len(got) != tt.wantLen || pages != tt.wantPages {
			t.Errorf("ListUsageEntries(%s, page_size %d) = %d entries in %d pages, want %d in %d",
				tt.parent, tt.pageSize, len(got), pages, tt.wantLen, tt.wantPages)
		}
		for _, e := range got {
			if !e.GetRecordTime().IsValid() || e.GetRecordTime().AsTime().IsZero() {
				t.Errorf("entry %s has no record_time", e.GetName())
			}
		}
	}
}

func TestGetUsageTotals(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	tests := []struct {
		parent string
		want   *billingv1.UsageTotals
	}{
		{"orgs/acme", &billingv1.UsageTotals{EntryCount: 8, InputTokens: 1173, CacheReadInputTokens: 300, CacheWriteInputTokens: 30,
			OutputTokens: 1072, ReasoningTokens: 25, CostMicros: 3366, CurrencyCode: "USD", UnpricedCount: 1, EstimatedCount: 1}},
		{"orgs/acme/projects/web", &billingv1.UsageTotals{EntryCount: 5, InputTokens: 1020, OutputTokens: 1029, CostMicros: 3057, CurrencyCode: "USD", UnpricedCount: 1}},
		{"orgs/acme/projects/api", &billingv1.UsageTotals{EntryCount: 3, InputTokens: 153, CacheReadInputTokens: 300, CacheWriteInputTokens: 30,
			OutputTokens: 43, ReasoningTokens: 25, CostMicros: 309, CurrencyCode: "USD", EstimatedCount: 1}},
		{"orgs/umbrella", &billingv1.UsageTotals{EntryCount: 3, InputTokens: 10005, OutputTokens: 10005, CostMicros: 100014, CurrencyCode: "USD", UnpricedCount: 1}},
		{"orgs/nobody", &billingv1.UsageTotals{CurrencyCode: "USD"}},
	}
	for _, tt := range tests {
		resp, err := f.client.GetUsageTotals(as(f.adminKey), &billingv1.GetUsageTotalsRequest{Parent: tt.parent})
		if err != nil {
			t.Fatalf("GetUsageTotals(%s) = %v", tt.parent, err)
		}
		if diff := cmp.Diff(tt.want, resp.GetTotals(), protocmp.Transform()); diff != "" {
			t.Errorf("GetUsageTotals(%s) mismatch (-want +got):\n%s", tt.parent, diff)
		}
	}
}

// TestTenantIsolation lists every scope of one tenant and checks that no
// entry of the other appears, and that a project key of acme reaches
// nothing at all, its own project included (usage is an admin API).
func TestTenantIsolation(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for _, parent := range []string{"orgs/acme", "orgs/acme/projects/web", "orgs/acme/projects/api"} {
		got, _ := f.listAll(t, parent, 2)
		for _, e := range got {
			if !strings.HasPrefix(e.GetProject(), "orgs/acme/") || !strings.HasPrefix(e.GetName(), "orgs/acme/usageEntries/") {
				t.Errorf("ListUsageEntries(%s) returned %s of %s", parent, e.GetName(), e.GetProject())
			}
		}
	}
	// A page token of acme does not open umbrella's ledger.
	resp, err := f.client.ListUsageEntries(as(f.adminKey), &billingv1.ListUsageEntriesRequest{Parent: "orgs/acme", PageSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.client.ListUsageEntries(as(f.adminKey), &billingv1.ListUsageEntriesRequest{Parent: "orgs/umbrella", PageToken: resp.GetNextPageToken()})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("ListUsageEntries(umbrella, acme's token) = %v, want InvalidArgument", err)
	}

	for _, parent := range []string{"orgs/acme", "orgs/acme/projects/web", "orgs/umbrella", "orgs/umbrella/projects/web"} {
		_, err := f.client.ListUsageEntries(as(f.projectKey), &billingv1.ListUsageEntriesRequest{Parent: parent})
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("ListUsageEntries(%s) with a project key = %v, want PermissionDenied", parent, err)
		}
		_, err = f.client.GetUsageTotals(as(f.projectKey), &billingv1.GetUsageTotalsRequest{Parent: parent})
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("GetUsageTotals(%s) with a project key = %v, want PermissionDenied", parent, err)
		}
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	unknownKey := authntest.Key(t)
	tests := []struct {
		name  string
		key   string
		list  *billingv1.ListUsageEntriesRequest
		total *billingv1.GetUsageTotalsRequest
		want  codes.Code
	}{
		{"no key", "", &billingv1.ListUsageEntriesRequest{Parent: "orgs/acme"}, &billingv1.GetUsageTotalsRequest{Parent: "orgs/acme"}, codes.Unauthenticated},
		{"unknown key", unknownKey, &billingv1.ListUsageEntriesRequest{Parent: "orgs/acme"}, &billingv1.GetUsageTotalsRequest{Parent: "orgs/acme"}, codes.Unauthenticated},
		{"malformed key", "moat_short", &billingv1.ListUsageEntriesRequest{Parent: "orgs/acme"}, &billingv1.GetUsageTotalsRequest{Parent: "orgs/acme"}, codes.Unauthenticated},
		{"project key", f.projectKey, &billingv1.ListUsageEntriesRequest{Parent: "orgs/acme/projects/web"}, &billingv1.GetUsageTotalsRequest{Parent: "orgs/acme/projects/web"}, codes.PermissionDenied},
		{"project key, bad parent", f.projectKey, &billingv1.ListUsageEntriesRequest{Parent: "nonsense"}, &billingv1.GetUsageTotalsRequest{Parent: "nonsense"}, codes.PermissionDenied},
		{"empty parent", f.adminKey, &billingv1.ListUsageEntriesRequest{}, &billingv1.GetUsageTotalsRequest{}, codes.InvalidArgument},
		{"bad parent", f.adminKey, &billingv1.ListUsageEntriesRequest{Parent: "orgs/acme/providers/p1"}, &billingv1.GetUsageTotalsRequest{Parent: "orgs/acme/providers/p1"}, codes.InvalidArgument},
		{"negative page size", f.adminKey, &billingv1.ListUsageEntriesRequest{Parent: "orgs/acme", PageSize: -1}, nil, codes.InvalidArgument},
		{"forged page token", f.adminKey, &billingv1.ListUsageEntriesRequest{Parent: "orgs/acme", PageToken: "eyJwIjoib3Jncy9hY21lIn0"}, nil, codes.InvalidArgument},
		{"garbage page token", f.adminKey, &billingv1.ListUsageEntriesRequest{Parent: "orgs/acme", PageToken: "%%%"}, nil, codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp, err := f.client.ListUsageEntries(as(tt.key), tt.list)
			if status.Code(err) != tt.want || resp != nil {
				t.Errorf("ListUsageEntries(%v) = %v, %v; want %v", tt.list, resp, err, tt.want)
			}
			if tt.total == nil {
				return
			}
			tot, err := f.client.GetUsageTotals(as(tt.key), tt.total)
			if status.Code(err) != tt.want || tot != nil {
				t.Errorf("GetUsageTotals(%v) = %v, %v; want %v", tt.total, tot, err, tt.want)
			}
		})
	}
}
