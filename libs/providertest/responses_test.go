package providertest_test

import (
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-ai/moat/libs/providertest"
)

// responsesBody holds 9 prompt words: 2 of instructions, 2 + 2 of user
// contents and 3 of a function_call_output.
const responsesBody = `{"model":"gpt-r","instructions":"be brief","input":[` +
	`{"role":"user","content":"hello there"},` +
	`{"type":"function_call","call_id":"c","name":"f","arguments":"{\"not\":\"counted\"}"},` +
	`{"type":"function_call_output","call_id":"c","output":"sunny and warm"},` +
	`{"role":"user","content":[{"type":"input_text","text":"one two"}]}]`

func responsesUsage(in, cached, out, reasoning float64) map[string]any {
	return map[string]any{
		"input_tokens": in, "input_tokens_details": map[string]any{"cached_tokens": cached},
		"output_tokens": out, "output_tokens_details": map[string]any{"reasoning_tokens": reasoning},
		"total_tokens": in + out,
	}
}

func TestResponses(t *testing.T) {
	t.Parallel()
	text := func(s string) map[string]any {
		return map[string]any{
			"id": "msg_mock_1", "type": "message", "status": "completed", "role": "assistant",
			"content": []any{map[string]any{"type": "output_text", "text": s, "annotations": []any{}}},
		}
	}
	tests := []struct {
		name           string
		body           string
		header         map[string]string
		wantStatus     string
		wantIncomplete any
		wantOutput     []any
		wantUsage      map[string]any
	}{
		{
			name: "text", body: responsesBody + `}`,
			wantStatus: "completed", wantOutput: []any{text("tok1 tok2 tok3 tok4")},
			wantUsage: responsesUsage(9, 0, 4, 0),
		},
		{
			name: "string input, cached and reasoning", body: `{"model":"gpt-r","input":"a b c"}`,
			header:     map[string]string{providertest.HeaderCachedTokens: "2", providertest.HeaderReasoningTokens: "3"},
			wantStatus: "completed",
			wantOutput: []any{
				map[string]any{"id": "rs_mock_1", "type": "reasoning", "summary": []any{}},
				text("tok1 tok2 tok3 tok4"),
			},
			wantUsage: responsesUsage(3, 2, 4, 3),
		},
		{
			name: "parallel function calls", body: responsesBody + `}`,
			header:     map[string]string{providertest.HeaderToolCall: "f,g"},
			wantStatus: "completed",
			wantOutput: []any{
				map[string]any{"id": "fc_mock_1_1", "type": "function_call", "status": "completed", "call_id": "call_mock_1_1", "name": "f", "arguments": `{"n":1}`},
				map[string]any{"id": "fc_mock_1_2", "type": "function_call", "status": "completed", "call_id": "call_mock_1_2", "name": "g", "arguments": `{"n":2}`},
			},
			wantUsage: responsesUsage(9, 0, 4, 0),
		},
		{
			name: "max_output_tokens", body: responsesBody + `,"max_output_tokens":1}`,
			wantStatus: "incomplete", wantIncomplete: map[string]any{"reason": "max_output_tokens"},
			wantOutput: []any{text("tok1")},
			wantUsage:  responsesUsage(9, 0, 1, 0),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, url := start(t, providertest.Config{Now: pinned})
			got, _ := postJSON(t, url+"/v1/responses", tt.body, tt.header, http.StatusOK)
			want := map[string]any{
				"id": "resp_mock_1", "object": "response", "created_at": 1700000000.0, "status": tt.wantStatus,
				"error": nil, "incomplete_details": tt.wantIncomplete, "model": "gpt-r",
				"output": tt.wantOutput, "usage": tt.wantUsage,
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("response mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestResponsesStream(t *testing.T) {
	t.Parallel()
	deltas := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = "response.output_text.delta"
		}
		return out
	}
	message := func(n int) []string {
		out := []string{"response.output_item.added", "response.content_part.added"}
		out = append(out, deltas(n)...)
		return append(out, "response.output_text.done", "response.content_part.done", "response.output_item.done")
	}
	call := []string{
		"response.output_item.added", "response.function_call_arguments.delta", "response.function_call_arguments.delta",
		"response.function_call_arguments.done", "response.output_item.done",
	}
	cat := func(parts ...[]string) []string {
		out := []string{"response.created", "response.in_progress"}
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	tests := []struct {
		name      string
		body      string
		header    map[string]string
		wantTypes []string
		wantText  string
		wantArgs  map[string]string
		wantUsage map[string]any
	}{
		{
			name: "text", body: responsesBody + `,"stream":true}`,
			wantTypes: cat(message(4), []string{"response.completed"}), wantText: "tok1 tok2 tok3 tok4 ",
			wantArgs: map[string]string{}, wantUsage: responsesUsage(9, 0, 4, 0),
		},
		{
			name: "reasoning first", body: `{"model":"gpt-r","input":"a","stream":true}`,
			header:    map[string]string{providertest.HeaderReasoningTokens: "1", providertest.HeaderChunks: "2"},
			wantTypes: cat([]string{"response.output_item.added", "response.output_item.done"}, message(2), []string{"response.completed"}),
			wantText:  "tok1 tok2 ", wantArgs: map[string]string{}, wantUsage: responsesUsage(1, 0, 2, 1),
		},
		{
			name: "function calls", body: responsesBody + `,"stream":true}`,
			header:    map[string]string{providertest.HeaderToolCall: "f,g"},
			wantTypes: cat(call, call, []string{"response.completed"}),
			wantArgs:  map[string]string{"fc_mock_1_1": `{"n":1}`, "fc_mock_1_2": `{"n":2}`}, wantUsage: responsesUsage(9, 0, 4, 0),
		},
		{
			name: "incomplete", body: responsesBody + `,"stream":true,"max_output_tokens":2}`,
			wantTypes: cat(message(2), []string{"response.incomplete"}), wantText: "tok1 tok2 ",
			wantArgs: map[string]string{}, wantUsage: responsesUsage(9, 0, 2, 0),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, url := start(t, providertest.Config{})
			resp := post(t, url+"/v1/responses", tt.body, tt.header, http.StatusOK)
			defer resp.Body.Close()
			got := checkResponses(t, readSSE(t, resp.Body))
			if diff := cmp.Diff(tt.wantTypes, got.types); diff != "" {
				t.Errorf("event types (-want +got):\n%s", diff)
			}
			if got.text != tt.wantText {
				t.Errorf("text %q, want %q", got.text, tt.wantText)
			}
			if diff := cmp.Diff(tt.wantArgs, got.args); diff != "" {
				t.Errorf("arguments (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantUsage, got.final["usage"]); diff != "" {
				t.Errorf("final usage (-want +got):\n%s", diff)
			}
		})
	}
}
