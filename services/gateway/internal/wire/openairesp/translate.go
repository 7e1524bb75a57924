package openairesp

import (
	"errors"
	"strconv"
	"strings"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/moat-ai/moat/services/gateway/internal/ir"
	"github.com/moat-ai/moat/services/gateway/internal/wire"
	"github.com/moat-ai/moat/services/gateway/internal/wire/jsonx"
)

// This file is the translated path's request side: a Responses body into
// the IR. Unlike the native path's scanner, it decodes the whole body,
// typed, with go-json-experiment/json, which refuses duplicate member
// names anywhere in the document.

// DecodeRequest reads a Responses body, already validated by
// ParseRequest, into the IR for an upstream of another API. It returns,
// as its second result, the JSON paths of the members it dropped because
// the IR cannot carry them, in the order met: sampling and bookkeeping
// members (metadata, service_tier, truncation, prompt_cache_key, ...),
// text.verbosity, reasoning.summary, a tool's strict: true, an image's
// detail, a file's filename, store: true (the gateway stores nothing, so
// nothing is lost: a later request cannot name this response either),
// the include value reasoning.encrypted_content (reasoning comes back as
// summaries only) and any member it does not know. Members whose value is
// null, and the ids and statuses of replayed output items, carry nothing
// and are not listed. The gateway applies the route's policy to the list
// (drop and report, or reject).
//
// Mapping: instructions and system or developer messages become the
// system prompt; a string input is one user message. Items: a message's
// input_text, output_text and refusal parts become text, input_image
// (image_url a data URL or an http(s) URL) an image, input_file
// (file_data a data URL, or file_url) a document; a reasoning item's
// summary becomes thinking without a signature. Consecutive assistant
// messages, reasoning items and function_call items form one assistant
// turn, and consecutive function_call_output items one user turn of tool
// results, as the other APIs require. max_output_tokens, temperature,
// top_p, tools of type function, tool_choice, parallel_tool_calls,
// reasoning.effort, text.format (json_schema or json_object), user (or
// safety_identifier) and stream map to their IR members.
//
// What needs OpenAI's stored state, or what the IR cannot represent
// without changing the request's meaning, is an error naming the member
// (code wire.CodeUnsupported): previous_response_id, conversation, prompt
// (stored prompts), background: true, item_reference items, encrypted
// reasoning (a reasoning item's encrypted_content, which only OpenAI can
// read), files by id, built-in tools (tools[i].type) and forcing them
// (tool_choice.type), input items of built-in tools' types, top_logprobs
// and every include value but reasoning.encrypted_content. Errors are
// *wire.RequestError with Param the member's JSON path
// (input[2].content[0].type).
func DecodeRequest(body []byte) (*ir.Request, []string, error) {
	var w requestWire
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, nil, jsonError("", err)
	}
	var d decoder
	if err := d.stateless(&w); err != nil {
		return nil, nil, err
	}
	if w.Model == "" {
		return nil, nil, missing("model")
	}
	r := &ir.Request{Model: w.Model, Temperature: w.Temperature, TopP: w.TopP}
	d.rest("", w.Rest)
	if w.Stream != nil {
		r.Stream = *w.Stream
	}
	if w.MaxOutputTokens != nil {
		if *w.MaxOutputTokens < 1 {
			return nil, nil, invalid("max_output_tokens", "must be a positive integer")
		}
		r.MaxTokens = *w.MaxOutputTokens
	}
	if w.TopLogprobs != nil && *w.TopLogprobs > 0 {
		return nil, nil, unsupported("top_logprobs", "token log probabilities")
	}
	if w.Store != nil && *w.Store {
		d.dropped = append(d.dropped, "store")
	}
	switch {
	case w.SafetyIdentifier != nil && *w.SafetyIdentifier != "":
		r.User = *w.SafetyIdentifier
		if w.User != nil && *w.User != "" && *w.User != r.User {
			d.dropped = append(d.dropped, "user") // one end-user id in the IR
		}
	case w.User != nil:
		r.User = *w.User
	}
	if err := d.include(w.Include); err != nil {
		return nil, nil, err
	}
	if err := d.instructions(r, w.Instructions); err != nil {
		return nil, nil, err
	}
	if err := d.input(r, w.Input); err != nil {
		return nil, nil, err
	}
	if err := d.tools(r, w.Tools); err != nil {
		return nil, nil, err
	}
	if err := d.toolChoice(r, w.ToolChoice); err != nil {
		return nil, nil, err
	}
	if w.ParallelToolCalls != nil && !*w.ParallelToolCalls {
		r.ToolChoice.DisableParallel = true
	}
	if w.Reasoning != nil {
		d.rest("reasoning", w.Reasoning.Rest)
		if w.Reasoning.Effort != nil {
			r.ReasoningEffort = *w.Reasoning.Effort
		}
		d.nonNull("reasoning.summary", w.Reasoning.Summary)
		d.nonNull("reasoning.generate_summary", w.Reasoning.GenerateSummary)
	}
	if err := d.text(r, w.Text); err != nil {
		return nil, nil, err
	}
	return r, d.dropped, nil
}

