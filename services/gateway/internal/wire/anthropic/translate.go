package anthropic

import (
	"encoding/base64"
	"errors"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/moat-ai/moat/services/gateway/internal/ir"
	"github.com/moat-ai/moat/services/gateway/internal/wire"
	"github.com/moat-ai/moat/services/gateway/internal/wire/jsonx"
)

// This file is the translated path's request side: an Anthropic Messages
// body into the IR (DecodeRequest) and the IR into a Messages body
// (EncodeRequest). Unlike the native path's scanner, it decodes the whole
// body, typed, with go-json-experiment/json, which refuses duplicate
// member names anywhere in the document.

// DefaultMaxTokens is the max_tokens EncodeRequest sends when the IR has
// none (a client API where the bound is optional): Anthropic requires the
// member, and 8192 is within every current model's output limit.
const DefaultMaxTokens = 8192

// effortBudgets are the thinking budgets EncodeRequest asks for at each
// OpenAI-style reasoning effort; 1024 is Anthropic's floor.
var effortBudgets = map[string]int64{
	"low":    1024,
	"medium": 4096,
	"high":   16384,
	"xhigh":  32768,
}

// DecodeRequest reads an Anthropic Messages body, already validated by
// ParseRequest, into the IR. It decodes every member the IR carries and
// returns, as its second result, the JSON paths of the members it dropped
// because the IR cannot carry them (service_tier, container, mcp_servers,
// citations, a document's title, and any member it does not know), in the
// order met; members whose value is null carry nothing and are not listed.
// The gateway applies the route's policy to that list (drop and report,
// or reject); nothing is lost without a trace.
//
// What the IR cannot represent without changing the request's meaning is
// an error instead: a server tool (tools[i].type), a content block type
// it does not know, a file or custom-content source. Errors are
// *wire.RequestError with Param the member's JSON path
// (messages[2].content[0].type).
//
// Mapping: thinking {type: enabled} sets ThinkingBudget; disabled is no
// reasoning; adaptive sets ReasoningEffort from output_config.effort (high
// when unset, Anthropic's default; max becomes OpenAI's xhigh). output_config.format (or the beta
// output_format) of type json_schema sets ResponseFormat. A text document
// source becomes base64 Data with media type text/plain, so that every
// IR document is base64 or a URL.
func DecodeRequest(body []byte) (*ir.Request, []string, error) { return decodeRequest(body, false) }

// DecodeCountTokens reads a count_tokens body, a Messages request without
// max_tokens, into the IR (MaxTokens 0 when absent).
func DecodeCountTokens(body []byte) (*ir.Request, error) {
	r, _, err := decodeRequest(body, true)
	if r != nil && r.MaxTokens == math.MaxInt64 {
		r.MaxTokens = 0
	}
	return r, err
}

func decodeRequest(body []byte, count bool) (*ir.Request, []string, error) {
	var w requestWire
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, nil, jsonError("", err)
	}
	if count && w.MaxTokens == 0 {
		// No answer is generated: any thinking budget is within bounds.
		w.MaxTokens = math.MaxInt64
	}
	d := decoder{}
	r := &ir.Request{
		Model:       w.Model,
		MaxTokens:   w.MaxTokens,
		Temperature: w.Temperature,
		TopP:        w.TopP,
		TopK:        w.TopK,
		Stop:        w.StopSequences,
		Stream:      w.Stream,
	}
	d.rest("", w.Rest)
	if w.Model == "" {
		return nil, nil, missing("model")
	}
	if w.MaxTokens < 1 {
		return nil, nil, &wire.RequestError{Code: wire.CodeInvalidValue, Param: "max_tokens", Message: "max_tokens: Input should be a positive integer."}
	}
	if err := d.system(r, w.System); err != nil {
		return nil, nil, err
	}
	if w.Messages == nil {
		return nil, nil, missing("messages")
	}
	r.Messages = make([]ir.Message, 0, len(w.Messages))
	for i := range w.Messages {
		m, err := d.message(&w.Messages[i], "messages["+strconv.Itoa(i)+"]")
		if err != nil {
			return nil, nil, err
		}
		r.Messages = append(r.Messages, m)
	}
	if err := d.tools(r, w.Tools); err != nil {
		return nil, nil, err
	}
	if err := d.toolChoice(r, w.ToolChoice); err != nil {
		return nil, nil, err
	}
	if err := d.thinking(r, w.Thinking, w.OutputConfig); err != nil {
		return nil, nil, err
	}
	if err := d.format(r, w.OutputConfig, w.OutputFormat); err != nil {
		return nil, nil, err
	}
	if w.Metadata != nil {
		r.User = w.Metadata.UserID
		d.rest("metadata", w.Metadata.Rest)
	}
	return r, d.dropped, nil
}

