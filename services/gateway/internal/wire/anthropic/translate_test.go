package anthropic

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-ai/moat/services/gateway/internal/ir"
	"github.com/moat-ai/moat/services/gateway/internal/wire"
)

// TestRequestGolden decodes each Anthropic request of
// testdata/golden/requests into the IR (NAME.ir.json) and encodes it back
// for an upstream model (NAME.out.json). The output must be valid JSON
// that ParseRequest accepts, and encoding is a fixed point: what it
// writes decodes and encodes to the same bytes.
func TestRequestGolden(t *testing.T) {
	t.Parallel()
	for _, in := range goldenInputs(t, "requests", "*.in.json") {
		name := strings.TrimSuffix(in, ".in.json")
		t.Run(filepath.Base(name), func(t *testing.T) {
			t.Parallel()
			body := readFile(t, in)
			if _, err := ParseRequest(body); err != nil {
				t.Fatalf("ParseRequest(fixture) = %v", err)
			}
			r, dropped, err := DecodeRequest(body)
			if err != nil {
				t.Fatalf("DecodeRequest = %v", err)
			}
			checkGolden(t, name+".ir.json", dumpRequest(t, r, dropped))
			out, err := EncodeRequest(nil, r, "claude-upstream")
			if err != nil {
				t.Fatalf("EncodeRequest = %v", err)
			}
			checkEncodedRequest(t, out)
			checkGolden(t, name+".out.json", indent(t, out))
		})
	}
}

// checkEncodedRequest checks what EncodeRequest wrote: valid JSON that
// the native scanner accepts, and a fixed point of decode and encode.
func checkEncodedRequest(t testing.TB, out []byte) {
	t.Helper()
	if !json.Valid(out) {
		t.Fatalf("EncodeRequest wrote invalid JSON: %s", out)
	}
	if _, err := ParseRequest(out); err != nil {
		t.Fatalf("ParseRequest(EncodeRequest output) = %v\n%s", err, out)
	}
	r2, _, err := DecodeRequest(out)
	if err != nil {
		t.Fatalf("DecodeRequest(EncodeRequest output) = %v\n%s", err, out)
	}
	again, err := EncodeRequest(nil, r2, "claude-upstream")
	if err != nil {
		t.Fatalf("EncodeRequest(decoded output) = %v", err)
	}
	if !bytes.Equal(again, out) {
		t.Fatalf("encoding is not a fixed point:\nfirst  %s\nsecond %s", out, again)
	}
}

