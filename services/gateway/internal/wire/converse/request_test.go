package converse

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-ai/moat/services/gateway/internal/ir"
	"github.com/moat-ai/moat/services/gateway/internal/wire/anthropic"
	"github.com/moat-ai/moat/services/gateway/internal/wire/openaichat"
)

// decodeClient decodes a client's request fixture into the IR with the
// client format's own codec: NAME.anthropic.json or NAME.openai.json.
func decodeClient(t testing.TB, path string, body []byte) *ir.Request {
	t.Helper()
	var (
		r   *ir.Request
		err error
	)
	switch {
	case strings.HasSuffix(path, ".anthropic.json"):
		if _, err = anthropic.ParseRequest(body); err == nil {
			r, _, err = anthropic.DecodeRequest(body)
		}
	case strings.HasSuffix(path, ".openai.json"):
		if _, err = openaichat.ParseRequest(body); err == nil {
			r, _, err = openaichat.DecodeRequest(body)
		}
	default:
		t.Fatalf("%s: unknown client format", path)
	}
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return r
}

// TestRequestGolden encodes each client request of testdata/golden/
// requests (decoded by its client's codec) as a Converse request
// (NAME.out.json, with the names it replaced in NAME.names.json when
// any), which must pass checkRequest.
func TestRequestGolden(t *testing.T) {
	t.Parallel()
	for _, in := range goldenInputs(t, "requests", "*.*.json") {
		if strings.HasSuffix(in, ".out.json") || strings.HasSuffix(in, ".names.json") {
			continue
		}
		name := in[:strings.Index(in, ".")]
		t.Run(name[strings.LastIndex(name, "/")+1:], func(t *testing.T) {
			t.Parallel()
			r := decodeClient(t, in, readFile(t, in))
			out, names, err := EncodeRequest([]byte("prefix"), r)
			if err != nil {
				t.Fatal(err)
			}
			body, ok := strings.CutPrefix(string(out), "prefix")
			if !ok {
				t.Fatalf("EncodeRequest did not append to dst: %.40s", out)
			}
			if err := checkRequest([]byte(body)); err != nil {
				t.Errorf("not a valid Converse request: %v\n%s", err, body)
			}
			checkGolden(t, name+".out.json", indent(t, []byte(body)))
			if names.Len() > 0 {
				m, _ := json.MarshalIndent(names.upstream, "", "  ") // a map of strings always marshals
				checkGolden(t, name+".names.json", append(m, '\n'))
			}
		})
	}
}