// The decoding targets. Each struct names exactly the members the IR
// carries; Rest collects the others, which DecodeRequest lists as
// dropped. Polymorphic members (a string or a list of blocks) stay raw
// and are decoded by type.
type (
	requestWire struct {
		Model         string            `json:"model"`
		Messages      []messageWire     `json:"messages"`
		System        jsontext.Value    `json:"system"`
		MaxTokens     int64             `json:"max_tokens"`
		Temperature   *float64          `json:"temperature"`
		TopP          *float64          `json:"top_p"`
		TopK          *int64            `json:"top_k"`
		StopSequences []string          `json:"stop_sequences"`
		Stream        bool              `json:"stream"`
		Tools         []jsontext.Value  `json:"tools"`
		ToolChoice    *toolChoiceWire   `json:"tool_choice"`
		Thinking      *thinkingConfig   `json:"thinking"`
		Metadata      *metadataWire     `json:"metadata"`
		OutputConfig  *outputConfigWire `json:"output_config"`
		OutputFormat  *formatWire       `json:"output_format"`
		Rest          jsontext.Value    `json:",embed"`
	}
	messageWire struct {
		Role    string         `json:"role"`
		Content jsontext.Value `json:"content"`
		Rest    jsontext.Value `json:",embed"`
	}
	toolWire struct {
		Type         string         `json:"type"`
		Name         string         `json:"name"`
		Description  string         `json:"description"`
		InputSchema  jsontext.Value `json:"input_schema"`
		CacheControl jsontext.Value `json:"cache_control"`
		Rest         jsontext.Value `json:",embed"`
	}
	toolChoiceWire struct {
		Type            string         `json:"type"`
		Name            string         `json:"name"`
		DisableParallel bool           `json:"disable_parallel_tool_use"`
		Rest            jsontext.Value `json:",embed"`
	}
	thinkingConfig struct {
		Type         string         `json:"type"`
		BudgetTokens *int64         `json:"budget_tokens"`
		Rest         jsontext.Value `json:",embed"`
	}
	metadataWire struct {
		UserID string         `json:"user_id"`
		Rest   jsontext.Value `json:",embed"`
	}
	outputConfigWire struct {
		Format *formatWire    `json:"format"`
		Effort string         `json:"effort"`
		Rest   jsontext.Value `json:",embed"`
	}
	formatWire struct {
		Type   string         `json:"type"`
		Schema jsontext.Value `json:"schema"`
		Rest   jsontext.Value `json:",embed"`
	}

	textWire struct {
		Type         string         `json:"type"`
		Text         *string        `json:"text"`
		CacheControl jsontext.Value `json:"cache_control"`
		Rest         jsontext.Value `json:",embed"`
	}
	mediaWire struct { // image and document
		Type         string         `json:"type"`
		Source       *sourceWire    `json:"source"`
		CacheControl jsontext.Value `json:"cache_control"`
		Rest         jsontext.Value `json:",embed"`
	}
	sourceWire struct {
		Type      string         `json:"type"`
		MediaType string         `json:"media_type"`
		Data      string         `json:"data"`
		URL       string         `json:"url"`
		Rest      jsontext.Value `json:",embed"`
	}
	toolUseWire struct {
		Type         string         `json:"type"`
		ID           string         `json:"id"`
		Name         string         `json:"name"`
		Input        jsontext.Value `json:"input"`
		CacheControl jsontext.Value `json:"cache_control"`
		Rest         jsontext.Value `json:",embed"`
	}
	toolResultWire struct {
		Type         string         `json:"type"`
		ToolUseID    string         `json:"tool_use_id"`
		Content      jsontext.Value `json:"content"`
		IsError      bool           `json:"is_error"`
		CacheControl jsontext.Value `json:"cache_control"`
		Rest         jsontext.Value `json:",embed"`
	}
	thinkingWire struct {
		Type      string         `json:"type"`
		Thinking  string         `json:"thinking"`
		Signature string         `json:"signature"`
		Rest      jsontext.Value `json:",embed"`
	}
	redactedWire struct {
		Type string         `json:"type"`
		Data string         `json:"data"`
		Rest jsontext.Value `json:",embed"`
	}
)

// decoder collects the dropped members of one request.
type decoder struct {
	dropped []string
}

// rest lists the members of rest (an object of members the IR does not
// carry) under the path prefix.
func (d *decoder) rest(prefix string, rest jsontext.Value) {
	if d == nil || len(rest) == 0 {
		return
	}
	_, _ = jsonx.Object(rest, func(m jsonx.Member) error { // rest was validated by the decode
		if jsonx.IsNull(rest[m.Start:m.End]) {
			return nil
		}
		key := string(m.Key)
		if m.Escaped {
			key, _ = jsonx.Unquote(append(append([]byte{'"'}, m.Key...), '"'))
		}
		d.dropped = append(d.dropped, wire.JoinPath(prefix, wire.HeaderSafe(short(key))))
		return nil
	})
}

func (d *decoder) system(r *ir.Request, v jsontext.Value) error {
	switch jsonx.Kind(v) {
	case 0:
		return nil
	case '"':
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return jsonError("system", err)
		}
		r.System = []ir.Block{{Type: ir.BlockText, Text: s}}
		return nil
	case '[':
		return jsonx.Elements(v, func(i int, e []byte) error {
			b, err := d.block(e, "system["+strconv.Itoa(i)+"]", inSystem)
			if err != nil {
				return err
			}
			r.System = append(r.System, b)
			return nil
		})
	}
	return typeError("system", "a valid string or list of text blocks")
}

func (d *decoder) message(w *messageWire, path string) (ir.Message, error) {
	d.rest(path, w.Rest)
	var m ir.Message
	switch w.Role {
	case "user":
		m.Role = ir.RoleUser
	case "assistant":
		m.Role = ir.RoleAssistant
	case "":
		return m, missing(path + ".role")
	default:
		return m, &wire.RequestError{Code: wire.CodeInvalidValue, Param: path + ".role",
			Message: path + ".role: Input should be 'user' or 'assistant'."}
	}
	var err error
	m.Content, err = d.content(w.Content, path+".content", inMessage)
	return m, err
}

