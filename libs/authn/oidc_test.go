package authn_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/moat-ai/moat/libs/authn"
	identityv1 "github.com/moat-ai/moat/proto/gen/go/moat/identity/v1"
)

const audience = "moat"

// fakeIssuer is an OIDC issuer in process: discovery and a JWKS endpoint
// whose keys a test can rotate, and which it can take down.
type fakeIssuer struct {
	srv      *httptest.Server
	jwksHits atomic.Int64
	down     atomic.Bool

	mu        sync.Mutex
	keys      []jose.JSONWebKey
	claimedAs string        // the issuer discovery names; "" means the real one
	gate      chan struct{} // when set, JWKS responses wait for it to close
}

func newFakeIssuer(t *testing.T, keys ...signingKey) *fakeIssuer {
	t.Helper()
	f := &fakeIssuer{}
	f.setKeys(keys...)
	f.srv = httptest.NewServer(f)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeIssuer) url() string { return f.srv.URL }

func (f *fakeIssuer) setKeys(keys ...signingKey) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keys = f.keys[:0]
	for _, k := range keys {
		f.keys = append(f.keys, k.public())
	}
}

func (f *fakeIssuer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if f.down.Load() {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	f.mu.Lock()
	iss := f.claimedAs
	set := jose.JSONWebKeySet{Keys: append([]jose.JSONWebKey(nil), f.keys...)}
	gate := f.gate
	f.mu.Unlock()
	if iss == "" {
		iss = f.srv.URL
	}
	var body any
	switch r.URL.Path {
	case "/.well-known/openid-configuration":
		body = map[string]string{"issuer": iss, "jwks_uri": f.srv.URL + "/keys"}
	case "/keys":
		f.jwksHits.Add(1)
		if gate != nil {
			<-gate
		}
		body = set
	default:
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(body)
}

// signingKey is one of the issuer's keys, with its private half.
type signingKey struct {
	kid  string
	alg  jose.SignatureAlgorithm
	priv crypto.Signer
}

func rsaKey(t *testing.T, kid string, alg jose.SignatureAlgorithm) signingKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return signingKey{kid: kid, alg: alg, priv: k}
}

func ecKey(t *testing.T, kid string) signingKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signingKey{kid: kid, alg: jose.ES256, priv: k}
}

func (k signingKey) public() jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.priv.Public(), KeyID: k.kid, Algorithm: string(k.alg), Use: "sig"}
}

func (k signingKey) sign(t *testing.T, claims map[string]any) string {
	t.Helper()
	return signWith(t, jose.SigningKey{Algorithm: k.alg, Key: jose.JSONWebKey{Key: k.priv, KeyID: k.kid}}, &jose.SignerOptions{}, claims)
}

