package serve_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/moat-ai/moat/libs/serve"
	"github.com/moat-ai/moat/libs/telemetry"
)

// run has the shape of a service's app.Run: it blocks until ctx ends or a
// component fails, and returns after everything has shut down. ready is a
// hook for this example only, called once both servers listen.
func run(ctx context.Context, getenv func(string) string, stderr io.Writer, ready func(httpAddr string)) error {
	level, err := telemetry.ParseLevel(getenv("LOG_LEVEL"))
	if err != nil {
		return fmt.Errorf("read LOG_LEVEL: %w", err)
	}
	log := slog.New(telemetry.NewHandler(stderr, level)).With("service", "billing")

	tel, err := telemetry.Start(ctx, "billing", getenv)
	if err != nil {
		return fmt.Errorf("start telemetry: %w", err)
	}
	// Telemetry flushes last, after every server has stopped, and gets its
	// own deadline because ctx is over by then.
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := tel.Shutdown(sctx); err != nil {
			log.Warn("flush telemetry", "err", err)
		}
	}()

	// A real service checks its database and NATS connection here.
	health := serve.NewHealth(serve.Check{Name: "postgres", Fn: func(context.Context) error { return nil }})

	grpcSrv := serve.NewGRPCServer(log, tel, health)
	// billingv1.RegisterBillingServiceServer(grpcSrv, grpcapi.New(svc))

	mux := http.NewServeMux()
	health.Mount(mux)
	mux.Handle("GET /metrics", tel.MetricsHandler())
	// mux.Handle("/api/v1/", gatewayMux)
	httpSrv := &http.Server{Handler: serve.NewHTTPHandler(tel, mux)}

	grpcLis, err := serve.Listen("127.0.0.1:0") // GRPC_ADDR in a real service
	if err != nil {
		return err
	}
	httpLis, err := serve.Listen("127.0.0.1:0") // HTTP_ADDR in a real service
	if err != nil {
		_ = grpcLis.Close()
		return err
	}
	const grace = 10 * time.Second // DRAIN_TIMEOUT in a real service

	g, gctx := errgroup.WithContext(ctx)
	// The servers get a context of their own, so that they start to stop
	// only after readiness has failed, not at the same moment.
	serversCtx, stopServers := context.WithCancel(context.WithoutCancel(ctx))
	defer stopServers()
	g.Go(func() error {
		<-gctx.Done() // SIGTERM, or another component failed
		health.Shutdown()
		stopServers()
		return nil
	})
	g.Go(func() error { return health.Run(gctx) })
	g.Go(func() error { return serve.GRPC(serversCtx, grpcSrv, grpcLis, grace) })
	g.Go(func() error { return serve.HTTP(serversCtx, httpSrv, httpLis, grace) })
	ready(httpLis.Addr().String())
	return g.Wait()
}

// Example wires telemetry, Health, gRPC and HTTP the way a service's Run
// does, probes readiness, then ends the context as SIGTERM would.
func Example() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	getenv := func(string) string { return "" } // os.Getenv in a real service

	err := run(ctx, getenv, os.Stderr, func(addr string) {
		// The listener accepts before Serve runs, and /readyz runs the
		// checks itself, so the first probe already has the answer.
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			fmt.Println("probe:", err)
		} else {
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			fmt.Printf("readyz: %d %s", resp.StatusCode, body)
		}
		cancel()
	})
	fmt.Println("run:", err)
	// Output:
	// readyz: 200 {"status":"ok"}
	// run: <nil>
}
