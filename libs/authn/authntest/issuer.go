package authntest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Audience is the audience Issuer's tokens carry by default: the default of
// MOAT_OIDC_AUDIENCE.
const Audience = "moat"

// Issuer is a fake OIDC issuer: a discovery document and a key set served
// over HTTP on a loopback port, and one ES256 key it signs access tokens
// with. Point MOAT_OIDC_ISSUER at URL. It is safe for concurrent use.
type Issuer struct {
	srv *httptest.Server
	key *ecdsa.PrivateKey
	kid string
}

// NewIssuer starts an Issuer that serves until the test ends.
func NewIssuer(t testing.TB) *Issuer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("issuer key: %v", err)
	}
	i := &Issuer{key: key, kid: "test-key-1"}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, map[string]string{"issuer": i.URL(), "jwks_uri": i.URL() + "/keys"})
	})
	mux.HandleFunc("GET /keys", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &i.key.PublicKey, KeyID: i.kid, Algorithm: string(jose.ES256), Use: "sig"}}})
	})
	i.srv = httptest.NewServer(mux)
	t.Cleanup(i.srv.Close)
	return i
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// URL is the issuer URL, as tokens name it in iss.
func (i *Issuer) URL() string { return i.srv.URL }

// Claims returns the claims of a valid access token for the user sub: this
// issuer, audience Audience, issued now, expiring in five minutes, with
// preferred_username sub, email sub@example.com and groups (none when
// groups is empty; PlatformAdminGroup makes an admin). Change the map
// before Token for other cases.
func (i *Issuer) Claims(sub string, groups ...string) map[string]any {
	now := time.Now()
	c := map[string]any{
		"iss":                i.URL(),
		"sub":                sub,
		"aud":                []string{"account", Audience},
		"iat":                now.Unix(),
		"exp":                now.Add(5 * time.Minute).Unix(),
		"preferred_username": sub,
		"email":              sub + "@example.com",
	}
	if len(groups) > 0 {
		c["groups"] = groups
	}
	return c
}

// Token signs claims with the issuer's key, as a compact JWS.
func (i *Issuer) Token(t testing.TB, claims map[string]any) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: i.key, KeyID: i.kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatalf("signer: %v", err)
	}
	tok, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatalf("sign token: %v", err)
	}
	return tok
}
