// Package app is the gateway's composition root: it reads the
// configuration, builds every component by hand and runs them until the
// context ends.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"

	"github.com/moat-ai/moat/libs/authn"
	"github.com/moat-ai/moat/libs/events"
	"github.com/moat-ai/moat/libs/grpcclient"
	"github.com/moat-ai/moat/libs/secretbox"
	"github.com/moat-ai/moat/libs/serve"
	"github.com/moat-ai/moat/libs/telemetry"
	configv1 "github.com/moat-ai/moat/proto/gen/go/moat/config/v1"
	gatewayv1 "github.com/moat-ai/moat/proto/gen/go/moat/gateway/v1"
	identityv1 "github.com/moat-ai/moat/proto/gen/go/moat/identity/v1"
	"github.com/moat-ai/moat/services/gateway/internal/apiproxy"
	"github.com/moat-ai/moat/services/gateway/internal/credential"
	"github.com/moat-ai/moat/services/gateway/internal/gateway"
	"github.com/moat-ai/moat/services/gateway/internal/grpcapi"
	"github.com/moat-ai/moat/services/gateway/internal/httpapi"
	"github.com/moat-ai/moat/services/gateway/internal/snapshot"
	"github.com/moat-ai/moat/services/gateway/internal/usage"
)

const service = "gateway"

