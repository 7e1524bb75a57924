package gateway

import (
	"bytes"
	"net/http"

	"github.com/moat-ai/moat/services/gateway/internal/ir"
	"github.com/moat-ai/moat/services/gateway/internal/wire"
	"github.com/moat-ai/moat/services/gateway/internal/wire/anthropic"
	"github.com/moat-ai/moat/services/gateway/internal/wire/awsstream"
	"github.com/moat-ai/moat/services/gateway/internal/wire/openaichat"
	"github.com/moat-ai/moat/services/gateway/internal/wire/openairesp"
	"github.com/moat-ai/moat/services/gateway/internal/wire/sse"
)

// path is how one client API is served by one upstream wire API: natively
// (the same API: bytes forwarded with span edits) or translated (through
// the IR). The table below is static; a pair missing from it cannot be
// served, and the client is told so.
type path interface {
	// native reports whether the path forwards the provider's bytes.
	native() bool
	// request returns the body to send upstream.
	request(c *Call) ([]byte, *Refusal)
	// whole turns a 2xx answer into the client's, reading its usage into
	// c.usage.
	whole(c *Call, body []byte) ([]byte, *Refusal)
	// upstreamError turns a non-2xx answer into the client's: the body to
	// relay with the provider's status, or a refusal.
	upstreamError(c *Call, status int, body []byte) ([]byte, *Refusal)
	// stream returns the transcoder of a streamed answer.
	stream(c *Call) streamer
}

// streamer turns the events of an upstream stream into the client's.
type streamer interface {
	// event handles one upstream event, appending what the client gets to
	// out. content reports that the event carried content: the commit
	// point. A refusal ends the stream (an error event upstream).
	event(out []byte, ev sse.Event) (res []byte, content bool, d *Refusal)
	// end appends the client's end of a stream whose upstream ended; a
	// refusal says the stream was cut short.
	end(out []byte) ([]byte, *Refusal)
	// usage is what the stream reported so far.
	usage() ir.Usage
}

type pathKey struct{ client, upstream wire.API }

var paths = map[pathKey]path{
	{wire.OpenAIChat, wire.OpenAIChat}: chatNative{},
	{wire.Anthropic, wire.Anthropic}:   messagesNative{},
	{wire.OpenAIChat, wire.Anthropic}:  translated{client: wire.OpenAIChat, upstream: wire.Anthropic},
	// The other envelopes are served natively only: legacy completions
	// and embeddings by OpenAI-compatible providers, token counts by
	// Anthropic (and estimated by the gateway elsewhere).
	{wire.OpenAICompletions, wire.OpenAICompletions}:       chatNative{},
	{wire.OpenAIEmbeddings, wire.OpenAIEmbeddings}:         chatNative{},
	{wire.AnthropicCountTokens, wire.AnthropicCountTokens}: countNative{},
	{wire.AnthropicCountTokens, wire.APIUnknown}:           countLocal{},
	{wire.Anthropic, wire.OpenAIChat}:                      translated{client: wire.Anthropic, upstream: wire.OpenAIChat},
	{wire.OpenAIChat, wire.Gemini}:                         translated{client: wire.OpenAIChat, upstream: wire.Gemini},
	{wire.Anthropic, wire.Gemini}:                          translated{client: wire.Anthropic, upstream: wire.Gemini},
	{wire.OpenAIChat, wire.Converse}:                       translated{client: wire.OpenAIChat, upstream: wire.Converse},
	{wire.Anthropic, wire.Converse}:                        translated{client: wire.Anthropic, upstream: wire.Converse},
	{wire.OpenAIResponses, wire.OpenAIResponses}:           respNative{},
	{wire.OpenAIResponses, wire.OpenAIChat}:                translated{client: wire.OpenAIResponses, upstream: wire.OpenAIChat},
	{wire.OpenAIResponses, wire.Anthropic}:                 translated{client: wire.OpenAIResponses, upstream: wire.Anthropic},
	{wire.OpenAIResponses, wire.Gemini}:                    translated{client: wire.OpenAIResponses, upstream: wire.Gemini},
	{wire.OpenAIResponses, wire.Converse}:                  translated{client: wire.OpenAIResponses, upstream: wire.Converse},
}

