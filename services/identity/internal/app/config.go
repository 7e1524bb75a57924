package app

import (
	"context"
	"errors"

	"github.com/moat-ai/moat/libs/authn"
	"github.com/moat-ai/moat/libs/env"
	"github.com/moat-ai/moat/libs/events"
	"github.com/moat-ai/moat/libs/pg"
	"github.com/moat-ai/moat/libs/serve"
)

// Config is the identity service's whole configuration, read from the
// environment only.
type Config struct {
	Serve  serve.Config
	Events events.Config
	DB     pg.Config
	// Auth needs no identity address: identity reads its own database.
	Auth authn.Config
	// BootstrapKeyFile is where the first start writes the platform admin
	// key it creates (mode 0600, never overwritten).
	BootstrapKeyFile string `env:"MOAT_BOOTSTRAP_ADMIN_KEY_FILE"`
	// Keycloak, when its URL is set, is bootstrapped at start.
	Keycloak KeycloakConfig
}

// KeycloakConfig says where Moat's IdP is and what identity sets up there.
type KeycloakConfig struct {
	URL           string   `env:"MOAT_KEYCLOAK_URL"`
	AdminUser     string   `env:"MOAT_KEYCLOAK_ADMIN_USER, default=admin"`
	AdminPassword string   `env:"MOAT_KEYCLOAK_ADMIN_PASSWORD"`
	Realm         string   `env:"MOAT_KEYCLOAK_REALM, default=moat"`
	RedirectURIs  []string `env:"MOAT_CONSOLE_REDIRECT_URIS"`
	// PlatformAdmin and PlatformAdminPassword create the first platform
	// admin user of the realm.
	PlatformAdmin         string `env:"MOAT_ADMIN_USER"`
	PlatformAdminPassword string `env:"MOAT_ADMIN_PASSWORD"`
}

// Validate reports every problem at once; an empty URL turns Keycloak off.
func (k KeycloakConfig) Validate() error {
	if k.URL == "" {
		return nil
	}
	var errs []error
	if k.AdminPassword == "" {
		errs = append(errs, errors.New("MOAT_KEYCLOAK_ADMIN_PASSWORD is required with MOAT_KEYCLOAK_URL"))
	}
	if len(k.RedirectURIs) == 0 {
		errs = append(errs, errors.New("MOAT_CONSOLE_REDIRECT_URIS is required with MOAT_KEYCLOAK_URL"))
	}
	if (k.PlatformAdmin == "") != (k.PlatformAdminPassword == "") {
		errs = append(errs, errors.New("MOAT_ADMIN_USER and MOAT_ADMIN_PASSWORD go together"))
	}
	return errors.Join(errs...)
}

// LoadConfig reads Config through getenv and validates it.
func LoadConfig(ctx context.Context, getenv func(string) string) (Config, error) {
	var cfg Config
	if err := env.Load(ctx, getenv, &cfg); err != nil {
		return cfg, err
	}
	return cfg, cfg.Validate()
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.BootstrapKeyFile == "" {
		errs = append(errs, errors.New("MOAT_BOOTSTRAP_ADMIN_KEY_FILE is required"))
	}
	return errors.Join(c.Serve.Validate(), c.Events.Validate(), c.DB.Validate(), c.Auth.Validate(false), c.Keycloak.Validate(), errors.Join(errs...))
}
