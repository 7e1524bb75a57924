package authn

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

const (
	// maxTokenBytes bounds the work an unauthenticated caller can cause:
	// real access tokens are a few KiB, and nothing larger is parsed.
	maxTokenBytes = 16 << 10
	// maxDocumentBytes bounds the discovery document and the key set.
	maxDocumentBytes = 1 << 20
	// fetchTimeout bounds one refresh (discovery and key set), so a hung
	// issuer cannot hold the callers that wait for it.
	fetchTimeout = 10 * time.Second
)

// DefaultAlgorithms are the signature algorithms a TokenVerifier accepts
// when TokenConfig.Algorithms is empty.
var DefaultAlgorithms = []string{"RS256", "ES256", "PS256"}

// asymmetric lists every algorithm a TokenVerifier may be configured with.
// "none" and the HMAC family are absent on purpose: with a public key set,
// accepting them lets anyone forge a token (RFC 8725, section 2.1).
var asymmetric = map[jose.SignatureAlgorithm]bool{
	jose.RS256: true, jose.RS384: true, jose.RS512: true,
	jose.PS256: true, jose.PS384: true, jose.PS512: true,
	jose.ES256: true, jose.ES384: true, jose.ES512: true,
	jose.EdDSA: true,
}

// TokenConfig says which OIDC access tokens a TokenVerifier accepts.
type TokenConfig struct {
	// Issuer is the issuer URL, exactly as it appears in the tokens' iss
	// claim and in the discovery document.
	Issuer string
	// Audience must be one of a token's aud values.
	Audience string
	// Algorithms pins the accepted signature algorithms; empty means
	// DefaultAlgorithms. "none" and HMAC algorithms are refused.
	Algorithms []string
	// RefreshCooldown is the least time between two fetches of the
	// issuer's keys, however many unknown key ids show up; 0 means 30s.
	RefreshCooldown time.Duration
	// HTTPClient fetches discovery and keys; nil means a client with a
	// 10s timeout.
	HTTPClient *http.Client
	// Now is the clock for both the claim checks and the cooldown; nil
	// means time.Now.
	Now func() time.Time
	// Leeway is the clock skew allowed on exp, nbf and iat; 0 means 30s.
	Leeway time.Duration
}

// TokenClaims is what a verified access token says about its subject.
type TokenClaims struct {
	Subject           string
	Email             string
	Name              string
	PreferredUsername string
	Groups            []string
	Audience          []string
	Expiry            time.Time
	// Raw holds every claim of the payload, as encoding/json decodes it.
	Raw map[string]any
}

// Verifier checks an OIDC access token; *TokenVerifier is one.
type Verifier interface {
	Verify(ctx context.Context, raw string) (TokenClaims, error)
}

// TokenVerifier verifies OIDC access tokens (signed JWTs) against an
// issuer's published keys. It finds the keys through discovery on first
// use and keeps them in memory: tokens signed with a cached key verify
// without any network call, so an issuer outage only affects tokens signed
// with keys it has not seen. An unknown key id triggers a refresh, at most
// one per RefreshCooldown, shared by all concurrent callers, so a flood of
// forged key ids cannot turn into a flood of requests to the issuer.
// It is safe for concurrent use.
type TokenVerifier struct {
	issuer   string
	audience string
	algs     []jose.SignatureAlgorithm
	cooldown time.Duration
	leeway   time.Duration
	client   *http.Client
	now      func() time.Time
	log      *slog.Logger

	keys    atomic.Pointer[keySet]
	fetches atomic.Int64

	mu          sync.Mutex
	lastAttempt time.Time    // start of the last fetch; guarded by mu
	inflight    *fetchCall   // the fetch under way, if any; guarded by mu
	jwksURI     atomic.Value // string: from discovery, empty until then
}

// keySet is an immutable snapshot of the issuer's signing keys by kid.
type keySet struct {
	byKID map[string][]jose.JSONWebKey
}

