package openairesp

import (
	"bytes"

	"github.com/moat-ai/moat/services/gateway/internal/ir"
	"github.com/moat-ai/moat/services/gateway/internal/wire/jsonx"
)

// ReadUsage reads the usage object of a whole response object,
// normalized: OpenAI's input_tokens include the tokens read from and
// written to the prompt cache (input_tokens_details.cached_tokens and
// cache_write_tokens), which ir.Usage keeps apart, and output_tokens
// include the reasoning tokens, as ir.Usage's Output does. A body without
// a usage object (or null usage, as in response.created) reports nothing
// found; malformed input reports nothing.
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

// usageObject reads a Responses usage object v, validated by the caller.
func usageObject(v []byte) ir.Usage {
	var (
		u                    ir.Usage
		input, cached, write int64
	)
	if len(v) == 0 || v[0] != '{' {
		return u
	}
	u.Found = true
	_, _ = jsonx.Object(v, func(f jsonx.Member) error { // v was validated by the caller's scan
		fv := v[f.Start:f.End]
		switch {
		case f.Is("input_tokens"):
			input, _ = jsonx.Int(fv)
		case f.Is("output_tokens"):
			u.Output, _ = jsonx.Int(fv)
		case f.Is("input_tokens_details"):
			cached = detail(fv, "cached_tokens")
			write = detail(fv, "cache_write_tokens")
		case f.Is("output_tokens_details"):
			u.Reasoning = detail(fv, "reasoning_tokens")
		}
		return nil
	})
	// A provider reporting more cached tokens than input tokens is wrong;
	// never let the uncached count go negative.
	cached = min(cached, input)
	write = min(write, input-cached)
	u.Input, u.CacheRead, u.CacheWrite = input-cached-write, cached, write
	u.Reasoning = min(u.Reasoning, u.Output)
	return u
}

// detail reads the integer member name of the object v (0 when v is not
// an object or lacks it).
func detail(v []byte, name string) int64 {
	var n int64
	if len(v) == 0 || v[0] != '{' {
		return 0
	}
	_, _ = jsonx.Object(v, func(m jsonx.Member) error { // v was validated by the outer scan
		if m.Is(name) {
			n, _ = jsonx.Int(v[m.Start:m.End])
		}
		return nil
	})
	return n
}

// The stream's event types the native path looks at.
const (
	typeCreated          = "response.created"
	typeInProgress       = "response.in_progress"
	typeCompleted        = "response.completed"
	typeIncomplete       = "response.incomplete"
	typeFailed           = "response.failed"
	typeErrorEvent       = "error"
	typeItemAdded        = "response.output_item.added"
	typeItemDone         = "response.output_item.done"
	typePartAdded        = "response.content_part.added"
	typePartDone         = "response.content_part.done"
	typeTextDelta        = "response.output_text.delta"
	typeTextDone         = "response.output_text.done"
	typeRefusalDelta     = "response.refusal.delta"
	typeArgsDelta        = "response.function_call_arguments.delta"
	typeArgsDone         = "response.function_call_arguments.done"
	typeSummaryAdded     = "response.reasoning_summary_part.added"
	typeSummaryDone      = "response.reasoning_summary_part.done"
	typeSummaryTextDelta = "response.reasoning_summary_text.delta"
	typeSummaryTextDone  = "response.reasoning_summary_text.done"
)

var typeKey = []byte(`"type"`)

// eventType is an event's type: its `event:` name, or, for an upstream
// that sends none, its data's type member. OpenAI sends both, equal.
func eventType(name, data []byte) []byte {
	if len(name) > 0 {
		return name
	}
	if len(data) == 0 || data[0] != '{' || !bytes.Contains(data, typeKey) {
		return nil
	}
	return memberString(data, "type")
}

// memberString returns the string member name of the object b, nil when
// it is absent, not a string or b is malformed. An unescaped string is a
// slice of b; only an escaped one is copied.
func memberString(b []byte, name string) []byte {
	var s []byte
	_, _ = jsonx.Object(b, func(m jsonx.Member) error { // malformed: nil
		v := b[m.Start:m.End]
		if m.Is(name) && v[0] == '"' {
			if bytes.IndexByte(v, '\\') < 0 {
				s = v[1 : len(v)-1]
			} else if u, err := jsonx.Unquote(v); err == nil {
				s = []byte(u)
			}
		}
		return nil
	})
	return s
}