// content decodes a content member: a string (one text block) or a list
// of blocks. Absent or null content is an error.
func (d *decoder) content(v jsontext.Value, path string, where placement) ([]ir.Block, error) {
	switch jsonx.Kind(v) {
	case 0:
		return nil, missing(path)
	case '"':
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return nil, jsonError(path, err)
		}
		return []ir.Block{{Type: ir.BlockText, Text: s}}, nil
	case '[':
		blocks := make([]ir.Block, 0, 1)
		err := jsonx.Elements(v, func(i int, e []byte) error {
			b, err := d.block(e, path+"["+strconv.Itoa(i)+"]", where)
			blocks = append(blocks, b)
			return err
		})
		return blocks, err
	}
	return nil, typeError(path, "a valid string or list of content blocks")
}

// placement is where a content block appears, which decides the block
// types allowed there.
type placement uint8

const (
	inMessage placement = iota
	inSystem
	inToolResult
	inResponse
)

var allowed = [...]map[string]bool{
	inMessage:    {"text": true, "image": true, "document": true, "tool_use": true, "tool_result": true, "thinking": true, "redacted_thinking": true},
	inSystem:     {"text": true},
	inToolResult: {"text": true, "image": true, "document": true},
	inResponse:   {"text": true, "tool_use": true, "thinking": true, "redacted_thinking": true},
}

// block decodes one content block at path. The block's type is read
// first, so that the error for a block of another kind names its type,
// not the members that kind lacks.
func (d *decoder) block(e []byte, path string, where placement) (ir.Block, error) {
	var b ir.Block
	if jsonx.Kind(e) != '{' {
		return b, typeError(path, "a valid object")
	}
	typ, ok := memberString(e, "type")
	if !ok {
		return b, missing(path + ".type")
	}
	if !allowed[where][typ] {
		return b, &wire.RequestError{Code: wire.CodeInvalidValue, Param: path + ".type",
			Message: path + ".type: content block type " + strconv.Quote(short(typ)) + " cannot be served on this route."}
	}
	var err error
	switch typ {
	case "text":
		var w textWire
		if err = unmarshal(e, &w, path); err == nil {
			d.rest(path, w.Rest)
			if w.Text == nil {
				return b, missing(path + ".text")
			}
			b = ir.Block{Type: ir.BlockText, Text: *w.Text, CacheControl: raw(w.CacheControl)}
		}
	case "image", "document":
		var w mediaWire
		if err = unmarshal(e, &w, path); err == nil {
			d.rest(path, w.Rest)
			b, err = d.media(&w, path)
		}
	case "tool_use":
		var w toolUseWire
		if err = unmarshal(e, &w, path); err == nil {
			d.rest(path, w.Rest)
			b = ir.Block{Type: ir.BlockToolUse, ID: w.ID, Name: w.Name, Input: raw(w.Input), CacheControl: raw(w.CacheControl)}
			switch {
			case w.ID == "":
				err = missing(path + ".id")
			case w.Name == "":
				err = missing(path + ".name")
			case jsonx.Kind(w.Input) == 0:
				err = missing(path + ".input")
			case jsonx.Kind(w.Input) != '{':
				err = typeError(path+".input", "a valid object")
			}
		}
	case "tool_result":
		var w toolResultWire
		if err = unmarshal(e, &w, path); err == nil {
			d.rest(path, w.Rest)
			b = ir.Block{Type: ir.BlockToolResult, ToolUseID: w.ToolUseID, IsError: w.IsError, CacheControl: raw(w.CacheControl)}
			switch {
			case w.ToolUseID == "":
				err = missing(path + ".tool_use_id")
			case jsonx.Kind(w.Content) != 0: // a result may be empty
				b.Content, err = d.content(w.Content, path+".content", inToolResult)
			}
		}
	case "thinking":
		var w thinkingWire
		if err = unmarshal(e, &w, path); err == nil {
			d.rest(path, w.Rest)
			b = ir.Block{Type: ir.BlockThinking, Text: w.Thinking, Signature: w.Signature}
		}
	case "redacted_thinking":
		var w redactedWire
		if err = unmarshal(e, &w, path); err == nil {
			d.rest(path, w.Rest)
			b = ir.Block{Type: ir.BlockRedactedThinking, Data: w.Data}
		}
	}
	return b, err
}

// media decodes an image or a document's source.
func (d *decoder) media(w *mediaWire, path string) (ir.Block, error) {
	b := ir.Block{Type: ir.BlockImage, CacheControl: raw(w.CacheControl)}
	if w.Type == "document" {
		b.Type = ir.BlockDocument
	}
	s := w.Source
	sp := path + ".source"
	if s == nil {
		return b, missing(sp)
	}
	d.rest(sp, s.Rest)
	switch {
	case s.Type == "base64":
		b.MediaType, b.Data = s.MediaType, s.Data
		if s.MediaType == "" {
			return b, missing(sp + ".media_type")
		}
		if s.Data == "" {
			return b, missing(sp + ".data")
		}
	case s.Type == "url":
		b.URL = s.URL
		if s.URL == "" {
			return b, missing(sp + ".url")
		}
	case s.Type == "text" && b.Type == ir.BlockDocument:
		// A plain-text document carries its text as such; the IR keeps
		// every document as base64 data or a URL.
		b.MediaType = "text/plain"
		b.Data = base64.StdEncoding.EncodeToString([]byte(s.Data))
	case s.Type == "":
		return b, missing(sp + ".type")
	default:
		return b, &wire.RequestError{Code: wire.CodeInvalidValue, Param: sp + ".type",
			Message: sp + ".type: source type " + strconv.Quote(short(s.Type)) + " cannot be served on this route."}
	}
	return b, nil
}

