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
	return errors.Join(c.Serve.Validate(), c.Events.Validate(), c.DB.Validate(), c.Auth.Validate(false), errors.Join(errs...))
}
