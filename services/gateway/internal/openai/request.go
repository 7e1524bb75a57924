package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
)

// requestError is a client mistake in the request body, answered with 400
// (or 413) and the OpenAI error fields.
type requestError struct {
	code, param, message string
}

func (e *requestError) Error() string { return e.message }

var (
	errMalformed     = &requestError{code: "invalid_json", message: "We could not parse the JSON body of your request: it is not one valid JSON object."}
	errNested        = &requestError{code: "invalid_json", message: "The JSON body of your request is nested too deeply."}
	errNoModel       = &requestError{code: "missing_model", param: "model", message: "You must provide a model parameter."}
	errModelType     = &requestError{code: "invalid_type", param: "model", message: "model must be a string."}
	errNoMessages    = &requestError{code: "missing_messages", param: "messages", message: "You must provide a messages parameter."}
	errMessagesType  = &requestError{code: "invalid_type", param: "messages", message: "messages must be an array."}
	errStreamType    = &requestError{code: "invalid_type", param: "stream", message: "stream must be a boolean."}
	errOptionsType   = &requestError{code: "invalid_type", param: "stream_options", message: "stream_options must be an object."}
	errIncludeType   = &requestError{code: "invalid_type", param: "stream_options.include_usage", message: "stream_options.include_usage must be a boolean."}
	errDuplicateName = &requestError{code: "duplicate_parameter", message: "A parameter appears more than once in your request."}
)

// span is a range of a body; start < 0 means absent.
type span struct{ start, end int }

func (s span) present() bool { return s.start >= 0 }

// chatRequest is what the gateway reads from a chat-completions body: the
// model it routes by, the stream flag, and where the parts it rewrites are.
type chatRequest struct {
	model  string
	stream bool
	// clientUsage is whether the client itself asked for the usage chunk
	// (stream_options.include_usage); the gateway always asks upstream.
	clientUsage bool

	modelSpan   span
	options     span // the stream_options value
	optionsNull bool
	include     span // the include_usage value inside stream_options
	optionsSize int  // members of stream_options
	closing     int  // the top-level closing brace
}

// parseChatRequest validates body and reads the fields the gateway needs.
// Everything else is passed on untouched.
func parseChatRequest(body []byte) (chatRequest, error) {
	req := chatRequest{modelSpan: span{-1, -1}, options: span{-1, -1}, include: span{-1, -1}}
	var sawModel, sawMessages, sawStream bool
	closing, err := scanObject(body, func(m member) error {
		v := body[m.start:m.end]
		switch {
		case m.is("model"):
			if sawModel {
				return errDuplicateName
			}
			sawModel = true
			switch v[0] {
			case 'n': // null: as if absent
			case '"':
				s, err := unquote(v)
				if err != nil {
					return errMalformed
				}
				req.model, req.modelSpan = s, span{m.start, m.end}
			default:
				return errModelType
			}
		case m.is("messages"):
			if sawMessages {
				return errDuplicateName
			}
			sawMessages = true
			if v[0] != '[' {
				return errMessagesType
			}
		case m.is("stream"):
			if sawStream {
				return errDuplicateName
			}
			sawStream = true
			switch v[0] {
			case 't':
				req.stream = true
			case 'f', 'n':
			default:
				return errStreamType
			}
		case m.is("stream_options"):
			if req.options.present() {
				return errDuplicateName
			}
			req.options = span{m.start, m.end}
			switch v[0] {
			case 'n':
				req.optionsNull = true
			case '{':
				return req.parseOptions(body, m.start, m.end)
			default:
				return errOptionsType
			}
		}
		return nil
	})
	switch {
	case errors.Is(err, errTooDeep):
		return req, errNested
	case errors.Is(err, errSyntax):
		return req, errMalformed
	case err != nil:
		return req, err
	case req.model == "":
		return req, errNoModel
	case !sawMessages:
		return req, errNoMessages
	}
	req.closing = closing
	return req, nil
}

