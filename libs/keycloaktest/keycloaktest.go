// Package keycloaktest holds test helpers against a real Keycloak: the
// server from the environment, throwaway realms that play an
// organisation's own identity provider (OIDC or SAML), and a programmatic
// browser sign-in (authorization code with PKCE) that follows Keycloak's
// pages, brokered ones included.
//
// The server comes from TEST_KEYCLOAK_URL, TEST_KEYCLOAK_ADMIN_USER and
// TEST_KEYCLOAK_ADMIN_PASSWORD (a master-realm admin); `make test` starts
// Keycloak and sets them.
package keycloaktest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Nerzal/gocloak/v13"
)

// The variables that name the test Keycloak.
const (
	EnvURL           = "TEST_KEYCLOAK_URL"
	EnvAdminUser     = "TEST_KEYCLOAK_ADMIN_USER"
	EnvAdminPassword = "TEST_KEYCLOAK_ADMIN_PASSWORD" //nolint:gosec // the name of a variable, not a credential
)

// Server returns the test Keycloak's base URL and master-realm admin. Without
// them the test fails, naming what is missing; under -short it is skipped
// instead, since -short selects unit tests only.
func Server(t testing.TB) (url, adminUser, adminPassword string) {
	t.Helper()
	url, adminUser, adminPassword = os.Getenv(EnvURL), os.Getenv(EnvAdminUser), os.Getenv(EnvAdminPassword)
	if url == "" || adminUser == "" || adminPassword == "" {
		if testing.Short() {
			t.Skip("integration test: needs Keycloak; run without -short (make test starts it)")
		}
		t.Fatalf("%s, %s and %s are not set: this test needs Keycloak. Run `make test`, which installs and starts it.",
			EnvURL, EnvAdminUser, EnvAdminPassword)
	}
	return strings.TrimSuffix(url, "/"), adminUser, adminPassword
}

// RandomName returns prefix followed by 8 random hex digits, for realms and
// other names that tests running in parallel must not share.
func RandomName(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (it aborts the program instead)
	return prefix + hex.EncodeToString(b)
}

// timeout bounds each helper's calls to Keycloak.
const timeout = time.Minute

// session is a master-realm admin session shared by a realm's helpers. It
// logs in again when its token is about to expire (master tokens live a
// minute by default).
type session struct {
	kc             *gocloak.GoCloak
	url            string
	user, password string
	mu             sync.Mutex
	token          string
	expiry         time.Time
}

func newSession(url, user, password string) *session {
	return &session{kc: gocloak.NewClient(url), url: url, user: user, password: password}
}

func (s *session) tok(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.token != "" && time.Now().Before(s.expiry) {
		return s.token, nil
	}
	start := time.Now()
	jwt, err := s.kc.LoginAdmin(ctx, s.user, s.password, "master")
	if err != nil {
		return "", fmt.Errorf("log in to Keycloak as admin: %w", err)
	}
	s.token, s.expiry = jwt.AccessToken, start.Add(time.Duration(jwt.ExpiresIn)*time.Second/2)
	return s.token, nil
}

// CorpRealm is a throwaway realm that plays an organisation's identity
// provider, deleted when the test ends. Its users and groups are the
// organisation's.
type CorpRealm struct {
	// Realm is the realm's name.
	Realm string
	// Issuer is the realm's OIDC issuer URL.
	Issuer string
	// ClientID and ClientSecret are the confidential OIDC client that the
	// broker signs in with.
	ClientID, ClientSecret string

	s *session
}