func TestDecodeRequestErrors(t *testing.T) {
	t.Parallel()
	const head = `{"model":"m","max_tokens":10,`
	tests := []struct {
		name, body  string
		code, param string
	}{
		{"unknown block type", head + `"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"search_result","source":"x"}]}]}`,
			wire.CodeInvalidValue, "messages[0].content[1].type"},
		{"server tool", head + `"messages":[],"tools":[{"name":"a","input_schema":{}},{"type":"web_search_20250305","name":"web_search"}]}`,
			wire.CodeInvalidValue, "tools[1].type"},
		{"bash tool", head + `"messages":[],"tools":[{"type":"bash_20250124","name":"bash"}]}`, wire.CodeInvalidValue, "tools[0].type"},
		{"role", head + `"messages":[{"role":"user","content":"a"},{"role":"system","content":"b"}]}`, wire.CodeInvalidValue, "messages[1].role"},
		{"role type", head + `"messages":[{"role":1,"content":"b"}]}`, wire.CodeInvalidType, "messages[0].role"},
		{"content missing", head + `"messages":[{"role":"user"}]}`, wire.CodeMissingParameter, "messages[0].content"},
		{"content type", head + `"messages":[{"role":"user","content":5}]}`, wire.CodeInvalidType, "messages[0].content"},
		{"block not object", head + `"messages":[{"role":"user","content":["a"]}]}`, wire.CodeInvalidType, "messages[0].content[0]"},
		{"block without type", head + `"messages":[{"role":"user","content":[{"text":"a"}]}]}`, wire.CodeMissingParameter, "messages[0].content[0].type"},
		{"text type", head + `"messages":[{"role":"user","content":[{"type":"text","text":7}]}]}`, wire.CodeInvalidType, "messages[0].content[0].text"},
		{"text missing", head + `"messages":[{"role":"user","content":[{"type":"text"}]}]}`, wire.CodeMissingParameter, "messages[0].content[0].text"},
		{"file source", head + `"messages":[{"role":"user","content":[{"type":"image","source":{"type":"file","file_id":"file_1"}}]}]}`,
			wire.CodeInvalidValue, "messages[0].content[0].source.type"},
		{"content source", head + `"messages":[{"role":"user","content":[{"type":"document","source":{"type":"content","content":[]}}]}]}`,
			wire.CodeInvalidValue, "messages[0].content[0].source.type"},
		{"text source on image", head + `"messages":[{"role":"user","content":[{"type":"image","source":{"type":"text","data":"x"}}]}]}`,
			wire.CodeInvalidValue, "messages[0].content[0].source.type"},
		{"base64 without data", head + `"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/png"}}]}]}`,
			wire.CodeMissingParameter, "messages[0].content[0].source.data"},
		{"tool input not object", head + `"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"n","input":"{}"}]}]}`,
			wire.CodeInvalidType, "messages[0].content[0].input"},
		{"tool result in tool result", head + `"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"tool_result","tool_use_id":"u"}]}]}]}`,
			wire.CodeInvalidValue, "messages[0].content[0].content[0].type"},
		{"tool result without id", head + `"messages":[{"role":"user","content":[{"type":"tool_result","content":"x"}]}]}`,
			wire.CodeMissingParameter, "messages[0].content[0].tool_use_id"},
		{"system image", head + `"system":[{"type":"image","source":{"type":"url","url":"u"}}],"messages":[]}`, wire.CodeInvalidValue, "system[0].type"},
		{"system type", head + `"system":3,"messages":[]}`, wire.CodeInvalidType, "system"},
		{"tool schema", head + `"messages":[],"tools":[{"name":"a","input_schema":[]}]}`, wire.CodeInvalidType, "tools[0].input_schema"},
		{"tool name", head + `"messages":[],"tools":[{"input_schema":{}}]}`, wire.CodeMissingParameter, "tools[0].name"},
		{"tool choice type", head + `"messages":[],"tool_choice":{"type":"required"}}`, wire.CodeInvalidValue, "tool_choice.type"},
		{"tool choice name", head + `"messages":[],"tool_choice":{"type":"tool"}}`, wire.CodeMissingParameter, "tool_choice.name"},
		{"thinking type", head + `"messages":[],"thinking":{"type":"on"}}`, wire.CodeInvalidValue, "thinking.type"},
		{"thinking budget", head + `"messages":[],"thinking":{"type":"enabled"}}`, wire.CodeMissingParameter, "thinking.budget_tokens"},
		{"thinking budget over max", head + `"messages":[],"thinking":{"type":"enabled","budget_tokens":10}}`, wire.CodeInvalidValue, "thinking.budget_tokens"},
		{"effort", head + `"messages":[],"thinking":{"type":"adaptive"},"output_config":{"effort":"extreme"}}`, wire.CodeInvalidValue, "output_config.effort"},
		{"format type", head + `"messages":[],"output_config":{"format":{"type":"json_object"}}}`, wire.CodeInvalidValue, "output_config.format.type"},
		{"format twice", head + `"messages":[],"output_config":{"format":{"type":"json_schema","schema":{}}},"output_format":{"type":"json_schema","schema":{}}}`,
			wire.CodeInvalidValue, "output_format"},
		{"temperature type", head + `"messages":[],"temperature":"0.5"}`, wire.CodeInvalidType, "temperature"},
		{"top_k fraction", head + `"messages":[],"top_k":1.5}`, wire.CodeInvalidType, "top_k"},
		{"top_k range", head + `"messages":[],"top_k":99999999999999999999}`, wire.CodeInvalidValue, "top_k"},
		{"stop type", head + `"messages":[],"stop_sequences":"x"}`, wire.CodeInvalidType, "stop_sequences"},
		{"stop element", head + `"messages":[],"stop_sequences":["a",1]}`, wire.CodeInvalidType, "stop_sequences[1]"},
		{"metadata type", head + `"messages":[],"metadata":[]}`, wire.CodeInvalidType, "metadata"},
		{"nested duplicate", head + `"messages":[{"role":"user","role":"assistant","content":"a"}]}`, wire.CodeDuplicateParameter, "messages[0].role"},
		{"duplicate in schema", head + `"messages":[],"tools":[{"name":"a","input_schema":{"type":"object","type":"string"}}]}`,
			wire.CodeDuplicateParameter, "tools[0].input_schema.type"},
		{"top-level duplicate", `{"model":"m","max_tokens":10,"messages":[],"temperature":1,"temperature":0}`, wire.CodeDuplicateParameter, "temperature"},
		{"invalid utf-8", head + "\"messages\":[{\"role\":\"user\",\"content\":\"\xff\"}]}", wire.CodeInvalidJSON, "messages[0].content"},
		{"no messages", `{"model":"m","max_tokens":10}`, wire.CodeMissingParameter, "messages"},
		{"no max_tokens", `{"model":"m","messages":[]}`, wire.CodeInvalidValue, "max_tokens"},
		{"not an object", `[1]`, wire.CodeInvalidJSON, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, _, err := DecodeRequest([]byte(tt.body))
			var re *wire.RequestError
			if !errors.As(err, &re) {
				t.Fatalf("DecodeRequest = %+v, %v; want a *wire.RequestError", r, err)
			}
			if re.Code != tt.code || re.Param != tt.param {
				t.Errorf("DecodeRequest error = {%s %s %q}, want {%s %s}", re.Code, re.Param, re.Message, tt.code, tt.param)
			}
			if !strings.HasPrefix(re.Message, tt.param) {
				t.Errorf("message %q does not start with the param %q", re.Message, tt.param)
			}
		})
	}
}

