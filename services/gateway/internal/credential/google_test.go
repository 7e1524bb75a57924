package credential

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// rsaKey is the test service account's key, made once: RSA key
// generation is slow under -race.
var rsaKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

var otherKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

const testEmail = "moat-test@project-1.iam.gserviceaccount.com"

func pemOf(t testing.TB, key any) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// keyJSON is a service-account key file as Google issues it, with its
// token_uri pointing at tokenURI.
func keyJSON(t testing.TB, key any, tokenURI string) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]string{
		"type":                        "service_account",
		"project_id":                  "project-1",
		"private_key_id":              "kid-1",
		"private_key":                 pemOf(t, key),
		"client_email":                testEmail,
		"client_id":                   "1234567890",
		"auth_uri":                    "https://accounts.google.com/o/oauth2/auth",
		"token_uri":                   tokenURI,
		"auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
		"universe_domain":             "googleapis.com",
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// tokenServer is a fake Google token endpoint. It verifies the JWT
// bearer assertion as Google does (RS256 signature by the service
// account's public key, issuer, audience, scope, lifetime) and answers
// tok-1, tok-2, ... valid for expiresIn seconds, or status when failing.
type tokenServer struct {
	t         *testing.T
	srv       *httptest.Server
	path      string
	pub       *rsa.PublicKey
	expiresIn atomic.Int64
	failWith  atomic.Int64 // an HTTP status, 0 to answer tokens
	issued    atomic.Int64
	requests  atomic.Int64
}

func newTokenServer(t *testing.T, pub *rsa.PublicKey) *tokenServer {
	t.Helper()
	ts := &tokenServer{t: t, path: "/custom/oauth2/token", pub: pub}
	ts.expiresIn.Store(3600)
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+ts.path, ts.serve)
	ts.srv = httptest.NewTLSServer(mux)
	t.Cleanup(ts.srv.Close)
	return ts
}

func (ts *tokenServer) uri() string { return ts.srv.URL + ts.path }

func (ts *tokenServer) serve(w http.ResponseWriter, r *http.Request) {
	ts.requests.Add(1)
	if s := ts.failWith.Load(); s != 0 {
		http.Error(w, `{"error":"backend_error","error_description":"tok-secret-looking text"}`, int(s))
		return
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, `{"error":"invalid_request"}`, http.StatusBadRequest)
		return
	}
	if g := r.PostForm.Get("grant_type"); g != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		http.Error(w, `{"error":"unsupported_grant_type"}`, http.StatusBadRequest)
		return
	}
	if err := ts.verify(r.PostForm.Get("assertion")); err != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"error":"invalid_grant","error_description":%q}`, err.Error())
		return
	}
	n := ts.issued.Add(1)
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"access_token":"tok-%d","expires_in":%d,"token_type":"Bearer"}`, n, ts.expiresIn.Load())
}

// verify checks a JWT bearer assertion with the standard library only.
func (ts *tokenServer) verify(assertion string) error {
	parts := strings.Split(assertion, ".")
	if len(parts) != 3 {
		return errors.New("not a JWT")
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return errors.New("signature encoding")
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(ts.pub, crypto.SHA256, digest[:], sig); err != nil {
		return errors.New("Invalid JWT Signature.")
	}
	var header struct {
		Alg, Typ, Kid string
	}
	var claims struct {
		Iss, Scope, Aud string
		Iat, Exp        int64
	}
	for i, v := range []any{&header, &claims} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			return errors.New("segment encoding")
		}
		if err := json.Unmarshal(b, v); err != nil {
			return errors.New("segment JSON")
		}
	}
	now := time.Now().Unix()
	switch {
	case header.Alg != "RS256" || header.Kid != "kid-1":
		return fmt.Errorf("header %+v", header)
	case claims.Iss != testEmail:
		return fmt.Errorf("iss %q", claims.Iss)
	case claims.Aud != ts.uri():
		return fmt.Errorf("aud %q, want the token_uri", claims.Aud)
	case claims.Scope != GoogleScope:
		return fmt.Errorf("scope %q", claims.Scope)
	case claims.Iat > now+60 || claims.Exp <= now || claims.Exp-claims.Iat > 3600:
		return fmt.Errorf("lifetime iat %d exp %d", claims.Iat, claims.Exp)
	}
	return nil
}

