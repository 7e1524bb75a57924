package keycloak

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/moat-ai/moat/libs/keycloaktest"
)

// The admin session outlives its tokens: an expired access token is
// refreshed without the password, an expired session logs in again, and a
// token Keycloak refuses is replaced once.
func TestAdminRenewsItsSession(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	u, user, password := keycloaktest.Server(t)
	a := NewAdmin(u, user, password, "master")
	// Deleting a provider that does not exist needs a valid token and
	// changes nothing.
	probe := func() error { return a.DeleteIdentityProvider(ctx, "moat-test-no-such-provider") }
	if err := probe(); err != nil {
		t.Fatalf("first call = %v", err)
	}
	first := a.access
	if first == "" || a.refresh == "" || !a.accessExpiry.Before(a.refreshExpiry) {
		t.Fatalf("session after login: access expiry %v, refresh expiry %v", a.accessExpiry, a.refreshExpiry)
	}

	// An unknown admin proves the refresh token did the work. (Not the
	// real admin with a wrong password: brute-force detection could lock
	// it out.)
	a.user, a.password = "moat-test-no-such-admin", "wrong-password"
	start := time.Now()
	a.now = func() time.Time { return a.accessExpiry.Add(time.Second) }
	if err := probe(); err != nil {
		t.Fatalf("call after the access token's end = %v", err)
	}
	if a.access == first {
		t.Error("the access token was not renewed")
	}

	a.now = func() time.Time { return start.Add(24 * time.Hour) }
	err := probe()
	if err == nil || strings.Contains(err.Error(), "wrong-password") {
		t.Fatalf("call after the session's end with a wrong password = %v, want a login error without the password", err)
	}
	a.user, a.password = user, password
	if err := probe(); err != nil {
		t.Fatalf("call after the session's end = %v", err)
	}

	a.now = time.Now
	a.access, a.accessExpiry = "not-a-token", time.Now().Add(time.Hour)
	if err := probe(); err != nil {
		t.Fatalf("call with a refused token = %v", err)
	}
	if a.access == "not-a-token" {
		t.Error("the refused token was kept")
	}
}
