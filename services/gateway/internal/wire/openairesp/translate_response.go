package openairesp

import (
	"strconv"
	"strings"

	"github.com/moat-ai/moat/services/gateway/internal/ir"
	"github.com/moat-ai/moat/services/gateway/internal/wire/jsonx"
)

// This file writes IR answers as Responses objects; the stream encoder
// builds its items and its final response with the same functions, so a
// streamed answer ends with the object EncodeResponse writes for it.

// EncodeResponse appends r as a Responses response object for model (the
// name the client asked for; r.Model when empty), created at the given
// Unix time. Output items, in order: a reasoning item per thinking block,
// its text as one summary_text part (the signature has no place: OpenAI's
// encrypted_content is its own); one message item per run of consecutive
// text blocks, a part each; a function_call item per tool use, its input
// as the arguments string ("{}" when empty). Blocks an answer cannot hold
// are left out. status is "completed", or "incomplete" with
// incomplete_details.reason "max_output_tokens" (ir.StopMaxTokens) or
// "content_filter" (ir.StopRefusal). usage is OpenAI's: input_tokens
// include the cached and cache-write tokens, output_tokens the reasoning.
//
// The members that echo the request (instructions, tools, tool_choice,
// temperature, ...) carry the API's defaults, not the request's: the
// gateway keeps no request state to echo, and the SDKs require them.
// Item ids derive from r.ID (resp_<id>, msg_<id>_<n>, ...), and tool call
// ids (call_id) are r's own, since a later request refers to them.
func EncodeResponse(dst []byte, r *ir.Response, model string, created int64) []byte {
	if model == "" {
		model = r.Model
	}
	base := idBase(r.ID)
	out := make([]byte, 0, 256)
	out = append(out, '[')
	n := 0
	item := func() {
		if n > 0 {
			out = append(out, ',')
		}
		n++
	}
	var texts []string
	flush := func() {
		if texts != nil {
			item()
			out = appendMessageItem(out, itemID("msg_", base, n-1), "completed", texts)
			texts = nil
		}
	}
	for i := range r.Content {
		b := &r.Content[i]
		switch b.Type {
		case ir.BlockText:
			if texts == nil {
				texts = make([]string, 0, 1)
			}
			texts = append(texts, b.Text)
		case ir.BlockThinking:
			flush()
			item()
			out = appendReasoningItem(out, itemID("rs_", base, n-1), b.Text)
		case ir.BlockToolUse:
			flush()
			item()
			out = appendCallItem(out, itemID("fc_", base, n-1), "completed", callID(b.ID, n-1), b.Name, argumentsOf(b.Input))
		}
	}
	flush()
	out = append(out, ']')
	u := r.Usage
	return appendResponse(dst, responseHead{id: "resp_" + base, model: model, created: created, stop: r.StopReason, done: true}, out, &u)
}

// argumentsOf is a tool use's input as a function call's arguments string.
func argumentsOf(input ir.Raw) string {
	if len(strings.TrimSpace(string(input))) == 0 {
		return "{}"
	}
	return string(input)
}

// idBase is the part of an upstream's answer id that the Responses ids
// are built on: the id without its kind prefix (msg_, chatcmpl-, resp_),
// or "moat" when there is none.
func idBase(id string) string {
	i := 0
	for i < len(id) && id[i] >= 'a' && id[i] <= 'z' {
		i++
	}
	if i > 0 && i < len(id)-1 && (id[i] == '_' || id[i] == '-') {
		id = id[i+1:]
	}
	if id == "" {
		return "moat"
	}
	return id
}

// itemID is the id of output item n.
func itemID(prefix, base string, n int) string {
	return prefix + base + "_" + strconv.Itoa(n)
}

// callID is a tool use's call_id: its own, or one made up for an upstream
// that sent none.
func callID(id string, n int) string {
	if id != "" {
		return id
	}
	return "call_" + strconv.Itoa(n)
}

// responseHead is what a response object says besides its output and
// usage.
type responseHead struct {
	id, model string
	created   int64
	stop      ir.StopReason
	// done is false for the in-progress response of a stream's start.
	done bool
}

// status is the response's status and, when incomplete, the reason.
func (h *responseHead) status() (status, reason string) {
	switch {
	case !h.done:
		return "in_progress", ""
	case h.stop == ir.StopMaxTokens:
		return "incomplete", "max_output_tokens"
	case h.stop == ir.StopRefusal:
		return "incomplete", "content_filter"
	}
	return "completed", ""
}

