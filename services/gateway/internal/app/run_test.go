package app_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/moat-ai/moat/libs/authn/authntest"
	"github.com/moat-ai/moat/libs/events/eventstest"
	"github.com/moat-ai/moat/libs/grpcclient"
	"github.com/moat-ai/moat/libs/providertest"
	"github.com/moat-ai/moat/libs/secretbox"
	"github.com/moat-ai/moat/libs/serve/servetest"
	configv1 "github.com/moat-ai/moat/proto/gen/go/moat/config/v1"
	gatewayv1 "github.com/moat-ai/moat/proto/gen/go/moat/gateway/v1"
	identityv1 "github.com/moat-ai/moat/proto/gen/go/moat/identity/v1"
	"github.com/moat-ai/moat/services/gateway/internal/app"
)

const upstreamCredential = "sk-upstream-for-the-component-test"

func random(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// platform is what the gateway talks to: identity and config streaming
// their state, the admin API's backends and a model provider.
type platform struct {
	kek             string
	keyring         *secretbox.Keyring
	identity        *authntest.Identity
	config          *fakeConfig
	configAddr      string
	backends        map[string]string // service -> HTTP address
	provider        *providertest.Server
	providerBaseURL string
	// stalling sends its first chunk, then waits an hour for the next.
	stalling        *providertest.Server
	stallingBaseURL string
}

func newPlatform(t *testing.T) *platform {
	t.Helper()
	kek := "k1:" + base64.StdEncoding.EncodeToString(random(t, 32))
	kr, err := secretbox.ParseKeyring(kek)
	if err != nil {
		t.Fatal(err)
	}
	p := &platform{
		kek: kek, keyring: kr, identity: authntest.StartIdentity(t, authntest.InternalToken),
		config: &fakeConfig{}, backends: map[string]string{},
	}
	p.configAddr = serveGRPC(t, func(s *grpc.Server) { configv1.RegisterConfigServiceServer(s, p.config) })
	for _, svc := range []string{"identity", "config", "billing", "audit"} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"service":"`+svc+`","authorization":"`+r.Header.Get("Authorization")+`"}`)
		}))
		t.Cleanup(srv.Close)
		p.backends[svc] = srv.Listener.Addr().String()
	}
	p.provider = providertest.New(providertest.Config{Credential: upstreamCredential, Chunks: 2})
	srv := httptest.NewServer(p.provider)
	t.Cleanup(srv.Close)
	p.providerBaseURL = srv.URL + "/v1"
	p.stalling = providertest.New(providertest.Config{Credential: upstreamCredential, Chunks: 2, ChunkDelay: time.Hour})
	stalling := httptest.NewServer(p.stalling)
	t.Cleanup(stalling.Close)
	p.stallingBaseURL = stalling.URL + "/v1"
	return p
}

// service is the gateway with the platform's addresses and secrets as
// its own variables.
func (p *platform) service() servetest.Service {
	e := authntest.Env(p.identity.Addr())
	e["MOAT_KEK"] = p.kek
	e["MOAT_CONFIG_GRPC"] = p.configAddr
	e["MOAT_IDENTITY_HTTP"] = p.backends["identity"]
	e["MOAT_CONFIG_HTTP"] = p.backends["config"]
	e["MOAT_BILLING_HTTP"] = p.backends["billing"]
	e["MOAT_AUDIT_HTTP"] = p.backends["audit"]
	// The mock providers listen on loopback, which the egress policy
	// refuses unless allowed.
	e["EGRESS_ALLOW_CIDRS"] = "127.0.0.0/8"
	return servetest.Service{Run: app.Run, Stream: "GATEWAY", Env: e}
}

// env is a complete gateway environment on free ports with a fresh NATS.
func (p *platform) env(t *testing.T) servetest.Env {
	t.Helper()
	return p.service().Environ(t, "")
}

func serveGRPC(t *testing.T, register func(*grpc.Server)) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	register(srv)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// fakeConfig streams a fixed configuration, as config does.
type fakeConfig struct {
	configv1.UnimplementedConfigServiceServer
	resources []*configv1.ConfigResource
}

func (f *fakeConfig) WatchConfig(_ *configv1.WatchConfigRequest, stream grpc.ServerStreamingServer[configv1.WatchConfigResponse]) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	if got := md.Get(grpcclient.InternalTokenKey); len(got) != 1 || got[0] != authntest.InternalToken {
		return status.Error(codes.Unauthenticated, "internal token required")
	}
	if err := stream.Send(&configv1.WatchConfigResponse{Version: 1, Event: &configv1.WatchConfigResponse_Snapshot{
		Snapshot: &configv1.ConfigSnapshot{Resources: f.resources},
	}}); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

func TestCommon(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	servetest.TestCommon(t, p.service())
}

// The gateway serves while NATS is unreachable: events wait, traffic does not.
func TestServeWithoutNATS(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	e := p.service().Env
	e["GRPC_ADDR"] = servetest.FreeAddr(t)
	e["HTTP_ADDR"] = servetest.FreeAddr(t)
	e["NATS_URL"] = "nats://" + servetest.FreeAddr(t)
	proc := servetest.Start(t, app.Run, e)
	servetest.WaitServing(t, proc, e["GRPC_ADDR"], 20*time.Second)
	servetest.CheckProbes(t, e["HTTP_ADDR"])
}

func TestMigrateIsANoOp(t *testing.T) {
	t.Parallel()
	if err := app.Run(context.Background(), []string{"migrate"}, servetest.Env{}.Getenv, &servetest.SyncBuffer{}); err != nil {
		t.Fatalf("Run(migrate) = %v, want nil", err)
	}
}

func TestConfigNamesEveryVariable(t *testing.T) {
	t.Parallel()
	err := app.Run(context.Background(), nil, servetest.Env{
		"MOAT_KEK": "k1:short", "MOAT_CONFIG_HTTP": "config", "UPSTREAM_IDLE_TIMEOUT": "-1s", "USAGE_PUBLISHERS": "0",
		"EGRESS_ALLOW_CIDRS": "10.0.0.0/8,10.0.0.1",
	}.Getenv, io.Discard)
	for _, want := range []string{
		"MOAT_KEY_SECRET is required", "MOAT_INTERNAL_TOKEN is required", "MOAT_IDENTITY_GRPC is required",
		"MOAT_CONFIG_GRPC is required", "MOAT_KEK: key-encryption key", "MOAT_IDENTITY_HTTP is required",
		"MOAT_CONFIG_HTTP: want host:port", "MOAT_BILLING_HTTP is required", "MOAT_AUDIT_HTTP is required",
		"UPSTREAM_IDLE_TIMEOUT must be positive", "USAGE_PUBLISHERS must be 1 to 256",
		"EGRESS_ALLOW_CIDRS: want a comma-separated list of CIDRs",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Run with a bad environment = %v, want it to mention %q", err, want)
		}
	}
}

// The gateway is not ready before it has both snapshots.
func TestNotReadyWithoutSnapshots(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	e := p.env(t)
	e["MOAT_IDENTITY_GRPC"] = servetest.FreeAddr(t) // nothing listens: no key index
	proc := servetest.Start(t, app.Run, e)
	deadline := time.Now().Add(10 * time.Second)
	for !proc.Log.Contains(`"msg":"configuration snapshot loaded"`) {
		if time.Now().After(deadline) {
			t.Fatalf("no configuration snapshot within 10s; log:\n%s", proc.Log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	code, body := servetest.Get(t, "http://"+e["HTTP_ADDR"]+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "key_index") || strings.Contains(body, "config_snapshot") {
		t.Errorf("GET /readyz = %d %s, want 503 naming key_index only", code, body)
	}
}

// TestGateway drives the wired service: keys and routes streamed from
// identity and config, a completion forwarded to the provider with its
// sealed credential, the usage event on the GATEWAY stream, the admin API
// routed to its backend, and the snapshot metrics.
func TestGateway(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	h := authntest.Hasher(t)
	projectKey, adminKey := authntest.Key(t), authntest.Key(t)
	p.identity.Upsert(authntest.Entry(h, "web", projectKey, identityv1.KeyIndexEntry_ROLE_PROJECT, "orgs/acme", "orgs/acme/projects/web"))
	p.identity.Upsert(authntest.Entry(h, "admin", adminKey, identityv1.KeyIndexEntry_ROLE_PLATFORM_ADMIN, "", ""))
	seal := func(provider string) *configv1.SealedSecret {
		s, err := p.keyring.Seal([]byte(upstreamCredential), []byte(provider))
		if err != nil {
			t.Fatal(err)
		}
		return &configv1.SealedSecret{KekId: s.KEKID, WrappedKey: s.WrappedKey, Ciphertext: s.Ciphertext}
	}
	p.config.resources = []*configv1.ConfigResource{
		{Resource: &configv1.ConfigResource_Organization{Organization: &configv1.Organization{Name: "orgs/acme"}}},
		{Resource: &configv1.ConfigResource_Project{Project: &configv1.Project{Name: "orgs/acme/projects/web"}}},
		{Resource: &configv1.ConfigResource_Provider{Provider: &configv1.GatewayProvider{
			Provider:   &configv1.Provider{Name: "orgs/acme/providers/mock", Type: configv1.Provider_TYPE_OPENAI_COMPATIBLE, BaseUrl: p.providerBaseURL},
			Credential: seal("orgs/acme/providers/mock"),
		}}},
		{Resource: &configv1.ConfigResource_Provider{Provider: &configv1.GatewayProvider{
			Provider:   &configv1.Provider{Name: "orgs/acme/providers/stalling", Type: configv1.Provider_TYPE_OPENAI_COMPATIBLE, BaseUrl: p.stallingBaseURL},
			Credential: seal("orgs/acme/providers/stalling"),
		}}},
		{Resource: &configv1.ConfigResource_Route{Route: &configv1.Route{
			Name: "orgs/acme/projects/web/routes/demo", Model: "demo-model", Provider: "orgs/acme/providers/mock", UpstreamModel: "mock-model",
		}}},
		{Resource: &configv1.ConfigResource_Route{Route: &configv1.Route{
			Name: "orgs/acme/projects/web/routes/stalling", Model: "stalling-model", Provider: "orgs/acme/providers/stalling", UpstreamModel: "mock-model",
		}}},
	}
	ns := eventstest.NewServer(t)
	e := p.env(t)
	e["NATS_URL"] = ns.ClientURL()
	proc := servetest.Start(t, app.Run, e)
	servetest.WaitServing(t, proc, e["GRPC_ADDR"], 20*time.Second)
	base := "http://" + e["HTTP_ADDR"]

	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, base+"/v1/chat/completions",
		strings.NewReader(`{"model":"demo-model","messages":[{"role":"user","content":"hello gateway"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+projectKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"completion_tokens":2`) {
		t.Fatalf("POST /v1/chat/completions = %d %s, want the provider's answer", resp.StatusCode, body)
	}
	requestID := resp.Header.Get("X-Request-Id")

	_, js := eventstest.Connect(t, ns)
	cons, err := js.OrderedConsumer(t.Context(), "GATEWAY", jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
	if err != nil {
		t.Fatalf("no usage event: %v", err)
	}
	var u gatewayv1.UsageRecorded
	if err := proto.Unmarshal(msg.Data(), &u); err != nil {
		t.Fatal(err)
	}
	if msg.Subject() != "gateway.v1.usage.recorded" || u.GetRequestId() != requestID || u.GetKeyId() != "web" ||
		u.GetInputTokens() != 2 || u.GetOutputTokens() != 2 || u.GetUpstreamModel() != "mock-model" {
		t.Errorf("usage event on %s = %v, want request %s with 2/2 tokens", msg.Subject(), &u, requestID)
	}

	// Through the whole server stack (tracing wrapper included), a stream's
	// first chunk reaches the client while the provider still generates.
	sctx, cancelStream := context.WithCancel(t.Context())
	sreq, err := http.NewRequestWithContext(sctx, http.MethodPost, base+"/v1/chat/completions",
		strings.NewReader(`{"model":"stalling-model","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	sreq.Header.Set("Authorization", "Bearer "+projectKey)
	sresp, err := http.DefaultClient.Do(sreq)
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(sresp.Body).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "data: ") || !strings.Contains(line, "tok1") {
		t.Errorf("first stream line = %q, %v; want the first chunk before the provider finished", line, err)
	}
	cancelStream()
	_ = sresp.Body.Close()

	if code, body := servetest.GetAs(t, base+"/api/v1/orgs/acme/projects/web/keys", adminKey); code != http.StatusOK ||
		!strings.Contains(body, `"service":"identity"`) || !strings.Contains(body, adminKey) {
		t.Errorf("GET /api/v1/.../keys = %d %s, want identity's answer with the caller's Authorization passed on", code, body)
	}
	if code, body := servetest.GetAs(t, base+"/v1/models", projectKey); code != http.StatusOK || !strings.Contains(body, `"demo-model"`) {
		t.Errorf("GET /v1/models = %d %s", code, body)
	}

	_, metrics := servetest.Get(t, base+"/metrics")
	for _, want := range []string{
		`moat_gateway_snapshot_age_seconds{`, `source="config"`, `source="key_index"`, `moat_gateway_snapshot_version{`,
		`moat_gateway_usage_published_total`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	var ageLines []string
	for _, line := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(line, "moat_gateway_snapshot_age_seconds{") {
			ageLines = append(ageLines, line)
		}
	}
	for _, l := range ageLines {
		if !strings.HasSuffix(l, " 0") {
			t.Errorf("snapshot age while connected: %s, want 0", l)
		}
	}

	if err := proc.Stop(t, 20*time.Second); err != nil {
		t.Fatalf("Run after cancel = %v", err)
	}
	for _, secret := range []string{projectKey, adminKey, upstreamCredential, authntest.InternalToken} {
		if proc.Log.Contains(secret) {
			t.Errorf("a secret (%s...) reached the log:\n%s", secret[:8], proc.Log)
		}
	}
}
