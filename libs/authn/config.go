package authn

import (
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
)

// Config is the part of a service's configuration that concerns
// authentication. Every service embeds it as a named field.
type Config struct {
	// KeySecret is base64 of at least 32 bytes: the HMAC secret keys are
	// stored and looked up under, the same in every service.
	KeySecret string `env:"MOAT_KEY_SECRET"`
	// InternalToken guards the internal watch streams.
	InternalToken string `env:"MOAT_INTERNAL_TOKEN"`
	// IdentityGRPC is identity's gRPC address, for the key index.
	IdentityGRPC string `env:"MOAT_IDENTITY_GRPC"`
	// OIDCIssuer, when set, makes the service accept OIDC access tokens
	// from this issuer besides API keys. It must be exactly the tokens'
	// iss claim (for Keycloak, https://host/realms/moat, no trailing
	// slash). Empty means API keys only.
	OIDCIssuer string `env:"MOAT_OIDC_ISSUER"`
	// OIDCAudience is the value an access token's aud must contain: the
	// realm bootstrap's audience mapper puts "moat" there.
	OIDCAudience string `env:"MOAT_OIDC_AUDIENCE, default=moat"`
}

// Validate reports every problem at once, without quoting secrets.
// needIdentity is false for identity itself, which reads its own database.
func (c Config) Validate(needIdentity bool) error {
	var errs []error
	if c.KeySecret == "" {
		errs = append(errs, errors.New("MOAT_KEY_SECRET is required"))
	} else if _, err := c.Hasher(); err != nil {
		errs = append(errs, err)
	}
	if len(c.InternalToken) < 16 {
		errs = append(errs, errors.New("MOAT_INTERNAL_TOKEN is required (at least 16 characters)"))
	}
	if needIdentity && c.IdentityGRPC == "" {
		errs = append(errs, errors.New("MOAT_IDENTITY_GRPC is required"))
	}
	if c.OIDCIssuer != "" {
		if u, err := url.Parse(c.OIDCIssuer); err != nil || !u.IsAbs() || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
			errs = append(errs, errors.New("MOAT_OIDC_ISSUER must be an absolute http(s) URL"))
		}
		if c.OIDCAudience == "" {
			errs = append(errs, errors.New("MOAT_OIDC_AUDIENCE is required with MOAT_OIDC_ISSUER"))
		}
	}
	return errors.Join(errs...)
}

// Hasher decodes KeySecret.
func (c Config) Hasher() (*Hasher, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(c.KeySecret); err == nil {
			h, err := NewHasher(b)
			if err != nil {
				return nil, errors.New("MOAT_KEY_SECRET must decode to at least 32 bytes")
			}
			return h, nil
		}
	}
	return nil, errors.New("MOAT_KEY_SECRET must be base64")
}

// Verifier returns what Interceptor.Tokens should be: a TokenVerifier for
// OIDCIssuer and OIDCAudience, or nil when OIDCIssuer is empty (API keys
// only). It returns the interface rather than *TokenVerifier on purpose: a
// nil *TokenVerifier stored in Interceptor.Tokens would not be a nil
// Verifier, and every non-key credential would reach it. Like
// NewTokenVerifier, it does not contact the issuer. log may be nil.
func (c Config) Verifier(log *slog.Logger) (Verifier, error) {
	if c.OIDCIssuer == "" {
		return nil, nil
	}
	v, err := NewTokenVerifier(TokenConfig{Issuer: c.OIDCIssuer, Audience: c.OIDCAudience}, log)
	if err != nil {
		return nil, fmt.Errorf("oidc token verifier: %w", err)
	}
	return v, nil
}
