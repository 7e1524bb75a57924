package app

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/moat-ai/moat/services/identity/internal/identity"
	"github.com/moat-ai/moat/services/identity/internal/keycloak"
)

// broker is identity.Broker on Moat's Keycloak.
type broker struct {
	admin *keycloak.Admin
	// base is {keycloak}/realms/{realm}, for redirect URIs.
	base string
}

var _ identity.Broker = broker{}

func newBroker(k KeycloakConfig) broker {
	return broker{
		admin: keycloak.NewAdmin(k.URL, k.AdminUser, k.AdminPassword, k.Realm),
		base:  strings.TrimSuffix(k.URL, "/") + "/realms/" + k.Realm,
	}
}

// PutIdentityProvider implements identity.Broker.
func (b broker) PutIdentityProvider(ctx context.Context, p identity.Provider, clientSecret string) error {
	kp := keycloak.IdentityProvider{Alias: p.Alias(), DisplayName: p.DisplayName}
	if kp.DisplayName == "" {
		kp.DisplayName = p.ID
	}
	switch {
	case p.OIDC != nil:
		kp.OIDC = &keycloak.OIDCProvider{Issuer: p.OIDC.Issuer, ClientID: p.OIDC.ClientID, ClientSecret: clientSecret,
			Scopes: p.OIDC.Scopes, GroupsClaim: p.OIDC.GroupsClaim}
	case p.SAML != nil:
		kp.SAML = &keycloak.SAMLProvider{SSOURL: p.SAML.SSOURL, EntityID: p.SAML.EntityID,
			SigningCertificate: p.SAML.SigningCertificate, GroupsAttribute: p.SAML.GroupsAttribute}
	}
	err := b.admin.PutIdentityProvider(ctx, kp)
	if errors.Is(err, keycloak.ErrInvalidProvider) {
		return fmt.Errorf("%w: %w", identity.ErrInvalidIdP, err)
	}
	return err
}

// DeleteIdentityProvider implements identity.Broker.
func (b broker) DeleteIdentityProvider(ctx context.Context, alias string) error {
	return b.admin.DeleteIdentityProvider(ctx, alias)
}

// BrokeredUser implements identity.Broker.
func (b broker) BrokeredUser(ctx context.Context, userID string) (identity.BrokeredUser, error) {
	u, err := b.admin.BrokeredUser(ctx, userID)
	if errors.Is(err, keycloak.ErrUserNotFound) {
		return identity.BrokeredUser{}, identity.ErrUserNotFound
	}
	if err != nil {
		return identity.BrokeredUser{}, err
	}
	out := identity.BrokeredUser{Email: u.Email, EmailVerified: u.EmailVerified, Groups: u.Groups}
	for _, l := range u.Links {
		out.Aliases = append(out.Aliases, l.Alias)
	}
	return out, nil
}

// RedirectURI implements identity.Broker.
func (b broker) RedirectURI(alias string) string { return b.base + "/broker/" + alias + "/endpoint" }