func signWith(t *testing.T, key jose.SigningKey, opts *jose.SignerOptions, claims map[string]any) string {
	t.Helper()
	s, err := jose.NewSigner(key, opts.WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// claimsAt are a valid token's claims for issuer at now; edit changes them.
func claimsAt(issuer string, now time.Time, edit func(map[string]any)) map[string]any {
	c := map[string]any{
		"iss":                issuer,
		"sub":                "alice",
		"aud":                []string{"account", audience},
		"exp":                now.Add(5 * time.Minute).Unix(),
		"iat":                now.Unix(),
		"nbf":                now.Unix(),
		"email":              "alice@example.com",
		"name":               "Alice Liddell",
		"preferred_username": "alice",
		"groups":             []string{"admins", "web"},
	}
	if edit != nil {
		edit(c)
	}
	return c
}

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now().Truncate(time.Second)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newVerifier(t *testing.T, f *fakeIssuer, cfg authn.TokenConfig) *authn.TokenVerifier {
	t.Helper()
	cfg.Issuer, cfg.HTTPClient = f.url(), f.srv.Client()
	if cfg.Audience == "" {
		cfg.Audience = audience
	}
	v, err := authn.NewTokenVerifier(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func b64(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// wantRejected fails unless err is a clean refusal: ErrUnauthenticated,
// and no trace of the token in the text.
func wantRejected(t *testing.T, name, token string, err error) {
	t.Helper()
	if !errors.Is(err, authn.ErrUnauthenticated) {
		t.Errorf("Verify(%s) = %v, want ErrUnauthenticated", name, err)
		return
	}
	for _, part := range append(strings.Split(token, "."), token) {
		if len(part) >= 8 && strings.Contains(err.Error(), part) {
			t.Errorf("Verify(%s): the error quotes the token: %v", name, err)
		}
	}
}

func TestNewTokenVerifier(t *testing.T) {
	t.Parallel()
	ok := authn.TokenConfig{Issuer: "https://sso.example.com/realms/moat", Audience: audience}
	tests := []struct {
		name    string
		edit    func(*authn.TokenConfig)
		wantErr bool
	}{
		{"defaults", func(*authn.TokenConfig) {}, false},
		{"pinned ES384 and EdDSA", func(c *authn.TokenConfig) { c.Algorithms = []string{"ES384", "EdDSA"} }, false},
		{"alg none", func(c *authn.TokenConfig) { c.Algorithms = []string{"RS256", "none"} }, true},
		{"HMAC", func(c *authn.TokenConfig) { c.Algorithms = []string{"HS256"} }, true},
		{"unknown algorithm", func(c *authn.TokenConfig) { c.Algorithms = []string{"RS1"} }, true},
		{"no issuer", func(c *authn.TokenConfig) { c.Issuer = "" }, true},
		{"issuer not a URL", func(c *authn.TokenConfig) { c.Issuer = "sso.example.com" }, true},
		{"no audience", func(c *authn.TokenConfig) { c.Audience = "" }, true},
		{"negative cooldown", func(c *authn.TokenConfig) { c.RefreshCooldown = -time.Second }, true},
		{"negative leeway", func(c *authn.TokenConfig) { c.Leeway = -time.Second }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := ok
			tt.edit(&cfg)
			v, err := authn.NewTokenVerifier(cfg, nil)
			if (err != nil) != tt.wantErr {
				t.Errorf("NewTokenVerifier() = %v, %v; want error %v", v, err, tt.wantErr)
			}
		})
	}
}

func TestTokenVerifierAccepts(t *testing.T) {
	t.Parallel()
	rs, es, ps := rsaKey(t, "rs", jose.RS256), ecKey(t, "es"), rsaKey(t, "ps", jose.PS256)
	f := newFakeIssuer(t, rs, es, ps)
	clk := newClock()
	v := newVerifier(t, f, authn.TokenConfig{Now: clk.Now})
	now := clk.Now()

	want := authn.TokenClaims{
		Subject: "alice", Email: "alice@example.com", Name: "Alice Liddell", PreferredUsername: "alice",
		Groups: []string{"admins", "web"}, Audience: []string{"account", audience}, Expiry: now.Add(5 * time.Minute),
	}
	tests := []struct {
		name  string
		token string
		want  authn.TokenClaims
	}{
		{"RS256", rs.sign(t, claimsAt(f.url(), now, nil)), want},
		{"ES256", es.sign(t, claimsAt(f.url(), now, nil)), want},
		{"PS256", ps.sign(t, claimsAt(f.url(), now, nil)), want},
		{"aud as a string, no optional claims", rs.sign(t, claimsAt(f.url(), now, func(c map[string]any) {
			c["aud"] = audience
			for _, k := range []string{"email", "name", "preferred_username", "groups", "nbf", "iat"} {
				delete(c, k)
			}
		})), authn.TokenClaims{Subject: "alice", Audience: []string{audience}, Expiry: now.Add(5 * time.Minute)}},
		{"expired within the leeway", rs.sign(t, claimsAt(f.url(), now, func(c map[string]any) {
			c["exp"] = now.Add(-10 * time.Second).Unix()
			c["iat"] = now.Add(-time.Hour).Unix()
			c["nbf"] = now.Add(10 * time.Second).Unix()
		})), func() authn.TokenClaims { w := want; w.Expiry = now.Add(-10 * time.Second); return w }()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := v.Verify(context.Background(), tt.token)
			if err != nil {
				t.Fatalf("Verify() = %v", err)
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.IgnoreFields(authn.TokenClaims{}, "Raw")); diff != "" {
				t.Errorf("claims mismatch (-want +got):\n%s", diff)
			}
			if got.Raw["sub"] != "alice" {
				t.Errorf("Raw[sub] = %v, want alice", got.Raw["sub"])
			}
		})
	}
}

func TestTokenVerifierRejects(t *testing.T) {
	t.Parallel()
	rs, es := rsaKey(t, "r1", jose.RS256), ecKey(t, "e1")
	f := newFakeIssuer(t, rs, es)
	clk := newClock()
	v := newVerifier(t, f, authn.TokenConfig{Now: clk.Now})
	now := clk.Now()
	valid := func(edit func(map[string]any)) map[string]any { return claimsAt(f.url(), now, edit) }
	good := rs.sign(t, valid(nil))
	if _, err := v.Verify(context.Background(), good); err != nil {
		t.Fatalf("Verify(valid token) = %v", err)
	}

	pubDER, err := x509.MarshalPKIXPublicKey(rs.priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	attacker := rsaKey(t, "r1", jose.RS256) // claims r1's kid
	parts := strings.Split(good, ".")
	flipped := []byte(parts[2])
	flipped[10] ^= 'A' ^ 'B'
	jsonSerialized := func() string {
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: rs.priv, KeyID: "r1"}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(valid(nil))
		if err != nil {
			t.Fatal(err)
		}
		jws, err := s.Sign(b)
		if err != nil {
			t.Fatal(err)
		}
		return jws.FullSerialize()
	}()

	tests := []struct {
		name  string
		token string
	}{
		{"wrong iss", rs.sign(t, valid(func(c map[string]any) { c["iss"] = "https://evil.example.com" }))},
		{"iss with a trailing slash", rs.sign(t, valid(func(c map[string]any) { c["iss"] = f.url() + "/" }))},
		{"wrong aud", rs.sign(t, valid(func(c map[string]any) { c["aud"] = "other-service" }))},
		{"missing aud", rs.sign(t, valid(func(c map[string]any) { delete(c, "aud") }))},
		{"expired", rs.sign(t, valid(func(c map[string]any) { c["exp"] = now.Add(-time.Minute).Unix() }))},
		{"missing exp", rs.sign(t, valid(func(c map[string]any) { delete(c, "exp") }))},
		{"exp not a number", rs.sign(t, valid(func(c map[string]any) { c["exp"] = "tomorrow" }))},
		{"nbf in the future", rs.sign(t, valid(func(c map[string]any) { c["nbf"] = now.Add(time.Minute).Unix() }))},
		{"iat in the future", rs.sign(t, valid(func(c map[string]any) { c["iat"] = now.Add(time.Minute).Unix() }))},
		{"missing sub", rs.sign(t, valid(func(c map[string]any) { delete(c, "sub") }))},
		{"alg none", b64(map[string]string{"alg": "none", "kid": "r1", "typ": "JWT"}) + "." + b64(valid(nil)) + "."},
		{"HS256 keyed with the RSA public key", signWith(t, jose.SigningKey{Algorithm: jose.HS256, Key: pubPEM},
			(&jose.SignerOptions{}).WithHeader("kid", "r1"), valid(nil))},
		{"HS256 keyed with the RSA public key DER", signWith(t, jose.SigningKey{Algorithm: jose.HS256, Key: pubDER},
			(&jose.SignerOptions{}).WithHeader("kid", "r1"), valid(nil))},
		{"PS256 under a key pinned to RS256", signingKey{kid: "r1", alg: jose.PS256, priv: rs.priv}.sign(t, valid(nil))},
		{"ES256 naming an RSA key", signingKey{kid: "r1", alg: jose.ES256, priv: es.priv}.sign(t, valid(nil))},
		{"RS384 (not pinned)", signingKey{kid: "r1", alg: jose.RS384, priv: rs.priv}.sign(t, valid(nil))},
		{"signed by another key under a known kid", attacker.sign(t, valid(nil))},
		{"attacker key embedded in the header", signWith(t, jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: attacker.priv, KeyID: "r1"}},
			(&jose.SignerOptions{EmbedJWK: true}).WithHeader("kid", "r1"), valid(nil))},
		{"unknown kid", rsaKey(t, "r9", jose.RS256).sign(t, valid(nil))},
		{"no kid", signWith(t, jose.SigningKey{Algorithm: jose.RS256, Key: rs.priv}, &jose.SignerOptions{}, valid(nil))},
		{"tampered payload", parts[0] + "." + b64(valid(func(c map[string]any) { c["sub"] = "mallory" })) + "." + parts[2]},
		{"tampered signature", parts[0] + "." + parts[1] + "." + string(flipped)},
		{"signature stripped", parts[0] + "." + parts[1] + "."},
		{"JWS JSON serialization", jsonSerialized},
		{"empty", ""},
		{"garbage", "garbage-that-is-not-a-token"},
		{"three garbage parts", "not-base64!.not-base64!.not-base64!"},
		{"header not JSON", b64("text") + "." + parts[1] + "." + parts[2]},
		{"oversized", rs.sign(t, valid(func(c map[string]any) { c["pad"] = strings.Repeat("x", 16<<10) }))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := v.Verify(context.Background(), tt.token)
			if err == nil {
				t.Fatalf("Verify() = %+v, want an error", got)
			}
			wantRejected(t, tt.name, tt.token, err)
		})
	}
}

