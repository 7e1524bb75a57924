package keycloak_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Nerzal/gocloak/v13"
	"github.com/google/go-cmp/cmp"

	"github.com/moat-ai/moat/libs/authn"
	"github.com/moat-ai/moat/libs/keycloaktest"
	"github.com/moat-ai/moat/services/identity/internal/keycloak"
)

// bootstrapped returns a bootstrapped realm of this test only and an Admin
// of it.
func bootstrapped(ctx context.Context, t *testing.T) (keycloak.Config, keycloak.Result, *keycloak.Admin) {
	t.Helper()
	cfg := newRealm(t)
	res, err := keycloak.Bootstrap(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("Bootstrap = %v", err)
	}
	return cfg, res, keycloak.NewAdmin(cfg.URL, cfg.AdminUser, cfg.AdminPassword, cfg.Realm)
}

func brokerEndpoint(cfg keycloak.Config, alias string) string {
	return cfg.URL + "/realms/" + cfg.Realm + "/broker/" + alias + "/endpoint"
}

// adminToken is a master-realm token for the test's own look-ups.
func adminToken(ctx context.Context, t *testing.T, cfg keycloak.Config) (*gocloak.GoCloak, string) {
	t.Helper()
	kc := gocloak.NewClient(cfg.URL)
	jwt, err := kc.LoginAdmin(ctx, cfg.AdminUser, cfg.AdminPassword, "master")
	if err != nil {
		t.Fatalf("log in as admin: %v", err)
	}
	return kc, jwt.AccessToken
}

// mappers returns the identity provider's mappers by name, each as its
// type and the config keys the test looks at.
func mappers(ctx context.Context, t *testing.T, cfg keycloak.Config, alias string) map[string]string {
	t.Helper()
	kc, tok := adminToken(ctx, t, cfg)
	ms, err := kc.GetIdentityProviderMappers(ctx, tok, cfg.Realm, alias)
	if err != nil {
		t.Fatalf("list the mappers of %s: %v", alias, err)
	}
	got := map[string]string{}
	for _, m := range ms {
		c := *m.Config
		from := c["claim"] + c["attribute.name"] + c["template"]
		to := c["user.attribute"] + c["target"]
		got[*m.Name] = *m.IdentityProviderMapper + " " + from + "->" + to + " " + c["syncMode"]
	}
	return got
}

// loginPage returns the console's login page at issuer.
func loginPage(ctx context.Context, t *testing.T, issuer, redirectURI string) string {
	t.Helper()
	q := url.Values{"client_id": {keycloak.ConsoleClientID}, "response_type": {"code"}, "scope": {"openid"}, "redirect_uri": {redirectURI},
		"code_challenge": {"E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"}, "code_challenge_method": {"S256"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, issuer+"/protocol/openid-connect/auth?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("load the login page: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read the login page: %v", err)
	}
	return string(b)
}

// forgeGroups tries, as the user of token, to set IdPGroupsAttribute
// through Keycloak's account API; the API must neither show the attribute
// to the user nor accept it.
func forgeGroups(ctx context.Context, t *testing.T, issuer, token string) {
	t.Helper()
	call := func(method string, body io.Reader) (int, []byte) {
		req, err := http.NewRequestWithContext(ctx, method, issuer+"/account", body)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Accept", "application/json")
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s account: %v", method, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("%s account: %v", method, err)
		}
		return resp.StatusCode, b
	}
	var account map[string]any
	if code, b := call(http.MethodGet, nil); code != http.StatusOK || json.Unmarshal(b, &account) != nil {
		t.Fatalf("GET account: %d %s", code, b)
	}
	if attrs, _ := account["attributes"].(map[string]any); attrs[keycloak.IdPGroupsAttribute] != nil {
		t.Errorf("the account API shows %s to the user: %v", keycloak.IdPGroupsAttribute, attrs)
	}
	account["attributes"] = map[string]any{keycloak.IdPGroupsAttribute: []string{keycloak.PlatformAdminGroup}}
	b, err := json.Marshal(account)
	if err != nil {
		t.Fatal(err)
	}
	if code, b := call(http.MethodPost, strings.NewReader(string(b))); code != http.StatusBadRequest || !strings.Contains(string(b), "read-only") {
		t.Errorf("POST account with %s: %d %s, want 400 read-only", keycloak.IdPGroupsAttribute, code, b)
	}
}

