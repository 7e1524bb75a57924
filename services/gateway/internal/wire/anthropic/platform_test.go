package anthropic

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"
	"github.com/google/go-cmp/cmp"

	"github.com/moat-ai/moat/services/gateway/internal/wire/awsstream"
	"github.com/moat-ai/moat/services/gateway/internal/wire/sse"
	"github.com/moat-ai/moat/services/gateway/internal/wire/wiretest"
)

// goldenBetas are the anthropic-beta header values of the platform
// goldens: a comma-separated list and a single value.
var goldenBetas = []string{"interleaved-thinking-2025-05-14, token-efficient-tools-2025-02-19", "context-1m-2025-08-07"}

// TestForPlatformGolden edits each body of testdata/golden/platform for
// Bedrock (NAME.bedrock.json, with goldenBetas) and Vertex
// (NAME.vertex.json): the outputs are valid JSON without a model, with one
// anthropic_version, with stream only for Vertex, and every other member
// byte for byte as it came.
func TestForPlatformGolden(t *testing.T) {
	t.Parallel()
	for _, in := range goldenInputs(t, "platform", "*.in.json") {
		name := strings.TrimSuffix(in, ".in.json")
		t.Run(filepath.Base(name), func(t *testing.T) {
			t.Parallel()
			body := readFile(t, in)
			for _, tt := range []struct {
				p      Platform
				suffix string
				betas  []string
			}{{Bedrock, ".bedrock.json", goldenBetas}, {Vertex, ".vertex.json", nil}} {
				out := ForPlatform(body, tt.p, tt.betas)
				checkPlatformBody(t, body, out, tt.p)
				checkGolden(t, name+tt.suffix, out)
			}
		})
	}
}

// checkPlatformBody checks what ForPlatform must hold for any body.
func checkPlatformBody(t *testing.T, in, out []byte, p Platform) {
	t.Helper()
	var before, after map[string]json.RawMessage
	if err := json.Unmarshal(in, &before); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(out, &after); err != nil {
		t.Fatalf("ForPlatform(%d) is not a JSON object: %v\n%s", p, err, out)
	}
	if _, ok := after["model"]; ok {
		t.Errorf("ForPlatform(%d) keeps the model:\n%s", p, out)
	}
	if _, ok := after["stream"]; ok != (p == Vertex && before["stream"] != nil) {
		t.Errorf("ForPlatform(%d) has stream %v:\n%s", p, ok, out)
	}
	if _, ok := after["anthropic_version"]; !ok {
		t.Errorf("ForPlatform(%d) has no anthropic_version:\n%s", p, out)
	}
	if n := bytes.Count(out, []byte(`"anthropic_version"`)); before["anthropic_version"] == nil && n != 1 {
		t.Errorf("ForPlatform(%d) has %d anthropic_version members:\n%s", p, n, out)
	}
	for k, v := range before {
		if k != "model" && k != "stream" && !bytes.Equal(v, after[k]) {
			t.Errorf("ForPlatform(%d) changed %s from %s to %s", p, k, v, after[k])
		}
	}
}

func TestForPlatform(t *testing.T) {
	t.Parallel()
	body := `{"model":"m","max_tokens":1,"messages":[]}`
	tests := []struct {
		name  string
		body  string
		p     Platform
		betas []string
		want  string
	}{
		{"bedrock without betas", body, Bedrock, nil, `{"max_tokens":1,"messages":[],"anthropic_version":"bedrock-2023-05-31"}`},
		{"empty beta values", body, Bedrock, []string{"", " , "}, `{"max_tokens":1,"messages":[],"anthropic_version":"bedrock-2023-05-31"}`},
		{"betas", body, Bedrock, []string{"a,b", " c "}, `{"max_tokens":1,"messages":[],"anthropic_version":"bedrock-2023-05-31","anthropic_beta":["a","b","c"]}`},
		{"the body's betas win", `{"anthropic_beta":["x"],"model":"m","messages":[]}`, Bedrock, []string{"a"}, `{"anthropic_beta":["x"],"messages":[],"anthropic_version":"bedrock-2023-05-31"}`},
		{"the body's version wins", `{"messages":[],"stream":false,"anthropic_version":"v"}`, Bedrock, nil, `{"messages":[],"anthropic_version":"v"}`},
		{"escaped keys", `{"mod\u0065l":"m","str\u0065am":true,"messages":[]}`, Bedrock, nil, `{"messages":[],"anthropic_version":"bedrock-2023-05-31"}`},
		{"vertex keeps stream", `{"stream":true,"model":"m"}`, Vertex, nil, `{"stream":true,"anthropic_version":"vertex-2023-10-16"}`},
		{"not JSON", `{"model":`, Bedrock, nil, `{"model":`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := string(ForPlatform([]byte(tt.body), tt.p, tt.betas)); got != tt.want {
				t.Errorf("ForPlatform(%s, %d, %q) =\n%s\nwant\n%s", tt.body, tt.p, tt.betas, got, tt.want)
			}
		})
	}
}

