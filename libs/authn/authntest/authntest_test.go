package authntest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/moat-ai/moat/libs/authn"
	"github.com/moat-ai/moat/libs/authn/authntest"
	"github.com/moat-ai/moat/libs/grpcclient"
	"github.com/moat-ai/moat/libs/serve/servetest"
	identityv1 "github.com/moat-ai/moat/proto/gen/go/moat/identity/v1"
)

func watch(t *testing.T, addr, token string) identityv1.IdentityServiceClient {
	t.Helper()
	conn, err := grpcclient.Dial(addr, nil, token)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return identityv1.NewIdentityServiceClient(conn)
}

// The fake feeds authn.Follow like identity does: a snapshot of its
// entries, then live upserts and removals, to token holders only.
func TestIdentityFeedsFollow(t *testing.T) {
	t.Parallel()
	h := authntest.Hasher(t)
	admin, project, later := authntest.Key(t), authntest.Key(t), authntest.Key(t)
	f := authntest.StartIdentity(t, authntest.InternalToken,
		authntest.Entry(h, "admin", admin, identityv1.KeyIndexEntry_ROLE_PLATFORM_ADMIN, "", ""),
		authntest.Entry(h, "web", project, identityv1.KeyIndexEntry_ROLE_PROJECT, "orgs/acme", "orgs/acme/projects/web"),
	)

	ix := authn.NewIndex(h)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- authn.Follow(ctx, watch(t, f.Addr(), authntest.InternalToken), ix, nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Follow = %v", err)
		}
	})

	now := time.Now()
	servetest.Eventually(t, 10*time.Second, "the snapshot", ix.Ready)
	if p, err := ix.Authenticate(admin, now); err != nil || !p.IsPlatformAdmin() || p.Prefix != authn.DisplayPrefix(admin) {
		t.Errorf("Authenticate(admin) = %+v, %v; want the platform admin", p, err)
	}
	if p, err := ix.Authenticate(project, now); err != nil || p.Project != "orgs/acme/projects/web" || p.Organization != "orgs/acme" {
		t.Errorf("Authenticate(project) = %+v, %v; want the project key of orgs/acme/projects/web", p, err)
	}

	f.Upsert(authntest.Entry(h, "later", later, identityv1.KeyIndexEntry_ROLE_PLATFORM_ADMIN, "", ""))
	servetest.Eventually(t, 10*time.Second, "the upserted key", func() bool { _, err := ix.Authenticate(later, now); return err == nil })
	f.Remove("admin")
	servetest.Eventually(t, 10*time.Second, "the removal", func() bool {
		_, err := ix.Authenticate(admin, now)
		return errors.Is(err, authn.ErrUnauthenticated)
	})
	if ix.Version() != 3 || ix.Len() != 2 {
		t.Errorf("index at version %d with %d keys, want version 3 with 2", ix.Version(), ix.Len())
	}

	// A watcher that connects now gets the current state in its snapshot.
	stream, err := watch(t, f.Addr(), authntest.InternalToken).WatchKeyIndex(ctx, &identityv1.WatchKeyIndexRequest{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil || first.GetVersion() != 3 || len(first.GetSnapshot().GetEntries()) != 2 {
		t.Errorf("late watcher's first message = %v, %v; want a snapshot of 2 keys at version 3", first, err)
	}
}

func TestIdentityRefusesWithoutToken(t *testing.T) {
	t.Parallel()
	f := authntest.StartIdentity(t, authntest.InternalToken)
	for _, token := range []string{"", "another-token-of-some-length"} {
		stream, err := watch(t, f.Addr(), token).WatchKeyIndex(context.Background(), &identityv1.WatchKeyIndexRequest{})
		if err == nil {
			_, err = stream.Recv()
		}
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("WatchKeyIndex with token %q = %v, want Unauthenticated", token, err)
		}
	}
}

func TestEnv(t *testing.T) {
	t.Parallel()
	for _, addr := range []string{"127.0.0.1:1", ""} {
		e := authntest.Env(addr)
		if err := (authn.Config{KeySecret: e["MOAT_KEY_SECRET"], InternalToken: e["MOAT_INTERNAL_TOKEN"], IdentityGRPC: e["MOAT_IDENTITY_GRPC"]}).Validate(addr != ""); err != nil {
			t.Errorf("Env(%q) does not validate: %v", addr, err)
		}
		if _, ok := e["MOAT_IDENTITY_GRPC"]; ok != (addr != "") {
			t.Errorf("Env(%q) = %v, want MOAT_IDENTITY_GRPC only with an address", addr, e)
		}
	}
}

// The fake issuer's tokens pass the verifier a service builds from its
// configuration, and its claims make admins of PlatformAdminGroup only.
func TestIssuer(t *testing.T) {
	t.Parallel()
	iss := authntest.NewIssuer(t)
	v, err := authn.Config{OIDCIssuer: iss.URL(), OIDCAudience: authntest.Audience}.Verifier(nil)
	if err != nil || v == nil {
		t.Fatalf("Verifier() = %v, %v", v, err)
	}
	ctx := context.Background()
	admin, err := v.Verify(ctx, iss.Token(t, iss.Claims("alice", authn.PlatformAdminGroup)))
	if err != nil || admin.Subject != "alice" || admin.PreferredUsername != "alice" || len(admin.Groups) != 1 || admin.Groups[0] != authn.PlatformAdminGroup {
		t.Errorf("Verify(admin token) = %+v, %v", admin, err)
	}
	if user, err := v.Verify(ctx, iss.Token(t, iss.Claims("bob"))); err != nil || user.Subject != "bob" || len(user.Groups) != 0 {
		t.Errorf("Verify(user token) = %+v, %v", user, err)
	}
	other := iss.Claims("carol")
	other["aud"] = "someone-else"
	if _, err := v.Verify(ctx, iss.Token(t, other)); !errors.Is(err, authn.ErrUnauthenticated) {
		t.Errorf("Verify(token for another audience) = %v, want ErrUnauthenticated", err)
	}
}
