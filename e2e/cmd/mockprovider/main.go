// Command mockprovider serves the mock model provider of package
// libs/providertest over HTTP, for local runs, end-to-end tests and
// benchmarks. Point a provider's base URL at http://<addr>: it serves the
// OpenAI (/v1/...), Azure OpenAI (/openai/...), Anthropic (/v1/messages),
// Gemini (/v1beta/models/..., Vertex /v1/projects/...) and Bedrock
// (/model/...) paths that package documents, with the same per-request
// X-Mock-* headers; the flags set their defaults.
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
	"strings"
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
	addr, cfg, err := parseFlags(args, getenv, stderr)
	if err != nil {
		return err
	}

	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
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

// parseFlags reads the listen address and the mock's defaults.
func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (string, providertest.Config, error) {
	fs := flag.NewFlagSet("mockprovider", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:8090", "listen address (port 0 picks a free one)")
	var cfg providertest.Config
	fs.StringVar(&cfg.Credential, "credential", getenv("MOCK_PROVIDER_CREDENTIAL"),
		"the only credential accepted, in each API's header (default $MOCK_PROVIDER_CREDENTIAL); empty accepts any caller")
	fs.StringVar(&cfg.Model, "model", providertest.DefaultModel, "the model GET /v1/models lists")
	fs.DurationVar(&cfg.Delay, "delay", 0, "wait before the response headers")
	fs.DurationVar(&cfg.TTFT, "ttft", 0, "wait before the first content event of a stream")
	fs.IntVar(&cfg.Chunks, "chunks", providertest.DefaultChunks, "content chunks per stream, and completion tokens per answer")
	fs.DurationVar(&cfg.ChunkDelay, "chunk-delay", 0, "wait between two content events of a stream")
	fs.Int64Var(&cfg.CachedTokens, "cached-tokens", 0, "prompt tokens reported as read from the cache")
	fs.Int64Var(&cfg.CacheWriteTokens, "cache-write-tokens", 0, "prompt tokens reported as written to the cache")
	fs.Int64Var(&cfg.ReasoningTokens, "reasoning-tokens", 0, "completion tokens reported as reasoning")
	tools := fs.String("tool-calls", "", "functions every answer calls instead of answering text, separated by commas")
	breakAt := fs.Int("stream-error-after", -1, "break every stream after this many content events (-1: never)")
	fs.IntVar(&cfg.EmbeddingDimensions, "embedding-dimensions", providertest.DefaultEmbeddingDimensions,
		"length of embedding vectors when the request names none")
	if err := fs.Parse(args); err != nil {
		return "", cfg, err
	}
	switch {
	case fs.NArg() > 0:
		return "", cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	case cfg.Chunks < 1:
		return "", cfg, errors.New("-chunks must be at least 1")
	case cfg.CachedTokens < 0 || cfg.CacheWriteTokens < 0 || cfg.ReasoningTokens < 0:
		return "", cfg, errors.New("token counts must not be negative")
	case cfg.EmbeddingDimensions < 1:
		return "", cfg, errors.New("-embedding-dimensions must be at least 1")
	case *breakAt < -1:
		return "", cfg, errors.New("-stream-error-after must be -1 or more")
	}
	if *tools != "" {
		for _, name := range strings.Split(*tools, ",") {
			if name = strings.TrimSpace(name); name == "" {
				return "", cfg, errors.New("-tool-calls must be function names separated by commas")
			}
			cfg.ToolCalls = append(cfg.ToolCalls, name)
		}
	}
	cfg.StreamError, cfg.StreamErrorAfter = *breakAt >= 0, max(*breakAt, 0)
	return *addr, cfg, nil
}
