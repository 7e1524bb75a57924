// Package ir is the gateway's translation hub: the one typed intermediate
// representation that every wire format decodes into and encodes from, so
// that N formats need N decoders and N encoders rather than N×M
// translators, and the normalized usage record every format's usage reader
// produces.
package ir

// Usage is the token usage of one call, normalized across providers. The
// input kinds are disjoint: Input + CacheRead + CacheWrite is every input
// token. Reasoning is part of Output, not an addition to it.
type Usage struct {
	// Input counts input tokens neither read from nor written to a prompt
	// cache.
	Input int64
	// CacheRead counts input tokens read from a prompt cache.
	CacheRead int64
	// CacheWrite counts input tokens written to a prompt cache.
	CacheWrite int64
	// Output counts output tokens, reasoning included.
	Output int64
	// Reasoning counts the output tokens spent on reasoning.
	Reasoning int64
	// Found says the provider reported usage at all.
	Found bool
	// Estimated says the figures are the gateway's estimate, not the
	// provider's report.
	Estimated bool
}

// Merge folds a later usage report of the same call into u, per field by
// maximum: providers repeat cumulative counts across stream events
// (Anthropic's message_start and message_delta, OpenAI's usage on every
// chunk), so adding them would double count.
func (u *Usage) Merge(v Usage) {
	u.Input = max(u.Input, v.Input)
	u.CacheRead = max(u.CacheRead, v.CacheRead)
	u.CacheWrite = max(u.CacheWrite, v.CacheWrite)
	u.Output = max(u.Output, v.Output)
	u.Reasoning = max(u.Reasoning, v.Reasoning)
	u.Found = u.Found || v.Found
	u.Estimated = u.Estimated || v.Estimated
}

// TotalInput is every input token, cached or not.
func (u Usage) TotalInput() int64 { return u.Input + u.CacheRead + u.CacheWrite }
