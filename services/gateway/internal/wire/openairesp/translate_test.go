package openairesp

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/openai/openai-go/v3/packages/param"
	"github.com/openai/openai-go/v3/responses"
	"github.com/openai/openai-go/v3/shared"

	"github.com/moat-ai/moat/services/gateway/internal/ir"
	"github.com/moat-ai/moat/services/gateway/internal/wire"
	"github.com/moat-ai/moat/services/gateway/internal/wire/anthropic"
	"github.com/moat-ai/moat/services/gateway/internal/wire/openaichat"
)

// encodeUpstream encodes a decoded request for each translated upstream
// the golden files show, as indented JSON or the error the encoder gave.
func encodeUpstream(t *testing.T, r *ir.Request, api string) []byte {
	t.Helper()
	var (
		out []byte
		err error
	)
	switch api {
	case "chat":
		out, err = openaichat.EncodeRequest(nil, r, "upstream-model")
		if err == nil {
			if _, perr := openaichat.ParseRequest(out); perr != nil {
				t.Fatalf("openaichat.ParseRequest(EncodeRequest output) = %v\n%s", perr, out)
			}
		}
	case "anthropic":
		out, err = anthropic.EncodeRequest(nil, r, "upstream-model")
		if err == nil {
			if _, perr := anthropic.ParseRequest(out); perr != nil {
				t.Fatalf("anthropic.ParseRequest(EncodeRequest output) = %v\n%s", perr, out)
			}
		}
	}
	if err != nil {
		return []byte("error: " + err.Error() + "\n")
	}
	return indent(t, out)
}

// TestRequestGolden decodes each Responses request of
// testdata/golden/requests into the IR (NAME.ir.json, with the members
// dropped) and encodes it again for a chat-completions upstream
// (NAME.chat.json) and an Anthropic one (NAME.anthropic.json), each of
// which must pass that codec's own scanner.
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
			checkGolden(t, name+".ir.json", dump(t, struct {
				Request *ir.Request
				Dropped []string
			}{r, dropped}))
			checkGolden(t, name+".chat.json", encodeUpstream(t, r, "chat"))
			checkGolden(t, name+".anthropic.json", encodeUpstream(t, r, "anthropic"))
		})
	}
}

