package credential

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	testTenant   = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	testClientID = "0b1c2d3e-app-client"
	testSecret   = "SeCrEt~azure.client_secret-1"
)

// entraJSON is an Azure provider's credential as config accepts it.
func entraJSON(t testing.TB, secret string) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]string{"tenantId": testTenant, "clientId": testClientID, "clientSecret": secret})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// entraServer is a fake Microsoft Entra ID authority: the tenant's OpenID
// configuration, which MSAL reads first, and its v2.0 token endpoint,
// which checks the client credentials grant as Entra does and answers
// tok-1, tok-2, ... valid for expiresIn seconds, or status when failing.
type entraServer struct {
	srv       *httptest.Server
	expiresIn atomic.Int64
	failWith  atomic.Int64           // an HTTP status, 0 to answer tokens
	answer    atomic.Pointer[string] // a body to answer instead of a token
	issued    atomic.Int64
	tokenReqs atomic.Int64

	mu    sync.Mutex
	paths []string // every request's method and path, in order
}

func newEntraServer(t *testing.T) *entraServer {
	t.Helper()
	es := &entraServer{}
	es.expiresIn.Store(3600)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{tenant}/v2.0/.well-known/openid-configuration", es.openIDConfiguration)
	mux.HandleFunc("POST /{tenant}/oauth2/v2.0/token", es.token)
	es.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		es.mu.Lock()
		es.paths = append(es.paths, r.Method+" "+r.URL.Path)
		es.mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(es.srv.Close)
	return es
}

func (es *entraServer) openIDConfiguration(w http.ResponseWriter, r *http.Request) {
	base := es.srv.URL + "/" + r.PathValue("tenant")
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"token_endpoint":                        base + "/oauth2/v2.0/token",
		"authorization_endpoint":                base + "/oauth2/v2.0/authorize",
		"issuer":                                base + "/v2.0",
		"token_endpoint_auth_methods_supported": []string{"client_secret_post", "private_key_jwt", "client_secret_basic"},
	})
}

func (es *entraServer) token(w http.ResponseWriter, r *http.Request) {
	es.tokenReqs.Add(1)
	w.Header().Set("Content-Type", "application/json")
	if s := es.failWith.Load(); s != 0 {
		w.WriteHeader(int(s))
		// Entra's descriptions can quote what it was sent.
		fmt.Fprintf(w, `{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided: %s tok-secret-looking","error_codes":[7000215]}`, testSecret)
		return
	}
	if a := es.answer.Load(); a != nil {
		fmt.Fprint(w, *a)
		return
	}
	if err := r.ParseForm(); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"error":"invalid_request"}`)
		return
	}
	f := r.PostForm
	switch {
	case r.PathValue("tenant") != testTenant:
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"error":"invalid_tenant"}`)
		return
	case f.Get("grant_type") != "client_credentials" || !slices.Contains(strings.Fields(f.Get("scope")), AzureScope):
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"error":"invalid_request"}`)
		return
	case f.Get("client_id") != testClientID || f.Get("client_secret") != testSecret:
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":"invalid_client"}`)
		return
	}
	n := es.issued.Add(1)
	fmt.Fprintf(w, `{"token_type":"Bearer","expires_in":%d,"ext_expires_in":%[1]d,"access_token":"tok-%d"}`, es.expiresIn.Load(), n)
}

func (es *entraServer) requests() []string {
	es.mu.Lock()
	defer es.mu.Unlock()
	return append([]string(nil), es.paths...)
}

// startedAzure is an Azure credential driven by a stepClock against es,
// with Run going; the cleanup ends Run and checks it returned nil.
func startedAzure(t *testing.T, es *entraServer, cred []byte) (*Azure, *stepClock) {
	t.Helper()
	a, err := NewAzure(t.Context(), cred, es.srv.Client(), es.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	clock := newStepClock()
	a.now, a.wait, a.jitter = clock.now, clock.wait, func() float64 { return 0.5 }
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v, want nil after cancel", err)
		}
	})
	return a, clock
}

