package grpcapi_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"log/slog"
	"net"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/moat-ai/moat/libs/authn"
	"github.com/moat-ai/moat/libs/authn/authntest"
	"github.com/moat-ai/moat/libs/events"
	"github.com/moat-ai/moat/libs/grpcclient"
	"github.com/moat-ai/moat/libs/pg"
	"github.com/moat-ai/moat/libs/pg/pgtest"
	"github.com/moat-ai/moat/libs/secretbox"
	auditv1 "github.com/moat-ai/moat/proto/gen/go/moat/audit/v1"
	configv1 "github.com/moat-ai/moat/proto/gen/go/moat/config/v1"
	identityv1 "github.com/moat-ai/moat/proto/gen/go/moat/identity/v1"
	"github.com/moat-ai/moat/services/config/internal/config"
	"github.com/moat-ai/moat/services/config/internal/grpcapi"
	"github.com/moat-ai/moat/services/config/internal/postgres"
)

// harness is a config gRPC server on loopback over a fresh database, with
// the real authentication interceptor fed by a fake key index holding one
// platform-admin key, one project key of orgA and the memberships of
// tenancyUsers, and by a fake token verifier that knows those users.
type harness struct {
	pool    *pgxpool.Pool
	client  configv1.ConfigServiceClient
	keyring *secretbox.Keyring
	logs    *syncBuffer

	admin, project, anon, internal context.Context
}

const (
	adminSubject   = "keys/admin1"
	projectSubject = "keys/project1"
)

func newHarness(t *testing.T, opts grpcapi.Options) *harness {
	t.Helper()
	pool, _ := pgtest.NewDatabase(t, events.Migrations, postgres.Migrations)
	kek := make([]byte, 32)
	_, _ = rand.Read(kek)
	keyring, err := secretbox.ParseKeyring("k1:" + base64.StdEncoding.EncodeToString(kek))
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	notifier := pg.NewNotifier(pool, postgres.NotifyChannel, log)
	svc := config.NewService(postgres.NewStore(pool, propagation.TraceContext{}), sealer{keyring})
	opts.Log, opts.Notifier = log, notifier
	api := grpcapi.New(svc, opts)
	wg.Add(2)
	go func() { defer wg.Done(); _ = notifier.Run(ctx) }()
	go func() { defer wg.Done(); _ = api.Run(ctx) }()

	h := authntest.Hasher(t)
	adminKey, projectKey := authntest.Key(t), authntest.Key(t)
	ix := authn.NewIndex(h)
	ix.Replace(1, []*identityv1.KeyIndexEntry{
		authntest.Entry(h, "admin1", adminKey, identityv1.KeyIndexEntry_ROLE_PLATFORM_ADMIN, "", ""),
		authntest.Entry(h, "project1", projectKey, identityv1.KeyIndexEntry_ROLE_PROJECT, orgA, orgA+"/projects/web"),
	}, tenancyMemberships()...)
	auth := &authn.Interceptor{Auth: ix, Tokens: tenancyTokens(), Token: authntest.InternalToken,
		Internal: grpcapi.InternalMethods, Denied: api.AuditRefusal}
	srv := grpc.NewServer(
		grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithTracerProvider(sdktrace.NewTracerProvider()))),
		grpc.ChainUnaryInterceptor(api.Unary(), auth.Unary()),
		grpc.ChainStreamInterceptor(auth.Stream()),
	)
	configv1.RegisterConfigServiceServer(srv, api)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() { defer wg.Done(); _ = srv.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		cancel()
		srv.Stop()
		wg.Wait()
	})

	bg := context.Background()
	return &harness{
		pool:     pool,
		client:   configv1.NewConfigServiceClient(conn),
		keyring:  keyring,
		logs:     logs,
		admin:    metadata.AppendToOutgoingContext(bg, "authorization", "Bearer "+adminKey),
		project:  metadata.AppendToOutgoingContext(bg, "authorization", "Bearer "+projectKey),
		anon:     bg,
		internal: metadata.AppendToOutgoingContext(bg, grpcclient.InternalTokenKey, authntest.InternalToken),
	}
}

