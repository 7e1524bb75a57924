package app_test

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/moat-ai/moat/libs/keycloaktest"
	"github.com/moat-ai/moat/libs/serve/servetest"
	identityv1 "github.com/moat-ai/moat/proto/gen/go/moat/identity/v1"
)

// An organization's admin adds their corporate IdP (a second Keycloak
// realm, over OIDC and over SAML) through Moat's API; users then sign in to
// Moat's console through the broker (authorization code with PKCE, driven
// like a browser), and their first call makes them members just in time,
// with the role their IdP groups map to. A user whose email domain the
// provider does not vouch for gets no membership.
func TestJustInTimeMembership(t *testing.T) {
	t.Parallel()
	pf := startWithKeycloak(t)
	root := bearer(t.Context(), pf.admin)
	realmURL := pf.kcURL + "/realms/" + pf.realm

	for _, proto := range []string{"oidc", "saml"} {
		t.Run(proto, func(t *testing.T) {
			org := "orgs/acme-" + proto
			idpID := "corp"
			alias := "acme-" + proto + "." + idpID
			endpoint := realmURL + "/broker/" + alias + "/endpoint"
			corp := keycloaktest.NewCorpRealm(t, pf.kcURL, pf.kcUser, pf.kcPass, endpoint)
			domain := proto + ".corp.example"
			p := &identityv1.IdentityProvider{
				DisplayName: "Acme corporate sign-in",
				GroupRoleMappings: []*identityv1.GroupRoleMapping{
					{Group: "ai-admins", Role: identityv1.OrgRole_ORG_ROLE_ADMIN},
					{Group: "ai-users", Role: identityv1.OrgRole_ORG_ROLE_MEMBER},
				},
				EmailDomains: []string{domain},
			}
			if proto == "oidc" {
				p.Protocol = &identityv1.IdentityProvider_Oidc{Oidc: &identityv1.OidcConfig{
					Issuer: corp.Issuer, ClientId: corp.ClientID, ClientSecret: corp.ClientSecret}}
			} else {
				saml := corp.SAML(t, realmURL, endpoint)
				p.Protocol = &identityv1.IdentityProvider_Saml{Saml: &identityv1.SamlConfig{
					SsoUrl: saml.SSOURL, EntityId: saml.EntityID, SigningCertificate: saml.SigningCertificate}}
			}
			created, err := pf.client.CreateIdentityProvider(root, &identityv1.CreateIdentityProviderRequest{
				Parent: org, IdentityProviderId: idpID, IdentityProvider: p})
			if err != nil {
				t.Fatalf("CreateIdentityProvider: %v", err)
			}
			if got := created.GetIdentityProvider(); got.GetAlias() != alias || got.GetRedirectUri() != endpoint || got.GetOidc().GetClientSecret() != "" {
				t.Errorf("created provider = %v; want alias %s, redirect URI %s and no secret", got, alias, endpoint)
			}

			corp.AddUser(t, "alice", "alice-pw-1", "alice@"+domain, "Alice", "Admin", "ai-admins", "staff")
			corp.AddUser(t, "bob", "bob-pw-1", "bob@"+domain, "Bob", "User", "ai-users")
			corp.AddUser(t, "carol", "carol-pw-1", "carol@"+domain, "Carol", "Nobody", "staff")
			corp.AddUser(t, "eve", "eve-pw-1", "eve@"+proto+".elsewhere.example", "Eve", "Outside", "ai-admins")
			signIn := func(user, password string) string {
				t.Helper()
				tok, err := keycloaktest.SignIn(t.Context(), realmURL, "moat-console", redirectURI, user, password,
					url.Values{"kc_idp_hint": {alias}})
				if err != nil {
					t.Fatalf("sign %s in through %s: %v", user, alias, err)
				}
				return tok
			}
			for _, tt := range []struct {
				user, password string
				want           identityv1.OrgRole // unspecified: no membership
			}{
				{"alice", "alice-pw-1", identityv1.OrgRole_ORG_ROLE_ADMIN},
				{"bob", "bob-pw-1", identityv1.OrgRole_ORG_ROLE_MEMBER},
				{"carol", "carol-pw-1", identityv1.OrgRole_ORG_ROLE_UNSPECIFIED}, // no mapped group, no default role
				{"eve", "eve-pw-1", identityv1.OrgRole_ORG_ROLE_UNSPECIFIED},     // a domain the provider does not vouch for
			} {
				tok := signIn(tt.user, tt.password)
				me, err := pf.client.GetCaller(bearer(t.Context(), tok), &identityv1.GetCallerRequest{})
				if err != nil {
					t.Fatalf("GetCaller(%s): %v", tt.user, err)
				}
				if tt.want == identityv1.OrgRole_ORG_ROLE_UNSPECIFIED {
					if len(me.GetMemberships()) != 0 {
						t.Errorf("%s: memberships %v, want none", tt.user, me.GetMemberships())
					}
					continue
				}
				if len(me.GetMemberships()) != 1 {
					t.Fatalf("%s: memberships %v, want one in %s", tt.user, me.GetMemberships(), org)
				}
				m := me.GetMemberships()[0]
				if m.GetName() != org+"/members/"+strings.TrimPrefix(me.GetPrincipal(), "users/") || m.GetRole() != tt.want ||
					m.GetSource() != identityv1.Member_SOURCE_JUST_IN_TIME || m.GetIdentityProvider() != org+"/identityProviders/"+idpID ||
					m.GetEmail() != tt.user+"@"+domain {
					t.Errorf("%s: membership %v, want %v in %s, just in time", tt.user, m, tt.want, org)
				}
				// The role is in force: an org admin lists the members, a
				// member is refused, once the index has the membership.
				servetest.Eventually(t, 5*time.Second, tt.user+"'s role to take effect", func() bool {
					_, err := pf.client.ListMembers(bearer(t.Context(), tok), &identityv1.ListMembersRequest{Parent: org})
					if tt.want == identityv1.OrgRole_ORG_ROLE_ADMIN {
						return err == nil
					}
					_, kerr := pf.client.CreateApiKey(bearer(t.Context(), tok), &identityv1.CreateApiKeyRequest{
						Parent: org + "/projects/web", ApiKey: &identityv1.ApiKey{DisplayName: "mine"}})
					return status.Code(err) == codes.PermissionDenied && kerr == nil
				})
				// A second sign-in finds the membership and makes no other.
				again, err := pf.client.GetCaller(bearer(t.Context(), signIn(tt.user, tt.password)), &identityv1.GetCallerRequest{})
				if err != nil || len(again.GetMemberships()) != 1 || again.GetMemberships()[0].GetCreateTime().AsTime() != m.GetCreateTime().AsTime() {
					t.Errorf("%s signing in again: %v, %v; want the same single membership", tt.user, again, err)
				}
			}
			if !pf.log.Contains("is not vouched for by " + org + "/identityProviders/" + idpID) {
				t.Error("the refused just-in-time membership of a foreign email domain is not logged")
			}
			if pf.log.Contains(corp.ClientSecret) {
				t.Error("the IdP client secret appears in identity's log")
			}
			// Scenario 17: the client secret lives in Keycloak only.
			var leaks int
			if err := pf.pool.QueryRow(t.Context(), `SELECT
				(SELECT count(*) FROM identity_providers WHERE strpos(identity_providers::text, $1) > 0) +
				(SELECT count(*) FROM outbox WHERE strpos(encode(payload, 'escape'), $1) > 0)`, corp.ClientSecret).Scan(&leaks); err != nil {
				t.Fatal(err)
			}
			if leaks != 0 {
				t.Errorf("the IdP client secret is stored in %d identity rows", leaks)
			}
		})
	}
}
