// Package gemini is the codec of Google's generateContent wire format,
// which Gemini on AI Studio (v1beta) and on Vertex AI (v1) share: it
// writes a request body from the IR, reads a whole answer and an SSE
// stream (streamGenerateContent?alt=sse) into the IR, reads usage and
// reads Google's error bodies. Every function is pure: no I/O. The model
// and the method (generateContent or streamGenerateContent) travel in the
// URL, which the provider adapter builds; nothing here names them.
package gemini

import (
	"strconv"

	"github.com/moat-ai/moat/services/gateway/internal/ir"
	"github.com/moat-ai/moat/services/gateway/internal/wire"
	"github.com/moat-ai/moat/services/gateway/internal/wire/jsonx"
)

// ReadUsage reads the usageMetadata of a generateContent answer or of one
// stream chunk (zero, with Found false, when it has none). A JSON array
// of chunks (streamGenerateContent without alt=sse) is read whole, its
// reports merged by maximum.
//
// Gemini's promptTokenCount includes cachedContentTokenCount, and its
// candidatesTokenCount excludes thoughtsTokenCount, while the IR keeps
// input kinds disjoint and counts reasoning within the output: Input is
// prompt − cached + toolUsePrompt (the tool results Gemini fetched itself
// are input it bills), CacheRead is cached, Output is candidates +
// thoughts, Reasoning is thoughts. Gemini has no cache writes: its
// implicit cache is free to fill.
func ReadUsage(body []byte) ir.Usage {
	var u ir.Usage
	b := trimSpace(body)
	if len(b) > 0 && b[0] == '[' {
		err := jsonx.Array(b, func(start, end int) error {
			u.Merge(ReadUsage(b[start:end]))
			return nil
		})
		if err != nil {
			return ir.Usage{}
		}
		return u
	}
	_, err := jsonx.Object(b, func(m jsonx.Member) error {
		if m.Is("usageMetadata") && b[m.Start] == '{' {
			u = usageObject(b[m.Start:m.End])
		}
		return nil
	})
	if err != nil {
		return ir.Usage{}
	}
	return u
}

// usageWire is usageMetadata, for the typed decoders.
type usageWire struct {
	PromptTokenCount        int64 `json:"promptTokenCount"`
	CandidatesTokenCount    int64 `json:"candidatesTokenCount"`
	CachedContentTokenCount int64 `json:"cachedContentTokenCount"`
	ThoughtsTokenCount      int64 `json:"thoughtsTokenCount"`
	ToolUsePromptTokenCount int64 `json:"toolUsePromptTokenCount"`
}

// usageObject reads a usageMetadata object, which the caller's scan has
// validated.
func usageObject(v []byte) ir.Usage {
	var w usageWire
	_, _ = jsonx.Object(v, func(f jsonx.Member) error { // v was validated by the caller's scan
		n, _ := jsonx.Int(v[f.Start:f.End])
		switch {
		case f.Is("promptTokenCount"):
			w.PromptTokenCount = n
		case f.Is("candidatesTokenCount"):
			w.CandidatesTokenCount = n
		case f.Is("cachedContentTokenCount"):
			w.CachedContentTokenCount = n
		case f.Is("thoughtsTokenCount"):
			w.ThoughtsTokenCount = n
		case f.Is("toolUsePromptTokenCount"):
			w.ToolUsePromptTokenCount = n
		}
		return nil
	})
	return w.usage()
}

// usage normalizes Gemini's counts (see ReadUsage).
func (w *usageWire) usage() ir.Usage {
	cached := min(max(w.CachedContentTokenCount, 0), max(w.PromptTokenCount, 0))
	thoughts := max(w.ThoughtsTokenCount, 0)
	return ir.Usage{
		Input:     max(w.PromptTokenCount, 0) - cached + max(w.ToolUsePromptTokenCount, 0),
		CacheRead: cached,
		Output:    max(w.CandidatesTokenCount, 0) + thoughts,
		Reasoning: thoughts,
		Found:     true,
	}
}

// DecodeError reads a Google error body or stream chunk,
// {"error":{"code":503,"message":...,"status":"UNAVAILABLE"}}, also as
// the one element of an array (how streamGenerateContent without alt=sse
// fails). Type is the canonical status name, derived from the code when
// the status is missing; Overloaded is set for UNAVAILABLE (code 503),
// which Google sends when the model is overloaded and which another
// attempt may pass. A 429 RESOURCE_EXHAUSTED is a quota, not an overload.
func DecodeError(body []byte) (ir.ProviderError, bool) {
	var (
		e     ir.ProviderError
		found bool
		code  int64
	)
	b := trimSpace(body)
	if len(b) > 0 && b[0] == '[' {
		n := 0
		err := jsonx.Array(b, func(start, end int) error {
			if n == 0 {
				e, found = DecodeError(b[start:end])
			}
			n++
			return nil
		})
		return e, found && err == nil && n == 1
	}
	_, err := jsonx.Object(b, func(m jsonx.Member) error {
		v := b[m.Start:m.End]
		if !m.Is("error") || v[0] != '{' {
			return nil
		}
		found = true
		_, err := jsonx.Object(v, func(f jsonx.Member) error {
			fv := v[f.Start:f.End]
			switch {
			case f.Is("status") && fv[0] == '"':
				e.Type, _ = jsonx.Unquote(fv)
			case f.Is("message") && fv[0] == '"':
				e.Message, _ = jsonx.Unquote(fv)
			case f.Is("code"):
				if fv[0] == '"' { // some proxies quote it
					s, _ := jsonx.Unquote(fv)
					code, _ = strconv.ParseInt(s, 10, 64)
				} else {
					code, _ = jsonx.Int(fv)
				}
			}
			return nil
		})
		return err
	})
	if e.Type == "" {
		e.Type = statusName(code)
	}
	e.Type = wire.Bound(e.Type)
	e.Overloaded = e.Type == "UNAVAILABLE" || code == 503
	return e, found && err == nil
}

// statusName is Google's canonical status for an HTTP status code, for
// an error body that carries only the code.
func statusName(code int64) string {
	switch code {
	case 400:
		return "INVALID_ARGUMENT"
	case 401:
		return "UNAUTHENTICATED"
	case 403:
		return "PERMISSION_DENIED"
	case 404:
		return "NOT_FOUND"
	case 409:
		return "ABORTED"
	case 429:
		return "RESOURCE_EXHAUSTED"
	case 499:
		return "CANCELLED"
	case 501:
		return "NOT_IMPLEMENTED"
	case 503:
		return "UNAVAILABLE"
	case 504:
		return "DEADLINE_EXCEEDED"
	}
	if code >= 500 {
		return "INTERNAL"
	}
	return "UNKNOWN"
}

// stopReason maps a candidate's finishReason to the IR's. Gemini ends a
// turn that calls functions with STOP, so toolUse (a functionCall was
// part of the answer) turns it into ir.StopToolUse. Every reason that
// says the answer was withheld for policy (safety, recitation, a block
// list, prohibited content, personal data, and their image variants) is
// a refusal; the rest (OTHER, MALFORMED_FUNCTION_CALL, reasons added
// later) end the turn.
func stopReason(finish string, toolUse bool) ir.StopReason {
	switch finish {
	case "MAX_TOKENS":
		return ir.StopMaxTokens
	case "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII",
		"IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION":
		return ir.StopRefusal
	}
	if toolUse {
		return ir.StopToolUse
	}
	return ir.StopEnd
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && isSpace(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
