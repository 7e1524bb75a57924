package app_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/moat-ai/moat/libs/authn"
	"github.com/moat-ai/moat/libs/authn/authntest"
	"github.com/moat-ai/moat/libs/events/eventstest"
	"github.com/moat-ai/moat/libs/pg/pgtest"
	"github.com/moat-ai/moat/libs/serve/servetest"
	identityv1 "github.com/moat-ai/moat/proto/gen/go/moat/identity/v1"
	"github.com/moat-ai/moat/services/identity/internal/app"
	"github.com/moat-ai/moat/services/identity/internal/identity"
)

func TestCommon(t *testing.T) {
	t.Parallel()
	servetest.TestCommon(t, servetest.Service{
		Run: app.Run, Migrations: app.Migrations, Stream: "IDENTITY",
		Env: vars(filepath.Join(t.TempDir(), "admin.key")),
	})
}

func TestConfigProblems(t *testing.T) {
	t.Parallel()
	err := app.Run(context.Background(), nil, servetest.Env{"MOAT_KEY_SECRET": "c2hvcnQ="}.Getenv, io.Discard)
	for _, want := range []string{"MOAT_KEY_SECRET must decode to at least 32 bytes", "MOAT_INTERNAL_TOKEN is required", "MOAT_BOOTSTRAP_ADMIN_KEY_FILE is required"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Run = %v, want it to mention %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "c2hvcnQ") {
		t.Errorf("Run = %v quotes the secret", err)
	}
}

// vars are identity's own variables: the shared secrets and the bootstrap
// admin key's file. Identity follows no one, so it has no identity address.
func vars(keyFile string) servetest.Env {
	e := authntest.Env("")
	e["MOAT_BOOTSTRAP_ADMIN_KEY_FILE"] = keyFile
	return e
}

func env(t *testing.T, dbURL, natsURL, keyFile string) servetest.Env {
	t.Helper()
	e := vars(keyFile)
	e["GRPC_ADDR"] = servetest.FreeAddr(t)
	e["HTTP_ADDR"] = servetest.FreeAddr(t)
	e["NATS_URL"] = natsURL
	e["DATABASE_URL"] = dbURL
	e["DRAIN_TIMEOUT"] = "2s"
	return e
}

