package openaichat

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/moat-ai/moat/services/gateway/internal/ir"
	"github.com/moat-ai/moat/services/gateway/internal/wire"
	"github.com/moat-ai/moat/services/gateway/internal/wire/jsonx"
)

// The wire types of the translated path. Members the IR cannot carry land
// in Unknown (an embedded fallback): DecodeRequest reports them as dropped
// rather than losing them silently.

type chatRequest struct {
	Model               string                    `json:"model"`
	Messages            []chatMessage             `json:"messages"`
	MaxTokens           *int64                    `json:"max_tokens"`
	MaxCompletionTokens *int64                    `json:"max_completion_tokens"`
	Temperature         *float64                  `json:"temperature"`
	TopP                *float64                  `json:"top_p"`
	Stop                jsontext.Value            `json:"stop"`
	Stream              *bool                     `json:"stream"`
	StreamOptions       jsontext.Value            `json:"stream_options"`
	Tools               []chatTool                `json:"tools"`
	ToolChoice          jsontext.Value            `json:"tool_choice"`
	ParallelToolCalls   *bool                     `json:"parallel_tool_calls"`
	N                   *int64                    `json:"n"`
	Logprobs            *bool                     `json:"logprobs"`
	TopLogprobs         *int64                    `json:"top_logprobs"`
	ResponseFormat      *responseFormat           `json:"response_format"`
	ReasoningEffort     *string                   `json:"reasoning_effort"`
	User                *string                   `json:"user"`
	Modalities          []string                  `json:"modalities"`
	Unknown             map[string]jsontext.Value `json:",embed"`
}

type chatMessage struct {
	Role             string         `json:"role"`
	Content          jsontext.Value `json:"content"`
	Name             string         `json:"name,omitzero"`
	ToolCalls        []toolCall     `json:"tool_calls,omitzero"`
	ToolCallID       string         `json:"tool_call_id,omitzero"`
	Refusal          *string        `json:"refusal,omitzero"`
	ReasoningContent *string        `json:"reasoning_content,omitzero"`
}

type toolCall struct {
	Index    *int64       `json:"index,omitzero"`
	ID       string       `json:"id,omitzero"`
	Type     string       `json:"type,omitzero"`
	Function functionCall `json:"function"`
}

type functionCall struct {
	Name      string `json:"name,omitzero"`
	Arguments string `json:"arguments"`
}

type chatTool struct {
	Type     string       `json:"type"`
	Function functionDecl `json:"function"`
}

type functionDecl struct {
	Name        string         `json:"name"`
	Description string         `json:"description,omitzero"`
	Parameters  jsontext.Value `json:"parameters,omitzero"`
	Strict      *bool          `json:"strict,omitzero"`
}

type responseFormat struct {
	Type       string `json:"type"`
	JSONSchema *struct {
		Name   string         `json:"name"`
		Schema jsontext.Value `json:"schema"`
		Strict *bool          `json:"strict"`
	} `json:"json_schema"`
}

type contentPart struct {
	Type     string `json:"type"`
	Text     string `json:"text"`
	ImageURL *struct {
		URL string `json:"url"`
	} `json:"image_url"`
	File *struct {
		FileData string `json:"file_data"`
		FileID   string `json:"file_id"`
		Filename string `json:"filename"`
	} `json:"file"`
}

func invalid(param, format string, args ...any) *wire.RequestError {
	return &wire.RequestError{Code: wire.CodeInvalidValue, Param: param, Message: param + ": " + fmt.Sprintf(format, args...)}
}

// unsupported is the error for a member the IR (so no translated upstream)
// can carry.
func unsupported(param, what string) *wire.RequestError {
	return &wire.RequestError{Code: wire.CodeUnsupported, Param: param, Message: param + ": " + what + " cannot be translated for this model's provider."}
}