func (d *decoder) tools(r *ir.Request, tools []jsontext.Value) error {
	for i, v := range tools {
		path := "tools[" + strconv.Itoa(i) + "]"
		var w toolWire
		if err := unmarshal(v, &w, path); err != nil {
			return err
		}
		if w.Type != "" && w.Type != "custom" {
			return &wire.RequestError{Code: wire.CodeInvalidValue, Param: path + ".type",
				Message: path + ".type: server tool " + strconv.Quote(short(w.Type)) + " cannot be served on this route."}
		}
		d.rest(path, w.Rest)
		if w.Name == "" {
			return missing(path + ".name")
		}
		if jsonx.Kind(w.InputSchema) != '{' {
			return typeError(path+".input_schema", "a valid object")
		}
		r.Tools = append(r.Tools, ir.Tool{Name: w.Name, Description: w.Description, Schema: raw(w.InputSchema), CacheControl: raw(w.CacheControl)})
	}
	return nil
}

func (d *decoder) toolChoice(r *ir.Request, w *toolChoiceWire) error {
	if w == nil {
		return nil
	}
	d.rest("tool_choice", w.Rest)
	tc := ir.ToolChoice{Set: true, DisableParallel: w.DisableParallel}
	switch w.Type {
	case "auto":
		tc.Mode = ir.ToolAuto
	case "any":
		tc.Mode = ir.ToolAny
	case "none":
		tc.Mode = ir.ToolNone
	case "tool":
		tc.Mode, tc.Name = ir.ToolNamed, w.Name
		if w.Name == "" {
			return missing("tool_choice.name")
		}
	case "":
		return missing("tool_choice.type")
	default:
		return &wire.RequestError{Code: wire.CodeInvalidValue, Param: "tool_choice.type",
			Message: "tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'."}
	}
	r.ToolChoice = tc
	return nil
}

func (d *decoder) thinking(r *ir.Request, w *thinkingConfig, oc *outputConfigWire) error {
	effort := ""
	if oc != nil {
		effort = oc.Effort
	}
	if w == nil {
		if effort != "" {
			d.dropped = append(d.dropped, "output_config.effort")
		}
		return nil
	}
	d.rest("thinking", w.Rest)
	switch w.Type {
	case "enabled":
		if w.BudgetTokens == nil {
			return missing("thinking.budget_tokens")
		}
		if *w.BudgetTokens < 1 {
			return &wire.RequestError{Code: wire.CodeInvalidValue, Param: "thinking.budget_tokens",
				Message: "thinking.budget_tokens: Input should be a positive integer."}
		}
		if *w.BudgetTokens >= r.MaxTokens {
			// Anthropic's own rule: thinking counts within max_tokens.
			return &wire.RequestError{Code: wire.CodeInvalidValue, Param: "thinking.budget_tokens",
				Message: "thinking.budget_tokens: Input should be less than max_tokens."}
		}
		r.ThinkingBudget = *w.BudgetTokens
	case "disabled":
	case "adaptive":
		// The model decides how much to reason, at the effort asked; the
		// IR's levels are OpenAI's, whose xhigh is Anthropic's max.
		switch effort {
		case "":
			r.ReasoningEffort = "high"
		case "low", "medium", "high":
			r.ReasoningEffort = effort
		case "max":
			r.ReasoningEffort = "xhigh"
		default:
			return &wire.RequestError{Code: wire.CodeInvalidValue, Param: "output_config.effort",
				Message: "output_config.effort: Input should be 'low', 'medium', 'high' or 'max'."}
		}
		return nil
	case "":
		return missing("thinking.type")
	default:
		return &wire.RequestError{Code: wire.CodeInvalidValue, Param: "thinking.type",
			Message: "thinking.type: Input should be 'enabled', 'disabled' or 'adaptive'."}
	}
	if effort != "" {
		d.dropped = append(d.dropped, "output_config.effort")
	}
	return nil
}

func (d *decoder) format(r *ir.Request, oc *outputConfigWire, beta *formatWire) error {
	f, path := beta, "output_format"
	if oc != nil {
		d.rest("output_config", oc.Rest)
		if oc.Format != nil {
			if beta != nil {
				return &wire.RequestError{Code: wire.CodeInvalidValue, Param: "output_format",
					Message: "output_format: Set output_config.format or output_format, not both."}
			}
			f, path = oc.Format, "output_config.format"
		}
	}
	if f == nil {
		return nil
	}
	d.rest(path, f.Rest)
	if f.Type != "json_schema" {
		return &wire.RequestError{Code: wire.CodeInvalidValue, Param: path + ".type",
			Message: path + ".type: Input should be 'json_schema'."}
	}
	if jsonx.Kind(f.Schema) != '{' {
		return typeError(path+".schema", "a valid object")
	}
	r.ResponseFormat = &ir.ResponseFormat{Type: "json_schema", Schema: raw(f.Schema), Strict: true}
	return nil
}