// FuzzForPlatform checks the edit on every body the gateway accepts.
func FuzzForPlatform(f *testing.F) {
	for _, in := range goldenInputs(f, "platform", "*.in.json") {
		f.Add(readFile(f, in))
	}
	for _, in := range goldenInputs(f, "requests", "*.in.json") {
		f.Add(readFile(f, in))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if _, err := ParseRequest(body); err != nil {
			return
		}
		for _, p := range []Platform{Bedrock, Vertex} {
			checkPlatformBody(t, body, ForPlatform(body, p, goldenBetas), p)
		}
	})
}

// chunkFrame is one InvokeModelWithResponseStream chunk carrying event,
// with Bedrock's padding member.
func chunkFrame(t testing.TB, event []byte) []byte {
	t.Helper()
	payload, err := json.Marshal(map[string]string{"bytes": base64.StdEncoding.EncodeToString(event), "p": "abcdefghijklmnop"})
	if err != nil {
		t.Fatal(err)
	}
	return awsFrame(t, "event", ":event-type", "chunk", payload)
}

func awsFrame(t testing.TB, messageType, nameHeader, name string, payload []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	err := eventstream.NewEncoder().Encode(&b, eventstream.Message{Headers: eventstream.Headers{
		{Name: nameHeader, Value: eventstream.StringValue(name)},
		{Name: ":content-type", Value: eventstream.StringValue("application/json")},
		{Name: ":message-type", Value: eventstream.StringValue(messageType)},
	}, Payload: payload})
	if err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// chunked wraps every event of an Anthropic SSE stream in a chunk frame,
// as Bedrock sends it.
func chunked(t testing.TB, stream []byte) []byte {
	t.Helper()
	rd := sse.NewReader(bufio.NewReader(bytes.NewReader(stream)), 1<<20)
	var out []byte
	for {
		ev, err := rd.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if ev.Data != nil {
			out = append(out, chunkFrame(t, ev.Data)...)
		}
	}
}

// readBedrock reads every event of an InvokeModelWithResponseStream
// answer, returning their Raw bytes joined and the error that ended the
// stream (empty at io.EOF).
func readBedrock(r io.Reader, size int) (string, string) {
	s := NewBedrockStream(awsstream.NewReader(bufio.NewReaderSize(r, size), 1<<16))
	var out strings.Builder
	for {
		ev, err := s.Next()
		if errors.Is(err, io.EOF) {
			return out.String(), ""
		}
		if err != nil {
			return out.String(), err.Error()
		}
		// Name and Data must be what Raw says.
		if want := eventRaw(ev.Name, ev.Data); !bytes.Equal(ev.Raw, want) {
			return out.String(), "Raw " + string(ev.Raw) + " is not the event " + string(want)
		}
		out.Write(ev.Raw)
	}
}

func eventRaw(name, data []byte) []byte {
	var b []byte
	if len(name) > 0 {
		b = append(append(append(b, "event: "...), name...), '\n')
	}
	return append(append(append(b, "data: "...), data...), "\n\n"...)
}

// TestBedrockStreamGolden wraps each stream of testdata/golden/streams in
// chunk frames and reads it back as SSE (testdata/golden/platform/
// NAME.bedrock.sse): the events' data as they came, each named by its
// type, which passes the protocol validator wherever the source did;
// reading the frames in small pieces gives the same events.
func TestBedrockStreamGolden(t *testing.T) {
	t.Parallel()
	for _, in := range goldenInputs(t, "streams", "*.in.sse") {
		name := strings.TrimSuffix(filepath.Base(in), ".in.sse")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			source := readFile(t, in)
			stream := chunked(t, source)
			got, err := readBedrock(bytes.NewReader(stream), 1<<16)
			if err != "" {
				t.Fatal(err)
			}
			for _, sizes := range [][]byte{{0}, {1, 2, 3, 5, 8, 13}, {200, 7}} {
				split, serr := readBedrock(&wiretest.SplitReader{B: stream, Sizes: sizes}, 16)
				if diff := cmp.Diff(got, split); diff != "" || serr != "" {
					t.Errorf("split reading %v differs (-whole +split), error %q:\n%s", sizes, serr, diff)
				}
			}
			if validateStream(source, validation{Complete: true, ToolJSON: true}) == nil {
				if err := validateStream([]byte(got), validation{Complete: true, ToolJSON: true}); err != nil {
					t.Errorf("the relayed stream breaks the grammar: %v\n%s", err, got)
				}
			}
			checkGolden(t, filepath.Join("testdata", "golden", "platform", name+".bedrock.sse"), []byte(got))
		})
	}
}

