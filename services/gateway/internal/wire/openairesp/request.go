// Package openairesp is the codec of OpenAI's Responses API (POST
// /v1/responses), which OpenAI and Azure OpenAI serve natively and which
// clients (the OpenAI SDKs, Codex, agent frameworks) call the gateway in.
// On the native path it validates and reads a request body in one shallow
// pass, rewrites the model by a span edit, reads usage from answers and
// from the typed event stream, and finds the stream's commit point and
// errors. On the translated path (a Responses client, an upstream of
// another API) it decodes the stateless subset of a request into the IR
// and encodes IR answers and event streams as Responses objects and
// events. Every function is pure: no I/O.
//
// The gateway stores nothing, so what needs OpenAI's server-side state
// (previous_response_id, conversation, stored prompts, background runs,
// item references) cannot be translated and is refused, naming the
// member; store: true is accepted and reported as dropped, since nothing
// is stored either way.
package openairesp

import (
	"errors"

	"github.com/moat-ai/moat/services/gateway/internal/wire"
	"github.com/moat-ai/moat/services/gateway/internal/wire/jsonx"
)

// Request errors. They are a stable surface: clients branch on the codes,
// which are those of the chat-completions codec.
var (
	ErrMalformed        = &wire.RequestError{Code: wire.CodeInvalidJSON, Message: "We could not parse the JSON body of your request: it is not one valid JSON object."}
	ErrNested           = &wire.RequestError{Code: wire.CodeInvalidJSON, Message: "The JSON body of your request is nested too deeply."}
	ErrNoModel          = &wire.RequestError{Code: "missing_model", Param: "model", Message: "You must provide a model parameter."}
	ErrModelType        = &wire.RequestError{Code: wire.CodeInvalidType, Param: "model", Message: "model must be a string."}
	ErrNoInput          = &wire.RequestError{Code: "missing_input", Param: "input", Message: "You must provide an input parameter."}
	ErrInputType        = &wire.RequestError{Code: wire.CodeInvalidType, Param: "input", Message: "input must be a string or an array."}
	ErrInstructionsType = &wire.RequestError{Code: wire.CodeInvalidType, Param: "instructions", Message: "instructions must be a string."}
	ErrMaxOutputType    = &wire.RequestError{Code: wire.CodeInvalidType, Param: "max_output_tokens", Message: "max_output_tokens must be a positive integer."}
	ErrStreamType       = &wire.RequestError{Code: wire.CodeInvalidType, Param: "stream", Message: "stream must be a boolean."}
	ErrDuplicateName    = &wire.RequestError{Code: wire.CodeDuplicateParameter, Message: "A parameter appears more than once in your request."}
)

// Request is what the gateway reads from a Responses body: the model it
// routes by, the stream flag, the output bound the budget reserves, and
// where the model is. Everything else stays in the body, untouched.
type Request struct {
	Model  string
	Stream bool
	// MaxOutputTokens is max_output_tokens, 0 when the client set none.
	MaxOutputTokens int64

	modelStart, modelEnd int
}

// ParseRequest validates a Responses body and reads the members the
// gateway needs. A member a gate reads (model, input, instructions,
// max_output_tokens, stream) that appears twice is refused, so that the
// gates and the provider can never see two different values. The error is
// a *wire.RequestError.
//
// input is required, as a string or an array, unless the request names
// server-side state that supplies it (previous_response_id, conversation
// or a stored prompt): OpenAI serves such requests natively, and the
// translated path refuses them in DecodeRequest with an error naming the
// member, which says more than "missing input".
func ParseRequest(body []byte) (Request, error) {
	var (
		req                                  Request
		sawModel, sawInput, sawInstr, sawMax bool
		sawStream, hasInput, stateful        bool
	)
	_, err := jsonx.Object(body, func(m jsonx.Member) error {
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
				req.Model, req.modelStart, req.modelEnd = s, m.Start, m.End
				if len(s) > wire.MaxModel {
					return wire.ErrModelTooLong
				}
			default:
				return ErrModelType
			}
		case m.Is("input"):
			if sawInput {
				return ErrDuplicateName
			}
			sawInput = true
			switch v[0] {
			case 'n':
			case '"', '[':
				hasInput = true
			default:
				return ErrInputType
			}
		case m.Is("instructions"):
			if sawInstr {
				return ErrDuplicateName
			}
			sawInstr = true
			if v[0] != '"' && v[0] != 'n' {
				return ErrInstructionsType
			}
		case m.Is("max_output_tokens"):
			if sawMax {
				return ErrDuplicateName
			}
			sawMax = true
			if v[0] == 'n' {
				return nil
			}
			n, ok := jsonx.Int(v)
			if !ok || n < 1 {
				return ErrMaxOutputType
			}
			req.MaxOutputTokens = n
		case m.Is("stream"):
			if sawStream {
				return ErrDuplicateName
			}
			sawStream = true
			switch v[0] {
			case 't':
				req.Stream = true
			case 'f', 'n':
			default:
				return ErrStreamType
			}
		case m.Is("previous_response_id"), m.Is("conversation"), m.Is("prompt"):
			stateful = stateful || !jsonx.IsNull(v)
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
	case !hasInput && !stateful:
		return req, ErrNoInput
	}
	return req, nil
}

// Rewrite returns the body to send upstream: the model replaced by
// upstreamModel (a JSON string). Only those bytes change. The Responses
// API reports usage in its response.completed event without being asked,
// so, unlike chat completions, nothing is injected for a stream.
func (req *Request) Rewrite(body, upstreamModel []byte) []byte {
	return jsonx.Apply(body, jsonx.Edit{Start: req.modelStart, End: req.modelEnd, With: upstreamModel})
}
