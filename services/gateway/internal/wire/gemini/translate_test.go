package gemini

import (
	"encoding/json"
	"errors"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-ai/moat/services/gateway/internal/ir"
	"github.com/moat-ai/moat/services/gateway/internal/wire/anthropic"
	"github.com/moat-ai/moat/services/gateway/internal/wire/openaichat"
)

func ptr[T any](v T) *T { return &v }

func text(s string) ir.Block { return ir.Block{Type: ir.BlockText, Text: s} }

// encodeCases are IR requests as the client codecs make them, each with
// its golden Gemini body in testdata/golden/encode.
var encodeCases = []struct {
	name string
	req  ir.Request
}{
	{"tools_result_image", ir.Request{
		Model:       "gemini-2.5-flash",
		Stream:      true,
		System:      []ir.Block{text("You are a weather assistant."), text(""), text("Answer briefly.")},
		MaxTokens:   1024,
		Temperature: ptr(0.7),
		TopP:        ptr(0.9),
		TopK:        ptr[int64](40),
		Stop:        []string{"END"},
		User:        "user-123",
		Tools: []ir.Tool{
			{Name: "get_weather", Description: "Weather for a city", Schema: ir.Raw(`{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}`),
				CacheControl: ir.Raw(`{"type":"ephemeral"}`)},
			{Name: "now"},
		},
		ToolChoice: ir.ToolChoice{Mode: ir.ToolAuto, Set: true, DisableParallel: true},
		Messages: []ir.Message{
			{Role: ir.RoleUser, Content: []ir.Block{
				text("What is in this picture, and the weather in Paris and Rome?"),
				{Type: ir.BlockImage, MediaType: "image/png", Data: "iVBORw0KGgo=", CacheControl: ir.Raw(`{"type":"ephemeral"}`)},
				{Type: ir.BlockImage, URL: "data:image/jpeg;base64,/9j/4AAQ"},
			}},
			{Role: ir.RoleAssistant, Content: []ir.Block{
				text("A cat. Checking the weather."),
				{Type: ir.BlockToolUse, ID: "call_abc", Name: "get_weather", Input: ir.Raw(`{"city":"Paris"}`)},
				{Type: ir.BlockToolUse, ID: "call_def", Name: "get_weather", Input: ir.Raw(`{"city": "Rome"}`)},
				{Type: ir.BlockToolUse, ID: "call_ghi", Name: "now"},
			}},
			{Role: ir.RoleUser, Content: []ir.Block{{Type: ir.BlockToolResult, ToolUseID: "call_abc", Content: []ir.Block{text("18C"), text("cloudy")}}}},
			{Role: ir.RoleUser, Content: []ir.Block{{Type: ir.BlockToolResult, ToolUseID: "call_def", IsError: true, Content: []ir.Block{text("service down")}}}},
			{Role: ir.RoleUser, Content: []ir.Block{{Type: ir.BlockToolResult, ToolUseID: "call_ghi"}}},
			{Role: ir.RoleUser, Content: []ir.Block{
				text("And summarize this report."),
				{Type: ir.BlockDocument, URL: "gs://bucket/reports/q3.PDF"},
				{Type: ir.BlockDocument, MediaType: "text/plain", Data: "aGVsbG8="},
			}},
		},
	}},
	{"thinking_replay", ir.Request{
		ReasoningEffort: "high",
		Messages: []ir.Message{
			{Role: ir.RoleUser, Content: []ir.Block{text("Weather in Paris?")}},
			{Role: ir.RoleAssistant, Content: []ir.Block{
				{Type: ir.BlockThinking, Text: "Another provider's reasoning, unsigned."},
				{Type: ir.BlockRedactedThinking, Data: "EmwKAhgBEgy..."},
				{Type: ir.BlockThinking, Text: "I need the forecast.", Signature: "c2lnLXRob3VnaHQ="},
				{Type: ir.BlockThinking, Signature: "c2lnLWNhbGw="},
				{Type: ir.BlockToolUse, ID: "call_0", Name: "get_weather", Input: ir.Raw(`{"city":"Paris"}`)},
			}},
			{Role: ir.RoleUser, Content: []ir.Block{{Type: ir.BlockToolResult, ToolUseID: "call_0", Content: []ir.Block{text("18C")}}}},
			{Role: ir.RoleAssistant, Content: []ir.Block{
				text("It is 18C."),
				{Type: ir.BlockThinking, Signature: "dGFpbA=="},
			}},
			{Role: ir.RoleUser, Content: []ir.Block{text("And Rome?")}},
			{Role: ir.RoleAssistant, Content: []ir.Block{
				{Type: ir.BlockToolUse, ID: "call_0", Name: "get_weather", Input: ir.Raw(`{"city":"Rome"}`)},
			}},
			{Role: ir.RoleUser, Content: []ir.Block{{Type: ir.BlockToolResult, ToolUseID: "call_0", Content: []ir.Block{text("24C")}}}},
		},
	}},
	{"json_schema_named_tool", ir.Request{
		ThinkingBudget: 2048,
		N:              2,
		Logprobs:       true,
		TopLogprobs:    3,
		ResponseFormat: &ir.ResponseFormat{Type: "json_schema", Name: "answer", Strict: true,
			Schema: ir.Raw(`{"type":"object","properties":{"answer":{"type":"string"}},"required":["answer"]}`)},
		Tools:      []ir.Tool{{Name: "lookup", Schema: ir.Raw(`{"type":"object","properties":{"q":{"type":"string"}}}`)}},
		ToolChoice: ir.ToolChoice{Mode: ir.ToolNamed, Name: "lookup", Set: true},
		Messages:   []ir.Message{{Role: ir.RoleUser, Content: []ir.Block{text("Look it up.")}}},
	}},
	{"json_object_effort_none", ir.Request{
		ReasoningEffort: "none",
		ResponseFormat:  &ir.ResponseFormat{Type: "json_object"},
		Tools:           []ir.Tool{{Name: "lookup"}},
		ToolChoice:      ir.ToolChoice{Mode: ir.ToolNone, Set: true},
		Messages:        []ir.Message{{Role: ir.RoleUser, Content: []ir.Block{text("Reply in JSON.")}}},
	}},
	{"minimal", ir.Request{
		ToolChoice: ir.ToolChoice{Mode: ir.ToolAny, Set: true}, // no tools: no toolConfig
		Messages:   []ir.Message{{Role: ir.RoleUser, Content: []ir.Block{text("Hi")}}},
	}},
}

