package httpapi

import (
	"net/http"
	"strconv"

	"github.com/moat-ai/moat/services/gateway/internal/gateway"
	"github.com/moat-ai/moat/services/gateway/internal/wire"
	"github.com/moat-ai/moat/services/gateway/internal/wire/anthropic"
	"github.com/moat-ai/moat/services/gateway/internal/wire/jsonx"
	"github.com/moat-ai/moat/services/gateway/internal/wire/openairesp"
	"github.com/moat-ai/moat/services/gateway/internal/wire/sse"
)

// HeaderErrorCode carries a refusal's stable code on every API, since
// Anthropic's error body has no field for it.
const HeaderErrorCode = "Moat-Error-Code"

// Render is the one place refusals become HTTP: each client API's error
// shape, as a whole response and as a terminal stream event.
type Render struct{}

var _ gateway.Renderer = Render{}

// Refuse writes d as a whole error response in api's shape.
func (Render) Refuse(w http.ResponseWriter, api wire.API, d *gateway.Refusal) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set(HeaderErrorCode, d.Code)
	if d.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int((d.RetryAfter+999_999_999)/1_000_000_000)))
	}
	b := appendErrorBody(nil, api, d)
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(d.Status)
	_, _ = w.Write(b) // a failed write means the client left; nothing to tell it
}

// AppendStreamError appends d as the terminal event of a stream in api's
// shape.
func (Render) AppendStreamError(dst []byte, api wire.API, d *gateway.Refusal) []byte {
	if api == wire.OpenAIResponses {
		// The stream's own error event; its sequence number continues
		// the stream's where the stream knows it (gateway.streamFailer).
		return openairesp.StreamErrorEvent(dst, d.Code, d.Message, 0)
	}
	b := appendErrorBody(nil, api, d)
	if api.Anthropics() {
		return sse.AppendEvent(dst, "error", b)
	}
	return sse.AppendEvent(dst, "", b)
}

func appendErrorBody(dst []byte, api wire.API, d *gateway.Refusal) []byte {
	if api.Anthropics() {
		typ := anthropic.ErrorType(d.Status)
		if d.Type == gateway.TypeOverloaded {
			typ = "overloaded_error"
		}
		return anthropic.AppendError(dst, typ, d.Message)
	}
	return appendOpenAIError(dst, d)
}

// appendOpenAIError appends OpenAI's error body,
// {"error":{"message","type","param","code"}}.
func appendOpenAIError(dst []byte, d *gateway.Refusal) []byte {
	typ := d.Type
	switch typ {
	case gateway.TypeNotFound:
		typ = gateway.TypeInvalidRequest
	case gateway.TypeOverloaded:
		typ = gateway.TypeAPI
	}
	dst = append(dst, `{"error":{"message":`...)
	dst = jsonx.AppendString(dst, d.Message)
	dst = append(dst, `,"type":`...)
	dst = jsonx.AppendString(dst, typ)
	dst = append(dst, `,"param":`...)
	if d.Param == "" {
		dst = append(dst, "null"...)
	} else {
		dst = jsonx.AppendString(dst, d.Param)
	}
	dst = append(dst, `,"code":`...)
	dst = jsonx.AppendString(dst, d.Code)
	return append(dst, "}}"...)
}
