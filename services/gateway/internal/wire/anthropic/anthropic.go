// Package anthropic is the codec of Anthropic's Messages wire format: it
// validates and reads a request body in one shallow pass, rewrites the
// model by a span edit, reads usage from messages and stream events, and
// reads and writes Anthropic's error bodies. Every function is pure: no
// I/O.
package anthropic

import (
	"bytes"
	"errors"

	"github.com/moat-ai/moat/services/gateway/internal/ir"
	"github.com/moat-ai/moat/services/gateway/internal/wire"
	"github.com/moat-ai/moat/services/gateway/internal/wire/jsonx"
)

// Request errors. The codes are a stable surface; Anthropic's own error
// body has no code, so clients see them in the message and in the
// gateway's error header.
var (
	ErrMalformed     = &wire.RequestError{Code: wire.CodeInvalidJSON, Message: "The request body is not one valid JSON object."}
	ErrNested        = &wire.RequestError{Code: wire.CodeInvalidJSON, Message: "The request body is nested too deeply."}
	ErrNoModel       = &wire.RequestError{Code: "missing_model", Param: "model", Message: "model: Field required."}
	ErrModelType     = &wire.RequestError{Code: wire.CodeInvalidType, Param: "model", Message: "model: Input should be a valid string."}
	ErrNoMessages    = &wire.RequestError{Code: "missing_messages", Param: "messages", Message: "messages: Field required."}
	ErrMessagesType  = &wire.RequestError{Code: wire.CodeInvalidType, Param: "messages", Message: "messages: Input should be a valid list."}
	ErrNoMaxTokens   = &wire.RequestError{Code: "missing_max_tokens", Param: "max_tokens", Message: "max_tokens: Field required."}
	ErrMaxTokensType = &wire.RequestError{Code: wire.CodeInvalidType, Param: "max_tokens", Message: "max_tokens: Input should be a positive integer."}
	ErrStreamType    = &wire.RequestError{Code: wire.CodeInvalidType, Param: "stream", Message: "stream: Input should be a valid boolean."}
	ErrDuplicateName = &wire.RequestError{Code: wire.CodeDuplicateParameter, Message: "A parameter appears more than once in the request."}
)

// Request is what the gateway reads from a Messages body.
type Request struct {
	Model     string
	Stream    bool
	MaxTokens int64

	modelStart, modelEnd int
}

// ParseRequest validates body and reads the members the gateway needs; a
// member a gate reads that appears twice is refused. The error is a
// *wire.RequestError.
func ParseRequest(body []byte) (Request, error) { return parse(body, true) }

// ParseCountTokens validates a count_tokens body: a Messages request
// without max_tokens.
func ParseCountTokens(body []byte) (Request, error) { return parse(body, false) }

func parse(body []byte, needMax bool) (Request, error) {
	var (
		req                                      Request
		sawModel, sawMessages, sawMax, sawStream bool
	)
	_, err := jsonx.Object(body, func(m jsonx.Member) error {
		v := body[m.Start:m.End]
		switch {
		case m.Is("model"):
			if sawModel {
				return ErrDuplicateName
			}
			sawModel = true
			if v[0] != '"' {
				return ErrModelType
			}
			s, err := jsonx.Unquote(v)
			if err != nil {
				return ErrMalformed
			}
			req.Model, req.modelStart, req.modelEnd = s, m.Start, m.End
			if len(s) > wire.MaxModel {
				return wire.ErrModelTooLong
			}
		case m.Is("messages"):
			if sawMessages {
				return ErrDuplicateName
			}
			sawMessages = true
			if v[0] != '[' {
				return ErrMessagesType
			}
		case m.Is("max_tokens"):
			if sawMax {
				return ErrDuplicateName
			}
			sawMax = true
			n, ok := jsonx.Int(v)
			if !ok || n < 1 {
				return ErrMaxTokensType
			}
			req.MaxTokens = n
		case m.Is("stream"):
			if sawStream {
				return ErrDuplicateName
			}
			sawStream = true
			switch v[0] {
			case 't':
				req.Stream = true
			case 'f':
			default:
				return ErrStreamType
			}
		}
		return nil
	})
	switch {
	case errors.Is(err, jsonx.ErrTooDeep):
		return req, ErrNested
	case errors.Is(err, jsonx.ErrSyntax):
		return req, ErrMalformed
	case err != nil:
		return req, err
	case req.Model == "":
		return req, ErrNoModel
	case !sawMessages:
		return req, ErrNoMessages
	case !sawMax && needMax:
		return req, ErrNoMaxTokens
	}
	return req, nil
}

// Rewrite returns body with the model replaced by upstreamModel (a JSON
// string); every other byte is copied as it came.
func (req *Request) Rewrite(body, upstreamModel []byte) []byte {
	return jsonx.Apply(body, jsonx.Edit{Start: req.modelStart, End: req.modelEnd, With: upstreamModel})
}

// ReadUsage reads the usage of a whole message.
func ReadUsage(b []byte) ir.Usage {
	var u ir.Usage
	_, err := jsonx.Object(b, func(m jsonx.Member) error {
		if m.Is("usage") {
			u = usageObject(b[m.Start:m.End])
		}
		return nil
	})
	if err != nil {
		return ir.Usage{}
	}
	return u
}

