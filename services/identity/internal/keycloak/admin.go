package keycloak

import (
	"bytes"
	"cmp"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/Nerzal/gocloak/v13"
)

// IdPGroupsAttribute is the user attribute of Moat's realm that holds the
// groups a user's identity provider asserted at the last sign-in. The
// broker overwrites it at every sign-in (sync mode FORCE), so it is never
// older than the user's last session; users can neither see nor edit it.
const IdPGroupsAttribute = "moat_idp_groups"

// ErrUserNotFound reports a user id that Moat's realm does not know.
var ErrUserNotFound = errors.New("keycloak user not found")

// ErrInvalidProvider reports an identity provider configuration that
// Keycloak cannot use; the wrapped text says why and is safe to show to
// the administrator who sent it.
var ErrInvalidProvider = errors.New("invalid identity provider")

// IdentityProvider is a corporate identity provider that Moat's realm
// brokers sign-ins to. Exactly one of OIDC and SAML is set.
type IdentityProvider struct {
	// Alias names the provider in Keycloak and in its broker URLs
	// ({keycloak}/realms/{realm}/broker/{alias}/endpoint), e.g.
	// "org-acme-corp": 1 to 255 of a-z, 0-9, '.', '_' and '-', starting
	// with a letter or digit. Sign-ins choose the provider with
	// kc_idp_hint=alias: the realm's login page does not list providers,
	// since every organisation's shares it.
	Alias string
	// DisplayName names the provider on Keycloak's pages; empty means
	// Alias.
	DisplayName string
	// OIDC and SAML configure the provider's protocol. A provider keeps
	// its protocol: to change it, delete the provider first.
	OIDC *OIDCProvider
	SAML *SAMLProvider
}

// OIDCProvider is an OpenID Connect identity provider, configured from its
// discovery document.
type OIDCProvider struct {
	// Issuer is the provider's issuer URL; its discovery document is at
	// Issuer + "/.well-known/openid-configuration" and must name the same
	// issuer.
	Issuer string
	// ClientID and ClientSecret are Moat's client at the provider. The
	// secret is write-only: Admin never reads it back, and an empty secret
	// keeps the one Keycloak holds (it is required on creation).
	ClientID, ClientSecret string
	// Scopes are requested at sign-in; empty means openid, email, profile.
	Scopes []string
	// GroupsClaim is the claim (ID token, access token or userinfo) that
	// lists the user's groups; empty means "groups".
	GroupsClaim string
}

// SAMLProvider is a SAML 2.0 identity provider. Moat's realm is the service
// provider: its entity id is {keycloak}/realms/{realm} and its assertion
// consumer service {keycloak}/realms/{realm}/broker/{alias}/endpoint (HTTP
// POST binding).
type SAMLProvider struct {
	// SSOURL is the provider's single sign-on service (HTTP POST binding).
	SSOURL string
	// EntityID is the provider's entity id; responses from another issuer
	// are refused.
	EntityID string
	// SigningCertificate is the provider's signing certificate, base64 DER
	// or PEM. When set, responses must be signed with it. Without it
	// Keycloak accepts unsigned responses, which anyone can forge: leave it
	// empty in tests only.
	SigningCertificate string
	// NameIDFormat is the requested NameID format: "email" (default),
	// "persistent", "transient", "unspecified" or a full URN.
	NameIDFormat string
	// GroupsAttribute is the assertion attribute (name or friendly name)
	// that lists the user's groups; empty means "groups".
	GroupsAttribute string
	// EmailAttribute, FirstNameAttribute and LastNameAttribute name the
	// assertion attributes of the user's profile; empty means "email",
	// "firstName" and "lastName". With the email NameID format, Keycloak
	// also takes the email from the NameID.
	EmailAttribute, FirstNameAttribute, LastNameAttribute string
}

// BrokeredUser is what Moat's realm knows about a user who signed in
// through identity providers.
type BrokeredUser struct {
	Email         string
	EmailVerified bool
	// Links are the user's identities at identity providers.
	Links []Link
	// Groups are the groups the provider asserted at the last sign-in
	// (IdPGroupsAttribute).
	Groups []string
}

