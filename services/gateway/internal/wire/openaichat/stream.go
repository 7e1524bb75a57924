package openaichat

import (
	"github.com/moat-ai/moat/services/gateway/internal/wire"
	"github.com/moat-ai/moat/services/gateway/internal/wire/jsonx"
)

// StreamError reports whether a body or a stream chunk is an OpenAI error
// (`{"error":{...}}`: the body of a failed call, and the event compatible
// servers send when a stream fails after it started), and what it says.
func StreamError(data []byte) (wire.UpstreamError, bool) {
	var (
		e     wire.UpstreamError
		found bool
	)
	_, err := jsonx.Object(data, func(m jsonx.Member) error {
		if !m.Is("error") || data[m.Start] != '{' {
			return nil
		}
		found = true
		v := data[m.Start:m.End]
		_, err := jsonx.Object(v, func(f jsonx.Member) error {
			if f.Is("message") && v[f.Start] == '"' {
				e.Message, _ = jsonx.Unquote(v[f.Start:f.End])
			}
			if (f.Is("type") || f.Is("code")) && v[f.Start] == '"' {
				s, _ := jsonx.Unquote(v[f.Start:f.End])
				if e.Type == "" || f.Is("type") {
					e.Type = s
				}
				if s == "overloaded_error" || s == "server_overloaded" || s == "overloaded" {
					e.Overloaded = true
				}
			}
			return nil
		})
		return err
	})
	return e, found && err == nil
}

// ChunkHasContent reports whether a chat or completions stream chunk
// carries content: text,
// a refusal, reasoning or a tool call in a delta, a finish reason, or
// usage. The role-only first chunk does not: until content comes, the
// gateway may still try another provider. Malformed chunks count as
// content, so that they are relayed rather than held.
func ChunkHasContent(data []byte) bool {
	has := false
	_, err := jsonx.Object(data, func(m jsonx.Member) error {
		v := data[m.Start:m.End]
		switch {
		case m.Is("usage"):
			has = has || v[0] == '{'
		case m.Is("choices") && v[0] == '[':
			return jsonx.Array(v, func(start, end int) error {
				if choiceHasContent(v[start:end]) {
					has = true
				}
				return nil
			})
		}
		return nil
	})
	return has || err != nil
}

func choiceHasContent(c []byte) bool {
	if len(c) == 0 || c[0] != '{' {
		return false
	}
	has := false
	_, _ = jsonx.Object(c, func(m jsonx.Member) error { // c was validated by the caller's scan
		v := c[m.Start:m.End]
		switch {
		case m.Is("finish_reason"), m.Is("logprobs"):
			has = has || !jsonx.IsNull(v)
		case m.Is("text"): // legacy completions
			has = has || (v[0] == '"' && len(v) > 2)
		case m.Is("delta") && v[0] == '{':
			_, _ = jsonx.Object(v, func(d jsonx.Member) error {
				dv := v[d.Start:d.End]
				switch {
				case d.Is("role"):
				case dv[0] == '"':
					has = has || len(dv) > 2 // a non-empty string
				case dv[0] == '[':
					has = has || !jsonx.IsEmptyArray(dv)
				case dv[0] == '{':
					has = true
				}
				return nil
			})
		}
		return nil
	})
	return has
}
