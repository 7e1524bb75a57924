//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// services are the five Moat services, each listening on MOAT_<SVC>_HTTP and MOAT_<SVC>_GRPC.
var services = []string{"gateway", "identity", "config", "billing", "audit"}

// readyTimeout bounds each poll: dev-up.sh already waited for /readyz, so
// this only absorbs a service that is slow to flip after startup.
const readyTimeout = 30 * time.Second

// env returns the environment variable name or fails the test: a missing
// address means the platform was not started, and that must never pass as a skip.
func env(t *testing.T, name string) string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		t.Fatalf("%s is not set; run the suite with `make e2e`, or export .moat/platform.env after `make dev-up`", name)
	}
	return v
}

// eventually calls check until it returns nil, failing the test with the last
// error once timeout has passed.
func eventually(t *testing.T, timeout time.Duration, check func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	ticker := time.NewTicker(200 * time.Millisecond)
	defer ticker.Stop()
	for {
		err := check(ctx)
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("not true after %v: %v", timeout, err)
		case <-ticker.C:
		}
	}
}

// get fetches url and returns its status, Content-Type and body.
func get(ctx context.Context, url string) (status int, contentType string, body []byte, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", nil, fmt.Errorf("build request: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", nil, fmt.Errorf("get %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", nil, fmt.Errorf("read %s: %w", url, err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), body, nil
}

func TestHTTPProbes(t *testing.T) {
	t.Parallel()
	for _, svc := range services {
		t.Run(svc, func(t *testing.T) {
			t.Parallel()
			base := "http://" + env(t, "MOAT_"+strings.ToUpper(svc)+"_HTTP")
			want := map[string]int{"/healthz": http.StatusOK, "/readyz": http.StatusOK}
			eventually(t, readyTimeout, func(ctx context.Context) error {
				got := map[string]int{}
				for path := range want {
					status, _, _, err := get(ctx, base+path)
					if err != nil {
						return err
					}
					got[path] = status
				}
				if diff := cmp.Diff(want, got); diff != "" {
					return fmt.Errorf("%s probe statuses mismatch (-want +got):\n%s", svc, diff)
				}
				return nil
			})
		})
	}
}

func TestGatewayURL(t *testing.T) {
	t.Parallel()
	url := env(t, "E2E_GATEWAY_URL")
	eventually(t, readyTimeout, func(ctx context.Context) error {
		status, _, _, err := get(ctx, url+"/readyz")
		if err != nil {
			return err
		}
		if status != http.StatusOK {
			return fmt.Errorf("GET %s/readyz = %d, want %d", url, status, http.StatusOK)
		}
		return nil
	})
}

// sampleLine matches a Prometheus text-format sample: name, optional labels, value.
var sampleLine = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})? \S+( \S+)?$`)

// checkPrometheusText reports whether body is Prometheus text exposition with
// at least one TYPE comment and one sample, and every other line well formed.
func checkPrometheusText(body []byte) error {
	var types, samples int
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
		case strings.HasPrefix(line, "# TYPE "):
			types++
		case strings.HasPrefix(line, "#"):
		case sampleLine.MatchString(line):
			samples++
		default:
			return fmt.Errorf("not a Prometheus text line: %q", line)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("scan metrics: %w", err)
	}
	if types == 0 || samples == 0 {
		return fmt.Errorf("got %d TYPE lines and %d samples, want at least one of each", types, samples)
	}
	return nil
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	for _, svc := range services {
		t.Run(svc, func(t *testing.T) {
			t.Parallel()
			url := "http://" + env(t, "MOAT_"+strings.ToUpper(svc)+"_HTTP") + "/metrics"
			eventually(t, readyTimeout, func(ctx context.Context) error {
				status, contentType, body, err := get(ctx, url)
				if err != nil {
					return err
				}
				if status != http.StatusOK {
					return fmt.Errorf("GET %s = %d, want %d", url, status, http.StatusOK)
				}
				mediaType, _, err := mime.ParseMediaType(contentType)
				if err != nil {
					return fmt.Errorf("GET %s: Content-Type %q: %w", url, contentType, err)
				}
				if mediaType != "text/plain" {
					return fmt.Errorf("GET %s: Content-Type %q, want text/plain (Prometheus text format)", url, contentType)
				}
				if err := checkPrometheusText(body); err != nil {
					return fmt.Errorf("GET %s: %w", url, err)
				}
				return nil
			})
		})
	}
}

func TestGRPCHealth(t *testing.T) {
	t.Parallel()
	for _, svc := range services {
		t.Run(svc, func(t *testing.T) {
			t.Parallel()
			addr := env(t, "MOAT_"+strings.ToUpper(svc)+"_GRPC")
			conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatalf("grpc.NewClient(%q) = %v", addr, err)
			}
			t.Cleanup(func() {
				if err := conn.Close(); err != nil {
					t.Errorf("close %s connection: %v", svc, err)
				}
			})
			client := healthpb.NewHealthClient(conn)
			eventually(t, readyTimeout, func(ctx context.Context) error {
				ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: ""})
				if err != nil {
					return fmt.Errorf("%s health Check: %w", svc, err)
				}
				if got, want := resp.GetStatus(), healthpb.HealthCheckResponse_SERVING; got != want {
					return fmt.Errorf("%s health Check = %v, want %v", svc, got, want)
				}
				return nil
			})
		})
	}
}

func TestCheckPrometheusText(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		body    string
		wantErr bool
	}{
		{
			name: "valid",
			body: "# HELP up Whether up.\n# TYPE up gauge\nup 1\nreq_total{code=\"200\",path=\"/a b\"} 3 1700000000000\n",
		},
		{name: "empty", body: "", wantErr: true},
		{name: "comments only", body: "# TYPE up gauge\n", wantErr: true},
		{name: "html", body: "# TYPE up gauge\nup 1\n<html>oops</html>\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := checkPrometheusText([]byte(tt.body))
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Errorf("checkPrometheusText(%q) = %v, want error %v", tt.body, err, tt.wantErr)
			}
		})
	}
}
