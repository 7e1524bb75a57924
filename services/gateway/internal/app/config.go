package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/moat-ai/moat/libs/env"
)

// Config is the gateway's whole configuration, read from the environment
// only. The gateway has no database: what it serves comes from snapshots
// streamed by config and identity.
type Config struct {
	GRPCAddr     string        `env:"GRPC_ADDR, default=:9090"`
	HTTPAddr     string        `env:"HTTP_ADDR, default=:8080"`
	NATSURL      string        `env:"NATS_URL, default=nats://127.0.0.1:4222"`
	NATSReplicas int           `env:"NATS_REPLICAS, default=1"`
	LogLevel     string        `env:"LOG_LEVEL, default=info"`
	DrainTimeout time.Duration `env:"DRAIN_TIMEOUT, default=10s"`
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
	if c.NATSURL == "" {
		errs = append(errs, errors.New("NATS_URL is required"))
	}
	if c.NATSReplicas < 1 || c.NATSReplicas > 5 {
		errs = append(errs, fmt.Errorf("NATS_REPLICAS must be 1 to 5, got %d", c.NATSReplicas))
	}
	if c.DrainTimeout <= 0 {
		errs = append(errs, errors.New("DRAIN_TIMEOUT must be positive"))
	}
	return errors.Join(errs...)
}