// NewCorpRealm creates a corporate realm at the Keycloak at url, with a
// confidential OIDC client for the broker at brokerRedirectURI (for a
// Keycloak broker: {keycloak}/realms/{realm}/broker/{alias}/endpoint) whose
// tokens and userinfo carry the user's group names in the "groups" claim.
func NewCorpRealm(t testing.TB, url, adminUser, adminPassword, brokerRedirectURI string) CorpRealm {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	url = strings.TrimSuffix(url, "/")
	c := CorpRealm{Realm: RandomName("corp-"), ClientID: "moat-broker", ClientSecret: RandomName("secret-"), s: newSession(url, adminUser, adminPassword)}
	c.Issuer = url + "/realms/" + c.Realm
	tok := c.tok(ctx, t)
	if _, err := c.s.kc.CreateRealm(ctx, tok, gocloak.RealmRepresentation{
		Realm: gocloak.StringP(c.Realm), Enabled: gocloak.BoolP(true), SslRequired: gocloak.StringP("external"),
	}); err != nil {
		t.Fatalf("create realm %s: %v", c.Realm, err)
	}
	t.Cleanup(func() { deleteRealm(t, c.s, c.Realm) })
	if _, err := c.s.kc.CreateClient(ctx, tok, c.Realm, gocloak.Client{
		ClientID:                  gocloak.StringP(c.ClientID),
		Name:                      gocloak.StringP("Moat broker"),
		Protocol:                  gocloak.StringP("openid-connect"),
		PublicClient:              gocloak.BoolP(false),
		ClientAuthenticatorType:   gocloak.StringP("client-secret"),
		Secret:                    gocloak.StringP(c.ClientSecret),
		StandardFlowEnabled:       gocloak.BoolP(true),
		DirectAccessGrantsEnabled: gocloak.BoolP(false),
		RedirectURIs:              &[]string{brokerRedirectURI},
		ProtocolMappers: &[]gocloak.ProtocolMapperRepresentation{{
			Name:           gocloak.StringP("groups"),
			Protocol:       gocloak.StringP("openid-connect"),
			ProtocolMapper: gocloak.StringP("oidc-group-membership-mapper"),
			Config: &map[string]string{
				"claim.name": "groups", "full.path": "false",
				"id.token.claim": "true", "access.token.claim": "true", "userinfo.token.claim": "true",
			},
		}},
	}); err != nil {
		t.Fatalf("create client %s in %s: %v", c.ClientID, c.Realm, err)
	}
	return c
}

func (c CorpRealm) tok(ctx context.Context, t testing.TB) string {
	t.Helper()
	tok, err := c.s.tok(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func deleteRealm(t testing.TB, s *session, realm string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tok, err := s.tok(ctx)
	if err == nil {
		err = s.kc.DeleteRealm(ctx, tok, realm)
	}
	if err != nil {
		t.Errorf("delete realm %s: %v", realm, err)
	}
}

// AddUser creates an enabled user with a verified email and the given
// password, in groups (created when missing), and returns its id.
func (c CorpRealm) AddUser(t testing.TB, username, password, email, first, last string, groups ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tok := c.tok(ctx, t)
	id, err := c.s.kc.CreateUser(ctx, tok, c.Realm, gocloak.User{
		Username: gocloak.StringP(username), Enabled: gocloak.BoolP(true),
		Email: gocloak.StringP(email), EmailVerified: gocloak.BoolP(true),
		FirstName: gocloak.StringP(first), LastName: gocloak.StringP(last),
	})
	if err != nil {
		t.Fatalf("create user %s in %s: %v", username, c.Realm, err)
	}
	if err := c.s.kc.SetPassword(ctx, tok, id, c.Realm, password, false); err != nil {
		t.Fatalf("set the password of %s in %s: %v", username, c.Realm, err)
	}
	c.SetGroups(t, id, groups...)
	return id
}

// SetGroups makes userID a member of exactly groups (created when missing).
func (c CorpRealm) SetGroups(t testing.TB, userID string, groups ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tok := c.tok(ctx, t)
	have, err := c.s.kc.GetUserGroups(ctx, tok, c.Realm, userID, gocloak.GetGroupsParams{})
	if err != nil {
		t.Fatalf("list the groups of %s in %s: %v", userID, c.Realm, err)
	}
	keep := map[string]bool{}
	for _, g := range have {
		name := gocloak.PString(g.Name)
		if slices.Contains(groups, name) {
			keep[name] = true
			continue
		}
		if err := c.s.kc.DeleteUserFromGroup(ctx, tok, c.Realm, userID, gocloak.PString(g.ID)); err != nil {
			t.Fatalf("remove %s from %s in %s: %v", userID, name, c.Realm, err)
		}
	}
	for _, name := range groups {
		if keep[name] {
			continue
		}
		if err := c.s.kc.AddUserToGroup(ctx, tok, c.Realm, userID, c.group(ctx, t, tok, name)); err != nil {
			t.Fatalf("add %s to %s in %s: %v", userID, name, c.Realm, err)
		}
	}
}

// group returns the id of the top-level group name, creating it if needed.
func (c CorpRealm) group(ctx context.Context, t testing.TB, tok, name string) string {
	t.Helper()
	found, err := c.s.kc.GetGroups(ctx, tok, c.Realm, gocloak.GetGroupsParams{Search: gocloak.StringP(name), Exact: gocloak.BoolP(true)})
	if err != nil {
		t.Fatalf("look up group %s in %s: %v", name, c.Realm, err)
	}
	for _, g := range found {
		if gocloak.PString(g.Name) == name {
			return gocloak.PString(g.ID)
		}
	}
	id, err := c.s.kc.CreateGroup(ctx, tok, c.Realm, gocloak.Group{Name: gocloak.StringP(name)})
	if err != nil {
		t.Fatalf("create group %s in %s: %v", name, c.Realm, err)
	}
	return id
}
