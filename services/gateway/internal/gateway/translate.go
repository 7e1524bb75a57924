package gateway

import (
	"errors"
	"net/http"
	"strings"

	"github.com/moat-ai/moat/services/gateway/internal/ir"
	"github.com/moat-ai/moat/services/gateway/internal/wire"
	"github.com/moat-ai/moat/services/gateway/internal/wire/anthropic"
	"github.com/moat-ai/moat/services/gateway/internal/wire/converse"
	"github.com/moat-ai/moat/services/gateway/internal/wire/gemini"
	"github.com/moat-ai/moat/services/gateway/internal/wire/openaichat"
	"github.com/moat-ai/moat/services/gateway/internal/wire/openairesp"
	"github.com/moat-ai/moat/services/gateway/internal/wire/sse"
)

// HeaderDropped lists the request members a translated path dropped
// because the upstream's format has no place for them (sampling knobs,
// unknown members). Members whose loss would change the answer's shape are
// refused instead (strict over lossy).
const HeaderDropped = "Moat-Dropped-Parameters"

// translated serves a client API from another upstream API through the
// IR: one decoder of the client's format and one encoder of the
// upstream's, and back.
type translated struct {
	client, upstream wire.API
}

func (translated) native() bool { return false }

func (t translated) request(c *Call) ([]byte, *Refusal) {
	var (
		r       *ir.Request
		dropped []string
		err     error
	)
	switch t.client {
	case wire.OpenAIChat:
		r, dropped, err = openaichat.DecodeRequest(c.Body)
	case wire.Anthropic:
		r, dropped, err = anthropic.DecodeRequest(c.Body)
	case wire.OpenAIResponses:
		r, dropped, err = openairesp.DecodeRequest(c.Body)
	}
	if err != nil {
		return nil, requestRefusal(err)
	}
	if d := capable(t.upstream, r); d != nil {
		return nil, d
	}
	c.dropped = dropped
	var body []byte
	switch t.upstream {
	case wire.OpenAIChat:
		body, err = openaichat.EncodeRequest(nil, r, c.route.UpstreamModel)
	case wire.Anthropic:
		body, err = anthropic.EncodeRequest(nil, r, c.route.UpstreamModel)
	case wire.Gemini:
		body, err = gemini.EncodeRequest(nil, r)
	case wire.Converse:
		body, c.names, err = converse.EncodeRequest(nil, r)
	}
	if err != nil {
		return nil, requestRefusal(err)
	}
	return body, nil
}

// requestRefusal turns a codec's error into a 400.
func requestRefusal(err error) *Refusal {
	var re *wire.RequestError
	if errors.As(err, &re) {
		return BadRequest(re)
	}
	var ue *ir.UnsupportedError
	if errors.As(err, &ue) {
		return &Refusal{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Code: wire.CodeUnsupported, Param: ue.Param, Gate: GateUpstream,
			Message: ue.Param + ": " + ue.Reason + "; the provider of this model cannot express it."}
	}
	return &Refusal{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Code: wire.CodeInvalidValue, Gate: GateUpstream,
		Message: "The request cannot be translated for the provider of this model."}
}

// capable refuses what the upstream format cannot express, naming the
// member in the client's terms. Quietly dropping these would change the
// answer's shape: n alternatives, log probabilities, JSON mode without a
// schema.
func capable(upstream wire.API, r *ir.Request) *Refusal {
	if upstream == wire.OpenAIChat {
		return nil
	}
	unsupported := func(param, what string) *Refusal {
		return &Refusal{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Code: wire.CodeUnsupported, Param: param, Gate: GateUpstream,
			Message: param + ": " + what + " is not available from the provider of this model."}
	}
	switch {
	case r.N > 1:
		return unsupported("n", "more than one choice")
	case r.Logprobs || r.TopLogprobs > 0:
		return unsupported("logprobs", "log probabilities")
	case r.ResponseFormat != nil && r.ResponseFormat.Type != "json_schema" && upstream != wire.Gemini:
		return unsupported("response_format", "a response format of type "+wire.Bound(r.ResponseFormat.Type)+" (only json_schema)")
	}
	return nil
}

func (t translated) whole(c *Call, body []byte) ([]byte, *Refusal) {
	var (
		r   *ir.Response
		err error
	)
	switch t.upstream {
	case wire.OpenAIChat:
		r, err = openaichat.DecodeResponse(body)
	case wire.Anthropic:
		r, err = anthropic.DecodeResponse(body)
	case wire.Gemini:
		r, err = gemini.DecodeResponse(body)
	case wire.Converse:
		r, err = converse.DecodeResponse(body, c.names)
	}
	if err != nil {
		return nil, &Refusal{Status: http.StatusBadGateway, Type: TypeAPI, Code: CodeUpstreamError, Gate: GateUpstream,
			Message: "The provider's answer could not be read."}
	}
	c.usage = r.Usage
	model := r.Model
	if model == "" {
		model = c.route.UpstreamModel
	}
	switch t.client {
	case wire.OpenAIChat:
		return openaichat.EncodeResponse(nil, r, model, c.Start.Unix()), nil
	case wire.OpenAIResponses:
		return openairesp.EncodeResponse(nil, r, model, c.Start.Unix()), nil
	default:
		return anthropic.EncodeResponse(nil, r, model), nil
	}
}