// member returns the raw value of the member name of the object b, nil
// when it is absent or b is malformed.
func member(b []byte, name string) []byte {
	var v []byte
	_, err := jsonx.Object(b, func(m jsonx.Member) error {
		if m.Is(name) {
			v = b[m.Start:m.End]
		}
		return nil
	})
	if err != nil {
		return nil
	}
	return v
}

// ReadStreamUsage reads the usage a native stream event carries: the
// response object of response.completed, response.incomplete and
// response.failed holds it; other events (response.created's response
// has null usage) report nothing. Reports are cumulative: merge them with
// ir.Usage.Merge.
func ReadStreamUsage(name, data []byte) ir.Usage {
	switch string(eventType(name, data)) {
	case typeCompleted, typeIncomplete, typeFailed:
		if r := member(data, "response"); len(r) > 0 && r[0] == '{' {
			return ReadUsage(r)
		}
	}
	return ir.Usage{}
}

// StreamHasContent reports whether a native stream event is past the
// commit point: the first text or refusal delta, function call arguments
// delta, function_call item added (a tool call has begun), or the
// response's end (completed, incomplete or failed; a failure is also an
// error, see StreamError). response.created, response.in_progress, a
// message or reasoning item's start and reasoning summaries are held, so
// that an error before real output still falls back to another provider.
// An event whose type cannot be read counts as content, so that it is
// relayed rather than held.
func StreamHasContent(name, data []byte) bool {
	t := eventType(name, data)
	if t == nil {
		return len(bytes.TrimSpace(data)) > 0
	}
	switch string(t) {
	case typeTextDelta, typeRefusalDelta, typeArgsDelta, typeCompleted, typeIncomplete, typeFailed:
		return true
	case typeItemAdded:
		item := member(data, "item")
		if len(item) == 0 || item[0] != '{' {
			return true // malformed: relay it
		}
		return string(memberString(item, "type")) == "function_call"
	}
	return false
}

// StreamError reports whether a native stream event is a failure, and
// what it says: an `error` event ({"type":"error","code","message",
// "param"}, or the {"error":{...}} form some compatible servers send) or
// response.failed, whose response.error holds the code and message.
func StreamError(name, data []byte) (ir.ProviderError, bool) {
	var e ir.ProviderError
	switch string(eventType(name, data)) {
	case typeErrorEvent:
		if inner := member(data, "error"); len(inner) > 0 && inner[0] == '{' {
			readError(&e, inner)
		} else {
			readError(&e, data)
		}
	case typeFailed:
		if r := member(data, "response"); len(r) > 0 && r[0] == '{' {
			if inner := member(r, "error"); len(inner) > 0 && inner[0] == '{' {
				readError(&e, inner)
			}
		}
	default:
		return e, false
	}
	if e.Type == "" {
		e.Type = "server_error"
	}
	return e, true
}

// readError reads an error object's code (else type) and message.
func readError(e *ir.ProviderError, v []byte) {
	_, _ = jsonx.Object(v, func(f jsonx.Member) error { // malformed: what was read so far
		fv := v[f.Start:f.End]
		if fv[0] != '"' {
			return nil
		}
		switch {
		case f.Is("message"):
			e.Message, _ = jsonx.Unquote(fv)
		case f.Is("code"), f.Is("type") && e.Type == "":
			s, _ := jsonx.Unquote(fv)
			if s == "error" {
				return nil // the event's own type, not the error's
			}
			e.Type = s
		}
		return nil
	})
	switch e.Type {
	case "server_overloaded", "overloaded", "overloaded_error":
		e.Overloaded = true
	}
}

// SequenceNumber reads a stream event's sequence_number: a relay that
// ends a native stream with its own error event numbers it one past the
// last event it forwarded.
func SequenceNumber(data []byte) (int64, bool) {
	v := member(data, "sequence_number")
	if v == nil {
		return 0, false
	}
	return jsonx.Int(v)
}

// StreamErrorEvent appends the Responses stream's own terminal error
// event, {"type":"error","code","message","param":null,
// "sequence_number"}, with seq one past the last event the client got
// (the encoder's NextSequence, or SequenceNumber+1 on the native path).
func StreamErrorEvent(dst []byte, code, message string, seq int) []byte {
	dst = append(dst, "event: error\ndata: {\"type\":\"error\",\"code\":"...)
	dst = jsonx.AppendString(dst, code)
	dst = append(dst, `,"message":`...)
	dst = jsonx.AppendString(dst, message)
	dst = append(dst, `,"param":null,"sequence_number":`...)
	dst = jsonx.AppendInt(dst, int64(seq))
	return append(dst, "}\n\n"...)
}
