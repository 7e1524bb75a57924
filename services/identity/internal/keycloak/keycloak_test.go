package keycloak_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/Nerzal/gocloak/v13"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/moat-ai/moat/libs/authn"
	"github.com/moat-ai/moat/libs/keycloaktest"
	identityv1 "github.com/moat-ai/moat/proto/gen/go/moat/identity/v1"
	"github.com/moat-ai/moat/services/identity/internal/keycloak"
)

// newRealm returns a bootstrap configuration for a realm of this test only,
// deleted when the test ends.
func newRealm(t *testing.T) keycloak.Config {
	t.Helper()
	u, user, password := keycloaktest.Server(t)
	cfg := keycloak.Config{
		URL: u, AdminUser: user, AdminPassword: password,
		Realm:         keycloaktest.RandomName("moat-test-"),
		RedirectURIs:  []string{"http://127.0.0.1:9999/callback"},
		PlatformAdmin: "admin", PlatformAdminPassword: keycloaktest.RandomName("pw-"),
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		kc := gocloak.NewClient(u)
		jwt, err := kc.LoginAdmin(ctx, user, password, "master")
		if err != nil {
			t.Errorf("log in to delete realm: %v", err)
			return
		}
		if err := kc.DeleteRealm(ctx, jwt.AccessToken, cfg.Realm); err != nil {
			t.Errorf("delete realm %s: %v", cfg.Realm, err)
		}
	})
	return cfg
}