// Run builds the gateway from its environment and blocks until ctx ends or
// a component fails; it returns only after every component has shut down.
// args[0] may name a subcommand: "serve" (default) or "migrate", which is a
// no-op kept so every service answers the same commands (the gateway has no
// database).
func Run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cmd, err := serve.Subcommand(args)
	if err != nil {
		return err
	}
	// migrate does nothing, so it needs none of serve's settings.
	cfg, err := loadConfig(ctx, getenv)
	if err == nil && cmd == "serve" {
		err = cfg.Validate()
	}
	if err != nil {
		return fmt.Errorf("load config: %w", err)
	}
	log, err := telemetry.NewLogger(stderr, cfg.Serve.LogLevel, service)
	if err != nil {
		return fmt.Errorf("load config: %w", err)
	}
	if cmd == "migrate" {
		log.Info("nothing to migrate: the gateway has no database")
		return nil
	}
	tel, err := telemetry.Start(ctx, service, getenv)
	if err != nil {
		return fmt.Errorf("start telemetry: %w", err)
	}
	defer tel.Close(log)

	// Validate has parsed both already; errors here cannot happen.
	keyring, err := secretbox.ParseKeyring(cfg.KEK)
	if err != nil {
		return fmt.Errorf("MOAT_KEK: %w", err)
	}
	hasher, err := cfg.Auth.Hasher()
	if err != nil {
		return err
	}

	// The in-memory state every request is served from, and the streams
	// that keep it current.
	keys := authn.NewIndex(hasher)
	allow, err := cfg.Upstream.EgressAllow()
	if err != nil {
		return err
	}
	transport := gateway.NewTransport(gateway.Timeouts{Dial: cfg.Upstream.DialTimeout, Header: cfg.Upstream.HeaderTimeout}, allow)
	defer transport.CloseIdleConnections()
	// Vertex AI tokens and AWS credentials refresh in the background,
	// through the same egress-checked transport as provider calls.
	creds := credential.NewKeeper(&http.Client{Transport: transport, Timeout: 30 * time.Second}, log)
	store := snapshot.NewStore(keyring, log).WithCredentials(creds)
	var keysFresh snapshot.Freshness
	if err := snapshot.RegisterMetrics(tel.MeterProvider, store, keys, &keysFresh); err != nil {
		return err
	}
	configConn, err := grpcclient.Dial(cfg.ConfigGRPC, tel, cfg.Auth.InternalToken)
	if err != nil {
		return fmt.Errorf("MOAT_CONFIG_GRPC: %w", err)
	}
	defer configConn.Close()
	identityConn, err := grpcclient.Dial(cfg.Auth.IdentityGRPC, tel, cfg.Auth.InternalToken)
	if err != nil {
		return fmt.Errorf("MOAT_IDENTITY_GRPC: %w", err)
	}
	defer identityConn.Close()
	identity := snapshot.WatchFreshness(identityv1.NewIdentityServiceClient(identityConn), &keysFresh)

	nc, js, err := events.Connect(cfg.Events.NATSURL, service, log)
	if err != nil {
		return err
	}
	defer events.Drain(nc, cfg.Serve.DrainTimeout)
	usageOpts := usage.Options{
		QueueSize:  cfg.Usage.QueueSize,
		Publishers: cfg.Usage.Publishers,
		Drain:      cfg.Serve.DrainTimeout,
		Meter:      tel.MeterProvider,
		Propagator: tel.Propagator,
		Log:        log,
	}
	// The publisher's own handle, so that its ack timeout and bound on
	// pending publishes apply to its publishes alone.
	usageJS, err := jetstream.New(nc, usage.JetStreamOptions(usageOpts)...)
	if err != nil {
		return fmt.Errorf("jetstream for usage events: %w", err)
	}
	publisher, err := usage.New(usageJS, usageOpts)
	if err != nil {
		return err
	}

	srv, err := serve.NewServers(log, tel, cfg.Serve,
		serve.Check{Name: "config_snapshot", Fn: readyWhen(store.Ready)},
		serve.Check{Name: "key_index", Fn: readyWhen(keys.Ready)},
	)
	if err != nil {
		return err
	}
	gw := gateway.New(gateway.Options{
		Keys:        keys,
		Routes:      store,
		Usage:       publisher,
		Renderer:    httpapi.Render{},
		Transport:   transport,
		IdleTimeout: cfg.Upstream.IdleTimeout,
		MaxInFlight: cfg.Upstream.MaxInFlight,
		Meter:       tel.MeterProvider,
		Log:         log,
	})
	httpapi.New(gw).Mount(srv.Mux)

	// The gateway's own admin API (provider tests), authenticated like
	// every service's: API keys, and OIDC access tokens when an issuer is
	// set. It is reached through /api/v1/ like the rest of the admin API.
	tokens, err := cfg.Auth.Verifier(log)
	if err != nil {
		return fmt.Errorf("load config: %w", err)
	}
	auth := &authn.Interceptor{Auth: keys, Tokens: tokens, Token: cfg.Auth.InternalToken}
	srv.Use(auth.Unary(), auth.Stream())
	gatewayv1.RegisterGatewayServiceServer(srv.GRPC, grpcapi.New(gw))
	own, err := srv.RESTHandler(ctx, func(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error {
		return gatewayv1.RegisterGatewayServiceHandlerClient(ctx, mux, gatewayv1.NewGatewayServiceClient(conn))
	})
	if err != nil {
		return err
	}
	admin, err := apiproxy.New(apiproxy.Backends{
		Identity: cfg.IdentityHTTP, Config: cfg.ConfigHTTP, Billing: cfg.BillingHTTP, Audit: cfg.AuditHTTP, Gateway: own,
	}, log)
	if err != nil {
		return err
	}
	srv.Mux.Handle("/api/", admin)
	// The data plane records every request itself (usage events, its own
	// metrics); a span and two histograms per request from the OpenTelemetry
	// middleware cost more than the rest of the gate sequence (profile of the
	// 1 000 req/s bench step). The admin API stays traced.
	srv.Untraced = []string{"/v1/"}
	srv.MaxConns = cfg.Upstream.MaxConns

	// The publisher outlives the servers: requests that finish while the
	// HTTP server drains still record usage, so it stops only after
	// srv.Run has returned, and then drains its queue within
	// DRAIN_TIMEOUT before NATS is closed.
	pubCtx, stopPublisher := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPublisher()
	published := make(chan error, 1)
	go func() { published <- publisher.Run(pubCtx) }()

	stream := events.StreamConfig{Name: "GATEWAY", Subjects: []string{"gateway.>"}, Replicas: cfg.Events.NATSReplicas}
	err = srv.Run(ctx,
		creds.Run,
		func(ctx context.Context) error { return ensureStream(ctx, js, stream, log) },
		func(ctx context.Context) error {
			return snapshot.Follow(ctx, configv1.NewConfigServiceClient(configConn), store, log)
		},
		func(ctx context.Context) error { return authn.Follow(ctx, identity, keys, log) },
	)
	stopPublisher()
	return errors.Join(err, <-published)
}

var errNotYet = errors.New("no snapshot yet")

// readyWhen turns a state's Ready into a readiness check. Once ready, a
// state stays ready: the gateway serves its last good snapshot when the
// stream's source is down.
func readyWhen(ready func() bool) func(context.Context) error {
	return func(context.Context) error {
		if !ready() {
			return errNotYet
		}
		return nil
	}
}

// ensureStream creates or updates the gateway's stream, retrying while NATS
// is unreachable: the gateway serves traffic without NATS.
func ensureStream(ctx context.Context, js jetstream.JetStream, cfg events.StreamConfig, log *slog.Logger) error {
	for {
		_, err := events.EnsureStream(ctx, js, cfg)
		if err == nil {
			log.Info("stream ready", "stream", cfg.Name)
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
		log.Warn("ensure stream; retrying", "stream", cfg.Name, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}