// parseOptions reads stream_options, which spans body[start:end].
func (req *chatRequest) parseOptions(body []byte, start, end int) error {
	_, err := scanObject(body[start:end], func(m member) error {
		req.optionsSize++
		if !m.is("include_usage") {
			return nil
		}
		if req.include.present() {
			return errDuplicateName
		}
		req.include = span{start + m.start, start + m.end}
		switch body[start+m.start] {
		case 't':
			req.clientUsage = true
		case 'f', 'n':
		default:
			return errIncludeType
		}
		return nil
	})
	return err
}

func unquote(v []byte) (string, error) {
	if bytes.IndexByte(v, '\\') < 0 {
		return string(v[1 : len(v)-1]), nil
	}
	var s string
	err := json.Unmarshal(v, &s)
	return s, err
}

type edit struct {
	start, end int
	with       []byte
}

var (
	includeTrue       = []byte(`"include_usage":true`)
	optionsObject     = []byte(`{"include_usage":true}`)
	appendOptions     = []byte(`,"stream_options":{"include_usage":true}`)
	trueLiteral       = []byte("true")
	includeTrueBefore = []byte(`"include_usage":true,`)
)

// rewrite returns the body to send upstream: the model replaced by
// upstreamModel (a JSON string), and for a stream, include_usage set, so
// that the provider reports the tokens the gateway accounts for. Only
// those bytes change; the rest of the body is copied as it came.
func (req *chatRequest) rewrite(body, upstreamModel []byte) []byte {
	edits := make([]edit, 1, 2)
	edits[0] = edit{req.modelSpan.start, req.modelSpan.end, upstreamModel}
	if req.stream && !req.clientUsage {
		switch {
		case !req.options.present():
			edits = append(edits, edit{req.closing, req.closing, appendOptions})
		case req.optionsNull:
			edits = append(edits, edit{req.options.start, req.options.end, optionsObject})
		case req.include.present():
			edits = append(edits, edit{req.include.start, req.include.end, trueLiteral})
		case req.optionsSize == 0:
			edits = append(edits, edit{req.options.start + 1, req.options.start + 1, includeTrue})
		default:
			edits = append(edits, edit{req.options.start + 1, req.options.start + 1, includeTrueBefore})
		}
	}
	slices.SortFunc(edits, func(a, b edit) int { return a.start - b.start })
	size := len(body)
	for _, e := range edits {
		size += len(e.with) - (e.end - e.start)
	}
	out := make([]byte, 0, size)
	at := 0
	for _, e := range edits {
		out = append(out, body[at:e.start]...)
		out = append(out, e.with...)
		at = e.end
	}
	return append(out, body[at:]...)
}

// usage is the token count a provider reported.
type usage struct {
	input, output int64
	found         bool
}

// readUsage reads the top-level usage object of a completion or of a
// stream chunk, and whether the chunk's choices are empty (the final
// usage-only chunk of a stream). Malformed input reports nothing.
func readUsage(b []byte) (u usage, emptyChoices bool) {
	_, err := scanObject(b, func(m member) error {
		switch {
		case m.is("usage"):
			if b[m.start] != '{' {
				return nil
			}
			u.found = true
			_, err := scanObject(b[m.start:m.end], func(f member) error {
				v := b[m.start+f.start : m.start+f.end]
				switch {
				case f.is("prompt_tokens"):
					u.input = tokenCount(v)
				case f.is("completion_tokens"):
					u.output = tokenCount(v)
				}
				return nil
			})
			return err
		case m.is("choices"):
			emptyChoices = isEmptyArray(b[m.start:m.end])
		}
		return nil
	})
	if err != nil {
		return usage{}, false
	}
	return u, emptyChoices
}

// tokenCount reads a non-negative integer, or 0 for anything else
// (a float, a string, a number too large to be a token count).
func tokenCount(v []byte) int64 {
	if len(v) == 0 || len(v) > 18 {
		return 0
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int64(c-'0')
	}
	return n
}

func isEmptyArray(v []byte) bool {
	if len(v) < 2 || v[0] != '[' {
		return false
	}
	for _, c := range v[1 : len(v)-1] {
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			return false
		}
	}
	return true
}
