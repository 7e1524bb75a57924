package app

import (
	"context"
	"errors"
	"fmt"

	"github.com/moat-ai/moat/libs/authn"
	"github.com/moat-ai/moat/libs/env"
	"github.com/moat-ai/moat/libs/events"
	"github.com/moat-ai/moat/libs/pg"
	"github.com/moat-ai/moat/libs/secretbox"
	"github.com/moat-ai/moat/libs/serve"
)

// Config is the config service's whole configuration, read from the
// environment only.
type Config struct {
	Serve  serve.Config
	Events events.Config
	DB     pg.Config
	Auth   authn.Config
	// KEK is the key-encryption keyring provider credentials are sealed
	// with: "id:base64(32 bytes)[,id:base64...]", the first one seals.
	KEK string `env:"MOAT_KEK"`
}

// LoadConfig reads Config through getenv and validates it.
func LoadConfig(ctx context.Context, getenv func(string) string) (Config, error) {
	var cfg Config
	if err := env.Load(ctx, getenv, &cfg); err != nil {
		return cfg, err
	}
	return cfg, cfg.Validate()
}

// Validate reports every problem at once, without quoting secrets.
func (c Config) Validate() error {
	var kek error
	if c.KEK == "" {
		kek = errors.New("MOAT_KEK is required")
	} else if _, err := secretbox.ParseKeyring(c.KEK); err != nil {
		kek = fmt.Errorf("MOAT_KEK: %w", err)
	}
	return errors.Join(c.Serve.Validate(), c.Events.Validate(), c.DB.Validate(), c.Auth.Validate(true), kek)
}
