package keycloaktest

import (
	"context"
	"testing"

	"github.com/Nerzal/gocloak/v13"
)

// SAMLIdP is how a service provider reaches a CorpRealm as a SAML identity
// provider.
type SAMLIdP struct {
	// SSOURL is the single sign-on service (HTTP POST or Redirect binding).
	SSOURL string
	// EntityID is the identity provider's entity id, the issuer of its
	// responses.
	EntityID string
	// SigningCertificate is the base64 DER certificate that signs its
	// responses.
	SigningCertificate string
}

// SAML makes the realm a SAML identity provider for the service provider
// spEntityID, whose assertion consumer service is acsURL (HTTP POST). For a
// Keycloak broker, spEntityID is {keycloak}/realms/{realm} and acsURL
// {keycloak}/realms/{realm}/broker/{alias}/endpoint. The realm signs its
// responses, does not require signed requests, names users by email
// (NameID format email) and sends the attributes email, firstName,
// lastName and groups (one value per group name).
func (c CorpRealm) SAML(t testing.TB, spEntityID, acsURL string) SAMLIdP {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tok := c.tok(ctx, t)
	property := func(attr string) gocloak.ProtocolMapperRepresentation {
		return gocloak.ProtocolMapperRepresentation{
			Name: gocloak.StringP(attr), Protocol: gocloak.StringP("saml"), ProtocolMapper: gocloak.StringP("saml-user-property-mapper"),
			Config: &map[string]string{"user.attribute": attr, "attribute.name": attr, "friendly.name": attr, "attribute.nameformat": "Basic"},
		}
	}
	if _, err := c.s.kc.CreateClient(ctx, tok, c.Realm, gocloak.Client{
		ClientID:     gocloak.StringP(spEntityID),
		Name:         gocloak.StringP("Moat broker (SAML)"),
		Protocol:     gocloak.StringP("saml"),
		Enabled:      gocloak.BoolP(true),
		RedirectURIs: &[]string{acsURL},
		Attributes: &map[string]string{
			"saml_assertion_consumer_url_post": acsURL,
			"saml.server.signature":            "true",
			"saml.signature.algorithm":         "RSA_SHA256",
			"saml.client.signature":            "false",
			"saml.assertion.signature":         "false",
			"saml.encrypt":                     "false",
			"saml.authnstatement":              "true",
			"saml_force_name_id_format":        "true",
			"saml_name_id_format":              "email",
		},
		ProtocolMappers: &[]gocloak.ProtocolMapperRepresentation{
			property("email"), property("firstName"), property("lastName"),
			{
				Name: gocloak.StringP("groups"), Protocol: gocloak.StringP("saml"), ProtocolMapper: gocloak.StringP("saml-group-membership-mapper"),
				Config: &map[string]string{"attribute.name": "groups", "friendly.name": "groups", "attribute.nameformat": "Basic", "full.path": "false", "single": "false"},
			},
		},
	}); err != nil {
		t.Fatalf("create SAML client %s in %s: %v", spEntityID, c.Realm, err)
	}
	keys, err := c.s.kc.GetKeyStoreConfig(ctx, tok, c.Realm)
	if err != nil {
		t.Fatalf("read the keys of %s: %v", c.Realm, err)
	}
	idp := SAMLIdP{SSOURL: c.Issuer + "/protocol/saml", EntityID: c.Issuer}
	if keys.Key != nil {
		for _, k := range *keys.Key {
			if gocloak.PString(k.Algorithm) == "RS256" && gocloak.PString(k.Status) == "ACTIVE" && k.Certificate != nil {
				idp.SigningCertificate = *k.Certificate
			}
		}
	}
	if idp.SigningCertificate == "" {
		t.Fatalf("realm %s has no active RS256 certificate", c.Realm)
	}
	return idp
}
