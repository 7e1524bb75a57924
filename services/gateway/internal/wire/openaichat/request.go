// Package openaichat is the codec of OpenAI's Chat Completions wire format,
// and of the two formats that share its envelope (legacy Completions and
// Embeddings): it validates and reads a request body in one shallow pass,
// rewrites the few members the gateway changes by span edits, reads usage
// from answers and stream chunks, and translates chat to and from the IR.
// Every function is pure: no I/O.
package openaichat

import (
	"errors"

	"github.com/moat-ai/moat/services/gateway/internal/ir"
	"github.com/moat-ai/moat/services/gateway/internal/wire"
	"github.com/moat-ai/moat/services/gateway/internal/wire/jsonx"
)

// Request errors. They are a stable surface: clients branch on the codes.
var (
	ErrMalformed     = &wire.RequestError{Code: wire.CodeInvalidJSON, Message: "We could not parse the JSON body of your request: it is not one valid JSON object."}
	ErrNested        = &wire.RequestError{Code: wire.CodeInvalidJSON, Message: "The JSON body of your request is nested too deeply."}
	ErrNoModel       = &wire.RequestError{Code: "missing_model", Param: "model", Message: "You must provide a model parameter."}
	ErrModelType     = &wire.RequestError{Code: wire.CodeInvalidType, Param: "model", Message: "model must be a string."}
	ErrNoMessages    = &wire.RequestError{Code: "missing_messages", Param: "messages", Message: "You must provide a messages parameter."}
	ErrMessagesType  = &wire.RequestError{Code: wire.CodeInvalidType, Param: "messages", Message: "messages must be an array."}
	ErrStreamType    = &wire.RequestError{Code: wire.CodeInvalidType, Param: "stream", Message: "stream must be a boolean."}
	ErrOptionsType   = &wire.RequestError{Code: wire.CodeInvalidType, Param: "stream_options", Message: "stream_options must be an object."}
	ErrIncludeType   = &wire.RequestError{Code: wire.CodeInvalidType, Param: "stream_options.include_usage", Message: "stream_options.include_usage must be a boolean."}
	ErrDuplicateName = &wire.RequestError{Code: wire.CodeDuplicateParameter, Message: "A parameter appears more than once in your request."}
)

// span is a range of a body; start < 0 means absent.
type span struct{ start, end int }

func (s span) present() bool { return s.start >= 0 }

// Request is what the gateway reads from a chat-completions body: the
// model it routes by, the stream flag, and where the members it rewrites
// are. Everything else stays in the body, untouched.
type Request struct {
	Model  string
	Stream bool
	// ClientUsage is whether the client itself asked for the usage chunk
	// (stream_options.include_usage); the gateway always asks upstream.
	ClientUsage bool

	modelSpan   span
	options     span // the stream_options value
	optionsNull bool
	include     span // the include_usage value inside stream_options
	optionsSize int  // members of stream_options
	closing     int  // the top-level closing brace
}

// ParseRequest validates a chat-completions body and reads the members the
// gateway needs. A member a gate reads that appears twice is refused, so
// that the gates and the provider can never see two different values. The
// error is a *wire.RequestError.
func ParseRequest(body []byte) (Request, error) { return parse(body, kindChat) }

// ParseCompletions validates a legacy completions body (prompt instead of
// messages).
func ParseCompletions(body []byte) (Request, error) { return parse(body, kindCompletions) }

// ParseEmbeddings validates an embeddings body (input; no stream).
func ParseEmbeddings(body []byte) (Request, error) { return parse(body, kindEmbeddings) }

type kind uint8

const (
	kindChat kind = iota
	kindCompletions
	kindEmbeddings
)

// Errors of the other envelopes.
var (
	ErrNoPrompt   = &wire.RequestError{Code: "missing_prompt", Param: "prompt", Message: "You must provide a prompt parameter."}
	ErrPromptType = &wire.RequestError{Code: wire.CodeInvalidType, Param: "prompt", Message: "prompt must be a string or an array."}
	ErrNoInput    = &wire.RequestError{Code: "missing_input", Param: "input", Message: "You must provide an input parameter."}
	ErrInputType  = &wire.RequestError{Code: wire.CodeInvalidType, Param: "input", Message: "input must be a string or an array."}
	ErrNoStream   = &wire.RequestError{Code: wire.CodeUnsupported, Param: "stream", Message: "stream is not supported for embeddings."}
)