func TestEncodeRequestGolden(t *testing.T) {
	t.Parallel()
	for _, tc := range encodeCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, err := EncodeRequest(nil, &tc.req)
			if err != nil {
				t.Fatalf("EncodeRequest = %v", err)
			}
			checkRequest(t, out)
			checkGolden(t, filepath.Join("testdata", "golden", "encode", tc.name+".json"), indent(t, out))
		})
	}
}

// TestClientRequestGolden takes client bodies through their codec's
// DecodeRequest and encodes them for Gemini: NAME.openai.json and
// NAME.anthropic.json in testdata/golden/requests, each to NAME.out.json.
func TestClientRequestGolden(t *testing.T) {
	t.Parallel()
	decoders := map[string]func([]byte) (*ir.Request, []string, error){
		".openai.json":    openaichat.DecodeRequest,
		".anthropic.json": anthropic.DecodeRequest,
	}
	for suffix, decode := range decoders {
		for _, in := range goldenInputs(t, "requests", "*"+suffix) {
			name := strings.TrimSuffix(in, suffix)
			t.Run(filepath.Base(in), func(t *testing.T) {
				t.Parallel()
				r, _, err := decode(readFile(t, in))
				if err != nil {
					t.Fatalf("DecodeRequest = %v", err)
				}
				out, err := EncodeRequest(nil, r)
				if err != nil {
					t.Fatalf("EncodeRequest = %v", err)
				}
				checkRequest(t, out)
				checkGolden(t, name+".out.json", indent(t, out))
			})
		}
	}
}