// TestDecodeRequestQuotesLittle checks that errors and dropped paths
// quote a bounded part of what the client sent.
func TestDecodeRequestQuotesLittle(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 5000)
	_, _, err := DecodeRequest([]byte(`{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"` + long + `"}]}]}`))
	if err == nil || len(err.Error()) > 200 {
		t.Errorf("DecodeRequest error = %.300v (%d bytes), want a short error", err, len(err.Error()))
	}
	_, dropped, err := DecodeRequest([]byte(`{"model":"m","max_tokens":1,"messages":[],"` + long + `":1}`))
	if err != nil || len(dropped) != 1 || len(dropped[0]) > 80 {
		t.Errorf("DecodeRequest dropped = %.100q, %v; want one short path", dropped, err)
	}
}

func TestDecodeRequestThinking(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, members string
		budget        int64
		effort        string
		dropped       []string
	}{
		{"enabled", `"thinking":{"type":"enabled","budget_tokens":2048}`, 2048, "", nil},
		{"disabled", `"thinking":{"type":"disabled"}`, 0, "", nil},
		{"adaptive default", `"thinking":{"type":"adaptive"}`, 0, "high", nil},
		{"adaptive low", `"thinking":{"type":"adaptive","display":"omitted"},"output_config":{"effort":"low"}`, 0, "low", []string{"thinking.display"}},
		{"adaptive max", `"thinking":{"type":"adaptive"},"output_config":{"effort":"max"}`, 0, "xhigh", nil},
		{"effort without adaptive", `"output_config":{"effort":"low"}`, 0, "", []string{"output_config.effort"}},
		{"null thinking", `"thinking":null`, 0, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, dropped, err := DecodeRequest([]byte(`{"model":"m","max_tokens":4096,"messages":[],` + tt.members + `}`))
			if err != nil {
				t.Fatal(err)
			}
			if r.ThinkingBudget != tt.budget || r.ReasoningEffort != tt.effort {
				t.Errorf("budget, effort = %d, %q; want %d, %q", r.ThinkingBudget, r.ReasoningEffort, tt.budget, tt.effort)
			}
			if diff := cmp.Diff(tt.dropped, dropped); diff != "" {
				t.Errorf("dropped mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func text(s string) ir.Block { return ir.Block{Type: ir.BlockText, Text: s} }

// encodeCases are IR requests as other client APIs' decoders make them,
// each with its golden Anthropic body in testdata/golden/encode.
var encodeCases = []struct {
	name string
	req  ir.Request
}{
	{"openai_tools_conversation", ir.Request{
		System:      []ir.Block{text("You are a helpful assistant."), text("Answer briefly.")},
		Temperature: ptr(0.7),
		Stop:        []string{"END"},
		User:        "user-123",
		Stream:      true,
		N:           1,
		Tools: []ir.Tool{
			{Name: "get_weather", Description: "Weather for a city", Schema: ir.Raw(`{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}`)},
			{Name: "now"},
		},
		ToolChoice: ir.ToolChoice{Mode: ir.ToolAuto, Set: true},
		Messages: []ir.Message{
			{Role: ir.RoleUser, Content: []ir.Block{text("Weather in Paris and Rome, and the time?")}},
			{Role: ir.RoleAssistant, Content: []ir.Block{
				text(""),
				{Type: ir.BlockToolUse, ID: "call_abc123", Name: "get_weather", Input: ir.Raw(`{"city":"Paris"}`)},
				{Type: ir.BlockToolUse, ID: "call_def456", Name: "get_weather", Input: ir.Raw(`{"city":"Rome"}`)},
				{Type: ir.BlockToolUse, ID: "call_ghi789", Name: "now"},
			}},
			{Role: ir.RoleUser, Content: []ir.Block{{Type: ir.BlockToolResult, ToolUseID: "call_abc123", Content: []ir.Block{text("18C")}}}},
			{Role: ir.RoleUser, Content: []ir.Block{{Type: ir.BlockToolResult, ToolUseID: "call_def456", Content: []ir.Block{text("24C"), text("")}}}},
			{Role: ir.RoleUser, Content: []ir.Block{{Type: ir.BlockToolResult, ToolUseID: "call_ghi789", IsError: true}}},
			{Role: ir.RoleUser, Content: []ir.Block{text("Thanks! And this image?"),
				{Type: ir.BlockImage, URL: "data:image/png;base64,iVBORw0KGgo="},
				{Type: ir.BlockImage, URL: "https://example.com/a.png"}}},
		},
	}},
	{"effort_raises_max_tokens", ir.Request{
		MaxTokens:       1000,
		ReasoningEffort: "high",
		Messages:        []ir.Message{{Role: ir.RoleUser, Content: []ir.Block{text("Prove it.")}}},
	}},
	{"effort_medium_default_max", ir.Request{
		ReasoningEffort: "medium",
		Messages:        []ir.Message{{Role: ir.RoleUser, Content: []ir.Block{text("Think.")}}},
	}},
	{"effort_minimal_no_thinking", ir.Request{
		ReasoningEffort: "minimal",
		Messages:        []ir.Message{{Role: ir.RoleUser, Content: []ir.Block{text("Quick.")}}},
	}},
	{"thinking_signature_replay", ir.Request{
		MaxTokens:      20000,
		ThinkingBudget: 8000,
		Tools:          []ir.Tool{{Name: "calc", Schema: ir.Raw(`{"type":"object"}`)}},
		Messages: []ir.Message{
			{Role: ir.RoleUser, Content: []ir.Block{text("2+2 with the tool")}},
			{Role: ir.RoleAssistant, Content: []ir.Block{
				{Type: ir.BlockThinking, Text: "Use calc.", Signature: "sig-abc=="},
				{Type: ir.BlockThinking, Text: "another provider's reasoning, unsigned"},
				{Type: ir.BlockRedactedThinking, Data: "opaque=="},
				{Type: ir.BlockToolUse, ID: "toolu_1", Name: "calc", Input: ir.Raw(`{}`)},
			}},
			{Role: ir.RoleUser, Content: []ir.Block{{Type: ir.BlockToolResult, ToolUseID: "toolu_1", Content: []ir.Block{text("4")}}}},
			{Role: ir.RoleAssistant, Content: []ir.Block{text("")}},
		},
	}},
	{"json_schema_and_named_tool", ir.Request{
		MaxTokens:      64,
		TopP:           ptr(0.5),
		TopK:           ptr(int64(5)),
		ResponseFormat: &ir.ResponseFormat{Type: "json_schema", Name: "person", Schema: ir.Raw(`{"type":"object","properties":{"name":{"type":"string"}}}`), Strict: true},
		Tools:          []ir.Tool{{Name: "emit", Schema: ir.Raw(`{"type":"object"}`), CacheControl: ir.Raw(`{"type":"ephemeral"}`)}},
		ToolChoice:     ir.ToolChoice{Mode: ir.ToolNamed, Name: "emit", DisableParallel: true, Set: true},
		Messages: []ir.Message{{Role: ir.RoleUser, Content: []ir.Block{
			{Type: ir.BlockDocument, MediaType: "text/plain", Data: "aGVsbG8gd29ybGQ="},
			{Type: ir.BlockDocument, URL: "data:application/pdf;base64,JVBERi0="},
			{Type: ir.BlockText, Text: "Who?", CacheControl: ir.Raw(`{"type":"ephemeral"}`)},
		}}},
	}},
	{"tool_choice_none_and_parallel", ir.Request{
		Tools:      []ir.Tool{{Name: "a", Schema: ir.Raw(`{"type":"object"}`)}},
		ToolChoice: ir.ToolChoice{Mode: ir.ToolNone, Set: true, DisableParallel: true},
		Messages:   []ir.Message{{Role: ir.RoleUser, Content: []ir.Block{text("no tools now")}}},
	}},
	{"parallel_off_without_choice", ir.Request{
		Tools:      []ir.Tool{{Name: "a", Schema: ir.Raw(`{"type":"object"}`)}},
		ToolChoice: ir.ToolChoice{DisableParallel: true},
		Messages:   []ir.Message{{Role: ir.RoleUser, Content: []ir.Block{text("one at a time")}}},
	}},
	{"choice_without_tools", ir.Request{
		ToolChoice: ir.ToolChoice{Mode: ir.ToolNone, Set: true},
		Messages:   []ir.Message{{Role: ir.RoleUser, Content: []ir.Block{text("hi")}}},
	}},
}

// TestEncodeRequestGolden encodes IR requests shaped as other APIs'
// decoders make them into Anthropic bodies (testdata/golden/encode).
func TestEncodeRequestGolden(t *testing.T) {
	t.Parallel()
	for _, tt := range encodeCases {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, err := EncodeRequest([]byte("prefix:"), &tt.req, "claude-upstream")
			if err != nil {
				t.Fatalf("EncodeRequest = %v", err)
			}
			body, ok := bytes.CutPrefix(out, []byte("prefix:"))
			if !ok {
				t.Fatalf("EncodeRequest did not append to dst: %s", out)
			}
			checkEncodedRequest(t, body)
			checkGolden(t, filepath.Join("testdata", "golden", "encode", tt.name+".json"), indent(t, body))
		})
	}
}

func TestEncodeRequestUnsupported(t *testing.T) {
	t.Parallel()
	user := []ir.Message{{Role: ir.RoleUser, Content: []ir.Block{text("hi")}}}
	withBlock := func(b ir.Block) []ir.Message {
		return []ir.Message{{Role: ir.RoleUser, Content: []ir.Block{text("see"), b}}}
	}
	tests := []struct {
		name  string
		req   ir.Request
		param string
	}{
		{"n", ir.Request{N: 2, Messages: user}, "n"},
		{"logprobs", ir.Request{Logprobs: true, Messages: user}, "logprobs"},
		{"top_logprobs", ir.Request{TopLogprobs: 3, Messages: user}, "top_logprobs"},
		{"json_object", ir.Request{ResponseFormat: &ir.ResponseFormat{Type: "json_object"}, Messages: user}, "response_format"},
		{"schema not object", ir.Request{ResponseFormat: &ir.ResponseFormat{Type: "json_schema", Schema: ir.Raw(`true`)}, Messages: user}, "response_format"},
		{"effort", ir.Request{ReasoningEffort: "extreme", Messages: user}, "reasoning_effort"},
		{"temperature", ir.Request{Temperature: ptr(1.5), Messages: user}, "temperature"},
		{"temperature nan", ir.Request{Temperature: ptr(math.NaN()), Messages: user}, "temperature"},
		{"top_p", ir.Request{TopP: ptr(math.Inf(1)), Messages: user}, "top_p"},
		{"forced tool while thinking", ir.Request{ReasoningEffort: "low", ToolChoice: ir.ToolChoice{Mode: ir.ToolAny, Set: true},
			Tools: []ir.Tool{{Name: "a"}}, Messages: user}, "tool_choice"},
		{"system image", ir.Request{System: []ir.Block{text("a"), {Type: ir.BlockImage, URL: "https://x"}}, Messages: user}, "system[1]"},
		{"tool input", ir.Request{Messages: []ir.Message{{Role: ir.RoleAssistant, Content: []ir.Block{{Type: ir.BlockToolUse, ID: "t", Name: "n", Input: ir.Raw(`{"a":`)}}}}}, "messages[0].content[0]"},
		{"docx", ir.Request{Messages: withBlock(ir.Block{Type: ir.BlockDocument, MediaType: "application/msword", Data: "AAAA"})}, "messages[0].content[1]"},
		{"bad text document", ir.Request{Messages: withBlock(ir.Block{Type: ir.BlockDocument, MediaType: "text/plain", Data: "%%%"})}, "messages[0].content[1]"},
		{"data url not base64", ir.Request{Messages: withBlock(ir.Block{Type: ir.BlockImage, URL: "data:image/png,raw"})}, "messages[0].content[1]"},
		{"image without source", ir.Request{Messages: withBlock(ir.Block{Type: ir.BlockImage})}, "messages[0].content[1]"},
		{"image without media type", ir.Request{Messages: withBlock(ir.Block{Type: ir.BlockImage, Data: "AAAA"})}, "messages[0].content[1]"},
		{"cache_control", ir.Request{Messages: withBlock(ir.Block{Type: ir.BlockText, Text: "x", CacheControl: ir.Raw(`"ephemeral"`)})}, "messages[0].content[1]"},
		{"tool result holds tool use", ir.Request{Messages: withBlock(ir.Block{Type: ir.BlockToolResult, ToolUseID: "t",
			Content: []ir.Block{text("a"), {Type: ir.BlockToolUse, ID: "x", Name: "y"}}})}, "messages[0].content[1].content[1]"},
		{"unknown block", ir.Request{Messages: withBlock(ir.Block{Type: 99})}, "messages[0].content[1]"},
		{"tool schema", ir.Request{Tools: []ir.Tool{{Name: "a", Schema: ir.Raw(`[]`)}}, Messages: user}, "tools[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, err := EncodeRequest([]byte("keep"), &tt.req, "m")
			var ue *ir.UnsupportedError
			if !errors.As(err, &ue) {
				t.Fatalf("EncodeRequest = %s, %v; want an *ir.UnsupportedError", out, err)
			}
			if ue.Param != tt.param {
				t.Errorf("EncodeRequest Param = %q (%s), want %q", ue.Param, ue.Reason, tt.param)
			}
			if string(out) != "keep" {
				t.Errorf("EncodeRequest returned dst %q on error, want it unchanged", out)
			}
		})
	}
}

func TestEncodeRequestMaxTokens(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name              string
		max, budget       int64
		effort            string
		wantMax, wantBudg int64
	}{
		{"defaults", 0, 0, "", DefaultMaxTokens, 0},
		{"kept", 100, 0, "", 100, 0},
		{"budget fits", 10000, 5000, "", 10000, 5000},
		{"budget equal", 5000, 5000, "", 5000 + DefaultMaxTokens, 5000},
		{"budget over default", 0, 9000, "", 9000 + DefaultMaxTokens, 9000},
		{"budget wins over effort", 50000, 2000, "high", 50000, 2000},
		{"low", 0, 0, "low", DefaultMaxTokens, 1024},
		{"medium", 0, 0, "medium", DefaultMaxTokens, 4096},
		{"high", 0, 0, "high", 16384 + DefaultMaxTokens, 16384},
		{"xhigh", 40000, 0, "xhigh", 40000, 32768},
		{"none", 0, 0, "none", DefaultMaxTokens, 0},
		{"absurd budget", 0, math.MaxInt64 - 1, "", math.MaxInt64, math.MaxInt64 - 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req := ir.Request{MaxTokens: tt.max, ThinkingBudget: tt.budget, ReasoningEffort: tt.effort}
			out, err := EncodeRequest(nil, &req, "m")
			if err != nil {
				t.Fatal(err)
			}
			var got struct {
				MaxTokens int64 `json:"max_tokens"`
				Thinking  *struct {
					Type   string `json:"type"`
					Budget int64  `json:"budget_tokens"`
				} `json:"thinking"`
			}
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			var budget int64
			if got.Thinking != nil {
				budget = got.Thinking.Budget
				if got.Thinking.Type != "enabled" {
					t.Errorf("thinking.type = %q", got.Thinking.Type)
				}
			}
			if got.MaxTokens != tt.wantMax || budget != tt.wantBudg {
				t.Errorf("max_tokens, budget_tokens = %d, %d; want %d, %d", got.MaxTokens, budget, tt.wantMax, tt.wantBudg)
			}
		})
	}
}