// appendResponse appends a response object with output (a JSON array) and
// usage (null when nil). Members come in OpenAI's order.
func appendResponse(b []byte, h responseHead, output []byte, u *ir.Usage) []byte {
	status, reason := h.status()
	b = append(b, `{"id":`...)
	b = jsonx.AppendString(b, h.id)
	b = append(b, `,"object":"response","created_at":`...)
	b = jsonx.AppendInt(b, h.created)
	b = append(b, `,"status":`...)
	b = jsonx.AppendString(b, status)
	b = append(b, `,"background":false,"error":null,"incomplete_details":`...)
	if reason == "" {
		b = append(b, "null"...)
	} else {
		b = append(b, `{"reason":`...)
		b = append(jsonx.AppendString(b, reason), '}')
	}
	b = append(b, `,"instructions":null,"max_output_tokens":null,"model":`...)
	b = jsonx.AppendString(b, h.model)
	b = append(b, `,"output":`...)
	b = append(b, output...)
	b = append(b, `,"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},`+
		`"store":false,"temperature":1,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":1,`+
		`"truncation":"disabled","usage":`...)
	if u == nil {
		b = append(b, "null"...)
	} else {
		b = appendUsage(b, *u)
	}
	return append(b, `,"user":null,"metadata":{},"access_programs":{"cyber":"standard"}}`...)
}

// appendUsage appends OpenAI's usage object, whose input_tokens include
// the cached and cache-write tokens that the IR's Input excludes.
func appendUsage(b []byte, u ir.Usage) []byte {
	b = append(b, `{"input_tokens":`...)
	b = jsonx.AppendInt(b, u.TotalInput())
	b = append(b, `,"input_tokens_details":{"cached_tokens":`...)
	b = jsonx.AppendInt(b, u.CacheRead)
	b = append(b, `,"cache_write_tokens":`...)
	b = jsonx.AppendInt(b, u.CacheWrite)
	b = append(b, `},"output_tokens":`...)
	b = jsonx.AppendInt(b, u.Output)
	b = append(b, `,"output_tokens_details":{"reasoning_tokens":`...)
	// Reasoning is part of the output; an upstream that reports more is
	// wrong, and the SDKs' users subtract one from the other.
	b = jsonx.AppendInt(b, min(u.Reasoning, u.Output))
	b = append(b, `},"total_tokens":`...)
	b = jsonx.AppendInt(b, u.TotalInput()+u.Output)
	return append(b, '}')
}

// appendMessageItem appends an assistant message item with one
// output_text part per text.
func appendMessageItem(b []byte, id, status string, texts []string) []byte {
	b = append(b, `{"id":`...)
	b = jsonx.AppendString(b, id)
	b = append(b, `,"type":"message","status":`...)
	b = jsonx.AppendString(b, status)
	b = append(b, `,"content":[`...)
	for i, t := range texts {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendTextPart(b, t)
	}
	return append(b, `],"role":"assistant"}`...)
}

// appendTextPart appends an output_text content part.
func appendTextPart(b []byte, text string) []byte {
	b = append(b, `{"type":"output_text","annotations":[],"text":`...)
	return append(jsonx.AppendString(b, text), '}')
}

// appendReasoningItem appends a reasoning item whose summary is text (no
// part when it is empty).
func appendReasoningItem(b []byte, id, text string) []byte {
	b = append(b, `{"id":`...)
	b = jsonx.AppendString(b, id)
	b = append(b, `,"type":"reasoning","summary":[`...)
	if text != "" {
		b = appendSummaryPart(b, text)
	}
	return append(b, "]}"...)
}

// appendSummaryPart appends a summary_text part.
func appendSummaryPart(b []byte, text string) []byte {
	b = append(b, `{"type":"summary_text","text":`...)
	return append(jsonx.AppendString(b, text), '}')
}

// appendCallItem appends a function_call item.
func appendCallItem(b []byte, id, status, callID, name, args string) []byte {
	b = append(b, `{"id":`...)
	b = jsonx.AppendString(b, id)
	b = append(b, `,"type":"function_call","status":`...)
	b = jsonx.AppendString(b, status)
	b = append(b, `,"arguments":`...)
	b = jsonx.AppendString(b, args)
	b = append(b, `,"call_id":`...)
	b = jsonx.AppendString(b, callID)
	b = append(b, `,"name":`...)
	b = jsonx.AppendString(b, name)
	return append(b, '}')
}
