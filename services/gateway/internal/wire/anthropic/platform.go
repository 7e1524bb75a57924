package anthropic

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/moat-ai/moat/services/gateway/internal/wire/awsstream"
	"github.com/moat-ai/moat/services/gateway/internal/wire/jsonx"
	"github.com/moat-ai/moat/services/gateway/internal/wire/sse"
)

// Platform is a cloud platform serving Claude in Anthropic's Messages
// format. Every platform reads the model from the URL and the API version
// from the body; they differ in the version's value and in what else the
// body may hold.
type Platform uint8

// The platforms.
const (
	// Vertex is Claude on Vertex AI (rawPredict, streamRawPredict), which
	// reads the body's stream member.
	Vertex Platform = iota + 1
	// Bedrock is Claude on Amazon Bedrock (InvokeModel,
	// InvokeModelWithResponseStream), which refuses a stream member
	// ("extraneous key [stream] is not permitted": streaming is the URL's
	// choice) and takes the betas in the body, as anthropic_beta.
	Bedrock
)

var platforms = [...]struct {
	version    string
	keepStream bool
}{
	Vertex:  {version: "vertex-2023-10-16", keepStream: true},
	Bedrock: {version: "bedrock-2023-05-31"},
}

// Version is the anthropic_version the platform takes in the body.
func (p Platform) Version() string {
	if int(p) < len(platforms) {
		return platforms[p].version
	}
	return ""
}

// ForPlatform returns a Messages body as Claude on platform p takes it:
// the model removed (the platform reads it from the URL), the stream
// member too unless the platform reads it, anthropic_version added unless
// the body has one, and, unless the body has an anthropic_beta, the
// client's betas added as one: betas are the client's anthropic-beta
// header values, each a comma-separated list. Every other byte is copied
// as it came (cache_control, thinking signatures, unknown members). body
// must have passed ParseRequest or be the output of EncodeRequest; a body
// that does not scan is returned as it came, for the provider to refuse.
func ForPlatform(body []byte, p Platform, betas []string) []byte {
	var (
		edits               []jsonx.Edit
		hasVersion, hasBeta bool
		prevEnd             = -1
		keepStream          = int(p) < len(platforms) && platforms[p].keepStream
	)
	closing, err := jsonx.Object(body, func(m jsonx.Member) error {
		switch {
		case m.Is("model"), m.Is("stream") && !keepStream:
			// Cut from the end of the previous member (its comma
			// included) to the end of this value, or, for the first
			// member, from the opening brace to the next member.
			start := prevEnd
			if start < 0 {
				start = bytes.IndexByte(body, '{') + 1
			}
			edits = append(edits, jsonx.Edit{Start: start, End: m.End})
		case m.Is("anthropic_version"):
			hasVersion = true
		case m.Is("anthropic_beta"):
			hasBeta = true
		}
		prevEnd = m.End
		return nil
	})
	if err != nil {
		return body
	}
	var add []byte
	if !hasVersion {
		add = append(add, `,"anthropic_version":`...)
		add = jsonx.AppendString(add, p.Version())
	}
	if !hasBeta {
		add = appendBetas(add, betas)
	}
	if len(add) > 0 {
		edits = append(edits, jsonx.Edit{Start: closing, End: closing, With: add})
	}
	out := jsonx.Apply(body, edits...)
	// A removed first member (or an object left empty before the added
	// members) leaves "{," behind: drop that comma.
	if i := bytes.IndexByte(out, '{'); i >= 0 {
		j := i + 1
		for j < len(out) && (out[j] == ' ' || out[j] == '\n' || out[j] == '\t' || out[j] == '\r') {
			j++
		}
		if j < len(out) && out[j] == ',' {
			out = append(out[:j], out[j+1:]...)
		}
	}
	return out
}

// appendBetas appends `,"anthropic_beta":[...]` with the betas the header
// values list, nothing when they list none.
func appendBetas(dst []byte, values []string) []byte {
	n := 0
	for _, v := range values {
		for b := range strings.SplitSeq(v, ",") {
			b = strings.TrimSpace(b)
			if b == "" {
				continue
			}
			if n == 0 {
				dst = append(dst, `,"anthropic_beta":[`...)
			} else {
				dst = append(dst, ',')
			}
			dst = jsonx.AppendString(dst, b)
			n++
		}
	}
	if n > 0 {
		dst = append(dst, ']')
	}
	return dst
}

// BedrockStream reads the answer of Bedrock's InvokeModelWithResponseStream
// for Claude as the Anthropic event stream it wraps, in the shape of the
// sse package's reader: each `chunk` frame's payload, {"bytes": <base64 of
// one event's JSON>, ...}, is one event, named by its type and rendered as
// SSE in Raw, as api.anthropic.com would have sent it, so that a native
// relay forwards Raw to an Anthropic client. An exception frame
// (throttlingException, modelStreamErrorException, validationException,
// ...) becomes Anthropic's error event, with the error type Anthropic
// gives the same failure and Bedrock's message. Frames of other types are
// skipped. It is for one stream and not safe for concurrent use.
type BedrockStream struct {
	r    *awsstream.Reader
	data []byte // the event's JSON
	name []byte // its type, when it had to be unescaped
	raw  []byte // its SSE rendering
}

