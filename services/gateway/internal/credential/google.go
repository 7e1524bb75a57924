// Package credential holds the gateway's upstream credentials that are
// obtained or refreshed over the network (Google service-account access
// tokens for Vertex AI, Microsoft Entra ID access tokens for Azure
// OpenAI, AWS keys for Bedrock), kept fresh in the background so that the
// request path only reads memory: GATEWAY.md allows no I/O before the
// upstream call beyond one limit-store round trip. No error or printed
// form of a credential holds a private key, a secret key or a token.
package credential

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	"golang.org/x/oauth2/jwt"
)

// GoogleScope is the OAuth scope the access tokens are asked for: Vertex
// AI accepts cloud-platform and no narrower one.
const GoogleScope = "https://www.googleapis.com/auth/cloud-platform"

// ErrInvalidKey is wrapped by every error NewGoogle returns for a key it
// refuses. Token's errors wrap ErrNoToken or ErrTokenExpired.
var ErrInvalidKey = errors.New("google credential: invalid service-account key")

// Google is a Google service account's access token, refreshed in the
// background by Run. Token is safe for concurrent use and does no I/O.
type Google struct {
	*refresher
	cfg    *jwt.Config
	email  string
	client *http.Client
}

// NewGoogle reads a service-account key (the JSON file Google issues) and
// returns its credential, without a token until Run gets one. The key
// must be of type service_account, with a client_email and an RSA
// private_key; its token_uri is where tokens come from (Google's default
// when absent), which must be https (plain http only to a loopback
// address, for tests and local fakes). Tokens are asked for GoogleScope
// through client, which should be the gateway's egress-checked client;
// NewGoogle itself does no I/O, and ctx only lets a caller give up before
// it starts. An error for a refused key wraps ErrInvalidKey and quotes
// nothing of the key.
func NewGoogle(ctx context.Context, keyJSON []byte, client *http.Client) (*Google, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("google credential: %w", err)
	}
	if client == nil {
		return nil, errors.New("google credential: an http.Client is required")
	}
	// Read with encoding/json, as x/oauth2/google does, so that the
	// checks below see the values it will use.
	var k struct {
		Type        string `json:"type"`
		ClientEmail string `json:"client_email"`
		PrivateKey  string `json:"private_key"`
		TokenURI    string `json:"token_uri"`
	}
	if err := json.Unmarshal(keyJSON, &k); err != nil {
		return nil, invalidKey("it is not a JSON object of strings")
	}
	switch {
	case k.Type != "service_account":
		return nil, invalidKey("its type is not service_account")
	case k.ClientEmail == "":
		return nil, invalidKey("client_email is missing")
	case k.PrivateKey == "":
		return nil, invalidKey("private_key is missing")
	}
	if err := checkPrivateKey(k.PrivateKey); err != nil {
		return nil, err
	}
	if k.TokenURI != "" {
		if err := checkTokenURI(k.TokenURI); err != nil {
			return nil, err
		}
	}
	cfg, err := google.JWTConfigFromJSON(keyJSON, GoogleScope)
	if err != nil {
		return nil, invalidKey("x/oauth2 cannot read it")
	}
	g := &Google{cfg: cfg, email: k.ClientEmail, client: client}
	g.refresher = newRefresher("google credential", g.fetch)
	return g, nil
}

func invalidKey(why string) error { return fmt.Errorf("%w: %s", ErrInvalidKey, why) }

// checkPrivateKey parses the key now, so that a broken one fails at
// start rather than at the first refresh. Errors name the problem only.
func checkPrivateKey(s string) error {
	block, _ := pem.Decode([]byte(s))
	if block == nil {
		return invalidKey("private_key is not PEM-encoded")
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		if _, err1 := x509.ParsePKCS1PrivateKey(block.Bytes); err1 != nil {
			return invalidKey("private_key is not a PKCS #8 or PKCS #1 key")
		}
		return nil
	}
	if _, ok := key.(*rsa.PrivateKey); !ok {
		return invalidKey("private_key is not an RSA key")
	}
	return nil
}

// checkTokenURI refuses a token endpoint that would get the signed
// assertion over plain http, except on the loopback interface.
func checkTokenURI(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil || u.Host == "":
		return invalidKey("token_uri is not an absolute URL")
	case u.Scheme == "https":
		return nil
	case u.Scheme == "http":
		if h := u.Hostname(); h == "localhost" || net.ParseIP(h).IsLoopback() {
			return nil
		}
	}
	return invalidKey("token_uri must be an https URL")
}

