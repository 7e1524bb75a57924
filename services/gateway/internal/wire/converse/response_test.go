package converse

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-ai/moat/services/gateway/internal/ir"
	"github.com/moat-ai/moat/services/gateway/internal/wire/anthropic"
	"github.com/moat-ai/moat/services/gateway/internal/wire/openaichat"
)

// longTool is the 70-character tool name of the fixtures, which Bedrock
// knows by a shorter one.
const longTool = "mcp__enterprise_knowledge_base__search_documents_by_semantic_similarit"

// fixtureNames is the tool-name map of the requests the response and
// stream fixtures answer.
func fixtureNames(t testing.TB) *Names {
	t.Helper()
	n := &Names{}
	for _, name := range []string{"get_weather", longTool, "github.create_issue"} {
		if _, ok := n.add(name); !ok {
			t.Fatalf("add(%q) collides", name)
		}
	}
	return n
}

// TestResponseGolden decodes each answer of testdata/golden/responses
// into the IR (NAME.ir.json) and encodes it for both client formats
// (NAME.anthropic.json, NAME.openai.json).
func TestResponseGolden(t *testing.T) {
	t.Parallel()
	for _, in := range goldenInputs(t, "responses", "*.in.json") {
		name := strings.TrimSuffix(in, ".in.json")
		t.Run(name[strings.LastIndex(name, "/")+1:], func(t *testing.T) {
			t.Parallel()
			r, err := DecodeResponse(readFile(t, in), fixtureNames(t))
			if err != nil {
				t.Fatal(err)
			}
			checkGolden(t, name+".ir.json", dump(t, r))
			r.ID = "mock-request-1" // the gateway's, from X-Amzn-RequestId
			checkGolden(t, name+".anthropic.json", indent(t, anthropic.EncodeResponse(nil, r, "client-model")))
			checkGolden(t, name+".openai.json", indent(t, openaichat.EncodeResponse(nil, r, "client-model", 1700000000)))
		})
	}
}

func TestDecodeResponseNames(t *testing.T) {
	t.Parallel()
	r, err := DecodeResponse(readFile(t, "testdata/golden/responses/tool_use_long_name.in.json"), fixtureNames(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Content[1].Name; got != longTool {
		t.Errorf("tool name = %q, want the client's %q", got, longTool)
	}
	r, err = DecodeResponse(readFile(t, "testdata/golden/responses/tool_use_long_name.in.json"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Content[1].Name; got == longTool {
		t.Errorf("without names the tool name was mapped back")
	}
}

func TestDecodeResponseErrors(t *testing.T) {
	t.Parallel()
	for _, body := range []string{
		``,
		`[]`,
		`{"output":{}}`,
		`{"output":{"message":{"role":"assistant","content":[{"citationsContent":{"content":[]}}]}},"stopReason":"end_turn"}`,
		`{"output":{"message":{"role":"assistant","content":[{}]}}}`,
		`{"output":{"message":{"role":"assistant","content":[{"image":{"format":"png","source":{"bytes":"AA=="}}}]}}}`,
		`{"output":{"message":{"content":"text"}}}`,
	} {
		if r, err := DecodeResponse([]byte(body), nil); !errors.Is(err, ir.ErrProtocol) {
			t.Errorf("DecodeResponse(%s) = %+v, %v; want an error wrapping ir.ErrProtocol", body, r, err)
		}
	}
}

func TestReadUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		body string
		want ir.Usage
	}{
		{`{"usage":{"inputTokens":3,"outputTokens":5,"totalTokens":1008,"cacheReadInputTokens":900,"cacheWriteInputTokens":100},"p":"abc"}`,
			ir.Usage{Input: 3, Output: 5, CacheRead: 900, CacheWrite: 100, Found: true}},
		{`{"usage":{},"metrics":{"latencyMs":1}}`, ir.Usage{Found: true}},
		{`{"metrics":{"latencyMs":1}}`, ir.Usage{}},
		{`{"usage":{"inputTokens":-1,"outputTokens":"7"}}`, ir.Usage{Found: true}},
		{`{"usage":{"inputTokens":1}`, ir.Usage{}},
		{`not json`, ir.Usage{}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, ReadUsage([]byte(tt.body))); diff != "" {
			t.Errorf("ReadUsage(%s) mismatch (-want +got):\n%s", tt.body, diff)
		}
	}
}

func TestDecodeError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, body, errorType string
		want                  ir.ProviderError
		ok                    bool
	}{
		{"throttling", `{"message":"Too many requests, please wait before trying again."}`, "ThrottlingException",
			ir.ProviderError{Type: "ThrottlingException", Overloaded: true, Message: "Too many requests, please wait before trying again."}, true},
		{"header with details", `{"message":"busy"}`, "ServiceUnavailableException:http://internal.amazon.com/coral/com.amazon.bedrock/",
			ir.ProviderError{Type: "ServiceUnavailableException", Overloaded: true, Message: "busy"}, true},
		{"stream exception", `{"message":"slow down"}`, "throttlingException",
			ir.ProviderError{Type: "ThrottlingException", Overloaded: true, Message: "slow down"}, true},
		{"validation", `{"message":"The model returned the following errors: max_tokens: 0"}`, "ValidationException",
			ir.ProviderError{Type: "ValidationException", Message: "The model returned the following errors: max_tokens: 0"}, true},
		{"type in the body", `{"__type":"com.amazon.coral.validate#ValidationException","Message":"bad"}`, "",
			ir.ProviderError{Type: "ValidationException", Message: "bad"}, true},
		{"model stream error", `{"message":"The model failed","originalStatusCode":500}`, "modelStreamErrorException",
			ir.ProviderError{Type: "ModelStreamErrorException", Message: "The model failed"}, true},
		{"type only", ``, "AccessDeniedException", ir.ProviderError{Type: "AccessDeniedException"}, true},
		{"nothing", `<html>502</html>`, "", ir.ProviderError{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, ok := DecodeError([]byte(tt.body), tt.errorType)
			if diff := cmp.Diff(tt.want, got); diff != "" || ok != tt.ok {
				t.Errorf("DecodeError ok = %v, want %v; mismatch (-want +got):\n%s", ok, tt.ok, diff)
			}
		})
	}
}
