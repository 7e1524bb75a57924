// Package keycloak sets up the Keycloak realm that Moat's sign-in runs on,
// through Keycloak's admin API (gocloak): the realm, the public console
// client (authorization code with PKCE), one confidential client per
// service, an audience mapper so that access tokens carry Moat's audience
// (Keycloak only puts "account" there by itself), the platform-admin group
// and a first platform admin. Every step is idempotent: identity runs it at
// each start and it converges to the same realm.
package keycloak

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"

	"github.com/Nerzal/gocloak/v13"

	"github.com/moat-ai/moat/libs/authn"
)

// PlatformAdminGroup is the group whose members are platform admins: every
// service's authn interceptor makes a platform admin of a user whose token
// lists it, so the name is authn's.
const PlatformAdminGroup = authn.PlatformAdminGroup

// ConsoleClientID is the public client of the web console and moatctl.
const ConsoleClientID = "moat-console"

// Services are the confidential clients, one per service, for service
// accounts (client credentials).
var Services = []string{"gateway", "identity", "config", "billing", "audit"}

// Config says where Keycloak is and what to create there.
type Config struct {
	// URL is Keycloak's base URL, e.g. http://127.0.0.1:8180.
	URL string
	// AdminUser and AdminPassword log in to the master realm (admin-cli).
	AdminUser, AdminPassword string
	// Realm is Moat's realm (default "moat").
	Realm string
	// Audience is the value access tokens must carry in aud (default "moat").
	Audience string
	// RedirectURIs are the console client's registered redirect URIs.
	RedirectURIs []string
	// PlatformAdmin and PlatformAdminPassword create the first platform
	// admin user when both are set. The password is set only when the user
	// is created, so that a changed password is never reset.
	PlatformAdmin, PlatformAdminPassword string
}

func (c *Config) defaults() {
	if c.Realm == "" {
		c.Realm = "moat"
	}
	if c.Audience == "" {
		c.Audience = "moat"
	}
}

// Result is what Bootstrap found or made.
type Result struct {
	// Issuer is the realm's token issuer URL.
	Issuer string
	// ServiceSecrets maps each service to its client secret.
	ServiceSecrets map[string]string
	// PlatformAdminID is the Keycloak id of the first platform admin.
	PlatformAdminID string
}

// Bootstrap converges Keycloak to the realm Moat needs.
func Bootstrap(ctx context.Context, cfg Config, log *slog.Logger) (Result, error) {
	cfg.defaults()
	if cfg.URL == "" || cfg.AdminUser == "" || cfg.AdminPassword == "" {
		return Result{}, errors.New("keycloak: URL, admin user and admin password are required")
	}
	kc := gocloak.NewClient(cfg.URL)
	jwt, err := kc.LoginAdmin(ctx, cfg.AdminUser, cfg.AdminPassword, "master")
	if err != nil {
		return Result{}, fmt.Errorf("keycloak: log in as admin: %w", scrub(err))
	}
	tok := jwt.AccessToken
	b := &bootstrap{kc: kc, tok: tok, cfg: cfg, log: log}
	if err := b.realm(ctx); err != nil {
		return Result{}, err
	}
	res := Result{Issuer: cfg.URL + "/realms/" + cfg.Realm, ServiceSecrets: map[string]string{}}
	if _, err := b.client(ctx, gocloak.Client{
		ClientID:                  gocloak.StringP(ConsoleClientID),
		Name:                      gocloak.StringP("Moat console"),
		PublicClient:              gocloak.BoolP(true),
		StandardFlowEnabled:       gocloak.BoolP(true),
		DirectAccessGrantsEnabled: gocloak.BoolP(false),
		ImplicitFlowEnabled:       gocloak.BoolP(false),
		ServiceAccountsEnabled:    gocloak.BoolP(false),
		RedirectURIs:              &cfg.RedirectURIs,
		WebOrigins:                &[]string{"+"},
		Attributes:                &map[string]string{"pkce.code.challenge.method": "S256"},
	}, groupsMapper()); err != nil {
		return Result{}, err
	}
	for _, svc := range Services {
		id, err := b.client(ctx, gocloak.Client{
			ClientID:                  gocloak.StringP("moat-" + svc),
			Name:                      gocloak.StringP("Moat " + svc + " service"),
			PublicClient:              gocloak.BoolP(false),
			StandardFlowEnabled:       gocloak.BoolP(false),
			DirectAccessGrantsEnabled: gocloak.BoolP(false),
			ServiceAccountsEnabled:    gocloak.BoolP(true),
		})
		if err != nil {
			return Result{}, err
		}
		secret, err := kc.GetClientSecret(ctx, tok, cfg.Realm, id)
		if err != nil || secret.Value == nil {
			return Result{}, fmt.Errorf("keycloak: read the secret of moat-%s: %w", svc, scrub(err))
		}
		res.ServiceSecrets[svc] = *secret.Value
	}
	groupID, err := b.group(ctx, PlatformAdminGroup)
	if err != nil {
		return Result{}, err
	}
	if cfg.PlatformAdmin != "" && cfg.PlatformAdminPassword != "" {
		if res.PlatformAdminID, err = b.user(ctx, cfg.PlatformAdmin, cfg.PlatformAdminPassword, groupID); err != nil {
			return Result{}, err
		}
	}
	log.Info("keycloak realm ready", "realm", cfg.Realm, "issuer", res.Issuer)
	return res, nil
}