// checkRequest checks what Bedrock enforces of a Converse request beyond
// its JSON shape: roles alternating from user; no empty content, text
// block or tool result; a cache point never first; tool names and tool use
// ids of Bedrock's pattern; every tool result answering an earlier tool
// use; toolConfig present when tool blocks are, and a toolChoice naming a
// declared tool.
func checkRequest(body []byte) error {
	var req struct {
		Messages []struct {
			Role    string           `json:"role"`
			Content []map[string]any `json:"content"`
		} `json:"messages"`
		System     []map[string]any `json:"system"`
		ToolConfig *struct {
			Tools      []map[string]any `json:"tools"`
			ToolChoice map[string]any   `json:"toolChoice"`
		} `json:"toolConfig"`
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return err
	}
	for k := range top {
		switch k {
		case "messages", "system", "inferenceConfig", "toolConfig", "additionalModelRequestFields":
		default:
			return fmt.Errorf("unknown member %q", k)
		}
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return err
	}
	oneOf := func(b map[string]any, at string) (string, error) {
		if len(b) != 1 {
			return "", fmt.Errorf("%s: a block must have exactly one member, has %v", at, b)
		}
		for k := range b {
			return k, nil
		}
		return "", nil
	}
	for j, b := range req.System {
		k, err := oneOf(b, fmt.Sprintf("system[%d]", j))
		if err != nil {
			return err
		}
		if k == "cachePoint" && j == 0 {
			return errors.New("system starts with a cache point")
		}
	}
	declared := map[string]bool{}
	if tc := req.ToolConfig; tc != nil {
		if len(tc.Tools) == 0 {
			return errors.New("toolConfig without tools")
		}
		for i, tw := range tc.Tools {
			k, err := oneOf(tw, fmt.Sprintf("tools[%d]", i))
			if err != nil {
				return err
			}
			if k == "cachePoint" {
				if i == 0 {
					return errors.New("tools start with a cache point")
				}
				continue
			}
			spec, _ := tw["toolSpec"].(map[string]any)
			name, _ := spec["name"].(string)
			if !validName(name) {
				return fmt.Errorf("tool name %q", name)
			}
			if declared[name] {
				return fmt.Errorf("tool %q declared twice", name)
			}
			declared[name] = true
			schema, _ := spec["inputSchema"].(map[string]any)
			if _, ok := schema["json"].(map[string]any); !ok {
				return fmt.Errorf("tool %q without inputSchema.json", name)
			}
		}
		if t, ok := tc.ToolChoice["tool"].(map[string]any); ok && !declared[fmt.Sprint(t["name"])] {
			return fmt.Errorf("toolChoice names an undeclared tool %v", t["name"])
		}
	}
	uses := map[string]bool{}
	toolBlocks := false
	for i, m := range req.Messages {
		at := fmt.Sprintf("messages[%d]", i)
		want := "user"
		if i%2 == 1 {
			want = "assistant"
		}
		if m.Role != want {
			return fmt.Errorf("%s: role %q, want %q", at, m.Role, want)
		}
		if len(m.Content) == 0 {
			return fmt.Errorf("%s: no content", at)
		}
		for j, b := range m.Content {
			bat := fmt.Sprintf("%s.content[%d]", at, j)
			k, err := oneOf(b, bat)
			if err != nil {
				return err
			}
			switch k {
			case "cachePoint":
				if j == 0 {
					return fmt.Errorf("%s: a cache point first", bat)
				}
			case "text":
				if b["text"] == "" {
					return fmt.Errorf("%s: empty text", bat)
				}
			case "toolUse":
				toolBlocks = true
				tu, _ := b["toolUse"].(map[string]any)
				id, _ := tu["toolUseId"].(string)
				name, _ := tu["name"].(string)
				if !validName(id) || !validName(name) {
					return fmt.Errorf("%s: tool use id %q, name %q", bat, id, name)
				}
				if _, ok := tu["input"].(map[string]any); !ok {
					return fmt.Errorf("%s: input not an object", bat)
				}
				uses[id] = true
			case "toolResult":
				toolBlocks = true
				tr, _ := b["toolResult"].(map[string]any)
				id, _ := tr["toolUseId"].(string)
				if !uses[id] {
					return fmt.Errorf("%s: a result for tool use %q, which no earlier turn made", bat, id)
				}
				if content, _ := tr["content"].([]any); len(content) == 0 {
					return fmt.Errorf("%s: a tool result without content", bat)
				}
				if s, ok := tr["status"]; ok && s != "error" && s != "success" {
					return fmt.Errorf("%s: status %v", bat, s)
				}
			case "image", "document", "reasoningContent":
			default:
				return fmt.Errorf("%s: block type %q", bat, k)
			}
		}
	}
	if toolBlocks && req.ToolConfig == nil {
		return errors.New("tool blocks without toolConfig")
	}
	return nil
}

func TestNames(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 70)
	var n Names
	got := map[string]string{}
	for _, name := range []string{"get_weather", long, "github.create_issue", "", "ü", long, "a-b_C9"} {
		u, ok := n.add(name)
		if !ok {
			t.Fatalf("add(%q) collides", name)
		}
		if !validName(u) {
			t.Errorf("add(%q) = %q, which Bedrock refuses", name, u)
		}
		if back := n.Client(u); back != name {
			t.Errorf("Client(%q) = %q, want %q", u, back, name)
		}
		if n.Upstream(name) != u {
			t.Errorf("Upstream(%q) = %q, want %q", name, n.Upstream(name), u)
		}
		got[name] = u
	}
	want := map[string]string{
		"get_weather":         "get_weather",
		"a-b_C9":              "a-b_C9",
		long:                  strings.Repeat("a", 47) + "_" + shortName(long, "tool")[48:],
		"github.create_issue": "github_create_issue_" + shortName("github.create_issue", "tool")[20:],
		"":                    "tool_" + shortName("", "tool")[5:],
		"ü":                   "tool_" + shortName("ü", "tool")[5:],
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("names mismatch (-want +got):\n%s", diff)
	}
	if n.Len() != 4 {
		t.Errorf("Len() = %d, want 4 replaced", n.Len())
	}
	// Deterministic across requests: a conversation's later turns name
	// the same tool the same way.
	var again Names
	if u, _ := again.add(long); u != got[long] {
		t.Errorf("a second map names %q %q, the first %q", long, u, got[long])
	}
	// A client tool named like another's replacement cannot be sent.
	if _, ok := n.add(got["github.create_issue"]); ok {
		t.Errorf("a valid name equal to another's replacement was accepted")
	}
	var nilNames *Names
	if nilNames.Client("x") != "x" || nilNames.Upstream("x") != "x" || nilNames.Len() != 0 {
		t.Errorf("a nil *Names does not map names to themselves")
	}
}