// stepClock is the refresher's clock, driven by the test: each wait of
// Run is handed to the test on waits and lasts until the test resumes it
// (after moving the clock as it likes).
type stepClock struct {
	mu     sync.Mutex
	t      time.Time
	waits  chan time.Duration
	resume chan struct{}
}

func newStepClock() *stepClock {
	return &stepClock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), waits: make(chan time.Duration), resume: make(chan struct{})}
}

func (c *stepClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *stepClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func (c *stepClock) wait(ctx context.Context, d time.Duration) error {
	select {
	case c.waits <- d:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-c.resume:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// next returns Run's next wait, failing the test if it takes too long.
func (c *stepClock) next(t *testing.T) time.Duration {
	t.Helper()
	select {
	case d := <-c.waits:
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not wait within 10s")
		return 0
	}
}

// started is a Google driven by a stepClock, with Run going; stop ends
// Run and checks it returned nil.
func started(t *testing.T, key []byte, client *http.Client) (*Google, *stepClock) {
	t.Helper()
	g, err := NewGoogle(t.Context(), key, client)
	if err != nil {
		t.Fatal(err)
	}
	clock := newStepClock()
	g.now, g.wait, g.jitter = clock.now, clock.wait, func() float64 { return 0.5 }
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v, want nil after cancel", err)
		}
	})
	return g, clock
}

// noSecrets fails the test if s holds the private key, a token or
// another secret-looking value.
func noSecrets(t *testing.T, what, s string, secrets ...string) {
	t.Helper()
	for _, x := range append(secrets, "PRIVATE KEY", "tok-", "MII") {
		if x != "" && strings.Contains(s, x) {
			t.Errorf("%s %q holds %q", what, s, x)
		}
	}
}

func TestGoogleRefresh(t *testing.T) {
	t.Parallel()
	ts := newTokenServer(t, &rsaKey().PublicKey)
	g, clock := started(t, keyJSON(t, rsaKey(), ts.uri()), ts.srv.Client())

	d := clock.next(t)
	if d < 2879*time.Second || d > 2880*time.Second {
		t.Errorf("first refresh in %v, want 80%% of 3600s", d)
	}
	select {
	case <-g.Ready():
	default:
		t.Error("Ready not closed after the first token")
	}
	if tok, err := g.Token(); tok != "tok-1" || err != nil {
		t.Errorf("Token = %q, %v; want tok-1", tok, err)
	}
	clock.advance(d)
	if tok, err := g.Token(); tok != "tok-1" || err != nil {
		t.Errorf("Token at the refresh time = %q, %v; want tok-1 still", tok, err)
	}
	clock.resume <- struct{}{}
	clock.next(t)
	if tok, err := g.Token(); tok != "tok-2" || err != nil {
		t.Errorf("Token after refresh = %q, %v; want tok-2", tok, err)
	}
	if n := ts.requests.Load(); n != 2 {
		t.Errorf("token endpoint got %d requests, want 2 (token_uri honoured)", n)
	}
}

// TestGoogleEndpointDown checks that a failing token endpoint leaves the
// current token in use until it expires, with jittered retries, and that
// Token then names the state without quoting a secret.
func TestGoogleEndpointDown(t *testing.T) {
	t.Parallel()
	ts := newTokenServer(t, &rsaKey().PublicKey)
	key := keyJSON(t, rsaKey(), ts.uri())
	g, clock := started(t, key, ts.srv.Client())
	d := clock.next(t)
	ts.failWith.Store(http.StatusServiceUnavailable)
	clock.advance(d) // 2880s: 720s of the token left

	var waits []time.Duration
	for range 3 {
		clock.resume <- struct{}{}
		waits = append(waits, clock.next(t))
		if tok, err := g.Token(); tok != "tok-1" || err != nil {
			t.Errorf("Token while the endpoint is down = %q, %v; want tok-1 until it expires", tok, err)
		}
	}
	// Jitter 0.5 draws the middle of each backoff's upper half.
	if want := []time.Duration{750 * time.Millisecond, 1500 * time.Millisecond, 3 * time.Second}; fmt.Sprint(waits) != fmt.Sprint(want) {
		t.Errorf("retry waits %v, want %v", waits, want)
	}

	clock.advance(711 * time.Second) // within the expiry margin
	tok, err := g.Token()
	if !errors.Is(err, ErrTokenExpired) || tok != "" {
		t.Fatalf("Token after expiry = %q, %v; want ErrTokenExpired", tok, err)
	}
	if msg := err.Error(); !strings.Contains(msg, "token expired and refresh failing") || !strings.Contains(msg, "503 (backend_error)") {
		t.Errorf("error %q does not say the state and the cause", msg)
	}
	noSecrets(t, "Token error", err.Error(), "tok-secret-looking")

	ts.failWith.Store(0)
	clock.resume <- struct{}{}
	clock.next(t)
	if tok, err := g.Token(); tok != "tok-2" || err != nil {
		t.Errorf("Token after recovery = %q, %v; want tok-2", tok, err)
	}
}

