package serve

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// httpFixture is a served HTTP server whose /block handler waits for release.
type httpFixture struct {
	srv     *http.Server
	addr    string
	entered chan string
	release chan struct{}
	cancel  context.CancelFunc
	done    chan error // HTTP's result
}

func startHTTP(t *testing.T, grace time.Duration) *httpFixture {
	t.Helper()
	f := &httpFixture{entered: make(chan string, 16), release: make(chan struct{}), done: make(chan error, 1)}
	mux := http.NewServeMux()
	// The handler ignores the request context on purpose: it stands for
	// work that does not notice cancellation.
	mux.HandleFunc("GET /block", func(w http.ResponseWriter, r *http.Request) {
		f.entered <- r.URL.Query().Get("id")
		<-f.release
		_, _ = io.WriteString(w, "done "+r.URL.Query().Get("id"))
	})
	f.srv = &http.Server{Handler: NewHTTPHandler(newTelemetry(t), mux)}
	lis := listen(t)
	f.addr = lis.Addr().String()
	ctx, cancel := context.WithCancel(t.Context())
	f.cancel = cancel
	go func() { f.done <- HTTP(ctx, f.srv, lis, grace) }()
	t.Cleanup(func() {
		select {
		case <-f.release:
		default:
			close(f.release)
		}
	})
	t.Cleanup(cancel)
	return f
}

type httpResult struct {
	id, body string
	code     int
	err      error
}

// startBlockRequests starts n GET /block requests, each on its own
// connection, and waits until every one is inside the handler.
func startBlockRequests(t *testing.T, f *httpFixture, n int) <-chan httpResult {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	t.Cleanup(client.CloseIdleConnections)
	results := make(chan httpResult, n)
	for i := range n {
		id := strconv.Itoa(i)
		go func() {
			resp, err := client.Get("http://" + f.addr + "/block?id=" + id)
			if err != nil {
				results <- httpResult{id: id, err: err}
				return
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			results <- httpResult{id: id, body: string(body), code: resp.StatusCode, err: err}
		}()
	}
	for range n {
		receive(t, f.entered, "a request to enter its handler")
	}
	return results
}

func TestHTTPGracefulShutdownCompletesInFlightRequests(t *testing.T) {
	t.Parallel()
	f := startHTTP(t, waitLong)
	const n = 4
	results := startBlockRequests(t, f, n)

	f.cancel()
	eventually(t, waitLong, "new connections to be refused", func() bool { return refused(f.addr) })
	select {
	case err := <-f.done:
		t.Fatalf("HTTP returned %v while requests were in flight", err)
	default:
	}

	close(f.release)
	for range n {
		r := receive(t, results, "an in-flight request to finish")
		want := httpResult{id: r.id, code: http.StatusOK, body: "done " + r.id}
		if diff := cmp.Diff(want, r, cmp.AllowUnexported(httpResult{}), cmp.Comparer(sameError)); diff != "" {
			t.Errorf("in-flight request mismatch (-want +got):\n%s", diff)
		}
	}
	if err := receive(t, f.done, "HTTP to return"); err != nil {
		t.Errorf("HTTP = %v, want nil", err)
	}
}

func sameError(a, b error) bool { return (a == nil) == (b == nil) }

func TestHTTPForcesCloseAfterGrace(t *testing.T) {
	t.Parallel()
	const grace = 300 * time.Millisecond
	const margin = time.Second // scheduling slack on a loaded CI machine
	f := startHTTP(t, grace)
	const n = 3
	results := startBlockRequests(t, f, n) // never released

	start := time.Now()
	f.cancel()
	err := receive(t, f.done, "HTTP to return")
	elapsed := time.Since(start)
	if err != nil {
		t.Errorf("HTTP = %v, want nil", err)
	}
	if elapsed < grace || elapsed > grace+margin {
		t.Errorf("HTTP returned %v after cancel, want between %v and %v", elapsed, grace, grace+margin)
	}
	for range n {
		if r := receive(t, results, "an in-flight request to fail"); r.err == nil {
			t.Errorf("in-flight request %s = %d %q, want a connection error", r.id, r.code, r.body)
		}
	}
	if !refused(f.addr) {
		t.Error("new connection accepted after HTTP returned")
	}
}

func TestHTTPSetsTimeouts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name              string
		srv               *http.Server
		wantHeader, wantI time.Duration
	}{
		{
			name:       "zero gets defaults",
			srv:        &http.Server{Handler: http.NotFoundHandler()},
			wantHeader: defaultReadHeaderTimeout, wantI: defaultIdleTimeout,
		},
		{
			name:       "set values are kept",
			srv:        &http.Server{Handler: http.NotFoundHandler(), ReadHeaderTimeout: time.Second, IdleTimeout: time.Minute},
			wantHeader: time.Second, wantI: time.Minute,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			if err := HTTP(ctx, tt.srv, listen(t), time.Second); err != nil {
				t.Fatalf("HTTP = %v, want nil", err)
			}
			got := []time.Duration{tt.srv.ReadHeaderTimeout, tt.srv.IdleTimeout, tt.srv.ReadTimeout, tt.srv.WriteTimeout}
			want := []time.Duration{tt.wantHeader, tt.wantI, 0, 0}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("ReadHeader, Idle, Read, Write timeouts mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHTTPErrors(t *testing.T) {
	t.Parallel()
	t.Run("no handler", func(t *testing.T) {
		t.Parallel()
		lis := listen(t)
		if err := HTTP(t.Context(), &http.Server{}, lis, time.Second); err == nil {
			t.Fatal("HTTP without a handler = nil, want error")
		}
		if !refused(lis.Addr().String()) {
			t.Error("HTTP without a handler left its listener open")
		}
	})
	t.Run("closed listener", func(t *testing.T) {
		t.Parallel()
		lis := listen(t)
		_ = lis.Close()
		err := HTTP(t.Context(), &http.Server{Handler: http.NotFoundHandler()}, lis, time.Second)
		var opErr *net.OpError
		if err == nil || !errors.As(err, &opErr) {
			t.Errorf("HTTP on a closed listener = %v, want an error wrapping *net.OpError", err)
		}
	})
}