func TestAzureRefresh(t *testing.T) {
	t.Parallel()
	es := newEntraServer(t)
	a, clock := startedAzure(t, es, entraJSON(t, testSecret))

	d := clock.next(t)
	if d < 2878*time.Second || d > 2880*time.Second {
		t.Errorf("first refresh in %v, want 80%% of 3600s", d)
	}
	select {
	case <-a.Ready():
	default:
		t.Error("Ready not closed after the first token")
	}
	if tok, err := a.Token(); tok != "tok-1" || err != nil {
		t.Errorf("Token = %q, %v; want tok-1", tok, err)
	}
	clock.advance(d)
	if tok, err := a.Token(); tok != "tok-1" || err != nil {
		t.Errorf("Token at the refresh time = %q, %v; want tok-1 still", tok, err)
	}
	// The refresh, 12 minutes before the token expires, gets a new one:
	// MSAL's cache would have handed back tok-1.
	clock.resume <- struct{}{}
	clock.next(t)
	if tok, err := a.Token(); tok != "tok-2" || err != nil {
		t.Errorf("Token after refresh = %q, %v; want tok-2", tok, err)
	}
	if n := es.tokenReqs.Load(); n != 2 {
		t.Errorf("token endpoint got %d requests, want 2", n)
	}
	for _, r := range es.requests() {
		if !strings.HasPrefix(r, "GET /"+testTenant+"/v2.0/.well-known/openid-configuration") && r != "POST /"+testTenant+"/oauth2/v2.0/token" {
			t.Errorf("unexpected request %s", r)
		}
	}
}

// TestAzureEndpointDown checks that a failing token endpoint leaves the
// current token in use until it expires, with jittered retries, and that
// Token then names the state without quoting the secret or a token.
func TestAzureEndpointDown(t *testing.T) {
	t.Parallel()
	es := newEntraServer(t)
	a, clock := startedAzure(t, es, entraJSON(t, testSecret))
	d := clock.next(t)
	es.failWith.Store(http.StatusUnauthorized)
	clock.advance(d) // 2880s: 720s of the token left

	var waits []time.Duration
	for range 3 {
		clock.resume <- struct{}{}
		waits = append(waits, clock.next(t))
		if tok, err := a.Token(); tok != "tok-1" || err != nil {
			t.Errorf("Token while the endpoint is down = %q, %v; want tok-1 until it expires", tok, err)
		}
	}
	if want := []time.Duration{750 * time.Millisecond, 1500 * time.Millisecond, 3 * time.Second}; fmt.Sprint(waits) != fmt.Sprint(want) {
		t.Errorf("retry waits %v, want %v", waits, want)
	}
	if n := es.tokenReqs.Load(); n != 4 {
		t.Errorf("token endpoint got %d requests, want 4 (no retries inside azidentity)", n)
	}

	clock.advance(711 * time.Second) // within the expiry margin
	tok, err := a.Token()
	if !errors.Is(err, ErrTokenExpired) || tok != "" {
		t.Fatalf("Token after expiry = %q, %v; want ErrTokenExpired", tok, err)
	}
	want := "azure credential: token expired and refresh failing (last refresh: the Entra ID endpoint answered 401 (invalid_client))"
	if err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	noSecrets(t, "Token error", err.Error(), testSecret, "AADSTS")

	es.failWith.Store(0)
	clock.resume <- struct{}{}
	clock.next(t)
	if tok, err := a.Token(); tok != "tok-2" || err != nil {
		t.Errorf("Token after recovery = %q, %v; want tok-2", tok, err)
	}
}