func TestGoogleNoTokenYet(t *testing.T) {
	t.Parallel()
	ts := newTokenServer(t, &rsaKey().PublicKey)
	key := keyJSON(t, rsaKey(), ts.uri())
	g, err := NewGoogle(t.Context(), key, ts.srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Token(); !errors.Is(err, ErrNoToken) || !strings.Contains(err.Error(), "no token yet (not refreshing") {
		t.Errorf("Token before Run = %v, want ErrNoToken saying Run is not running", err)
	}

	// A key the endpoint does not know: its signature does not verify.
	ts2 := newTokenServer(t, &otherKey().PublicKey)
	g2, clock := started(t, keyJSON(t, rsaKey(), ts2.uri()), ts2.srv.Client())
	clock.next(t)
	_, err = g2.Token()
	if !errors.Is(err, ErrNoToken) || !strings.Contains(err.Error(), "no token yet (last refresh: the token endpoint answered 400 (invalid_grant))") {
		t.Errorf("Token with an unverifiable key = %v, want ErrNoToken with invalid_grant", err)
	}
	if ts2.issued.Load() != 0 {
		t.Error("the fake endpoint issued a token for a bad signature")
	}
	noSecrets(t, "Token error", err.Error(), "Invalid JWT Signature")
}

func TestGoogleUnreachable(t *testing.T) {
	t.Parallel()
	ts := newTokenServer(t, &rsaKey().PublicKey)
	uri := ts.uri()
	ts.srv.Close()
	g, clock := started(t, keyJSON(t, rsaKey(), uri), ts.srv.Client())
	clock.next(t)
	_, err := g.Token()
	if !errors.Is(err, ErrNoToken) || !strings.Contains(err.Error(), "the token endpoint is unreachable") {
		t.Errorf("Token = %v, want ErrNoToken, unreachable", err)
	}
}

func TestGoogleBadAnswers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, body, want string
	}{
		{"no access token", `{"expires_in":3600}`, "without an access_token"},
		{"no expiry", `{"access_token":"tok-x"}`, "without expires_in"},
		{"about to expire", `{"access_token":"tok-x","expires_in":5}`, "about to expire"},
		{"not JSON", `tok-x`, "is not a token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprint(w, tt.body)
			}))
			t.Cleanup(srv.Close)
			g, clock := started(t, keyJSON(t, rsaKey(), srv.URL+"/token"), srv.Client())
			clock.next(t)
			_, err := g.Token()
			if !errors.Is(err, ErrNoToken) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Token = %v, want ErrNoToken saying %q", err, tt.want)
			}
			noSecrets(t, "Token error", fmt.Sprint(err))
		})
	}
}

func TestGoogleRunTwice(t *testing.T) {
	t.Parallel()
	ts := newTokenServer(t, &rsaKey().PublicKey)
	g, clock := started(t, keyJSON(t, rsaKey(), ts.uri()), ts.srv.Client())
	clock.next(t)
	if err := g.Run(t.Context()); err == nil {
		t.Error("a second Run = nil, want an error")
	}
}

