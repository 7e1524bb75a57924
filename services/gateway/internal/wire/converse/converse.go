// Package converse is the codec of Amazon Bedrock's Converse API (POST
// /model/{modelId}/converse, and /converse-stream, whose answer is an AWS
// eventstream read by the awsstream package): the IR encoded as a
// Converse request, and Converse answers, whole or streamed, and errors
// decoded into the IR. No client speaks Converse, so the package has only
// the upstream's half of a codec. Every function is pure: no I/O.
//
// Bedrock's tool names must match [a-zA-Z0-9_-]{1,64}, shorter and
// stricter than what clients send (MCP tools often have long, dotted
// names), so EncodeRequest renames what does not fit and returns the map
// (Names) that DecodeResponse and the stream decoder use to give the
// client its own names back.
package converse

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"github.com/moat-ai/moat/services/gateway/internal/ir"
	"github.com/moat-ai/moat/services/gateway/internal/wire/awsstream"
	"github.com/moat-ai/moat/services/gateway/internal/wire/jsonx"
)

// MaxName is the longest tool name (and tool use id) Bedrock accepts.
const MaxName = 64

// hashLen is how many hex digits of a name's SHA-256 a replacement name
// carries: 64 bits, so that two names of one request never collide by
// chance.
const hashLen = 16

// Names is one request's tool-name map: the names EncodeRequest sent to
// Bedrock for the client's tool names that Bedrock refuses, and back. A
// name Bedrock accepts is sent as it is and is not in the map. The
// replacement is deterministic (the name's valid characters, cut, then a
// hash of the whole name), so the same client name gets the same
// Bedrock name in every request of a conversation. A nil *Names maps every
// name to itself. Names is read-only once EncodeRequest returns it, and
// safe for concurrent reads.
type Names struct {
	upstream map[string]string // client name -> Bedrock name, replaced names only
	client   map[string]string // Bedrock name -> client name, every name sent
}

// Upstream returns the name Bedrock knows the client's tool name by.
func (n *Names) Upstream(name string) string {
	if n != nil {
		if u, ok := n.upstream[name]; ok {
			return u
		}
	}
	return name
}

// Client returns the client's name for a tool name Bedrock used in an
// answer; a name the request did not rename is returned as it is.
func (n *Names) Client(name string) string {
	if n != nil {
		if c, ok := n.client[name]; ok {
			return c
		}
	}
	return name
}

// Len reports how many names were replaced.
func (n *Names) Len() int {
	if n == nil {
		return 0
	}
	return len(n.upstream)
}

// add returns the Bedrock name of a client's tool name, recording it.
// ok is false when the result collides with another name of the request
// (a client name that is some other name's replacement): Bedrock would
// see two tools of one name.
func (n *Names) add(name string) (string, bool) {
	if u, ok := n.upstream[name]; ok {
		return u, true
	}
	u := name
	if !validName(name) {
		u = shortName(name, "tool")
	}
	if c, ok := n.client[u]; ok {
		return u, c == name
	}
	if n.client == nil {
		n.upstream, n.client = map[string]string{}, map[string]string{}
	}
	n.client[u] = name
	if u != name {
		n.upstream[name] = u
	}
	return u, true
}

// validName reports whether s matches [a-zA-Z0-9_-]{1,64}, Bedrock's
// pattern for tool names and tool use ids.
func validName(s string) bool {
	if len(s) == 0 || len(s) > MaxName {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !nameByte(s[i]) {
			return false
		}
	}
	return true
}

func nameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// shortName is the replacement of an invalid name: its valid characters
// (others become _), cut so that an underscore and a hash of the whole
// name fit within MaxName; fallback stands in for a name with nothing to
// keep. The kept prefix lets a person reading Bedrock's logs recognize
// the tool.
func shortName(s, fallback string) string {
	sum := sha256.Sum256([]byte(s))
	var b strings.Builder
	b.Grow(MaxName)
	keep := MaxName - 1 - hashLen
	for i := 0; i < len(s) && b.Len() < keep; i++ {
		if nameByte(s[i]) {
			b.WriteByte(s[i])
		} else {
			b.WriteByte('_')
		}
	}
	if strings.Trim(b.String(), "_") == "" {
		b.Reset()
		b.WriteString(fallback)
	}
	b.WriteByte('_')
	b.WriteString(hex.EncodeToString(sum[:hashLen/2]))
	return b.String()
}

// upstreamID is the tool use id sent to Bedrock for a client's: the same
// id when Bedrock accepts it, else a deterministic replacement, so that
// a tool use and its result still match. Ids are not mapped back: every
// id in an answer is Bedrock's own, which clients send back unchanged.
func upstreamID(id string) string {
	if validName(id) {
		return id
	}
	return shortName(id, "tooluse")
}

var stopReasons = map[string]ir.StopReason{
	"end_turn":      ir.StopEnd,
	"tool_use":      ir.StopToolUse,
	"max_tokens":    ir.StopMaxTokens,
	"stop_sequence": ir.StopSequence,
	// A guardrail or the provider's content filter stopped the answer:
	// to a client it is a refusal.
	"guardrail_intervened": ir.StopRefusal,
	"content_filtered":     ir.StopRefusal,
	// The model ran out of context rather than of maxTokens: to a client
	// it is the same truncation.
	"model_context_window_exceeded": ir.StopMaxTokens,
}

// StopReasonOf maps Converse's stopReason to the IR's; a reason it does
// not know (malformed_model_output, malformed_tool_use) is
// ir.StopUnknown.
func StopReasonOf(s string) ir.StopReason { return stopReasons[s] }

// ReadUsage reads the usage object of a Converse answer or of a
// ConverseStream metadata event: {inputTokens, outputTokens,
// cacheReadInputTokens, cacheWriteInputTokens}. Bedrock's inputTokens
// exclude the cached kinds, as the IR's Input does. Found is false when
// body has no usage object.
func ReadUsage(body []byte) ir.Usage {
	var u ir.Usage
	_, err := jsonx.Object(body, func(m jsonx.Member) error {
		v := body[m.Start:m.End]
		if !m.Is("usage") || v[0] != '{' {
			return nil
		}
		u = ir.Usage{Found: true}
		_, err := jsonx.Object(v, func(f jsonx.Member) error {
			n, ok := jsonx.Int(v[f.Start:f.End])
			if !ok {
				return nil
			}
			switch {
			case f.Is("inputTokens"):
				u.Input = n
			case f.Is("outputTokens"):
				u.Output = n
			case f.Is("cacheReadInputTokens"):
				u.CacheRead = n
			case f.Is("cacheWriteInputTokens"):
				u.CacheWrite = n
			}
			return nil
		})
		return err
	})
	if err != nil {
		return ir.Usage{}
	}
	return u
}

// DecodeError reads a Bedrock error: a non-streamed answer's body with
// its X-Amzn-ErrorType (errorType), or a stream exception frame's payload
// with its :exception-type; see awsstream.DecodeError, which InvokeModel's
// errors share.
func DecodeError(body []byte, errorType string) (ir.ProviderError, bool) {
	return awsstream.DecodeError(body, errorType)
}

// bound cuts an upstream's string quoted in an error to a readable
// length.
func bound(s string) string {
	const limit = 64
	if len(s) <= limit {
		return s
	}
	return strings.ToValidUTF8(s[:limit], "") + "..."
}