// The decoding targets. Each struct names exactly the members the IR
// carries (or refuses, or knowingly ignores); Rest collects the others,
// which DecodeRequest lists as dropped. Polymorphic members stay raw and
// are decoded by type.
type (
	requestWire struct {
		Model              string           `json:"model"`
		Input              jsontext.Value   `json:"input"`
		Instructions       jsontext.Value   `json:"instructions"`
		Stream             *bool            `json:"stream"`
		MaxOutputTokens    *int64           `json:"max_output_tokens"`
		Temperature        *float64         `json:"temperature"`
		TopP               *float64         `json:"top_p"`
		TopLogprobs        *int64           `json:"top_logprobs"`
		Tools              []jsontext.Value `json:"tools"`
		ToolChoice         jsontext.Value   `json:"tool_choice"`
		ParallelToolCalls  *bool            `json:"parallel_tool_calls"`
		Reasoning          *reasoningWire   `json:"reasoning"`
		Text               *textWire        `json:"text"`
		User               *string          `json:"user"`
		SafetyIdentifier   *string          `json:"safety_identifier"`
		Store              *bool            `json:"store"`
		Background         *bool            `json:"background"`
		PreviousResponseID jsontext.Value   `json:"previous_response_id"`
		Conversation       jsontext.Value   `json:"conversation"`
		Prompt             jsontext.Value   `json:"prompt"`
		Include            []string         `json:"include"`
		Rest               jsontext.Value   `json:",embed"`
	}
	reasoningWire struct {
		Effort          *string        `json:"effort"`
		Summary         jsontext.Value `json:"summary"`
		GenerateSummary jsontext.Value `json:"generate_summary"`
		Rest            jsontext.Value `json:",embed"`
	}
	textWire struct {
		Format    *formatWire    `json:"format"`
		Verbosity jsontext.Value `json:"verbosity"`
		Rest      jsontext.Value `json:",embed"`
	}
	formatWire struct {
		Type        string         `json:"type"`
		Name        string         `json:"name"`
		Schema      jsontext.Value `json:"schema"`
		Strict      *bool          `json:"strict"`
		Description jsontext.Value `json:"description"`
		Rest        jsontext.Value `json:",embed"`
	}
	toolWire struct {
		Type        string         `json:"type"`
		Name        string         `json:"name"`
		Description string         `json:"description"`
		Parameters  jsontext.Value `json:"parameters"`
		Strict      *bool          `json:"strict"`
		Rest        jsontext.Value `json:",embed"`
	}
	toolChoiceWire struct {
		Type string         `json:"type"`
		Name string         `json:"name"`
		Rest jsontext.Value `json:",embed"`
	}

	// Input items. ID and Status are those of a replayed output item:
	// the IR has no item ids, and they change nothing of the request.
	messageWire struct {
		Type    string         `json:"type"`
		Role    string         `json:"role"`
		Content jsontext.Value `json:"content"`
		ID      string         `json:"id"`
		Status  string         `json:"status"`
		Rest    jsontext.Value `json:",embed"`
	}
	functionCallWire struct {
		Type      string         `json:"type"`
		CallID    string         `json:"call_id"`
		Name      string         `json:"name"`
		Arguments *string        `json:"arguments"`
		ID        string         `json:"id"`
		Status    string         `json:"status"`
		Rest      jsontext.Value `json:",embed"`
	}
	functionOutputWire struct {
		Type   string         `json:"type"`
		CallID string         `json:"call_id"`
		Output jsontext.Value `json:"output"`
		ID     string         `json:"id"`
		Status string         `json:"status"`
		Rest   jsontext.Value `json:",embed"`
	}
	reasoningItemWire struct {
		Type             string         `json:"type"`
		Summary          []summaryWire  `json:"summary"`
		Content          jsontext.Value `json:"content"`
		EncryptedContent jsontext.Value `json:"encrypted_content"`
		ID               string         `json:"id"`
		Status           string         `json:"status"`
		Rest             jsontext.Value `json:",embed"`
	}
	summaryWire struct {
		Type string         `json:"type"`
		Text string         `json:"text"`
		Rest jsontext.Value `json:",embed"`
	}

	// Content parts.
	textPartWire struct {
		Type        string         `json:"type"`
		Text        *string        `json:"text"`
		Annotations jsontext.Value `json:"annotations"`
		Logprobs    jsontext.Value `json:"logprobs"`
		Rest        jsontext.Value `json:",embed"`
	}
	refusalPartWire struct {
		Type    string         `json:"type"`
		Refusal *string        `json:"refusal"`
		Rest    jsontext.Value `json:",embed"`
	}
	imagePartWire struct {
		Type     string         `json:"type"`
		ImageURL string         `json:"image_url"`
		FileID   string         `json:"file_id"`
		Detail   string         `json:"detail"`
		Rest     jsontext.Value `json:",embed"`
	}
	filePartWire struct {
		Type     string         `json:"type"`
		FileData string         `json:"file_data"`
		FileURL  string         `json:"file_url"`
		FileID   string         `json:"file_id"`
		Filename string         `json:"filename"`
		Rest     jsontext.Value `json:",embed"`
	}
)