// checkRequest checks what EncodeRequest wrote against the rules Gemini
// enforces: roles alternate between user and model, every part has one
// data member, and a model turn's first function call has a signature.
func checkRequest(t testing.TB, out []byte) {
	t.Helper()
	var w struct {
		Contents []struct {
			Role  string           `json:"role"`
			Parts []map[string]any `json:"parts"`
		} `json:"contents"`
	}
	if err := json.Unmarshal(out, &w); err != nil {
		t.Fatalf("EncodeRequest wrote invalid JSON: %v\n%s", err, out)
	}
	for i, c := range w.Contents {
		if c.Role != "user" && c.Role != "model" {
			t.Errorf("contents[%d].role = %q", i, c.Role)
		}
		if i > 0 && c.Role == w.Contents[i-1].Role {
			t.Errorf("contents[%d] repeats role %s", i, c.Role)
		}
		if len(c.Parts) == 0 {
			t.Errorf("contents[%d] has no parts", i)
		}
		firstCall := true
		for j, p := range c.Parts {
			n := 0
			for _, k := range []string{"text", "inlineData", "fileData", "functionCall", "functionResponse"} {
				if _, ok := p[k]; ok {
					n++
				}
			}
			if n != 1 {
				t.Errorf("contents[%d].parts[%d] has %d data members: %v", i, j, n, p)
			}
			if _, ok := p["functionCall"]; ok && firstCall {
				firstCall = false
				if p["thoughtSignature"] == nil {
					t.Errorf("contents[%d].parts[%d]: first function call without a signature", i, j)
				}
			}
		}
	}
}

func TestEncodeRequestErrors(t *testing.T) {
	t.Parallel()
	user := func(blocks ...ir.Block) []ir.Message { return []ir.Message{{Role: ir.RoleUser, Content: blocks}} }
	hi := user(text("hi"))
	tests := []struct {
		name  string
		req   ir.Request
		param string
	}{
		{"no messages", ir.Request{}, "messages"},
		{"only empty text", ir.Request{Messages: user(text(""))}, "messages"},
		{"web image", ir.Request{Messages: user(text("a"), ir.Block{Type: ir.BlockImage, URL: "https://example.com/cat.png?sig=secret"})}, "messages[0].content[1]"},
		{"web document", ir.Request{Messages: user(ir.Block{Type: ir.BlockDocument, URL: "http://example.com/a.pdf"})}, "messages[0].content[0]"},
		{"ftp image", ir.Request{Messages: user(ir.Block{Type: ir.BlockImage, URL: "ftp://x/a.png"})}, "messages[0].content[0]"},
		{"bad data URL", ir.Request{Messages: user(ir.Block{Type: ir.BlockImage, URL: "data:image/png,abc"})}, "messages[0].content[0]"},
		{"data without type", ir.Request{Messages: user(ir.Block{Type: ir.BlockImage, Data: "AA=="})}, "messages[0].content[0]"},
		{"gs without known type", ir.Request{Messages: user(ir.Block{Type: ir.BlockDocument, URL: "gs://b/file.bin"})}, "messages[0].content[0]"},
		{"media without source", ir.Request{Messages: user(ir.Block{Type: ir.BlockImage})}, "messages[0].content[0]"},
		{"orphan tool result", ir.Request{Messages: user(ir.Block{Type: ir.BlockToolResult, ToolUseID: "call_x"})}, "messages[0].content[0]"},
		{"tool result with image", ir.Request{Messages: []ir.Message{
			{Role: ir.RoleAssistant, Content: []ir.Block{{Type: ir.BlockToolUse, ID: "t", Name: "f"}}},
			{Role: ir.RoleUser, Content: []ir.Block{{Type: ir.BlockToolResult, ToolUseID: "t", Content: []ir.Block{{Type: ir.BlockImage, Data: "AA==", MediaType: "image/png"}}}}},
		}}, "messages[1].content[0].content[0]"},
		{"input not an object", ir.Request{Messages: []ir.Message{{Role: ir.RoleAssistant, Content: []ir.Block{{Type: ir.BlockToolUse, ID: "t", Name: "f", Input: ir.Raw(`[1]`)}}}}}, "messages[0].content[0]"},
		{"system image", ir.Request{System: []ir.Block{{Type: ir.BlockImage, Data: "AA==", MediaType: "image/png"}}, Messages: hi}, "system[0]"},
		{"schema not an object", ir.Request{Tools: []ir.Tool{{Name: "a"}, {Name: "b", Schema: ir.Raw(`"x"`)}}, Messages: hi}, "tools[1]"},
		{"format type", ir.Request{ResponseFormat: &ir.ResponseFormat{Type: "xml"}, Messages: hi}, "response_format"},
		{"format schema", ir.Request{ResponseFormat: &ir.ResponseFormat{Type: "json_schema", Schema: ir.Raw(`[]`)}, Messages: hi}, "response_format"},
		{"effort", ir.Request{ReasoningEffort: "extreme", Messages: hi}, "reasoning_effort"},
		{"temperature", ir.Request{Temperature: ptr(2.5), Messages: hi}, "temperature"},
		{"temperature NaN", ir.Request{Temperature: ptr(math.NaN()), Messages: hi}, "temperature"},
		{"top_p", ir.Request{TopP: ptr(1.5), Messages: hi}, "top_p"},
		{"top_k", ir.Request{TopK: ptr[int64](-1), Messages: hi}, "top_k"},
		{"unknown block", ir.Request{Messages: user(ir.Block{Type: 99})}, "messages[0].content[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, err := EncodeRequest([]byte("keep"), &tt.req)
			var ue *ir.UnsupportedError
			if !errors.As(err, &ue) {
				t.Fatalf("EncodeRequest = %s, %v; want an *ir.UnsupportedError", out, err)
			}
			if ue.Param != tt.param {
				t.Errorf("Param = %q, want %q (%s)", ue.Param, tt.param, ue.Reason)
			}
			if string(out) != "keep" {
				t.Errorf("dst = %q after an error, want it unchanged", out)
			}
			if strings.Contains(ue.Error(), "secret") {
				t.Errorf("error %q quotes the URL", ue.Error())
			}
		})
	}
}