func TestBedrockStreamExceptions(t *testing.T) {
	t.Parallel()
	start := chunkFrame(t, []byte(`{"type":"message_start","message":{"usage":{"input_tokens":3,"output_tokens":1}}}`))
	tests := []struct {
		name   string
		frame  []byte
		want   string
		failed bool
	}{
		{"throttling", awsFrame(t, "exception", ":exception-type", "throttlingException", []byte(`{"message":"Too many requests, please wait."}`)),
			`{"type":"error","error":{"type":"rate_limit_error","message":"Too many requests, please wait."}}`, false},
		{"service unavailable", awsFrame(t, "exception", ":exception-type", "serviceUnavailableException", []byte(`{"message":"busy"}`)),
			`{"type":"error","error":{"type":"overloaded_error","message":"busy"}}`, false},
		{"model stream error", awsFrame(t, "exception", ":exception-type", "modelStreamErrorException", []byte(`{"message":"broke","originalStatusCode":500}`)),
			`{"type":"error","error":{"type":"api_error","message":"broke"}}`, false},
		{"validation", awsFrame(t, "exception", ":exception-type", "validationException", []byte(`{"message":"bad \"input\""}`)),
			`{"type":"error","error":{"type":"invalid_request_error","message":"bad \"input\""}}`, false},
		{"timeout without a message", awsFrame(t, "exception", ":exception-type", "modelTimeoutException", nil),
			`{"type":"error","error":{"type":"timeout_error","message":"Bedrock reported ModelTimeoutException."}}`, false},
		{"unknown exception", awsFrame(t, "exception", ":exception-type", "novelException", []byte(`{"message":"new"}`)),
			`{"type":"error","error":{"type":"api_error","message":"new"}}`, false},
		{"error frame", awsFrame(t, "error", ":error-code", "InternalFailure", nil),
			`{"type":"error","error":{"type":"api_error","message":"Bedrock reported InternalFailure."}}`, false},
		{"chunk without bytes", awsFrame(t, "event", ":event-type", "chunk", []byte(`{"p":"x"}`)), "", true},
		{"chunk not base64", awsFrame(t, "event", ":event-type", "chunk", []byte(`{"bytes":"!!"}`)), "", true},
		{"chunk not an object", chunkFrame(t, []byte(`[1]`)), "", true},
		{"chunk not JSON", chunkFrame(t, []byte(`{"type":`)), "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := readBedrock(bytes.NewReader(append(bytes.Clone(start), tt.frame...)), 64)
			wantStart := "event: message_start\ndata: " + `{"type":"message_start","message":{"usage":{"input_tokens":3,"output_tokens":1}}}` + "\n\n"
			if tt.failed {
				if got != wantStart || !strings.Contains(err, awsstream.ErrMalformed.Error()) {
					t.Errorf("got %q, error %q; want message_start then an error wrapping ErrMalformed", got, err)
				}
				return
			}
			if want := wantStart + "event: error\ndata: " + tt.want + "\n\n"; got != want || err != "" {
				t.Errorf("got %q, error %q; want %q", got, err, want)
			}
			if e, ok := DecodeError([]byte(tt.want)); !ok || e.Message == "" {
				t.Errorf("the error event does not decode as Anthropic's: %+v", e)
			}
		})
	}
}

