package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/moat-ai/moat/libs/providertest"
)

func TestRun(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stdoutR, stdoutW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		getenv := func(k string) string {
			if k == "MOCK_PROVIDER_CREDENTIAL" {
				return "sk-x"
			}
			return ""
		}
		done <- run(ctx, []string{"-addr", "127.0.0.1:0", "-model", "cmd-model", "-chunks", "2"}, getenv, stdoutW, io.Discard)
		_ = stdoutW.Close()
	}()

	line, err := bufio.NewReader(stdoutR).ReadString('\n')
	if err != nil {
		t.Fatalf("read the listen line: %v", err)
	}
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "mockprovider listening on ")
	if !ok {
		t.Fatalf("first line = %q, want the listen address", line)
	}
	go func() { _, _ = io.Copy(io.Discard, stdoutR) }()

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v1/models", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer sk-x")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET /v1/models: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"cmd-model"`) {
		t.Errorf("GET /v1/models = %d %s, want 200 listing cmd-model", resp.StatusCode, body)
	}

	// The credential came from the environment: a caller without it is refused.
	anon, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v1/models", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err = http.DefaultClient.Do(anon)
	if err != nil {
		t.Fatalf("GET /v1/models without a key: %v", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /v1/models without a key = %d, want 401", resp.StatusCode)
	}

	cancel() // as SIGTERM does through signal.NotifyContext
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after cancel = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return within 10s of cancellation")
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
	}{
		{"unknown flag", []string{"-nope"}},
		{"no chunks", []string{"-chunks", "0"}},
		{"negative tokens", []string{"-cached-tokens", "-1"}},
		{"empty tool name", []string{"-tool-calls", "f,,g"}},
		{"bad stream error", []string{"-stream-error-after", "-2"}},
		{"no dimensions", []string{"-embedding-dimensions", "0"}},
		{"extra argument", []string{"now"}},
		{"bad address", []string{"-addr", "127.0.0.1:notaport"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if err := run(t.Context(), tt.args, func(string) string { return "" }, io.Discard, io.Discard); err == nil {
				t.Errorf("run(%q) = nil, want an error", tt.args)
			}
		})
	}
}

func TestParseFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want providertest.Config
	}{
		{"defaults", nil, providertest.Config{
			Credential: "sk-env", Model: providertest.DefaultModel, Chunks: providertest.DefaultChunks,
			EmbeddingDimensions: providertest.DefaultEmbeddingDimensions,
		}},
		{"every token flag", []string{
			"-cached-tokens", "3", "-cache-write-tokens", "2", "-reasoning-tokens", "1",
			"-tool-calls", "get_weather, lookup", "-stream-error-after", "0", "-embedding-dimensions", "16",
		}, providertest.Config{
			Credential: "sk-env", Model: providertest.DefaultModel, Chunks: providertest.DefaultChunks,
			CachedTokens: 3, CacheWriteTokens: 2, ReasoningTokens: 1, ToolCalls: []string{"get_weather", "lookup"},
			StreamError: true, StreamErrorAfter: 0, EmbeddingDimensions: 16,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, got, err := parseFlags(tt.args, func(string) string { return "sk-env" }, io.Discard)
			if err != nil {
				t.Fatalf("parseFlags(%q) = %v", tt.args, err)
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.IgnoreFields(providertest.Config{}, "Now")); diff != "" {
				t.Errorf("parseFlags(%q) mismatch (-want +got):\n%s", tt.args, diff)
			}
		})
	}
}
