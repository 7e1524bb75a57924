package openairesp

import (
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/openai/openai-go/v3/responses"

	"github.com/moat-ai/moat/services/gateway/internal/ir"
	"github.com/moat-ai/moat/services/gateway/internal/wire/anthropic"
)

func text(s string) ir.Block { return ir.Block{Type: ir.BlockText, Text: s} }

// responseCases are IR answers as the other formats' decoders make them,
// each with its golden Responses object in testdata/golden/responses.
var responseCases = []struct {
	name string
	resp ir.Response
}{
	{"text_cached", ir.Response{ID: "chatcmpl-9", Model: "gpt-4o", StopReason: ir.StopEnd, Content: []ir.Block{text("Paris.")},
		Usage: ir.Usage{Input: 20, CacheRead: 80, CacheWrite: 5, Output: 3, Found: true}}},
	{"thinking_text_tools", ir.Response{ID: "msg_01XYZ", StopReason: ir.StopToolUse, Content: []ir.Block{
		{Type: ir.BlockThinking, Text: "Two cities: two calls.", Signature: "EqQBCgIYAhIM"},
		{Type: ir.BlockRedactedThinking, Data: "opaque"},
		text("Let me look."),
		text(" Both at once."),
		{Type: ir.BlockToolUse, ID: "toolu_1", Name: "get_weather", Input: ir.Raw(`{"city":"Paris"}`)},
		{Type: ir.BlockToolUse, ID: "toolu_2", Name: "now"},
	}, Usage: ir.Usage{Input: 100, Output: 60, Reasoning: 20, Found: true}}},
	{"max_tokens", ir.Response{ID: "resp_abc", StopReason: ir.StopMaxTokens, Content: []ir.Block{text("The answer is")},
		Usage: ir.Usage{Input: 5, Output: 3, Found: true}}},
	{"refusal", ir.Response{ID: "msg_r", StopReason: ir.StopRefusal, Content: []ir.Block{text("I can't help with that.")}}},
	{"empty", ir.Response{StopReason: ir.StopEnd}},
	{"tool_without_id_bad_args", ir.Response{ID: "gen-1", StopReason: ir.StopToolUse, Content: []ir.Block{
		{Type: ir.BlockThinking},
		{Type: ir.BlockToolUse, Name: "f", Input: ir.Raw(`{"a":`)},
	}}},
}

// TestResponseGolden encodes each IR answer as a Responses object
// (NAME.json), which the SDK must decode with every member it requires,
// and whose usage ReadUsage must read back as the IR's.
func TestResponseGolden(t *testing.T) {
	t.Parallel()
	for _, tt := range responseCases {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out := EncodeResponse(nil, &tt.resp, "client-model", 1700000000)
			checkGolden(t, filepath.Join("testdata", "golden", "responses", tt.name+".json"), indent(t, out))
			resp, err := sdkResponse(out)
			if err != nil {
				t.Fatalf("the SDK refuses the response: %v\n%s", err, out)
			}
			checkSDKOutput(t, &tt.resp, resp)
			want := tt.resp.Usage
			want.Found = true
			if diff := cmp.Diff(want, ReadUsage(out)); diff != "" {
				t.Errorf("ReadUsage(EncodeResponse) mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestResponseFromAnthropic encodes the answers of the Anthropic codec's
// response goldens, as its decoder reads them.
func TestResponseFromAnthropic(t *testing.T) {
	t.Parallel()
	for _, in := range globNonEmpty(t, filepath.Join("..", "anthropic", "testdata", "golden", "responses", "*.in.json")) {
		r, err := anthropic.DecodeResponse(readFile(t, in))
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		out := EncodeResponse(nil, r, "", 1)
		resp, err := sdkResponse(out)
		if err != nil {
			t.Fatalf("%s: the SDK refuses the response: %v\n%s", in, err, out)
		}
		checkSDKOutput(t, r, resp)
	}
}

// checkSDKOutput checks what the SDK read of an encoded answer: the
// status, the text, the calls and the usage.
func checkSDKOutput(t *testing.T, r *ir.Response, resp responses.Response) {
	t.Helper()
	var (
		wantText     string
		wantCalls    []string
		calls        []string
		wantIDs, ids []string
	)
	for _, b := range r.Content {
		switch b.Type {
		case ir.BlockText:
			wantText += b.Text
		case ir.BlockToolUse:
			wantCalls = append(wantCalls, b.Name+" "+argumentsOf(b.Input))
			wantIDs = append(wantIDs, b.ID)
		}
	}
	for _, item := range resp.Output {
		if item.Type == "function_call" {
			c := item.AsFunctionCall()
			calls = append(calls, c.Name+" "+c.Arguments)
			ids = append(ids, c.CallID)
		}
	}
	for i := range min(len(ids), len(wantIDs)) {
		if wantIDs[i] == "" && ids[i] != "" { // the encoder made one up
			wantIDs[i] = ids[i]
		}
	}
	wantStatus := responses.ResponseStatusCompleted
	if r.StopReason == ir.StopMaxTokens || r.StopReason == ir.StopRefusal {
		wantStatus = responses.ResponseStatusIncomplete
	}
	switch {
	case resp.OutputText() != wantText:
		t.Errorf("SDK OutputText() = %q, want %q", resp.OutputText(), wantText)
	case !cmp.Equal(calls, wantCalls) || !cmp.Equal(ids, wantIDs):
		t.Errorf("SDK function calls = %q %q, want %q %q", calls, ids, wantCalls, wantIDs)
	case resp.Status != wantStatus:
		t.Errorf("SDK Status = %q, want %q", resp.Status, wantStatus)
	case resp.Usage.InputTokens != r.Usage.TotalInput() || resp.Usage.InputTokensDetails.CachedTokens != r.Usage.CacheRead ||
		resp.Usage.OutputTokens != r.Usage.Output || resp.Usage.OutputTokensDetails.ReasoningTokens != r.Usage.Reasoning:
		t.Errorf("SDK usage %+v, want the IR's %+v", resp.Usage, r.Usage)
	}
}

func TestIDBase(t *testing.T) {
	t.Parallel()
	for id, want := range map[string]string{
		"msg_01ABC": "01ABC", "chatcmpl-9x": "9x", "resp_abc": "abc", "gen-1": "1", "": "moat",
		"msg_": "msg_", "abc": "abc", "x_": "x_", "Msg_1": "Msg_1", "_1": "_1",
	} {
		if got := idBase(id); got != want {
			t.Errorf("idBase(%q) = %q, want %q", id, got, want)
		}
	}
}