// decoder collects the dropped members of one request, and groups input
// items into turns.
type decoder struct {
	dropped []string
	group   group
}

// group is the kind of turn the last input item opened, which the next
// item may join.
type group uint8

const (
	groupNone      group = iota
	groupAssistant       // an assistant turn: text, reasoning and function calls
	groupResults         // a user turn of tool results
)

// stateless refuses the members that need OpenAI's stored state.
func (d *decoder) stateless(w *requestWire) error {
	switch {
	case present(w.PreviousResponseID):
		return stateError("previous_response_id", "a previous response")
	case present(w.Conversation):
		return stateError("conversation", "a stored conversation")
	case present(w.Prompt):
		return stateError("prompt", "a stored prompt")
	case w.Background != nil && *w.Background:
		return &wire.RequestError{Code: wire.CodeUnsupported, Param: "background",
			Message: "background: background responses cannot be translated for this model's provider: the gateway stores no responses to poll. Stream the response instead."}
	}
	return nil
}

// present reports whether a raw member is there and says something: not
// absent, null or the empty string.
func present(v jsontext.Value) bool {
	k := jsonx.Kind(v)
	return k != 0 && (k != '"' || string(v) != `""`)
}

func stateError(param, what string) *wire.RequestError {
	return &wire.RequestError{Code: wire.CodeUnsupported, Param: param,
		Message: param + ": " + what + " cannot be used with this model's provider: the gateway stores no responses or conversations. Send the whole conversation as input."}
}