func claims(t *testing.T, token string) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("access token has %d parts", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func audience(c map[string]any) []string {
	switch a := c["aud"].(type) {
	case string:
		return []string{a}
	case []any:
		var out []string
		for _, v := range a {
			s, _ := v.(string)
			out = append(out, s)
		}
		return out
	}
	return nil
}

// Bootstrap creates the realm, clients, mappers, group and first admin,
// and a second run converges to the same state (same client secrets).
func TestBootstrapIsIdempotentAndTokensCarryTheAudience(t *testing.T) {
	t.Parallel()
	cfg := newRealm(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	log := slog.New(slog.DiscardHandler)

	first, err := keycloak.Bootstrap(ctx, cfg, log)
	if err != nil {
		t.Fatalf("Bootstrap = %v", err)
	}
	second, err := keycloak.Bootstrap(ctx, cfg, log)
	if err != nil {
		t.Fatalf("second Bootstrap = %v", err)
	}
	if diff := cmp.Diff(first, second); diff != "" {
		t.Errorf("second Bootstrap differs (-first +second):\n%s", diff)
	}
	if want := cfg.URL + "/realms/" + cfg.Realm; first.Issuer != want {
		t.Errorf("issuer = %q, want %q", first.Issuer, want)
	}
	if len(first.ServiceSecrets) != len(keycloak.Services) {
		t.Fatalf("service secrets for %d services, want %d", len(first.ServiceSecrets), len(keycloak.Services))
	}

	// A service account's access token carries Moat's audience.
	kc := gocloak.NewClient(cfg.URL)
	jwt, err := kc.LoginClient(ctx, "moat-gateway", first.ServiceSecrets["gateway"], cfg.Realm)
	if err != nil {
		t.Fatalf("client credentials for moat-gateway: %v", err)
	}
	c := claims(t, jwt.AccessToken)
	if !slices.Contains(audience(c), "moat") || c["iss"] != first.Issuer {
		t.Errorf("service token aud %v iss %v, want moat and %s", c["aud"], c["iss"], first.Issuer)
	}
	if _, err := kc.LoginClient(ctx, "moat-gateway", "wrong-secret", cfg.Realm); err == nil {
		t.Error("client credentials with a wrong secret succeeded")
	}
}

// The console client works end to end: authorization code with PKCE, driven
// as a browser would (login form, redirect), gives the platform admin an
// access token with Moat's audience and the platform-admins group.
func TestConsoleSignInWithPKCE(t *testing.T) {
	t.Parallel()
	cfg := newRealm(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := keycloak.Bootstrap(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("Bootstrap = %v", err)
	}
	token, err := keycloaktest.SignIn(ctx, res.Issuer, keycloak.ConsoleClientID, cfg.RedirectURIs[0], cfg.PlatformAdmin, cfg.PlatformAdminPassword, nil)
	if err != nil {
		t.Fatalf("sign in: %v", err)
	}
	c := claims(t, token)
	groups, _ := c["groups"].([]any)
	if !slices.Contains(audience(c), "moat") || !slices.Contains(groups, any(keycloak.PlatformAdminGroup)) || c["preferred_username"] != cfg.PlatformAdmin {
		t.Errorf("console token aud %v groups %v user %v; want moat, %s, %s", c["aud"], groups, c["preferred_username"], keycloak.PlatformAdminGroup, cfg.PlatformAdmin)
	}

	// Moat's token verifier accepts Keycloak's token as it comes (RS256,
	// JWKS by kid, Moat's audience) and names the user.
	v, err := authn.NewTokenVerifier(authn.TokenConfig{Issuer: res.Issuer, Audience: "moat"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	tc, err := v.Verify(ctx, token)
	if err != nil {
		t.Fatalf("Verify(console token) = %v", err)
	}
	if tc.PreferredUsername != cfg.PlatformAdmin || !slices.Contains(tc.Groups, keycloak.PlatformAdminGroup) {
		t.Errorf("verified claims: user %q groups %v", tc.PreferredUsername, tc.Groups)
	}
	other, err := authn.NewTokenVerifier(authn.TokenConfig{Issuer: res.Issuer, Audience: "someone-else"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Verify(ctx, token); !errors.Is(err, authn.ErrUnauthenticated) {
		t.Errorf("Verify with another audience = %v, want ErrUnauthenticated", err)
	}

	// Through the authn interceptor, as every service wires it, the admin
	// administers and a signed-in user outside the group is refused.
	userPassword := keycloaktest.RandomName("pw-")
	addUser(ctx, t, cfg, "someone", userPassword)
	userToken, err := keycloaktest.SignIn(ctx, res.Issuer, keycloak.ConsoleClientID, cfg.RedirectURIs[0], "someone", userPassword, nil)
	if err != nil {
		t.Fatalf("sign in as a user outside %s: %v", keycloak.PlatformAdminGroup, err)
	}
	ic := &authn.Interceptor{Tokens: v}
	for _, tt := range []struct {
		name, token string
		want        codes.Code
		admin       bool
	}{
		{"platform admin", token, codes.OK, true},
		{"user outside the group", userToken, codes.PermissionDenied, false},
		{"token cut short", token[:len(token)-8], codes.Unauthenticated, false},
	} {
		p, err := authorizeThrough(ic, tt.token)
		if status.Code(err) != tt.want || p.IsPlatformAdmin() != tt.admin {
			t.Errorf("%s: %v, principal %+v; want %v, admin %v", tt.name, err, p, tt.want, tt.admin)
		}
		if tt.want != codes.Unauthenticated && (p.Kind != authn.KindUser || !strings.HasPrefix(p.Subject, "users/") || p.Username == "") {
			t.Errorf("%s: principal %+v, want a user named by subject and username", tt.name, p)
		}
	}

	// Without the PKCE verifier, or with a wrong password, there is no token.
	if _, err := keycloaktest.SignIn(ctx, res.Issuer, keycloak.ConsoleClientID, cfg.RedirectURIs[0], cfg.PlatformAdmin, "not-the-password", nil); err == nil {
		t.Error("sign-in with a wrong password succeeded")
	}
}

// addUser creates an enabled user in cfg's realm, in no group.
func addUser(ctx context.Context, t *testing.T, cfg keycloak.Config, username, password string) {
	t.Helper()
	kc := gocloak.NewClient(cfg.URL)
	jwt, err := kc.LoginAdmin(ctx, cfg.AdminUser, cfg.AdminPassword, "master")
	if err != nil {
		t.Fatalf("log in as admin: %v", err)
	}
	id, err := kc.CreateUser(ctx, jwt.AccessToken, cfg.Realm, gocloak.User{
		Username: gocloak.StringP(username), Enabled: gocloak.BoolP(true), EmailVerified: gocloak.BoolP(true),
		Email: gocloak.StringP(username + "@moat.invalid"), FirstName: gocloak.StringP("Some"), LastName: gocloak.StringP("One"),
	})
	if err != nil {
		t.Fatalf("create user %s: %v", username, err)
	}
	if err := kc.SetPassword(ctx, jwt.AccessToken, id, cfg.Realm, password, false); err != nil {
		t.Fatalf("set the password of %s: %v", username, err)
	}
}

// authorizeThrough runs an administrative call with token through ic, to a
// handler that admits platform admins only (authn.RequirePlatformAdmin), and returns
// the principal the handler saw.
func authorizeThrough(ic *authn.Interceptor, token string) (authn.Principal, error) {
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+token))
	var p authn.Principal
	_, err := ic.Unary()(ctx, nil, &grpc.UnaryServerInfo{FullMethod: identityv1.IdentityService_ListApiKeys_FullMethodName},
		func(ctx context.Context, _ any) (any, error) {
			p, _ = authn.FromContext(ctx)
			if err := authn.RequirePlatformAdmin(ctx); err != nil {
				return nil, status.Error(codes.PermissionDenied, "platform admins only")
			}
			return nil, nil
		})
	return p, err
}