func TestTokenVerifierRotation(t *testing.T) {
	t.Parallel()
	old, next := rsaKey(t, "2026-01", jose.RS256), ecKey(t, "2026-02")
	f := newFakeIssuer(t, old)
	clk := newClock()
	cooldown := 30 * time.Second
	v := newVerifier(t, f, authn.TokenConfig{Now: clk.Now, RefreshCooldown: cooldown})
	ctx := context.Background()
	verify := func(k signingKey) error {
		_, err := v.Verify(ctx, k.sign(t, claimsAt(f.url(), clk.Now(), nil)))
		return err
	}
	wantFetches := func(when string, n int64) {
		t.Helper()
		if v.Fetches() != n || f.jwksHits.Load() != n {
			t.Errorf("%s: %d refreshes, %d JWKS requests; want %d", when, v.Fetches(), f.jwksHits.Load(), n)
		}
	}

	if err := verify(old); err != nil {
		t.Fatalf("Verify(current key) = %v", err)
	}
	wantFetches("first use", 1)
	if err := verify(old); err != nil {
		t.Fatalf("Verify(current key, cached) = %v", err)
	}
	wantFetches("cached", 1)

	f.setKeys(next)
	clk.Advance(cooldown)
	if err := verify(next); err != nil {
		t.Fatalf("Verify(new key) = %v", err)
	}
	wantFetches("after rotation", 2)
	if err := verify(next); err != nil {
		t.Fatalf("Verify(new key, cached) = %v", err)
	}
	// The old key is gone from the set, and its kid does not buy another
	// refresh within the cooldown.
	wantRejected(t, "retired key", "", verify(old))
	wantFetches("retired key", 2)
}

