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

// Config is the audit service's whole configuration, read from the
// environment only.
type Config struct {
	Serve  serve.Config
	Events events.Config
	DB     pg.Config
	// Auth verifies API keys against the key index streamed from identity.
	Auth authn.Config
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
	return errors.Join(c.Serve.Validate(), c.Events.Validate(), c.DB.Validate(), c.Auth.Validate(true))
}