func TestBedrockStreamOddChunks(t *testing.T) {
	t.Parallel()
	// An encoder escaping '/' in the base64 as "\/" ("??>" encodes to a
	// slash).
	b64 := strings.ReplaceAll(base64.StdEncoding.EncodeToString([]byte(`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"??>"}}`)), "/", `\/`)
	escaped := awsFrame(t, "event", ":event-type", "chunk", []byte(`{"bytes":"`+b64+`"}`))
	event := []byte(`{"type":"ping"}`)
	// Line ends between tokens, an escaped type, no type, an unknown frame.
	stream := append(chunkFrame(t, []byte("{\n  \"type\" : \"ping\"\r\n}")), escaped...)
	stream = append(stream, awsFrame(t, "event", ":event-type", "unknownEvent", []byte(`{}`))...)
	stream = append(stream, chunkFrame(t, []byte(`{"type":"mess\u0061ge_stop"}`))...)
	stream = append(stream, chunkFrame(t, []byte(`{"no":"type"}`))...)
	stream = append(stream, chunkFrame(t, event)...)
	got, err := readBedrock(bytes.NewReader(stream), 64)
	want := "event: ping\ndata: {   \"type\" : \"ping\"  }\n\n" +
		"event: content_block_delta\ndata: " + `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"??>"}}` + "\n\n" +
		"event: message_stop\ndata: " + `{"type":"mess\u0061ge_stop"}` + "\n\n" +
		"data: " + `{"no":"type"}` + "\n\n" +
		"event: ping\ndata: {\"type\":\"ping\"}\n\n"
	if diff := cmp.Diff(want, got); diff != "" || err != "" {
		t.Errorf("mismatch (-want +got), error %q:\n%s", err, diff)
	}
}

// FuzzBedrockStream feeds arbitrary frames (seeded with chunked golden
// streams) whole and split at random boundaries: both must give the same
// events and fail alike, and nothing may panic.
func FuzzBedrockStream(f *testing.F) {
	for _, in := range goldenInputs(f, "streams", "*.in.sse") {
		f.Add(chunked(f, readFile(f, in)), []byte{3, 1, 4, 1, 5, 9, 2, 6})
	}
	f.Add(awsFrame(f, "exception", ":exception-type", "throttlingException", []byte(`{"message":"slow"}`)), []byte{1})
	f.Fuzz(func(t *testing.T, stream, sizes []byte) {
		whole, werr := readBedrock(bytes.NewReader(stream), 1<<16)
		split, serr := readBedrock(&wiretest.SplitReader{B: stream, Sizes: sizes}, 16)
		if (werr == "") != (serr == "") {
			t.Fatalf("errors differ: whole %q, split %q", werr, serr)
		}
		if diff := cmp.Diff(whole, split); diff != "" {
			t.Errorf("split reading differs (-whole +split):\n%s", diff)
		}
	})
}

// BenchmarkBedrockStream reads a stream of typical text deltas.
func BenchmarkBedrockStream(b *testing.B) {
	var stream []byte
	for range 100 {
		stream = append(stream, chunkFrame(b, []byte(`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"tok "}}`))...)
	}
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	br := bufio.NewReaderSize(nil, 4096)
	ar := awsstream.NewReader(br, 1<<20)
	s := NewBedrockStream(ar)
	for b.Loop() {
		br.Reset(bytes.NewReader(stream))
		ar.Reset(br)
		for {
			if _, err := s.Next(); err != nil {
				if !errors.Is(err, io.EOF) {
					b.Fatal(err)
				}
				break
			}
		}
	}
}
