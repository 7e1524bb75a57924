package app_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/moat-ai/moat/libs/authn"
	"github.com/moat-ai/moat/libs/authn/authntest"
	"github.com/moat-ai/moat/libs/events/eventstest"
	"github.com/moat-ai/moat/libs/grpcclient"
	"github.com/moat-ai/moat/libs/pg/pgtest"
	"github.com/moat-ai/moat/libs/serve/servetest"
	auditv1 "github.com/moat-ai/moat/proto/gen/go/moat/audit/v1"
	configv1 "github.com/moat-ai/moat/proto/gen/go/moat/config/v1"
	identityv1 "github.com/moat-ai/moat/proto/gen/go/moat/identity/v1"
	"github.com/moat-ai/moat/services/config/internal/app"
)

// kek is a valid MOAT_KEK for tests.
var kek = "k1:" + base64.StdEncoding.EncodeToString([]byte("fedcba9876543210fedcba9876543210"))

// vars are config's own variables: the shared secrets, the key-encryption
// key and identity's address.
func vars(identityAddr string) servetest.Env {
	e := authntest.Env(identityAddr)
	e["MOAT_KEK"] = kek
	return e
}

func TestCommon(t *testing.T) {
	t.Parallel()
	// Nothing listens on the identity address: Follow keeps retrying, which
	// must neither fail the service nor hold back its readiness.
	servetest.TestCommon(t, servetest.Service{
		Run: app.Run, Migrations: app.Migrations, Stream: "CONFIG",
		Env: vars(servetest.FreeAddr(t)),
	})
}

func TestConfigNamesItsVariables(t *testing.T) {
	t.Parallel()
	const shortKey = "c2hvcnQta2V5LW1hdGVyaWFs"
	tests := []struct {
		env  servetest.Env
		want []string
	}{
		{servetest.Env{}, []string{"MOAT_KEK is required", "MOAT_KEY_SECRET is required", "MOAT_INTERNAL_TOKEN is required", "MOAT_IDENTITY_GRPC is required"}},
		{servetest.Env{"MOAT_KEK": "k1:" + shortKey}, []string{`MOAT_KEK: key-encryption key "k1": want 32 bytes`}},
		{servetest.Env{"MOAT_KEK": "no-colon"}, []string{"MOAT_KEK: key-encryption key 1"}},
	}
	for _, tt := range tests {
		err := app.Run(context.Background(), nil, tt.env.Getenv, io.Discard)
		for _, want := range tt.want {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("Run(%v) = %v, want it to mention %q", tt.env, err, want)
			}
		}
		if err != nil && strings.Contains(err.Error(), shortKey) {
			t.Errorf("Run(%v) quotes the key material: %v", tt.env, err)
		}
	}
}