type fetchCall struct {
	done chan struct{}
	err  error // set before done is closed
}

// NewTokenVerifier checks cfg and returns a verifier for it. It does not
// contact the issuer: discovery happens on the first Verify, so a service
// can start while its issuer is down. log may be nil.
func NewTokenVerifier(cfg TokenConfig, log *slog.Logger) (*TokenVerifier, error) {
	var errs []error
	u, err := url.Parse(cfg.Issuer)
	if cfg.Issuer == "" || err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		errs = append(errs, errors.New("oidc issuer must be an http(s) URL"))
	}
	if cfg.Audience == "" {
		errs = append(errs, errors.New("oidc audience is required"))
	}
	names := cfg.Algorithms
	if len(names) == 0 {
		names = DefaultAlgorithms
	}
	algs := make([]jose.SignatureAlgorithm, 0, len(names))
	for _, n := range names {
		a := jose.SignatureAlgorithm(n)
		if !asymmetric[a] {
			errs = append(errs, fmt.Errorf("oidc algorithm %q is not allowed: use an asymmetric one (RS*, PS*, ES*, EdDSA)", n))
			continue
		}
		algs = append(algs, a)
	}
	if cfg.RefreshCooldown < 0 || cfg.Leeway < 0 {
		errs = append(errs, errors.New("oidc refresh cooldown and leeway must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	v := &TokenVerifier{
		issuer:   cfg.Issuer,
		audience: cfg.Audience,
		algs:     algs,
		cooldown: cmpOr(cfg.RefreshCooldown, 30*time.Second),
		leeway:   cmpOr(cfg.Leeway, 30*time.Second),
		client:   cfg.HTTPClient,
		now:      cfg.Now,
		log:      log,
	}
	if v.client == nil {
		v.client = &http.Client{Timeout: fetchTimeout}
	}
	if v.now == nil {
		v.now = time.Now
	}
	if v.log == nil {
		v.log = slog.New(slog.DiscardHandler)
	}
	v.keys.Store(&keySet{})
	v.jwksURI.Store("")
	return v, nil
}

func cmpOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// Fetches is the number of key refreshes attempted so far (each is at
// most one discovery request and one key-set request), failed ones
// included.
func (v *TokenVerifier) Fetches() int64 { return v.fetches.Load() }

// reject is the error of every refused token. Its text names the reason
// in fixed words and never quotes the token or anything taken from it.
func reject(reason string) error {
	return fmt.Errorf("access token %s: %w", reason, ErrUnauthenticated)
}

// Verify checks raw, a compact JWS, and returns its claims. Every refusal
// wraps ErrUnauthenticated; the only other error is ctx's, when ctx ends
// while Verify waits for the issuer's keys.
func (v *TokenVerifier) Verify(ctx context.Context, raw string) (TokenClaims, error) {
	if raw == "" || len(raw) > maxTokenBytes {
		return TokenClaims{}, reject("missing or too large")
	}
	sig, err := jose.ParseSignedCompact(raw, v.algs)
	if err != nil {
		var algErr *jose.ErrUnexpectedSignatureAlgorithm
		if errors.As(err, &algErr) {
			return TokenClaims{}, reject("uses an algorithm that is not allowed")
		}
		return TokenClaims{}, reject("is malformed")
	}
	if len(sig.Signatures) != 1 {
		return TokenClaims{}, reject("is malformed")
	}
	hdr := sig.Signatures[0].Protected
	if hdr.KeyID == "" {
		return TokenClaims{}, reject("has no key id")
	}
	alg := jose.SignatureAlgorithm(hdr.Algorithm)

	key, known := v.key(hdr.KeyID, alg)
	if !known {
		if err := v.refresh(ctx); err != nil && ctx.Err() != nil {
			return TokenClaims{}, fmt.Errorf("wait for the issuer's keys: %w", ctx.Err())
		}
		// Look again whatever refresh said: a fetch that finished while
		// this call was held back by the cooldown may have the key.
		key, known = v.key(hdr.KeyID, alg)
	}
	if !known {
		return TokenClaims{}, reject("is signed with an unknown key")
	}
	if key == nil {
		return TokenClaims{}, reject("names a key that does not fit its algorithm")
	}
	payload, err := sig.Verify(key)
	if err != nil {
		return TokenClaims{}, reject("has an invalid signature")
	}
	return v.claims(payload)
}

// claims checks the verified payload.
func (v *TokenVerifier) claims(payload []byte) (TokenClaims, error) {
	var c jwt.Claims
	var raw map[string]any
	if json.Unmarshal(payload, &c) != nil || json.Unmarshal(payload, &raw) != nil {
		return TokenClaims{}, reject("has malformed claims")
	}
	now := v.now()
	switch {
	case c.Issuer != v.issuer:
		return TokenClaims{}, reject("is from another issuer")
	case len(c.Audience) == 0:
		return TokenClaims{}, reject("has no audience")
	case !c.Audience.Contains(v.audience):
		return TokenClaims{}, reject("is for another audience")
	case c.Expiry == nil:
		return TokenClaims{}, reject("has no expiry")
	case now.Add(-v.leeway).After(c.Expiry.Time()):
		return TokenClaims{}, reject("has expired")
	case c.NotBefore != nil && now.Add(v.leeway).Before(c.NotBefore.Time()):
		return TokenClaims{}, reject("is not valid yet")
	case c.IssuedAt != nil && now.Add(v.leeway).Before(c.IssuedAt.Time()):
		return TokenClaims{}, reject("was issued in the future")
	case c.Subject == "":
		return TokenClaims{}, reject("has no subject")
	}
	str := func(name string) string { s, _ := raw[name].(string); return s }
	var groups []string
	if gs, ok := raw["groups"].([]any); ok {
		for _, g := range gs {
			if s, ok := g.(string); ok {
				groups = append(groups, s)
			}
		}
	}
	return TokenClaims{
		Subject:           c.Subject,
		Email:             str("email"),
		Name:              str("name"),
		PreferredUsername: str("preferred_username"),
		Groups:            groups,
		Audience:          []string(c.Audience),
		Expiry:            c.Expiry.Time(),
		Raw:               raw,
	}, nil
}

// key finds the cached key kid for alg. known reports whether the issuer
// publishes kid at all; the key is nil when none under kid fits alg.
func (v *TokenVerifier) key(kid string, alg jose.SignatureAlgorithm) (key *jose.JSONWebKey, known bool) {
	cands, ok := v.keys.Load().byKID[kid]
	if !ok {
		return nil, false
	}
	for i := range cands {
		if fits(&cands[i], alg) {
			return &cands[i], true
		}
	}
	return nil, true
}

// fits reports whether k may check a signature made with alg: a signing
// key, pinned to alg if the issuer pinned it, of the type alg needs.
// go-jose checks the type too; checking here first keeps a mismatched
// key from ever reaching a verifier.
func fits(k *jose.JSONWebKey, alg jose.SignatureAlgorithm) bool {
	if k.Use != "" && k.Use != "sig" {
		return false
	}
	if k.Algorithm != "" && k.Algorithm != string(alg) {
		return false
	}
	switch pub := k.Key.(type) {
	case *rsa.PublicKey:
		switch alg {
		case jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512:
			return true
		}
	case *ecdsa.PublicKey:
		switch alg {
		case jose.ES256:
			return pub.Curve == elliptic.P256()
		case jose.ES384:
			return pub.Curve == elliptic.P384()
		case jose.ES512:
			return pub.Curve == elliptic.P521()
		}
	case ed25519.PublicKey:
		return alg == jose.EdDSA
	}
	return false
}

// refresh fetches the issuer's keys unless a fetch started less than a
// cooldown ago. Concurrent callers share the fetch under way. It returns
// once that fetch is done or ctx ends.
func (v *TokenVerifier) refresh(ctx context.Context) error {
	v.mu.Lock()
	call := v.inflight
	if call == nil {
		now := v.now()
		if !v.lastAttempt.IsZero() && now.Sub(v.lastAttempt) < v.cooldown {
			v.mu.Unlock()
			return errors.New("key refresh is cooling down")
		}
		v.lastAttempt = now
		call = &fetchCall{done: make(chan struct{})}
		v.inflight = call
		v.fetches.Add(1)
		// The fetch outlives the caller that started it: others wait on
		// it, and one caller giving up must not fail them all.
		go v.fetch(context.WithoutCancel(ctx), call)
	}
	v.mu.Unlock()
	select {
	case <-call.done:
		return call.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (v *TokenVerifier) fetch(ctx context.Context, call *fetchCall) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	set, err := v.load(ctx)
	if err != nil {
		// Cached keys stay in force: an issuer outage must not sign
		// everybody out.
		v.log.WarnContext(ctx, "oidc key refresh failed; keeping the cached keys", "issuer", v.issuer, "err", err)
	} else {
		v.keys.Store(set)
		v.log.InfoContext(ctx, "oidc keys refreshed", "issuer", v.issuer, "keys", len(set.byKID))
	}
	v.mu.Lock()
	v.inflight = nil
	v.mu.Unlock()
	call.err = err
	close(call.done)
}

// load runs discovery if needed and fetches the key set.
func (v *TokenVerifier) load(ctx context.Context) (*keySet, error) {
	uri, _ := v.jwksURI.Load().(string)
	if uri == "" {
		var err error
		if uri, err = v.discover(ctx); err != nil {
			return nil, err
		}
		v.jwksURI.Store(uri)
	}
	set, err := v.fetchKeys(ctx, uri)
	if err != nil {
		// The issuer may have moved its keys: discover again next time.
		v.jwksURI.Store("")
		return nil, err
	}
	return set, nil
}

func (v *TokenVerifier) discover(ctx context.Context) (string, error) {
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := v.getJSON(ctx, strings.TrimSuffix(v.issuer, "/")+"/.well-known/openid-configuration", &doc); err != nil {
		return "", fmt.Errorf("oidc discovery: %w", err)
	}
	if doc.Issuer != v.issuer {
		return "", errors.New("oidc discovery: the document names another issuer")
	}
	u, err := url.Parse(doc.JWKSURI)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "", errors.New("oidc discovery: jwks_uri is not an http(s) URL")
	}
	return doc.JWKSURI, nil
}

// fetchKeys reads a JWKS and keeps its public signing keys. Keys it cannot
// use (unknown types, encryption keys, symmetric or private material) are
// skipped rather than failing the set, since issuers publish such keys
// beside their signing keys.
func (v *TokenVerifier) fetchKeys(ctx context.Context, uri string) (*keySet, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := v.getJSON(ctx, uri, &doc); err != nil {
		return nil, fmt.Errorf("oidc key set: %w", err)
	}
	set := &keySet{byKID: map[string][]jose.JSONWebKey{}}
	for _, raw := range doc.Keys {
		var k jose.JSONWebKey
		if json.Unmarshal(raw, &k) != nil || !k.Valid() || !k.IsPublic() || k.KeyID == "" || (k.Use != "" && k.Use != "sig") {
			continue
		}
		set.byKID[k.KeyID] = append(set.byKID[k.KeyID], k)
	}
	if len(set.byKID) == 0 {
		// Most likely a broken response; keeping the old keys is safer
		// than signing everybody out.
		return nil, errors.New("oidc key set: no usable signing key")
	}
	return set, nil
}

func (v *TokenVerifier) getJSON(ctx context.Context, uri string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := v.client.Do(req)
	if err != nil {
		return fmt.Errorf("get %s: %w", uri, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("get %s: status %d", uri, resp.StatusCode)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxDocumentBytes)).Decode(out); err != nil {
		return fmt.Errorf("decode %s: %w", uri, err)
	}
	return nil
}
