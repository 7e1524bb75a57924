// Package wire names the wire APIs the gateway speaks, to clients and to
// providers, and the error its codecs report for a request a client got
// wrong. The codecs themselves are its subpackages, one per format, each a
// set of pure functions over bytes.
package wire

import (
	"strings"

	"github.com/moat-ai/moat/services/gateway/internal/ir"
)

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
	// OpenAICompletions is OpenAI's legacy Completions (POST /completions).
	OpenAICompletions
	// OpenAIEmbeddings is OpenAI's Embeddings (POST /embeddings).
	OpenAIEmbeddings
	// AnthropicCountTokens is Anthropic's token count (POST
	// /messages/count_tokens): not billable, no usage record.
	AnthropicCountTokens
	// Gemini is Google's generateContent (AI Studio and Vertex).
	Gemini
	// Converse is Bedrock's Converse API.
	Converse
	// OpenAIResponses is OpenAI's Responses API (POST /responses).
	OpenAIResponses
)

var apiNames = [...]string{ //nolint:gosec // API names, not credentials
	APIUnknown: "unknown", OpenAIChat: "openai.chat", Anthropic: "anthropic.messages",
	OpenAICompletions: "openai.completions", OpenAIEmbeddings: "openai.embeddings", AnthropicCountTokens: "anthropic.count_tokens",
	Gemini: "gemini.generate_content", Converse: "bedrock.converse", OpenAIResponses: "openai.responses"}

// Billable reports whether calls of the API are metered (a usage record
// per call).
func (a API) Billable() bool { return a != AnthropicCountTokens && a != APIUnknown }

// Anthropics reports whether the API is one of Anthropic's, whose errors
// have Anthropic's shape.
func (a API) Anthropics() bool { return a == Anthropic || a == AnthropicCountTokens }

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

// MaxModel is the longest model name a request may carry (config keeps
// route models to 128 characters; a provider's own names are shorter
// still).
const MaxModel = 256

// ErrModelTooLong refuses a model name over MaxModel.
var ErrModelTooLong = &RequestError{Code: CodeInvalidValue, Param: "model", Message: "model: must be at most 256 bytes."}

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
// in its own format (see ir.ProviderError).
type UpstreamError = ir.ProviderError

// Bound cuts a client-sent string echoed in an error to a readable
// length.
func Bound(s string) string {
	const n = 64
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "..."
}

// ParseDataURL splits a base64 data URL, data:<media type>[;params];base64,<data>,
// dropping the parameters (such as charset). ok is false for anything
// else, an empty media type or empty data included.
func ParseDataURL(u string) (mediaType, data string, ok bool) {
	rest, ok := strings.CutPrefix(u, "data:")
	if !ok {
		return "", "", false
	}
	meta, data, found := strings.Cut(rest, ",")
	mediaType, isBase64 := strings.CutSuffix(meta, ";base64")
	if i := strings.IndexByte(mediaType, ';'); i >= 0 {
		mediaType = mediaType[:i]
	}
	if !found || !isBase64 || data == "" || mediaType == "" {
		return "", "", false
	}
	return mediaType, data, true
}

// JoinPath joins a member path and a sub-path: ("messages[2]", "content")
// is messages[2].content, ("tools", "[0]") is tools[0].
func JoinPath(prefix, p string) string {
	switch {
	case prefix == "":
		return p
	case p == "", p[0] == '[':
		return prefix + p
	}
	return prefix + "." + p
}

// HeaderSafe replaces what cannot stand in a header's comma-separated list
// (commas, spaces, control and non-ASCII characters) in a member name by
// '?': the names of dropped members travel in a response header.
func HeaderSafe(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == ',' {
			return strings.Map(func(r rune) rune {
				if r <= ' ' || r >= 0x7f || r == ',' {
					return '?'
				}
				return r
			}, s)
		}
	}
	return s
}