func TestAzureNoTokenYet(t *testing.T) {
	t.Parallel()
	es := newEntraServer(t)
	a, err := NewAzure(t.Context(), entraJSON(t, testSecret), es.srv.Client(), es.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Token(); !errors.Is(err, ErrNoToken) || !strings.Contains(err.Error(), "azure credential: no token yet (not refreshing") {
		t.Errorf("Token before Run = %v, want ErrNoToken saying Run is not running", err)
	}
	if n := len(es.requests()); n != 0 {
		t.Errorf("NewAzure made %d requests, want none", n)
	}

	// A secret Entra does not know.
	a2, clock := startedAzure(t, es, entraJSON(t, "wrong-secret-value"))
	clock.next(t)
	_, err = a2.Token()
	if !errors.Is(err, ErrNoToken) || !strings.Contains(err.Error(), "no token yet (last refresh: the Entra ID endpoint answered 401 (invalid_client))") {
		t.Errorf("Token with a wrong secret = %v, want ErrNoToken with invalid_client", err)
	}
	noSecrets(t, "Token error", err.Error(), "wrong-secret-value")
}

func TestAzureUnreachable(t *testing.T) {
	t.Parallel()
	es := newEntraServer(t)
	client := es.srv.Client()
	es.srv.Close()
	a, err := NewAzure(t.Context(), entraJSON(t, testSecret), client, es.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	clock := newStepClock()
	a.now, a.wait, a.jitter = clock.now, clock.wait, func() float64 { return 0.5 }
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() { _ = a.Run(ctx) }()
	clock.next(t)
	_, err = a.Token()
	if !errors.Is(err, ErrNoToken) || !strings.Contains(err.Error(), "the Entra ID endpoint is unreachable") {
		t.Errorf("Token = %v, want ErrNoToken, unreachable", err)
	}
	noSecrets(t, "Token error", err.Error(), testSecret)
}

func TestAzureBadAnswers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, body, want string
	}{
		{"no access token", `{"token_type":"Bearer","expires_in":3600}`, "answer is not a token"},
		{"about to expire", `{"token_type":"Bearer","access_token":"tok-x","expires_in":5}`, "about to expire"},
		{"not JSON", `tok-x`, "is not a token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			es := newEntraServer(t)
			es.answer.Store(&tt.body)
			a, clock := startedAzure(t, es, entraJSON(t, testSecret))
			clock.next(t)
			_, err := a.Token()
			if !errors.Is(err, ErrNoToken) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Token = %v, want ErrNoToken saying %q", err, tt.want)
			}
			noSecrets(t, "Token error", fmt.Sprint(err), testSecret)
		})
	}
}

func TestAzureRunTwice(t *testing.T) {
	t.Parallel()
	es := newEntraServer(t)
	a, clock := startedAzure(t, es, entraJSON(t, testSecret))
	clock.next(t)
	if err := a.Run(t.Context()); err == nil || !strings.Contains(err.Error(), "azure credential: Run is already running") {
		t.Errorf("a second Run = %v, want an error", err)
	}
}

// TestAzureBadCredential checks that refused credentials are named as
// such and that the error quotes none of their values.
func TestAzureBadCredential(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cred string
		want string
	}{
		{"not JSON", `{"tenantId": "t1", "clientSecret": "SECRET-1`, "not one JSON object"},
		{"array", `["SECRET-1"]`, "not one JSON object"},
		{"number field", `{"tenantId": "t1", "clientId": "c1", "clientSecret": 12345678}`, "not one JSON object"},
		{"misspelt field", `{"tenantId": "t1", "clientId": "c1", "clientSecret": "SECRET-1", "secret": "SECRET-2"}`, "not one JSON object"},
		{"two objects", `{"tenantId": "t1", "clientId": "c1", "clientSecret": "SECRET-1"} {}`, "not one JSON object"},
		{"no tenant", `{"clientId": "c1", "clientSecret": "SECRET-1"}`, "tenantId is missing"},
		{"no client", `{"tenantId": "t1", "clientSecret": "SECRET-1"}`, "clientId is missing"},
		{"no secret", `{"tenantId": "t1", "clientId": "c1"}`, "clientSecret is missing"},
		{"tenant with a slash", `{"tenantId": "t1/../SECRET-2", "clientId": "c1", "clientSecret": "SECRET-1"}`, "tenantId must be"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a, err := NewAzure(t.Context(), []byte(tt.cred), http.DefaultClient, "")
			if !errors.Is(err, ErrInvalidEntraCredential) || a != nil {
				t.Fatalf("NewAzure = %v, %v; want ErrInvalidEntraCredential", a, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
			noSecrets(t, "NewAzure error", err.Error(), "SECRET-1", "SECRET-2", "t1/")
		})
	}
}

func TestNewAzureChecks(t *testing.T) {
	t.Parallel()
	cred := entraJSON(t, testSecret)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := NewAzure(ctx, cred, http.DefaultClient, ""); !errors.Is(err, context.Canceled) {
		t.Errorf("NewAzure(canceled) = %v, want context.Canceled", err)
	}
	if _, err := NewAzure(t.Context(), cred, nil, ""); err == nil {
		t.Error("NewAzure(nil client) = nil error")
	}
	for _, host := range []string{"http://login.example.com/", "login.microsoftonline.com", "https://"} {
		if _, err := NewAzure(t.Context(), cred, http.DefaultClient, host); err == nil || !strings.Contains(err.Error(), "must be an https URL") {
			t.Errorf("NewAzure(authority %q) = %v, want an https error", host, err)
		}
	}
	a, err := NewAzure(t.Context(), []byte("\n  "+string(cred)+"\n"), http.DefaultClient, "")
	if err != nil {
		t.Fatal(err)
	}
	if a.authority != "https://login.microsoftonline.com/" {
		t.Errorf("default authority %q, want the public cloud's", a.authority)
	}
	domain := []byte(`{"tenantId": "contoso.onmicrosoft.com", "clientId": "c1", "clientSecret": "s"}`)
	if _, err := NewAzure(t.Context(), domain, http.DefaultClient, "https://login.microsoftonline.us/"); err != nil {
		t.Errorf("NewAzure(tenant domain, sovereign cloud) = %v", err)
	}
}

