package app

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/moat-ai/moat/libs/authn"
	"github.com/moat-ai/moat/libs/env"
	"github.com/moat-ai/moat/libs/events"
	"github.com/moat-ai/moat/libs/secretbox"
	"github.com/moat-ai/moat/libs/serve"
	"github.com/moat-ai/moat/services/gateway/internal/apiproxy"
	"github.com/moat-ai/moat/services/gateway/internal/egress"
)

// Config is the gateway's whole configuration, read from the environment
// only. The gateway has no database: what it serves comes from snapshots
// streamed by config and identity.
type Config struct {
	Serve  serve.Config
	Events events.Config
	Auth   authn.Config
	// KEK opens provider credentials: "id:base64(32 bytes)[,id:...]".
	KEK string `env:"MOAT_KEK"`
	// ConfigGRPC is config's gRPC address, for the configuration stream.
	ConfigGRPC string `env:"MOAT_CONFIG_GRPC"`
	// The HTTP addresses of the services behind /api/v1/.
	IdentityHTTP string `env:"MOAT_IDENTITY_HTTP"`
	ConfigHTTP   string `env:"MOAT_CONFIG_HTTP"`
	BillingHTTP  string `env:"MOAT_BILLING_HTTP"`
	AuditHTTP    string `env:"MOAT_AUDIT_HTTP"`
	Upstream     Upstream
	Usage        Usage
}

// Upstream bounds the calls to model providers.
type Upstream struct {
	// DialTimeout bounds connecting to a provider (TCP and TLS).
	DialTimeout time.Duration `env:"UPSTREAM_DIAL_TIMEOUT, default=5s"`
	// HeaderTimeout bounds the wait for a provider's response headers; a
	// non-streamed completion sends them only when it is done.
	HeaderTimeout time.Duration `env:"UPSTREAM_HEADER_TIMEOUT, default=5m"`
	// IdleTimeout bounds the silence of a provider once its answer has
	// started, e.g. between two chunks of a stream.
	IdleTimeout time.Duration `env:"UPSTREAM_IDLE_TIMEOUT, default=2m"`
	// MaxInFlight bounds the data-plane calls served at once; beyond it
	// calls are shed at once with 503 and Retry-After, so that overload
	// costs neither memory nor latency of the calls being served.
	MaxInFlight int `env:"MAX_IN_FLIGHT, default=1024"`
	// MaxConns bounds the open client connections; beyond it a new
	// connection is answered 503 with Retry-After and closed. Each open
	// connection holds a goroutine and its buffers: this is what bounds
	// memory when clients open connections faster than providers answer.
	MaxConns int `env:"MAX_CONNS, default=2048"`
	// EgressAllowCIDRs lists the internal ranges providers may be
	// dialed at ("10.1.0.0/16,fd00:1::/64"). Empty, the default, allows
	// public addresses only; an install lists just what its in-cluster
	// providers need.
	EgressAllowCIDRs string `env:"EGRESS_ALLOW_CIDRS"`
}

// EgressAllow returns the parsed EGRESS_ALLOW_CIDRS; Validate has
// checked it.
func (u Upstream) EgressAllow() ([]netip.Prefix, error) {
	allow, err := egress.ParseCIDRs(u.EgressAllowCIDRs)
	if err != nil {
		return nil, fmt.Errorf("EGRESS_ALLOW_CIDRS: %w", err)
	}
	return allow, nil
}

// Usage tunes the asynchronous usage publisher.
type Usage struct {
	QueueSize  int `env:"USAGE_QUEUE_SIZE, default=8192"`
	Publishers int `env:"USAGE_PUBLISHERS, default=4"`
}

// LoadConfig reads Config through getenv and validates it.
func LoadConfig(ctx context.Context, getenv func(string) string) (Config, error) {
	cfg, err := loadConfig(ctx, getenv)
	if err != nil {
		return cfg, err
	}
	return cfg, cfg.Validate()
}

func loadConfig(ctx context.Context, getenv func(string) string) (Config, error) {
	var cfg Config
	err := env.Load(ctx, getenv, &cfg)
	return cfg, err
}

// Validate reports every problem at once, never quoting a secret.
func (c Config) Validate() error {
	errs := []error{c.Serve.Validate(), c.Events.Validate(), c.Auth.Validate(true)}
	if c.KEK == "" {
		errs = append(errs, errors.New("MOAT_KEK is required"))
	} else if _, err := secretbox.ParseKeyring(c.KEK); err != nil {
		errs = append(errs, fmt.Errorf("MOAT_KEK: %w", err))
	}
	if c.ConfigGRPC == "" {
		errs = append(errs, errors.New("MOAT_CONFIG_GRPC is required"))
	}
	for _, a := range []struct{ name, value string }{
		{"MOAT_IDENTITY_HTTP", c.IdentityHTTP},
		{"MOAT_CONFIG_HTTP", c.ConfigHTTP},
		{"MOAT_BILLING_HTTP", c.BillingHTTP},
		{"MOAT_AUDIT_HTTP", c.AuditHTTP},
	} {
		if a.value == "" {
			errs = append(errs, fmt.Errorf("%s is required", a.name))
		} else if _, err := apiproxy.ParseAddress(a.value); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", a.name, err))
		}
	}
	for _, d := range []struct {
		name  string
		value time.Duration
	}{
		{"UPSTREAM_DIAL_TIMEOUT", c.Upstream.DialTimeout},
		{"UPSTREAM_HEADER_TIMEOUT", c.Upstream.HeaderTimeout},
		{"UPSTREAM_IDLE_TIMEOUT", c.Upstream.IdleTimeout},
	} {
		if d.value <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive", d.name))
		}
	}
	if _, err := c.Upstream.EgressAllow(); err != nil {
		errs = append(errs, err)
	}
	if c.Upstream.MaxInFlight < 1 {
		errs = append(errs, errors.New("MAX_IN_FLIGHT must be at least 1"))
	}
	if c.Upstream.MaxConns < 1 {
		errs = append(errs, errors.New("MAX_CONNS must be at least 1"))
	}
	if c.Usage.QueueSize < 1 {
		errs = append(errs, errors.New("USAGE_QUEUE_SIZE must be at least 1"))
	}
	if c.Usage.Publishers < 1 || c.Usage.Publishers > 256 {
		errs = append(errs, errors.New("USAGE_PUBLISHERS must be 1 to 256"))
	}
	return errors.Join(errs...)
}