// include checks the include values: only reasoning.encrypted_content,
// which stateless clients send, is accepted (and listed as dropped, since
// another provider's reasoning comes back as summaries only).
func (d *decoder) include(values []string) error {
	for i, v := range values {
		p := "include[" + strconv.Itoa(i) + "]"
		switch v {
		case "reasoning.encrypted_content":
			d.dropped = append(d.dropped, p)
		case "message.output_text.logprobs":
			return unsupported(p, "token log probabilities")
		default:
			return unsupported(p, "the include value "+strconv.Quote(wire.Bound(v)))
		}
	}
	return nil
}

func (d *decoder) instructions(r *ir.Request, v jsontext.Value) error {
	switch jsonx.Kind(v) {
	case 0:
		return nil
	case '"':
		s, err := unquote(v, "instructions")
		if err != nil {
			return err
		}
		if s != "" {
			r.System = append(r.System, ir.Block{Type: ir.BlockText, Text: s})
		}
		return nil
	}
	return typeError("instructions", "a string")
}

func (d *decoder) input(r *ir.Request, v jsontext.Value) error {
	switch jsonx.Kind(v) {
	case 0:
		return missing("input")
	case '"':
		s, err := unquote(v, "input")
		if err != nil {
			return err
		}
		r.Messages = append(r.Messages, ir.Message{Role: ir.RoleUser, Content: []ir.Block{{Type: ir.BlockText, Text: s}}})
		return nil
	case '[':
		return jsonx.Elements(v, func(i int, e []byte) error {
			return d.item(r, e, "input["+strconv.Itoa(i)+"]")
		})
	}
	return typeError("input", "a string or an array of input items")
}

// item decodes one input item at path. Its type is read first, so that
// the error for an item of another kind names its type, not the members
// that kind lacks; an item without a type but with a role is a message
// (the SDKs' easy input message).
func (d *decoder) item(r *ir.Request, e []byte, path string) error {
	if jsonx.Kind(e) != '{' {
		return typeError(path, "an object")
	}
	typ := "message"
	switch t := member(e, "type"); {
	case jsonx.Kind(t) == '"':
		typ, _ = jsonx.Unquote(t)
	case jsonx.Kind(t) != 0:
		return typeError(path+".type", "a string")
	case jsonx.Kind(member(e, "role")) == 0:
		return missing(path + ".type")
	}
	switch typ {
	case "message":
		var w messageWire
		if err := unmarshal(e, &w, path); err != nil {
			return err
		}
		d.rest(path, w.Rest)
		return d.message(r, &w, path)
	case "function_call":
		var w functionCallWire
		if err := unmarshal(e, &w, path); err != nil {
			return err
		}
		d.rest(path, w.Rest)
		switch {
		case w.CallID == "":
			return missing(path + ".call_id")
		case w.Name == "":
			return missing(path + ".name")
		case w.Arguments == nil:
			return missing(path + ".arguments")
		}
		input, err := arguments(*w.Arguments, path+".arguments")
		if err != nil {
			return err
		}
		m := d.turn(r, groupAssistant)
		m.Content = append(m.Content, ir.Block{Type: ir.BlockToolUse, ID: w.CallID, Name: w.Name, Input: input})
		return nil
	case "function_call_output":
		var w functionOutputWire
		if err := unmarshal(e, &w, path); err != nil {
			return err
		}
		d.rest(path, w.Rest)
		if w.CallID == "" {
			return missing(path + ".call_id")
		}
		content, err := d.content(w.Output, path+".output", inToolResult)
		if err != nil {
			return err
		}
		m := d.turn(r, groupResults)
		m.Content = append(m.Content, ir.Block{Type: ir.BlockToolResult, ToolUseID: w.CallID, Content: content})
		return nil
	case "reasoning":
		var w reasoningItemWire
		if err := unmarshal(e, &w, path); err != nil {
			return err
		}
		d.rest(path, w.Rest)
		return d.reasoning(r, &w, path)
	case "item_reference":
		return stateError(path+".type", "an item reference")
	}
	return unsupported(path+".type", "an input item of type "+strconv.Quote(wire.Bound(typ)))
}