// DecodeRequest reads a chat-completions body (validated by ParseRequest)
// into the IR for a translated upstream. It returns the top-level members
// it dropped because the IR cannot carry them (sampling knobs such as
// presence_penalty or seed, and members it does not know); the gateway
// reports them to the client. Content it cannot translate (audio, files
// by id) is an error naming the member, never silently lost. Errors are
// *wire.RequestError.
func DecodeRequest(body []byte) (*ir.Request, []string, error) {
	var cr chatRequest
	if err := json.Unmarshal(body, &cr); err != nil {
		return nil, nil, decodeError(err)
	}
	r := &ir.Request{Model: cr.Model, Temperature: cr.Temperature, TopP: cr.TopP}
	if cr.Stream != nil {
		r.Stream = *cr.Stream
	}
	switch {
	case cr.MaxCompletionTokens != nil:
		r.MaxTokens = *cr.MaxCompletionTokens
	case cr.MaxTokens != nil:
		r.MaxTokens = *cr.MaxTokens
	}
	if r.MaxTokens < 0 {
		return nil, nil, invalid("max_tokens", "must be positive")
	}
	if cr.N != nil {
		r.N = *cr.N
	}
	if cr.Logprobs != nil {
		r.Logprobs = *cr.Logprobs
	}
	if cr.TopLogprobs != nil {
		r.TopLogprobs = *cr.TopLogprobs
	}
	if cr.ReasoningEffort != nil {
		r.ReasoningEffort = *cr.ReasoningEffort
	}
	if cr.User != nil {
		r.User = *cr.User
	}
	if slices.Contains(cr.Modalities, "audio") {
		return nil, nil, unsupported("modalities", "audio output")
	}
	if rf := cr.ResponseFormat; rf != nil && rf.Type != "text" {
		r.ResponseFormat = &ir.ResponseFormat{Type: rf.Type}
		if rf.JSONSchema != nil {
			r.ResponseFormat.Name, r.ResponseFormat.Schema = rf.JSONSchema.Name, ir.Raw(rf.JSONSchema.Schema)
			r.ResponseFormat.Strict = rf.JSONSchema.Strict != nil && *rf.JSONSchema.Strict
		}
	}
	stop, err := stopSequences(cr.Stop)
	if err != nil {
		return nil, nil, err
	}
	r.Stop = stop
	for i, t := range cr.Tools {
		if t.Type != "function" {
			return nil, nil, unsupported("tools["+strconv.Itoa(i)+"].type", "a tool of type "+strconv.Quote(wire.Bound(t.Type)))
		}
		r.Tools = append(r.Tools, ir.Tool{Name: t.Function.Name, Description: t.Function.Description, Schema: ir.Raw(t.Function.Parameters)})
	}
	if r.ToolChoice, err = toolChoice(cr.ToolChoice); err != nil {
		return nil, nil, err
	}
	if cr.ParallelToolCalls != nil && !*cr.ParallelToolCalls {
		r.ToolChoice.DisableParallel = true
	}
	for i := range cr.Messages {
		if err := decodeMessage(r, &cr.Messages[i], "messages["+strconv.Itoa(i)+"]"); err != nil {
			return nil, nil, err
		}
	}
	return r, droppedNames(cr.Unknown), nil
}

// ignorable are the members the IR does not carry whose loss changes no
// answer's shape, only its sampling or the provider's bookkeeping.
func droppedNames(unknown map[string]jsontext.Value) []string {
	if len(unknown) == 0 {
		return nil
	}
	names := make([]string, 0, len(unknown))
	for k := range unknown {
		names = append(names, wire.Bound(k))
	}
	slices.Sort(names)
	return names
}

// decodeError turns a decoding error into a request error naming the
// member at fault where the decoder knows it.
func decodeError(err error) *wire.RequestError {
	var se *json.SemanticError
	if errors.As(err, &se) && se.JSONPointer != "" {
		param := pointerToPath(string(se.JSONPointer))
		return &wire.RequestError{Code: wire.CodeInvalidType, Param: param, Message: param + ": has the wrong type."}
	}
	var syn *jsontext.SyntacticError
	if errors.As(err, &syn) && strings.Contains(syn.Error(), "duplicate") {
		return ErrDuplicateName
	}
	return ErrMalformed
}

