// Package httpapi mounts the data plane's client APIs on net/http, one
// file per API: it reads the request (method, size limit, key), hands a
// Call to the gateway's gate sequence, and renders refusals in each API's
// own error shape (render.go, the one place that does).
package httpapi

import (
	"io"
	"net/http"
	"strconv"

	"github.com/moat-ai/moat/libs/authn"
	"github.com/moat-ai/moat/services/gateway/internal/gateway"
	"github.com/moat-ai/moat/services/gateway/internal/wire"
)

// MaxRequestBody is the largest request body accepted (413 above).
const MaxRequestBody = 10 << 20

// Handler serves the client APIs.
type Handler struct {
	g *gateway.Gateway
	r Render
}

// New returns a Handler over g.
func New(g *gateway.Gateway) *Handler { return &Handler{g: g} }

// Mount registers the data plane on mux, under /v1/.
func (h *Handler) Mount(mux *http.ServeMux) {
	mux.HandleFunc("/v1/chat/completions", h.post(wire.OpenAIChat))
	mux.HandleFunc("/v1/messages", h.post(wire.Anthropic))
	mux.HandleFunc("/v1/messages/count_tokens", h.post(wire.AnthropicCountTokens))
	mux.HandleFunc("/v1/completions", h.post(wire.OpenAICompletions))
	mux.HandleFunc("/v1/embeddings", h.post(wire.OpenAIEmbeddings))
	mux.HandleFunc("/v1/responses", h.post(wire.OpenAIResponses))
	mux.HandleFunc("/v1/models", h.models)
	mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		h.r.Refuse(w, apiOf(r), &gateway.Refusal{Status: http.StatusNotFound, Type: gateway.TypeInvalidRequest, Code: gateway.CodeUnknownURL,
			Message: "Unknown request URL: " + r.Method + " " + gateway.Truncate(r.URL.Path, 256) + "."})
	})
}

// apiOf guesses the client API of a request to a path that names none:
// Anthropic's SDKs send anthropic-version on every request.
func apiOf(r *http.Request) wire.API {
	if r.Header.Get("Anthropic-Version") != "" || r.Header.Get("X-Api-Key") != "" {
		return wire.Anthropic
	}
	return wire.OpenAIChat
}

// post serves a POST endpoint of api.
func (h *Handler) post(api wire.API) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := gateway.NewCall(api, h.g.Now())
		w.Header().Set("X-Request-Id", c.ID.String())
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			h.r.Refuse(w, api, &gateway.Refusal{Status: http.StatusMethodNotAllowed, Type: gateway.TypeInvalidRequest, Code: gateway.CodeMethodNotAllowed,
				Message: "Use POST for " + r.URL.Path + "."})
			return
		}
		if d := h.g.Enter(); d != nil {
			h.r.Refuse(w, api, d)
			return
		}
		defer h.g.Leave()
		buf := gateway.GetBuffer()
		defer gateway.PutBuffer(buf)
		if d := readBody(r, buf); d != nil {
			h.r.Refuse(w, api, d)
			return
		}
		c.Body = buf.Bytes()
		c.Key = keyOf(r, api)
		c.Header = r.Header
		h.g.Serve(w, r, c)
	}
}

// readBody reads the body into buf within MaxRequestBody.
func readBody(r *http.Request, buf interface {
	ReadFrom(io.Reader) (int64, error)
	Len() int
}) *gateway.Refusal {
	tooLarge := &gateway.Refusal{Status: http.StatusRequestEntityTooLarge, Type: gateway.TypeInvalidRequest, Code: gateway.CodeRequestTooLarge, Gate: gateway.GateShape,
		Message: "Your request body is larger than the " + strconv.Itoa(MaxRequestBody>>20) + " MiB the gateway accepts."}
	if r.ContentLength > MaxRequestBody {
		return tooLarge
	}
	if _, err := buf.ReadFrom(io.LimitReader(r.Body, MaxRequestBody+1)); err != nil {
		// The client went away or sent a broken body; there is no one
		// to answer in the first case, and 400 says enough in the second.
		return &gateway.Refusal{Status: http.StatusBadRequest, Type: gateway.TypeInvalidRequest, Code: gateway.CodeInvalidBody, Gate: gateway.GateShape,
			Message: "We could not read the body of your request."}
	}
	if buf.Len() > MaxRequestBody {
		return tooLarge
	}
	return nil
}

// keyOf returns the API key the request presents: `Authorization: Bearer`
// on every API, and `x-api-key` on Anthropic's.
func keyOf(r *http.Request, api wire.API) string {
	if key, ok := authn.Bearer(r.Header.Get("Authorization")); ok {
		return key
	}
	if api.Anthropics() {
		return r.Header.Get("X-Api-Key")
	}
	return ""
}