// turn returns the IR message an item of group g joins: the last one when
// the previous item opened the same group, else a new one.
func (d *decoder) turn(r *ir.Request, g group) *ir.Message {
	if d.group != g || len(r.Messages) == 0 {
		role := ir.RoleAssistant
		if g == groupResults {
			role = ir.RoleUser
		}
		r.Messages = append(r.Messages, ir.Message{Role: role})
		d.group = g
	}
	return &r.Messages[len(r.Messages)-1]
}

func (d *decoder) message(r *ir.Request, w *messageWire, path string) error {
	var where placement
	switch w.Role {
	case "user":
		where = inUser
	case "system", "developer":
		where = inSystem
	case "assistant":
		where = inAssistant
	case "":
		return missing(path + ".role")
	default:
		return &wire.RequestError{Code: wire.CodeInvalidValue, Param: path + ".role",
			Message: path + ".role: must be user, assistant, system or developer."}
	}
	if jsonx.Kind(w.Content) == 0 {
		return missing(path + ".content")
	}
	blocks, err := d.content(w.Content, path+".content", where)
	if err != nil {
		return err
	}
	switch where {
	case inSystem:
		// The IR has one system prompt: system and developer messages
		// join it wherever they stand, as the chat codec does.
		r.System = append(r.System, blocks...)
	case inAssistant:
		m := d.turn(r, groupAssistant)
		m.Content = append(m.Content, blocks...)
	default:
		r.Messages = append(r.Messages, ir.Message{Role: ir.RoleUser, Content: blocks})
		d.group = groupNone
	}
	return nil
}

func (d *decoder) reasoning(r *ir.Request, w *reasoningItemWire, path string) error {
	if jsonx.Kind(w.EncryptedContent) != 0 {
		return unsupported(path+".encrypted_content", "encrypted reasoning, which only OpenAI can read,")
	}
	if jsonx.Kind(w.Content) != 0 && !jsonx.IsEmptyArray(w.Content) {
		d.dropped = append(d.dropped, path+".content")
	}
	var text strings.Builder
	for j, s := range w.Summary {
		sp := path + ".summary[" + strconv.Itoa(j) + "]"
		if s.Type != "summary_text" {
			return &wire.RequestError{Code: wire.CodeInvalidValue, Param: sp + ".type", Message: sp + ".type: must be summary_text."}
		}
		d.rest(sp, s.Rest)
		if s.Text == "" {
			continue
		}
		if text.Len() > 0 {
			text.WriteString("\n\n")
		}
		text.WriteString(s.Text)
	}
	if text.Len() > 0 {
		// Without a signature: another provider cannot verify it, and
		// encoders that need one leave it out.
		m := d.turn(r, groupAssistant)
		m.Content = append(m.Content, ir.Block{Type: ir.BlockThinking, Text: text.String()})
	}
	return nil
}

// placement is where content parts appear, which decides the part types
// allowed there.
type placement uint8

const (
	inUser placement = iota
	inSystem
	inAssistant
	inToolResult
)

var allowed = [...]map[string]bool{
	inUser:       {"input_text": true, "input_image": true, "input_file": true},
	inSystem:     {"input_text": true},
	inAssistant:  {"input_text": true, "output_text": true, "refusal": true},
	inToolResult: {"input_text": true, "input_image": true, "input_file": true},
}

// content decodes a message's content or a function call's output: a
// string (one text block; none for an empty output) or a list of parts.
func (d *decoder) content(v jsontext.Value, path string, where placement) ([]ir.Block, error) {
	switch jsonx.Kind(v) {
	case 0:
		return nil, missing(path)
	case '"':
		s, err := unquote(v, path)
		if err != nil || (s == "" && where == inToolResult) {
			return nil, err // an empty result is a result without content
		}
		return []ir.Block{{Type: ir.BlockText, Text: s}}, nil
	case '[':
		blocks := make([]ir.Block, 0, 1)
		err := jsonx.Elements(v, func(i int, e []byte) error {
			b, err := d.part(e, path+"["+strconv.Itoa(i)+"]", where)
			blocks = append(blocks, b)
			return err
		})
		return blocks, err
	}
	return nil, typeError(path, "a string or an array of content parts")
}

