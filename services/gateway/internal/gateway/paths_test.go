package gateway

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"

	"github.com/moat-ai/moat/services/gateway/internal/ir"
	"github.com/moat-ai/moat/services/gateway/internal/provider"
	"github.com/moat-ai/moat/services/gateway/internal/snapshot"
	"github.com/moat-ai/moat/services/gateway/internal/wire/anthropic"
	"github.com/moat-ai/moat/services/gateway/internal/wire/awsstream"
)

type nopSigner struct{}

func (nopSigner) Sign(*http.Request, []byte, time.Time) error { return nil }

func callOf(p *provider.Provider) *Call {
	return &Call{route: &snapshot.Route{Provider: p, UpstreamModel: "anthropic.claude-sonnet-4-20250514-v1:0"}}
}

// TestMessagesNativeBedrockErrors checks that Bedrock's errors, which are
// AWS's even where its answers are Anthropic's, reach an Anthropic client
// as refusals (rendered in Anthropic's shape) keeping the status and the
// message, while api.anthropic.com's errors pass as they came.
func TestMessagesNativeBedrockErrors(t *testing.T) {
	t.Parallel()
	bedrock := provider.New(provider.Config{Name: "b", Kind: provider.Bedrock, BedrockRegion: "us-east-1", AWS: nopSigner{}})
	tests := []struct {
		status          int
		errorType, body string
		want            Refusal
	}{
		// Throttling is an overload, as on the Converse path: another
		// attempt may succeed.
		{429, "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/", `{"message":"Too many requests, please wait before trying again."}`,
			Refusal{Status: 503, Type: TypeOverloaded, Code: "rate_limit_exceeded", Message: "The provider refused the request: Too many requests, please wait before trying again."}},
		{404, "ResourceNotFoundException", `{"message":"Model not found."}`,
			Refusal{Status: 404, Type: TypeNotFound, Code: CodeUpstreamError, Message: "The provider refused the request: Model not found."}},
		{503, "ServiceUnavailableException", `{"message":"Bedrock is unable to process your request."}`,
			Refusal{Status: 503, Type: TypeOverloaded, Code: CodeUpstreamError, Message: "The provider refused the request: Bedrock is unable to process your request."}},
		{400, "ValidationException", `{"message":"Malformed input request: #: extraneous key [stream] is not permitted"}`,
			Refusal{Status: 400, Type: TypeInvalidRequest, Code: CodeUpstreamError, Message: "The provider refused the request: Malformed input request: #: extraneous key [stream] is not permitted"}},
		{500, "", `not json`, Refusal{Status: 500, Type: TypeAPI, Code: CodeUpstreamError, Message: "The provider refused the request."}},
	}
	for _, tt := range tests {
		c := callOf(bedrock)
		c.upstreamErrorType = tt.errorType
		body, d := messagesNative{}.upstreamError(c, tt.status, []byte(tt.body))
		tt.want.Gate = GateUpstream
		if body != nil || d == nil || *d != tt.want {
			t.Errorf("Bedrock %d %s: body %q, refusal %+v; want %+v", tt.status, tt.errorType, body, d, tt.want)
		}
	}
	direct := provider.New(provider.Config{Name: "a", Kind: provider.Anthropic, Credential: []byte("k")})
	raw := []byte(`{"type":"error","error":{"type":"rate_limit_error","message":"slow"}}`)
	if body, d := (messagesNative{}).upstreamError(callOf(direct), 429, raw); d != nil || !bytes.Equal(body, raw) {
		t.Errorf("Anthropic 429: body %q, refusal %+v; want the body as it came", body, d)
	}
}

func chunk(t *testing.T, event string) []byte {
	t.Helper()
	payload, err := json.Marshal(map[string]string{"bytes": base64.StdEncoding.EncodeToString([]byte(event)), "p": "abc"})
	if err != nil {
		t.Fatal(err)
	}
	return frame(t, "event", ":event-type", "chunk", payload)
}

func frame(t *testing.T, messageType, nameHeader, name string, payload []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := eventstream.NewEncoder().Encode(&b, eventstream.Message{Headers: eventstream.Headers{
		{Name: nameHeader, Value: eventstream.StringValue(name)},
		{Name: ":message-type", Value: eventstream.StringValue(messageType)},
	}, Payload: payload}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestMessagesNativeBedrockStream relays an InvokeModelWithResponseStream
// answer through the native streamer as the relay does: the client gets
// Anthropic's SSE events, the usage comes from message_start and
// message_delta, and an exception ends the stream with Anthropic's error
// event and a refusal.
func TestMessagesNativeBedrockStream(t *testing.T) {
	t.Parallel()
	events := []string{
		`{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"usage":{"input_tokens":5,"cache_read_input_tokens":2,"cache_creation_input_tokens":1,"output_tokens":1}}}`,
		`{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}`,
		`{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCg=="}}`,
		`{"type":"content_block_stop","index":0}`,
		`{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":7}}`,
		`{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":8,"outputTokenCount":7}}`,
	}
	var stream []byte
	var want strings.Builder
	for _, e := range events {
		stream = append(stream, chunk(t, e)...)
		var typ struct{ Type string }
		_ = json.Unmarshal([]byte(e), &typ)
		want.WriteString("event: " + typ.Type + "\ndata: " + e + "\n\n")
	}
	relay := func(stream []byte) (string, *Refusal, ir.Usage) {
		rd := anthropic.NewBedrockStream(awsstream.NewReader(bufio.NewReader(bytes.NewReader(stream)), 1<<20))
		s := messagesNative{}.stream(nil)
		var out []byte
		for {
			ev, err := rd.Next()
			if errors.Is(err, io.EOF) {
				return string(out), nil, s.usage()
			}
			if err != nil {
				t.Fatal(err)
			}
			var d *Refusal
			if out, _, d = s.event(out, ev); d != nil {
				return string(out), d, s.usage()
			}
		}
	}
	out, d, u := relay(stream)
	if out != want.String() || d != nil {
		t.Errorf("relayed %q, refusal %+v; want %q", out, d, want.String())
	}
	if wantUsage := (ir.Usage{Input: 5, CacheRead: 2, CacheWrite: 1, Output: 7, Found: true}); u != wantUsage {
		t.Errorf("usage %+v, want %+v", u, wantUsage)
	}

	for exception, typ := range map[string]string{"serviceUnavailableException": "overloaded_error", "throttlingException": "rate_limit_error"} {
		broken := append(chunk(t, events[0]), frame(t, "exception", ":exception-type", exception, []byte(`{"message":"busy"}`))...)
		out, d, _ = relay(broken)
		if !strings.HasSuffix(out, "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\""+typ+"\",\"message\":\"busy\"}}\n\n") ||
			d == nil || d.Status != http.StatusServiceUnavailable || d.Type != TypeOverloaded {
			t.Errorf("%s relayed as %q, refusal %+v; want the %s event and a 503", exception, out, d, typ)
		}
	}
}
