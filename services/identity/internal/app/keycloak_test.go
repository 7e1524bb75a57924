package app_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/Nerzal/gocloak/v13"

	"github.com/moat-ai/moat/libs/events/eventstest"
	"github.com/moat-ai/moat/libs/pg/pgtest"
	"github.com/moat-ai/moat/libs/serve/servetest"
	"github.com/moat-ai/moat/services/identity/internal/app"
)

// With MOAT_KEYCLOAK_URL set, identity sets up its realm at start: the
// realm appears, with the first platform admin able to sign in.
func TestServeBootstrapsKeycloak(t *testing.T) {
	t.Parallel()
	kcURL, kcUser, kcPassword := os.Getenv("TEST_KEYCLOAK_URL"), os.Getenv("TEST_KEYCLOAK_ADMIN_USER"), os.Getenv("TEST_KEYCLOAK_ADMIN_PASSWORD")
	if kcURL == "" || kcPassword == "" {
		if testing.Short() {
			t.Skip("integration test: needs Keycloak; run without -short (make test starts it)")
		}
		t.Fatal("TEST_KEYCLOAK_URL and TEST_KEYCLOAK_ADMIN_PASSWORD are not set: run `make test`, which starts Keycloak")
	}
	_, dbURL := pgtest.NewDatabase(t, app.Migrations...)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	realm := "moat-app-" + hex.EncodeToString(b)
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	e := servetest.Env{
		"GRPC_ADDR":                     servetest.FreeAddr(t),
		"HTTP_ADDR":                     servetest.FreeAddr(t),
		"DATABASE_URL":                  dbURL,
		"NATS_URL":                      eventstest.NewServer(t).ClientURL(),
		"DRAIN_TIMEOUT":                 "2s",
		"MOAT_KEY_SECRET":               base64.StdEncoding.EncodeToString(secret),
		"MOAT_INTERNAL_TOKEN":           "internal-token-for-this-test",
		"MOAT_BOOTSTRAP_ADMIN_KEY_FILE": filepath.Join(t.TempDir(), "admin.key"),
		"MOAT_KEYCLOAK_URL":             kcURL,
		"MOAT_KEYCLOAK_ADMIN_USER":      kcUser,
		"MOAT_KEYCLOAK_ADMIN_PASSWORD":  kcPassword,
		"MOAT_KEYCLOAK_REALM":           realm,
		"MOAT_CONSOLE_REDIRECT_URIS":    "http://127.0.0.1:9999/callback",
		"MOAT_ADMIN_USER":               "admin",
		"MOAT_ADMIN_PASSWORD":           "a-test-password-" + hex.EncodeToString(b),
	}
	kc := gocloak.NewClient(kcURL)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if jwt, err := kc.LoginAdmin(ctx, kcUser, kcPassword, "master"); err == nil {
			_ = kc.DeleteRealm(ctx, jwt.AccessToken, realm)
		}
	})

	p := servetest.Start(t, app.Run, e)
	servetest.WaitServing(t, p, e["GRPC_ADDR"], 20*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		// The platform admin's password grant is off (the console uses
		// PKCE); the realm's first admin user shows it is complete.
		jwt, err := kc.LoginAdmin(ctx, kcUser, kcPassword, "master")
		if err == nil {
			users, err := kc.GetUsers(ctx, jwt.AccessToken, realm, gocloak.GetUsersParams{Username: gocloak.StringP("admin"), Exact: gocloak.BoolP(true)})
			if err == nil && len(users) == 1 {
				break
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("realm %s not bootstrapped within 60s; log:\n%s", realm, p.Log)
		case <-time.After(200 * time.Millisecond):
		}
	}
	if p.Log.Contains(e["MOAT_ADMIN_PASSWORD"]) || p.Log.Contains(kcPassword) {
		t.Error("a Keycloak password appears in identity's log")
	}
}
