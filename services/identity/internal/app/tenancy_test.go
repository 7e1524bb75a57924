package app_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Nerzal/gocloak/v13"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/moat-ai/moat/libs/events/eventstest"
	"github.com/moat-ai/moat/libs/keycloaktest"
	"github.com/moat-ai/moat/libs/pg/pgtest"
	"github.com/moat-ai/moat/libs/serve/servetest"
	auditv1 "github.com/moat-ai/moat/proto/gen/go/moat/audit/v1"
	identityv1 "github.com/moat-ai/moat/proto/gen/go/moat/identity/v1"
	"github.com/moat-ai/moat/services/identity/internal/app"
	"github.com/moat-ai/moat/services/identity/internal/postgres"
)

const redirectURI = "http://127.0.0.1:9999/callback"

// platform is identity serving with a Keycloak realm of its own: the
// bootstrap admin key, a client, and what is needed to add users.
type platform struct {
	client identityv1.IdentityServiceClient
	pool   *pgxpool.Pool
	admin  string // the bootstrap platform admin key
	kcURL  string
	realm  string
	kc     *gocloak.GoCloak
	kcUser string
	kcPass string
	// adminPassword is the realm's first platform admin's.
	adminPassword string
	log           *servetest.SyncBuffer
}

// startWithKeycloak runs identity with MOAT_KEYCLOAK_URL and its OIDC
// verifier on a realm of this test only, and waits until the realm is
// bootstrapped.
func startWithKeycloak(t *testing.T) *platform {
	t.Helper()
	kcURL, kcUser, kcPass := keycloaktest.Server(t)
	pool, dbURL := pgtest.NewDatabase(t, app.Migrations...)
	realm := keycloaktest.RandomName("moat-app-")
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	pw := make([]byte, 8)
	_, _ = rand.Read(pw)
	keyFile := filepath.Join(t.TempDir(), "admin.key")
	e := servetest.Env{
		"GRPC_ADDR":                     servetest.FreeAddr(t),
		"HTTP_ADDR":                     servetest.FreeAddr(t),
		"DATABASE_URL":                  dbURL,
		"NATS_URL":                      eventstest.NewServer(t).ClientURL(),
		"DRAIN_TIMEOUT":                 "2s",
		"MOAT_KEY_SECRET":               base64.StdEncoding.EncodeToString(secret),
		"MOAT_INTERNAL_TOKEN":           "internal-token-for-this-test",
		"MOAT_BOOTSTRAP_ADMIN_KEY_FILE": keyFile,
		"MOAT_KEYCLOAK_URL":             kcURL,
		"MOAT_KEYCLOAK_ADMIN_USER":      kcUser,
		"MOAT_KEYCLOAK_ADMIN_PASSWORD":  kcPass,
		"MOAT_KEYCLOAK_REALM":           realm,
		"MOAT_CONSOLE_REDIRECT_URIS":    redirectURI,
		"MOAT_ADMIN_USER":               "admin",
		"MOAT_ADMIN_PASSWORD":           "a-test-password-" + hex.EncodeToString(pw),
		"MOAT_OIDC_ISSUER":              kcURL + "/realms/" + realm,
	}
	pf := &platform{pool: pool, kcURL: kcURL, realm: realm, kc: gocloak.NewClient(kcURL), kcUser: kcUser, kcPass: kcPass,
		adminPassword: e["MOAT_ADMIN_PASSWORD"]}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if jwt, err := pf.kc.LoginAdmin(ctx, kcUser, kcPass, "master"); err == nil {
			_ = pf.kc.DeleteRealm(ctx, jwt.AccessToken, realm) // best effort: a left-over test realm harms nothing
		}
	})
	p := servetest.Start(t, app.Run, e)
	pf.log = p.Log
	servetest.WaitServing(t, p, e["GRPC_ADDR"], 20*time.Second)
	conn, err := grpc.NewClient(e["GRPC_ADDR"], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() }) // closing a client at the end of a test cannot lose anything
	pf.client = identityv1.NewIdentityServiceClient(conn)
	key, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pf.admin = strings.TrimSpace(string(key))
	servetest.Eventually(t, 60*time.Second, "the realm to be bootstrapped", func() bool {
		tok := pf.adminToken(t)
		users, err := pf.kc.GetUsers(t.Context(), tok, realm, gocloak.GetUsersParams{Username: gocloak.StringP("admin"), Exact: gocloak.BoolP(true)})
		return err == nil && len(users) == 1
	})
	return pf
}

