package gemini

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-ai/moat/libs/providertest"
	"github.com/moat-ai/moat/services/gateway/internal/ir"
)

// mockCall posts body to the mock Gemini's method for model gemini-x
// with the given behaviour headers, and returns the status and answer.
func mockCall(t *testing.T, srv *httptest.Server, method string, body []byte, headers map[string]string) (int, []byte) {
	t.Helper()
	url := srv.URL + "/v1beta/models/gemini-x:" + method
	if method == "streamGenerateContent" {
		url += "?alt=sse"
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Goog-Api-Key", "key-1")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, out
}

func newMock(t *testing.T) (*providertest.Server, *httptest.Server) {
	t.Helper()
	p := providertest.New(providertest.Config{Credential: "key-1"})
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return p, srv
}

func encode(t *testing.T, r *ir.Request) []byte {
	t.Helper()
	b, err := EncodeRequest(nil, r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestMockGemini runs the codec against providertest's Gemini: what
// EncodeRequest writes is accepted and read as documented (prompt words,
// token limit, thinking), and the answers decode to the documented
// blocks and usage.
func TestMockGemini(t *testing.T) {
	t.Parallel()
	_, srv := newMock(t)
	hello := &ir.Request{System: []ir.Block{text("Be brief")}, Messages: []ir.Message{{Role: ir.RoleUser, Content: []ir.Block{text("Say hello now")}}}}

	t.Run("text with cached tokens", func(t *testing.T) {
		t.Parallel()
		status, body := mockCall(t, srv, "generateContent", encode(t, hello), map[string]string{providertest.HeaderCachedTokens: "2"})
		if status != http.StatusOK {
			t.Fatalf("status %d: %s", status, body)
		}
		r, err := DecodeResponse(body)
		if err != nil {
			t.Fatal(err)
		}
		want := &ir.Response{ID: r.ID, Model: "gemini-x", StopReason: ir.StopEnd, Content: []ir.Block{text("tok1 tok2 tok3 tok4")},
			Usage: ir.Usage{Input: 3, CacheRead: 2, Output: 4, Found: true}}
		if diff := cmp.Diff(want, r); diff != "" {
			t.Errorf("answer mismatch (-want +got):\n%s", diff)
		}
	})

	t.Run("max tokens", func(t *testing.T) {
		t.Parallel()
		limited := *hello
		limited.MaxTokens = 2
		_, body := mockCall(t, srv, "generateContent", encode(t, &limited), nil)
		r, err := DecodeResponse(body)
		if err != nil {
			t.Fatal(err)
		}
		if r.StopReason != ir.StopMaxTokens || r.Usage.Output != 2 {
			t.Errorf("stop %v, output %d; want max tokens, 2", r.StopReason, r.Usage.Output)
		}
	})

	t.Run("errors", func(t *testing.T) {
		t.Parallel()
		for status, want := range map[string]ir.ProviderError{
			"503": {Type: "UNAVAILABLE", Overloaded: true},
			"429": {Type: "RESOURCE_EXHAUSTED"},
			"400": {Type: "INVALID_ARGUMENT"},
		} {
			_, body := mockCall(t, srv, "generateContent", encode(t, hello), map[string]string{providertest.HeaderError: status})
			e, ok := DecodeError(body)
			e.Message = ""
			if !ok || e != want {
				t.Errorf("X-Mock-Error %s: DecodeError = %+v, %v; want %+v", status, e, ok, want)
			}
		}
	})

	t.Run("stream error", func(t *testing.T) {
		t.Parallel()
		_, body := mockCall(t, srv, "streamGenerateContent", encode(t, hello), map[string]string{providertest.HeaderStreamError: "1"})
		got := decodeStream(bytes.NewReader(body), 1<<16)
		if got.Error != "provider error: UNAVAILABLE" || len(got.Events) == 0 {
			t.Errorf("stream = %+v, want one word then UNAVAILABLE", got)
		}
	})

	t.Run("stream", func(t *testing.T) {
		t.Parallel()
		_, body := mockCall(t, srv, "streamGenerateContent", encode(t, hello), map[string]string{providertest.HeaderCachedTokens: "1"})
		got := decodeStream(bytes.NewReader(body), 1<<16)
		if !got.complete() {
			t.Fatalf("stream did not complete: %+v", got)
		}
		if out := encodeAnthropic(got.Events, false); validateAnthropic(out, validation{Complete: true, ToolJSON: true}) != nil {
			t.Errorf("Anthropic re-encoding invalid: %v", validateAnthropic(out, validation{Complete: true, ToolJSON: true}))
		}
		blocks := assemble(got.Events)
		last := got.Events[len(got.Events)-2]
		if diff := cmp.Diff([]ir.Block{text("tok1 tok2 tok3 tok4 ")}, blocks); diff != "" {
			t.Errorf("blocks mismatch (-want +got):\n%s", diff)
		}
		if want := (ir.Usage{Input: 4, CacheRead: 1, Output: 4, Found: true}); last.Usage != want || last.StopReason != ir.StopEnd {
			t.Errorf("end = %v %+v, want end %+v", last.StopReason, last.Usage, want)
		}
	})
}

// TestMockGeminiToolTurn runs a tool call with reasoning against the
// mock, streamed and whole, and sends the answer back in the next
// request: the mock's signatures must come back on the parts that
// carried them.
func TestMockGeminiToolTurn(t *testing.T) {
	t.Parallel()
	p, srv := newMock(t)
	headers := map[string]string{providertest.HeaderToolCall: "lookup,fetch", providertest.HeaderReasoningTokens: "2"}
	req := &ir.Request{
		ReasoningEffort: "low",
		Tools:           []ir.Tool{{Name: "lookup"}, {Name: "fetch"}},
		Messages:        []ir.Message{{Role: ir.RoleUser, Content: []ir.Block{text("Find it")}}},
	}
	thought := "think1 think2"
	wantBlocks := []ir.Block{
		{Type: ir.BlockThinking, Text: thought, Signature: providertest.Signature(thought)},
		{Type: ir.BlockThinking, Signature: providertest.Signature("lookup")},
		{Type: ir.BlockToolUse, ID: "call_0", Name: "lookup", Input: ir.Raw(`{"n":1}`)},
		{Type: ir.BlockToolUse, ID: "call_1", Name: "fetch", Input: ir.Raw(`{"n":2}`)},
	}

	_, body := mockCall(t, srv, "streamGenerateContent", encode(t, req), headers)
	got := decodeStream(bytes.NewReader(body), 1<<16)
	if !got.complete() {
		t.Fatalf("stream did not complete: %+v", got)
	}
	streamed := slices.Clone(wantBlocks)
	streamed[0].Text = "think1 think2 " // a stream's words each end with a space
	streamed[0].Signature = providertest.Signature(streamed[0].Text)
	if diff := cmp.Diff(streamed, assemble(got.Events)); diff != "" {
		t.Errorf("streamed blocks mismatch (-want +got):\n%s", diff)
	}
	if last := got.Events[len(got.Events)-2]; last.StopReason != ir.StopToolUse || last.Usage.Reasoning != 2 {
		t.Errorf("stream end = %v %+v, want tool use with 2 reasoning tokens", last.StopReason, last.Usage)
	}

	_, body = mockCall(t, srv, "generateContent", encode(t, req), headers)
	r, err := DecodeResponse(body)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(wantBlocks, r.Content); diff != "" {
		t.Errorf("blocks mismatch (-want +got):\n%s", diff)
	}
	if r.StopReason != ir.StopToolUse || r.Usage != (ir.Usage{Input: 2, Output: 4, Reasoning: 2, Found: true}) {
		t.Errorf("stop %v usage %+v", r.StopReason, r.Usage)
	}

	next := *req
	next.Messages = append(next.Messages,
		ir.Message{Role: ir.RoleAssistant, Content: r.Content},
		ir.Message{Role: ir.RoleUser, Content: []ir.Block{
			{Type: ir.BlockToolResult, ToolUseID: "call_0", Content: []ir.Block{text("found")}},
			{Type: ir.BlockToolResult, ToolUseID: "call_1", IsError: true, Content: []ir.Block{text("gone")}},
		}})
	if status, body := mockCall(t, srv, "generateContent", encode(t, &next), nil); status != http.StatusOK {
		t.Fatalf("second turn: status %d: %s", status, body)
	}
	last, ok := p.LastRequest()
	if !ok {
		t.Fatal("the mock recorded no request")
	}
	var sent struct {
		Contents []struct {
			Role  string            `json:"role"`
			Parts []json.RawMessage `json:"parts"`
		} `json:"contents"`
	}
	if err := json.Unmarshal(last.Body, &sent); err != nil {
		t.Fatal(err)
	}
	if len(sent.Contents) != 3 {
		t.Fatalf("sent %d contents, want 3: %s", len(sent.Contents), last.Body)
	}
	var parts []string
	for _, c := range sent.Contents[1:] {
		for _, p := range c.Parts {
			parts = append(parts, string(p))
		}
	}
	want := []string{
		`{"text":"think1 think2","thought":true,"thoughtSignature":"` + providertest.Signature(thought) + `"}`,
		`{"functionCall":{"name":"lookup","args":{"n":1}},"thoughtSignature":"` + providertest.Signature("lookup") + `"}`,
		`{"functionCall":{"name":"fetch","args":{"n":2}}}`,
		`{"functionResponse":{"name":"lookup","response":{"content":"found"}}}`,
		`{"functionResponse":{"name":"fetch","response":{"error":"gone"}}}`,
	}
	if diff := cmp.Diff(want, parts); diff != "" {
		t.Errorf("second turn parts mismatch (-want +got):\n%s", diff)
	}
}