type bootstrap struct {
	kc  *gocloak.GoCloak
	tok string
	cfg Config
	log *slog.Logger
}

func (b *bootstrap) realm(ctx context.Context) error {
	_, err := b.kc.GetRealm(ctx, b.tok, b.cfg.Realm)
	if err == nil {
		return nil
	}
	if !notFound(err) {
		return fmt.Errorf("keycloak: read realm %s: %w", b.cfg.Realm, scrub(err))
	}
	_, err = b.kc.CreateRealm(ctx, b.tok, gocloak.RealmRepresentation{
		Realm:   gocloak.StringP(b.cfg.Realm),
		Enabled: gocloak.BoolP(true),
		// Short-lived access tokens: revocation of a user takes effect
		// at the next refresh.
		AccessTokenLifespan: gocloak.IntP(300),
		SslRequired:         gocloak.StringP("external"),
	})
	if err != nil && !conflict(err) {
		return fmt.Errorf("keycloak: create realm %s: %w", b.cfg.Realm, scrub(err))
	}
	b.log.Info("keycloak realm created", "realm", b.cfg.Realm)
	return nil
}

// audienceMapper puts Moat's audience into access tokens.
func (b *bootstrap) audienceMapper() gocloak.ProtocolMapperRepresentation {
	return gocloak.ProtocolMapperRepresentation{
		Name:           gocloak.StringP("moat-audience"),
		Protocol:       gocloak.StringP("openid-connect"),
		ProtocolMapper: gocloak.StringP("oidc-audience-mapper"),
		Config: &map[string]string{
			"included.custom.audience": b.cfg.Audience,
			"access.token.claim":       "true",
			"id.token.claim":           "false",
		},
	}
}

// groupsMapper lists the user's groups (names, not paths) in the groups
// claim, from which Moat derives platform admins.
func groupsMapper() gocloak.ProtocolMapperRepresentation {
	return gocloak.ProtocolMapperRepresentation{
		Name:           gocloak.StringP("moat-groups"),
		Protocol:       gocloak.StringP("openid-connect"),
		ProtocolMapper: gocloak.StringP("oidc-group-membership-mapper"),
		Config: &map[string]string{
			"claim.name":           "groups",
			"full.path":            "false",
			"access.token.claim":   "true",
			"id.token.claim":       "true",
			"userinfo.token.claim": "true",
		},
	}
}