// TestSignatureRoundTrip checks that the signatures of a Gemini answer,
// decoded for a client and sent back in its history, return on the parts
// that carried them.
func TestSignatureRoundTrip(t *testing.T) {
	t.Parallel()
	parts := `[{"text":"Thinking.","thought":true,"thoughtSignature":"czE="},` +
		`{"text":"Let me call."},` +
		`{"functionCall":{"name":"f","args":{"a":1}},"thoughtSignature":"czI="},` +
		`{"functionCall":{"name":"g","args":{}}},` +
		`{"text":"Done","thoughtSignature":"czM="}]`
	r, err := DecodeResponse([]byte(`{"candidates":[{"content":{"role":"model","parts":` + parts + `},"finishReason":"STOP"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	// Through an Anthropic client: the answer as it sees it, sent back.
	answer := anthropic.EncodeResponse(nil, r, "client-model")
	var msg struct {
		Content json.RawMessage `json:"content"`
	}
	if err := json.Unmarshal(answer, &msg); err != nil {
		t.Fatal(err)
	}
	history := `{"model":"m","max_tokens":100,"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":` + string(msg.Content) + `}]}`
	req, _, err := anthropic.DecodeRequest([]byte(history))
	if err != nil {
		t.Fatal(err)
	}
	out, err := EncodeRequest(nil, req)
	if err != nil {
		t.Fatal(err)
	}
	var w struct {
		Contents []struct {
			Parts json.RawMessage `json:"parts"`
		} `json:"contents"`
	}
	if err := json.Unmarshal(out, &w); err != nil {
		t.Fatal(err)
	}
	want := `[{"text":"Thinking.","thought":true,"thoughtSignature":"czE="},` +
		`{"text":"Let me call."},` +
		`{"functionCall":{"name":"f","args":{"a":1}},"thoughtSignature":"czI="},` +
		`{"functionCall":{"name":"g","args":{}}},` +
		`{"text":"Done","thoughtSignature":"czM="}]`
	if diff := cmp.Diff(want, string(w.Contents[1].Parts)); diff != "" {
		t.Errorf("replayed parts mismatch (-want +got):\n%s", diff)
	}
}