func TestTokenVerifierFirstUseSharesOneFetch(t *testing.T) {
	t.Parallel()
	k := ecKey(t, "e1")
	f := newFakeIssuer(t, k)
	gate := make(chan struct{})
	f.mu.Lock()
	f.gate = gate
	f.mu.Unlock()
	clk := newClock()
	v := newVerifier(t, f, authn.TokenConfig{Now: clk.Now})
	token := k.sign(t, claimsAt(f.url(), clk.Now(), nil))

	const callers = 20
	var started, done sync.WaitGroup
	errs := make(chan error, callers)
	for range callers {
		started.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			started.Done()
			_, err := v.Verify(context.Background(), token)
			errs <- err
		}()
	}
	started.Wait()
	close(gate)
	done.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Verify() = %v", err)
		}
	}
	if v.Fetches() != 1 || f.jwksHits.Load() != 1 {
		t.Errorf("%d refreshes, %d JWKS requests; want 1", v.Fetches(), f.jwksHits.Load())
	}
}

// TestTokenVerifierFlood is RELIABILITY scenario 14's flood: forged key ids
// must not become requests to the issuer, and must not lock out real users.
func TestTokenVerifierFlood(t *testing.T) {
	t.Parallel()
	k := rsaKey(t, "r1", jose.RS256)
	f := newFakeIssuer(t, k)
	cooldown := 25 * time.Millisecond
	v := newVerifier(t, f, authn.TokenConfig{RefreshCooldown: cooldown})
	ctx := context.Background()
	good := k.sign(t, claimsAt(f.url(), time.Now(), nil))
	if _, err := v.Verify(ctx, good); err != nil {
		t.Fatalf("Verify(valid token) = %v", err)
	}

	const total, workers, everyNth = 10_000, 50, 100
	payload := b64(claimsAt(f.url(), time.Now(), nil))
	tokens := make([]string, total)
	for i := range tokens {
		if i%everyNth == 0 {
			tokens[i] = good
			continue
		}
		sig := make([]byte, 256)
		_, _ = rand.Read(sig)
		tokens[i] = b64(map[string]string{"alg": "RS256", "typ": "JWT", "kid": rand.Text()}) + "." + payload + "." +
			base64.RawURLEncoding.EncodeToString(sig)
	}

	hits0, fetches0 := f.jwksHits.Load(), v.Fetches()
	var accepted, rejected atomic.Int64
	next := atomic.Int64{}
	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < total; i = next.Add(1) - 1 {
				_, err := v.Verify(ctx, tokens[i])
				switch {
				case err == nil && i%everyNth == 0:
					accepted.Add(1)
				case errors.Is(err, authn.ErrUnauthenticated) && i%everyNth != 0:
					rejected.Add(1)
				default:
					t.Errorf("Verify(token %d) = %v", i, err)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)

	if accepted.Load() != total/everyNth || rejected.Load() != total-total/everyNth {
		t.Errorf("accepted %d, rejected %d; want %d and %d", accepted.Load(), rejected.Load(), total/everyNth, total-total/everyNth)
	}
	hits, fetches := f.jwksHits.Load()-hits0, v.Fetches()-fetches0
	limit := 1 + int64(elapsed/cooldown)
	if hits > limit || fetches > limit {
		t.Errorf("%d JWKS requests (%d refreshes) in %v with a %v cooldown, want at most %d", hits, fetches, elapsed, cooldown, limit)
	}
	t.Logf("%d tokens in %v: %d JWKS requests (limit %d)", total, elapsed, hits, limit)
}

func TestTokenVerifierIssuerDown(t *testing.T) {
	t.Parallel()
	cached, fresh := rsaKey(t, "cached", jose.RS256), ecKey(t, "fresh")
	f := newFakeIssuer(t, cached)
	clk := newClock()
	cooldown := 30 * time.Second
	v := newVerifier(t, f, authn.TokenConfig{Now: clk.Now, RefreshCooldown: cooldown})
	ctx := context.Background()
	verify := func(k signingKey) error {
		_, err := v.Verify(ctx, k.sign(t, claimsAt(f.url(), clk.Now(), nil)))
		return err
	}
	if err := verify(cached); err != nil {
		t.Fatalf("Verify() = %v", err)
	}

	f.setKeys(cached, fresh)
	f.down.Store(true)
	for range 3 {
		clk.Advance(cooldown)
		if err := verify(cached); err != nil {
			t.Errorf("Verify(cached key) while the issuer is down = %v", err)
		}
		wantRejected(t, "new key while the issuer is down", "", verify(fresh))
	}
	if got := v.Fetches(); got != 4 {
		t.Errorf("%d refreshes, want 4: one at first use, one per cooldown while down", got)
	}

	f.down.Store(false)
	if err := verify(fresh); err == nil {
		t.Error("Verify(new key) refreshed within the cooldown of a failed attempt")
	}
	clk.Advance(cooldown)
	if err := verify(fresh); err != nil {
		t.Errorf("Verify(new key) after the issuer is back = %v", err)
	}
	if err := verify(cached); err != nil {
		t.Errorf("Verify(cached key) after the issuer is back = %v", err)
	}
}

func TestTokenVerifierDiscovery(t *testing.T) {
	t.Parallel()
	k := ecKey(t, "e1")
	ctx := context.Background()

	t.Run("issuer down at first use, then back", func(t *testing.T) {
		t.Parallel()
		f := newFakeIssuer(t, k)
		f.down.Store(true)
		clk := newClock()
		v := newVerifier(t, f, authn.TokenConfig{Now: clk.Now, RefreshCooldown: time.Minute})
		token := k.sign(t, claimsAt(f.url(), clk.Now(), nil))
		wantRejected(t, "token while the issuer has never answered", token, func() error { _, err := v.Verify(ctx, token); return err }())
		f.down.Store(false)
		clk.Advance(time.Minute)
		if _, err := v.Verify(ctx, token); err != nil {
			t.Errorf("Verify() once the issuer is up = %v", err)
		}
		if v.Fetches() != 2 || f.jwksHits.Load() != 1 {
			t.Errorf("%d refreshes, %d JWKS requests; want 2 and 1", v.Fetches(), f.jwksHits.Load())
		}
	})

	t.Run("discovery names another issuer", func(t *testing.T) {
		t.Parallel()
		f := newFakeIssuer(t, k)
		f.mu.Lock()
		f.claimedAs = "https://evil.example.com"
		f.mu.Unlock()
		clk := newClock()
		v := newVerifier(t, f, authn.TokenConfig{Now: clk.Now})
		token := k.sign(t, claimsAt(f.url(), clk.Now(), nil))
		_, err := v.Verify(ctx, token)
		wantRejected(t, "token of a mismatched issuer", token, err)
		if f.jwksHits.Load() != 0 {
			t.Errorf("fetched the keys of a mismatched issuer %d times", f.jwksHits.Load())
		}
	})

	t.Run("caller gives up while the keys load", func(t *testing.T) {
		t.Parallel()
		f := newFakeIssuer(t, k)
		gate := make(chan struct{})
		f.mu.Lock()
		f.gate = gate
		f.mu.Unlock()
		defer close(gate)
		clk := newClock()
		v := newVerifier(t, f, authn.TokenConfig{Now: clk.Now})
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		_, err := v.Verify(cctx, k.sign(t, claimsAt(f.url(), clk.Now(), nil)))
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Verify(cancelled) = %v, want context.Canceled", err)
		}
	})
}

