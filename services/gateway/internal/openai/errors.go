package openai

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// Error codes. They are a stable surface: clients branch on them.
const (
	codeInvalidAPIKey       = "invalid_api_key"
	codePermissionDenied    = "permission_denied"
	codeModelNotFound       = "model_not_found"
	codeModelNotAllowed     = "model_not_allowed"
	codeRequestTooLarge     = "request_too_large"
	codeInvalidBody         = "invalid_body"
	codeUpstreamUnavailable = "upstream_unavailable"
	codeUpstreamTimeout     = "upstream_timeout"
	codeUpstreamBlocked     = "upstream_blocked"
	codeUnknownURL          = "unknown_url"
	codeMethodNotAllowed    = "method_not_allowed"
)

// Error types, as OpenAI names them.
const (
	typeInvalidRequest = "invalid_request_error"
	typeAuthentication = "authentication_error"
	typePermission     = "permission_error"
	typeAPI            = "api_error"
)

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    string  `json:"code"`
}

// writeError answers with the OpenAI error body. message is written as
// given: it must never hold a secret (no key, no credential, no
// Authorization value) nor any prompt content.
func writeError(w http.ResponseWriter, status int, typ, code, param, message string) {
	d := errorDetail{Message: message, Type: typ, Code: code}
	if param != "" {
		d.Param = &param
	}
	b, err := json.Marshal(errorBody{Error: d})
	if err != nil {
		b = []byte(`{"error":{"message":"internal error","type":"api_error","param":null,"code":"internal_error"}}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b) // a failed write means the client left; nothing to tell it
}

func writeRequestError(w http.ResponseWriter, status int, e *requestError) {
	writeError(w, status, typeInvalidRequest, e.code, e.param, e.message)
}
