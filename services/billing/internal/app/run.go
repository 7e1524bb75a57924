// Package app is the billing service's composition root: it reads the
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
	"github.com/moat-ai/moat/libs/serve"
	"github.com/moat-ai/moat/libs/telemetry"
	billingv1 "github.com/moat-ai/moat/proto/gen/go/moat/billing/v1"
	identityv1 "github.com/moat-ai/moat/proto/gen/go/moat/identity/v1"
	"github.com/moat-ai/moat/services/billing/internal/billing"
	"github.com/moat-ai/moat/services/billing/internal/grpcapi"
	"github.com/moat-ai/moat/services/billing/internal/ledger"
	"github.com/moat-ai/moat/services/billing/internal/postgres"
)

const service = "billing"

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
	prices, err := billing.EmbeddedPrices()
	if err != nil {
		return err
	}
	projector, err := ledger.New(pool, prices, tel.MeterProvider)
	if err != nil {
		return err
	}
	identity, err := grpcclient.Dial(cfg.Auth.IdentityGRPC, tel, cfg.Auth.InternalToken)
	if err != nil {
		return fmt.Errorf("identity client: %w", err)
	}
	defer identity.Close()

	nc, js, err := events.Connect(cfg.Events.NATSURL, service, log)
	if err != nil {
		return err
	}
	defer events.Drain(nc, cfg.Serve.DrainTimeout)

	srv, err := serve.NewServers(log, tel, cfg.Serve, serve.Check{Name: "postgres", Fn: pool.Ping})
	if err != nil {
		return err
	}
	keys := authn.NewIndex(hasher)
	tokens, err := cfg.Auth.Verifier(log)
	if err != nil {
		return fmt.Errorf("load config: %w", err)
	}
	auth := &authn.Interceptor{Auth: keys, Tokens: tokens, Token: cfg.Auth.InternalToken}
	srv.Use(auth.Unary(), auth.Stream())
	billingv1.RegisterBillingServiceServer(srv.GRPC, grpcapi.New(billing.NewService(postgres.NewStore(pool), prices.Currency()), log))
	if err := srv.MountREST(ctx, func(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error {
		return billingv1.RegisterBillingServiceHandlerClient(ctx, mux, billingv1.NewBillingServiceClient(conn))
	}); err != nil {
		return err
	}
	log.Info("price table loaded", "price_version", prices.Version(), "currency", prices.Currency())

	relay := &events.Relay{
		Pool:   pool,
		JS:     js,
		Stream: events.StreamConfig{Name: "BILLING", Subjects: []string{"billing.>"}, Replicas: cfg.Events.NATSReplicas},
		Log:    log,
		Meter:  tel.MeterProvider,
	}
	usage := &events.Consumer{
		JS:      js,
		Pool:    pool,
		Config:  ledger.ConsumerConfig(),
		Handler: projector.Handle,
		Log:     log,
		Meter:   tel.MeterProvider,
		Tracer:  tel.TracerProvider,
		Prop:    tel.Propagator,
	}
	follow := func(ctx context.Context) error {
		return authn.Follow(ctx, identityv1.NewIdentityServiceClient(identity), keys, log)
	}
	return srv.Run(ctx, relay.Run, usage.Run, follow)
}