// pathFor returns the path serving client by upstream, nil when none.
func pathFor(client, upstream wire.API) path { return paths[pathKey{client, upstream}] }

// passError relays a provider's error answer in the client's own API as
// the provider sent it (the native path): status, body and Retry-After.
func passError(_ *Call, _ int, body []byte) ([]byte, *Refusal) { return body, nil }

// chatNative serves OpenAI chat clients from OpenAI-compatible providers.
type chatNative struct{}

func (chatNative) native() bool { return true }

func (chatNative) request(c *Call) ([]byte, *Refusal) {
	return c.chat.Rewrite(c.Body, c.route.UpstreamModelJSON), nil
}

func (chatNative) whole(c *Call, body []byte) ([]byte, *Refusal) {
	c.usage, _ = openaichat.ReadUsage(body)
	return body, nil
}

func (chatNative) upstreamError(c *Call, status int, body []byte) ([]byte, *Refusal) {
	return passError(c, status, body)
}

func (chatNative) stream(c *Call) streamer {
	return &chatNativeStream{clientUsage: c.chat.ClientUsage}
}

var usageKey = []byte(`"usage"`)

// chatNativeStream forwards every event as the provider sent it, reading
// the usage from the chunk that carries it. When the gateway, not the
// client, asked for usage (include_usage), the usage-only final chunk is
// kept from the client, who did not ask for it.
type chatNativeStream struct {
	clientUsage bool
	u           ir.Usage
}

func (s *chatNativeStream) event(out []byte, ev sse.Event) ([]byte, bool, *Refusal) {
	data := ev.Data
	if len(data) == 0 || data[0] != '{' {
		// [DONE], comments and keep-alives pass as they came.
		return append(out, ev.Raw...), ev.Data != nil, nil
	}
	if bytes.Contains(data, usageKey) {
		u, emptyChoices := openaichat.ReadUsage(data)
		if u.Found {
			s.u.Merge(u)
			if emptyChoices && !s.clientUsage {
				return out, false, nil
			}
		}
	}
	if e, ok := openaichat.StreamError(data); ok {
		return append(out, ev.Raw...), true, upstreamStreamRefusal(e)
	}
	return append(out, ev.Raw...), openaichat.ChunkHasContent(data), nil
}

func (s *chatNativeStream) end(out []byte) ([]byte, *Refusal) { return out, nil }
func (s *chatNativeStream) usage() ir.Usage                   { return s.u }

// upstreamStreamRefusal is what a client is told of an error event a
// provider sent in its stream.
func upstreamStreamRefusal(e wire.UpstreamError) *Refusal {
	d := &Refusal{Status: http.StatusBadGateway, Type: TypeAPI, Code: CodeUpstreamError, Gate: GateUpstream,
		Message: "The provider reported an error in its stream."}
	if e.Overloaded {
		d.Status, d.Type, d.Message = http.StatusServiceUnavailable, TypeOverloaded, "The provider is overloaded."
	}
	return d
}

// messagesNative serves Anthropic clients from providers speaking
// Anthropic's format: Anthropic, and Claude on Vertex AI and on Bedrock.
type messagesNative struct{}

func (messagesNative) native() bool { return true }

func (messagesNative) request(c *Call) ([]byte, *Refusal) {
	return c.msgs.Rewrite(c.Body, c.route.UpstreamModelJSON), nil
}

func (messagesNative) whole(c *Call, body []byte) ([]byte, *Refusal) {
	c.usage = anthropic.ReadUsage(body)
	return body, nil
}

func (messagesNative) upstreamError(c *Call, status int, body []byte) ([]byte, *Refusal) {
	if c.route.Provider.AWSErrors() {
		// Bedrock's errors are AWS's even when its answers are
		// Anthropic's: relayed, they would not parse as Anthropic's.
		e, ok := awsstream.DecodeError(body, c.upstreamErrorType)
		return nil, providerRefusal(status, e, ok)
	}
	return passError(c, status, body)
}

