//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/moat-ai/moat/libs/keycloaktest"
)

// member is the part of a moat.identity.v1.Member the tests read.
type member struct {
	Name, User, Role, Source, IdentityProvider string
}

// caller is GET /api/v1/me.
type caller struct {
	Principal   string   `json:"principal"`
	Memberships []member `json:"memberships"`
}

// An organization brings its own identity provider: its admin (here the
// platform admin key) adds it through the gateway's admin API, identity
// sets it up in the platform's Keycloak, and the organization's people
// sign in to the console through it (a second Keycloak realm plays the
// corporate IdP; authorization code with PKCE, driven like a browser).
// Their first call makes them members with the role their IdP groups map
// to, and every service honours it: the admin creates a project in config;
// the member creates a key of their own with their access token and calls
// a model with it, but may not administer. Removing the member revokes
// their key on the gateway within a second.
func TestBrokeredUsersJoinTheirOrganization(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	tn := newTenant(t)
	org := "orgs/" + env(t, "MOAT_ORG")
	issuer := env(t, "MOAT_OIDC_ISSUER")
	kcURL, kcUser, kcPass := keycloaktest.Server(t)
	run := keycloaktest.RandomName("")
	idpID := "corp-" + run
	alias := env(t, "MOAT_ORG") + "." + idpID
	corp := keycloaktest.NewCorpRealm(t, kcURL, kcUser, kcPass, issuer+"/broker/"+alias+"/endpoint")
	domain := run + ".corp.example"

	var created struct {
		IdentityProvider struct {
			Alias, RedirectURI string
			Oidc               map[string]any
		}
	}
	mustAdmin(t, http.MethodPost, "/api/v1/"+org+"/identityProviders?identityProviderId="+idpID, map[string]any{
		"displayName": "Corp sign-in",
		"oidc":        map[string]any{"issuer": corp.Issuer, "clientId": corp.ClientID, "clientSecret": corp.ClientSecret},
		"groupRoleMappings": []map[string]any{
			{"group": "ai-admins", "role": "ORG_ROLE_ADMIN"},
			{"group": "ai-users", "role": "ORG_ROLE_MEMBER"},
		},
		"emailDomains": []string{domain},
	}, &created)
	if p := created.IdentityProvider; p.Alias != alias || p.RedirectURI != issuer+"/broker/"+alias+"/endpoint" ||
		p.Oidc["clientId"] != corp.ClientID || p.Oidc["clientSecret"] != nil {
		t.Errorf("created identity provider: alias %q, redirect URI %q, oidc %v; want %s, its broker endpoint and no secret",
			p.Alias, p.RedirectURI, p.Oidc, alias)
	}

	corp.AddUser(t, "alice-"+run, "alice-pw-"+run, "alice@"+domain, "Alice", "Admin", "ai-admins")
	corp.AddUser(t, "bob-"+run, "bob-pw-"+run, "bob@"+domain, "Bob", "User", "ai-users")
	signIn := func(user string) string {
		t.Helper()
		tok, err := keycloaktest.SignIn(ctx, issuer, env(t, "MOAT_OIDC_CLIENT_ID"), env(t, "MOAT_OIDC_REDIRECT_URI"),
			user+"-"+run, user+"-pw-"+run, url.Values{"kc_idp_hint": {alias}})
		if err != nil {
			t.Fatalf("sign %s in through %s: %v", user, alias, err)
		}
		return tok
	}
	me := func(token string) caller {
		t.Helper()
		code, body := as(t, token, http.MethodGet, "/api/v1/me", nil)
		var c caller
		if code != http.StatusOK || json.Unmarshal(body, &c) != nil {
			t.Fatalf("GET /api/v1/me = %d %s", code, body)
		}
		return c
	}

	alice, bob := signIn("alice"), signIn("bob")
	for _, tt := range []struct {
		name, token, role string
	}{{"alice", alice, "ORG_ROLE_ADMIN"}, {"bob", bob, "ORG_ROLE_MEMBER"}} {
		c := me(tt.token)
		if len(c.Memberships) != 1 || c.Memberships[0].Name != org+"/members/"+strings.TrimPrefix(c.Principal, "users/") ||
			c.Memberships[0].Role != tt.role || c.Memberships[0].Source != "SOURCE_JUST_IN_TIME" ||
			c.Memberships[0].IdentityProvider != org+"/identityProviders/"+idpID {
			t.Fatalf("%s after the first sign-in: %+v; want one just-in-time membership of %s as %s", tt.name, c, org, tt.role)
		}
	}
	bobUser := me(bob).Principal

	// config honours the admin's role as soon as its key index has it.
	project := "e2e-sso-" + run
	eventually(t, 5*time.Second, func(context.Context) error {
		code, body := as(t, alice, http.MethodPost, "/api/v1/"+org+"/projects?projectId="+project, map[string]any{"displayName": "by alice"})
		if code != http.StatusOK {
			return fmt.Errorf("POST projects as the org admin = %d %s", code, body)
		}
		return nil
	})
	if code, body := as(t, bob, http.MethodPost, "/api/v1/"+org+"/projects?projectId=not-"+project, map[string]any{}); code != http.StatusForbidden {
		t.Errorf("POST projects as a member = %d %s, want 403", code, body)
	}
	if code, body := as(t, bob, http.MethodPost, "/api/v1/"+tn.keyName+":revoke", map[string]any{}); code != http.StatusForbidden {
		t.Errorf("a member revoking the project's key = %d %s, want 403", code, body)
	}

	// The member manages a key of their own with their access token.
	var key struct {
		Key    string `json:"key"`
		APIKey struct {
			Name, Owner string
		} `json:"apiKey"`
	}
	code, body := as(t, bob, http.MethodPost, "/api/v1/"+tn.project+"/keys", map[string]any{"displayName": "bob's laptop"})
	if code != http.StatusOK || json.Unmarshal(body, &key) != nil || key.APIKey.Owner != bobUser {
		t.Fatalf("POST keys as the member = %d %s; want a key owned by %s", code, body, bobUser)
	}
	var list struct {
		APIKeys []struct{ Name, Owner string } `json:"apiKeys"`
	}
	code, body = as(t, bob, http.MethodGet, "/api/v1/"+tn.project+"/keys", nil)
	if code != http.StatusOK || json.Unmarshal(body, &list) != nil || len(list.APIKeys) != 1 || list.APIKeys[0].Name != key.APIKey.Name {
		t.Errorf("GET keys as the member = %d %s; want only their own key", code, body)
	}
	client := keyClient(t, key.Key)
	eventually(t, 5*time.Second, func(ctx context.Context) error { return chat(ctx, client, "e2e-model") })

	// The org admin removes the member: their key stops working on the
	// gateway within a second, and their token no longer manages keys.
	var removed struct {
		RevokedKeys int `json:"revokedKeys"`
	}
	code, body = as(t, alice, http.MethodDelete, "/api/v1/"+org+"/members/"+strings.TrimPrefix(bobUser, "users/"), nil)
	if code != http.StatusOK || json.Unmarshal(body, &removed) != nil || removed.RevokedKeys != 1 {
		t.Fatalf("DELETE the member as the org admin = %d %s; want one revoked key", code, body)
	}
	start := time.Now()
	for {
		err := chat(ctx, client, "e2e-model")
		var apiErr *openai.Error
		if errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusUnauthorized {
			break
		}
		if time.Since(start) > time.Second {
			t.Fatalf("the removed member's key still works %v after the removal (last: %v)", time.Since(start), err)
		}
		time.Sleep(5 * time.Millisecond) // a fine fixed step: this loop is the measurement
	}
	t.Logf("removed member's key refused on the gateway %v after the removal returned", time.Since(start).Round(10*time.Microsecond))
	eventually(t, 5*time.Second, func(context.Context) error {
		if code, body := as(t, bob, http.MethodGet, "/api/v1/"+tn.project+"/keys", nil); code != http.StatusForbidden {
			return fmt.Errorf("GET keys as the removed member = %d %s, want 403", code, body)
		}
		return nil
	})
	// Signing in again does not undo the removal.
	if c := me(signIn("bob")); len(c.Memberships) != 0 {
		t.Errorf("the removed member after signing in again: %+v; want no membership", c)
	}
}
