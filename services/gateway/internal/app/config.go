package app

import (
	"context"
	"errors"

	"github.com/moat-ai/moat/libs/env"
	"github.com/moat-ai/moat/libs/events"
	"github.com/moat-ai/moat/libs/serve"
)

// Config is the gateway's whole configuration, read from the environment
// only. The gateway has no database: what it serves comes from snapshots
// streamed by config and identity.
type Config struct {
	Serve  serve.Config
	Events events.Config
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
	return errors.Join(c.Serve.Validate(), c.Events.Validate())
}