// The service is ready without identity, refuses (and audits) admin calls
// until the key index arrives, then serves REST through its interceptors,
// publishes its audit events on the CONFIG stream, streams configuration
// to gateways, and ends watch streams promptly when it stops.
func TestServe(t *testing.T) {
	t.Parallel()
	_, dbURL := pgtest.NewDatabase(t, app.Migrations...)
	ns := eventstest.NewServer(t)
	identityAddr := servetest.FreeAddr(t)
	env := vars(identityAddr)
	env["GRPC_ADDR"] = servetest.FreeAddr(t)
	env["HTTP_ADDR"] = servetest.FreeAddr(t)
	env["NATS_URL"] = ns.ClientURL()
	env["DATABASE_URL"] = dbURL
	env["DRAIN_TIMEOUT"] = "5s"
	p := servetest.Start(t, app.Run, env)
	servetest.WaitServing(t, p, env["GRPC_ADDR"], 20*time.Second)

	adminKey := authntest.Key(t)
	base := "http://" + env["HTTP_ADDR"] + "/api/v1"
	create := func() (int, string) {
		return do(t, http.MethodPost, base+"/orgs?organizationId=acme", adminKey, `{"displayName":"Acme"}`)
	}
	if code, body := create(); code != http.StatusUnauthorized {
		t.Errorf("POST /orgs before the key index = %d %s, want 401", code, body)
	}

	// Gateways are served meanwhile: the stream needs only the token.
	conn, err := grpcclient.Dial(env["GRPC_ADDR"], nil, authntest.InternalToken)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := configv1.NewConfigServiceClient(conn)
	stream, err := client.WatchConfig(context.Background(), &configv1.WatchConfigRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if first, err := stream.Recv(); err != nil || first.GetSnapshot() == nil {
		t.Fatalf("WatchConfig first message = %v, %v; want a snapshot", first, err)
	}

	// identity comes up; the key index follows.
	authntest.StartIdentityAt(t, identityAddr, authntest.InternalToken,
		authntest.Entry(authntest.Hasher(t), "admin1", adminKey, identityv1.KeyIndexEntry_ROLE_PLATFORM_ADMIN, "", ""))
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body := create()
		if code == http.StatusOK {
			if !strings.Contains(body, `"name":"orgs/acme"`) {
				t.Errorf("POST /orgs = %s, want the organization", body)
			}
			break
		}
		if code != http.StatusUnauthorized || time.Now().After(deadline) {
			t.Fatalf("POST /orgs = %d %s, want 200 once the key index arrives", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, body := do(t, http.MethodGet, base+"/orgs/acme", adminKey, ""); code != http.StatusOK || !strings.Contains(body, `"displayName":"Acme"`) {
		t.Errorf("GET /orgs/acme = %d %s", code, body)
	}
	if code, body := do(t, http.MethodPatch, base+"/orgs/acme", adminKey, `{"name":"orgs/acme","displayName":"Acme Corp"}`); code != http.StatusOK || !strings.Contains(body, "Acme Corp") {
		t.Errorf("PATCH /orgs/acme without an explicit mask = %d %s, want 200", code, body)
	}
	if code, body := do(t, http.MethodGet, base+"/orgs/nope", adminKey, ""); code != http.StatusNotFound || !strings.Contains(body, `"code":5`) {
		t.Errorf("GET /orgs/nope = %d %s, want 404 with a status body", code, body)
	}
	if m, err := stream.Recv(); err != nil || m.GetUpsert().GetOrganization().GetName() != "orgs/acme" {
		t.Errorf("WatchConfig change = %v, %v; want the new organization", m, err)
	}

	// A provider with settings over REST: a PATCH without a mask that sets
	// one settings field changes that field alone (the mask REST infers
	// from the body names vertex.location, not vertex).
	saKey := `{"type": "service_account", "client_email": "moat@p.iam.gserviceaccount.com",
		"private_key": "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"}`
	body, err := json.Marshal(map[string]any{"type": "TYPE_VERTEX_AI", "credential": saKey,
		"vertex": map[string]string{"project": "my-project", "location": "us-central1"}})
	if err != nil {
		t.Fatal(err)
	}
	// protojson varies its spacing on purpose: compare values, not bytes.
	vertexOf := func(body string) map[string]string {
		var got struct {
			Provider struct {
				Vertex map[string]string `json:"vertex"`
			} `json:"provider"`
		}
		if err := json.Unmarshal([]byte(body), &got); err != nil {
			return nil
		}
		return got.Provider.Vertex
	}
	if code, body := do(t, http.MethodPost, base+"/orgs/acme/providers?providerId=vertex", adminKey, string(body)); code != http.StatusOK ||
		!cmp.Equal(vertexOf(body), map[string]string{"project": "my-project", "location": "us-central1"}) || strings.Contains(body, "PRIVATE KEY") {
		t.Errorf("POST /orgs/acme/providers (vertex) = %d %s, want 200 with the settings and no credential", code, body)
	}
	if code, body := do(t, http.MethodPatch, base+"/orgs/acme/providers/vertex", adminKey, `{"vertex":{"location":"europe-west4"}}`); code != http.StatusOK ||
		!cmp.Equal(vertexOf(body), map[string]string{"project": "my-project", "location": "europe-west4"}) {
		t.Errorf("PATCH /orgs/acme/providers/vertex without an explicit mask = %d %s, want 200 with only the location changed", code, body)
	}
	if code, body := do(t, http.MethodPost, base+"/orgs/acme/providers?providerId=azure", adminKey, `{"type":"TYPE_AZURE_OPENAI","credential":"k"}`); code != http.StatusBadRequest ||
		!strings.Contains(body, "provider.base_url") {
		t.Errorf("POST /orgs/acme/providers (azure without base_url) = %d %s, want 400 naming provider.base_url", code, body)
	}

	// The refused and the allowed create both reach the CONFIG stream.
	var refused, allowed bool
	readAudits(t, ns.ClientURL(), func(a *auditv1.AuditEvent) bool {
		if a.GetAction() == "moat.config.v1.ConfigService.CreateOrganization" {
			if !strings.HasPrefix(a.GetSourceAddress(), "127.0.0.1") {
				t.Errorf("audit source address = %q, want the REST client's", a.GetSourceAddress())
			}
			switch a.GetStatus() {
			case "UNAUTHENTICATED":
				refused = refused || (a.GetActor() == "anonymous" && a.GetOutcome() == auditv1.AuditEvent_OUTCOME_DENIED)
			case "OK":
				allowed = allowed || (a.GetActor() == "keys/admin1" && a.GetTarget() == "orgs/acme")
			}
		}
		return refused && allowed
	})

	// Stopping ends the watch stream at once instead of waiting out the drain.
	start := time.Now()
	if err := p.Stop(t, 10*time.Second); err != nil {
		t.Fatalf("Run after cancel = %v", err)
	}
	if took := time.Since(start); took > 4*time.Second {
		t.Errorf("stop took %v with a watch stream open, want well under DRAIN_TIMEOUT", took)
	}
	for {
		if _, err = stream.Recv(); err != nil {
			break
		}
	}
	if status.Code(err) != codes.Unavailable {
		t.Errorf("watch stream after stop = %v, want Unavailable", err)
	}
}

// With MOAT_OIDC_ISSUER set, config takes OIDC access tokens besides keys:
// a member of the platform-admins group administers, any other signed-in
// user is refused with PERMISSION_DENIED, and a token for another audience
// or with a broken signature is not accepted at all. Each mutation is
// audited, with the user's subject as actor.
func TestServeAcceptsAccessTokens(t *testing.T) {
	t.Parallel()
	iss := authntest.NewIssuer(t)
	_, dbURL := pgtest.NewDatabase(t, app.Migrations...)
	ns := eventstest.NewServer(t)
	env := vars(authntest.StartIdentity(t, authntest.InternalToken).Addr())
	env["MOAT_OIDC_ISSUER"] = iss.URL()
	env["GRPC_ADDR"] = servetest.FreeAddr(t)
	env["HTTP_ADDR"] = servetest.FreeAddr(t)
	env["NATS_URL"] = ns.ClientURL()
	env["DATABASE_URL"] = dbURL
	env["DRAIN_TIMEOUT"] = "5s"
	p := servetest.Start(t, app.Run, env)
	servetest.WaitServing(t, p, env["GRPC_ADDR"], 20*time.Second)

	admin := iss.Token(t, iss.Claims("alice-sub", "web", authn.PlatformAdminGroup))
	user := iss.Token(t, iss.Claims("bob-sub", "web"))
	elsewhere := iss.Claims("eve-sub", authn.PlatformAdminGroup)
	elsewhere["aud"] = "another-service"
	otherAudience := iss.Token(t, elsewhere)
	sig := []byte(admin)
	sig[len(sig)-10] ^= 'A' ^ 'B' // in the signature, clear of its last, partly unused character
	tampered := string(sig)

	base := "http://" + env["HTTP_ADDR"] + "/api/v1"
	tests := []struct {
		name, token, method, path, body string
		want                            int
	}{
		{"admin creates", admin, http.MethodPost, "/orgs?organizationId=acme", `{"displayName":"Acme"}`, http.StatusOK},
		{"admin reads", admin, http.MethodGet, "/orgs/acme", "", http.StatusOK},
		{"user without the group creates", user, http.MethodPost, "/orgs?organizationId=bobs", `{"displayName":"Bob's"}`, http.StatusForbidden},
		{"user without the group reads", user, http.MethodGet, "/orgs/acme", "", http.StatusForbidden},
		{"token for another audience", otherAudience, http.MethodPost, "/orgs?organizationId=eves", `{"displayName":"Eve's"}`, http.StatusUnauthorized},
		{"tampered admin token", tampered, http.MethodPost, "/orgs?organizationId=mallory", `{"displayName":"Mallory's"}`, http.StatusUnauthorized},
	}
	for _, tt := range tests { // in order: the reads need the create
		if code, body := do(t, tt.method, base+tt.path, tt.token, tt.body); code != tt.want {
			t.Errorf("%s: %s %s = %d %s, want %d", tt.name, tt.method, tt.path, code, body, tt.want)
		}
	}

	// A refused create has no target: its organization was never named.
	type record struct{ Target, Actor, Outcome, Status string }
	want := []record{
		{"orgs/acme", "users/alice-sub", "OUTCOME_ALLOWED", "OK"},
		{"", "users/bob-sub", "OUTCOME_DENIED", "PERMISSION_DENIED"},
		{"", "anonymous", "OUTCOME_DENIED", "UNAUTHENTICATED"},
		{"", "anonymous", "OUTCOME_DENIED", "UNAUTHENTICATED"},
	}
	var got []record
	readAudits(t, ns.ClientURL(), func(a *auditv1.AuditEvent) bool {
		if a.GetAction() == "moat.config.v1.ConfigService.CreateOrganization" {
			got = append(got, record{a.GetTarget(), a.GetActor(), a.GetOutcome().String(), a.GetStatus()})
		}
		return len(got) == len(want)
	})
	less := func(a, b record) bool { return fmt.Sprint(a) < fmt.Sprint(b) }
	if diff := cmp.Diff(want, got, cmpopts.SortSlices(less)); diff != "" {
		t.Errorf("audit records of CreateOrganization (-want +got):\n%s", diff)
	}
	if err := p.Stop(t, 10*time.Second); err != nil {
		t.Fatalf("Run after cancel = %v", err)
	}
}

func do(t *testing.T, method, url, key, body string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// readAudits reads the audit events of the CONFIG stream in order until
// done returns true, failing after 15s.
func readAudits(t *testing.T, natsURL string, done func(*auditv1.AuditEvent) bool) {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, "CONFIG", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"config.v1.audit_event.recorded"}})
	if err != nil {
		t.Fatal(err)
	}
	for n := 0; ; n++ {
		msg, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Fatalf("read the CONFIG stream after %d events: %v", n, err)
		}
		if got := msg.Headers().Get("ce-type"); got != "moat.audit.v1.AuditEvent" {
			t.Errorf("ce-type = %q", got)
		}
		ev := &auditv1.AuditEvent{}
		if err := proto.Unmarshal(msg.Data(), ev); err != nil {
			t.Fatal(err)
		}
		if done(ev) {
			return
		}
	}
}