// usageObject reads Anthropic's usage object. Its input_tokens already
// exclude the tokens read from or written to the cache.
func usageObject(v []byte) ir.Usage {
	var u ir.Usage
	if len(v) == 0 || v[0] != '{' {
		return u
	}
	u.Found = true
	_, _ = jsonx.Object(v, func(f jsonx.Member) error { // v was validated by the caller's scan
		n, _ := jsonx.Int(v[f.Start:f.End])
		switch {
		case f.Is("input_tokens"):
			u.Input = n
		case f.Is("cache_read_input_tokens"):
			u.CacheRead = n
		case f.Is("cache_creation_input_tokens"):
			u.CacheWrite = n
		case f.Is("output_tokens"):
			u.Output = n
		case f.Is("output_tokens_details") && v[f.Start] == '{':
			d := v[f.Start:f.End]
			_, _ = jsonx.Object(d, func(g jsonx.Member) error { // d was validated with v
				if g.Is("thinking_tokens") {
					u.Reasoning, _ = jsonx.Int(d[g.Start:g.End])
				}
				return nil
			})
		}
		return nil
	})
	u.Reasoning = min(u.Reasoning, u.Output)
	return u
}

// Event is the kind of a stream event.
type Event uint8

// The stream events.
const (
	EventOther Event = iota
	EventMessageStart
	EventContentBlockStart
	EventContentBlockDelta
	EventContentBlockStop
	EventMessageDelta
	EventMessageStop
	EventPing
	EventError
)

var eventNames = map[string]Event{
	"message_start":       EventMessageStart,
	"content_block_start": EventContentBlockStart,
	"content_block_delta": EventContentBlockDelta,
	"content_block_stop":  EventContentBlockStop,
	"message_delta":       EventMessageDelta,
	"message_stop":        EventMessageStop,
	"ping":                EventPing,
	"error":               EventError,
}

var typeKey = []byte(`"type"`)

// EventKind returns the kind of a stream event from its `event:` name, or
// from its data's type when it has no name.
func EventKind(name, data []byte) Event {
	if len(name) > 0 {
		return eventNames[string(name)]
	}
	if len(data) == 0 || data[0] != '{' || !bytes.Contains(data, typeKey) {
		return EventOther
	}
	var k Event
	_, _ = jsonx.Object(data, func(m jsonx.Member) error { // a malformed event is EventOther
		if m.Is("type") && data[m.Start] == '"' {
			s, _ := jsonx.Unquote(data[m.Start:m.End])
			k = eventNames[s]
		}
		return nil
	})
	return k
}

// ReadStreamUsage reads the usage a message_start (in its message) or a
// message_delta event carries. Counts are cumulative: merge them with
// ir.Usage.Merge.
func ReadStreamUsage(k Event, data []byte) ir.Usage {
	var u ir.Usage
	_, err := jsonx.Object(data, func(m jsonx.Member) error {
		v := data[m.Start:m.End]
		switch {
		case k == EventMessageStart && m.Is("message") && v[0] == '{':
			u = ReadUsage(v)
		case k == EventMessageDelta && m.Is("usage"):
			u = usageObject(v)
		}
		return nil
	})
	if err != nil {
		return ir.Usage{}
	}
	return u
}

// DecodeError reads an Anthropic error body or error event,
// {"type":"error","error":{"type":...,"message":...}}.
func DecodeError(b []byte) (wire.UpstreamError, bool) {
	var (
		e     wire.UpstreamError
		found bool
	)
	_, err := jsonx.Object(b, func(m jsonx.Member) error {
		v := b[m.Start:m.End]
		if !m.Is("error") || v[0] != '{' {
			return nil
		}
		found = true
		_, err := jsonx.Object(v, func(f jsonx.Member) error {
			switch {
			case f.Is("type") && v[f.Start] == '"':
				e.Type, _ = jsonx.Unquote(v[f.Start:f.End])
			case f.Is("message") && v[f.Start] == '"':
				e.Message, _ = jsonx.Unquote(v[f.Start:f.End])
			}
			return nil
		})
		return err
	})
	e.Overloaded = e.Type == "overloaded_error"
	return e, found && err == nil
}

// ErrorType is Anthropic's error type for an HTTP status.
func ErrorType(status int) string {
	switch status {
	case 400:
		return "invalid_request_error"
	case 401:
		return "authentication_error"
	case 402:
		return "billing_error"
	case 403:
		return "permission_error"
	case 404:
		return "not_found_error"
	case 413:
		return "request_too_large"
	case 429:
		return "rate_limit_error"
	case 503, 529:
		return "overloaded_error"
	case 504:
		return "timeout_error"
	}
	if status >= 500 {
		return "api_error"
	}
	return "invalid_request_error"
}

// AppendError appends an Anthropic error body.
func AppendError(dst []byte, typ, message string) []byte {
	dst = append(dst, `{"type":"error","error":{"type":`...)
	dst = jsonx.AppendString(dst, typ)
	dst = append(dst, `,"message":`...)
	dst = jsonx.AppendString(dst, message)
	return append(dst, "}}"...)
}
