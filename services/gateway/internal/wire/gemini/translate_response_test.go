package gemini

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-ai/moat/services/gateway/internal/ir"
	"github.com/moat-ai/moat/services/gateway/internal/wire/anthropic"
	"github.com/moat-ai/moat/services/gateway/internal/wire/openaichat"
)

// TestResponseGolden decodes each answer of testdata/golden/responses
// into the IR (NAME.ir.json) and encodes it for an Anthropic client
// (NAME.anthropic.json) and an OpenAI one (NAME.openai.json).
func TestResponseGolden(t *testing.T) {
	t.Parallel()
	for _, in := range goldenInputs(t, "responses", "*.in.json") {
		name := strings.TrimSuffix(in, ".in.json")
		t.Run(filepath.Base(name), func(t *testing.T) {
			t.Parallel()
			body := readFile(t, in)
			r, err := DecodeResponse(body)
			if err != nil {
				t.Fatalf("DecodeResponse = %v", err)
			}
			checkGolden(t, name+".ir.json", dump(t, r))
			if u := ReadUsage(body); u != r.Usage {
				t.Errorf("ReadUsage = %+v, DecodeResponse's usage %+v", u, r.Usage)
			}
			checkGolden(t, name+".anthropic.json", indent(t, anthropic.EncodeResponse(nil, r, "client-model")))
			checkGolden(t, name+".openai.json", indent(t, openaichat.EncodeResponse(nil, r, "client-model", 7)))
		})
	}
}

func TestDecodeResponseErrors(t *testing.T) {
	t.Parallel()
	for _, body := range []string{
		``,
		`[]`,
		`{"candidates":[]}`,
		`{"candidates":[{"content":{"parts":[{"functionCall":{"name":"f","args":"x"}}]}}]}`,
		`{"candidates":[{"content":{"parts":[{"inlineData":{"mimeType":"image/png","data":"AA=="}}]}}]}`,
		`{"candidates":[{"content":{"parts":[{"text":"a","text":"b"}]}}]}`,
	} {
		if _, err := DecodeResponse([]byte(body)); !errors.Is(err, ir.ErrProtocol) {
			t.Errorf("DecodeResponse(%s) = %v, want ErrProtocol", body, err)
		}
	}
	_, err := DecodeResponse([]byte(`{"error":{"code":400,"message":"API key not valid.","status":"INVALID_ARGUMENT"}}`))
	var pe *ir.ProviderError
	if !errors.As(err, &pe) || pe.Type != "INVALID_ARGUMENT" || pe.Overloaded {
		t.Errorf("DecodeResponse(error body) = %v, want INVALID_ARGUMENT", err)
	}
}

func TestStopReasons(t *testing.T) {
	t.Parallel()
	tests := []struct {
		finish string
		call   bool
		want   ir.StopReason
	}{
		{"STOP", false, ir.StopEnd},
		{"STOP", true, ir.StopToolUse},
		{"MAX_TOKENS", true, ir.StopMaxTokens},
		{"SAFETY", false, ir.StopRefusal},
		{"RECITATION", false, ir.StopRefusal},
		{"BLOCKLIST", false, ir.StopRefusal},
		{"PROHIBITED_CONTENT", false, ir.StopRefusal},
		{"SPII", false, ir.StopRefusal},
		{"IMAGE_SAFETY", false, ir.StopRefusal},
		{"OTHER", false, ir.StopEnd},
		{"MALFORMED_FUNCTION_CALL", false, ir.StopEnd},
		{"", false, ir.StopEnd},
	}
	for _, tt := range tests {
		if got := stopReason(tt.finish, tt.call); got != tt.want {
			t.Errorf("stopReason(%q, %v) = %v, want %v", tt.finish, tt.call, got, tt.want)
		}
	}
}

func TestReadUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, body string
		want       ir.Usage
	}{
		{"none", `{"candidates":[]}`, ir.Usage{}},
		{"not JSON", `{"usageMetadata":`, ir.Usage{}},
		{"plain", `{"usageMetadata":{"promptTokenCount":10,"candidatesTokenCount":5,"totalTokenCount":15}}`,
			ir.Usage{Input: 10, Output: 5, Found: true}},
		{"cached, thoughts, tool prompt", `{"usageMetadata":{"promptTokenCount":100,"cachedContentTokenCount":80,"candidatesTokenCount":5,"thoughtsTokenCount":20,"toolUsePromptTokenCount":3}}`,
			ir.Usage{Input: 23, CacheRead: 80, Output: 25, Reasoning: 20, Found: true}},
		{"cached over prompt is clamped", `{"usageMetadata":{"promptTokenCount":10,"cachedContentTokenCount":50}}`,
			ir.Usage{CacheRead: 10, Found: true}},
		{"array of chunks, merged by maximum", `[{"usageMetadata":{"promptTokenCount":10,"candidatesTokenCount":1}},{"usageMetadata":{"promptTokenCount":10,"candidatesTokenCount":7}}]`,
			ir.Usage{Input: 10, Output: 7, Found: true}},
		{"escaped key", `{"usage\u004detadata":{"promptTokenCount":4}}`, ir.Usage{Input: 4, Found: true}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, ReadUsage([]byte(tt.body))); diff != "" {
			t.Errorf("ReadUsage(%s) %s mismatch (-want +got):\n%s", tt.body, tt.name, diff)
		}
	}
}

func TestDecodeError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		body string
		want ir.ProviderError
		ok   bool
	}{
		{`{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}`,
			ir.ProviderError{Type: "UNAVAILABLE", Overloaded: true, Message: "The model is overloaded."}, true},
		{`{"error":{"code":503,"message":"m"}}`, ir.ProviderError{Type: "UNAVAILABLE", Overloaded: true, Message: "m"}, true},
		{`{"error":{"code":"503","status":"INTERNAL"}}`, ir.ProviderError{Type: "INTERNAL", Overloaded: true}, true},
		{`{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED","details":[{"@type":"x"}]}}`,
			ir.ProviderError{Type: "RESOURCE_EXHAUSTED", Message: "quota"}, true},
		{`{"error":{"code":400}}`, ir.ProviderError{Type: "INVALID_ARGUMENT"}, true},
		{"[{\"error\":{\"code\":500,\"status\":\"INTERNAL\"}}\n]", ir.ProviderError{Type: "INTERNAL"}, true},
		{`{"error":"nope"}`, ir.ProviderError{Type: "UNKNOWN"}, false},
		{`{"candidates":[]}`, ir.ProviderError{Type: "UNKNOWN"}, false},
		{`not json`, ir.ProviderError{Type: "UNKNOWN"}, false},
	}
	for _, tt := range tests {
		got, ok := DecodeError([]byte(tt.body))
		if ok != tt.ok {
			t.Errorf("DecodeError(%s) ok = %v, want %v", tt.body, ok, tt.ok)
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("DecodeError(%s) mismatch (-want +got):\n%s", tt.body, diff)
		}
	}
}