// client creates or updates c and makes sure it carries the audience mapper
// and the extra mappers. It returns the client's Keycloak id.
func (b *bootstrap) client(ctx context.Context, c gocloak.Client, extra ...gocloak.ProtocolMapperRepresentation) (string, error) {
	name := *c.ClientID
	found, err := b.kc.GetClients(ctx, b.tok, b.cfg.Realm, gocloak.GetClientsParams{ClientID: c.ClientID})
	if err != nil {
		return "", fmt.Errorf("keycloak: look up client %s: %w", name, scrub(err))
	}
	var id string
	if len(found) == 0 {
		if id, err = b.kc.CreateClient(ctx, b.tok, b.cfg.Realm, c); err != nil && !conflict(err) {
			return "", fmt.Errorf("keycloak: create client %s: %w", name, scrub(err))
		}
		if id == "" {
			return b.client(ctx, c) // created concurrently by another replica
		}
	} else {
		id = *found[0].ID
		c.ID = &id
		if err := b.kc.UpdateClient(ctx, b.tok, b.cfg.Realm, c); err != nil {
			return "", fmt.Errorf("keycloak: update client %s: %w", name, scrub(err))
		}
	}
	var have []gocloak.ProtocolMapperRepresentation
	if len(found) > 0 && found[0].ProtocolMappers != nil {
		have = *found[0].ProtocolMappers
	}
	for _, m := range append([]gocloak.ProtocolMapperRepresentation{b.audienceMapper()}, extra...) {
		if slices.ContainsFunc(have, func(h gocloak.ProtocolMapperRepresentation) bool { return h.Name != nil && *h.Name == *m.Name }) {
			continue
		}
		if _, err := b.kc.CreateClientProtocolMapper(ctx, b.tok, b.cfg.Realm, id, m); err != nil && !conflict(err) {
			return "", fmt.Errorf("keycloak: add mapper %s to %s: %w", *m.Name, name, scrub(err))
		}
	}
	return id, nil
}

func (b *bootstrap) group(ctx context.Context, name string) (string, error) {
	groups, err := b.kc.GetGroups(ctx, b.tok, b.cfg.Realm, gocloak.GetGroupsParams{Search: gocloak.StringP(name), Exact: gocloak.BoolP(true)})
	if err != nil {
		return "", fmt.Errorf("keycloak: look up group %s: %w", name, scrub(err))
	}
	for _, g := range groups {
		if g.Name != nil && *g.Name == name && g.ID != nil {
			return *g.ID, nil
		}
	}
	id, err := b.kc.CreateGroup(ctx, b.tok, b.cfg.Realm, gocloak.Group{Name: gocloak.StringP(name)})
	if err != nil {
		if conflict(err) {
			return b.group(ctx, name)
		}
		return "", fmt.Errorf("keycloak: create group %s: %w", name, scrub(err))
	}
	return id, nil
}

func (b *bootstrap) user(ctx context.Context, username, password, groupID string) (string, error) {
	users, err := b.kc.GetUsers(ctx, b.tok, b.cfg.Realm, gocloak.GetUsersParams{Username: gocloak.StringP(username), Exact: gocloak.BoolP(true)})
	if err != nil {
		return "", fmt.Errorf("keycloak: look up user %s: %w", username, scrub(err))
	}
	var id string
	if len(users) > 0 && users[0].ID != nil {
		id = *users[0].ID
	} else {
		id, err = b.kc.CreateUser(ctx, b.tok, b.cfg.Realm, gocloak.User{
			Username:      gocloak.StringP(username),
			Enabled:       gocloak.BoolP(true),
			EmailVerified: gocloak.BoolP(true),
			Email:         gocloak.StringP(username + "@moat.invalid"),
			FirstName:     gocloak.StringP("Platform"),
			LastName:      gocloak.StringP("Admin"),
		})
		if err != nil {
			return "", fmt.Errorf("keycloak: create user %s: %w", username, scrub(err))
		}
		if err := b.kc.SetPassword(ctx, b.tok, id, b.cfg.Realm, password, false); err != nil {
			return "", fmt.Errorf("keycloak: set the password of %s: %w", username, scrub(err))
		}
		b.log.Info("keycloak platform admin created", "user", username)
	}
	if err := b.kc.AddUserToGroup(ctx, b.tok, b.cfg.Realm, id, groupID); err != nil {
		return "", fmt.Errorf("keycloak: add %s to %s: %w", username, PlatformAdminGroup, scrub(err))
	}
	return id, nil
}

func apiCode(err error) int {
	var apiErr *gocloak.APIError
	if errors.As(err, &apiErr) {
		return apiErr.Code
	}
	return 0
}

func notFound(err error) bool { return apiCode(err) == http.StatusNotFound }

func conflict(err error) bool { return apiCode(err) == http.StatusConflict }

// scrub keeps Keycloak's status and message but nothing that could carry a
// token or password from the request.
func scrub(err error) error {
	if err == nil {
		return errors.New("no value returned")
	}
	var apiErr *gocloak.APIError
	if errors.As(err, &apiErr) {
		return fmt.Errorf("keycloak answered %d: %s", apiErr.Code, apiErr.Message)
	}
	return err
}
