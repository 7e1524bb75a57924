package httpapi

import (
	"net/http"
	"strconv"
	"time"

	"github.com/moat-ai/moat/services/gateway/internal/gateway"
	"github.com/moat-ai/moat/services/gateway/internal/wire"
	"github.com/moat-ai/moat/services/gateway/internal/wire/jsonx"
)

// models lists the routes of the key's project that the key may call, in
// the list format of the SDK that asks: Anthropic's when the request
// carries anthropic-version, OpenAI's otherwise.
func (h *Handler) models(w http.ResponseWriter, r *http.Request) {
	api := apiOf(r)
	c := gateway.NewCall(api, h.g.Now())
	w.Header().Set("X-Request-Id", c.ID.String())
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		h.r.Refuse(w, api, &gateway.Refusal{Status: http.StatusMethodNotAllowed, Type: gateway.TypeInvalidRequest, Code: gateway.CodeMethodNotAllowed,
			Message: "Use GET for /v1/models."})
		return
	}
	c.Key = keyOf(r, api)
	routes, d := h.g.Models(c)
	if d != nil {
		h.r.Refuse(w, api, d)
		return
	}
	var b []byte
	if api == wire.Anthropic {
		b = append(b, `{"data":[`...)
		for i, rt := range routes {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"type":"model","id":`...)
			b = jsonx.AppendString(b, rt.Model)
			b = append(b, `,"display_name":`...)
			b = jsonx.AppendString(b, rt.Model)
			b = append(b, `,"created_at":`...)
			b = jsonx.AppendString(b, time.Unix(rt.Created, 0).UTC().Format(time.RFC3339))
			b = append(b, '}')
		}
		b = append(b, `],"has_more":false,"first_id":`...)
		if len(routes) > 0 {
			b = jsonx.AppendString(b, routes[0].Model)
			b = append(b, `,"last_id":`...)
			b = jsonx.AppendString(b, routes[len(routes)-1].Model)
		} else {
			b = append(b, `null,"last_id":null`...)
		}
		b = append(b, '}')
	} else {
		b = append(b, `{"object":"list","data":[`...)
		for i, rt := range routes {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"id":`...)
			b = jsonx.AppendString(b, rt.Model)
			b = append(b, `,"object":"model","created":`...)
			b = strconv.AppendInt(b, rt.Created, 10)
			b = append(b, `,"owned_by":"moat"}`...)
		}
		b = append(b, "]}"...)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	_, _ = w.Write(b) // a failed write means the client left; nothing to tell it
}