// part decodes one content part at path.
func (d *decoder) part(e []byte, path string, where placement) (ir.Block, error) {
	var b ir.Block
	if jsonx.Kind(e) != '{' {
		return b, typeError(path, "an object")
	}
	t := member(e, "type")
	switch jsonx.Kind(t) {
	case 0:
		return b, missing(path + ".type")
	case '"':
	default:
		return b, typeError(path+".type", "a string")
	}
	typ, _ := jsonx.Unquote(t)
	if !allowed[where][typ] {
		if typ == "input_audio" {
			return b, unsupported(path, "audio input")
		}
		return b, &wire.RequestError{Code: wire.CodeInvalidValue, Param: path + ".type",
			Message: path + ".type: " + strconv.Quote(wire.Bound(typ)) + " is not a content part type allowed here."}
	}
	switch typ {
	case "input_text", "output_text":
		var w textPartWire
		if err := unmarshal(e, &w, path); err != nil {
			return b, err
		}
		d.rest(path, w.Rest)
		if w.Text == nil {
			return b, missing(path + ".text")
		}
		if jsonx.Kind(w.Annotations) != 0 && !jsonx.IsEmptyArray(w.Annotations) {
			d.dropped = append(d.dropped, path+".annotations")
		}
		if jsonx.Kind(w.Logprobs) != 0 && !jsonx.IsEmptyArray(w.Logprobs) {
			d.dropped = append(d.dropped, path+".logprobs")
		}
		return ir.Block{Type: ir.BlockText, Text: *w.Text}, nil
	case "refusal":
		var w refusalPartWire
		if err := unmarshal(e, &w, path); err != nil {
			return b, err
		}
		d.rest(path, w.Rest)
		if w.Refusal == nil {
			return b, missing(path + ".refusal")
		}
		return ir.Block{Type: ir.BlockText, Text: *w.Refusal}, nil
	case "input_image":
		var w imagePartWire
		if err := unmarshal(e, &w, path); err != nil {
			return b, err
		}
		d.rest(path, w.Rest)
		if w.Detail != "" && w.Detail != "auto" {
			d.dropped = append(d.dropped, path+".detail")
		}
		switch {
		case w.ImageURL != "":
			return media(ir.BlockImage, w.ImageURL, path+".image_url")
		case w.FileID != "":
			return b, unsupported(path+".file_id", "an image by file id (uploaded to OpenAI)")
		}
		return b, missing(path + ".image_url")
	default: // input_file
		var w filePartWire
		if err := unmarshal(e, &w, path); err != nil {
			return b, err
		}
		d.rest(path, w.Rest)
		if w.Filename != "" {
			d.dropped = append(d.dropped, path+".filename")
		}
		switch {
		case w.FileData != "":
			return media(ir.BlockDocument, w.FileData, path+".file_data")
		case w.FileURL != "":
			return media(ir.BlockDocument, w.FileURL, path+".file_url")
		case w.FileID != "":
			return b, unsupported(path+".file_id", "a file by id (uploaded to OpenAI)")
		}
		return b, missing(path + ".file_data")
	}
}

// media reads an image or a file given as a base64 data URL or an http(s)
// URL.
func media(t ir.BlockType, u, path string) (ir.Block, error) {
	if strings.HasPrefix(u, "data:") {
		mt, data, ok := wire.ParseDataURL(u)
		if !ok {
			return ir.Block{}, invalid(path, "must be a base64 data URL (data:<media type>;base64,...)")
		}
		return ir.Block{Type: t, MediaType: mt, Data: data}, nil
	}
	if strings.HasPrefix(u, "https://") || strings.HasPrefix(u, "http://") {
		return ir.Block{Type: t, URL: u}, nil
	}
	return ir.Block{}, invalid(path, "must be a data URL or an http(s) URL")
}