// EncodeRequest appends r as an Anthropic Messages body for model to dst.
// Members come in a fixed order, so equal requests give equal bytes.
//
// Anthropic requires what other APIs leave open, so EncodeRequest fills
// it in: max_tokens is r.MaxTokens, or DefaultMaxTokens when 0; a
// thinking budget comes from r.ThinkingBudget or else r.ReasoningEffort
// (low 1024, medium 4096, high 16384, xhigh 32768 tokens; minimal and
// none ask for none), and since Anthropic counts thinking within
// max_tokens and needs budget_tokens < max_tokens, a budget that does not
// fit raises max_tokens to the budget plus DefaultMaxTokens. Consecutive
// messages of one role are merged (Anthropic requires turns to
// alternate); tool results always travel in a user turn, ahead of its
// other blocks; empty text blocks, unsigned thinking blocks (another
// provider's reasoning, which Anthropic cannot verify) and the turns they
// leave empty are dropped.
//
// What Anthropic cannot express is an *ir.UnsupportedError whose Param is
// the IR member, named as follows (the client codec maps them to its
// own names, or checks its own members first): "n" (more than one
// answer), "logprobs", "top_logprobs", "response_format" (only
// json_schema has an Anthropic form), "reasoning_effort" (an unknown
// level), "temperature" (outside 0 to 1, or not finite), "top_p",
// "tool_choice" (a forced tool while thinking), "system[j]" (a system
// block that is not text), "messages[i].content[j]" (a block Anthropic
// cannot carry, or an invalid source, input or cache_control) and
// "tools[i]" (a schema that is not an object). Indices are the IR's.
func EncodeRequest(dst []byte, r *ir.Request, model string) ([]byte, error) {
	if err := checkUnsupported(r); err != nil {
		return dst, err
	}
	budget, err := thinkingBudget(r)
	if err != nil {
		return dst, err
	}
	maxTokens := r.MaxTokens
	if maxTokens <= 0 {
		maxTokens = DefaultMaxTokens
	}
	if budget > 0 && budget >= maxTokens {
		maxTokens = budget + DefaultMaxTokens
		if maxTokens < budget { // an absurd budget: keep the sum from wrapping
			maxTokens = math.MaxInt64
		}
	}
	start := len(dst)
	b := append(dst, `{"model":`...)
	b = jsonx.AppendString(b, model)
	b = append(b, `,"max_tokens":`...)
	b = jsonx.AppendInt(b, maxTokens)
	if len(r.System) > 0 {
		if b, err = appendSystem(append(b, `,"system":`...), r.System); err != nil {
			return dst[:start], err
		}
	}
	if b, err = appendMessages(append(b, `,"messages":`...), r.Messages); err != nil {
		return dst[:start], err
	}
	if len(r.Tools) > 0 {
		if b, err = appendTools(append(b, `,"tools":`...), r.Tools); err != nil {
			return dst[:start], err
		}
	}
	b = appendToolChoice(b, r)
	if budget > 0 {
		b = append(b, `,"thinking":{"type":"enabled","budget_tokens":`...)
		b = append(jsonx.AppendInt(b, budget), '}')
	}
	if f := r.ResponseFormat; f != nil {
		b = append(b, `,"output_config":{"format":{"type":"json_schema","schema":`...)
		b = append(append(b, f.Schema...), "}}"...)
	}
	if len(r.Stop) > 0 {
		b = append(b, `,"stop_sequences":[`...)
		for i, s := range r.Stop {
			if i > 0 {
				b = append(b, ',')
			}
			b = jsonx.AppendString(b, s)
		}
		b = append(b, ']')
	}
	if r.Temperature != nil {
		b = appendFloat(append(b, `,"temperature":`...), *r.Temperature)
	}
	if r.TopP != nil {
		b = appendFloat(append(b, `,"top_p":`...), *r.TopP)
	}
	if r.TopK != nil {
		b = jsonx.AppendInt(append(b, `,"top_k":`...), *r.TopK)
	}
	if r.User != "" {
		b = append(b, `,"metadata":{"user_id":`...)
		b = append(jsonx.AppendString(b, r.User), '}')
	}
	if r.Stream {
		b = append(b, `,"stream":true`...)
	}
	return append(b, '}'), nil
}

// checkUnsupported refuses the request members Anthropic has no form for.
func checkUnsupported(r *ir.Request) error {
	switch {
	case r.N > 1:
		return &ir.UnsupportedError{Param: "n", Reason: "Anthropic returns one answer per request."}
	case r.Logprobs:
		return &ir.UnsupportedError{Param: "logprobs", Reason: "Anthropic does not return token log probabilities."}
	case r.TopLogprobs > 0:
		return &ir.UnsupportedError{Param: "top_logprobs", Reason: "Anthropic does not return token log probabilities."}
	}
	if f := r.ResponseFormat; f != nil {
		if f.Type != "json_schema" {
			return &ir.UnsupportedError{Param: "response_format", Reason: "Anthropic constrains output only to a JSON schema (json_schema)."}
		}
		if !jsonx.IsObject(f.Schema) {
			return &ir.UnsupportedError{Param: "response_format", Reason: "The JSON schema must be an object."}
		}
	}
	if t := r.Temperature; t != nil && !(*t >= 0 && *t <= 1) {
		// OpenAI's range is 0 to 2; scaling would change the meaning.
		return &ir.UnsupportedError{Param: "temperature", Reason: "Anthropic accepts a temperature from 0 to 1."}
	}
	if p := r.TopP; p != nil && !(*p >= 0 && *p <= 1) {
		return &ir.UnsupportedError{Param: "top_p", Reason: "top_p must be from 0 to 1."}
	}
	return nil
}

