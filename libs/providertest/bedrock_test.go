package providertest_test

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-ai/moat/libs/providertest"
)

// converseBody holds 7 prompt words: 2 of system, 2 of text, 3 inside a
// toolResult; toolUse input counts none.
const converseBody = `{"system":[{"text":"be brief"}],"messages":[` +
	`{"role":"user","content":[{"text":"hello there"}]},` +
	`{"role":"assistant","content":[{"toolUse":{"toolUseId":"t","name":"f","input":{"q":"not counted"}}}]},` +
	`{"role":"user","content":[{"toolResult":{"toolUseId":"t","content":[{"text":"three more words"}]}}]}]`

// sigV4 is a well-formed SigV4 Authorization header.
const sigV4 = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250101/us-east-1/bedrock/aws4_request, " +
	"SignedHeaders=content-type;host;x-amz-date, Signature=0123456789abcdef"

func signed(extra ...string) map[string]string {
	h := map[string]string{"Authorization": sigV4, "X-Amz-Date": "20250101T000000Z"}
	for i := 0; i+1 < len(extra); i += 2 {
		h[extra[i]] = extra[i+1]
	}
	return h
}

const bedrockModel = "anthropic.claude-x-v1:0"

func converseUsage(in, out, total, read, write float64) map[string]any {
	u := map[string]any{"inputTokens": in, "outputTokens": out, "totalTokens": total}
	if read > 0 {
		u["cacheReadInputTokens"] = read
	}
	if write > 0 {
		u["cacheWriteInputTokens"] = write
	}
	return u
}

func TestConverse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		body        string
		header      map[string]string
		wantContent []any
		wantStop    string
		wantUsage   map[string]any
	}{
		{
			name: "text", body: converseBody + `}`, header: signed(),
			wantContent: []any{map[string]any{"text": "tok1 tok2 tok3 tok4"}}, wantStop: "end_turn",
			wantUsage: converseUsage(7, 4, 11, 0, 0),
		},
		{
			name: "cache reads and writes", body: converseBody + `}`,
			header:      signed(providertest.HeaderCachedTokens, "4", providertest.HeaderCacheWriteTokens, "2"),
			wantContent: []any{map[string]any{"text": "tok1 tok2 tok3 tok4"}}, wantStop: "end_turn",
			wantUsage: converseUsage(1, 4, 11, 4, 2),
		},
		{
			name: "reasoning asked", body: converseBody + `,"additionalModelRequestFields":{"thinking":{"type":"enabled","budget_tokens":1024}}}`,
			header: signed(),
			wantContent: []any{
				map[string]any{"reasoningContent": map[string]any{"reasoningText": map[string]any{"text": "think1", "signature": providertest.Signature("think1")}}},
				map[string]any{"text": "tok1 tok2 tok3 tok4"},
			},
			wantStop: "end_turn", wantUsage: converseUsage(7, 4, 11, 0, 0),
		},
		{
			name: "tools with reasoning tokens", body: converseBody + `}`,
			header: signed(providertest.HeaderToolCall, "f,g", providertest.HeaderReasoningTokens, "2"),
			wantContent: []any{
				map[string]any{"reasoningContent": map[string]any{"reasoningText": map[string]any{"text": "think1 think2", "signature": providertest.Signature("think1 think2")}}},
				map[string]any{"toolUse": map[string]any{"toolUseId": "tooluse_mock_1_1", "name": "f", "input": map[string]any{"n": 1.0}}},
				map[string]any{"toolUse": map[string]any{"toolUseId": "tooluse_mock_1_2", "name": "g", "input": map[string]any{"n": 2.0}}},
			},
			wantStop: "tool_use", wantUsage: converseUsage(7, 4, 11, 0, 0),
		},
		{
			name: "maxTokens", body: converseBody + `,"inferenceConfig":{"maxTokens":2}}`, header: signed(),
			wantContent: []any{map[string]any{"text": "tok1 tok2"}}, wantStop: "max_tokens",
			wantUsage: converseUsage(7, 2, 9, 0, 0),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, u := start(t, providertest.Config{Credential: credential})
			got, h := postJSON(t, u+"/model/"+bedrockModel+"/converse", tt.body, tt.header, http.StatusOK)
			want := map[string]any{
				"output":     map[string]any{"message": map[string]any{"role": "assistant", "content": tt.wantContent}},
				"stopReason": tt.wantStop, "usage": tt.wantUsage, "metrics": map[string]any{"latencyMs": 0.0},
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("converse mismatch (-want +got):\n%s", diff)
			}
			if h.Get("X-Amzn-RequestId") != "mock-request-1" {
				t.Errorf("X-Amzn-RequestId = %q", h.Get("X-Amzn-RequestId"))
			}
		})
	}
}