// String names the credential by its service account, so that printing
// or logging a *Google shows nothing secret.
func (g *Google) String() string { return "google service account " + g.email }

// GoString is String, for %#v.
func (g *Google) GoString() string { return g.String() }

// LogValue is String, for log/slog.
func (g *Google) LogValue() slog.Value { return slog.StringValue(g.String()) }

// Token returns the current access token. It does no I/O: the token is
// the one Run last obtained. Before the first one it returns an error
// wrapping ErrNoToken, and once the token is expired (or within seconds
// of it) one wrapping ErrTokenExpired; both say why the last refresh
// failed, if it did.
func (g *Google) Token() (string, error) { return g.token() }

// Ready is closed once Run has obtained the first token: the gateway can
// hold its readiness until then.
func (g *Google) Ready() <-chan struct{} { return g.ready }

// Run obtains a token at once and keeps it fresh until ctx is done,
// refreshing at 80 % of each token's lifetime and retrying failures with
// jittered exponential backoff (1 s doubling to 1 min); meanwhile Token
// keeps returning the previous token until it expires. Run returns nil
// when ctx is done, and an error only if it is already running.
func (g *Google) Run(ctx context.Context) error { return g.run(ctx) }

// fetch gets a token and its lifetime.
func (g *Google) fetch(ctx context.Context) (string, time.Duration, error) {
	// x/oauth2's JWT flow sends its request without a context; the
	// transport gives it ours, so that a hung endpoint or a shutdown
	// ends it.
	c, sendErr := withContext(g.client, ctx)
	tok, err := g.cfg.TokenSource(context.WithValue(ctx, oauth2.HTTPClient, c)).Token()
	if err != nil {
		return "", 0, describe(ctx, err, *sendErr)
	}
	if tok.AccessToken != "" && tok.Expiry.IsZero() {
		return "", 0, errors.New("the token endpoint answered without expires_in")
	}
	// The expiry is on the real clock.
	return tok.AccessToken, time.Until(tok.Expiry), nil
}

// describe says why a token request failed without quoting what could
// hold a secret: the endpoint's answer body (x/oauth2's RetrieveError
// prints it whole) is reduced to its OAuth error code. sendErr is the
// transport's error, if it failed: x/oauth2 flattens it into a string.
func describe(ctx context.Context, err, sendErr error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil {
		msg := "the token endpoint answered " + strconv.Itoa(re.Response.StatusCode)
		if code := oauthErrorCode(re.Body); code != "" {
			msg += " (" + code + ")"
		}
		return errors.New(msg)
	}
	if ctx.Err() != nil {
		return errors.New("the token request timed out")
	}
	if sendErr != nil {
		return errors.New("the token endpoint is unreachable: " + bound(sendErr.Error()))
	}
	return errors.New("the token endpoint's answer is not a token")
}

// oauthErrorCode reads the "error" member of an OAuth error answer
// (invalid_grant, unauthorized_client); anything but a short lowercase
// code is left out.
func oauthErrorCode(body []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil || len(e.Error) > 40 {
		return ""
	}
	for _, c := range e.Error {
		if (c < 'a' || c > 'z') && c != '_' {
			return ""
		}
	}
	return e.Error
}

func bound(s string) string {
	if len(s) > 200 {
		return strings.ToValidUTF8(s[:200], "") + "..."
	}
	return s
}

// withContext returns a copy of client whose requests are sent with ctx
// (the token libraries send theirs without one), keeping the error of a
// failed send in *sendErr, so that a hung endpoint or a shutdown ends the
// fetch and its failure is described in the gateway's words.
func withContext(client *http.Client, ctx context.Context) (c *http.Client, sendErr *error) {
	cp := *client
	base := cp.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	sendErr = new(error)
	cp.Transport = contextTransport{base: base, ctx: ctx, err: sendErr}
	return &cp, sendErr
}

// contextTransport sends every request with ctx and keeps the error of
// a failed one in *err.
type contextTransport struct {
	base http.RoundTripper
	ctx  context.Context
	err  *error
}

func (t contextTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(r.WithContext(t.ctx))
	if err != nil {
		*t.err = err
	}
	return resp, err
}
