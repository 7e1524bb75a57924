// Package app is the config service's composition root: it reads the
// configuration, builds every component by hand and runs them until the
// context ends.
package app

import (
	"context"
	"fmt"
	"io"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"

	"github.com/moat-ai/moat/libs/authn"
	"github.com/moat-ai/moat/libs/events"
	"github.com/moat-ai/moat/libs/grpcclient"
	"github.com/moat-ai/moat/libs/pg"
	"github.com/moat-ai/moat/libs/secretbox"
	"github.com/moat-ai/moat/libs/serve"
	"github.com/moat-ai/moat/libs/telemetry"
	configv1 "github.com/moat-ai/moat/proto/gen/go/moat/config/v1"
	identityv1 "github.com/moat-ai/moat/proto/gen/go/moat/identity/v1"
	"github.com/moat-ai/moat/services/config/internal/config"
	"github.com/moat-ai/moat/services/config/internal/grpcapi"
	"github.com/moat-ai/moat/services/config/internal/postgres"
)

const service = "config"

// Migrations is the whole schema, applied by the migrate subcommand: the
// event tables and the service's own.
var Migrations = []pg.Migrations{events.Migrations, postgres.Migrations}

// Run builds the service from its environment and blocks until ctx ends or a
// component fails; it returns only after every component has shut down.
// args[0] may name a subcommand: "serve" (default) or "migrate".
//
// Readiness depends on PostgreSQL only, not on identity: until the first
// key index arrives from identity, administrative calls fail with
// UNAUTHENTICATED (and are audited), while WatchConfig, which needs only
// the internal token, keeps feeding gateways. Making readiness wait for
// identity would take the configuration stream down with it.
func Run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cmd, err := serve.Subcommand(args)
	if err != nil {
		return err
	}
	cfg, err := LoadConfig(ctx, getenv)
	if err != nil {
		return fmt.Errorf("load config: %w", err)
	}
	log, err := telemetry.NewLogger(stderr, cfg.Serve.LogLevel, service)
	if err != nil {
		return fmt.Errorf("load config: %w", err)
	}
	tel, err := telemetry.Start(ctx, service, getenv)
	if err != nil {
		return fmt.Errorf("start telemetry: %w", err)
	}
	defer tel.Close(log)

	pool, err := pg.Open(ctx, cfg.DB.DatabaseURL, tel.TracerProvider, tel.MeterProvider)
	if err != nil {
		return fmt.Errorf("open database: %w", err)
	}
	defer pool.Close()
	if cmd == "migrate" {
		if err := pg.Migrate(ctx, pool, Migrations...); err != nil {
			return err
		}
		log.Info("database migrated")
		return nil
	}
	if err := pg.CheckMigrated(ctx, pool, Migrations...); err != nil {
		return err
	}

	// Validate checked both; errors here would be bugs.
	keyring, err := secretbox.ParseKeyring(cfg.KEK)
	if err != nil {
		return fmt.Errorf("MOAT_KEK: %w", err)
	}
	hasher, err := cfg.Auth.Hasher()
	if err != nil {
		return err
	}

	nc, js, err := events.Connect(cfg.Events.NATSURL, service, log)
	if err != nil {
		return err
	}
	defer events.Drain(nc, cfg.Serve.DrainTimeout)

	identity, err := grpcclient.Dial(cfg.Auth.IdentityGRPC, tel, cfg.Auth.InternalToken)
	if err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	defer identity.Close()
	keys := authn.NewIndex(hasher)
	tokens, err := cfg.Auth.Verifier(log)
	if err != nil {
		return fmt.Errorf("load config: %w", err)
	}

	notifier := pg.NewNotifier(pool, postgres.NotifyChannel, log)
	svc := config.NewService(postgres.NewStore(pool, tel.Propagator), sealer{keyring})
	api := grpcapi.New(svc, grpcapi.Options{Log: log, Notifier: notifier})
	auth := &authn.Interceptor{
		Auth:     keys,
		Tokens:   tokens,
		Token:    cfg.Auth.InternalToken,
		Internal: grpcapi.InternalMethods,
		Denied:   api.AuditRefusal,
	}

	srv, err := serve.NewServers(log, tel, cfg.Serve, serve.Check{Name: "postgres", Fn: pool.Ping})
	if err != nil {
		return err
	}
	// api.Unary first: it notes the target of a call that authentication
	// may refuse, for the refusal's audit record.
	srv.Use(api.Unary(), nil)
	srv.Use(auth.Unary(), auth.Stream())
	configv1.RegisterConfigServiceServer(srv.GRPC, api)
	if err := srv.MountREST(ctx, func(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error {
		return configv1.RegisterConfigServiceHandlerClient(ctx, mux, configv1.NewConfigServiceClient(conn))
	}); err != nil {
		return err
	}

	relay := &events.Relay{
		Pool:   pool,
		JS:     js,
		Stream: events.StreamConfig{Name: "CONFIG", Subjects: []string{"config.>"}, Replicas: cfg.Events.NATSReplicas},
		Log:    log,
		Meter:  tel.MeterProvider,
	}
	follow := func(ctx context.Context) error {
		return authn.Follow(ctx, identityv1.NewIdentityServiceClient(identity), keys, log)
	}
	return srv.Run(ctx, relay.Run, notifier.Run, api.Run, follow)
}

// sealer adapts the keyring to config.Sealer.
type sealer struct{ k *secretbox.Keyring }

func (s sealer) Seal(plaintext, aad []byte) (config.Sealed, error) {
	sealed, err := s.k.Seal(plaintext, aad)
	if err != nil {
		return config.Sealed{}, err
	}
	return config.Sealed{KEKID: sealed.KEKID, WrappedKey: sealed.WrappedKey, Ciphertext: sealed.Ciphertext}, nil
}