// arguments reads a function call's arguments, a JSON object in a
// string; the empty string is an empty object (some servers send it for
// functions without parameters).
func arguments(s, path string) (ir.Raw, error) {
	if strings.TrimSpace(s) == "" {
		return ir.Raw("{}"), nil
	}
	if jsonx.Kind([]byte(s)) != '{' || !jsonx.Valid([]byte(s)) {
		return nil, invalid(path, "must be a JSON object in a string")
	}
	return ir.Raw(s), nil
}

func (d *decoder) tools(r *ir.Request, tools []jsontext.Value) error {
	for i, v := range tools {
		path := "tools[" + strconv.Itoa(i) + "]"
		if jsonx.Kind(v) != '{' {
			return typeError(path, "an object")
		}
		t := member(v, "type")
		switch jsonx.Kind(t) {
		case 0:
			return missing(path + ".type")
		case '"':
		default:
			return typeError(path+".type", "a string")
		}
		if typ, _ := jsonx.Unquote(t); typ != "function" {
			return unsupported(path+".type", "the built-in tool "+strconv.Quote(wire.Bound(typ)))
		}
		var w toolWire
		if err := unmarshal(v, &w, path); err != nil {
			return err
		}
		d.rest(path, w.Rest)
		if w.Name == "" {
			return missing(path + ".name")
		}
		switch jsonx.Kind(w.Parameters) {
		case 0, '{':
		default:
			return typeError(path+".parameters", "an object")
		}
		if w.Strict != nil && *w.Strict {
			d.dropped = append(d.dropped, path+".strict")
		}
		r.Tools = append(r.Tools, ir.Tool{Name: w.Name, Description: w.Description, Schema: raw(w.Parameters)})
	}
	return nil
}

func (d *decoder) toolChoice(r *ir.Request, v jsontext.Value) error {
	switch jsonx.Kind(v) {
	case 0:
		return nil
	case '"':
		s, err := unquote(v, "tool_choice")
		if err != nil {
			return err
		}
		switch s {
		case "auto":
			r.ToolChoice = ir.ToolChoice{Mode: ir.ToolAuto, Set: true}
		case "none":
			r.ToolChoice = ir.ToolChoice{Mode: ir.ToolNone, Set: true}
		case "required":
			r.ToolChoice = ir.ToolChoice{Mode: ir.ToolAny, Set: true}
		default:
			return invalid("tool_choice", "must be auto, none, required or an object")
		}
		return nil
	case '{':
		var w toolChoiceWire
		if err := unmarshal(v, &w, "tool_choice"); err != nil {
			return err
		}
		switch w.Type {
		case "function":
			d.rest("tool_choice", w.Rest)
			if w.Name == "" {
				return missing("tool_choice.name")
			}
			r.ToolChoice = ir.ToolChoice{Mode: ir.ToolNamed, Name: w.Name, Set: true}
			return nil
		case "allowed_tools":
			return unsupported("tool_choice.type", "a list of allowed tools")
		case "":
			return missing("tool_choice.type")
		}
		return unsupported("tool_choice.type", "forcing the built-in tool "+strconv.Quote(wire.Bound(w.Type)))
	}
	return typeError("tool_choice", "a string or an object")
}

func (d *decoder) text(r *ir.Request, w *textWire) error {
	if w == nil {
		return nil
	}
	d.rest("text", w.Rest)
	d.nonNull("text.verbosity", w.Verbosity)
	f := w.Format
	if f == nil {
		return nil
	}
	d.rest("text.format", f.Rest)
	switch f.Type {
	case "text":
		return nil
	case "json_object":
		r.ResponseFormat = &ir.ResponseFormat{Type: "json_object"}
		return nil
	case "json_schema":
		if f.Name == "" {
			return missing("text.format.name")
		}
		if jsonx.Kind(f.Schema) != '{' {
			if jsonx.Kind(f.Schema) == 0 {
				return missing("text.format.schema")
			}
			return typeError("text.format.schema", "an object")
		}
		if jsonx.Kind(f.Description) == '"' && string(f.Description) != `""` {
			d.dropped = append(d.dropped, "text.format.description")
		}
		r.ResponseFormat = &ir.ResponseFormat{Type: "json_schema", Name: f.Name, Schema: ir.Raw(f.Schema), Strict: f.Strict != nil && *f.Strict}
		return nil
	case "":
		return missing("text.format.type")
	}
	return &wire.RequestError{Code: wire.CodeInvalidValue, Param: "text.format.type",
		Message: "text.format.type: must be text, json_object or json_schema."}
}