// sealer adapts the keyring to config.Sealer, as the app does.
type sealer struct{ k *secretbox.Keyring }

func (s sealer) Seal(plaintext, aad []byte) (config.Sealed, error) {
	sealed, err := s.k.Seal(plaintext, aad)
	return config.Sealed{KEKID: sealed.KEKID, WrappedKey: sealed.WrappedKey, Ciphertext: sealed.Ciphertext}, err
}

// outboxRow is one audit event the service enqueued.
type outboxRow struct {
	subject string
	headers map[string][]string
	event   *auditv1.AuditEvent
}

// audits returns every enqueued event in order.
func (h *harness) audits(t *testing.T) []outboxRow {
	t.Helper()
	rows, err := h.pool.Query(context.Background(), `SELECT subject, headers, payload FROM outbox ORDER BY event_id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []outboxRow
	for rows.Next() {
		var r outboxRow
		var payload []byte
		if err := rows.Scan(&r.subject, &r.headers, &payload); err != nil {
			t.Fatal(err)
		}
		r.event = &auditv1.AuditEvent{}
		if err := proto.Unmarshal(payload, r.event); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

type syncBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	return len(p), nil
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

func appendAuth(ctx context.Context, v string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", v)
}

func appendToken(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, grpcclient.InternalTokenKey, token)
}

// The two tenants of the cross-tenant tests (RELIABILITY 15): the
// harness's project key belongs to orgA.
const (
	orgA = "orgs/acme"
	orgB = "orgs/umbrella"
)

// tenancyUsers are the OIDC users of the cross-tenant tests, by their sub:
// each holds the roles listed (nil for none) and, when platform is set, is
// in the platform-admins group.
var tenancyUsers = []struct {
	label    string
	sub      string
	roles    map[string]identityv1.OrgRole
	platform bool
}{
	{label: "org A admin", sub: "alice", roles: map[string]identityv1.OrgRole{orgA: identityv1.OrgRole_ORG_ROLE_ADMIN}},
	{label: "org A member", sub: "carol", roles: map[string]identityv1.OrgRole{orgA: identityv1.OrgRole_ORG_ROLE_MEMBER}},
	{label: "org B admin", sub: "bob", roles: map[string]identityv1.OrgRole{orgB: identityv1.OrgRole_ORG_ROLE_ADMIN}},
	{label: "platform admin", sub: "root", platform: true},
}

// tenancyMemberships are the key-index memberships of tenancyUsers.
func tenancyMemberships() []*identityv1.MembershipEntry {
	var out []*identityv1.MembershipEntry
	for _, u := range tenancyUsers {
		for org, role := range u.roles {
			out = append(out, &identityv1.MembershipEntry{User: "users/" + u.sub, Organization: org, Role: role})
		}
	}
	return out
}

// fakeTokens is an authn.Verifier that accepts fixed bearer strings. The
// real OIDC verification is tested in libs/authn against Keycloak; here
// only what the interceptor makes of verified claims matters.
type fakeTokens map[string]authn.TokenClaims

func (f fakeTokens) Verify(_ context.Context, raw string) (authn.TokenClaims, error) {
	c, ok := f[raw]
	if !ok {
		return authn.TokenClaims{}, authn.ErrUnauthenticated
	}
	return c, nil
}

// tenancyTokens accepts userToken(sub) for every user of tenancyUsers.
func tenancyTokens() fakeTokens {
	f := fakeTokens{}
	for _, u := range tenancyUsers {
		c := authn.TokenClaims{Subject: u.sub, PreferredUsername: u.sub}
		if u.platform {
			c.Groups = []string{authn.PlatformAdminGroup}
		}
		f[userToken(u.sub)] = c
	}
	return f
}

func userToken(sub string) string { return "token-of-" + sub }

// asUser is the outgoing context of a call by the user with sub.
func asUser(sub string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+userToken(sub))
}