func TestConverseStream(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		body   string
		header map[string]string
		want   converseResult
	}{
		{
			name: "text", body: converseBody + `}`, header: signed(providertest.HeaderChunks, "2"),
			want: converseResult{
				types: []string{"messageStart", "contentBlockDelta", "contentBlockDelta", "contentBlockStop", "messageStop", "metadata"},
				text:  "tok1 tok2 ", stop: "end_turn", usage: converseUsage(7, 2, 9, 0, 0), content: 2,
			},
		},
		{
			name: "reasoning and tools with cache", body: converseBody + `}`,
			header: signed(providertest.HeaderToolCall, "f", providertest.HeaderReasoningTokens, "1", providertest.HeaderCachedTokens, "5"),
			want: converseResult{
				types: []string{
					"messageStart", "contentBlockDelta", "contentBlockDelta", "contentBlockStop",
					"contentBlockStart", "contentBlockDelta", "contentBlockDelta", "contentBlockStop", "messageStop", "metadata",
				},
				reasoning: "think1 ", signature: providertest.Signature("think1 "),
				tools: []map[string]string{{"toolUseId": "tooluse_mock_1_1", "name": "f", "input": `{"n":1}`}},
				stop:  "tool_use", usage: converseUsage(2, 4, 11, 5, 0), content: 4,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, u := start(t, providertest.Config{Credential: credential})
			resp := post(t, u+"/model/"+bedrockModel+"/converse-stream", tt.body, tt.header, http.StatusOK)
			defer resp.Body.Close()
			if ct := resp.Header.Get("Content-Type"); ct != "application/vnd.amazon.eventstream" {
				t.Errorf("Content-Type = %q", ct)
			}
			got := checkConverse(t, readAWS(t, resp.Body))
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(converseResult{})); diff != "" {
				t.Errorf("stream mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestBedrockInvoke(t *testing.T) {
	t.Parallel()
	body := `{"anthropic_version":"bedrock-2023-05-31","max_tokens":100,` + anthropicMessages + `}`
	t.Run("whole", func(t *testing.T) {
		t.Parallel()
		_, u := start(t, providertest.Config{Credential: credential})
		got, h := postJSON(t, u+"/model/"+bedrockModel+"/invoke", body,
			signed(providertest.HeaderCachedTokens, "2", providertest.HeaderCacheWriteTokens, "3"), http.StatusOK)
		want := map[string]any{
			"id": "msg_mock_1", "type": "message", "role": "assistant", "model": bedrockModel,
			"content":     []any{map[string]any{"type": "text", "text": "tok1 tok2 tok3 tok4"}},
			"stop_reason": "end_turn", "stop_sequence": nil, "usage": anthropicUsage(5, 3, 2, 4),
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("invoke mismatch (-want +got):\n%s", diff)
		}
		wantHeaders := map[string]string{
			"X-Amzn-Bedrock-Input-Token-Count": "5", "X-Amzn-Bedrock-Output-Token-Count": "4",
			"X-Amzn-Bedrock-Cache-Read-Input-Token-Count": "2", "X-Amzn-Bedrock-Cache-Write-Input-Token-Count": "3",
		}
		for k, v := range wantHeaders {
			if h.Get(k) != v {
				t.Errorf("%s = %q, want %q", k, h.Get(k), v)
			}
		}
	})
	t.Run("streamed", func(t *testing.T) {
		t.Parallel()
		_, u := start(t, providertest.Config{Credential: credential})
		resp := post(t, u+"/model/"+bedrockModel+"/invoke-with-response-stream",
			strings.Replace(body, `"max_tokens":100`, `"max_tokens":100,"thinking":{"type":"enabled","budget_tokens":1024}`, 1),
			signed(providertest.HeaderToolCall, "f", providertest.HeaderCachedTokens, "1"), http.StatusOK)
		defer resp.Body.Close()
		events := bedrockChunks(t, readAWS(t, resp.Body))
		for _, e := range events {
			if e.name == "ping" {
				t.Error("Bedrock streams carry no pings")
			}
		}
		got := checkAnthropic(t, events)
		wantBlocks := []map[string]any{
			{"type": "thinking", "thinking": "think1 ", "signature": providertest.Signature("think1 ")},
			{"type": "tool_use", "id": "toolu_mock_1_1", "name": "f", "input": map[string]any{}, "partial": `{"n":1}`},
		}
		if diff := cmp.Diff(wantBlocks, got.blocks); diff != "" {
			t.Errorf("blocks (-want +got):\n%s", diff)
		}
		wantMetrics := map[string]any{
			"inputTokenCount": 9.0, "outputTokenCount": 4.0, "invocationLatency": 0.0, "firstByteLatency": 0.0,
			"cacheReadInputTokenCount": 1.0, "cacheWriteInputTokenCount": 0.0,
		}
		if diff := cmp.Diff(wantMetrics, got.stop["amazon-bedrock-invocationMetrics"]); diff != "" {
			t.Errorf("invocation metrics (-want +got):\n%s", diff)
		}
		if got.start["model"] != bedrockModel || got.stopReason != "tool_use" {
			t.Errorf("model %v stop_reason %v", got.start["model"], got.stopReason)
		}
	})
}

func TestBedrockRefusals(t *testing.T) {
	t.Parallel()
	_, u := start(t, providertest.Config{Credential: credential})
	invoke := `{"anthropic_version":"bedrock-2023-05-31","max_tokens":5,"messages":[]}`
	tests := []struct {
		name, path, body string
		header           map[string]string
		want             int
		wantType         string
	}{
		{"no Authorization", "converse", converseBody + `}`, nil, 403, "MissingAuthenticationTokenException"},
		{"wrong API key", "converse", converseBody + `}`, map[string]string{"Authorization": "Bearer nope"}, 403, "UnrecognizedClientException"},
		{"Bedrock API key", "converse", converseBody + `}`, map[string]string{"Authorization": "Bearer " + credential}, 200, ""},
		{"no messages", "converse", `{"messages":[]}`, signed(), 400, "ValidationException"},
		{"malformed header", "converse-stream", converseBody + `}`, signed(providertest.HeaderToolCall, "a,,b"), 400, "ValidationException"},
		{"invoke without anthropic_version", "invoke", `{"max_tokens":5,"messages":[]}`, signed(), 400, "ValidationException"},
		{"invoke without max_tokens", "invoke-with-response-stream", `{"anthropic_version":"x","messages":[]}`, signed(), 400, "ValidationException"},
		{"invoke with stream", "invoke-with-response-stream", `{"anthropic_version":"x","max_tokens":5,"stream":true,"messages":[]}`, signed(), 400, "ValidationException"},
		{"invoke with model", "invoke", `{"model":"m","anthropic_version":"x","max_tokens":5,"messages":[]}`, signed(), 400, "ValidationException"},
		{"invoke with betas not a list", "invoke", `{"anthropic_version":"x","anthropic_beta":"b","max_tokens":5,"messages":[]}`, signed(), 400, "ValidationException"},
		{"invoke with betas", "invoke", `{"anthropic_version":"x","anthropic_beta":["b"],"max_tokens":5,"messages":[]}`, signed(), 200, ""},
		{"injected 429", "invoke", invoke, signed(providertest.HeaderError, "429"), 429, "ThrottlingException"},
		{"injected 424", "converse", converseBody + `}`, signed(providertest.HeaderError, "424"), 424, "ModelErrorException"},
		{"injected 503", "converse-stream", converseBody + `}`, signed(providertest.HeaderError, "503"), 503, "ServiceUnavailableException"},
		{"injected 502", "converse", converseBody + `}`, signed(providertest.HeaderError, "502"), 502, "InternalServerException"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, h := postJSON(t, u+"/model/"+bedrockModel+"/"+tt.path, tt.body, tt.header, tt.want)
			if tt.want == http.StatusOK {
				return
			}
			if h.Get("X-Amzn-ErrorType") != tt.wantType || got["message"] == nil || len(got) != 1 {
				t.Errorf("X-Amzn-ErrorType %q body %v, want %s and a message", h.Get("X-Amzn-ErrorType"), got, tt.wantType)
			}
		})
	}
}

// A Bedrock model id may be an ARN, whose slash the caller escapes; the
// mock answers with the id unescaped and records the path as sent.
func TestBedrockEscapedModelID(t *testing.T) {
	t.Parallel()
	m, u := start(t, providertest.Config{})
	arn := "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-x-v1:0"
	body := `{"anthropic_version":"bedrock-2023-05-31","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`
	got, _ := postJSON(t, u+"/model/"+url.PathEscape(arn)+"/invoke", body, nil, http.StatusOK)
	if got["model"] != arn {
		t.Errorf("model = %v, want %s", got["model"], arn)
	}
	last, _ := m.LastRequest()
	if want := "/model/" + url.PathEscape(arn) + "/invoke"; last.EscapedPath != want || last.Path != "/model/"+arn+"/invoke" {
		t.Errorf("recorded path %q escaped %q, want %q", last.Path, last.EscapedPath, want)
	}
}

func TestParseSigV4(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in     string
		want   providertest.SigV4
		wantOK bool
	}{
		{sigV4, providertest.SigV4{
			AccessKeyID: "AKIDEXAMPLE", Date: "20250101", Region: "us-east-1", Service: "bedrock",
			SignedHeaders: []string{"content-type", "host", "x-amz-date"}, Signature: "0123456789abcdef",
		}, true},
		{"Bearer x", providertest.SigV4{}, false},
		{"AWS4-HMAC-SHA256 Credential=AK/20250101/us-east-1/bedrock/aws4_request, SignedHeaders=host", providertest.SigV4{}, false},
		{"AWS4-HMAC-SHA256 Credential=AK/20250101/bedrock/aws4_request, SignedHeaders=host, Signature=ab", providertest.SigV4{}, false},
		{"AWS4-HMAC-SHA256 Credential=AK/d/r/s/aws4_request, SignedHeaders=host, Signature=ab, Extra=1", providertest.SigV4{}, false},
	}
	for i, tt := range tests {
		got, ok := providertest.ParseSigV4(tt.in)
		if ok != tt.wantOK {
			t.Errorf("ParseSigV4(%q) ok = %v, want %v", tt.in, ok, tt.wantOK)
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("case %s: ParseSigV4 mismatch (-want +got):\n%s", strconv.Itoa(i), diff)
		}
	}
}
