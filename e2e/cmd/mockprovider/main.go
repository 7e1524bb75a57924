// Command mockprovider serves the mock model provider of package
// libs/providertest over HTTP, for local runs, end-to-end tests and
// benchmarks. Point a provider's base URL at http://<addr>/v1.
//
// The expected credential comes from -credential or, so that it stays out
// of process listings, from the MOCK_PROVIDER_CREDENTIAL environment
// variable. It prints "mockprovider listening on <host:port>" on stdout
// once it accepts connections (so -addr 127.0.0.1:0 can be used by
// scripts), and stops gracefully on SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/moat-ai/moat/libs/providertest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "mockprovider: %v\n", err)
		os.Exit(1)
	}
}

// grace bounds the shutdown: streams in flight may finish within it.
const grace = 5 * time.Second

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mockprovider", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:8090", "listen address (port 0 picks a free one)")
	var cfg providertest.Config
	fs.StringVar(&cfg.Credential, "credential", getenv("MOCK_PROVIDER_CREDENTIAL"),
		"the only API key accepted as Bearer (default $MOCK_PROVIDER_CREDENTIAL); empty accepts any caller")
	fs.StringVar(&cfg.Model, "model", providertest.DefaultModel, "the model GET /v1/models lists")
	fs.DurationVar(&cfg.Delay, "delay", 0, "wait before the response headers")
	fs.DurationVar(&cfg.TTFT, "ttft", 0, "wait before the first chunk of a stream")
	fs.IntVar(&cfg.Chunks, "chunks", providertest.DefaultChunks, "content chunks per stream, and completion tokens per answer")
	fs.DurationVar(&cfg.ChunkDelay, "chunk-delay", 0, "wait between two chunks of a stream")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if cfg.Chunks < 1 {
		return errors.New("-chunks must be at least 1")
	}

	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *addr, err)
	}
	srv := &http.Server{Handler: providertest.New(cfg), ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(lis) }()
	fmt.Fprintf(stdout, "mockprovider listening on %s\n", lis.Addr())

	select {
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	if err := <-serveErr; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}