func (messagesNative) stream(*Call) streamer { return &messagesNativeStream{} }

// messagesNativeStream forwards every event as the provider sent it,
// reading usage from message_start and message_delta.
type messagesNativeStream struct {
	u ir.Usage
}

func (s *messagesNativeStream) event(out []byte, ev sse.Event) ([]byte, bool, *Refusal) {
	out = append(out, ev.Raw...)
	k := anthropic.EventKind(ev.Name, ev.Data)
	switch k {
	case anthropic.EventMessageStart, anthropic.EventMessageDelta:
		s.u.Merge(anthropic.ReadStreamUsage(k, ev.Data))
		return out, k == anthropic.EventMessageDelta, nil
	case anthropic.EventPing, anthropic.EventOther:
		return out, false, nil
	case anthropic.EventError:
		e, _ := anthropic.DecodeError(ev.Data)
		// A rate limit in a stream (Bedrock's throttling) is, like an
		// overload, worth another attempt, as on the Converse path.
		e.Overloaded = e.Overloaded || e.Type == "rate_limit_error"
		return out, true, upstreamStreamRefusal(e)
	}
	return out, true, nil
}

func (s *messagesNativeStream) end(out []byte) ([]byte, *Refusal) { return out, nil }
func (s *messagesNativeStream) usage() ir.Usage                   { return s.u }

// countNative forwards count_tokens to an Anthropic provider, marking the
// answer as the provider's count.
type countNative struct{ messagesNative }

func (countNative) whole(c *Call, body []byte) ([]byte, *Refusal) {
	c.countedByProvider = true
	return body, nil
}

// respNative serves Responses clients from OpenAI and Azure.
type respNative struct{}

func (respNative) native() bool { return true }

func (respNative) request(c *Call) ([]byte, *Refusal) {
	return c.resp.Rewrite(c.Body, c.route.UpstreamModelJSON), nil
}

func (respNative) whole(c *Call, body []byte) ([]byte, *Refusal) {
	c.usage = openairesp.ReadUsage(body)
	return body, nil
}

func (respNative) upstreamError(c *Call, status int, body []byte) ([]byte, *Refusal) {
	return passError(c, status, body)
}

func (respNative) stream(*Call) streamer { return &respNativeStream{} }

// respNativeStream forwards the typed event stream as the provider sent
// it, reading the usage from response.completed (or incomplete, failed)
// and remembering the last sequence number for a terminal error.
type respNativeStream struct {
	u   ir.Usage
	seq int64
}

func (s *respNativeStream) event(out []byte, ev sse.Event) ([]byte, bool, *Refusal) {
	out = append(out, ev.Raw...)
	if n, ok := openairesp.SequenceNumber(ev.Data); ok {
		s.seq = n
	}
	if u := openairesp.ReadStreamUsage(ev.Name, ev.Data); u.Found {
		s.u.Merge(u)
	}
	if e, ok := openairesp.StreamError(ev.Name, ev.Data); ok {
		return out, true, upstreamStreamRefusal(e)
	}
	return out, openairesp.StreamHasContent(ev.Name, ev.Data), nil
}

func (s *respNativeStream) end(out []byte) ([]byte, *Refusal) { return out, nil }
func (s *respNativeStream) usage() ir.Usage                   { return s.u }

func (s *respNativeStream) fail(out []byte, d *Refusal) ([]byte, bool) {
	return openairesp.StreamErrorEvent(out, d.Code, d.Message, int(s.seq)+1), true
}

// errorRelayer is a streamer whose provider's error events are already in
// the client's own API (the native paths relay them as they came): after
// the commit point such an event is the client's terminal error, and the
// gateway adds none of its own, which would end the stream twice.
type errorRelayer interface{ relaysErrors() }

func (*chatNativeStream) relaysErrors()     {}
func (*messagesNativeStream) relaysErrors() {}
func (*respNativeStream) relaysErrors()     {}

// streamFailer is a streamer that writes its own terminal error event (the
// Responses stream numbers its events).
type streamFailer interface {
	fail(out []byte, d *Refusal) ([]byte, bool)
}