func parse(body []byte, k kind) (Request, error) {
	req := Request{modelSpan: span{-1, -1}, options: span{-1, -1}, include: span{-1, -1}}
	var sawModel, sawMessages, sawStream bool
	main, errNoMain, errMainType := "messages", ErrNoMessages, ErrMessagesType
	switch k {
	case kindCompletions:
		main, errNoMain, errMainType = "prompt", ErrNoPrompt, ErrPromptType
	case kindEmbeddings:
		main, errNoMain, errMainType = "input", ErrNoInput, ErrInputType
	}
	closing, err := jsonx.Object(body, func(m jsonx.Member) error {
		v := body[m.Start:m.End]
		switch {
		case m.Is("model"):
			if sawModel {
				return ErrDuplicateName
			}
			sawModel = true
			switch v[0] {
			case 'n': // null: as if absent
			case '"':
				s, err := jsonx.Unquote(v)
				if err != nil {
					return ErrMalformed
				}
				req.Model, req.modelSpan = s, span{m.Start, m.End}
				if len(s) > wire.MaxModel {
					return wire.ErrModelTooLong
				}
			default:
				return ErrModelType
			}
		case m.Is(main):
			if sawMessages {
				return ErrDuplicateName
			}
			sawMessages = true
			if v[0] != '[' && (k == kindChat || v[0] != '"') {
				return errMainType
			}
		case m.Is("stream"):
			if sawStream {
				return ErrDuplicateName
			}
			sawStream = true
			switch v[0] {
			case 't':
				if k == kindEmbeddings {
					return ErrNoStream
				}
				req.Stream = true
			case 'f', 'n':
			default:
				return ErrStreamType
			}
		case m.Is("stream_options"):
			if req.options.present() {
				return ErrDuplicateName
			}
			req.options = span{m.Start, m.End}
			switch v[0] {
			case 'n':
				req.optionsNull = true
			case '{':
				return req.parseOptions(body, m.Start, m.End)
			default:
				return ErrOptionsType
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
		return req, errNoMain
	}
	req.closing = closing
	return req, nil
}

// parseOptions reads stream_options, which spans body[start:end].
func (req *Request) parseOptions(body []byte, start, end int) error {
	_, err := jsonx.Object(body[start:end], func(m jsonx.Member) error {
		req.optionsSize++
		if !m.Is("include_usage") {
			return nil
		}
		if req.include.present() {
			return ErrDuplicateName
		}
		req.include = span{start + m.Start, start + m.End}
		switch body[start+m.Start] {
		case 't':
			req.ClientUsage = true
		case 'f', 'n':
		default:
			return ErrIncludeType
		}
		return nil
	})
	return err
}

var (
	includeTrue       = []byte(`"include_usage":true`)
	optionsObject     = []byte(`{"include_usage":true}`)
	appendOptions     = []byte(`,"stream_options":{"include_usage":true}`)
	trueLiteral       = []byte("true")
	includeTrueBefore = []byte(`"include_usage":true,`)
)

// Rewrite returns the body to send upstream: the model replaced by
// upstreamModel (a JSON string), and for a stream, include_usage set, so
// that the provider reports the tokens the gateway accounts for. Only
// those bytes change; the rest of the body is copied as it came.
func (req *Request) Rewrite(body, upstreamModel []byte) []byte {
	var edits [2]jsonx.Edit
	edits[0] = jsonx.Edit{Start: req.modelSpan.start, End: req.modelSpan.end, With: upstreamModel}
	n := 1
	if req.Stream && !req.ClientUsage {
		n = 2
		switch {
		case !req.options.present():
			edits[1] = jsonx.Edit{Start: req.closing, End: req.closing, With: appendOptions}
		case req.optionsNull:
			edits[1] = jsonx.Edit{Start: req.options.start, End: req.options.end, With: optionsObject}
		case req.include.present():
			edits[1] = jsonx.Edit{Start: req.include.start, End: req.include.end, With: trueLiteral}
		case req.optionsSize == 0:
			edits[1] = jsonx.Edit{Start: req.options.start + 1, End: req.options.start + 1, With: includeTrue}
		default:
			edits[1] = jsonx.Edit{Start: req.options.start + 1, End: req.options.start + 1, With: includeTrueBefore}
		}
	}
	return jsonx.Apply(body, edits[:n]...)
}

// ReadUsage reads the top-level usage object of a completion or of a
// stream chunk, normalized (OpenAI's prompt_tokens include the cached
// ones; ir.Usage keeps them apart), and whether the chunk's choices are
// empty (the final usage-only chunk of a stream). Malformed input reports
// nothing.
func ReadUsage(b []byte) (u ir.Usage, emptyChoices bool) {
	var prompt, cached int64
	_, err := jsonx.Object(b, func(m jsonx.Member) error {
		switch {
		case m.Is("usage"):
			if b[m.Start] != '{' {
				return nil
			}
			u.Found = true
			ub := b[m.Start:m.End]
			_, err := jsonx.Object(ub, func(f jsonx.Member) error {
				v := ub[f.Start:f.End]
				switch {
				case f.Is("prompt_tokens"):
					prompt, _ = jsonx.Int(v)
				case f.Is("completion_tokens"):
					u.Output, _ = jsonx.Int(v)
				case f.Is("prompt_tokens_details"):
					cached = detail(v, "cached_tokens")
				case f.Is("completion_tokens_details"):
					u.Reasoning = detail(v, "reasoning_tokens")
				}
				return nil
			})
			return err
		case m.Is("choices"):
			emptyChoices = jsonx.IsEmptyArray(b[m.Start:m.End])
		}
		return nil
	})
	if err != nil {
		return ir.Usage{}, false
	}
	// A provider reporting more cached tokens than prompt tokens is
	// wrong; never let the uncached count go negative.
	cached = min(cached, prompt)
	u.Input, u.CacheRead = prompt-cached, cached
	u.Reasoning = min(u.Reasoning, u.Output)
	return u, emptyChoices
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
