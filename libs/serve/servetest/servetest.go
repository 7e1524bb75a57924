// Package servetest helps component tests start a service's Run in process
// and wait for it: free loopback addresses, health polling with a deadline,
// and a bounded wait for Run to return after its context is cancelled.
package servetest

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Ports FreeAddr draws from: below Linux's ephemeral range (32768 and
// up), which the kernel also hands to outgoing connections. A port from
// ":0" is taken from that range, so a test's client connection could grab
// it between FreeAddr and the service's listen (seen in CI as "address
// already in use").
const (
	portLow  = 20000
	portHigh = 32000
)

// FreeAddr returns a loopback address with a port that was free a moment
// ago. Run cannot report the port it picked for ":0", so tests choose.
func FreeAddr(t testing.TB) string {
	t.Helper()
	for range 100 {
		port := portLow + rand.IntN(portHigh-portLow) //nolint:gosec // a test port, not a secret
		lis, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue // taken: draw again
		}
		addr := lis.Addr().String()
		if err := lis.Close(); err != nil {
			t.Fatalf("release port: %v", err)
		}
		return addr
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	addr := lis.Addr().String()
	if err := lis.Close(); err != nil {
		t.Fatalf("release port: %v", err)
	}
	return addr
}

// Env is a fake environment for Run's getenv.
type Env map[string]string

// Getenv looks k up in e.
func (e Env) Getenv(k string) string { return e[k] }

// Process is a service's Run started in a goroutine.
type Process struct {
	cancel context.CancelFunc
	done   chan error
	// Log collects what the service wrote to stderr.
	Log *SyncBuffer
}

// Start runs run(ctx, args, env.Getenv, log) in a goroutine. The test's
// cleanup cancels it and fails unless it returns nil within 30s.
func Start(t testing.TB, run func(context.Context, []string, func(string) string, io.Writer) error, env Env, args ...string) *Process {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &Process{cancel: cancel, done: make(chan error, 1), Log: &SyncBuffer{}}
	go func() { p.done <- run(ctx, args, env.Getenv, p.Log) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-p.done:
			if err != nil {
				t.Errorf("service returned %v after cancellation, want nil; log:\n%s", err, p.Log)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("service did not stop within 30s; log:\n%s", p.Log)
		}
	})
	return p
}

// Stop cancels the process's context and returns Run's result, failing the
// test if Run takes longer than within.
func (p *Process) Stop(t testing.TB, within time.Duration) error {
	t.Helper()
	p.cancel()
	select {
	case err := <-p.done:
		p.done <- err // let the cleanup see it too
		return err
	case <-time.After(within):
		t.Fatalf("Run did not return within %v of cancellation; log:\n%s", within, p.Log)
		return nil
	}
}

// Exited reports whether Run has returned, and its result if so.
func (p *Process) Exited() (exited bool, err error) {
	select {
	case err := <-p.done:
		p.done <- err
		return true, err
	default:
		return false, nil
	}
}

// WaitServing polls the gRPC health service at addr until it reports
// SERVING, failing the test after within (or as soon as the process exits).
func WaitServing(t testing.TB, p *Process, addr string, within time.Duration) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)
	deadline := time.Now().Add(within)
	for {
		if exited, err := p.Exited(); exited {
			t.Fatalf("service exited before serving: %v; log:\n%s", err, p.Log)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("gRPC health at %s not SERVING within %v (last: %v %v); log:\n%s", addr, within, resp.GetStatus(), err, p.Log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Get fetches url and returns the status code and body.
func Get(t testing.TB, url string) (int, string) {
	t.Helper()
	return GetAs(t, url, "")
}

// GetAs is Get presenting the API key key as `Authorization: Bearer`, or
// no credentials when key is empty.
func GetAs(t testing.TB, url, key string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// Eventually polls cond until it holds, failing the test after within
// with what as the thing it waited for. Component tests wait for
// asynchronous effects with it, never with a bare sleep.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// CheckProbes asserts the HTTP probes every Moat service serves.
func CheckProbes(t testing.TB, httpAddr string) {
	t.Helper()
	base := "http://" + httpAddr
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := Get(t, base+path); code != http.StatusOK {
			t.Errorf("GET %s = %d %q, want 200", path, code, body)
		}
	}
	code, body := Get(t, base+"/metrics")
	if code != http.StatusOK || !strings.Contains(body, "go_goroutines") {
		t.Errorf("GET /metrics = %d without go_goroutines, want Prometheus text", code)
	}
}

// SyncBuffer is a bytes buffer safe for one writer and concurrent readers.
type SyncBuffer struct {
	mu  sync.Mutex
	buf []byte
}

// Write appends p.
func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	return len(p), nil
}

// String returns everything written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// Contains reports whether the output so far contains s.
func (b *SyncBuffer) Contains(s string) bool { return strings.Contains(b.String(), s) }

var _ fmt.Stringer = (*SyncBuffer)(nil)

// WaitStream polls the NATS server at natsURL until stream exists.
func WaitStream(t testing.TB, p *Process, natsURL, stream string, within time.Duration) {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatalf("connect nats: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := js.Stream(ctx, stream)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream %s not created within %v (%v); log:\n%s", stream, within, err, p.Log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