func (pf *platform) adminToken(t *testing.T) string {
	t.Helper()
	jwt, err := pf.kc.LoginAdmin(t.Context(), pf.kcUser, pf.kcPass, "master")
	if err != nil {
		t.Fatalf("log in to Keycloak: %v", err)
	}
	return jwt.AccessToken
}

// user creates a user in Moat's realm, signs them in through the console
// client (authorization code with PKCE) and returns their Keycloak id and
// access token.
func (pf *platform) user(t *testing.T, name string) (id, token string) {
	t.Helper()
	tok := pf.adminToken(t)
	id, err := pf.kc.CreateUser(t.Context(), tok, pf.realm, gocloak.User{
		Username: gocloak.StringP(name), Enabled: gocloak.BoolP(true), EmailVerified: gocloak.BoolP(true),
		Email: gocloak.StringP(name + "@example.com"), FirstName: gocloak.StringP(name), LastName: gocloak.StringP("Test"),
	})
	if err != nil {
		t.Fatalf("create user %s: %v", name, err)
	}
	password := "pw-" + keycloaktest.RandomName("")
	if err := pf.kc.SetPassword(t.Context(), tok, id, pf.realm, password, false); err != nil {
		t.Fatalf("set password of %s: %v", name, err)
	}
	token, err = keycloaktest.SignIn(t.Context(), pf.kcURL+"/realms/"+pf.realm, "moat-console", redirectURI, name, password, nil)
	if err != nil {
		t.Fatalf("sign %s in: %v", name, err)
	}
	return id, token
}

func bearer(ctx context.Context, credential string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+credential)
}

// tenant is one organization's fixtures: its admin and member (users with
// access tokens) and resources of each kind.
type tenant struct {
	org, project        string
	adminID, adminToken string
	memberID, memberTok string
	adminKey, memberKey string // key names owned by the admin and the member
	projectKey          string // a key without owner
	member              string // the member's membership name
	idp                 string // an identity provider
	serviceAccount      string // a service account of the project
	agent               string // an agent of the project, owned by the member
}

