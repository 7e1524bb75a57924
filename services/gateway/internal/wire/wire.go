// Package wire names the wire APIs the gateway speaks, to clients and to
// providers, and the error its codecs report for a request a client got
// wrong. The codecs themselves are its subpackages, one per format, each a
// set of pure functions over bytes.
package wire

// API is a wire API: what a client speaks to the gateway, or what a
// provider's endpoint speaks to it.
type API uint8

// The wire APIs.
const (
	APIUnknown API = iota
	// OpenAIChat is OpenAI's Chat Completions (POST /chat/completions).
	OpenAIChat
	// Anthropic is Anthropic's Messages (POST /messages).
	Anthropic
)

var apiNames = [...]string{APIUnknown: "unknown", OpenAIChat: "openai.chat", Anthropic: "anthropic.messages"}

// String names the API in logs and metrics.
func (a API) String() string {
	if int(a) < len(apiNames) {
		return apiNames[a]
	}
	return "unknown"
}

// RequestError is a client's mistake in a request body, found by a codec:
// a stable code, the parameter at fault (a JSON path, empty when none) and
// a message for the developer. It never quotes a secret; it may quote at
// most a bounded part of what the client sent.
type RequestError struct {
	Code, Param, Message string
}

func (e *RequestError) Error() string { return e.Message }

// Error codes shared by every codec.
const (
	CodeInvalidJSON        = "invalid_json"
	CodeInvalidType        = "invalid_type"
	CodeDuplicateParameter = "duplicate_parameter"
	CodeMissingParameter   = "missing_parameter"
	CodeInvalidValue       = "invalid_value"
	CodeUnsupported        = "unsupported_parameter"
)

// UpstreamError is what the gateway reads of an error a provider reported
// in its own format: its type in that provider's vocabulary, and whether
// it says the provider is overloaded (worth another attempt). The
// provider's message is not kept: it may quote the request.
type UpstreamError struct {
	Type       string
	Overloaded bool
}
