//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// admin calls the admin REST API through the gateway's front door with the
// platform-admin key, and decodes the JSON answer into out (when not nil).
func admin(t *testing.T, method, path string, body, out any) (int, error) {
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
	req.Header.Set("Authorization", "Bearer "+env(t, "MOAT_ADMIN_KEY"))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("decode %s %s: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

func mustAdmin(t *testing.T, method, path string, body, out any) {
	t.Helper()
	if _, err := admin(t, method, path, body, out); err != nil {
		t.Fatal(err)
	}
}

// tenant is a project of the demo organization made for one test, so that
// its usage and keys are its own: org demo, the demo's mock provider, and
// one route "e2e-model".
type tenant struct {
	project string // orgs/demo/projects/{id}
	key     string
	keyName string
}

func newTenant(t *testing.T) tenant {
	t.Helper()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	id := "e2e-" + hex.EncodeToString(b)
	org := "orgs/" + env(t, "MOAT_ORG")
	mustAdmin(t, http.MethodPost, "/api/v1/"+org+"/projects?projectId="+id, map[string]any{"displayName": "e2e " + id}, nil)
	project := org + "/projects/" + id
	mustAdmin(t, http.MethodPost, "/api/v1/"+project+"/routes?routeId=e2e-model", map[string]any{
		"model": "e2e-model", "provider": org + "/providers/mock", "upstreamModel": "mock-model",
	}, nil)
	var created struct {
		Key    string `json:"key"`
		APIKey struct {
			Name string `json:"name"`
		} `json:"apiKey"`
	}
	mustAdmin(t, http.MethodPost, "/api/v1/"+project+"/keys", map[string]any{"displayName": "e2e"}, &created)
	if !strings.HasPrefix(created.Key, "moat_") || created.APIKey.Name == "" {
		t.Fatalf("created key: name %q, key prefix %q", created.APIKey.Name, created.Key[:min(5, len(created.Key))])
	}
	tn := tenant{project: project, key: created.Key, keyName: created.APIKey.Name}
	// Configuration and keys reach the gateway through its snapshots: wait
	// until this key sees its route.
	client := tn.client(t)
	eventually(t, 5*time.Second, func(ctx context.Context) error {
		page, err := client.Models.List(ctx)
		if err != nil {
			return err
		}
		for _, m := range page.Data {
			if m.ID == "e2e-model" {
				return nil
			}
		}
		return errors.New("e2e-model not listed yet")
	})
	return tn
}

func (tn tenant) client(t *testing.T) openai.Client {
	t.Helper()
	return openai.NewClient(option.WithBaseURL(env(t, "MOAT_BASE_URL")), option.WithAPIKey(tn.key), option.WithMaxRetries(0))
}

type usageEntry struct {
	Name         string `json:"name"`
	Model        string `json:"model"`
	InputTokens  string `json:"inputTokens"` // int64 is a JSON string in protojson
	OutputTokens string `json:"outputTokens"`
	Priced       bool   `json:"priced"`
	CostMicros   string `json:"costMicros"`
}

// The official OpenAI SDK talks to the gateway unchanged, streaming and not;
// each request becomes exactly one ledger entry with the token counts the
// client was told.
func TestChatThroughTheGatewayLandsInTheLedger(t *testing.T) {
	tn := newTenant(t)
	client := tn.client(t)
	ctx := t.Context()

	resp, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    "e2e-model",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hello to the ledger.")},
	})
	if err != nil {
		t.Fatalf("chat completion: %v", err)
	}
	if len(resp.Choices) == 0 || resp.Choices[0].Message.Content == "" || resp.Usage.TotalTokens == 0 {
		t.Fatalf("chat completion: %d choices, usage %+v", len(resp.Choices), resp.Usage)
	}

	stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model:         "e2e-model",
		Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Now stream, please.")},
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	})
	var acc openai.ChatCompletionAccumulator
	chunks := 0
	for stream.Next() {
		acc.AddChunk(stream.Current())
		chunks++
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("streaming chat completion: %v", err)
	}
	if chunks < 2 || acc.Choices[0].Message.Content == "" || acc.Usage.TotalTokens == 0 {
		t.Fatalf("stream: %d chunks, content %q, usage %+v", chunks, acc.Choices[0].Message.Content, acc.Usage)
	}

	want := map[string]bool{
		fmt.Sprintf("%d/%d", resp.Usage.PromptTokens, resp.Usage.CompletionTokens): true,
		fmt.Sprintf("%d/%d", acc.Usage.PromptTokens, acc.Usage.CompletionTokens):   true,
	}
	var list struct {
		UsageEntries []usageEntry `json:"usageEntries"`
	}
	eventually(t, 10*time.Second, func(context.Context) error {
		if _, err := admin(t, http.MethodGet, "/api/v1/"+tn.project+"/usage", nil, &list); err != nil {
			return err
		}
		if len(list.UsageEntries) < 2 {
			return fmt.Errorf("%d ledger entries so far, want 2", len(list.UsageEntries))
		}
		return nil
	})
	if len(list.UsageEntries) != 2 {
		t.Fatalf("ledger has %d entries for the project, want exactly 2: %+v", len(list.UsageEntries), list.UsageEntries)
	}
	for _, e := range list.UsageEntries {
		got := e.InputTokens + "/" + e.OutputTokens
		if !want[got] {
			t.Errorf("ledger entry %s has tokens %s, want one of %v", e.Name, got, want)
		}
		if e.Model != "e2e-model" || !e.Priced || e.CostMicros == "" || e.CostMicros == "0" {
			t.Errorf("ledger entry %+v: want model e2e-model, priced, with a cost", e)
		}
	}
	// The entries stay exactly two: nothing is recorded twice later.
	time.Sleep(time.Second) // a quiet period: a duplicate would arrive late
	mustAdmin(t, http.MethodGet, "/api/v1/"+tn.project+"/usage", nil, &list)
	if len(list.UsageEntries) != 2 {
		t.Errorf("after a second, the ledger has %d entries, want 2", len(list.UsageEntries))
	}
}

