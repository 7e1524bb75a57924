package apiproxy_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-ai/moat/services/gateway/internal/apiproxy"
)

// seen is what a backend received, echoed back as JSON.
type seen struct {
	Service       string
	Method        string
	Path          string
	Query         string
	Authorization string
	ForwardedFor  string
	HopByHop      string // the value of a header the client marked hop-by-hop
	Body          string
}

func backend(t *testing.T, name string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTeapot) // statuses pass through
		_ = json.NewEncoder(w).Encode(seen{
			Service: name, Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.RawQuery,
			Authorization: r.Header.Get("Authorization"), ForwardedFor: r.Header.Get("X-Forwarded-For"),
			HopByHop: r.Header.Get("X-Hop"), Body: string(body),
		})
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

func TestRoutesByPath(t *testing.T) {
	t.Parallel()
	h, err := apiproxy.New(apiproxy.Backends{
		Identity: backend(t, "identity"), Config: "http://" + backend(t, "config"),
		Billing: backend(t, "billing"), Audit: backend(t, "audit"),
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	gw := httptest.NewServer(h)
	t.Cleanup(gw.Close)

	tests := []struct {
		method, path, want string
	}{
		{http.MethodGet, "/api/v1/orgs", "config"},
		{http.MethodPost, "/api/v1/orgs?organizationId=acme", "config"},
		{http.MethodGet, "/api/v1/orgs/acme/projects/web/routes/chat", "config"},
		{http.MethodPatch, "/api/v1/orgs/acme/providers/openai", "config"},
		{http.MethodPost, "/api/v1/orgs/acme/projects/web/keys", "identity"},
		{http.MethodGet, "/api/v1/orgs/acme/projects/web/keys?pageSize=5", "identity"},
		{http.MethodPost, "/api/v1/orgs/acme/projects/web/keys/k1:revoke", "identity"},
		{http.MethodGet, "/api/v1/orgs/acme/usage", "billing"},
		{http.MethodGet, "/api/v1/orgs/acme/projects/web/usage:totals", "billing"},
		{http.MethodGet, "/api/v1/orgs/acme/auditEvents", "audit"},
		{http.MethodGet, "/api/v1/me", "identity"},
		{http.MethodPost, "/api/v1/orgs/acme/members?memberId=u1", "identity"},
		{http.MethodPatch, "/api/v1/orgs/acme/members/u1", "identity"},
		{http.MethodDelete, "/api/v1/orgs/acme/identityProviders/corp", "identity"},
		{http.MethodGet, "/api/v1/orgs/acme/projects/web/serviceAccounts", "identity"},
		{http.MethodGet, "/api/v1/orgs/acme/projects/web/agents/bot", "identity"},
		{http.MethodGet, "/api/v1/orgs/me", "config"},
		// Ids are not collections: an organization called "keys" is config's.
		{http.MethodGet, "/api/v1/orgs/keys", "config"},
		{http.MethodGet, "/api/v1/orgs/usage/projects/auditevents", "config"},
		{http.MethodGet, "/api/v1/orgs/a%2Fkeys", "config"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			t.Parallel()
			req, err := http.NewRequestWithContext(t.Context(), tt.method, gw.URL+tt.path, strings.NewReader(`{"x":1}`))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer moat_admin")
			req.Header.Set("X-Forwarded-For", "6.6.6.6") // a client's claim, not believed
			req.Header.Set("Connection", "X-Hop")
			req.Header.Set("X-Hop", "must not pass")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var got seen
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != http.StatusTeapot {
				t.Fatalf("status %d, decode: %v", resp.StatusCode, err)
			}
			path, query, _ := strings.Cut(tt.path, "?")
			want := seen{
				Service: tt.want, Method: tt.method, Path: path, Query: query,
				Authorization: "Bearer moat_admin", ForwardedFor: "127.0.0.1", Body: `{"x":1}`,
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("backend saw (-want +got):\n%s", diff)
			}
		})
	}
}

func TestBackendDown(t *testing.T) {
	t.Parallel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := lis.Addr().String()
	_ = lis.Close()
	h, err := apiproxy.New(apiproxy.Backends{Identity: down, Config: down, Billing: down, Audit: backend(t, "audit")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	gw := httptest.NewServer(h)
	t.Cleanup(gw.Close)

	for path, want := range map[string]int{
		"/api/v1/orgs/acme/projects/p/keys": http.StatusBadGateway,
		"/api/v1/orgs":                      http.StatusBadGateway,
		"/api/v1/orgs/acme/auditEvents":     http.StatusTeapot,
		"/api/v2/orgs":                      http.StatusNotFound,
	} {
		req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, gw.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s = %d %s, want %d", path, resp.StatusCode, body, want)
			continue
		}
		if want == http.StatusTeapot {
			continue
		}
		var e struct {
			Code    int
			Message string
		}
		if err := json.Unmarshal(body, &e); err != nil || e.Message == "" || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("GET %s body = %s, want a JSON error", path, body)
		}
		if strings.Contains(string(body), down) {
			t.Errorf("GET %s: the error names the backend address: %s", path, body)
		}
	}
}

func TestParseAddress(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"127.0.0.1:8081":         "http://127.0.0.1:8081",
		"http://config:8080":     "http://config:8080",
		"https://config:8443/":   "https://config:8443",
		"":                       "error",
		"config":                 "error",
		"ftp://config:21":        "error",
		"http://config:8080/api": "error",
		"http://u:p@config:8080": "error",
	} {
		u, err := apiproxy.ParseAddress(in)
		got := "error"
		if err == nil {
			got = u.String()
		}
		if got != want {
			t.Errorf("ParseAddress(%q) = %s (%v), want %s", in, got, err, want)
		}
	}
}

// The gateway's own methods reach its own handler, nothing else does.
func TestGatewayOwnMethods(t *testing.T) {
	t.Parallel()
	var hit []string
	own := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hit = append(hit, r.URL.Path)
		w.WriteHeader(http.StatusAccepted)
	})
	h, err := apiproxy.New(apiproxy.Backends{
		Identity: backend(t, "identity"), Config: backend(t, "config"), Billing: backend(t, "billing"), Audit: backend(t, "audit"), Gateway: own,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]int{
		"/api/v1/orgs/acme/providers/openai:test":   http.StatusAccepted,
		"/api/v1/orgs/acme/providers/openai":        http.StatusTeapot, // config
		"/api/v1/orgs/acme/providers/openai:tested": http.StatusTeapot,
		"/api/v1/orgs/acme/projects/web:test":       http.StatusTeapot,
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, strings.NewReader("{}")))
		if rec.Code != want {
			t.Errorf("POST %s = %d, want %d", path, rec.Code, want)
		}
	}
	if diff := cmp.Diff([]string{"/api/v1/orgs/acme/providers/openai:test"}, hit); diff != "" {
		t.Errorf("the gateway's handler got (-want +got):\n%s", diff)
	}
}