// TestAzurePrintsNoSecret checks every way an *Azure can be printed or
// logged.
func TestAzurePrintsNoSecret(t *testing.T) {
	t.Parallel()
	es := newEntraServer(t)
	a, clock := startedAzure(t, es, entraJSON(t, testSecret))
	clock.next(t)
	if _, err := a.Token(); err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("credential", "azure", a)
	printed := fmt.Sprintf("%v %+v %#v %s %q", a, a, a, a, a) + logged.String()
	if !strings.Contains(printed, testClientID) || !strings.Contains(printed, testTenant) {
		t.Errorf("printed form %q does not name the application and tenant", printed)
	}
	noSecrets(t, "printed form", printed, testSecret)
}

// TestKeeperAzure checks that the Keeper hands out one credential per
// provider while its configuration is unchanged, refreshes it once Run
// runs, and stops those replaced or no longer retained.
func TestKeeperAzure(t *testing.T) {
	t.Parallel()
	es := newEntraServer(t)
	k := NewKeeper(es.srv.Client(), nil).WithEntraAuthority(es.srv.URL)
	ctx := t.Context()
	cred := entraJSON(t, testSecret)
	a, err := k.Azure(ctx, "orgs/a/providers/az", cred)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Token(); !errors.Is(err, ErrNoToken) {
		t.Errorf("Token before the Keeper runs = %v, want ErrNoToken", err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- k.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Keeper.Run = %v", err)
		}
	})
	select {
	case <-a.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("no token within 10s of the Keeper running")
	}
	if tok, err := a.Token(); tok != "tok-1" || err != nil {
		t.Errorf("Token = %q, %v; want tok-1", tok, err)
	}

	if again, err := k.Azure(ctx, "orgs/a/providers/az", cred); again != a || err != nil {
		t.Errorf("Azure with the same credential = %v, %v; want the kept one", again, err)
	}
	other := entraJSON(t, testSecret+"2")
	b, err := k.Azure(ctx, "orgs/a/providers/az", other)
	if err != nil || b == a {
		t.Fatalf("Azure with a changed credential = %v, %v; want a new one", b, err)
	}
	stopped(t, a.refresher, "the replaced credential")
	running(t, b.refresher, "the new credential")
	select {
	case <-b.Ready():
		t.Error("the new credential got a token with a secret Entra does not know")
	case <-time.After(100 * time.Millisecond):
	}

	if _, err := k.Azure(ctx, "orgs/a/providers/bad", []byte(`{"tenantId": "t1"}`)); !errors.Is(err, ErrInvalidEntraCredential) {
		t.Errorf("Azure with a bad credential = %v, want ErrInvalidEntraCredential", err)
	}
	c, err := k.Azure(ctx, "orgs/a/providers/kept", cred)
	if err != nil {
		t.Fatal(err)
	}
	running(t, c.refresher, "the credential to retain")
	k.Retain(map[string]bool{"orgs/a/providers/kept": true})
	stopped(t, b.refresher, "the credential no longer retained")
	if !c.running.Load() {
		t.Error("the retained credential stopped refreshing")
	}
	if again, _ := k.Azure(ctx, "orgs/a/providers/az", other); again == b {
		t.Error("a credential Retain dropped was handed out again")
	}
}

// stopped waits until r's Run has returned.
func stopped(t *testing.T, r *refresher, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for r.running.Load() {
		if time.Now().After(deadline) {
			t.Fatalf("%s still refreshing after 10s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// running waits until r's Run is running.
func running(t *testing.T, r *refresher, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !r.running.Load() {
		if time.Now().After(deadline) {
			t.Fatalf("%s not refreshing after 10s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