func TestEncodeRequestUnsupported(t *testing.T) {
	t.Parallel()
	user := []ir.Message{{Role: ir.RoleUser, Content: []ir.Block{{Type: ir.BlockText, Text: "hi"}}}}
	withTools := []ir.Message{
		{Role: ir.RoleUser, Content: []ir.Block{{Type: ir.BlockText, Text: "hi"}}},
		{Role: ir.RoleAssistant, Content: []ir.Block{{Type: ir.BlockToolUse, ID: "t1", Name: "f", Input: ir.Raw(`{}`)}}},
		{Role: ir.RoleUser, Content: []ir.Block{{Type: ir.BlockToolResult, ToolUseID: "t1"}}},
	}
	tools := []ir.Tool{{Name: "f"}}
	nan := func() *float64 { z := 0.0; f := z / z; return &f }()
	tests := []struct {
		name  string
		r     ir.Request
		param string
	}{
		{"n", ir.Request{Messages: user, N: 2}, "n"},
		{"logprobs", ir.Request{Messages: user, Logprobs: true}, "logprobs"},
		{"top logprobs", ir.Request{Messages: user, TopLogprobs: 3}, "top_logprobs"},
		{"response format", ir.Request{Messages: user, ResponseFormat: &ir.ResponseFormat{Type: "json_object"}}, "response_format"},
		{"unknown effort", ir.Request{Messages: user, ReasoningEffort: "extreme"}, "reasoning_effort"},
		{"forced tool while thinking", ir.Request{Messages: user, Tools: tools, ThinkingBudget: 2000, ToolChoice: ir.ToolChoice{Mode: ir.ToolAny, Set: true}}, "tool_choice"},
		{"tool choice none with tool history", ir.Request{Messages: withTools, Tools: tools, ToolChoice: ir.ToolChoice{Mode: ir.ToolNone, Set: true}}, "tool_choice"},
		{"parallel calls disabled", ir.Request{Messages: user, Tools: tools, ToolChoice: ir.ToolChoice{DisableParallel: true}}, "tool_choice"},
		{"required without tools", ir.Request{Messages: user, ToolChoice: ir.ToolChoice{Mode: ir.ToolAny, Set: true}}, "tool_choice"},
		{"schema not an object", ir.Request{Messages: user, Tools: []ir.Tool{{Name: "f", Schema: ir.Raw(`[1]`)}}}, "tools[0]"},
		{"colliding tool names", ir.Request{Messages: user, Tools: []ir.Tool{{Name: "a.b"}, {Name: shortName("a.b", "tool")}}}, "tools[1]"},
		{"image system block", ir.Request{Messages: user, System: []ir.Block{{Type: ir.BlockText, Text: "a"}, {Type: ir.BlockImage, Data: "AA==", MediaType: "image/png"}}}, "system[1]"},
		{"image url", ir.Request{Messages: []ir.Message{{Role: ir.RoleUser, Content: []ir.Block{{Type: ir.BlockText, Text: "a"}, {Type: ir.BlockImage, URL: "https://example.com/a.png"}}}}}, "messages[0].content[1]"},
		{"s3 url", ir.Request{Messages: []ir.Message{{Role: ir.RoleUser, Content: []ir.Block{{Type: ir.BlockDocument, URL: "s3://bucket/a.pdf"}}}}}, "messages[0].content[0]"},
		{"image type", ir.Request{Messages: []ir.Message{{Role: ir.RoleUser, Content: []ir.Block{{Type: ir.BlockImage, MediaType: "image/tiff", Data: "AA=="}}}}}, "messages[0].content[0]"},
		{"document type", ir.Request{Messages: []ir.Message{{Role: ir.RoleUser, Content: []ir.Block{{Type: ir.BlockDocument, MediaType: "application/zip", Data: "AA=="}}}}}, "messages[0].content[0]"},
		{"tool input not an object", ir.Request{Messages: []ir.Message{user[0], {Role: ir.RoleAssistant, Content: []ir.Block{{Type: ir.BlockToolUse, ID: "t", Name: "f", Input: ir.Raw(`"x"`)}}}}, Tools: tools}, "messages[1].content[0]"},
		{"image in an assistant turn", ir.Request{Messages: []ir.Message{user[0], {Role: ir.RoleAssistant, Content: []ir.Block{{Type: ir.BlockImage, MediaType: "image/png", Data: "AA=="}}}}}, "messages[1].content[0]"},
		{"nested tool result", ir.Request{Messages: []ir.Message{{Role: ir.RoleUser, Content: []ir.Block{{Type: ir.BlockToolResult, ToolUseID: "t", Content: []ir.Block{{Type: ir.BlockToolUse}}}}}}}, "messages[0].content[0].content[0]"},
		{"not finite", ir.Request{Messages: user, TopP: nan}, "top_p"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, names, err := EncodeRequest([]byte("keep"), &tt.r)
			var ue *ir.UnsupportedError
			if !errors.As(err, &ue) {
				t.Fatalf("EncodeRequest = %s, %v; want an *ir.UnsupportedError", out, err)
			}
			if ue.Param != tt.param {
				t.Errorf("Param = %q, want %q (%s)", ue.Param, tt.param, ue.Reason)
			}
			if string(out) != "keep" || names != nil {
				t.Errorf("on error EncodeRequest returned %q, %v; want dst unchanged and no names", out, names)
			}
		})
	}
}

