package app_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/moat-ai/moat/libs/authn"
	"github.com/moat-ai/moat/libs/authn/authntest"
	"github.com/moat-ai/moat/libs/events"
	"github.com/moat-ai/moat/libs/pg/pgtest"
	"github.com/moat-ai/moat/libs/serve/servetest"
	billingv1 "github.com/moat-ai/moat/proto/gen/go/moat/billing/v1"
	gatewayv1 "github.com/moat-ai/moat/proto/gen/go/moat/gateway/v1"
	identityv1 "github.com/moat-ai/moat/proto/gen/go/moat/identity/v1"
	"github.com/moat-ai/moat/services/billing/internal/app"
)

func TestCommon(t *testing.T) {
	t.Parallel()
	// Nothing listens on the identity address: the key index stays empty
	// and Follow keeps retrying, which must not stop the service.
	servetest.TestCommon(t, servetest.Service{
		Run: app.Run, Migrations: app.Migrations, Stream: "BILLING",
		Env: authntest.Env(servetest.FreeAddr(t)),
	})
}

func TestConfigNamesAuthVariables(t *testing.T) {
	t.Parallel()
	err := app.Run(context.Background(), nil, servetest.Env{"MOAT_KEY_SECRET": "c2hvcnQ="}.Getenv, io.Discard)
	for _, want := range []string{"MOAT_KEY_SECRET must decode to at least 32 bytes", "MOAT_INTERNAL_TOKEN is required", "MOAT_IDENTITY_GRPC is required"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Run without auth settings = %v, want it to mention %q", err, want)
		}
	}
}

// TestUsageReachesTheAPI drives the wired service: usage events published
// on the gateway's stream become ledger entries, which the REST and gRPC
// APIs serve to a platform admin authenticated through the key index
// followed from identity, and to no one else.
func TestUsageReachesTheAPI(t *testing.T) {
	t.Parallel()
	h := authntest.Hasher(t)
	adminKey, projectKey := authntest.Key(t), authntest.Key(t)
	identity := authntest.StartIdentity(t, authntest.InternalToken,
		authntest.Entry(h, "admin", adminKey, identityv1.KeyIndexEntry_ROLE_PLATFORM_ADMIN, "", ""),
		authntest.Entry(h, "web", projectKey, identityv1.KeyIndexEntry_ROLE_PROJECT, "orgs/acme", "orgs/acme/projects/web"),
	)
	svc := servetest.Service{Run: app.Run, Migrations: app.Migrations, Stream: "BILLING", Env: authntest.Env(identity.Addr())}
	_, dbURL := pgtest.NewDatabase(t, app.Migrations...)
	env := svc.Environ(t, dbURL)
	p := servetest.Start(t, app.Run, env)
	servetest.WaitServing(t, p, env["GRPC_ADDR"], 20*time.Second)

	// The gateway's side: its stream and two usage events.
	nc, err := nats.Connect(env["NATS_URL"])
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := events.EnsureStream(ctx, js, events.StreamConfig{Name: "GATEWAY", Subjects: []string{"gateway.>"}}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2025, 5, 1, 10, 0, 0, 0, time.UTC)
	for i, model := range []string{"mock-model", "not-in-the-table"} {
		u := &gatewayv1.UsageRecorded{
			Organization: "orgs/acme", Project: "orgs/acme/projects/web", KeyId: "web", Model: "chat",
			UpstreamModel: model, InputTokens: 1_000_000, OutputTokens: 1_000_000, HttpStatus: 200,
			RequestTime: timestamppb.New(t0.Add(time.Duration(i) * time.Minute)),
		}
		ev, err := events.New("moat/gateway", "gateway.v1.usage.recorded", u.GetProject(), u)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := events.Publish(ctx, js, nil, ev); err != nil {
			t.Fatal(err)
		}
	}

	base := "http://" + env["HTTP_ADDR"] + "/api/v1/orgs/acme"
	type listing struct {
		UsageEntries []struct {
			Name          string
			UpstreamModel string
			CostMicros    string // int64 is a JSON string in protojson
			Priced        bool
		}
	}
	var list listing
	servetest.Eventually(t, 20*time.Second, "two entries in the REST list", func() bool {
		code, body := servetest.GetAs(t, base+"/usage", adminKey)
		// A fresh value each poll: decoding into the last one would keep
		// the fields an earlier answer set and this one leaves out (protojson
		// omits false and zero), so an unpriced entry would look priced.
		list = listing{}
		return code == http.StatusOK && json.Unmarshal([]byte(body), &list) == nil && len(list.UsageEntries) == 2
	})
	if e := list.UsageEntries[0]; e.UpstreamModel != "not-in-the-table" || e.Priced || e.CostMicros != "" {
		t.Errorf("newest entry = %+v, want the unpriced one at zero cost", e)
	}
	if e := list.UsageEntries[1]; e.UpstreamModel != "mock-model" || !e.Priced || e.CostMicros != "3000000" {
		t.Errorf("oldest entry = %+v, want mock-model priced at 3000000 micros", e)
	}

	if code, body := servetest.Get(t, "http://"+env["HTTP_ADDR"]+"/metrics"); code != http.StatusOK ||
		!strings.Contains(body, `moat_billing_unpriced_total{`) || !strings.Contains(body, `upstream_model="not-in-the-table"`) {
		t.Errorf("GET /metrics = %d without moat_billing_unpriced_total for the unpriced model", code)
	}

	code, body := servetest.GetAs(t, base+"/projects/web/usage:totals", adminKey)
	var totals map[string]map[string]any
	if code != http.StatusOK || json.Unmarshal([]byte(body), &totals) != nil {
		t.Fatalf("GET usage:totals = %d %s", code, body)
	}
	want := map[string]any{"entryCount": "2", "inputTokens": "2000000", "outputTokens": "2000000",
		"costMicros": "3000000", "currencyCode": "USD", "unpricedCount": "1"}
	if diff := cmp.Diff(want, totals["totals"]); diff != "" {
		t.Errorf("GET usage:totals mismatch (-want +got):\n%s", diff)
	}

	for _, tt := range []struct {
		key  string
		want int
	}{{"", http.StatusUnauthorized}, {authntest.Key(t), http.StatusUnauthorized}, {projectKey, http.StatusForbidden}} {
		if code, body := servetest.GetAs(t, base+"/usage", tt.key); code != tt.want {
			t.Errorf("GET usage with key %q = %d %s, want %d", authn.DisplayPrefix(tt.key), code, body, tt.want)
		}
	}

	conn, err := grpc.NewClient(env["GRPC_ADDR"], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := billingv1.NewBillingServiceClient(conn)
	as := func(key string) context.Context {
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
	}
	resp, err := client.GetUsageTotals(as(adminKey), &billingv1.GetUsageTotalsRequest{Parent: "orgs/acme"})
	if err != nil || resp.GetTotals().GetEntryCount() != 2 {
		t.Errorf("GetUsageTotals(orgs/acme) = %v, %v; want 2 entries", resp, err)
	}
	if _, err := client.ListUsageEntries(as(projectKey), &billingv1.ListUsageEntriesRequest{Parent: "orgs/acme/projects/web"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("ListUsageEntries with a project key = %v, want PermissionDenied", err)
	}
}