// thinkingBudget is the budget_tokens to send, 0 for no thinking.
func thinkingBudget(r *ir.Request) (int64, error) {
	budget := r.ThinkingBudget
	if budget <= 0 {
		switch e := r.ReasoningEffort; e {
		case "", "none", "minimal":
			return 0, nil
		default:
			var ok bool
			if budget, ok = effortBudgets[e]; !ok {
				return 0, &ir.UnsupportedError{Param: "reasoning_effort", Reason: "Unknown reasoning effort " + strconv.Quote(short(e)) + "."}
			}
		}
	}
	if r.ToolChoice.Set && (r.ToolChoice.Mode == ir.ToolAny || r.ToolChoice.Mode == ir.ToolNamed) {
		return 0, &ir.UnsupportedError{Param: "tool_choice", Reason: "Anthropic cannot force a tool call while the model reasons; use auto or none, or turn reasoning off."}
	}
	return budget, nil
}

func appendSystem(b []byte, blocks []ir.Block) ([]byte, error) {
	for j := range blocks {
		if blocks[j].Type != ir.BlockText {
			return b, &ir.UnsupportedError{Param: "system[" + strconv.Itoa(j) + "]", Reason: "Anthropic's system prompt holds only text."}
		}
	}
	if len(blocks) == 1 && len(blocks[0].CacheControl) == 0 {
		return jsonx.AppendString(b, blocks[0].Text), nil
	}
	b = append(b, '[')
	for j := range blocks {
		if j > 0 {
			b = append(b, ',')
		}
		var err error
		if b, err = appendText(b, &blocks[j], "system["+strconv.Itoa(j)+"]"); err != nil {
			return b, err
		}
	}
	return append(b, ']'), nil
}

// item is one block on its way to a turn, with its IR position for
// errors.
type item struct {
	b    *ir.Block
	i, j int
}

type turn struct {
	role  ir.Role
	items []item
}

// turns regroups the IR's messages into the alternating turns Anthropic
// requires: tool results go to user turns, blocks that carry nothing
// are left out, and consecutive turns of one role are merged.
func turns(msgs []ir.Message) []turn {
	var ts []turn
	for i := range msgs {
		m := &msgs[i]
		for j := range m.Content {
			b := &m.Content[j]
			if b.Type == ir.BlockText && b.Text == "" {
				continue // Anthropic refuses empty text blocks
			}
			if b.Type == ir.BlockThinking && b.Signature == "" {
				continue // unverifiable: another provider's reasoning
			}
			role := m.Role
			if b.Type == ir.BlockToolResult || role != ir.RoleAssistant {
				role = ir.RoleUser
			}
			if n := len(ts); n == 0 || ts[n-1].role != role {
				ts = append(ts, turn{role: role})
			}
			t := &ts[len(ts)-1]
			t.items = append(t.items, item{b, i, j})
		}
	}
	return ts
}

