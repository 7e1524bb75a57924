package ir

import "errors"

// StreamDecoder turns one upstream format's stream events into IR events.
// It keeps the per-request translation state (open blocks, tool-call
// indices). A decoder serves one stream; it is not safe for concurrent
// use.
type StreamDecoder interface {
	// Decode appends the IR events of one upstream SSE event (its event
	// name, empty when none, and its data) to dst. An error event of the
	// provider returns a *ProviderError; a stream that breaks the
	// format's grammar returns ErrProtocol (wrapped).
	Decode(dst []Event, name, data []byte) ([]Event, error)
	// Done reports whether the stream reached its proper end.
	Done() bool
}

// StreamEnder is a StreamDecoder that can close a stream whose upstream
// ended without its proper end marker but after a complete answer (an
// OpenAI-compatible server that omits `data: [DONE]` after the finish
// reason). The gateway calls End at the upstream's end of stream when Done
// is false; an error means the answer is truncated.
type StreamEnder interface {
	End(dst []Event) ([]Event, error)
}

// StreamEncoder writes IR events in a client format's stream framing. It
// keeps its own state (ids, indices, whether the client asked for usage).
type StreamEncoder interface {
	// Encode appends the client's bytes for e to dst (possibly none).
	Encode(dst []byte, e *Event) []byte
}

// ErrProtocol reports an upstream stream that breaks its format's grammar.
var ErrProtocol = errors.New("upstream stream breaks its protocol")

// ProviderError is an error a provider reported in its own format, as the
// gateway keeps it: its type in that provider's vocabulary, whether it
// says the provider is overloaded (worth another attempt), and its message.
// The message may quote the request: it goes back to the client that sent
// it, never to a log, an event or a metric.
type ProviderError struct {
	Type       string
	Overloaded bool
	Message    string
}

func (e *ProviderError) Error() string { return "provider error: " + e.Type }

// UnsupportedError names a request member the upstream format cannot
// express; the client gets a 400 naming it.
type UnsupportedError struct {
	// Param is the member, as a JSON path of the client's request.
	Param string
	// Reason says why, for the developer.
	Reason string
}

func (e *UnsupportedError) Error() string { return e.Param + ": " + e.Reason }
