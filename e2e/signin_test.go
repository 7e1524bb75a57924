//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/moat-ai/moat/libs/keycloaktest"
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
	token, err := keycloaktest.SignIn(ctx, env(t, "MOAT_OIDC_ISSUER"), env(t, "MOAT_OIDC_CLIENT_ID"), env(t, "MOAT_OIDC_REDIRECT_URI"),
		env(t, "MOAT_ADMIN_USER"), env(t, "MOAT_ADMIN_PASSWORD"), nil)
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