// NewBedrockStream returns a reader of the Anthropic events r's frames
// carry.
func NewBedrockStream(r *awsstream.Reader) *BedrockStream { return &BedrockStream{r: r} }

// Buffered reports how many bytes of the stream have arrived and wait in
// the reader: a relay flushes when none do.
func (s *BedrockStream) Buffered() int { return s.r.Buffered() }

var (
	chunkName    = []byte("chunk")
	errorName    = []byte("error")
	eventPrefix  = []byte("event: ")
	dataPrefix   = []byte("\ndata: ")
	eventTrailer = []byte("\n\n")
)

// Next returns the next event; its slices are valid until the next call.
// At the end of the stream it returns io.EOF. A chunk that is not an
// object holding base64 of one JSON object returns an error wrapping
// awsstream.ErrMalformed, as do the frame errors of awsstream.Reader.
func (s *BedrockStream) Next() (sse.Event, error) {
	for {
		f, err := s.r.Next()
		if err != nil {
			return sse.Event{}, err
		}
		switch {
		case f.Exception:
			e, _ := awsstream.DecodeError(f.Data, string(f.Name))
			msg := e.Message
			if msg == "" {
				msg = "Bedrock reported " + e.Type + "."
			}
			s.data = AppendError(s.data[:0], bedrockErrorType(e.Type), msg)
			return s.event(errorName), nil
		case bytes.Equal(f.Name, chunkName):
			return s.chunk(f.Data)
		}
	}
}

// chunk decodes one chunk payload into s.data and names it.
func (s *BedrockStream) chunk(payload []byte) (sse.Event, error) {
	var quoted []byte
	_, err := jsonx.Object(payload, func(m jsonx.Member) error {
		if m.Is("bytes") && payload[m.Start] == '"' {
			quoted = payload[m.Start:m.End]
		}
		return nil
	})
	if err != nil || quoted == nil {
		return sse.Event{}, fmt.Errorf("%w: a chunk without bytes", awsstream.ErrMalformed)
	}
	b64 := quoted[1 : len(quoted)-1]
	if bytes.IndexByte(b64, '\\') >= 0 {
		// An encoder that escapes '/' as "\/".
		u, err := jsonx.Unquote(quoted)
		if err != nil {
			return sse.Event{}, fmt.Errorf("%w: a chunk's bytes do not unquote", awsstream.ErrMalformed)
		}
		b64 = []byte(u)
	}
	s.data = grow(s.data, base64.StdEncoding.DecodedLen(len(b64)))
	n, err := base64.StdEncoding.Decode(s.data, b64)
	if err != nil {
		return sse.Event{}, fmt.Errorf("%w: a chunk's bytes are not base64", awsstream.ErrMalformed)
	}
	s.data = s.data[:n]
	// Line ends can only be whitespace between JSON tokens (a string
	// holds them escaped); an SSE data line must hold none.
	for i, c := range s.data {
		if c == '\n' || c == '\r' {
			s.data[i] = ' '
		}
	}
	var name []byte
	_, err = jsonx.Object(s.data, func(m jsonx.Member) error {
		if !m.Is("type") || s.data[m.Start] != '"' {
			return nil
		}
		name = s.data[m.Start+1 : m.End-1]
		if bytes.IndexByte(name, '\\') >= 0 {
			t, err := jsonx.Unquote(s.data[m.Start:m.End])
			if err != nil {
				return err
			}
			s.name = append(s.name[:0], t...)
			name = s.name
		}
		return nil
	})
	if err != nil {
		return sse.Event{}, fmt.Errorf("%w: a chunk that is not one JSON object", awsstream.ErrMalformed)
	}
	return s.event(name), nil
}

// event renders s.data, named name, as an SSE event.
func (s *BedrockStream) event(name []byte) sse.Event {
	s.raw = s.raw[:0]
	if len(name) > 0 {
		s.raw = append(append(s.raw, eventPrefix...), name...)
		s.raw = append(s.raw, dataPrefix...)
	} else {
		s.raw = append(s.raw, dataPrefix[1:]...)
	}
	s.raw = append(append(s.raw, s.data...), eventTrailer...)
	return sse.Event{Raw: s.raw, Name: name, Data: s.data}
}

// bedrockErrorTypes are the error types Anthropic gives the failures
// Bedrock reports as these exceptions (awsstream.DecodeError's names):
// what an Anthropic client branches on, a rate limit or an overload
// included. An exception not listed is an api_error.
var bedrockErrorTypes = map[string]string{
	"ThrottlingException":           "rate_limit_error",
	"ServiceQuotaExceededException": "rate_limit_error",
	"ServiceUnavailableException":   "overloaded_error",
	"ModelNotReadyException":        "overloaded_error",
	"ValidationException":           "invalid_request_error",
	"AccessDeniedException":         "permission_error",
	"ResourceNotFoundException":     "not_found_error",
	"ModelTimeoutException":         "timeout_error",
	"ModelStreamErrorException":     "api_error",
	"ModelErrorException":           "api_error",
	"InternalServerException":       "api_error",
}

func bedrockErrorType(awsType string) string {
	if t, ok := bedrockErrorTypes[awsType]; ok {
		return t
	}
	return "api_error"
}

// grow returns b resized to n bytes; its contents are not kept.
func grow(b []byte, n int) []byte {
	if cap(b) >= n {
		return b[:n]
	}
	return make([]byte, n, max(n, 2*cap(b)))
}
