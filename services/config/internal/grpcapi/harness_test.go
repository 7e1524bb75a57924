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
// platform-admin key and one project key.
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
		authntest.Entry(h, "project1", projectKey, identityv1.KeyIndexEntry_ROLE_PROJECT, "orgs/acme", "orgs/acme/projects/web"),
	})
	auth := &authn.Interceptor{Auth: ix, Token: authntest.InternalToken, Internal: grpcapi.InternalMethods, Denied: api.AuditRefusal}
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