// Creating a project through the REST API leaves its audit record.
func TestProjectCreationIsAudited(t *testing.T) {
	tn := newTenant(t)
	org := "orgs/" + env(t, "MOAT_ORG")
	type auditEvent struct {
		Action  string `json:"action"`
		Target  string `json:"target"`
		Outcome string `json:"outcome"`
		Actor   string `json:"actor"`
	}
	eventually(t, 10*time.Second, func(context.Context) error {
		var page struct {
			AuditEvents []auditEvent `json:"auditEvents"`
		}
		if _, err := admin(t, http.MethodGet, "/api/v1/"+org+"/auditEvents?pageSize=1000", nil, &page); err != nil {
			return err
		}
		for _, e := range page.AuditEvents {
			if e.Action == "moat.config.v1.ConfigService.CreateProject" && e.Target == tn.project {
				if e.Outcome != "OUTCOME_ALLOWED" || !strings.HasPrefix(e.Actor, "keys/") {
					return fmt.Errorf("audit record %+v: want outcome allowed and a key as actor", e)
				}
				return nil
			}
		}
		return fmt.Errorf("no audit record of CreateProject %s among %d events", tn.project, len(page.AuditEvents))
	})
}

// A revoked key is refused by the gateway within one second of the revoke
// call returning.
func TestRevokedKeyIsRefusedWithinOneSecond(t *testing.T) {
	tn := newTenant(t)
	client := tn.client(t)
	ctx := t.Context()
	if _, err := client.Models.List(ctx); err != nil {
		t.Fatalf("the key works before revocation: %v", err)
	}
	mustAdmin(t, http.MethodPost, "/api/v1/"+tn.keyName+":revoke", map[string]any{}, nil)
	revoked := time.Now()
	for {
		_, err := client.Models.List(ctx)
		var apiErr *openai.Error
		if errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusUnauthorized {
			break
		}
		if time.Since(revoked) > time.Second {
			t.Fatalf("the revoked key still works %v after the revoke call (last: %v)", time.Since(revoked), err)
		}
		time.Sleep(5 * time.Millisecond) // a fine fixed step: this loop is the measurement
	}
	t.Logf("revocation in force on the gateway %v after the revoke call returned", time.Since(revoked).Round(10*time.Microsecond))
}

// An unknown model is a 404 with the OpenAI error code model_not_found.
func TestUnknownModelIsNotFound(t *testing.T) {
	tn := newTenant(t)
	client := tn.client(t)
	_, err := client.Chat.Completions.New(t.Context(), openai.ChatCompletionNewParams{
		Model:    "no-such-model",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello")},
	})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusNotFound || apiErr.Code != "model_not_found" {
		t.Fatalf("unknown model: %v, want 404 model_not_found", err)
	}
}

// keyClient is an OpenAI client calling with key.
func keyClient(t *testing.T, key string) openai.Client {
	t.Helper()
	return openai.NewClient(option.WithBaseURL(env(t, "MOAT_BASE_URL")), option.WithAPIKey(key), option.WithMaxRetries(0))
}

// chat sends a short chat request for model and returns the API error, if any.
func chat(ctx context.Context, client openai.Client, model string) error {
	_, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    model,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello")},
	})
	return err
}

// listsModels reports whether client's /v1/models lists model.
func listsModels(ctx context.Context, client openai.Client, model string) (bool, error) {
	page, err := client.Models.List(ctx)
	if err != nil {
		return false, err
	}
	for _, m := range page.Data {
		if m.ID == model {
			return true, nil
		}
	}
	return false, nil
}