// rest lists the members of rest (an object of members the IR does not
// carry) under the path prefix; null members carry nothing.
func (d *decoder) rest(prefix string, rest jsontext.Value) {
	if len(rest) == 0 {
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
		if key == "" {
			key = `""` // a path must name it somehow
		}
		d.dropped = append(d.dropped, wire.JoinPath(prefix, wire.HeaderSafe(wire.Bound(key))))
		return nil
	})
}

// nonNull lists path as dropped when v is there and not null.
func (d *decoder) nonNull(path string, v jsontext.Value) {
	if jsonx.Kind(v) != 0 {
		d.dropped = append(d.dropped, path)
	}
}

// Helpers.

// raw keeps a raw value for the IR; null is absent.
func raw(v jsontext.Value) ir.Raw {
	if jsonx.Kind(v) == 0 {
		return nil
	}
	return ir.Raw(v)
}

func unquote(v []byte, path string) (string, error) {
	s, err := jsonx.Unquote(v)
	if err != nil {
		return "", typeError(path, "a string")
	}
	return s, nil
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
			if p == "" {
				return ErrDuplicateName
			}
			return &wire.RequestError{Code: wire.CodeDuplicateParameter, Param: p, Message: p + ": appears more than once in your request."}
		case p == "":
			return ErrMalformed
		}
		// The body passed the scanner, so what is left is invalid UTF-8.
		return &wire.RequestError{Code: wire.CodeInvalidJSON, Param: p, Message: p + ": is not valid JSON (invalid UTF-8)."}
	case errors.As(err, &se):
		p := wire.JoinPath(prefix, pointerPath(se.JSONPointer))
		if errors.Is(se.Err, strconv.ErrRange) && p != "" {
			return invalid(p, "the number is out of range")
		}
		if p == "" {
			return ErrMalformed
		}
		want := "a valid value"
		if se.GoType != nil {
			want = goKind(se.GoType.Kind().String())
		}
		return typeError(p, want)
	}
	return ErrMalformed
}

func goKind(k string) string {
	switch k {
	case "string":
		return "a string"
	case "int64", "int":
		return "an integer"
	case "float64":
		return "a number"
	case "bool":
		return "a boolean"
	case "slice":
		return "an array"
	case "struct", "map", "ptr":
		return "an object"
	}
	return "a valid value"
}

// pointerPath turns a JSON pointer (/input/2/content) into the path
// clients read (input[2].content).
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
		s.WriteString(wire.HeaderSafe(wire.Bound(tok)))
	}
	return s.String()
}

func typeError(param, want string) *wire.RequestError {
	return &wire.RequestError{Code: wire.CodeInvalidType, Param: param, Message: param + ": must be " + want + "."}
}

func missing(param string) *wire.RequestError {
	return &wire.RequestError{Code: wire.CodeMissingParameter, Param: param, Message: param + ": is required."}
}

func invalid(param, what string) *wire.RequestError {
	return &wire.RequestError{Code: wire.CodeInvalidValue, Param: param, Message: param + ": " + what + "."}
}

// unsupported is the error for a member no translated upstream can be
// given.
func unsupported(param, what string) *wire.RequestError {
	return &wire.RequestError{Code: wire.CodeUnsupported, Param: param, Message: param + ": " + what + " cannot be translated for this model's provider."}
}