// pointerToPath renders a JSON pointer (/messages/0/content) as a member
// path (messages[0].content).
func pointerToPath(p string) string {
	var b strings.Builder
	for _, seg := range strings.Split(strings.TrimPrefix(p, "/"), "/") {
		if _, err := strconv.Atoi(seg); err == nil && b.Len() > 0 {
			b.WriteString("[" + seg + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(wire.Bound(strings.NewReplacer("~1", "/", "~0", "~").Replace(seg)))
	}
	return b.String()
}

func stopSequences(v jsontext.Value) ([]string, error) {
	if len(v) == 0 || jsonx.IsNull(v) {
		return nil, nil
	}
	if v[0] == '"' {
		s, err := jsonx.Unquote(v)
		if err != nil {
			return nil, ErrMalformed
		}
		return []string{s}, nil
	}
	var ss []string
	if err := json.Unmarshal(v, &ss); err != nil {
		return nil, &wire.RequestError{Code: wire.CodeInvalidType, Param: "stop", Message: "stop: must be a string or an array of strings."}
	}
	return ss, nil
}

func toolChoice(v jsontext.Value) (ir.ToolChoice, error) {
	if len(v) == 0 || jsonx.IsNull(v) {
		return ir.ToolChoice{}, nil
	}
	if v[0] == '"' {
		s, _ := jsonx.Unquote(v)
		switch s {
		case "auto":
			return ir.ToolChoice{Mode: ir.ToolAuto, Set: true}, nil
		case "none":
			return ir.ToolChoice{Mode: ir.ToolNone, Set: true}, nil
		case "required":
			return ir.ToolChoice{Mode: ir.ToolAny, Set: true}, nil
		}
		return ir.ToolChoice{}, invalid("tool_choice", "must be auto, none, required or a function")
	}
	var tc struct {
		Type     string `json:"type"`
		Function struct {
			Name string `json:"name"`
		} `json:"function"`
	}
	if err := json.Unmarshal(v, &tc); err != nil || tc.Type != "function" || tc.Function.Name == "" {
		return ir.ToolChoice{}, invalid("tool_choice", "must be auto, none, required or {\"type\":\"function\",\"function\":{\"name\":...}}")
	}
	return ir.ToolChoice{Mode: ir.ToolNamed, Name: tc.Function.Name, Set: true}, nil
}

// decodeMessage appends message m to r: system and developer text to
// r.System, tool results as user turns, the rest as turns of their role.
func decodeMessage(r *ir.Request, m *chatMessage, at string) error {
	switch m.Role {
	case "system", "developer":
		blocks, err := decodeContent(m.Content, at+".content", false)
		if err != nil {
			return err
		}
		r.System = append(r.System, blocks...)
	case "user":
		blocks, err := decodeContent(m.Content, at+".content", true)
		if err != nil {
			return err
		}
		r.Messages = append(r.Messages, ir.Message{Role: ir.RoleUser, Content: blocks})
	case "assistant":
		var blocks []ir.Block
		if m.ReasoningContent != nil && *m.ReasoningContent != "" {
			blocks = append(blocks, ir.Block{Type: ir.BlockThinking, Text: *m.ReasoningContent})
		}
		text, err := decodeContent(m.Content, at+".content", false)
		if err != nil {
			return err
		}
		blocks = append(blocks, text...)
		if m.Refusal != nil && *m.Refusal != "" {
			blocks = append(blocks, ir.Block{Type: ir.BlockText, Text: *m.Refusal})
		}
		for j, tc := range m.ToolCalls {
			input, err := arguments(tc.Function.Arguments, at+".tool_calls["+strconv.Itoa(j)+"].function.arguments")
			if err != nil {
				return err
			}
			blocks = append(blocks, ir.Block{Type: ir.BlockToolUse, ID: tc.ID, Name: tc.Function.Name, Input: input})
		}
		r.Messages = append(r.Messages, ir.Message{Role: ir.RoleAssistant, Content: blocks})
	case "tool":
		if m.ToolCallID == "" {
			return invalid(at+".tool_call_id", "is required for a tool message")
		}
		content, err := decodeContent(m.Content, at+".content", false)
		if err != nil {
			return err
		}
		r.Messages = append(r.Messages, ir.Message{Role: ir.RoleUser, Content: []ir.Block{{Type: ir.BlockToolResult, ToolUseID: m.ToolCallID, Content: content}}})
	case "function":
		return unsupported(at+".role", "the deprecated function role")
	default:
		return invalid(at+".role", "must be system, developer, user, assistant or tool")
	}
	return nil
}

// arguments reads a tool call's arguments, a JSON object in a string; the
// empty string is an empty object (some servers send it for tools
// without parameters).
func arguments(s, at string) (ir.Raw, error) {
	if strings.TrimSpace(s) == "" {
		return ir.Raw("{}"), nil
	}
	b := []byte(s)
	if _, err := jsonx.Object(b, func(jsonx.Member) error { return nil }); err != nil {
		return nil, invalid(at, "must be a JSON object in a string")
	}
	return ir.Raw(b), nil
}

// decodeContent reads a message's content: a string, or an array of
// parts (text everywhere; images and files only where media is true).
func decodeContent(v jsontext.Value, at string, media bool) ([]ir.Block, error) {
	if len(v) == 0 || jsonx.IsNull(v) {
		return nil, nil
	}
	if v[0] == '"' {
		s, err := jsonx.Unquote(v)
		if err != nil {
			return nil, ErrMalformed
		}
		if s == "" {
			return nil, nil
		}
		return []ir.Block{{Type: ir.BlockText, Text: s}}, nil
	}
	var parts []contentPart
	if err := json.Unmarshal(v, &parts); err != nil {
		return nil, &wire.RequestError{Code: wire.CodeInvalidType, Param: at, Message: at + ": must be a string or an array of content parts."}
	}
	blocks := make([]ir.Block, 0, len(parts))
	for i, p := range parts {
		pat := at + "[" + strconv.Itoa(i) + "]"
		switch {
		case p.Type == "text":
			blocks = append(blocks, ir.Block{Type: ir.BlockText, Text: p.Text})
		case p.Type == "image_url" && media:
			if p.ImageURL == nil || p.ImageURL.URL == "" {
				return nil, invalid(pat+".image_url.url", "is required")
			}
			b, err := mediaBlock(ir.BlockImage, p.ImageURL.URL, pat+".image_url.url")
			if err != nil {
				return nil, err
			}
			blocks = append(blocks, b)
		case p.Type == "file" && media:
			if p.File == nil || p.File.FileData == "" {
				return nil, unsupported(pat+".file.file_id", "a file by id (only file_data)")
			}
			b, err := mediaBlock(ir.BlockDocument, p.File.FileData, pat+".file.file_data")
			if err != nil {
				return nil, err
			}
			blocks = append(blocks, b)
		case p.Type == "input_audio":
			return nil, unsupported(pat, "audio input")
		case p.Type == "refusal":
			blocks = append(blocks, ir.Block{Type: ir.BlockText, Text: p.Text})
		default:
			return nil, &wire.RequestError{Code: wire.CodeInvalidValue, Param: pat + ".type",
				Message: pat + ".type: " + strconv.Quote(wire.Bound(p.Type)) + " is not a content part type allowed here."}
		}
	}
	return blocks, nil
}

// mediaBlock reads an image or file given as a data URL (base64) or, for
// images, an http(s) URL.
func mediaBlock(t ir.BlockType, u, at string) (ir.Block, error) {
	if strings.HasPrefix(u, "data:") {
		mt, data, ok := wire.ParseDataURL(u)
		if !ok {
			return ir.Block{}, invalid(at, "must be a base64 data URL (data:<media type>;base64,...)")
		}
		return ir.Block{Type: t, MediaType: mt, Data: data}, nil
	}
	if t == ir.BlockImage && (strings.HasPrefix(u, "https://") || strings.HasPrefix(u, "http://")) {
		return ir.Block{Type: t, URL: u}, nil
	}
	return ir.Block{}, invalid(at, "must be a data URL or an http(s) URL")
}

// EncodeRequest appends the IR as a chat-completions request for model,
// asking for the usage of a stream.
func EncodeRequest(dst []byte, r *ir.Request, model string) ([]byte, error) {
	cr := chatRequest{Model: model, Temperature: r.Temperature, TopP: r.TopP, Messages: make([]chatMessage, 0, len(r.Messages)+1)}
	if rf := r.ResponseFormat; rf != nil {
		cr.ResponseFormat = &responseFormat{Type: rf.Type}
		if rf.Type == "json_schema" {
			strict := rf.Strict
			cr.ResponseFormat.JSONSchema = &struct {
				Name   string         `json:"name"`
				Schema jsontext.Value `json:"schema"`
				Strict *bool          `json:"strict"`
			}{Name: rf.Name, Schema: jsontext.Value(rf.Schema), Strict: &strict}
			if cr.ResponseFormat.JSONSchema.Name == "" {
				cr.ResponseFormat.JSONSchema.Name = "response"
			}
		}
	}
	if r.N > 1 {
		cr.N = &r.N
	}
	if r.Logprobs {
		cr.Logprobs = &r.Logprobs
	}
	if r.TopLogprobs > 0 {
		cr.TopLogprobs = &r.TopLogprobs
	}
	if r.MaxTokens > 0 {
		cr.MaxTokens = &r.MaxTokens
	}
	if r.Stream {
		t := true
		cr.Stream = &t
		cr.StreamOptions = jsontext.Value(`{"include_usage":true}`)
	}
	if r.TopK != nil {
		return nil, &ir.UnsupportedError{Param: "top_k", Reason: "the provider has no top_k"}
	}
	if len(r.Stop) > 0 {
		b, _ := json.Marshal(r.Stop) // a []string always marshals
		cr.Stop = b
	}
	if r.ReasoningEffort != "" {
		cr.ReasoningEffort = &r.ReasoningEffort
	} else if r.ThinkingBudget > 0 {
		e := effortOf(r.ThinkingBudget)
		cr.ReasoningEffort = &e
	}
	if r.User != "" {
		cr.User = &r.User
	}
	for _, t := range r.Tools {
		params := jsontext.Value(t.Schema)
		if len(params) == 0 {
			params = jsontext.Value(`{"type":"object","properties":{}}`)
		}
		cr.Tools = append(cr.Tools, chatTool{Type: "function", Function: functionDecl{Name: t.Name, Description: t.Description, Parameters: params}})
	}
	if r.ToolChoice.Set {
		switch r.ToolChoice.Mode {
		case ir.ToolAuto:
			cr.ToolChoice = jsontext.Value(`"auto"`)
		case ir.ToolNone:
			cr.ToolChoice = jsontext.Value(`"none"`)
		case ir.ToolAny:
			cr.ToolChoice = jsontext.Value(`"required"`)
		case ir.ToolNamed:
			b, _ := json.Marshal(map[string]any{"type": "function", "function": map[string]string{"name": r.ToolChoice.Name}}, json.Deterministic(true)) // plain maps always marshal
			cr.ToolChoice = b
		}
	}
	if r.ToolChoice.DisableParallel && len(r.Tools) > 0 {
		f := false
		cr.ParallelToolCalls = &f
	}
	if len(r.System) > 0 {
		text, err := textOnly(r.System, "system")
		if err != nil {
			return nil, err
		}
		c, _ := json.Marshal(text) // a string always marshals
		cr.Messages = append(cr.Messages, chatMessage{Role: "system", Content: c})
	}
	for i, m := range r.Messages {
		msgs, err := encodeMessage(m, "messages["+strconv.Itoa(i)+"]")
		if err != nil {
			return nil, err
		}
		cr.Messages = append(cr.Messages, msgs...)
	}
	b, err := json.Marshal(&cr, json.OmitZeroStructFields(true))
	if err != nil {
		return nil, fmt.Errorf("encode chat request: %w", err)
	}
	return append(dst, b...), nil
}

// effortOf maps a thinking budget to a reasoning effort.
func effortOf(budget int64) string {
	switch {
	case budget <= 2048:
		return "low"
	case budget <= 8192:
		return "medium"
	default:
		return "high"
	}
}

func textOnly(blocks []ir.Block, at string) (string, error) {
	var b strings.Builder
	for i, bl := range blocks {
		if bl.Type != ir.BlockText {
			return "", &ir.UnsupportedError{Param: at + "[" + strconv.Itoa(i) + "]", Reason: "only text is allowed here"}
		}
		if i > 0 {
			b.WriteString("\n\n")
		}
		b.WriteString(bl.Text)
	}
	return b.String(), nil
}

// encodeMessage returns the chat messages of one IR turn: a user turn's
// tool results become tool messages (first, as OpenAI requires them right
// after the assistant's calls), its other blocks one user message.
func encodeMessage(m ir.Message, at string) ([]chatMessage, error) {
	var out []chatMessage
	if m.Role == ir.RoleAssistant {
		cm := chatMessage{Role: "assistant"}
		var text strings.Builder
		var reasoning string
		for i, b := range m.Content {
			switch b.Type {
			case ir.BlockText:
				text.WriteString(b.Text)
			case ir.BlockThinking:
				reasoning += b.Text
			case ir.BlockRedactedThinking:
				// Opaque to any other provider: it cannot be replayed.
			case ir.BlockToolUse:
				input := b.Input
				if len(input) == 0 {
					input = ir.Raw("{}")
				}
				cm.ToolCalls = append(cm.ToolCalls, toolCall{ID: b.ID, Type: "function", Function: functionCall{Name: b.Name, Arguments: string(input)}})
			default:
				return nil, &ir.UnsupportedError{Param: at + ".content[" + strconv.Itoa(i) + "]", Reason: "this block cannot be sent in an assistant turn"}
			}
		}
		if text.Len() > 0 || len(cm.ToolCalls) == 0 {
			c, _ := json.Marshal(text.String()) // a string always marshals
			cm.Content = c
		}
		if reasoning != "" {
			cm.ReasoningContent = &reasoning
		}
		return append(out, cm), nil
	}
	var parts []map[string]any
	for i, b := range m.Content {
		bat := at + ".content[" + strconv.Itoa(i) + "]"
		switch b.Type {
		case ir.BlockToolResult:
			text, err := toolResultText(b, bat)
			if err != nil {
				return nil, err
			}
			c, _ := json.Marshal(text) // a string always marshals
			out = append(out, chatMessage{Role: "tool", ToolCallID: b.ToolUseID, Content: c})
		case ir.BlockText:
			parts = append(parts, map[string]any{"type": "text", "text": b.Text})
		case ir.BlockImage:
			u := b.URL
			if u == "" {
				u = "data:" + b.MediaType + ";base64," + b.Data
			}
			parts = append(parts, map[string]any{"type": "image_url", "image_url": map[string]string{"url": u}})
		case ir.BlockDocument:
			if b.Data == "" {
				return nil, &ir.UnsupportedError{Param: bat + ".source", Reason: "a document must be base64 data for this provider"}
			}
			parts = append(parts, map[string]any{"type": "file", "file": map[string]string{"file_data": "data:" + b.MediaType + ";base64," + b.Data}})
		default:
			return nil, &ir.UnsupportedError{Param: bat, Reason: "this block cannot be sent in a user turn"}
		}
	}
	if len(parts) > 0 {
		var c []byte
		if len(parts) == 1 && parts[0]["type"] == "text" {
			c, _ = json.Marshal(parts[0]["text"]) // a string always marshals
		} else {
			var err error
			if c, err = json.Marshal(parts, json.Deterministic(true)); err != nil {
				return nil, fmt.Errorf("encode content: %w", err)
			}
		}
		out = append(out, chatMessage{Role: "user", Content: c})
	}
	return out, nil
}

func toolResultText(b ir.Block, at string) (string, error) {
	var s strings.Builder
	if b.IsError {
		s.WriteString("Error: ")
	}
	for i, c := range b.Content {
		if c.Type != ir.BlockText {
			return "", &ir.UnsupportedError{Param: at + ".content[" + strconv.Itoa(i) + "]", Reason: "a tool result may hold only text for this provider"}
		}
		s.WriteString(c.Text)
	}
	return s.String(), nil
}

// chatResponse is a chat completion.
type chatResponse struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"`
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []chatChoice `json:"choices"`
	Usage   *chatUsage   `json:"usage,omitzero"`
}

type chatChoice struct {
	Index        int64          `json:"index"`
	Message      *chatMessage   `json:"message,omitzero"`
	Delta        *chatMessage   `json:"delta,omitzero"`
	FinishReason *string        `json:"finish_reason"`
	Logprobs     jsontext.Value `json:"logprobs,omitzero"`
}

type chatUsage struct {
	PromptTokens        int64 `json:"prompt_tokens"`
	CompletionTokens    int64 `json:"completion_tokens"`
	TotalTokens         int64 `json:"total_tokens"`
	PromptTokensDetails *struct {
		CachedTokens int64 `json:"cached_tokens"`
	} `json:"prompt_tokens_details,omitzero"`
	CompletionTokensDetails *struct {
		ReasoningTokens int64 `json:"reasoning_tokens"`
	} `json:"completion_tokens_details,omitzero"`
}

// DecodeResponse reads a chat completion (its first choice) into the IR.
func DecodeResponse(body []byte) (*ir.Response, error) {
	var cr chatResponse
	if err := json.Unmarshal(body, &cr); err != nil {
		return nil, fmt.Errorf("%w: decode chat completion: %w", ir.ErrProtocol, err)
	}
	r := &ir.Response{ID: cr.ID, Model: cr.Model}
	r.Usage, _ = ReadUsage(body)
	if len(cr.Choices) == 0 || cr.Choices[0].Message == nil {
		return nil, fmt.Errorf("%w: chat completion without a choice", ir.ErrProtocol)
	}
	m := cr.Choices[0].Message
	if m.ReasoningContent != nil && *m.ReasoningContent != "" {
		r.Content = append(r.Content, ir.Block{Type: ir.BlockThinking, Text: *m.ReasoningContent})
	}
	if len(m.Content) > 0 && m.Content[0] == '"' {
		if s, _ := jsonx.Unquote(m.Content); s != "" {
			r.Content = append(r.Content, ir.Block{Type: ir.BlockText, Text: s})
		}
	}
	if m.Refusal != nil && *m.Refusal != "" {
		r.Content = append(r.Content, ir.Block{Type: ir.BlockText, Text: *m.Refusal})
		r.StopReason = ir.StopRefusal
	}
	for _, tc := range m.ToolCalls {
		input, err := arguments(tc.Function.Arguments, "arguments")
		if err != nil {
			// The model wrote arguments that are not an object; keep
			// them, as a string, rather than fail the whole answer.
			input, _ = json.Marshal(map[string]string{"arguments": tc.Function.Arguments}, json.Deterministic(true)) // a plain map always marshals
		}
		r.Content = append(r.Content, ir.Block{Type: ir.BlockToolUse, ID: tc.ID, Name: tc.Function.Name, Input: input})
	}
	if r.StopReason == ir.StopUnknown {
		r.StopReason = stopReasonOf(cr.Choices[0].FinishReason)
	}
	return r, nil
}

func stopReasonOf(fr *string) ir.StopReason {
	if fr == nil {
		return ir.StopEnd
	}
	switch *fr {
	case "length":
		return ir.StopMaxTokens
	case "tool_calls", "function_call":
		return ir.StopToolUse
	case "content_filter":
		return ir.StopRefusal
	default:
		return ir.StopEnd
	}
}

// FinishReason is OpenAI's finish_reason for a stop reason.
func FinishReason(s ir.StopReason) string {
	switch s {
	case ir.StopMaxTokens:
		return "length"
	case ir.StopToolUse:
		return "tool_calls"
	case ir.StopRefusal:
		return "content_filter"
	default:
		return "stop"
	}
}

// EncodeResponse appends an IR answer as a chat completion for model. Text
// blocks join into the message's content, tool uses become tool_calls,
// reasoning goes to reasoning_content (the member compatible servers use;
// OpenAI's own SDKs ignore it), and the usage is OpenAI's: prompt tokens
// include the cached ones.
func EncodeResponse(dst []byte, r *ir.Response, model string, created int64) []byte {
	msg := chatMessage{Role: "assistant"}
	var text, reasoning strings.Builder
	for _, b := range r.Content {
		switch b.Type {
		case ir.BlockText:
			text.WriteString(b.Text)
		case ir.BlockThinking:
			reasoning.WriteString(b.Text)
		case ir.BlockToolUse:
			input := b.Input
			if len(input) == 0 {
				input = ir.Raw("{}")
			}
			msg.ToolCalls = append(msg.ToolCalls, toolCall{ID: b.ID, Type: "function", Function: functionCall{Name: b.Name, Arguments: string(input)}})
		}
	}
	if text.Len() > 0 || len(msg.ToolCalls) == 0 {
		msg.Content, _ = json.Marshal(text.String()) // a string always marshals
	} else {
		msg.Content = jsontext.Value("null")
	}
	if reasoning.Len() > 0 {
		s := reasoning.String()
		msg.ReasoningContent = &s
	}
	fr := FinishReason(r.StopReason)
	cr := chatResponse{ID: completionID(r.ID), Object: "chat.completion", Created: created, Model: model,
		Choices: []chatChoice{{Message: &msg, FinishReason: &fr}}, Usage: usageOf(r.Usage)}
	b, err := json.Marshal(&cr)
	if err != nil {
		panic(err) // a chatResponse of strings and numbers always marshals
	}
	return append(dst, b...)
}

func completionID(id string) string {
	if strings.HasPrefix(id, "chatcmpl-") {
		return id
	}
	return "chatcmpl-" + id
}

func usageOf(u ir.Usage) *chatUsage {
	cu := &chatUsage{PromptTokens: u.TotalInput(), CompletionTokens: u.Output, TotalTokens: u.TotalInput() + u.Output}
	cu.PromptTokensDetails = &struct {
		CachedTokens int64 `json:"cached_tokens"`
	}{u.CacheRead}
	cu.CompletionTokensDetails = &struct {
		ReasoningTokens int64 `json:"reasoning_tokens"`
	}{u.Reasoning}
	return cu
}

// appendUsage appends the usage object of u.
func appendUsage(dst []byte, u ir.Usage) []byte {
	dst = append(dst, `{"prompt_tokens":`...)
	dst = strconv.AppendInt(dst, u.TotalInput(), 10)
	dst = append(dst, `,"completion_tokens":`...)
	dst = strconv.AppendInt(dst, u.Output, 10)
	dst = append(dst, `,"total_tokens":`...)
	dst = strconv.AppendInt(dst, u.TotalInput()+u.Output, 10)
	dst = append(dst, `,"prompt_tokens_details":{"cached_tokens":`...)
	dst = strconv.AppendInt(dst, u.CacheRead, 10)
	dst = append(dst, `},"completion_tokens_details":{"reasoning_tokens":`...)
	dst = strconv.AppendInt(dst, u.Reasoning, 10)
	return append(dst, "}}"...)
}
