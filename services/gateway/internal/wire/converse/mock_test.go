package converse

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-ai/moat/libs/providertest"
	"github.com/moat-ai/moat/services/gateway/internal/ir"
)

// The tests below run this package against the mock Bedrock the
// gateway's tests call (libs/providertest), in process through its
// http.Handler, so that both sides of the wire agree.

// mockCall sends body to the mock's Converse endpoint with the behaviour
// headers given and returns the recorded answer.
func mockCall(t *testing.T, stream bool, body []byte, headers map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	srv := providertest.New(providertest.Config{Chunks: 3})
	path := "/model/anthropic.claude-sonnet-4-5-v1%3A0/converse"
	if stream {
		path += "-stream"
	}
	req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	srv.ServeHTTP(rec, req)
	return rec
}

// mockRequest is a request with a tool whose name Bedrock refuses.
func mockRequest() *ir.Request {
	return &ir.Request{
		System:    []ir.Block{{Type: ir.BlockText, Text: "be brief", CacheControl: ir.Raw(`{"type":"ephemeral"}`)}},
		Messages:  []ir.Message{{Role: ir.RoleUser, Content: []ir.Block{{Type: ir.BlockText, Text: "one two three"}}}},
		MaxTokens: 100,
		Tools:     []ir.Tool{{Name: longTool, Schema: ir.Raw(`{"type":"object"}`)}},
	}
}

func TestMockConverse(t *testing.T) {
	t.Parallel()
	body, names, err := EncodeRequest(nil, mockRequest())
	if err != nil {
		t.Fatal(err)
	}
	rec := mockCall(t, false, body, map[string]string{
		"X-Mock-Tool-Call":          names.Upstream(longTool),
		"X-Mock-Cached-Tokens":      "2",
		"X-Mock-Cache-Write-Tokens": "1",
	})
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	r, err := DecodeResponse(rec.Body.Bytes(), names)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Content) != 1 || r.Content[0].Type != ir.BlockToolUse || r.Content[0].Name != longTool || string(r.Content[0].Input) != `{"n":1}` {
		t.Errorf("content = %+v, want one call of %q with {\"n\":1}", r.Content, longTool)
	}
	// The prompt is five words (system and user); two are read from the
	// cache and one written, so two are uncached.
	want := ir.Usage{Input: 2, CacheRead: 2, CacheWrite: 1, Output: 3, Found: true}
	if diff := cmp.Diff(want, r.Usage); diff != "" || r.StopReason != ir.StopToolUse {
		t.Errorf("stop reason %v; usage mismatch (-want +got):\n%s", r.StopReason, diff)
	}
}

func TestMockConverseStream(t *testing.T) {
	t.Parallel()
	req := mockRequest()
	req.ThinkingBudget = 1024
	body, names, err := EncodeRequest(nil, req)
	if err != nil {
		t.Fatal(err)
	}
	rec := mockCall(t, true, body, map[string]string{"X-Mock-Tool-Call": names.Upstream(longTool) + ",other"})
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/vnd.amazon.eventstream" {
		t.Fatalf("status %d, type %q: %s", rec.Code, rec.Header().Get("Content-Type"), rec.Body)
	}
	got := decodeStream(bytes.NewReader(rec.Body.Bytes()), 64, names)
	if got.Error != "" || !got.Done {
		t.Fatalf("stream did not end well: %+v", got)
	}
	var kinds []string
	var thinking, signature string
	for _, e := range got.Events {
		switch {
		case e.Kind == ir.EventBlockStart && e.Block.Type == ir.BlockToolUse:
			kinds = append(kinds, "tool "+e.Block.Name)
		case e.Kind == ir.EventBlockStart:
			kinds = append(kinds, "block "+irNames["Type"][e.Block.Type])
		case e.Kind == ir.EventBlockDelta && e.Delta == ir.DeltaThinking:
			thinking += e.Text
		case e.Kind == ir.EventBlockDelta && e.Delta == ir.DeltaSignature:
			signature += e.Text
		case e.Kind == ir.EventMessageDelta:
			if e.StopReason != ir.StopToolUse || !e.Usage.Found || e.Usage.Input != 5 {
				t.Errorf("message delta %+v, want tool_use and the usage of 5 prompt tokens", e)
			}
		}
	}
	if diff := cmp.Diff([]string{"block thinking", "tool " + longTool, "tool other"}, kinds); diff != "" {
		t.Errorf("blocks mismatch (-want +got):\n%s", diff)
	}
	if signature != providertest.Signature(thinking) {
		t.Errorf("signature %q does not sign the reasoning %q", signature, thinking)
	}
	a, o := encodeClients(got.Events, got.Done)
	if err := validateAnthropic(a, true); err != nil {
		t.Errorf("Anthropic stream: %v\n%s", err, a)
	}
	if err := validateOpenAI(o); err != nil {
		t.Errorf("OpenAI stream: %v\n%s", err, o)
	}
}

func TestMockStreamError(t *testing.T) {
	t.Parallel()
	body, names, err := EncodeRequest(nil, mockRequest())
	if err != nil {
		t.Fatal(err)
	}
	rec := mockCall(t, true, body, map[string]string{"X-Mock-Stream-Error": "1"})
	got := decodeStream(bytes.NewReader(rec.Body.Bytes()), 64, names)
	if !got.Overloaded || !strings.HasPrefix(got.Error, "ServiceUnavailableException: ") {
		t.Errorf("stream = %+v, want an overloaded ServiceUnavailableException", got)
	}
}

func TestMockErrors(t *testing.T) {
	t.Parallel()
	body, _, err := EncodeRequest(nil, mockRequest())
	if err != nil {
		t.Fatal(err)
	}
	for status, want := range map[string]ir.ProviderError{
		"429": {Type: "ThrottlingException", Overloaded: true},
		"503": {Type: "ServiceUnavailableException", Overloaded: true},
		"400": {Type: "ValidationException"},
	} {
		rec := mockCall(t, false, body, map[string]string{"X-Mock-Error": status})
		got, ok := DecodeError(rec.Body.Bytes(), rec.Header().Get("X-Amzn-ErrorType"))
		if !ok || got.Type != want.Type || got.Overloaded != want.Overloaded || got.Message == "" {
			t.Errorf("%s: DecodeError = %+v, %v; want %+v with a message", status, got, ok, want)
		}
	}
}
