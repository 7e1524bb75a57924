package app_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

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
	auditv1 "github.com/moat-ai/moat/proto/gen/go/moat/audit/v1"
	identityv1 "github.com/moat-ai/moat/proto/gen/go/moat/identity/v1"
	"github.com/moat-ai/moat/services/audit/internal/app"
)

func TestCommon(t *testing.T) {
	t.Parallel()
	// Nothing listens on the identity address, and no producer stream
	// exists: Follow and the consumers keep retrying, which must not stop
	// the service.
	servetest.TestCommon(t, servetest.Service{
		Run: app.Run, Migrations: app.Migrations, Stream: "AUDIT",
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

// TestAuditEventsReachTheAPI drives the wired service: audit events that
// config and identity publish on their streams (created after audit
// started) are stored and served, over REST and gRPC, to a platform admin
// authenticated through the key index followed from identity, and to no
// one else.
func TestAuditEventsReachTheAPI(t *testing.T) {
	t.Parallel()
	h := authntest.Hasher(t)
	adminKey, projectKey := authntest.Key(t), authntest.Key(t)
	identity := authntest.StartIdentity(t, authntest.InternalToken,
		authntest.Entry(h, "admin", adminKey, identityv1.KeyIndexEntry_ROLE_PLATFORM_ADMIN, "", ""),
		authntest.Entry(h, "web", projectKey, identityv1.KeyIndexEntry_ROLE_PROJECT, "orgs/acme", "orgs/acme/projects/web"),
	)
	svc := servetest.Service{Run: app.Run, Migrations: app.Migrations, Stream: "AUDIT", Env: authntest.Env(identity.Addr())}
	_, dbURL := pgtest.NewDatabase(t, app.Migrations...)
	env := svc.Environ(t, dbURL)
	p := servetest.Start(t, app.Run, env)
	servetest.WaitServing(t, p, env["GRPC_ADDR"], 20*time.Second)

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
	t0 := time.Date(2025, 5, 1, 10, 0, 0, 0, time.UTC)
	for i, src := range []struct{ stream, subject, producer, org string }{
		{"CONFIG", "config.v1.audit_event.recorded", "moat/config", "orgs/acme"},
		{"IDENTITY", "identity.v1.audit_event.recorded", "moat/identity", "orgs/acme"},
		{"IDENTITY", "identity.v1.audit_event.recorded", "moat/identity", ""},
		{"CONFIG", "config.v1.audit_event.recorded", "moat/config", "orgs/umbrella"},
	} {
		if _, err := events.EnsureStream(ctx, js, events.StreamConfig{Name: src.stream, Subjects: []string{strings.ToLower(src.stream) + ".>"}}); err != nil {
			t.Fatal(err)
		}
		m := &auditv1.AuditEvent{
			Organization: src.org, Actor: "keys/admin", Action: "moat.test.v1.Service.Mutate", Target: src.org,
			Outcome: auditv1.AuditEvent_OUTCOME_ALLOWED, Status: "OK", EventTime: timestamppb.New(t0.Add(time.Duration(i) * time.Minute)),
		}
		ev, err := events.New(src.producer, src.subject, src.org, m)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := events.Publish(ctx, js, nil, ev); err != nil {
			t.Fatal(err)
		}
	}

	url := "http://" + env["HTTP_ADDR"] + "/api/v1/orgs/acme/auditEvents"
	type listing struct {
		AuditEvents []struct {
			Name, Organization, Producer, Outcome string
		}
	}
	var list listing
	servetest.Eventually(t, 20*time.Second, "two acme audit events in the REST list", func() bool {
		code, body := servetest.GetAs(t, url, adminKey)
		list = listing{} // decoding into the last answer would keep its fields
		return code == http.StatusOK && json.Unmarshal([]byte(body), &list) == nil && len(list.AuditEvents) == 2
	})
	for i, want := range []string{"moat/identity", "moat/config"} {
		e := list.AuditEvents[i]
		if e.Producer != want || e.Organization != "orgs/acme" || e.Outcome != "OUTCOME_ALLOWED" || !strings.HasPrefix(e.Name, "orgs/acme/auditEvents/") {
			t.Errorf("event %d = %+v, want an allowed acme event from %s", i, e, want)
		}
	}

	for _, tt := range []struct {
		key  string
		want int
	}{{"", http.StatusUnauthorized}, {authntest.Key(t), http.StatusUnauthorized}, {projectKey, http.StatusForbidden}} {
		if code, body := servetest.GetAs(t, url, tt.key); code != tt.want {
			t.Errorf("GET auditEvents with key %q = %d %s, want %d", authn.DisplayPrefix(tt.key), code, body, tt.want)
		}
	}

	conn, err := grpc.NewClient(env["GRPC_ADDR"], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := auditv1.NewAuditServiceClient(conn)
	as := func(key string) context.Context {
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
	}
	servetest.Eventually(t, 20*time.Second, "umbrella's audit event", func() bool {
		resp, err := client.ListAuditEvents(as(adminKey), &auditv1.ListAuditEventsRequest{Parent: "orgs/umbrella"})
		return err == nil && len(resp.GetAuditEvents()) == 1
	})
	if _, err := client.ListAuditEvents(as(projectKey), &auditv1.ListAuditEventsRequest{Parent: "orgs/acme"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("ListAuditEvents with a project key = %v, want PermissionDenied", err)
	}
}
