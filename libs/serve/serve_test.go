package serve

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/moat-ai/moat/libs/telemetry"
)

// waitLong bounds waits for things that should happen promptly; it only
// matters when a test is about to fail, so it is generous for slow CI.
const waitLong = 10 * time.Second

// eventually polls cond until it holds or timeout passes. It is the only
// place these tests sleep.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// receive returns the next value from ch, failing the test after timeout.
func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	timer := time.NewTimer(waitLong)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("timed out after %v waiting for %s", waitLong, what)
		panic("unreachable")
	}
}

// refused reports whether a new TCP connection to addr is refused.
func refused(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return true
	}
	_ = c.Close()
	return false
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	lis, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	return lis
}

func newTelemetry(t *testing.T) *telemetry.Telemetry {
	t.Helper()
	tel, err := telemetry.Start(t.Context(), "serve-test", func(string) string { return "" })
	if err != nil {
		t.Fatalf("telemetry.Start: %v", err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	return tel
}

// syncBuffer is a log sink that server goroutines and the test may share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newLogger(w *syncBuffer) *slog.Logger {
	return slog.New(telemetry.NewHandler(w, slog.LevelDebug))
}

func TestListen(t *testing.T) {
	t.Parallel()
	lis := listen(t)
	defer lis.Close()
	if _, err := Listen(lis.Addr().String()); err == nil {
		t.Errorf("Listen(%s) on a port in use = nil error, want error", lis.Addr())
	}
}
