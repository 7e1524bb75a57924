package gateway

import (
	"strings"
	"time"

	"github.com/moat-ai/moat/services/gateway/internal/wire"
)

// Refusal is a gate's answer when it stops a call: a domain value, not yet
// an HTTP body. Each client API renders it in its own error shape, in one
// place (package httpapi), so that a gate never knows which API it serves.
type Refusal struct {
	// Status is the HTTP status.
	Status int
	// Type is the error's class, in OpenAI's vocabulary (TypeInvalidRequest
	// and so on); APIs with another vocabulary map it, or the status.
	Type string
	// Code is the stable machine-readable code clients branch on.
	Code string
	// Param names the request member at fault, empty when none.
	Param string
	// Message is for the developer. It never holds a secret (a key, a
	// credential, an Authorization value) nor prompt content.
	Message string
	// RetryAfter, when positive, is sent as Retry-After.
	RetryAfter time.Duration
	// Gate names the gate that refused, for records and metrics.
	Gate string
}

func (r *Refusal) Error() string { return r.Gate + ": " + r.Code }

// Error types, as OpenAI names them.
const (
	TypeInvalidRequest = "invalid_request_error"
	TypeAuthentication = "authentication_error"
	TypePermission     = "permission_error"
	TypeNotFound       = "not_found_error"
	TypeRateLimit      = "rate_limit_error"
	TypeAPI            = "api_error"
	TypeOverloaded     = "overloaded_error"
)

// Error codes. They are a stable surface: clients branch on them.
const (
	CodeInvalidAPIKey       = "invalid_api_key"
	CodePermissionDenied    = "permission_denied"
	CodeModelNotFound       = "model_not_found"
	CodeModelNotAllowed     = "model_not_allowed"
	CodeRequestTooLarge     = "request_too_large"
	CodeInvalidBody         = "invalid_body"
	CodeUpstreamUnavailable = "upstream_unavailable"
	CodeUpstreamTimeout     = "upstream_timeout"
	CodeUpstreamBlocked     = "upstream_blocked"
	CodeUpstreamCredential  = "upstream_credential" //nolint:gosec // an error code, not a credential
	CodeUpstreamError       = "upstream_error"
	CodeUnknownURL          = "unknown_url"
	CodeMethodNotAllowed    = "method_not_allowed"
	CodeUnsupportedRoute    = "unsupported_for_model"
	CodeInternal            = "internal_error"
	CodeOverloaded          = "gateway_overloaded"
)

// Gate names.
const (
	GateLoad     = "load"
	GateShape    = "shape"
	GateAuth     = "authenticate"
	GateRoute    = "route"
	GateUpstream = "upstream"
)

// BadRequest turns a codec's request error into a refusal.
func BadRequest(e *wire.RequestError) *Refusal {
	return &Refusal{Status: 400, Type: TypeInvalidRequest, Code: e.Code, Param: e.Param, Message: e.Message, Gate: GateShape}
}

// Truncate bounds the client's text echoed in a message.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "..."
}