// TestGoogleBadKey checks that refused keys are named as such and that
// the error quotes none of the key's values.
func TestGoogleBadKey(t *testing.T) {
	t.Parallel()
	good := map[string]string{}
	if err := json.Unmarshal(keyJSON(t, rsaKey(), "https://oauth2.googleapis.com/token"), &good); err != nil {
		t.Fatal(err)
	}
	with := func(k, v string) []byte {
		m := map[string]string{}
		for a, b := range good {
			m[a] = b
		}
		if v == "" {
			delete(m, k)
		} else {
			m[k] = v
		}
		b, _ := json.Marshal(m)
		return b
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		key  []byte
		want string
	}{
		{"not JSON", []byte(`{"private_key":"-----BEGIN PRIVATE KEY-----MIIsecret`), "not a JSON object"},
		{"user credentials", []byte(`{"type":"authorized_user","client_id":"cid-secret","client_secret":"cs-secret","refresh_token":"rt-secret"}`), "type is not service_account"},
		{"type in another case", with("type", "Service_Account"), "type is not service_account"},
		{"no email", with("client_email", ""), "client_email is missing"},
		{"no private key", with("private_key", ""), "private_key is missing"},
		{"key not PEM", with("private_key", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"), "not PEM-encoded"},
		{"key garbage", with("private_key", "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"), "not a PKCS #8 or PKCS #1 key"},
		{"EC key", with("private_key", pemOf(t, ec)), "not an RSA key"},
		{"http token_uri", with("token_uri", "http://tokens.example.com/token"), "token_uri must be an https URL"},
		{"relative token_uri", with("token_uri", "/token"), "token_uri is not an absolute URL"},
		{"number field", []byte(`{"type":"service_account","client_email":7}`), "not a JSON object of strings"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g, err := NewGoogle(t.Context(), tt.key, http.DefaultClient)
			if !errors.Is(err, ErrInvalidKey) || g != nil {
				t.Fatalf("NewGoogle = %v, %v; want ErrInvalidKey", g, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
			var values map[string]any
			_ = json.Unmarshal(tt.key, &values)
			var secrets []string
			for k, v := range values {
				if s, ok := v.(string); ok && len(s) >= 8 && k != "type" {
					secrets = append(secrets, s)
				}
			}
			noSecrets(t, "NewGoogle error", err.Error(), append(secrets, "cs-secret", "MIIsecret", "authorized_user", "Service_Account", "example.com")...)
		})
	}
}

func TestNewGoogleChecks(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	key := keyJSON(t, rsaKey(), "https://oauth2.googleapis.com/token")
	if _, err := NewGoogle(ctx, key, http.DefaultClient); !errors.Is(err, context.Canceled) {
		t.Errorf("NewGoogle(canceled) = %v, want context.Canceled", err)
	}
	if _, err := NewGoogle(t.Context(), key, nil); err == nil {
		t.Error("NewGoogle(nil client) = nil error")
	}
	for _, uri := range []string{"https://oauth2.googleapis.com/token", "http://127.0.0.1:8080/token", "http://[::1]/token", "http://localhost/token", ""} {
		if _, err := NewGoogle(t.Context(), keyJSON(t, rsaKey(), uri), http.DefaultClient); err != nil {
			t.Errorf("NewGoogle(token_uri %q) = %v", uri, err)
		}
	}
	// PKCS #1 keys, as older key files hold, are accepted too.
	var m map[string]string
	_ = json.Unmarshal(key, &m)
	m["private_key"] = string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey())}))
	pkcs1, _ := json.Marshal(m)
	if _, err := NewGoogle(t.Context(), pkcs1, http.DefaultClient); err != nil {
		t.Errorf("NewGoogle(PKCS #1 key) = %v", err)
	}
}

// TestGooglePrintsNoSecret checks every way a *Google can be printed or
// logged.
func TestGooglePrintsNoSecret(t *testing.T) {
	t.Parallel()
	ts := newTokenServer(t, &rsaKey().PublicKey)
	g, clock := started(t, keyJSON(t, rsaKey(), ts.uri()), ts.srv.Client())
	clock.next(t)
	if _, err := g.Token(); err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("credential", "google", g)
	printed := fmt.Sprintf("%v %+v %#v %s %q", g, g, g, g, g) + logged.String()
	if !strings.Contains(printed, testEmail) {
		t.Errorf("printed form %q does not name the service account", printed)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(rsaKey())
	noSecrets(t, "printed form", printed, base64.StdEncoding.EncodeToString(der)[:40])
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	r := &refresher{jitter: func() float64 { return 0.999 }}
	var prev time.Duration
	for n := 1; n <= 100; n++ {
		d := r.backoff(n)
		if d < prev || d > retryMax {
			t.Errorf("backoff(%d) = %v after %v, want growing to at most %v", n, d, prev, retryMax)
		}
		prev = d
	}
	r.jitter = func() float64 { return 0 }
	if d := r.backoff(1); d != retryBase/2 {
		t.Errorf("backoff(1) with no jitter = %v, want %v", d, retryBase/2)
	}
}

func TestSleep(t *testing.T) {
	t.Parallel()
	if err := sleep(t.Context(), time.Millisecond); err != nil {
		t.Errorf("sleep = %v, want nil", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Errorf("sleep(canceled) = %v, want context.Canceled", err)
	}
}