// A key created with allowed models calls those and gets 403
// model_not_allowed for the project's other routes, which its model list
// leaves out.
func TestAllowedModelsRestrictAKey(t *testing.T) {
	tn := newTenant(t)
	org := "orgs/" + env(t, "MOAT_ORG")
	mustAdmin(t, http.MethodPost, "/api/v1/"+tn.project+"/routes?routeId=e2e-other", map[string]any{
		"model": "e2e-other", "provider": org + "/providers/mock", "upstreamModel": "mock-model",
	}, nil)
	var created struct {
		Key    string `json:"key"`
		APIKey struct {
			AllowedModels []string `json:"allowedModels"`
		} `json:"apiKey"`
	}
	mustAdmin(t, http.MethodPost, "/api/v1/"+tn.project+"/keys", map[string]any{"displayName": "scoped", "allowedModels": []string{"e2e-model"}}, &created)
	if len(created.APIKey.AllowedModels) != 1 || created.APIKey.AllowedModels[0] != "e2e-model" {
		t.Fatalf("created key's allowed models = %q, want [e2e-model]", created.APIKey.AllowedModels)
	}
	scoped, open := keyClient(t, created.Key), tn.client(t)
	// Wait for the new route (seen by the tenant's unscoped key) and the new key.
	eventually(t, 5*time.Second, func(ctx context.Context) error {
		if ok, err := listsModels(ctx, open, "e2e-other"); err != nil || !ok {
			return errors.Join(errors.New("e2e-other not listed yet"), err)
		}
		if ok, err := listsModels(ctx, scoped, "e2e-model"); err != nil || !ok {
			return errors.Join(errors.New("the scoped key does not list e2e-model yet"), err)
		}
		return nil
	})
	if ok, err := listsModels(t.Context(), scoped, "e2e-other"); err != nil || ok {
		t.Errorf("the scoped key lists e2e-other (%v): want it left out", err)
	}
	if err := chat(t.Context(), scoped, "e2e-model"); err != nil {
		t.Errorf("scoped key, allowed model: %v", err)
	}
	err := chat(t.Context(), scoped, "e2e-other")
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusForbidden || apiErr.Code != "model_not_allowed" {
		t.Errorf("scoped key, other model: %v, want 403 model_not_allowed", err)
	}
	if err := chat(t.Context(), open, "e2e-other"); err != nil {
		t.Errorf("unscoped key, other model: %v", err)
	}
}

// A rotated key keeps working for its grace period next to its successor,
// and is refused once the grace period ends.
func TestRotatedKeyWorksForItsGracePeriod(t *testing.T) {
	tn := newTenant(t)
	oldClient := tn.client(t)
	var rotated struct {
		Key       string `json:"key"`
		NewAPIKey struct {
			Name string `json:"name"`
		} `json:"newApiKey"`
		OldAPIKey struct {
			Name       string `json:"name"`
			ExpireTime string `json:"expireTime"`
		} `json:"oldApiKey"`
	}
	mustAdmin(t, http.MethodPost, "/api/v1/"+tn.keyName+":rotate", map[string]any{"gracePeriod": "2s"}, &rotated)
	start := time.Now()
	if !strings.HasPrefix(rotated.Key, "moat_") || rotated.NewAPIKey.Name == "" || rotated.OldAPIKey.Name != tn.keyName || rotated.OldAPIKey.ExpireTime == "" {
		t.Fatalf("rotation: new key %q, old key %q expiring %q", rotated.NewAPIKey.Name, rotated.OldAPIKey.Name, rotated.OldAPIKey.ExpireTime)
	}
	newClient := keyClient(t, rotated.Key)
	if err := chat(t.Context(), oldClient, "e2e-model"); err != nil {
		t.Errorf("the old key right after the rotation: %v", err)
	}
	eventually(t, time.Second, func(ctx context.Context) error { return chat(ctx, newClient, "e2e-model") })
	for {
		_, err := oldClient.Models.List(t.Context())
		var apiErr *openai.Error
		if errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusUnauthorized {
			break
		}
		if time.Since(start) > 3*time.Second {
			t.Fatalf("the old key still works %v after a rotation with 2s grace (last: %v)", time.Since(start), err)
		}
		time.Sleep(20 * time.Millisecond) // a fine fixed step: this loop is the measurement
	}
	if time.Since(start) < 1500*time.Millisecond {
		t.Errorf("the old key was refused %v after the rotation, before its 2s grace period ended", time.Since(start))
	}
	if err := chat(t.Context(), newClient, "e2e-model"); err != nil {
		t.Errorf("the new key after the grace period: %v", err)
	}
}