func TestInterceptorTokens(t *testing.T) {
	t.Parallel()
	k := ecKey(t, "e1")
	f := newFakeIssuer(t, k)
	clk := newClock()
	v := newVerifier(t, f, authn.TokenConfig{Now: clk.Now})
	h := hasher(t)
	ix := authn.NewIndex(h)
	apiKey := newKey(t)
	ix.Replace(1, []*identityv1.KeyIndexEntry{entry(h, "k1", apiKey, identityv1.KeyIndexEntry_ROLE_PLATFORM_ADMIN)},
		&identityv1.MembershipEntry{User: "users/alice", Organization: "orgs/org-a", Role: identityv1.OrgRole_ORG_ROLE_MEMBER},
		&identityv1.MembershipEntry{User: "users/carol", Organization: "orgs/org-a", Role: identityv1.OrgRole_ORG_ROLE_ADMIN})
	token := k.sign(t, claimsAt(f.url(), clk.Now(), nil))
	orgAdminToken := k.sign(t, claimsAt(f.url(), clk.Now(), func(c map[string]any) {
		c["sub"], c["preferred_username"] = "carol", "carol"
	}))
	adminToken := k.sign(t, claimsAt(f.url(), clk.Now(), func(c map[string]any) {
		c["sub"], c["preferred_username"] = "root", "root"
		c["groups"] = []string{"web", authn.PlatformAdminGroup}
	}))
	// A group whose name merely contains the admin group's is nobody's
	// admin, and neither is a group path (the mapper sends names).
	lookalike := k.sign(t, claimsAt(f.url(), clk.Now(), func(c map[string]any) {
		c["groups"] = []string{authn.PlatformAdminGroup + "-readers", "/" + authn.PlatformAdminGroup}
	}))
	expired := k.sign(t, claimsAt(f.url(), clk.Now(), func(c map[string]any) { c["exp"] = clk.Now().Add(-time.Hour).Unix() }))

	call := func(ic *authn.Interceptor, cred string) (authn.Principal, error) {
		ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+cred))
		var p authn.Principal
		_, err := ic.Unary()(ctx, nil, &grpc.UnaryServerInfo{FullMethod: identityv1.IdentityService_ListApiKeys_FullMethodName},
			func(ctx context.Context, _ any) (any, error) {
				p, _ = authn.FromContext(ctx)
				if err := authn.Require(ctx, "orgs/org-a/projects/p1", identityv1.OrgRole_ORG_ROLE_ADMIN); err != nil {
					return nil, status.Error(codes.PermissionDenied, "admins of org-a only")
				}
				return nil, nil
			})
		return p, err
	}
	withTokens := &authn.Interceptor{Auth: ix, Tokens: v}
	alice := authn.Principal{Subject: "users/alice", Kind: authn.KindUser, Username: "alice", Email: "alice@example.com",
		Roles: map[string]identityv1.OrgRole{"orgs/org-a": identityv1.OrgRole_ORG_ROLE_MEMBER}}
	keysOnly := &authn.Interceptor{Auth: ix}

	tests := []struct {
		name     string
		ic       *authn.Interceptor
		cred     string
		want     authn.Principal
		wantCode codes.Code
	}{
		{"access token: a member, not an admin", withTokens, token, alice, codes.PermissionDenied},
		{"access token of an org admin", withTokens, orgAdminToken,
			authn.Principal{Subject: "users/carol", Kind: authn.KindUser, Username: "carol", Email: "alice@example.com",
				Roles: map[string]identityv1.OrgRole{"orgs/org-a": identityv1.OrgRole_ORG_ROLE_ADMIN}}, codes.OK},
		{"access token of a platform-admins member", withTokens, adminToken,
			authn.Principal{Subject: "users/root", Kind: authn.KindUser, Username: "root", Email: "alice@example.com", Role: identityv1.KeyIndexEntry_ROLE_PLATFORM_ADMIN}, codes.OK},
		{"access token with look-alike groups", withTokens, lookalike, alice, codes.PermissionDenied},
		{"access token without memberships known", &authn.Interceptor{Auth: authn.NewIndex(h), Tokens: v}, orgAdminToken,
			authn.Principal{Subject: "users/carol", Kind: authn.KindUser, Username: "carol", Email: "alice@example.com"}, codes.PermissionDenied},
		{"API key beside tokens", withTokens, apiKey,
			authn.Principal{Subject: "keys/k1", Kind: authn.KindAPIKey, KeyID: "k1", Prefix: authn.DisplayPrefix(apiKey), Role: identityv1.KeyIndexEntry_ROLE_PLATFORM_ADMIN}, codes.OK},
		{"expired access token", withTokens, expired, authn.Principal{}, codes.Unauthenticated},
		{"unknown API key", withTokens, newKey(t), authn.Principal{}, codes.Unauthenticated},
		{"access token where only keys are accepted", keysOnly, token, authn.Principal{}, codes.Unauthenticated},
		{"API key where only keys are accepted", keysOnly, apiKey,
			authn.Principal{Subject: "keys/k1", Kind: authn.KindAPIKey, KeyID: "k1", Prefix: authn.DisplayPrefix(apiKey), Role: identityv1.KeyIndexEntry_ROLE_PLATFORM_ADMIN}, codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := call(tt.ic, tt.cred)
			if got := status.Code(err); got != tt.wantCode {
				t.Fatalf("code %v (%v), want %v", got, err, tt.wantCode)
			}
			if diff := cmp.Diff(tt.want, p); diff != "" {
				t.Errorf("principal mismatch (-want +got):\n%s", diff)
			}
			if p.IsUser() != (tt.want.Kind == authn.KindUser) {
				t.Errorf("IsUser() = %v", p.IsUser())
			}
			if err != nil && strings.Contains(status.Convert(err).Message(), tt.cred) {
				t.Error("the error quotes the credential")
			}
		})
	}
}
