// Package app is the identity service's composition root: it reads the
// configuration, builds every component by hand and runs them until the
// context ends.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"

	"github.com/moat-ai/moat/libs/authn"
	"github.com/moat-ai/moat/libs/events"
	"github.com/moat-ai/moat/libs/pg"
	"github.com/moat-ai/moat/libs/serve"
	"github.com/moat-ai/moat/libs/telemetry"
	identityv1 "github.com/moat-ai/moat/proto/gen/go/moat/identity/v1"
	"github.com/moat-ai/moat/services/identity/internal/grpcapi"
	"github.com/moat-ai/moat/services/identity/internal/identity"
	"github.com/moat-ai/moat/services/identity/internal/keycloak"
	"github.com/moat-ai/moat/services/identity/internal/keyusage"
	"github.com/moat-ai/moat/services/identity/internal/postgres"
)

const service = "identity"

// Migrations is the whole schema, applied by the migrate subcommand: the
// event tables and the service's own.
var Migrations = []pg.Migrations{events.Migrations, postgres.Migrations}

// Run builds the service from its environment and blocks until ctx ends or a
// component fails; it returns only after every component has shut down.
// args[0] may name a subcommand: "serve" (default) or "migrate".
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

	hasher, err := cfg.Auth.Hasher()
	if err != nil {
		return fmt.Errorf("load config: %w", err)
	}
	store := postgres.NewStore(pool, tel.Propagator)
	svc := identity.NewService(store, hasher, time.Now)
	if cfg.Keycloak.URL != "" {
		svc.Broker = newBroker(cfg.Keycloak)
	}

	// Before serving: whoever starts first makes sure an admin can get in.
	bootstrap := identity.Call{Actor: "system", Action: grpcapi.Action(identityv1.IdentityService_CreateApiKey_FullMethodName), RequestID: "bootstrap"}
	admin, created, err := svc.Bootstrap(ctx, bootstrap, keyFile{path: cfg.BootstrapKeyFile})
	if err != nil {
		return fmt.Errorf("MOAT_BOOTSTRAP_ADMIN_KEY_FILE %s: %w", cfg.BootstrapKeyFile, err)
	}
	if created {
		log.Info("created the platform admin key", "prefix", admin.Prefix, "key_file", cfg.BootstrapKeyFile)
	}

	nc, js, err := events.Connect(cfg.Events.NATSURL, service, log)
	if err != nil {
		return err
	}
	defer events.Drain(nc, cfg.Serve.DrainTimeout)

	index := authn.NewIndex(hasher)
	srv, err := serve.NewServers(log, tel, cfg.Serve,
		serve.Check{Name: "postgres", Fn: pool.Ping},
		serve.Check{Name: "key-index", Fn: func(context.Context) error {
			if !index.Ready() {
				return errors.New("key index not loaded yet")
			}
			return nil
		}},
	)
	if err != nil {
		return err
	}
	tokens, err := cfg.Auth.Verifier(log)
	if err != nil {
		return fmt.Errorf("load config: %w", err)
	}
	keys := pg.NewNotifier(pool, postgres.KeysChannel, log)
	api := grpcapi.New(svc, keys, log, ctx.Done())
	auth := &authn.Interceptor{
		Auth:     index,
		Tokens:   tokens,
		Token:    cfg.Auth.InternalToken,
		Internal: []string{identityv1.IdentityService_WatchKeyIndex_FullMethodName},
		Denied:   api.Denied,
	}
	srv.Use(api.Unary(), nil) // outside auth, so that its refusals know their target
	srv.Use(auth.Unary(), auth.Stream())
	identityv1.RegisterIdentityServiceServer(srv.GRPC, api)
	if err := srv.MountREST(ctx, func(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error {
		return identityv1.RegisterIdentityServiceHandlerClient(ctx, mux, identityv1.NewIdentityServiceClient(conn))
	}); err != nil {
		return err
	}

	relay := &events.Relay{
		Pool:   pool,
		JS:     js,
		Stream: events.StreamConfig{Name: "IDENTITY", Subjects: []string{"identity.>"}, Replicas: cfg.Events.NATSReplicas},
		Log:    log,
		Meter:  tel.MeterProvider,
	}
	feeder := &grpcapi.IndexFeeder{Service: svc, Keys: keys, Index: index, Log: log}
	// Keys' last use, from the gateways' usage events; the consumer waits
	// for the GATEWAY stream if the gateway has not created it yet.
	usage := &events.Consumer{
		JS:      js,
		Pool:    pool,
		Config:  keyusage.ConsumerConfig(),
		Handler: keyusage.New(store).Handle,
		Log:     log,
		Meter:   tel.MeterProvider,
		Tracer:  tel.TracerProvider,
		Prop:    tel.Propagator,
	}
	workers := []func(context.Context) error{relay.Run, keys.Run, feeder.Run, usage.Run}
	if cfg.Keycloak.URL != "" {
		workers = append(workers, func(ctx context.Context) error { return bootstrapKeycloak(ctx, cfg.Keycloak, log) })
	}
	return srv.Run(ctx, workers...)
}

// bootstrapKeycloak converges Moat's realm, retrying while Keycloak is not
// up yet: identity serves API keys without it, and sign-in starts working
// once the realm is ready.
func bootstrapKeycloak(ctx context.Context, k KeycloakConfig, log *slog.Logger) error {
	cfg := keycloak.Config{
		URL: k.URL, AdminUser: k.AdminUser, AdminPassword: k.AdminPassword, Realm: k.Realm,
		RedirectURIs: k.RedirectURIs, PlatformAdmin: k.PlatformAdmin, PlatformAdminPassword: k.PlatformAdminPassword,
	}
	wait := time.Second
	for {
		_, err := keycloak.Bootstrap(ctx, cfg, log)
		if err == nil || ctx.Err() != nil {
			return nil
		}
		log.Warn("bootstrap keycloak; retrying", "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(wait*2, 30*time.Second)
	}
}