// An organisation's OIDC provider, put twice, brokers sign-ins: the user
// gets a Moat token and Moat's realm knows their link, verified email and
// the provider's groups, refreshed at every sign-in.
func TestOIDCProviderBrokersSignIns(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cfg, res, admin := bootstrapped(ctx, t)
	const alias = "org-acme-corp"
	corp := keycloaktest.NewCorpRealm(t, cfg.URL, cfg.AdminUser, cfg.AdminPassword, brokerEndpoint(cfg, alias))

	p := keycloak.IdentityProvider{Alias: alias, DisplayName: "Acme", OIDC: &keycloak.OIDCProvider{
		Issuer: corp.Issuer, ClientID: corp.ClientID, ClientSecret: corp.ClientSecret,
	}}
	if err := admin.PutIdentityProvider(ctx, p); err != nil {
		t.Fatalf("PutIdentityProvider = %v", err)
	}
	// The second put changes the display name and, without a secret,
	// keeps the one Keycloak holds.
	p.DisplayName, p.OIDC.ClientSecret = "Acme Corp", ""
	if err := admin.PutIdentityProvider(ctx, p); err != nil {
		t.Fatalf("second PutIdentityProvider = %v", err)
	}
	kc, tok := adminToken(ctx, t, cfg)
	idp, err := kc.GetIdentityProvider(ctx, tok, cfg.Realm, alias)
	if err != nil {
		t.Fatalf("read identity provider: %v", err)
	}
	c := *idp.Config
	if gocloak.PString(idp.DisplayName) != "Acme Corp" || c["issuer"] != corp.Issuer || c["syncMode"] != "FORCE" ||
		c["pkceEnabled"] != "true" || c["clientAuthMethod"] != "client_secret_post" || c["validateSignature"] != "true" ||
		!strings.HasPrefix(c["jwksUrl"], corp.Issuer+"/") || !strings.HasPrefix(c["tokenUrl"], corp.Issuer+"/") {
		t.Errorf("identity provider %q config %v", gocloak.PString(idp.DisplayName), c)
	}
	want := map[string]string{
		"moat-email":      "oidc-user-attribute-idp-mapper email->email FORCE",
		"moat-first-name": "oidc-user-attribute-idp-mapper given_name->firstName FORCE",
		"moat-last-name":  "oidc-user-attribute-idp-mapper family_name->lastName FORCE",
		"moat-groups":     "oidc-user-attribute-idp-mapper groups->" + keycloak.IdPGroupsAttribute + " FORCE",
		"moat-username":   "oidc-username-idp-mapper ${CLAIM.email}->LOCAL IMPORT",
	}
	if diff := cmp.Diff(want, mappers(ctx, t, cfg, alias)); diff != "" {
		t.Errorf("mappers mismatch (-want +got):\n%s", diff)
	}

	// The shared login page does not list the organisations' providers.
	if page := loginPage(ctx, t, res.Issuer, cfg.RedirectURIs[0]); !strings.Contains(page, "kc-form-login") || strings.Contains(page, alias) {
		t.Errorf("the realm's login page lists %s, or is no login page:\n%s", alias, page)
	}

	password := keycloaktest.RandomName("pw-")
	aliceID := corp.AddUser(t, "alice", password, "alice@corp.example", "Alice", "Liddell", "ai-admins")
	hint := url.Values{"kc_idp_hint": {alias}}
	token, err := keycloaktest.SignIn(ctx, res.Issuer, keycloak.ConsoleClientID, cfg.RedirectURIs[0], "alice", password, hint)
	if err != nil {
		t.Fatalf("brokered sign-in: %v", err)
	}
	v, err := authn.NewTokenVerifier(authn.TokenConfig{Issuer: res.Issuer, Audience: "moat"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	claims, err := v.Verify(ctx, token)
	if err != nil {
		t.Fatalf("Verify(brokered token) = %v", err)
	}
	if claims.Email != "alice@corp.example" || claims.PreferredUsername != "alice@corp.example" || slices.Contains(claims.Groups, keycloak.PlatformAdminGroup) {
		t.Errorf("brokered token: email %q username %q groups %v", claims.Email, claims.PreferredUsername, claims.Groups)
	}

	wantUser := keycloak.BrokeredUser{
		Email: "alice@corp.example", EmailVerified: true,
		Links:  []keycloak.Link{{Alias: alias, ExternalUserID: aliceID, ExternalUserName: "alice"}},
		Groups: []string{"ai-admins"},
	}
	got, err := admin.BrokeredUser(ctx, claims.Subject)
	if err != nil {
		t.Fatalf("BrokeredUser = %v", err)
	}
	if diff := cmp.Diff(wantUser, got); diff != "" {
		t.Errorf("BrokeredUser mismatch (-want +got):\n%s", diff)
	}

	// Alice cannot choose her own groups through the account API.
	forgeGroups(ctx, t, res.Issuer, token)
	if got, err := admin.BrokeredUser(ctx, claims.Subject); err != nil || !slices.Equal(got.Groups, []string{"ai-admins"}) {
		t.Errorf("BrokeredUser after the user's own update = %+v, %v; want the groups unchanged", got, err)
	}

	// The organisation moves Alice; her next sign-in brings the new groups.
	corp.SetGroups(t, aliceID, "finance", "ai-users")
	if _, err := keycloaktest.SignIn(ctx, res.Issuer, keycloak.ConsoleClientID, cfg.RedirectURIs[0], "alice", password, hint); err != nil {
		t.Fatalf("second brokered sign-in: %v", err)
	}
	got, err = admin.BrokeredUser(ctx, claims.Subject)
	if err != nil {
		t.Fatalf("BrokeredUser after the second sign-in = %v", err)
	}
	slices.Sort(got.Groups)
	if diff := cmp.Diff([]string{"ai-users", "finance"}, got.Groups); diff != "" {
		t.Errorf("groups after the second sign-in mismatch (-want +got):\n%s", diff)
	}

	// Wrong credentials at the organisation's provider give no token,
	// and the error does not repeat the password.
	_, err = keycloaktest.SignIn(ctx, res.Issuer, keycloak.ConsoleClientID, cfg.RedirectURIs[0], "alice", "wrong-"+password, hint)
	if err == nil || strings.Contains(err.Error(), password) {
		t.Errorf("sign-in with a wrong password = %v", err)
	}
	t.Logf("sign-in with a wrong password: %v", err)

	for _, id := range []string{"00000000-0000-0000-0000-000000000000", "", "..", "../" + claims.Subject, claims.Subject + "/groups"} {
		if _, err := admin.BrokeredUser(ctx, id); !errors.Is(err, keycloak.ErrUserNotFound) {
			t.Errorf("BrokeredUser(%q) = %v, want ErrUserNotFound", id, err)
		}
	}

	if err := admin.DeleteIdentityProvider(ctx, "../../users/"+claims.Subject); !errors.Is(err, keycloak.ErrInvalidProvider) {
		t.Errorf("DeleteIdentityProvider(a path) = %v, want ErrInvalidProvider", err)
	}
	for i := range 2 {
		if err := admin.DeleteIdentityProvider(ctx, alias); err != nil {
			t.Fatalf("DeleteIdentityProvider #%d = %v", i+1, err)
		}
	}
	if _, err := kc.GetIdentityProvider(ctx, tok, cfg.Realm, alias); err == nil {
		t.Error("the identity provider is still there after DeleteIdentityProvider")
	}
	got, err = admin.BrokeredUser(ctx, claims.Subject)
	if err != nil || len(got.Links) != 0 {
		t.Errorf("BrokeredUser after the provider's deletion = %+v, %v; want no links", got, err)
	}
}

// A SAML provider is put idempotently, with its mappers.
func TestPutSAMLProviderIsIdempotent(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg, _, admin := bootstrapped(ctx, t)
	// As long as identity's aliases get ({org}.{idp}, 63 characters each).
	alias := strings.Repeat("o", 63) + "." + strings.Repeat("i", 63)
	p := keycloak.IdentityProvider{Alias: alias, DisplayName: "SAML Corp", SAML: &keycloak.SAMLProvider{
		SSOURL: "https://idp.corp.example/saml/sso", EntityID: "https://idp.corp.example/saml",
		SigningCertificate: testCertificatePEM(t), GroupsAttribute: "memberOf",
	}}
	for i := range 2 {
		if err := admin.PutIdentityProvider(ctx, p); err != nil {
			t.Fatalf("PutIdentityProvider #%d = %v", i+1, err)
		}
	}
	kc, tok := adminToken(ctx, t, cfg)
	idp, err := kc.GetIdentityProvider(ctx, tok, cfg.Realm, alias)
	if err != nil {
		t.Fatalf("read identity provider: %v", err)
	}
	c := *idp.Config
	if gocloak.PString(idp.ProviderID) != "saml" || c["singleSignOnServiceUrl"] != p.SAML.SSOURL || c["idpEntityId"] != p.SAML.EntityID ||
		c["validateSignature"] != "true" || c["signingCertificate"] == "" || c["syncMode"] != "FORCE" ||
		c["nameIDPolicyFormat"] != "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress" {
		t.Errorf("identity provider %s config %v", gocloak.PString(idp.ProviderID), c)
	}
	want := map[string]string{
		"moat-email":      "saml-user-attribute-idp-mapper email->email FORCE",
		"moat-first-name": "saml-user-attribute-idp-mapper firstName->firstName FORCE",
		"moat-last-name":  "saml-user-attribute-idp-mapper lastName->lastName FORCE",
		"moat-groups":     "saml-user-attribute-idp-mapper memberOf->" + keycloak.IdPGroupsAttribute + " FORCE",
	}
	if diff := cmp.Diff(want, mappers(ctx, t, cfg, alias)); diff != "" {
		t.Errorf("mappers mismatch (-want +got):\n%s", diff)
	}

	// A changed groups attribute updates the mapper in place.
	p.SAML.GroupsAttribute = ""
	if err := admin.PutIdentityProvider(ctx, p); err != nil {
		t.Fatalf("PutIdentityProvider with the default groups attribute = %v", err)
	}
	want["moat-groups"] = "saml-user-attribute-idp-mapper groups->" + keycloak.IdPGroupsAttribute + " FORCE"
	if diff := cmp.Diff(want, mappers(ctx, t, cfg, alias)); diff != "" {
		t.Errorf("mappers after the change mismatch (-want +got):\n%s", diff)
	}

	// A provider keeps its protocol.
	o := keycloak.IdentityProvider{Alias: alias, OIDC: &keycloak.OIDCProvider{Issuer: cfg.URL + "/realms/master", ClientID: "x", ClientSecret: "y"}}
	if err := admin.PutIdentityProvider(ctx, o); !errors.Is(err, keycloak.ErrInvalidProvider) {
		t.Errorf("PutIdentityProvider turning SAML into OIDC = %v, want ErrInvalidProvider", err)
	}
}

// An organisation's SAML provider brokers sign-ins the same way: the
// corporate realm plays the provider, Moat's realm the service provider,
// and the POST-binding forms travel through the browser.
func TestSAMLProviderBrokersSignIns(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cfg, res, admin := bootstrapped(ctx, t)
	const alias = "org-saml-corp"
	corp := keycloaktest.NewCorpRealm(t, cfg.URL, cfg.AdminUser, cfg.AdminPassword, brokerEndpoint(cfg, alias))
	idp := corp.SAML(t, res.Issuer, brokerEndpoint(cfg, alias))
	p := keycloak.IdentityProvider{Alias: alias, DisplayName: "SAML Corp", SAML: &keycloak.SAMLProvider{
		SSOURL: idp.SSOURL, EntityID: idp.EntityID, SigningCertificate: idp.SigningCertificate,
	}}
	if err := admin.PutIdentityProvider(ctx, p); err != nil {
		t.Fatalf("PutIdentityProvider = %v", err)
	}

	password := keycloaktest.RandomName("pw-")
	aliceID := corp.AddUser(t, "alice", password, "alice@corp.example", "Alice", "Liddell", "ai-admins", "finance")
	hint := url.Values{"kc_idp_hint": {alias}}
	token, err := keycloaktest.SignIn(ctx, res.Issuer, keycloak.ConsoleClientID, cfg.RedirectURIs[0], "alice", password, hint)
	if err != nil {
		t.Fatalf("brokered SAML sign-in: %v", err)
	}
	v, err := authn.NewTokenVerifier(authn.TokenConfig{Issuer: res.Issuer, Audience: "moat"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	claims, err := v.Verify(ctx, token)
	if err != nil {
		t.Fatalf("Verify(brokered token) = %v", err)
	}
	got, err := admin.BrokeredUser(ctx, claims.Subject)
	if err != nil {
		t.Fatalf("BrokeredUser = %v", err)
	}
	slices.Sort(got.Groups)
	wantUser := keycloak.BrokeredUser{
		Email: "alice@corp.example", EmailVerified: true,
		Links:  []keycloak.Link{{Alias: alias, ExternalUserID: "alice@corp.example", ExternalUserName: "alice@corp.example"}},
		Groups: []string{"ai-admins", "finance"},
	}
	if diff := cmp.Diff(wantUser, got); diff != "" {
		t.Errorf("BrokeredUser mismatch (-want +got):\n%s", diff)
	}

	corp.SetGroups(t, aliceID)
	if _, err := keycloaktest.SignIn(ctx, res.Issuer, keycloak.ConsoleClientID, cfg.RedirectURIs[0], "alice", password, hint); err != nil {
		t.Fatalf("second brokered SAML sign-in: %v", err)
	}
	if got, err = admin.BrokeredUser(ctx, claims.Subject); err != nil || len(got.Groups) != 0 {
		t.Errorf("BrokeredUser after leaving every group = %+v, %v; want no groups", got, err)
	}

	// A response signed by another key is refused.
	p.SAML.SigningCertificate = testCertificatePEM(t)
	if err := admin.PutIdentityProvider(ctx, p); err != nil {
		t.Fatalf("PutIdentityProvider with another certificate = %v", err)
	}
	if _, err := keycloaktest.SignIn(ctx, res.Issuer, keycloak.ConsoleClientID, cfg.RedirectURIs[0], "alice", password, hint); err == nil {
		t.Error("SAML sign-in with a response the provider's certificate did not sign succeeded")
	} else {
		t.Logf("SAML sign-in under another certificate: %v", err)
	}
}

// Configurations Keycloak cannot use are refused, wrapping
// ErrInvalidProvider, and the error never carries the client secret.
func TestPutIdentityProviderRejectsInvalidConfigurations(t *testing.T) {
	t.Parallel()
	const secret = "s3cr3t-value"
	oidc := func(f func(*keycloak.OIDCProvider)) *keycloak.OIDCProvider {
		o := &keycloak.OIDCProvider{Issuer: "https://idp.example/realms/x", ClientID: "moat", ClientSecret: secret}
		f(o)
		return o
	}
	saml := func(f func(*keycloak.SAMLProvider)) *keycloak.SAMLProvider {
		s := &keycloak.SAMLProvider{SSOURL: "https://idp.example/sso", EntityID: "https://idp.example"}
		f(s)
		return s
	}
	tests := []struct {
		name string
		p    keycloak.IdentityProvider
	}{
		{"no alias", keycloak.IdentityProvider{OIDC: oidc(func(*keycloak.OIDCProvider) {})}},
		{"alias with a slash", keycloak.IdentityProvider{Alias: "org/acme", OIDC: oidc(func(*keycloak.OIDCProvider) {})}},
		{"alias in capitals", keycloak.IdentityProvider{Alias: "Acme", OIDC: oidc(func(*keycloak.OIDCProvider) {})}},
		{"alias too long", keycloak.IdentityProvider{Alias: strings.Repeat("a", 256), OIDC: oidc(func(*keycloak.OIDCProvider) {})}},
		{"neither protocol", keycloak.IdentityProvider{Alias: "acme"}},
		{"both protocols", keycloak.IdentityProvider{Alias: "acme", OIDC: oidc(func(*keycloak.OIDCProvider) {}), SAML: saml(func(*keycloak.SAMLProvider) {})}},
		{"issuer not a URL", keycloak.IdentityProvider{Alias: "acme", OIDC: oidc(func(o *keycloak.OIDCProvider) { o.Issuer = "idp.example" })}},
		{"no client id", keycloak.IdentityProvider{Alias: "acme", OIDC: oidc(func(o *keycloak.OIDCProvider) { o.ClientID = "" })}},
		{"SSO URL not a URL", keycloak.IdentityProvider{Alias: "acme", SAML: saml(func(s *keycloak.SAMLProvider) { s.SSOURL = "ftp://x" })}},
		{"no entity id", keycloak.IdentityProvider{Alias: "acme", SAML: saml(func(s *keycloak.SAMLProvider) { s.EntityID = "" })}},
		{"unknown NameID format", keycloak.IdentityProvider{Alias: "acme", SAML: saml(func(s *keycloak.SAMLProvider) { s.NameIDFormat = "kerberos" })}},
		{"certificate not base64", keycloak.IdentityProvider{Alias: "acme", SAML: saml(func(s *keycloak.SAMLProvider) { s.SigningCertificate = "not a certificate!" })}},
		{"certificate not DER", keycloak.IdentityProvider{Alias: "acme", SAML: saml(func(s *keycloak.SAMLProvider) { s.SigningCertificate = "aGVsbG8=" })}},
	}
	// Validation comes before any call: this Admin's Keycloak does not exist.
	admin := keycloak.NewAdmin("http://127.0.0.1:1", "admin", "admin-password", "moat")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := admin.PutIdentityProvider(context.Background(), tt.p)
			if !errors.Is(err, keycloak.ErrInvalidProvider) || strings.Contains(err.Error(), secret) {
				t.Errorf("PutIdentityProvider = %v, want ErrInvalidProvider without the secret", err)
			}
		})
	}
}

// An issuer whose discovery document Keycloak cannot read is refused with
// the status only; a new OIDC provider needs its secret.
func TestPutOIDCProviderNeedsAReachableIssuerAndASecret(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg, _, admin := bootstrapped(ctx, t)
	const secret = "s3cr3t-value"
	for _, p := range []keycloak.IdentityProvider{
		{Alias: "nowhere", OIDC: &keycloak.OIDCProvider{Issuer: cfg.URL + "/realms/no-such-realm", ClientID: "moat", ClientSecret: secret}},
		{Alias: "no-secret", OIDC: &keycloak.OIDCProvider{Issuer: cfg.URL + "/realms/master", ClientID: "moat"}},
	} {
		err := admin.PutIdentityProvider(ctx, p)
		if !errors.Is(err, keycloak.ErrInvalidProvider) || strings.Contains(err.Error(), secret) {
			t.Errorf("PutIdentityProvider(%s) = %v, want ErrInvalidProvider without the secret", p.Alias, err)
		}
	}
}

// One Admin serves concurrent calls with one session.
func TestAdminIsSafeForConcurrentUse(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg, res, admin := bootstrapped(ctx, t)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = admin.BrokeredUser(ctx, res.PlatformAdminID)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Errorf("concurrent BrokeredUser: %v", err)
	}
	if _, err := keycloak.NewAdmin(cfg.URL, "moat-test-no-such-admin", "wrong-password", cfg.Realm).BrokeredUser(ctx, res.PlatformAdminID); err == nil ||
		strings.Contains(err.Error(), "wrong-password") {
		t.Errorf("BrokeredUser as an unknown admin = %v, want an error without the password", err)
	}
}

// testCertificatePEM returns a self-signed certificate that stands for a
// SAML provider's signing certificate.
func testCertificatePEM(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "idp.corp.example"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}