// upstreamError turns a provider's error into a refusal in the client's
// format, keeping the provider's status (a 429 stays a 429, with its
// Retry-After) and its message.
func (t translated) upstreamError(c *Call, status int, body []byte) ([]byte, *Refusal) {
	var (
		e  wire.UpstreamError
		ok bool
	)
	switch t.upstream {
	case wire.OpenAIChat:
		e, ok = openaichat.StreamError(body)
	case wire.Anthropic:
		e, ok = anthropic.DecodeError(body)
	case wire.Gemini:
		e, ok = gemini.DecodeError(body)
	case wire.Converse:
		e, ok = converse.DecodeError(body, c.upstreamErrorType)
	}
	return nil, providerRefusal(status, e, ok)
}

// providerRefusal is what the client is told, in its own format, of an
// error answer with status that a provider's codec read as e (ok false
// when it read nothing): the provider's status (a 429 stays a 429, with
// its Retry-After) and its message.
func providerRefusal(status int, e wire.UpstreamError, ok bool) *Refusal {
	d := &Refusal{Status: status, Type: typeForStatus(status), Code: CodeUpstreamError, Gate: GateUpstream,
		Message: "The provider refused the request."}
	if ok && e.Message != "" {
		d.Message = "The provider refused the request: " + Truncate(e.Message, 512)
	}
	if e.Overloaded || status == 529 {
		d.Status, d.Type = http.StatusServiceUnavailable, TypeOverloaded
	}
	if status == http.StatusTooManyRequests {
		d.Code = "rate_limit_exceeded"
	}
	return d
}

func typeForStatus(status int) string {
	switch {
	case status == http.StatusTooManyRequests:
		return TypeRateLimit
	case status == http.StatusNotFound:
		return TypeNotFound
	case status >= 500:
		return TypeAPI
	default:
		return TypeInvalidRequest
	}
}

func (t translated) stream(c *Call) streamer {
	s := &translatedStream{}
	switch t.upstream {
	case wire.OpenAIChat:
		s.dec = openaichat.NewStreamDecoder()
	case wire.Anthropic:
		s.dec = anthropic.NewStreamDecoder()
	case wire.Gemini:
		s.dec = gemini.NewStreamDecoder()
	case wire.Converse:
		s.dec = converse.NewStreamDecoder(c.names)
	}
	switch t.client {
	case wire.OpenAIChat:
		s.enc = openaichat.NewStreamEncoder(c.route.UpstreamModel, c.Start.Unix(), c.chat.ClientUsage)
	case wire.Anthropic:
		s.enc = anthropic.NewStreamEncoder(c.route.UpstreamModel)
	case wire.OpenAIResponses:
		s.enc = openairesp.NewStreamEncoder(c.route.UpstreamModel, c.Start.Unix())
	}
	return s
}

// fail ends a Responses stream with its error event, numbered after the
// events the encoder wrote.
func (s *translatedStream) fail(out []byte, d *Refusal) ([]byte, bool) {
	seq, ok := s.enc.(interface{ NextSequence() int })
	if !ok {
		return out, false
	}
	return openairesp.StreamErrorEvent(out, d.Code, d.Message, seq.NextSequence()), true
}

// translatedStream decodes each upstream event into IR events and encodes
// them for the client, in the relay's goroutine.
type translatedStream struct {
	dec ir.StreamDecoder
	enc ir.StreamEncoder
	evs []ir.Event
	u   ir.Usage
}

func (s *translatedStream) event(out []byte, ev sse.Event) ([]byte, bool, *Refusal) {
	var err error
	s.evs, err = s.dec.Decode(s.evs[:0], ev.Name, ev.Data)
	out, content := s.encode(out)
	if err != nil {
		return out, true, streamDecodeRefusal(err)
	}
	return out, content, nil
}

func (s *translatedStream) encode(out []byte) ([]byte, bool) {
	content := false
	for i := range s.evs {
		e := &s.evs[i]
		switch e.Kind {
		case ir.EventMessageStart, ir.EventMessageDelta:
			s.u.Merge(e.Usage)
			content = content || e.Kind == ir.EventMessageDelta
		case ir.EventBlockStart:
			content = content || e.Block.Type == ir.BlockToolUse
		case ir.EventBlockDelta, ir.EventMessageStop:
			content = true
		}
		out = s.enc.Encode(out, e)
	}
	return out, content
}

func (s *translatedStream) end(out []byte) ([]byte, *Refusal) {
	if s.dec.Done() {
		return out, nil
	}
	ender, ok := s.dec.(ir.StreamEnder)
	if !ok {
		return out, streamDecodeRefusal(ir.ErrProtocol)
	}
	var err error
	s.evs, err = ender.End(s.evs[:0])
	out, _ = s.encode(out)
	if err != nil {
		return out, streamDecodeRefusal(err)
	}
	return out, nil
}

func (s *translatedStream) usage() ir.Usage { return s.u }

// streamDecodeRefusal is what the client is told of an upstream stream
// that reported an error or broke its grammar.
func streamDecodeRefusal(err error) *Refusal {
	var pe *ir.ProviderError
	if errors.As(err, &pe) {
		return upstreamStreamRefusal(*pe)
	}
	return &Refusal{Status: http.StatusBadGateway, Type: TypeAPI, Code: CodeUpstreamError, Gate: GateUpstream,
		Message: "The provider's stream ended early or broke its protocol."}
}

// droppedHeader is the value of HeaderDropped.
func droppedHeader(names []string) string { return strings.Join(names, ",") }