// Link is a user's identity at one identity provider.
type Link struct {
	// Alias is the identity provider's alias.
	Alias string
	// ExternalUserID and ExternalUserName are the user's subject and name
	// at the provider.
	ExternalUserID, ExternalUserName string
}

// adminClientID is the master realm's public client for administration.
const adminClientID = "admin-cli"

// Admin administers Moat's realm at run time with a master-realm admin
// session. It logs in on first use and again when the session ends, and is
// safe for concurrent use. It never logs or returns the admin password,
// its tokens or identity providers' client secrets.
type Admin struct {
	kc              *gocloak.GoCloak
	url             string
	user, password  string
	realm           string
	now             func() time.Time
	mu              sync.Mutex // guards the fields below
	access, refresh string
	accessExpiry    time.Time
	refreshExpiry   time.Time
	profileReady    bool
}

// NewAdmin returns an Admin of realm at the Keycloak at keycloakURL,
// logging in to the master realm as adminUser. It does not contact
// Keycloak.
func NewAdmin(keycloakURL, adminUser, adminPassword, realm string) *Admin {
	return &Admin{
		kc:  gocloak.NewClient(keycloakURL),
		url: strings.TrimSuffix(keycloakURL, "/"), user: adminUser, password: adminPassword, realm: realm,
		now: time.Now,
	}
}

// token returns an access token of the admin session, refreshing the
// session or logging in again when the token is near its end.
func (a *Admin) token(ctx context.Context) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	if a.access != "" && now.Before(a.accessExpiry) {
		return a.access, nil
	}
	if a.refresh != "" && now.Before(a.refreshExpiry) {
		// A failed refresh (the session was ended in Keycloak, or
		// Keycloak restarted) falls through to a fresh login.
		if jwt, err := a.kc.RefreshToken(ctx, a.refresh, adminClientID, "", "master"); err == nil {
			a.keep(jwt, now)
			return a.access, nil
		}
	}
	jwt, err := a.kc.LoginAdmin(ctx, a.user, a.password, "master")
	if err != nil {
		return "", fmt.Errorf("keycloak: log in as admin: %w", scrub(err))
	}
	a.keep(jwt, now)
	return a.access, nil
}

func (a *Admin) keep(jwt *gocloak.JWT, issued time.Time) {
	a.access, a.refresh = jwt.AccessToken, jwt.RefreshToken
	a.accessExpiry = issued.Add(early(jwt.ExpiresIn))
	a.refreshExpiry = issued.Add(early(jwt.RefreshExpiresIn))
}

// early is a token lifetime shortened by a quarter (at most 30s), so that
// a token is replaced before it can expire in flight.
func early(seconds int) time.Duration {
	d := time.Duration(seconds) * time.Second
	return d - min(d/4, 30*time.Second)
}

// forget drops a token Keycloak refused, so that the next call logs in.
func (a *Admin) forget(tok string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.access == tok {
		a.access, a.refresh = "", ""
	}
}

// call runs fn with an admin token, and once more with a new one when
// Keycloak refuses the first (its sessions do not survive every restart).
func (a *Admin) call(ctx context.Context, fn func(tok string) error) error {
	tok, err := a.token(ctx)
	if err != nil {
		return err
	}
	err = fn(tok)
	if apiCode(err) != http.StatusUnauthorized {
		return err
	}
	a.forget(tok)
	if tok, err = a.token(ctx); err != nil {
		return err
	}
	return fn(tok)
}

var aliasPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,254}$`)

// PutIdentityProvider creates p in Moat's realm, or updates it to p when it
// exists, together with its mappers: email, first and last name, and the
// groups claim or attribute into IdPGroupsAttribute, all refreshed at every
// sign-in. Mappers it did not create are left alone. It is idempotent.
// Invalid configurations, including an OIDC issuer whose discovery
// document Keycloak cannot read, wrap ErrInvalidProvider.
func (a *Admin) PutIdentityProvider(ctx context.Context, p IdentityProvider) (err error) {
	defer func() { err = withoutSecret(err, p) }()
	if err := validate(p); err != nil {
		return err
	}
	if err := a.declareGroupsAttribute(ctx); err != nil {
		return err
	}
	var existing *gocloak.IdentityProviderRepresentation
	err = a.call(ctx, func(tok string) error {
		var err error
		existing, err = a.kc.GetIdentityProvider(ctx, tok, a.realm, p.Alias)
		return err
	})
	exists := err == nil
	if err != nil && !notFound(err) {
		return fmt.Errorf("keycloak: read identity provider %s: %w", p.Alias, scrub(err))
	}
	var rep idpRepresentation
	var mappers []gocloak.IdentityProviderMapper
	switch {
	case p.OIDC != nil:
		if p.OIDC.ClientSecret == "" && !exists {
			return fmt.Errorf("%w: %s: the OIDC client secret is required", ErrInvalidProvider, p.Alias)
		}
		if rep, err = a.oidc(ctx, p); err != nil {
			return err
		}
		mappers = oidcMappers(p.OIDC)
	default:
		rep = samlRepresentation(p)
		mappers = samlMappers(p.SAML)
	}
	if exists && existing.ProviderID != nil && *existing.ProviderID != *rep.ProviderID {
		return fmt.Errorf("%w: %s is a %s provider and cannot become %s", ErrInvalidProvider, p.Alias, *existing.ProviderID, *rep.ProviderID)
	}
	instances := "/admin/realms/" + url.PathEscape(a.realm) + "/identity-provider/instances"
	if !exists {
		err = a.call(ctx, func(tok string) error { return a.adminJSON(ctx, tok, http.MethodPost, instances, rep, nil) })
		switch {
		case err == nil:
			return a.putMappers(ctx, p.Alias, mappers)
		case !conflict(err):
			return fmt.Errorf("keycloak: create identity provider %s: %w", p.Alias, scrub(err))
		}
		// Created concurrently by another replica: update it to p.
	}
	err = a.call(ctx, func(tok string) error {
		return a.adminJSON(ctx, tok, http.MethodPut, instances+"/"+url.PathEscape(p.Alias), rep, nil)
	})
	if err != nil {
		return fmt.Errorf("keycloak: update identity provider %s: %w", p.Alias, scrub(err))
	}
	return a.putMappers(ctx, p.Alias, mappers)
}

// withoutSecret keeps p's client secret out of err, should Keycloak's
// answer ever repeat what it was sent.
func withoutSecret(err error, p IdentityProvider) error {
	if err == nil || p.OIDC == nil || p.OIDC.ClientSecret == "" || !strings.Contains(err.Error(), p.OIDC.ClientSecret) {
		return err
	}
	msg := strings.ReplaceAll(err.Error(), p.OIDC.ClientSecret, "[client secret]")
	if errors.Is(err, ErrInvalidProvider) {
		return fmt.Errorf("%w: %s", ErrInvalidProvider, strings.TrimPrefix(msg, ErrInvalidProvider.Error()+": "))
	}
	return errors.New(msg)
}

func validate(p IdentityProvider) error {
	invalid := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidProvider, fmt.Sprintf(format, args...))
	}
	if !aliasPattern.MatchString(p.Alias) {
		return invalid("alias %q must be 1 to 255 lowercase letters, digits, '.', '_' or '-'", p.Alias)
	}
	if (p.OIDC == nil) == (p.SAML == nil) {
		return invalid("%s: exactly one of OIDC and SAML must be set", p.Alias)
	}
	if o := p.OIDC; o != nil {
		if err := httpURL(o.Issuer); err != nil {
			return invalid("%s: issuer: %v", p.Alias, err)
		}
		if o.ClientID == "" {
			return invalid("%s: the OIDC client id is required", p.Alias)
		}
	}
	if s := p.SAML; s != nil {
		if err := httpURL(s.SSOURL); err != nil {
			return invalid("%s: single sign-on URL: %v", p.Alias, err)
		}
		if s.EntityID == "" {
			return invalid("%s: the SAML entity id is required", p.Alias)
		}
		if _, err := nameIDFormat(s.NameIDFormat); err != nil {
			return invalid("%s: %v", p.Alias, err)
		}
		if _, err := certificate(s.SigningCertificate); err != nil {
			return invalid("%s: signing certificate: %v", p.Alias, err)
		}
	}
	return nil
}

func httpURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return errors.New("must be an http(s) URL")
	}
	return nil
}

// oidc builds the representation of an OIDC provider. Keycloak reads the
// issuer's discovery document itself (import-config), so the endpoints are
// what Keycloak can reach.
func (a *Admin) oidc(ctx context.Context, p IdentityProvider) (idpRepresentation, error) {
	o := p.OIDC
	issuer := strings.TrimSuffix(o.Issuer, "/")
	var discovered map[string]string
	err := a.call(ctx, func(tok string) error {
		var err error
		discovered, err = a.kc.ImportIdentityProviderConfig(ctx, tok, a.realm, issuer+"/.well-known/openid-configuration", "oidc")
		return err
	})
	switch code := apiCode(err); {
	case err == nil:
	case code == http.StatusBadRequest || code >= http.StatusInternalServerError:
		// Keycloak fetched the document and failed. Its answer can
		// describe the network behind it, and the caller is an
		// organisation admin, so it gets the status only.
		return idpRepresentation{}, fmt.Errorf("%w: %s: Keycloak could not read the discovery document of %s (status %d)",
			ErrInvalidProvider, p.Alias, issuer, code)
	default: // Keycloak itself is unreachable or refused the admin
		return idpRepresentation{}, fmt.Errorf("keycloak: import the discovery document of %s: %w", issuer, scrub(err))
	}
	if got := strings.TrimSuffix(discovered["issuer"], "/"); got != issuer {
		return idpRepresentation{}, fmt.Errorf("%w: %s: the discovery document names issuer %q, want %q",
			ErrInvalidProvider, p.Alias, discovered["issuer"], o.Issuer)
	}
	scopes := o.Scopes
	if len(scopes) == 0 {
		scopes = []string{"openid", "email", "profile"}
	}
	secret := o.ClientSecret
	if secret == "" {
		// Keycloak's mask for a secret: keep the one it holds.
		secret = "**********"
	}
	config := map[string]string{
		"clientId":          o.ClientID,
		"clientSecret":      secret,
		"clientAuthMethod":  "client_secret_post",
		"defaultScope":      strings.Join(scopes, " "),
		"pkceEnabled":       "true",
		"pkceMethod":        "S256",
		"syncMode":          "FORCE",
		"validateSignature": "true",
		"useJwksUrl":        "true",
	}
	for _, k := range []string{"issuer", "authorizationUrl", "tokenUrl", "jwksUrl", "userInfoUrl", "logoutUrl"} {
		if v := discovered[k]; v != "" {
			config[k] = v
		}
	}
	if config["authorizationUrl"] == "" || config["tokenUrl"] == "" || config["jwksUrl"] == "" {
		return idpRepresentation{}, fmt.Errorf("%w: %s: the discovery document lacks the authorization, token or JWKS endpoint",
			ErrInvalidProvider, p.Alias)
	}
	return representation(p, "oidc", config), nil
}

func samlRepresentation(p IdentityProvider) idpRepresentation {
	s := p.SAML
	format, _ := nameIDFormat(s.NameIDFormat) // validated
	cert, _ := certificate(s.SigningCertificate)
	config := map[string]string{
		"singleSignOnServiceUrl":  s.SSOURL,
		"idpEntityId":             s.EntityID,
		"nameIDPolicyFormat":      format,
		"principalType":           "SUBJECT",
		"postBindingAuthnRequest": "true",
		"postBindingResponse":     "true",
		"postBindingLogout":       "true",
		"allowCreate":             "true",
		"syncMode":                "FORCE",
		"validateSignature":       "false",
	}
	if cert != "" {
		config["validateSignature"] = "true"
		config["signingCertificate"] = cert
	}
	return representation(p, "saml", config)
}

// idpRepresentation is Keycloak's IdentityProviderRepresentation with the
// field gocloak v13 lacks.
type idpRepresentation struct {
	gocloak.IdentityProviderRepresentation
	// HideOnLogin keeps the provider's button off the realm's login page
	// (Keycloak 26 moved it out of config).
	HideOnLogin bool `json:"hideOnLogin"`
}

func representation(p IdentityProvider, providerID string, config map[string]string) idpRepresentation {
	return idpRepresentation{
		IdentityProviderRepresentation: gocloak.IdentityProviderRepresentation{
			Alias:       gocloak.StringP(p.Alias),
			DisplayName: gocloak.StringP(cmp.Or(p.DisplayName, p.Alias)),
			ProviderID:  gocloak.StringP(providerID),
			Enabled:     gocloak.BoolP(true),
			// The organisation's provider vouches for its users' emails.
			TrustEmail: gocloak.BoolP(true),
			StoreToken: gocloak.BoolP(false),
			LinkOnly:   gocloak.BoolP(false),
			Config:     &config,
		},
		// Every organisation's provider shares Moat's realm: its login
		// page must not list the customers. Sign-ins pick their provider
		// with kc_idp_hint.
		HideOnLogin: true,
	}
}

var nameIDFormats = map[string]string{
	"":            "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress",
	"email":       "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress",
	"persistent":  "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent",
	"transient":   "urn:oasis:names:tc:SAML:2.0:nameid-format:transient",
	"unspecified": "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified",
}

func nameIDFormat(f string) (string, error) {
	if urn, ok := nameIDFormats[f]; ok {
		return urn, nil
	}
	if slices.Contains(slices.Collect(maps.Values(nameIDFormats)), f) {
		return f, nil
	}
	return "", fmt.Errorf("unknown NameID format %q", f)
}

// certificate returns the base64 DER form Keycloak stores, from base64 DER
// or PEM.
func certificate(c string) (string, error) {
	c = strings.TrimSpace(c)
	if c == "" {
		return "", nil
	}
	var der []byte
	if block, _ := pem.Decode([]byte(c)); block != nil {
		if block.Type != "CERTIFICATE" {
			return "", fmt.Errorf("PEM block is %s, want CERTIFICATE", block.Type)
		}
		der = block.Bytes
	} else {
		var err error
		if der, err = base64.StdEncoding.DecodeString(strings.Join(strings.Fields(c), "")); err != nil {
			return "", errors.New("neither PEM nor base64 DER")
		}
	}
	if _, err := x509.ParseCertificate(der); err != nil {
		return "", fmt.Errorf("parse: %w", err)
	}
	return base64.StdEncoding.EncodeToString(der), nil
}

// Mapper names; Admin owns the mappers with these names and leaves others
// alone.
const (
	mapperEmail     = "moat-email"
	mapperFirstName = "moat-first-name"
	mapperLastName  = "moat-last-name"
	mapperGroups    = "moat-groups"
	mapperUsername  = "moat-username"
)

func mapper(name, kind string, config map[string]string) gocloak.IdentityProviderMapper {
	if _, ok := config["syncMode"]; !ok {
		config["syncMode"] = "FORCE"
	}
	return gocloak.IdentityProviderMapper{Name: gocloak.StringP(name), IdentityProviderMapper: gocloak.StringP(kind), Config: &config}
}

func oidcMappers(o *OIDCProvider) []gocloak.IdentityProviderMapper {
	const attr = "oidc-user-attribute-idp-mapper"
	return []gocloak.IdentityProviderMapper{
		mapper(mapperEmail, attr, map[string]string{"claim": "email", "user.attribute": "email"}),
		mapper(mapperFirstName, attr, map[string]string{"claim": "given_name", "user.attribute": "firstName"}),
		mapper(mapperLastName, attr, map[string]string{"claim": "family_name", "user.attribute": "lastName"}),
		mapper(mapperGroups, attr, map[string]string{"claim": cmp.Or(o.GroupsClaim, "groups"), "user.attribute": IdPGroupsAttribute}),
		// Keycloak would name the user after preferred_username, which
		// two organisations can share ("alice"); the second would then
		// meet an "account already exists" page. Emails are unique in
		// the realm anyway, so the provider must send one. Set once:
		// usernames do not follow the provider.
		mapper(mapperUsername, "oidc-username-idp-mapper", map[string]string{"template": "${CLAIM.email}", "target": "LOCAL", "syncMode": "IMPORT"}),
	}
}

func samlMappers(s *SAMLProvider) []gocloak.IdentityProviderMapper {
	const attr = "saml-user-attribute-idp-mapper"
	// attribute.name matches an attribute's name or its friendly name.
	return []gocloak.IdentityProviderMapper{
		mapper(mapperEmail, attr, map[string]string{"attribute.name": cmp.Or(s.EmailAttribute, "email"), "user.attribute": "email"}),
		mapper(mapperFirstName, attr, map[string]string{"attribute.name": cmp.Or(s.FirstNameAttribute, "firstName"), "user.attribute": "firstName"}),
		mapper(mapperLastName, attr, map[string]string{"attribute.name": cmp.Or(s.LastNameAttribute, "lastName"), "user.attribute": "lastName"}),
		mapper(mapperGroups, attr, map[string]string{"attribute.name": cmp.Or(s.GroupsAttribute, "groups"), "user.attribute": IdPGroupsAttribute}),
	}
}

// putMappers creates the missing mappers of want by name and updates those
// that differ.
func (a *Admin) putMappers(ctx context.Context, alias string, want []gocloak.IdentityProviderMapper) error {
	var have []*gocloak.IdentityProviderMapper
	err := a.call(ctx, func(tok string) error {
		var err error
		have, err = a.kc.GetIdentityProviderMappers(ctx, tok, a.realm, alias)
		return err
	})
	if err != nil {
		return fmt.Errorf("keycloak: list the mappers of %s: %w", alias, scrub(err))
	}
	for _, m := range want {
		m.IdentityProviderAlias = gocloak.StringP(alias)
		i := slices.IndexFunc(have, func(h *gocloak.IdentityProviderMapper) bool { return h.Name != nil && *h.Name == *m.Name })
		switch {
		case i < 0:
			err = a.call(ctx, func(tok string) error {
				_, err := a.kc.CreateIdentityProviderMapper(ctx, tok, a.realm, alias, m)
				return err
			})
			if conflict(err) {
				continue // created concurrently
			}
		case sameMapper(have[i], m):
			continue
		default:
			m.ID = have[i].ID
			err = a.call(ctx, func(tok string) error { return a.kc.UpdateIdentityProviderMapper(ctx, tok, a.realm, alias, m) })
		}
		if err != nil {
			return fmt.Errorf("keycloak: put mapper %s of %s: %w", *m.Name, alias, scrub(err))
		}
	}
	return nil
}

func sameMapper(have *gocloak.IdentityProviderMapper, want gocloak.IdentityProviderMapper) bool {
	if have.IdentityProviderMapper == nil || *have.IdentityProviderMapper != *want.IdentityProviderMapper || have.Config == nil {
		return false
	}
	for k, v := range *want.Config {
		if (*have.Config)[k] != v {
			return false
		}
	}
	return true
}

// DeleteIdentityProvider deletes the identity provider alias from Moat's
// realm, with its mappers and its users' links to it (the users stay). A
// provider that is already gone is not an error; an alias that
// PutIdentityProvider would refuse wraps ErrInvalidProvider.
func (a *Admin) DeleteIdentityProvider(ctx context.Context, alias string) error {
	// gocloak puts names into paths unescaped: only valid aliases get
	// there.
	if !aliasPattern.MatchString(alias) {
		return fmt.Errorf("%w: alias %q", ErrInvalidProvider, alias)
	}
	err := a.call(ctx, func(tok string) error { return a.kc.DeleteIdentityProvider(ctx, tok, a.realm, alias) })
	if err != nil && !notFound(err) {
		return fmt.Errorf("keycloak: delete identity provider %s: %w", alias, scrub(err))
	}
	return nil
}

// BrokeredUser returns the user userID of Moat's realm (an access token's
// sub) with its identity-provider links and the groups its provider last
// asserted. An unknown user is ErrUserNotFound.
func (a *Admin) BrokeredUser(ctx context.Context, userID string) (BrokeredUser, error) {
	// gocloak puts ids into paths unescaped.
	if userID == "" || userID == "." || userID == ".." {
		return BrokeredUser{}, fmt.Errorf("read user %q: %w", userID, ErrUserNotFound)
	}
	id := url.PathEscape(userID)
	var u *gocloak.User
	var links []*gocloak.FederatedIdentityRepresentation
	err := a.call(ctx, func(tok string) error {
		var err error
		if u, err = a.kc.GetUserByID(ctx, tok, a.realm, id); err != nil {
			return err
		}
		links, err = a.kc.GetUserFederatedIdentities(ctx, tok, a.realm, id)
		return err
	})
	if notFound(err) {
		return BrokeredUser{}, fmt.Errorf("read user %s: %w", userID, ErrUserNotFound)
	}
	if err != nil {
		return BrokeredUser{}, fmt.Errorf("keycloak: read user %s: %w", userID, scrub(err))
	}
	bu := BrokeredUser{Email: gocloak.PString(u.Email), EmailVerified: u.EmailVerified != nil && *u.EmailVerified}
	if u.Attributes != nil {
		bu.Groups = slices.Clone((*u.Attributes)[IdPGroupsAttribute])
	}
	for _, l := range links {
		bu.Links = append(bu.Links, Link{
			Alias:            gocloak.PString(l.IdentityProvider),
			ExternalUserID:   gocloak.PString(l.UserID),
			ExternalUserName: gocloak.PString(l.UserName),
		})
	}
	return bu, nil
}

// declareGroupsAttribute adds IdPGroupsAttribute to the realm's user
// profile, once per Admin. Keycloak (24 and later) drops attributes the
// profile does not declare, both when the broker creates a user and from
// the admin API's view of one. Only admins may see or edit it: a user who
// could edit it would choose their own groups.
func (a *Admin) declareGroupsAttribute(ctx context.Context) error {
	a.mu.Lock()
	ready := a.profileReady
	a.mu.Unlock()
	if ready {
		return nil
	}
	want := map[string]any{
		"name":        IdPGroupsAttribute,
		"displayName": "Identity provider groups",
		"multivalued": true,
		"permissions": map[string]any{"view": []string{"admin"}, "edit": []string{"admin"}},
		"validations": map[string]any{},
		"annotations": map[string]any{},
	}
	path := "/admin/realms/" + url.PathEscape(a.realm) + "/users/profile"
	var profile map[string]json.RawMessage
	err := a.call(ctx, func(tok string) error {
		profile = nil
		return a.adminJSON(ctx, tok, http.MethodGet, path, nil, &profile)
	})
	if err != nil {
		return fmt.Errorf("keycloak: read the user profile of %s: %w", a.realm, scrub(err))
	}
	var attrs []map[string]any
	if err := json.Unmarshal(profile["attributes"], &attrs); err != nil {
		return fmt.Errorf("keycloak: decode the user profile of %s: %w", a.realm, err)
	}
	i := slices.IndexFunc(attrs, func(at map[string]any) bool { return at["name"] == IdPGroupsAttribute })
	if i >= 0 && declared(attrs[i]) {
		a.mu.Lock()
		a.profileReady = true
		a.mu.Unlock()
		return nil
	}
	if i >= 0 {
		attrs[i] = want
	} else {
		attrs = append(attrs, want)
	}
	b, err := json.Marshal(attrs)
	if err != nil {
		return fmt.Errorf("keycloak: encode the user profile of %s: %w", a.realm, err)
	}
	profile["attributes"] = b
	err = a.call(ctx, func(tok string) error { return a.adminJSON(ctx, tok, http.MethodPut, path, profile, nil) })
	if err != nil {
		return fmt.Errorf("keycloak: declare %s in the user profile of %s: %w", IdPGroupsAttribute, a.realm, scrub(err))
	}
	a.mu.Lock()
	a.profileReady = true
	a.mu.Unlock()
	return nil
}

// declared says whether a user-profile attribute is multivalued and
// admin-only.
func declared(at map[string]any) bool {
	perms, _ := at["permissions"].(map[string]any)
	only := func(k string) bool {
		roles, _ := perms[k].([]any)
		return len(roles) == 1 && roles[0] == "admin"
	}
	return at["multivalued"] == true && only("view") && only("edit")
}

// adminJSON calls an admin endpoint that gocloak lacks. Failures are
// gocloak's error type, so that apiCode, notFound and scrub apply.
func (a *Admin) adminJSON(ctx context.Context, tok, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.url+path, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.kc.RestyClient().GetClient().Do(req)
	if err != nil {
		return &gocloak.APIError{Message: fmt.Sprintf("%s %s: %v", method, path, errors.Unwrap(err))}
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return &gocloak.APIError{Code: resp.StatusCode, Message: fmt.Sprintf("%s %s: %s %s", method, path, resp.Status, bytes.TrimSpace(msg))}
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode %s %s: %w", method, path, err)
	}
	return nil
}