// TestResponseGolden decodes each message of testdata/golden/responses
// into the IR (NAME.ir.json) and encodes it for an Anthropic client
// (NAME.out.json).
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
			if diff := cmp.Diff(ReadUsage(body), r.Usage); diff != "" {
				t.Errorf("usage differs from ReadUsage (-ReadUsage +DecodeResponse):\n%s", diff)
			}
			checkGolden(t, name+".ir.json", dump(t, r))
			out := EncodeResponse(nil, r, "client-model")
			if !json.Valid(out) {
				t.Fatalf("EncodeResponse wrote invalid JSON: %s", out)
			}
			again, err := DecodeResponse(out)
			if err != nil {
				t.Fatalf("DecodeResponse(EncodeResponse output) = %v", err)
			}
			r.Model = "client-model"
			if diff := cmp.Diff(r, again); diff != "" {
				t.Errorf("response does not round-trip (-first +second):\n%s", diff)
			}
			checkGolden(t, name+".out.json", indent(t, out))
		})
	}
}

func TestDecodeResponseErrors(t *testing.T) {
	t.Parallel()
	for _, body := range []string{
		`{"type":"error","error":{"type":"overloaded_error","message":"x"}}`,
		`{"id":"m","type":"message","content":[{"type":"server_tool_use","id":"s","name":"web_search","input":{}}]}`,
		`{"id":"m","type":"message","content":[{"type":"tool_use","id":"t","name":"n","input":[]}]}`,
		`{"id":"m","type":"message","content":{}}`,
		`{"id":"m","id":"n","type":"message","content":[]}`,
		`not json`,
	} {
		if r, err := DecodeResponse([]byte(body)); !errors.Is(err, ir.ErrProtocol) {
			t.Errorf("DecodeResponse(%s) = %+v, %v; want ErrProtocol", body, r, err)
		}
	}
}