func TestEncodeRequestChoices(t *testing.T) {
	t.Parallel()
	user := []ir.Message{{Role: ir.RoleUser, Content: []ir.Block{{Type: ir.BlockText, Text: "hi"}}}}
	tools := []ir.Tool{{Name: "f", Schema: ir.Raw(`{"type":"object"}`)}}
	tests := []struct {
		name string
		r    ir.Request
		want string
	}{
		{"plain", ir.Request{Messages: user},
			`{"messages":[{"role":"user","content":[{"text":"hi"}]}]}`},
		{"tool choice unset", ir.Request{Messages: user, Tools: tools},
			`{"messages":[{"role":"user","content":[{"text":"hi"}]}],"toolConfig":{"tools":[{"toolSpec":{"name":"f","inputSchema":{"json":{"type":"object"}}}}]}}`},
		{"auto", ir.Request{Messages: user, Tools: tools, ToolChoice: ir.ToolChoice{Mode: ir.ToolAuto, Set: true}},
			`{"messages":[{"role":"user","content":[{"text":"hi"}]}],"toolConfig":{"tools":[{"toolSpec":{"name":"f","inputSchema":{"json":{"type":"object"}}}}],"toolChoice":{"auto":{}}}}`},
		{"any", ir.Request{Messages: user, Tools: tools, ToolChoice: ir.ToolChoice{Mode: ir.ToolAny, Set: true}},
			`{"messages":[{"role":"user","content":[{"text":"hi"}]}],"toolConfig":{"tools":[{"toolSpec":{"name":"f","inputSchema":{"json":{"type":"object"}}}}],"toolChoice":{"any":{}}}}`},
		{"none leaves the tools out", ir.Request{Messages: user, Tools: tools, ToolChoice: ir.ToolChoice{Mode: ir.ToolNone, Set: true, DisableParallel: true}},
			`{"messages":[{"role":"user","content":[{"text":"hi"}]}]}`},
		{"parallel off without tools is moot", ir.Request{Messages: user, ToolChoice: ir.ToolChoice{DisableParallel: true}},
			`{"messages":[{"role":"user","content":[{"text":"hi"}]}]}`},
		{"effort none", ir.Request{Messages: user, ReasoningEffort: "none", TopK: new(int64)},
			`{"messages":[{"role":"user","content":[{"text":"hi"}]}],"additionalModelRequestFields":{"top_k":0}}`},
		{"effort high, no max", ir.Request{Messages: user, ReasoningEffort: "high"},
			`{"messages":[{"role":"user","content":[{"text":"hi"}]}],"inferenceConfig":{"maxTokens":24576},"additionalModelRequestFields":{"thinking":{"type":"enabled","budget_tokens":16384}}}`},
		{"budget under max", ir.Request{Messages: user, ThinkingBudget: 2000, MaxTokens: 3000},
			`{"messages":[{"role":"user","content":[{"text":"hi"}]}],"inferenceConfig":{"maxTokens":3000},"additionalModelRequestFields":{"thinking":{"type":"enabled","budget_tokens":2000}}}`},
		{"empty system and blocks", ir.Request{System: []ir.Block{{Type: ir.BlockText, CacheControl: ir.Raw(`{"type":"ephemeral"}`)}}, Messages: []ir.Message{{Role: ir.RoleUser, Content: []ir.Block{{Type: ir.BlockText}, {Type: ir.BlockText, Text: "x"}, {Type: ir.BlockText, CacheControl: ir.Raw(`{"type":"ephemeral"}`)}}}, {Role: ir.RoleAssistant, Content: []ir.Block{{Type: ir.BlockRedactedThinking}}}}},
			`{"messages":[{"role":"user","content":[{"text":"x"},{"cachePoint":{"type":"default"}}]}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, _, err := EncodeRequest(nil, &tt.r)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, string(out)); diff != "" {
				t.Errorf("EncodeRequest mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