func adminKeys(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM api_keys WHERE role = 'platform_admin'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestBootstrap starts two replicas at once on one database: they create
// one platform admin key between them, in a file only its owner can read,
// and either replica accepts it over gRPC and REST.
func TestBootstrap(t *testing.T) {
	t.Parallel()
	pool, dbURL := pgtest.NewDatabase(t, app.Migrations...)
	natsURL := eventstest.NewServer(t).ClientURL()
	keyFile := filepath.Join(t.TempDir(), "admin.key")

	envs := []servetest.Env{env(t, dbURL, natsURL, keyFile), env(t, dbURL, natsURL, keyFile)}
	procs := make([]*servetest.Process, len(envs))
	for i, e := range envs { // both start at once, each in its own goroutine
		procs[i] = servetest.Start(t, app.Run, e)
	}
	for i, e := range envs {
		servetest.WaitServing(t, procs[i], e["GRPC_ADDR"], 20*time.Second)
	}

	if n := adminKeys(t, pool); n != 1 {
		t.Fatalf("%d platform admin keys, want 1", n)
	}
	info, err := os.Stat(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Errorf("key file mode %v, want 0600", perm)
	}
	b, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	key := strings.TrimSpace(string(b))
	if !strings.HasPrefix(key, authn.KeyPrefix) || len(key) != 48 {
		t.Fatalf("key file holds %q..., want a key", authn.DisplayPrefix(key))
	}
	logged := 0
	for _, p := range procs {
		if p.Log.Contains(strings.TrimPrefix(key, authn.KeyPrefix)) {
			t.Error("the key reached the log")
		}
		if p.Log.Contains(`"prefix":"` + authn.DisplayPrefix(key) + `"`) {
			logged++
			if !p.Log.Contains(keyFile) {
				t.Error("the creation log line does not name the file")
			}
		}
	}
	if logged != 1 {
		t.Errorf("%d replicas logged the creation, want 1", logged)
	}

	// gRPC on the first replica.
	conn, err := grpc.NewClient(envs[0]["GRPC_ADDR"], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+key)
	created, err := identityv1.NewIdentityServiceClient(conn).CreateApiKey(ctx, &identityv1.CreateApiKeyRequest{
		Parent: "orgs/acme/projects/web", ApiKey: &identityv1.ApiKey{DisplayName: "ci"}})
	if err != nil {
		t.Fatalf("CreateApiKey with the bootstrap key = %v", err)
	}

	// REST on the second replica, through its own gRPC server.
	code, body := servetest.GetAs(t, "http://"+envs[1]["HTTP_ADDR"]+"/api/v1/orgs/acme/projects/web/keys", key)
	if code != http.StatusOK || !strings.Contains(body, created.GetApiKey().GetName()) {
		t.Errorf("GET keys = %d %s, want 200 with %s", code, body, created.GetApiKey().GetName())
	}
	if code, body := servetest.GetAs(t, "http://"+envs[1]["HTTP_ADDR"]+"/api/v1/orgs/acme/projects/web/keys", ""); code != http.StatusUnauthorized || !strings.Contains(body, `"code"`) {
		t.Errorf("GET keys without a key = %d %s, want 401 with a status body", code, body)
	}

	// A restart finds the admin key and leaves the file alone.
	for _, p := range procs {
		if err := p.Stop(t, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	again := env(t, dbURL, natsURL, keyFile)
	p := servetest.Start(t, app.Run, again)
	servetest.WaitServing(t, p, again["GRPC_ADDR"], 20*time.Second)
	if n := adminKeys(t, pool); n != 1 {
		t.Errorf("after a restart: %d platform admin keys, want 1", n)
	}
	if b2, err := os.ReadFile(keyFile); err != nil || string(b2) != string(b) {
		t.Errorf("a restart changed the key file (%v)", err)
	}
}

// TestBootstrapKeyFile covers the file cases: a key left by a start that
// crashed before its commit is adopted; anything else is never overwritten.
func TestBootstrapKeyFile(t *testing.T) {
	t.Parallel()
	orphan := authntest.Key(t)
	tests := []struct {
		name    string
		content string
		wantErr bool
	}{
		{"a key the database does not know is adopted", orphan + "\n", false},
		{"garbage is refused", "not a key\n", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			pool, dbURL := pgtest.NewDatabase(t, app.Migrations...)
			keyFile := filepath.Join(t.TempDir(), "admin.key")
			if err := os.WriteFile(keyFile, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			e := env(t, dbURL, eventstest.NewServer(t).ClientURL(), keyFile)
			if tt.wantErr {
				err := app.Run(t.Context(), nil, e.Getenv, io.Discard)
				if !errors.Is(err, identity.ErrKeyFileConflict) || !strings.Contains(err.Error(), keyFile) {
					t.Errorf("Run = %v, want ErrKeyFileConflict naming the file", err)
				}
				if strings.Contains(err.Error(), "not a key") {
					t.Error("the error quotes the file")
				}
				if n := adminKeys(t, pool); n != 0 {
					t.Errorf("%d admin keys, want 0", n)
				}
				return
			}
			p := servetest.Start(t, app.Run, e)
			servetest.WaitServing(t, p, e["GRPC_ADDR"], 20*time.Second)
			conn, err := grpc.NewClient(e["GRPC_ADDR"], grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+orphan)
			if _, err := identityv1.NewIdentityServiceClient(conn).ListApiKeys(ctx, &identityv1.ListApiKeysRequest{Parent: "orgs/acme/projects/web"}); err != nil {
				t.Errorf("ListApiKeys with the adopted key = %v", err)
			}
		})
	}
}

// TestRevokedAdminKeyFile: when the only admin key was revoked, the file
// still holds it, and identity refuses to start rather than overwrite it.
func TestRevokedAdminKeyFile(t *testing.T) {
	t.Parallel()
	_, dbURL := pgtest.NewDatabase(t, app.Migrations...)
	natsURL := eventstest.NewServer(t).ClientURL()
	keyFile := filepath.Join(t.TempDir(), "admin.key")
	e := env(t, dbURL, natsURL, keyFile)
	p := servetest.Start(t, app.Run, e)
	servetest.WaitServing(t, p, e["GRPC_ADDR"], 20*time.Second)
	b, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	key := strings.TrimSpace(string(b))
	conn, err := grpc.NewClient(e["GRPC_ADDR"], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	pool, err := pgxpool.New(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var id string
	if err := pool.QueryRow(t.Context(), `SELECT id::text FROM api_keys WHERE role = 'platform_admin'`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+key)
	if _, err := identityv1.NewIdentityServiceClient(conn).RevokeApiKey(ctx, &identityv1.RevokeApiKeyRequest{Name: "keys/" + id}); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(t, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	err = app.Run(t.Context(), nil, env(t, dbURL, natsURL, keyFile).Getenv, io.Discard)
	if !errors.Is(err, identity.ErrKeyFileConflict) {
		t.Errorf("Run with a revoked admin key in the file = %v, want ErrKeyFileConflict", err)
	}
}