func TestDecodeRequestErrors(t *testing.T) {
	t.Parallel()
	const head = `{"model":"m",`
	user := func(parts string) string {
		return head + `"input":[{"role":"user","content":[` + parts + `]}]}`
	}
	tests := []struct {
		name, body  string
		code, param string
	}{
		{"previous response", head + `"input":"a","previous_response_id":"resp_1"}`, wire.CodeUnsupported, "previous_response_id"},
		{"conversation", head + `"input":"a","conversation":{"id":"conv_1"}}`, wire.CodeUnsupported, "conversation"},
		{"stored prompt", head + `"prompt":{"id":"pmpt_1","variables":{}}}`, wire.CodeUnsupported, "prompt"},
		{"background", head + `"input":"a","background":true}`, wire.CodeUnsupported, "background"},
		{"item reference", head + `"input":[{"type":"item_reference","id":"msg_1"}]}`, wire.CodeUnsupported, "input[0].type"},
		{"include logprobs", head + `"input":"a","include":["reasoning.encrypted_content","message.output_text.logprobs"]}`, wire.CodeUnsupported, "include[1]"},
		{"include search results", head + `"input":"a","include":["file_search_call.results"]}`, wire.CodeUnsupported, "include[0]"},
		{"top_logprobs", head + `"input":"a","top_logprobs":3}`, wire.CodeUnsupported, "top_logprobs"},
		{"web search tool", head + `"input":"a","tools":[{"type":"function","name":"f"},{"type":"web_search"}]}`, wire.CodeUnsupported, "tools[1].type"},
		{"file search tool", head + `"input":"a","tools":[{"type":"file_search","vector_store_ids":["vs_1"]}]}`, wire.CodeUnsupported, "tools[0].type"},
		{"code interpreter", head + `"input":"a","tools":[{"type":"code_interpreter","container":{"type":"auto"}}]}`, wire.CodeUnsupported, "tools[0].type"},
		{"computer use", head + `"input":"a","tools":[{"type":"computer_use_preview","display_width":1,"display_height":1,"environment":"browser"}]}`, wire.CodeUnsupported, "tools[0].type"},
		{"custom tool", head + `"input":"a","tools":[{"type":"custom","name":"c"}]}`, wire.CodeUnsupported, "tools[0].type"},
		{"tool without type", head + `"input":"a","tools":[{"name":"f"}]}`, wire.CodeMissingParameter, "tools[0].type"},
		{"tool without name", head + `"input":"a","tools":[{"type":"function"}]}`, wire.CodeMissingParameter, "tools[0].name"},
		{"tool parameters", head + `"input":"a","tools":[{"type":"function","name":"f","parameters":[]}]}`, wire.CodeInvalidType, "tools[0].parameters"},
		{"forced built-in tool", head + `"input":"a","tool_choice":{"type":"web_search_preview"}}`, wire.CodeUnsupported, "tool_choice.type"},
		{"allowed tools", head + `"input":"a","tool_choice":{"type":"allowed_tools","mode":"auto","tools":[]}}`, wire.CodeUnsupported, "tool_choice.type"},
		{"tool choice value", head + `"input":"a","tool_choice":"any"}`, wire.CodeInvalidValue, "tool_choice"},
		{"tool choice name", head + `"input":"a","tool_choice":{"type":"function"}}`, wire.CodeMissingParameter, "tool_choice.name"},
		{"built-in item", head + `"input":[{"type":"web_search_call","id":"ws_1","status":"completed"}]}`, wire.CodeUnsupported, "input[0].type"},
		{"item without type or role", head + `"input":[{"content":"a"}]}`, wire.CodeMissingParameter, "input[0].type"},
		{"item not an object", head + `"input":["a"]}`, wire.CodeInvalidType, "input[0]"},
		{"role", head + `"input":[{"role":"tool","content":"a"}]}`, wire.CodeInvalidValue, "input[0].role"},
		{"no content", head + `"input":[{"type":"message","role":"user"}]}`, wire.CodeMissingParameter, "input[0].content"},
		{"content type", head + `"input":[{"role":"user","content":3}]}`, wire.CodeInvalidType, "input[0].content"},
		{"image in a system message", head + `"input":[{"role":"system","content":[{"type":"input_image","image_url":"https://x/a.png"}]}]}`, wire.CodeInvalidValue, "input[0].content[0].type"},
		{"output text from the user", user(`{"type":"output_text","text":"a"}`), wire.CodeInvalidValue, "input[0].content[0].type"},
		{"audio", user(`{"type":"input_audio","input_audio":{"data":"","format":"wav"}}`), wire.CodeUnsupported, "input[0].content[0]"},
		{"image by file id", user(`{"type":"input_image","file_id":"file_1"}`), wire.CodeUnsupported, "input[0].content[0].file_id"},
		{"file by id", user(`{"type":"input_file","file_id":"file_1"}`), wire.CodeUnsupported, "input[0].content[0].file_id"},
		{"image URL", user(`{"type":"input_image","image_url":"ftp://x/a.png"}`), wire.CodeInvalidValue, "input[0].content[0].image_url"},
		{"file data not a data URL", user(`{"type":"input_file","file_data":"JVBERi0="}`), wire.CodeInvalidValue, "input[0].content[0].file_data"},
		{"image without URL", user(`{"type":"input_image","detail":"auto"}`), wire.CodeMissingParameter, "input[0].content[0].image_url"},
		{"text without text", user(`{"type":"input_text"}`), wire.CodeMissingParameter, "input[0].content[0].text"},
		{"encrypted reasoning", head + `"input":[{"type":"reasoning","id":"rs_1","summary":[],"encrypted_content":"gAAAA"}]}`, wire.CodeUnsupported, "input[0].encrypted_content"},
		{"summary type", head + `"input":[{"type":"reasoning","id":"rs_1","summary":[{"type":"text","text":"a"}]}]}`, wire.CodeInvalidValue, "input[0].summary[0].type"},
		{"call without call_id", head + `"input":[{"type":"function_call","name":"f","arguments":"{}"}]}`, wire.CodeMissingParameter, "input[0].call_id"},
		{"call without arguments", head + `"input":[{"type":"function_call","call_id":"c","name":"f"}]}`, wire.CodeMissingParameter, "input[0].arguments"},
		{"call arguments not an object", head + `"input":[{"type":"function_call","call_id":"c","name":"f","arguments":"[1]"}]}`, wire.CodeInvalidValue, "input[0].arguments"},
		{"output without call_id", head + `"input":[{"type":"function_call_output","output":"x"}]}`, wire.CodeMissingParameter, "input[0].call_id"},
		{"output missing", head + `"input":[{"type":"function_call_output","call_id":"c"}]}`, wire.CodeMissingParameter, "input[0].output"},
		{"format type", head + `"input":"a","text":{"format":{"type":"xml"}}}`, wire.CodeInvalidValue, "text.format.type"},
		{"schema missing", head + `"input":"a","text":{"format":{"type":"json_schema","name":"s"}}}`, wire.CodeMissingParameter, "text.format.schema"},
		{"schema name", head + `"input":"a","text":{"format":{"type":"json_schema","schema":{}}}}`, wire.CodeMissingParameter, "text.format.name"},
		{"max_output_tokens", head + `"input":"a","max_output_tokens":-1}`, wire.CodeInvalidValue, "max_output_tokens"},
		{"temperature type", head + `"input":"a","temperature":"hot"}`, wire.CodeInvalidType, "temperature"},
		{"instructions type", head + `"input":"a","instructions":[{"role":"system"}]}`, wire.CodeInvalidType, "instructions"},
		{"include type", head + `"input":"a","include":[1]}`, wire.CodeInvalidType, "include[0]"},
		{"number range", head + `"input":"a","max_output_tokens":99999999999999999999}`, wire.CodeInvalidValue, "max_output_tokens"},
		{"nested duplicate", head + `"input":[{"role":"user","role":"assistant","content":"a"}]}`, wire.CodeDuplicateParameter, "input[0].role"},
		{"duplicate in a schema", head + `"input":"a","tools":[{"type":"function","name":"f","parameters":{"type":"object","type":"string"}}]}`,
			wire.CodeDuplicateParameter, "tools[0].parameters.type"},
		{"invalid utf-8", head + "\"input\":[{\"role\":\"user\",\"content\":\"\xff\"}]}", wire.CodeInvalidJSON, "input[0].content"},
		{"no model", `{"input":"a"}`, wire.CodeMissingParameter, "model"},
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
// quote a bounded part of what the client sent, fit for a header.
func TestDecodeRequestQuotesLittle(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 5000)
	_, _, err := DecodeRequest([]byte(`{"model":"m","input":"a","tools":[{"type":"` + long + `"}]}`))
	if err == nil || len(err.Error()) > 200 {
		t.Errorf("DecodeRequest error = %.300v (%d bytes), want a short error", err, len(err.Error()))
	}
	_, dropped, err := DecodeRequest([]byte(`{"model":"m","input":"a","` + long + `":1,"a, b":2}`))
	if err != nil || len(dropped) != 2 || len(dropped[0]) > 80 || dropped[1] != "a??b" {
		t.Errorf("DecodeRequest dropped = %.100q, %v; want two short, header-safe paths", dropped, err)
	}
}

func TestDecodeRequestDropped(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, members string
		want          []string
	}{
		{"nothing", `"store":false,"background":false,"parallel_tool_calls":true,"truncation":null`, nil},
		{"store", `"store":true`, []string{"store"}},
		{"include encrypted reasoning", `"include":["reasoning.encrypted_content"]`, []string{"include[0]"}},
		{"bookkeeping", `"metadata":{},"service_tier":"auto","prompt_cache_key":"k","max_tool_calls":3,"stream_options":{"include_obfuscation":false}`,
			[]string{"metadata", "service_tier", "prompt_cache_key", "max_tool_calls", "stream_options"}},
		{"reasoning and text options", `"reasoning":{"effort":"low","summary":"auto","generate_summary":null},"text":{"verbosity":"low","format":{"type":"text"}}`,
			[]string{"reasoning.summary", "text.verbosity"}},
		{"two user ids", `"user":"a","safety_identifier":"b"`, []string{"user"}},
		{"nested unknowns", `"tools":[{"type":"function","name":"f","strict":true,"defer_loading":true}],"tool_choice":{"type":"function","name":"f","x":1}`,
			[]string{"tools[0].defer_loading", "tools[0].strict", "tool_choice.x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, dropped, err := DecodeRequest([]byte(`{"model":"m","input":"a",` + tt.members + `}`))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, dropped); diff != "" {
				t.Errorf("dropped mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDecodeSDKRequest decodes what openai-go sends: a request built with
// its parameter types, and the next turn of a stateless conversation,
// which replays the output items of an answer we encoded, as the SDK
// decoded them, with the function calls' outputs.
func TestDecodeSDKRequest(t *testing.T) {
	t.Parallel()
	answer := &ir.Response{ID: "msg_01", Content: []ir.Block{
		{Type: ir.BlockThinking, Text: "Weather first.", Signature: "sig"},
		{Type: ir.BlockText, Text: "Checking."},
		{Type: ir.BlockToolUse, ID: "toolu_1", Name: "get_weather", Input: ir.Raw(`{"city":"Paris"}`)},
	}, StopReason: ir.StopToolUse}
	resp, err := sdkResponse(EncodeResponse(nil, answer, "claude", 1))
	if err != nil {
		t.Fatal(err)
	}
	input := responses.ResponseInputParam{
		responses.ResponseInputItemParamOfMessage("Weather in Paris?", responses.EasyInputMessageRoleUser),
	}
	for _, item := range resp.Output {
		switch v := item.AsAny().(type) {
		case responses.ResponseReasoningItem:
			p := v.ToParam()
			input = append(input, responses.ResponseInputItemUnionParam{OfReasoning: &p})
		case responses.ResponseOutputMessage:
			p := v.ToParam()
			input = append(input, responses.ResponseInputItemUnionParam{OfOutputMessage: &p})
		case responses.ResponseFunctionToolCall:
			p := v.ToParam()
			input = append(input, responses.ResponseInputItemUnionParam{OfFunctionCall: &p})
			out := responses.ResponseInputItemParamOfFunctionCallOutput("18C")
			out.OfFunctionCallOutput.CallID = param.NewOpt(v.CallID)
			input = append(input, out)
		default:
			t.Fatalf("output item %T", v)
		}
	}
	params := responses.ResponseNewParams{
		Model:           "claude",
		Instructions:    param.NewOpt("Be brief."),
		Input:           responses.ResponseNewParamsInputUnion{OfInputItemList: input},
		MaxOutputTokens: param.NewOpt[int64](300),
		Store:           param.NewOpt(false),
		Reasoning:       shared.ReasoningParam{Effort: shared.ReasoningEffortMedium},
		Tools: []responses.ToolUnionParam{{OfFunction: &responses.FunctionToolParam{
			Name: "get_weather", Parameters: map[string]any{"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}}},
		}}},
	}
	body, err := json.Marshal(params)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseRequest(body); err != nil {
		t.Fatalf("ParseRequest(%s) = %v", body, err)
	}
	r, dropped, err := DecodeRequest(body)
	if err != nil {
		t.Fatalf("DecodeRequest(%s) = %v", body, err)
	}
	want := &ir.Request{
		Model:           "claude",
		System:          []ir.Block{{Type: ir.BlockText, Text: "Be brief."}},
		MaxTokens:       300,
		ReasoningEffort: "medium",
		Tools:           []ir.Tool{{Name: "get_weather", Schema: ir.Raw(`{"properties":{"city":{"type":"string"}},"type":"object"}`)}},
		Messages: []ir.Message{
			{Role: ir.RoleUser, Content: []ir.Block{{Type: ir.BlockText, Text: "Weather in Paris?"}}},
			{Role: ir.RoleAssistant, Content: []ir.Block{
				{Type: ir.BlockThinking, Text: "Weather first."}, // the signature stays behind
				{Type: ir.BlockText, Text: "Checking."},
				{Type: ir.BlockToolUse, ID: "toolu_1", Name: "get_weather", Input: ir.Raw(`{"city":"Paris"}`)},
			}},
			{Role: ir.RoleUser, Content: []ir.Block{{Type: ir.BlockToolResult, ToolUseID: "toolu_1", Content: []ir.Block{{Type: ir.BlockText, Text: "18C"}}}}},
		},
	}
	if diff := cmp.Diff(want, r); diff != "" {
		t.Errorf("DecodeRequest(%s) mismatch (-want +got):\n%s", body, diff)
	}
	if len(dropped) != 0 {
		t.Errorf("dropped = %q, want none", dropped)
	}
}

// FuzzDecodeRequest checks that DecodeRequest never panics, fails only
// with a *wire.RequestError, lists dropped paths fit for a header, and
// that a request it accepts encodes for a chat-completions and an
// Anthropic upstream (or is refused with an *ir.UnsupportedError) into
// bodies their scanners accept. Inputs ParseRequest refuses are skipped:
// the gateway never decodes them.
func FuzzDecodeRequest(f *testing.F) {
	for _, in := range goldenInputs(f, "requests", "*.in.json") {
		f.Add(readFile(f, in))
	}
	for _, s := range []string{
		`{"model":"m","input":"hi"}`,
		`{"model":"m","input":[{"type":"function_call_output","call_id":"c","output":[{"type":"input_text","text":""}]}]}`,
		`{"model":"m","input":[{"type":"reasoning","summary":[{"type":"summary_text","text":""}],"content":[{"type":"reasoning_text","text":"t"}]}]}`,
		`{"model":"m","input":[{"role":"assistant","content":[{"type":"refusal","refusal":"no"}]},{"role":"developer","content":""}]}`,
		`{"model":"m","input":"a","tool_choice":"required","reasoning":{"effort":"xhigh"},"tools":[{"type":"function","name":"a"}]}`,
		`{"model":"m","input":"a","temperature":2,"top_p":0,"text":{"format":{"type":"json_object"}}}`,
		`{"model":"m","input":"a","t\u0065mperature":0.5,"x":null}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if _, err := ParseRequest(body); err != nil {
			return
		}
		r, dropped, err := DecodeRequest(body)
		if err != nil {
			var re *wire.RequestError
			if !errors.As(err, &re) {
				t.Fatalf("DecodeRequest error %T %v, want a *wire.RequestError", err, err)
			}
			return
		}
		for _, p := range dropped {
			if p == "" || len(p) > 400 || strings.ContainsAny(p, ", \r\n") {
				t.Fatalf("dropped path %q is not fit for a header", p)
			}
		}
		// Without a message it can write (an empty input list, user
		// messages without content), the chat codec writes no messages
		// member, which its scanner refuses; every provider refuses such
		// a request anyway.
		if out, err := openaichat.EncodeRequest(nil, r, "u"); err == nil && chatWritesMessages(r) {
			if _, err := openaichat.ParseRequest(out); err != nil {
				t.Fatalf("chat EncodeRequest(%s) = %s, which does not parse: %v", body, out, err)
			}
		} else if ue := (*ir.UnsupportedError)(nil); err != nil && !errors.As(err, &ue) {
			t.Fatalf("chat EncodeRequest error %T %v", err, err)
		}
		if out, err := anthropic.EncodeRequest(nil, r, "u"); err == nil {
			if _, err := anthropic.ParseRequest(out); err != nil {
				t.Fatalf("anthropic EncodeRequest(%s) = %s, which does not parse: %v", body, out, err)
			}
		} else if ue := (*ir.UnsupportedError)(nil); !errors.As(err, &ue) {
			t.Fatalf("anthropic EncodeRequest error %T %v", err, err)
		}
	})
}

// chatWritesMessages reports whether the chat codec writes a message for
// r: a system prompt, an assistant turn or a turn with content.
func chatWritesMessages(r *ir.Request) bool {
	return len(r.System) > 0 || slices.ContainsFunc(r.Messages, func(m ir.Message) bool {
		return m.Role == ir.RoleAssistant || len(m.Content) > 0
	})
}
