//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	anthropic "github.com/anthropics/anthropic-sdk-go/v2"
	anthropicopt "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/openai/openai-go/v3"
)

// Both official SDKs reach both kinds of provider of the demo, one natively
// and one translated (the mock provider speaks OpenAI's format as "mock" and
// Anthropic's as "mock-anthropic"); every call lands in the ledger once, with
// the token counts its client was told.
func TestBothSDKsReachBothProviderKinds(t *testing.T) {
	tn := newTenant(t)
	org := "orgs/" + env(t, "MOAT_ORG")
	mustAdmin(t, http.MethodPost, "/api/v1/"+tn.project+"/routes?routeId=e2e-claude", map[string]any{
		"model": "e2e-claude", "provider": org + "/providers/mock-anthropic", "upstreamModel": "mock-model",
	}, nil)
	oc := tn.client(t)
	ac := anthropic.NewClient(anthropicopt.WithBaseURL(env(t, "E2E_GATEWAY_URL")), anthropicopt.WithAPIKey(tn.key), anthropicopt.WithMaxRetries(0))
	ctx := t.Context()
	eventually(t, 5*time.Second, func(ctx context.Context) error {
		_, err := oc.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "e2e-claude",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("ready?")}})
		return err
	})
	want := map[string]int{}
	for _, model := range []string{"e2e-model", "e2e-claude"} {
		stream := oc.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{Model: model,
			Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage("stream three words please")},
			StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}})
		var acc openai.ChatCompletionAccumulator
		for stream.Next() {
			acc.AddChunk(stream.Current())
		}
		if err := stream.Err(); err != nil || len(acc.Choices) == 0 || acc.Choices[0].Message.Content == "" {
			t.Fatalf("OpenAI SDK stream to %s: %v, %+v", model, err, acc.ChatCompletion)
		}
		want[fmt.Sprintf("%s %d/%d", model, acc.Usage.PromptTokens, acc.Usage.CompletionTokens)]++

		m, err := ac.Messages.New(ctx, anthropic.MessageNewParams{Model: model, MaxTokens: 64,
			Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("answer in Anthropic's format"))}})
		if err != nil || len(m.Content) == 0 || m.Content[0].Text == "" {
			t.Fatalf("Anthropic SDK to %s: %v, %+v", model, err, m)
		}
		want[fmt.Sprintf("%s %d/%d", model, m.Usage.InputTokens, m.Usage.OutputTokens)]++

		s := ac.Messages.NewStreaming(ctx, anthropic.MessageNewParams{Model: model, MaxTokens: 64,
			Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("and streamed"))}})
		var msg anthropic.Message
		for s.Next() {
			if err := msg.Accumulate(s.Current()); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Err(); err != nil || len(msg.Content) == 0 {
			t.Fatalf("Anthropic SDK stream to %s: %v", model, err)
		}
		want[fmt.Sprintf("%s %d/%d", model, msg.Usage.InputTokens, msg.Usage.OutputTokens)]++
	}
	var list struct {
		UsageEntries []usageEntry `json:"usageEntries"`
	}
	eventually(t, 10*time.Second, func(context.Context) error {
		if _, err := admin(t, http.MethodGet, "/api/v1/"+tn.project+"/usage?pageSize=100", nil, &list); err != nil {
			return err
		}
		if len(list.UsageEntries) < 7 { // the readiness call and six more
			return fmt.Errorf("%d ledger entries so far, want 7", len(list.UsageEntries))
		}
		return nil
	})
	got := map[string]int{}
	for _, e := range list.UsageEntries[:6] { // newest first: the readiness call is last
		got[fmt.Sprintf("%s %s/%s", e.Model, orZero(e.InputTokens), orZero(e.OutputTokens))]++
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("ledger has %d entries %q, want %d (all: %v)", got[k], k, n, got)
		}
	}

	// The gateway tests both providers through the admin API.
	for _, p := range []string{"mock", "mock-anthropic"} {
		var res struct {
			Success bool   `json:"success"`
			WireAPI string `json:"wireApi"`
			Message string `json:"message"`
		}
		if _, err := admin(t, http.MethodPost, "/api/v1/"+org+"/providers/"+p+":test", map[string]any{}, &res); err != nil || !res.Success {
			t.Errorf("TestProvider(%s) = %+v, %v; want success", p, res, err)
		}
	}
}

// orZero reads protojson's omitted zero counts.
func orZero(s string) string {
	if s == "" {
		return "0"
	}
	return s
}