func TestEncodeResponse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		resp  ir.Response
		model string
		want  string
	}{
		{"openai id, unknown stop, broken tool input", ir.Response{
			ID: "chatcmpl-123", Model: "gpt-x",
			Content: []ir.Block{
				{Type: ir.BlockToolUse, ID: "call_1", Name: "f", Input: ir.Raw(`{"a":`)},
				{Type: ir.BlockToolUse, ID: "call_2", Name: "g"},
				{Type: ir.BlockImage, URL: "https://left.out"},
			},
			Usage: ir.Usage{Input: 3, CacheRead: 2, CacheWrite: 1, Output: 4, Reasoning: 1},
		}, "", `{"id":"msg_chatcmpl-123","type":"message","role":"assistant","model":"gpt-x","content":[` +
			`{"type":"tool_use","id":"call_1","name":"f","input":{}},{"type":"tool_use","id":"call_2","name":"g","input":{}}],` +
			`"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":3,"cache_creation_input_tokens":1,"cache_read_input_tokens":2,"output_tokens":4}}`},
		{"anthropic id kept", ir.Response{ID: "msg_01", Content: []ir.Block{text("hi")}, StopReason: ir.StopPause}, "claude",
			`{"id":"msg_01","type":"message","role":"assistant","model":"claude","content":[{"type":"text","text":"hi"}],` +
				`"stop_reason":"pause_turn","stop_sequence":null,"usage":{"input_tokens":0,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":0}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := EncodeResponse(nil, &tt.resp, tt.model)
			if string(got) != tt.want {
				t.Errorf("EncodeResponse =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestStopReasons(t *testing.T) {
	t.Parallel()
	for r := ir.StopEnd; r <= ir.StopPause; r++ {
		name := StopReasonName(r)
		if name == "" || StopReasonOf(name) != r {
			t.Errorf("StopReasonOf(StopReasonName(%d) = %q) = %d", r, name, StopReasonOf(name))
		}
	}
	if got := StopReasonOf("model_context_window_exceeded"); got != ir.StopMaxTokens {
		t.Errorf("StopReasonOf(model_context_window_exceeded) = %d, want StopMaxTokens", got)
	}
	if got := StopReasonOf("compaction"); got != ir.StopUnknown {
		t.Errorf("StopReasonOf(compaction) = %d, want StopUnknown", got)
	}
	if got := StopReasonName(ir.StopUnknown) + StopReasonName(200); got != "" {
		t.Errorf("StopReasonName(unknown) = %q, want empty", got)
	}
}