func appendMessages(b []byte, msgs []ir.Message) ([]byte, error) {
	b = append(b, '[')
	for n, t := range turns(msgs) {
		if n > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"role":`...)
		b = jsonx.AppendString(b, string(t.role))
		b = append(b, `,"content":[`...)
		first := true
		// Anthropic wants a user turn's tool results first: two passes,
		// results then the rest, each in order.
		for pass := range 2 {
			for _, it := range t.items {
				if (it.b.Type == ir.BlockToolResult) != (pass == 0) {
					continue
				}
				if !first {
					b = append(b, ',')
				}
				first = false
				var err error
				if b, err = appendBlock(b, it.b, "messages["+strconv.Itoa(it.i)+"].content["+strconv.Itoa(it.j)+"]"); err != nil {
					return b, err
				}
			}
		}
		b = append(b, "]}"...)
	}
	return append(b, ']'), nil
}

// appendBlock appends one content block; path names it in errors.
func appendBlock(b []byte, blk *ir.Block, path string) ([]byte, error) {
	switch blk.Type {
	case ir.BlockText:
		return appendText(b, blk, path)
	case ir.BlockImage, ir.BlockDocument:
		return appendMedia(b, blk, path)
	case ir.BlockToolUse:
		b = append(b, `{"type":"tool_use","id":`...)
		b = jsonx.AppendString(b, blk.ID)
		b = append(b, `,"name":`...)
		b = jsonx.AppendString(b, blk.Name)
		b = append(b, `,"input":`...)
		switch {
		case len(blk.Input) == 0:
			b = append(b, "{}"...)
		case jsonx.IsObject(blk.Input):
			b = append(b, blk.Input...)
		default:
			return b, &ir.UnsupportedError{Param: path, Reason: "A tool call's input must be a JSON object."}
		}
		return appendCache(b, blk, path)
	case ir.BlockToolResult:
		b = append(b, `{"type":"tool_result","tool_use_id":`...)
		b = jsonx.AppendString(b, blk.ToolUseID)
		var err error
		if b, err = appendResultContent(b, blk.Content, path); err != nil {
			return b, err
		}
		if blk.IsError {
			b = append(b, `,"is_error":true`...)
		}
		return appendCache(b, blk, path)
	case ir.BlockThinking:
		b = append(b, `{"type":"thinking","thinking":`...)
		b = jsonx.AppendString(b, blk.Text)
		b = append(b, `,"signature":`...)
		b = jsonx.AppendString(b, blk.Signature)
		return append(b, '}'), nil
	case ir.BlockRedactedThinking:
		b = append(b, `{"type":"redacted_thinking","data":`...)
		b = jsonx.AppendString(b, blk.Data)
		return append(b, '}'), nil
	}
	return b, &ir.UnsupportedError{Param: path, Reason: "Unknown content block type."}
}

func appendText(b []byte, blk *ir.Block, path string) ([]byte, error) {
	b = append(b, `{"type":"text","text":`...)
	b = jsonx.AppendString(b, blk.Text)
	return appendCache(b, blk, path)
}

// appendResultContent appends a tool result's content: a string when it
// is one plain text block, as most clients send it, else a list. Empty
// text blocks, which Anthropic refuses, are left out first, so that the
// form chosen is the same when the output is decoded and encoded again.
func appendResultContent(b []byte, content []ir.Block, path string) ([]byte, error) {
	keep := make([]int, 0, len(content))
	for k := range content {
		if c := &content[k]; c.Type != ir.BlockText || c.Text != "" {
			keep = append(keep, k)
		}
	}
	switch {
	case len(keep) == 0:
		return b, nil
	case len(keep) == 1 && content[keep[0]].Type == ir.BlockText && len(content[keep[0]].CacheControl) == 0:
		return jsonx.AppendString(append(b, `,"content":`...), content[keep[0]].Text), nil
	}
	b = append(b, `,"content":[`...)
	for n, k := range keep {
		c := &content[k]
		p := path + ".content[" + strconv.Itoa(k) + "]"
		if c.Type != ir.BlockText && c.Type != ir.BlockImage && c.Type != ir.BlockDocument {
			return b, &ir.UnsupportedError{Param: p, Reason: "A tool result holds only text, images and documents."}
		}
		if n > 0 {
			b = append(b, ',')
		}
		var err error
		if b, err = appendBlock(b, c, p); err != nil {
			return b, err
		}
	}
	return append(b, ']'), nil
}

// appendMedia appends an image or a document from its base64 data or its
// URL. A data: URL (how OpenAI clients send inline images) is sent as
// base64, since Anthropic fetches only http(s) URLs.
func appendMedia(b []byte, blk *ir.Block, path string) ([]byte, error) {
	typ := "image"
	if blk.Type == ir.BlockDocument {
		typ = "document"
	}
	mediaType, data, url := blk.MediaType, blk.Data, blk.URL
	if data == "" && strings.HasPrefix(url, "data:") {
		var ok bool
		if mediaType, data, ok = wire.ParseDataURL(url); !ok {
			return b, &ir.UnsupportedError{Param: path, Reason: "Only base64 data: URLs can be sent."}
		}
	}
	b = append(b, `{"type":`...)
	b = jsonx.AppendString(b, typ)
	switch {
	case data != "" && typ == "document" && mediaType == "text/plain":
		text, err := base64.StdEncoding.DecodeString(data)
		if err != nil || !utf8.Valid(text) {
			return b, &ir.UnsupportedError{Param: path, Reason: "A text/plain document must be base64-encoded UTF-8."}
		}
		b = append(b, `,"source":{"type":"text","media_type":"text/plain","data":`...)
		b = append(jsonx.AppendString(b, string(text)), '}')
	case data != "":
		if mediaType == "" {
			return b, &ir.UnsupportedError{Param: path, Reason: "Base64 data needs its media type."}
		}
		if typ == "document" && mediaType != "application/pdf" {
			return b, &ir.UnsupportedError{Param: path, Reason: "Anthropic accepts PDF and plain-text documents only."}
		}
		b = append(b, `,"source":{"type":"base64","media_type":`...)
		b = jsonx.AppendString(b, mediaType)
		b = append(b, `,"data":`...)
		b = append(jsonx.AppendString(b, data), '}')
	case url != "":
		b = append(b, `,"source":{"type":"url","url":`...)
		b = append(jsonx.AppendString(b, url), '}')
	default:
		return b, &ir.UnsupportedError{Param: path, Reason: "An image or document needs data or a URL."}
	}
	return appendCache(b, blk, path)
}

// appendCache appends the block's cache_control, if any, and closes the
// block.
func appendCache(b []byte, blk *ir.Block, path string) ([]byte, error) {
	if len(blk.CacheControl) > 0 {
		if !jsonx.IsObject(blk.CacheControl) {
			return b, &ir.UnsupportedError{Param: path, Reason: "cache_control must be a JSON object."}
		}
		b = append(b, `,"cache_control":`...)
		b = append(b, blk.CacheControl...)
	}
	return append(b, '}'), nil
}

func appendTools(b []byte, tools []ir.Tool) ([]byte, error) {
	b = append(b, '[')
	for i := range tools {
		t := &tools[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"name":`...)
		b = jsonx.AppendString(b, t.Name)
		if t.Description != "" {
			b = append(b, `,"description":`...)
			b = jsonx.AppendString(b, t.Description)
		}
		b = append(b, `,"input_schema":`...)
		switch {
		case len(t.Schema) == 0:
			// A function without parameters; Anthropic requires a schema.
			b = append(b, `{"type":"object","properties":{}}`...)
		case jsonx.IsObject(t.Schema):
			b = append(b, t.Schema...)
		default:
			return b, &ir.UnsupportedError{Param: "tools[" + strconv.Itoa(i) + "]", Reason: "A tool's schema must be a JSON object."}
		}
		if len(t.CacheControl) > 0 {
			if !jsonx.IsObject(t.CacheControl) {
				return b, &ir.UnsupportedError{Param: "tools[" + strconv.Itoa(i) + "]", Reason: "cache_control must be a JSON object."}
			}
			b = append(b, `,"cache_control":`...)
			b = append(b, t.CacheControl...)
		}
		b = append(b, '}')
	}
	return append(b, ']'), nil
}

func appendToolChoice(b []byte, r *ir.Request) []byte {
	tc := r.ToolChoice
	if !tc.Set && !tc.DisableParallel {
		return b
	}
	if len(r.Tools) == 0 && (tc.Mode == ir.ToolAuto || tc.Mode == ir.ToolNone) {
		return b // without tools there is nothing to choose
	}
	b = append(b, `,"tool_choice":{"type":`...)
	switch tc.Mode {
	case ir.ToolAny:
		b = append(b, `"any"`...)
	case ir.ToolNone:
		return append(b, `"none"}`...) // no tool, so nothing in parallel
	case ir.ToolNamed:
		b = append(b, `"tool","name":`...)
		b = jsonx.AppendString(b, tc.Name)
	default:
		b = append(b, `"auto"`...)
	}
	if tc.DisableParallel {
		b = append(b, `,"disable_parallel_tool_use":true`...)
	}
	return append(b, '}')
}

// appendFloat appends f as encoding/json does. The caller has checked
// that f is finite.
func appendFloat(b []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// clean up e-09 to e-9
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

// Helpers shared by the request, response and stream translations.

// memberString reads the string member name of the object e, which the
// caller has validated. ok is false when it is absent or not a string.
func memberString(e []byte, name string) (s string, ok bool) {
	_, _ = jsonx.Object(e, func(m jsonx.Member) error { // e was validated by the caller
		if m.Is(name) && e[m.Start] == '"' {
			s, _ = jsonx.Unquote(e[m.Start:m.End])
			ok = true
		}
		return nil
	})
	return s, ok
}

// unmarshal decodes e into w, naming members in errors under path.
func unmarshal(e []byte, w any, path string) error {
	if err := json.Unmarshal(e, w); err != nil {
		return jsonError(path, err)
	}
	return nil
}

// jsonError turns a decoding error into the client's error, naming the
// member by its path under prefix. It never quotes the value.
func jsonError(prefix string, err error) *wire.RequestError {
	var (
		se *json.SemanticError
		sy *jsontext.SyntacticError
	)
	switch {
	case errors.As(err, &sy):
		p := wire.JoinPath(prefix, pointerPath(sy.JSONPointer))
		switch {
		case errors.Is(err, jsontext.ErrDuplicateName):
			return &wire.RequestError{Code: wire.CodeDuplicateParameter, Param: p, Message: p + ": A parameter appears more than once."}
		case p == "":
			return ErrMalformed
		}
		// The body passed the scanner, so what is left is invalid UTF-8.
		return &wire.RequestError{Code: wire.CodeInvalidJSON, Param: p, Message: p + ": The value is not valid JSON (invalid UTF-8)."}
	case errors.As(err, &se):
		p := wire.JoinPath(prefix, pointerPath(se.JSONPointer))
		want := "a valid value"
		if se.GoType != nil {
			want = goKind(se.GoType.Kind().String())
		}
		if errors.Is(se.Err, strconv.ErrRange) {
			return &wire.RequestError{Code: wire.CodeInvalidValue, Param: p, Message: p + ": The number is out of range."}
		}
		if p == "" {
			return ErrMalformed
		}
		return typeError(p, want)
	}
	return ErrMalformed
}

func goKind(k string) string {
	switch k {
	case "string":
		return "a valid string"
	case "int64", "int":
		return "a valid integer"
	case "float64":
		return "a valid number"
	case "bool":
		return "a valid boolean"
	case "slice":
		return "a valid list"
	case "struct", "map", "ptr":
		return "a valid object"
	}
	return "a valid value"
}

// pointerPath turns a JSON pointer (/messages/2/content) into the path
// clients read (messages[2].content).
func pointerPath(p jsontext.Pointer) string {
	var s strings.Builder
	for tok := range p.Tokens() {
		if tok != "" && strings.Trim(tok, "0123456789") == "" {
			s.WriteString("[" + tok + "]")
			continue
		}
		if s.Len() > 0 {
			s.WriteByte('.')
		}
		s.WriteString(short(tok))
	}
	return s.String()
}

func typeError(param, want string) *wire.RequestError {
	return &wire.RequestError{Code: wire.CodeInvalidType, Param: param, Message: param + ": Input should be " + want + "."}
}

func missing(param string) *wire.RequestError {
	return &wire.RequestError{Code: wire.CodeMissingParameter, Param: param, Message: param + ": Field required."}
}

// short bounds what an error or a dropped path quotes of the client's
// input (a member name or a type): at most 64 bytes, on a rune boundary.
func short(s string) string {
	const limit = 64
	if len(s) <= limit {
		return s
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// raw keeps a raw value for the IR; null is absent.
func raw(v jsontext.Value) ir.Raw {
	if jsonx.Kind(v) == 0 {
		return nil
	}
	return ir.Raw(v)
}