// RELIABILITY.md scenario 15 for identity: org A's admin, org A's member
// and org B's admin, signed in through the real Keycloak, call every
// identity method on every kind of resource of both organizations. Admins
// manage their organization only; members manage their own keys only;
// every refusal is PERMISSION_DENIED with the same message, carries no
// data, and is audited; mass assignment of output-only fields changes
// nothing.
func TestCrossTenantAccess(t *testing.T) {
	t.Parallel()
	pf := startWithKeycloak(t)
	ctx := t.Context()
	root := bearer(ctx, pf.admin)

	tenants := map[string]*tenant{"A": {org: "orgs/org-a"}, "B": {org: "orgs/org-b"}}
	for _, name := range []string{"A", "B"} {
		tn := tenants[name]
		tn.project = tn.org + "/projects/web"
		tn.adminID, tn.adminToken = pf.user(t, "admin-"+strings.ToLower(name))
		tn.memberID, tn.memberTok = pf.user(t, "member-"+strings.ToLower(name))
		for id, role := range map[string]identityv1.OrgRole{tn.adminID: identityv1.OrgRole_ORG_ROLE_ADMIN, tn.memberID: identityv1.OrgRole_ORG_ROLE_MEMBER} {
			if _, err := pf.client.CreateMember(root, &identityv1.CreateMemberRequest{Parent: tn.org, MemberId: id,
				Member: &identityv1.Member{Role: role}}); err != nil {
				t.Fatalf("add %s to %s: %v", id, tn.org, err)
			}
		}
		tn.member = tn.org + "/members/" + tn.memberID
	}
	// Memberships reach identity's authorization through its key index.
	for _, tn := range tenants {
		servetest.Eventually(t, 5*time.Second, "the memberships to reach the index", func() bool {
			_, err := pf.client.ListMembers(bearer(ctx, tn.adminToken), &identityv1.ListMembersRequest{Parent: tn.org})
			return err == nil
		})
	}
	newKey := func(tn *tenant, credential, owner string) string {
		t.Helper()
		resp, err := pf.client.CreateApiKey(bearer(ctx, credential), &identityv1.CreateApiKeyRequest{Parent: tn.project,
			ApiKey: &identityv1.ApiKey{DisplayName: "fixture", Owner: owner}})
		if err != nil {
			t.Fatalf("create a key in %s: %v", tn.project, err)
		}
		return resp.GetApiKey().GetName()
	}
	newIdP := func(tn *tenant, id string) string {
		t.Helper()
		resp, err := pf.client.CreateIdentityProvider(root, &identityv1.CreateIdentityProviderRequest{
			Parent: tn.org, IdentityProviderId: id, IdentityProvider: idp(pf, tn, id)})
		if err != nil {
			t.Fatalf("create identity provider in %s: %v", tn.org, err)
		}
		return resp.GetIdentityProvider().GetName()
	}
	newMember := func(tn *tenant) string {
		t.Helper()
		id := keycloaktest.RandomName("u")
		if _, err := pf.client.CreateMember(root, &identityv1.CreateMemberRequest{Parent: tn.org, MemberId: id,
			Member: &identityv1.Member{Role: identityv1.OrgRole_ORG_ROLE_MEMBER}}); err != nil {
			t.Fatalf("add a member to %s: %v", tn.org, err)
		}
		return tn.org + "/members/" + id
	}
	newServiceAccount := func(tn *tenant) string {
		t.Helper()
		resp, err := pf.client.CreateServiceAccount(root, &identityv1.CreateServiceAccountRequest{Parent: tn.project,
			ServiceAccountId: keycloaktest.RandomName("sa-"), ServiceAccount: &identityv1.ServiceAccount{DisplayName: "fixture"}})
		if err != nil {
			t.Fatalf("create a service account in %s: %v", tn.project, err)
		}
		return resp.GetServiceAccount().GetName()
	}
	newAgent := func(tn *tenant) string {
		t.Helper()
		resp, err := pf.client.CreateAgent(root, &identityv1.CreateAgentRequest{Parent: tn.project, AgentId: keycloaktest.RandomName("agent-"),
			Agent: &identityv1.Agent{DisplayName: "fixture", Owner: "users/" + tn.memberID, RiskTier: identityv1.RiskTier_RISK_TIER_LOW}})
		if err != nil {
			t.Fatalf("create an agent in %s: %v", tn.project, err)
		}
		return resp.GetAgent().GetName()
	}
	for _, tn := range tenants {
		tn.adminKey = newKey(tn, tn.adminToken, "")
		tn.memberKey = newKey(tn, tn.memberTok, "")
		tn.projectKey = newKey(tn, pf.admin, "")
		tn.idp = newIdP(tn, "corp")
		tn.serviceAccount = newServiceAccount(tn)
		tn.agent = newAgent(tn)
	}

	a, b := tenants["A"], tenants["B"]
	callers := []struct {
		name  string
		token string
		// role is the caller's role in org A and in org B.
		role map[*tenant]string
		self string
	}{
		{"org A admin", a.adminToken, map[*tenant]string{a: "admin", b: ""}, "users/" + a.adminID},
		{"org A member", a.memberTok, map[*tenant]string{a: "member", b: ""}, "users/" + a.memberID},
		{"org B admin", b.adminToken, map[*tenant]string{a: "", b: "admin"}, "users/" + b.adminID},
	}

	// A method on a target tenant: need says who may call it ("admin",
	// "member", or "owner" for member access to the caller's own
	// resources), call makes the call with a fresh target when it
	// destroys one.
	type method struct {
		name     string
		need     string
		mutation bool
		// owned reports, for need == "owner", whether the target belongs to
		// the caller (then members pass).
		owned func(c string, tn *tenant) bool
		call  func(ctx context.Context, tn *tenant) (any, error)
	}
	ownsMemberKey := func(self string, tn *tenant) bool { return self == "users/"+tn.memberID }
	methods := []method{
		{name: "CreateApiKey (own)", need: "member", mutation: true, call: func(ctx context.Context, tn *tenant) (any, error) {
			return pf.client.CreateApiKey(ctx, &identityv1.CreateApiKeyRequest{Parent: tn.project, ApiKey: &identityv1.ApiKey{DisplayName: "k"}})
		}},
		{name: "CreateApiKey (for the member)", need: "owner", owned: ownsMemberKey, mutation: true, call: func(ctx context.Context, tn *tenant) (any, error) {
			return pf.client.CreateApiKey(ctx, &identityv1.CreateApiKeyRequest{Parent: tn.project,
				ApiKey: &identityv1.ApiKey{DisplayName: "k", Owner: "users/" + tn.memberID}})
		}},
		{name: "CreateApiKey (for the admin)", need: "owner", owned: func(self string, tn *tenant) bool { return self == "users/"+tn.adminID }, mutation: true,
			call: func(ctx context.Context, tn *tenant) (any, error) {
				return pf.client.CreateApiKey(ctx, &identityv1.CreateApiKeyRequest{Parent: tn.project,
					ApiKey: &identityv1.ApiKey{DisplayName: "k", Owner: "users/" + tn.adminID}})
			}},
		// Keys of service accounts and agents are for admins: a member
		// owns keys themselves only.
		{name: "CreateApiKey (for the agent)", need: "admin", mutation: true, call: func(ctx context.Context, tn *tenant) (any, error) {
			return pf.client.CreateApiKey(ctx, &identityv1.CreateApiKeyRequest{Parent: tn.project,
				ApiKey: &identityv1.ApiKey{DisplayName: "k", Owner: tn.agent}})
		}},
		{name: "CreateApiKey (for the service account)", need: "admin", mutation: true, call: func(ctx context.Context, tn *tenant) (any, error) {
			return pf.client.CreateApiKey(ctx, &identityv1.CreateApiKeyRequest{Parent: tn.project,
				ApiKey: &identityv1.ApiKey{DisplayName: "k", Owner: tn.serviceAccount}})
		}},
		{name: "ListApiKeys", need: "member", call: func(ctx context.Context, tn *tenant) (any, error) {
			return pf.client.ListApiKeys(ctx, &identityv1.ListApiKeysRequest{Parent: tn.project})
		}},
		{name: "RevokeApiKey (member's key)", need: "owner", owned: ownsMemberKey, mutation: true, call: func(ctx context.Context, tn *tenant) (any, error) {
			return pf.client.RevokeApiKey(ctx, &identityv1.RevokeApiKeyRequest{Name: newKey(tn, tn.memberTok, "")})
		}},
		{name: "RevokeApiKey (project key)", need: "admin", mutation: true, call: func(ctx context.Context, tn *tenant) (any, error) {
			return pf.client.RevokeApiKey(ctx, &identityv1.RevokeApiKeyRequest{Name: newKey(tn, pf.admin, "")})
		}},
		{name: "RotateApiKey (member's key)", need: "owner", owned: ownsMemberKey, mutation: true, call: func(ctx context.Context, tn *tenant) (any, error) {
			return pf.client.RotateApiKey(ctx, &identityv1.RotateApiKeyRequest{Name: tn.memberKey})
		}},
		{name: "RotateApiKey (admin's key)", need: "admin", mutation: true, call: func(ctx context.Context, tn *tenant) (any, error) {
			return pf.client.RotateApiKey(ctx, &identityv1.RotateApiKeyRequest{Name: tn.adminKey})
		}},
		{name: "CreateMember", need: "admin", mutation: true, call: func(ctx context.Context, tn *tenant) (any, error) {
			return pf.client.CreateMember(ctx, &identityv1.CreateMemberRequest{Parent: tn.org, MemberId: keycloaktest.RandomName("u"),
				Member: &identityv1.Member{Role: identityv1.OrgRole_ORG_ROLE_ADMIN}})
		}},
		{name: "GetMember", need: "admin", call: func(ctx context.Context, tn *tenant) (any, error) {
			return pf.client.GetMember(ctx, &identityv1.GetMemberRequest{Name: tn.member})
		}},
		{name: "ListMembers", need: "admin", call: func(ctx context.Context, tn *tenant) (any, error) {
			return pf.client.ListMembers(ctx, &identityv1.ListMembersRequest{Parent: tn.org})
		}},
		{name: "UpdateMember", need: "admin", mutation: true, call: func(ctx context.Context, tn *tenant) (any, error) {
			return pf.client.UpdateMember(ctx, &identityv1.UpdateMemberRequest{
				Member:     &identityv1.Member{Name: newMember(tn), Role: identityv1.OrgRole_ORG_ROLE_ADMIN},
				UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"role"}}})
		}},
		{name: "DeleteMember", need: "admin", mutation: true, call: func(ctx context.Context, tn *tenant) (any, error) {
			return pf.client.DeleteMember(ctx, &identityv1.DeleteMemberRequest{Name: newMember(tn)})
		}},
		{name: "CreateIdentityProvider", need: "admin", mutation: true, call: func(ctx context.Context, tn *tenant) (any, error) {
			id := keycloaktest.RandomName("idp-")
			return pf.client.CreateIdentityProvider(ctx, &identityv1.CreateIdentityProviderRequest{Parent: tn.org,
				IdentityProviderId: id, IdentityProvider: idp(pf, tn, id)})
		}},
		{name: "GetIdentityProvider", need: "admin", call: func(ctx context.Context, tn *tenant) (any, error) {
			return pf.client.GetIdentityProvider(ctx, &identityv1.GetIdentityProviderRequest{Name: tn.idp})
		}},
		{name: "ListIdentityProviders", need: "admin", call: func(ctx context.Context, tn *tenant) (any, error) {
			return pf.client.ListIdentityProviders(ctx, &identityv1.ListIdentityProvidersRequest{Parent: tn.org})
		}},
		{name: "UpdateIdentityProvider", need: "admin", mutation: true, call: func(ctx context.Context, tn *tenant) (any, error) {
			return pf.client.UpdateIdentityProvider(ctx, &identityv1.UpdateIdentityProviderRequest{
				IdentityProvider: &identityv1.IdentityProvider{Name: tn.idp, DisplayName: "Renamed"},
				UpdateMask:       &fieldmaskpb.FieldMask{Paths: []string{"display_name"}}})
		}},
		{name: "DeleteIdentityProvider", need: "admin", mutation: true, call: func(ctx context.Context, tn *tenant) (any, error) {
			return pf.client.DeleteIdentityProvider(ctx, &identityv1.DeleteIdentityProviderRequest{Name: newIdP(tn, keycloaktest.RandomName("gone-"))})
		}},
		{name: "CreateServiceAccount", need: "admin", mutation: true, call: func(ctx context.Context, tn *tenant) (any, error) {
			return pf.client.CreateServiceAccount(ctx, &identityv1.CreateServiceAccountRequest{Parent: tn.project,
				ServiceAccountId: keycloaktest.RandomName("sa-"), ServiceAccount: &identityv1.ServiceAccount{DisplayName: "new"}})
		}},
		{name: "GetServiceAccount", need: "admin", call: func(ctx context.Context, tn *tenant) (any, error) {
			return pf.client.GetServiceAccount(ctx, &identityv1.GetServiceAccountRequest{Name: tn.serviceAccount})
		}},
		{name: "ListServiceAccounts", need: "admin", call: func(ctx context.Context, tn *tenant) (any, error) {
			return pf.client.ListServiceAccounts(ctx, &identityv1.ListServiceAccountsRequest{Parent: tn.project})
		}},
		{name: "UpdateServiceAccount", need: "admin", mutation: true, call: func(ctx context.Context, tn *tenant) (any, error) {
			return pf.client.UpdateServiceAccount(ctx, &identityv1.UpdateServiceAccountRequest{
				ServiceAccount: &identityv1.ServiceAccount{Name: tn.serviceAccount, Description: "changed"},
				UpdateMask:     &fieldmaskpb.FieldMask{Paths: []string{"description"}}})
		}},
		{name: "DeleteServiceAccount", need: "admin", mutation: true, call: func(ctx context.Context, tn *tenant) (any, error) {
			return pf.client.DeleteServiceAccount(ctx, &identityv1.DeleteServiceAccountRequest{Name: newServiceAccount(tn)})
		}},
		{name: "CreateAgent", need: "admin", mutation: true, call: func(ctx context.Context, tn *tenant) (any, error) {
			return pf.client.CreateAgent(ctx, &identityv1.CreateAgentRequest{Parent: tn.project, AgentId: keycloaktest.RandomName("agent-"),
				Agent: &identityv1.Agent{Owner: "users/" + tn.adminID, RiskTier: identityv1.RiskTier_RISK_TIER_HIGH, ActsFor: "users/" + tn.memberID}})
		}},
		{name: "GetAgent", need: "admin", call: func(ctx context.Context, tn *tenant) (any, error) {
			return pf.client.GetAgent(ctx, &identityv1.GetAgentRequest{Name: tn.agent})
		}},
		{name: "ListAgents", need: "admin", call: func(ctx context.Context, tn *tenant) (any, error) {
			return pf.client.ListAgents(ctx, &identityv1.ListAgentsRequest{Parent: tn.project})
		}},
		{name: "UpdateAgent", need: "admin", mutation: true, call: func(ctx context.Context, tn *tenant) (any, error) {
			return pf.client.UpdateAgent(ctx, &identityv1.UpdateAgentRequest{
				Agent:      &identityv1.Agent{Name: tn.agent, RiskTier: identityv1.RiskTier_RISK_TIER_MEDIUM},
				UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"risk_tier"}}})
		}},
		{name: "DeleteAgent", need: "admin", mutation: true, call: func(ctx context.Context, tn *tenant) (any, error) {
			return pf.client.DeleteAgent(ctx, &identityv1.DeleteAgentRequest{Name: newAgent(tn)})
		}},
	}

	for _, m := range methods {
		for _, c := range callers {
			for _, tn := range []*tenant{a, b} {
				role := c.role[tn]
				allowed := role == "admin" || (role == "member" && (m.need == "member" || (m.need == "owner" && m.owned(c.self, tn))))
				name := fmt.Sprintf("%s by %s on org %s", m.name, c.name, strings.TrimPrefix(tn.org, "orgs/org-"))
				before := len(deniedAudits(t, pf.pool))
				resp, err := m.call(bearer(ctx, c.token), tn)
				if allowed {
					if err != nil {
						t.Errorf("%s: %v, want OK", name, err)
					}
					continue
				}
				if status.Code(err) != codes.PermissionDenied {
					t.Errorf("%s: %v, want PERMISSION_DENIED", name, err)
					continue
				}
				if !strings.HasPrefix(status.Convert(err).Message(), "permission denied") || strings.Contains(status.Convert(err).Message(), tn.org) {
					t.Errorf("%s: message %q, want the generic refusal without names", name, status.Convert(err).Message())
				}
				if resp != nil && fmt.Sprint(resp) != "<nil>" {
					t.Errorf("%s: a refused call returned %v", name, resp)
				}
				// Scenario 19: exactly one DENIED record per refused
				// mutation, naming the caller; none for a refused read.
				after := deniedAudits(t, pf.pool)
				switch {
				case !m.mutation && len(after) != before:
					t.Errorf("%s: a refused read wrote %d audit records", name, len(after)-before)
				case m.mutation && len(after) != before+1:
					t.Errorf("%s: %d DENIED audit records, want exactly 1", name, len(after)-before)
				case m.mutation:
					if ev := after[len(after)-1]; ev.GetActor() != c.self || ev.GetStatus() != "PERMISSION_DENIED" ||
						!strings.HasPrefix(ev.GetAction(), "moat.identity.v1.IdentityService.") || ev.GetTarget() == "" {
						t.Errorf("%s: audit record %v, want actor %s, status PERMISSION_DENIED, the action and a target", name, ev, c.self)
					}
				}
			}
		}
	}

	// GetCaller describes each caller with their own memberships only.
	for _, c := range callers {
		got, err := pf.client.GetCaller(bearer(ctx, c.token), &identityv1.GetCallerRequest{})
		if err != nil {
			t.Fatalf("GetCaller(%s): %v", c.name, err)
		}
		if got.GetPrincipal() != c.self || got.GetPlatformAdmin() || len(got.GetMemberships()) != 1 {
			t.Errorf("GetCaller(%s) = %v, want %s with one membership", c.name, got, c.self)
		}
	}

	// The key index stream is for Moat's services only.
	for _, c := range callers {
		stream, err := pf.client.WatchKeyIndex(bearer(ctx, c.token), &identityv1.WatchKeyIndexRequest{})
		if err == nil {
			_, err = stream.Recv()
		}
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("WatchKeyIndex by %s: %v, want UNAUTHENTICATED", c.name, err)
		}
	}

	// Mass assignment: output-only and immutable fields are refused or
	// ignored, never applied.
	adminA := bearer(ctx, a.adminToken)
	for _, paths := range [][]string{{"user"}, {"source"}, {"role", "email"}, {"name"}, {}} {
		_, err := pf.client.UpdateMember(adminA, &identityv1.UpdateMemberRequest{
			Member:     &identityv1.Member{Name: a.member, Role: identityv1.OrgRole_ORG_ROLE_ADMIN, User: "users/" + b.adminID, Email: "x@evil.example"},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: paths}})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("UpdateMember(mask %q): %v, want INVALID_ARGUMENT", paths, err)
		}
	}
	if got, err := pf.client.GetMember(adminA, &identityv1.GetMemberRequest{Name: a.member}); err != nil ||
		got.GetMember().GetRole() != identityv1.OrgRole_ORG_ROLE_MEMBER || got.GetMember().GetUser() != "users/"+a.memberID {
		t.Errorf("member after refused updates = %v, %v; want unchanged", got, err)
	}
	for _, paths := range [][]string{{"alias"}, {"name"}, {"create_time"}, {"redirect_uri"}} {
		_, err := pf.client.UpdateIdentityProvider(adminA, &identityv1.UpdateIdentityProviderRequest{
			IdentityProvider: &identityv1.IdentityProvider{Name: a.idp, Alias: "org-b.corp"},
			UpdateMask:       &fieldmaskpb.FieldMask{Paths: paths}})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("UpdateIdentityProvider(mask %q): %v, want INVALID_ARGUMENT", paths, err)
		}
	}
	// Nor can an admin rename, re-date or move a service account or an
	// agent, or give an agent to a user of another organization.
	for _, paths := range [][]string{{"name"}, {"create_time"}, {"update_time"}, {}} {
		_, err := pf.client.UpdateServiceAccount(adminA, &identityv1.UpdateServiceAccountRequest{
			ServiceAccount: &identityv1.ServiceAccount{Name: a.serviceAccount, DisplayName: "forged"},
			UpdateMask:     &fieldmaskpb.FieldMask{Paths: paths}})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("UpdateServiceAccount(mask %q): %v, want INVALID_ARGUMENT", paths, err)
		}
		_, err = pf.client.UpdateAgent(adminA, &identityv1.UpdateAgentRequest{
			Agent:      &identityv1.Agent{Name: a.agent, Owner: "users/" + b.adminID},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: paths}})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("UpdateAgent(mask %q): %v, want INVALID_ARGUMENT", paths, err)
		}
	}
	for _, field := range []string{"owner", "acts_for"} {
		_, err := pf.client.UpdateAgent(adminA, &identityv1.UpdateAgentRequest{
			Agent:      &identityv1.Agent{Name: a.agent, Owner: "users/" + b.adminID, ActsFor: "users/" + b.memberID},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{field}}})
		if status.Code(err) != codes.FailedPrecondition {
			t.Errorf("UpdateAgent(%s from org B): %v, want FAILED_PRECONDITION", field, err)
		}
	}
	if got, err := pf.client.GetAgent(adminA, &identityv1.GetAgentRequest{Name: a.agent}); err != nil ||
		got.GetAgent().GetOwner() != "users/"+a.memberID || got.GetAgent().GetActsFor() != "" || got.GetAgent().GetDisplayName() != "fixture" {
		t.Errorf("agent after refused updates = %v, %v; want unchanged", got, err)
	}
	if got, err := pf.client.GetServiceAccount(adminA, &identityv1.GetServiceAccountRequest{Name: a.serviceAccount}); err != nil ||
		got.GetServiceAccount().GetDisplayName() != "fixture" {
		t.Errorf("service account after refused updates = %v, %v; want unchanged", got, err)
	}
	// A key cannot be given to another project's (or organization's)
	// service account.
	if _, err := pf.client.CreateApiKey(adminA, &identityv1.CreateApiKeyRequest{Parent: a.project,
		ApiKey: &identityv1.ApiKey{Owner: b.serviceAccount}}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("CreateApiKey(owner org B's service account): %v, want INVALID_ARGUMENT", err)
	}
	// An admin cannot move their provider into another organization by
	// naming it there, nor claim another organization's email domain.
	taken := idp(pf, a, "steal")
	taken.EmailDomains = []string{"org-b.example"}
	if _, err := pf.client.CreateIdentityProvider(adminA, &identityv1.CreateIdentityProviderRequest{Parent: a.org,
		IdentityProviderId: "steal", IdentityProvider: taken}); status.Code(err) != codes.AlreadyExists {
		t.Errorf("CreateIdentityProvider(org B's domain): %v, want ALREADY_EXISTS", err)
	}
	// Output-only key fields sent on create are ignored.
	k, err := pf.client.CreateApiKey(bearer(ctx, a.memberTok), &identityv1.CreateApiKeyRequest{Parent: a.project,
		ApiKey: &identityv1.ApiKey{DisplayName: "mine", Prefix: "moat_forged", RevokeTime: nil, Name: b.projectKey}})
	if err != nil {
		t.Fatal(err)
	}
	if got := k.GetApiKey(); got.GetPrefix() == "moat_forged" || !strings.HasPrefix(got.GetName(), a.project+"/keys/") || got.GetOwner() != "users/"+a.memberID {
		t.Errorf("created key = %v; want a fresh prefix and name in %s, owned by the member", got, a.project)
	}
	// A member lists only their own keys.
	list, err := pf.client.ListApiKeys(bearer(ctx, a.memberTok), &identityv1.ListApiKeysRequest{Parent: a.project, PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range list.GetApiKeys() {
		if k.GetOwner() != "users/"+a.memberID {
			t.Errorf("the member's key list shows %s, owned by %q", k.GetName(), k.GetOwner())
		}
	}

	for _, tn := range tenants {
		for _, secret := range []string{tn.adminToken, tn.memberTok} {
			if pf.log.Contains(secret) {
				t.Error("an access token appears in identity's log")
			}
		}
	}
	if pf.log.Contains(pf.admin) {
		t.Error("the admin key appears in identity's log")
	}
}

// idp is an OIDC identity provider for tn whose issuer is the test
// Keycloak's master realm (any reachable discovery document will do: no
// one signs in through it here). The fixture provider "corp" also vouches
// for the organization's own domain, {org}.example.
func idp(pf *platform, tn *tenant, id string) *identityv1.IdentityProvider {
	org := strings.TrimPrefix(tn.org, "orgs/")
	domains := []string{org + "-" + id + ".example"}
	if id == "corp" {
		domains = append(domains, org+".example")
	}
	return &identityv1.IdentityProvider{
		DisplayName: "Corp " + id,
		Protocol: &identityv1.IdentityProvider_Oidc{Oidc: &identityv1.OidcConfig{
			Issuer: pf.kcURL + "/realms/master", ClientId: "moat-" + id, ClientSecret: "s3cret-" + id}},
		GroupRoleMappings: []*identityv1.GroupRoleMapping{{Group: "admins", Role: identityv1.OrgRole_ORG_ROLE_ADMIN}},
		DefaultRole:       identityv1.OrgRole_ORG_ROLE_MEMBER,
		EmailDomains:      domains,
	}
}

// deniedAudits returns the audit events with outcome DENIED in the
// outbox, oldest first.
func deniedAudits(t *testing.T, pool *pgxpool.Pool) []*auditv1.AuditEvent {
	t.Helper()
	rows, err := pool.Query(t.Context(), `SELECT payload FROM outbox WHERE subject = $1 ORDER BY created_at, event_id`, postgres.AuditSubject)
	if err != nil {
		t.Fatal(err)
	}
	payloads, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		t.Fatal(err)
	}
	var out []*auditv1.AuditEvent
	for _, p := range payloads {
		ev := &auditv1.AuditEvent{}
		if err := proto.Unmarshal(p, ev); err != nil {
			t.Fatal(err)
		}
		if ev.GetOutcome() == auditv1.AuditEvent_OUTCOME_DENIED {
			out = append(out, ev)
		}
	}
	return out
}
