package authn

import (
	"encoding/base64"
	"errors"
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
