//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

// A platform admin signs in through the console client exactly as a
// browser would (authorization code with PKCE against the platform's
// Keycloak) and administers Moat through the gateway's admin API with the
// access token: each service verifies the token itself, and the admin's
// changes are audited under the user's subject. A tampered token is
// refused.
func TestSignedInAdminUsesTheAdminAPI(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	token, err := signIn(ctx, env(t, "MOAT_OIDC_ISSUER"), env(t, "MOAT_OIDC_CLIENT_ID"), env(t, "MOAT_OIDC_REDIRECT_URI"),
		env(t, "MOAT_ADMIN_USER"), env(t, "MOAT_ADMIN_PASSWORD"))
	if err != nil {
		t.Fatalf("sign in as %s: %v", env(t, "MOAT_ADMIN_USER"), err)
	}
	sub := tokenSubject(t, token)
	tampered := tamper(token)
	org := "orgs/" + env(t, "MOAT_ORG")

	// Reads owned by config (organizations) and billing (usage).
	for _, path := range []string{"/api/v1/orgs", "/api/v1/" + org + "/usage"} {
		if code, body := as(t, token, http.MethodGet, path, nil); code != http.StatusOK {
			t.Errorf("GET %s with the admin's access token = %d %s, want 200", path, code, body)
		}
		if code, body := as(t, tampered, http.MethodGet, path, nil); code != http.StatusUnauthorized {
			t.Errorf("GET %s with a tampered access token = %d %s, want 401", path, code, body)
		}
	}

	// A change made with the token is the user's in the audit log.
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	project := org + "/projects/oidc-" + hex.EncodeToString(b)
	path := "/api/v1/" + org + "/projects?projectId=" + strings.TrimPrefix(project, org+"/projects/")
	if code, body := as(t, token, http.MethodPost, path, map[string]any{"displayName": "created by a signed-in admin"}); code != http.StatusOK {
		t.Fatalf("POST %s with the admin's access token = %d %s, want 200", path, code, body)
	}
	eventually(t, 10*time.Second, func(context.Context) error {
		var page struct {
			AuditEvents []struct {
				Action, Target, Outcome, Actor string
			} `json:"auditEvents"`
		}
		code, body := as(t, token, http.MethodGet, "/api/v1/"+org+"/auditEvents?pageSize=1000", nil)
		if code != http.StatusOK {
			return fmt.Errorf("GET auditEvents = %d %s", code, body)
		}
		if err := json.Unmarshal(body, &page); err != nil {
			return fmt.Errorf("decode auditEvents: %w", err)
		}
		for _, e := range page.AuditEvents {
			if e.Action == "moat.config.v1.ConfigService.CreateProject" && e.Target == project {
				if e.Actor != "users/"+sub || e.Outcome != "OUTCOME_ALLOWED" {
					return fmt.Errorf("audit record %+v: want actor users/%s, outcome allowed", e, sub)
				}
				return nil
			}
		}
		return fmt.Errorf("no audit record of CreateProject %s among %d events", project, len(page.AuditEvents))
	})
}

// as calls the admin REST API through the gateway with bearer credential
// cred and returns the status and body.
func as(t *testing.T, cred, method, path string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, env(t, "E2E_GATEWAY_URL")+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+cred)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read the body: %v", method, path, err)
	}
	return resp.StatusCode, b
}

// tokenSubject reads the sub claim of an access token, without verifying
// it: the services did that.
func tokenSubject(t *testing.T, token string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("the access token has %d parts, want 3", len(parts))
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatalf("decode the access token's payload: %v", err)
	}
	var c struct {
		Sub string `json:"sub"`
	}
	if err := json.Unmarshal(payload, &c); err != nil || c.Sub == "" {
		t.Fatalf("the access token has no subject (%v)", err)
	}
	return c.Sub
}

// tamper changes one character in the middle of the token's signature.
func tamper(token string) string {
	b := []byte(token)
	i := len(b) - 20
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

var loginForm = regexp.MustCompile(`(?s)<form[^>]*id="kc-form-login"[^>]*action="([^"]+)"`)

// signIn runs the authorization-code flow with PKCE (S256) for the public
// client clientID as a browser does: it opens the authorization endpoint,
// fills in the login form, takes the code from the redirect to
// redirectURI (which is not followed: nothing needs to listen there) and
// exchanges it, with the verifier, for an access token.
func signIn(ctx context.Context, issuer, clientID, redirectURI, user, password string) (string, error) {
	jar, err := cookiejar.New(nil)
	if err != nil {
		return "", err
	}
	client := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	verifierBytes := make([]byte, 32)
	_, _ = rand.Read(verifierBytes)
	verifier := base64.RawURLEncoding.EncodeToString(verifierBytes)
	challenge := sha256.Sum256([]byte(verifier))
	stateBytes := make([]byte, 16)
	_, _ = rand.Read(stateBytes)
	state := hex.EncodeToString(stateBytes)

	q := url.Values{
		"client_id": {clientID}, "response_type": {"code"}, "scope": {"openid"}, "redirect_uri": {redirectURI}, "state": {state},
		"code_challenge": {base64.RawURLEncoding.EncodeToString(challenge[:])}, "code_challenge_method": {"S256"},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, issuer+"/protocol/openid-connect/auth?"+q.Encode(), nil)
	if err != nil {
		return "", fmt.Errorf("build the request: %w", err)
	}
	page, code, err := send(client, req)
	if err != nil {
		return "", err
	}
	m := loginForm.FindSubmatch(page)
	if code != http.StatusOK || m == nil {
		return "", fmt.Errorf("the authorization endpoint answered %d without a login form", code)
	}

	req, err = form(ctx, html.UnescapeString(string(m[1])), url.Values{"username": {user}, "password": {password}, "credentialId": {""}})
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("post the login form: %w", err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc.String(), redirectURI) {
		return "", fmt.Errorf("the login form answered %d without a redirect to the client", resp.StatusCode)
	}
	if loc.Query().Get("state") != state || loc.Query().Get("code") == "" {
		return "", errors.New("the redirect lacks the code or the state")
	}

	if req, err = form(ctx, issuer+"/protocol/openid-connect/token", url.Values{
		"grant_type": {"authorization_code"}, "client_id": {clientID}, "code": {loc.Query().Get("code")},
		"redirect_uri": {redirectURI}, "code_verifier": {verifier},
	}); err != nil {
		return "", err
	}
	body, code, err := send(client, req)
	if err != nil {
		return "", err
	}
	var tok struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
	}
	if code != http.StatusOK || json.Unmarshal(body, &tok) != nil || tok.AccessToken == "" || !strings.EqualFold(tok.TokenType, "bearer") {
		return "", fmt.Errorf("the code exchange answered %d without a bearer access token", code)
	}
	return tok.AccessToken, nil
}

// send makes req and returns the body and status.
func send(client *http.Client, req *http.Request) ([]byte, int, error) {
	resp, err := client.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, 0, fmt.Errorf("%s %s: read the body: %w", req.Method, req.URL.Path, err)
	}
	return b, resp.StatusCode, nil
}

func form(ctx context.Context, u string, values url.Values) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(values.Encode()))
	if err != nil {
		return nil, fmt.Errorf("build the request: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return req, nil
}
