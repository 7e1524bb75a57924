package converse

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/moat-ai/moat/services/gateway/internal/ir"
	"github.com/moat-ai/moat/services/gateway/internal/wire"
	"github.com/moat-ai/moat/services/gateway/internal/wire/jsonx"
)

// DefaultMaxTokens is the maxTokens EncodeRequest adds to a thinking
// budget when the request's own bound leaves no room for an answer after
// the reasoning (Claude refuses a maxTokens not above budget_tokens); it
// matches the Anthropic codec's.
const DefaultMaxTokens = 8192

// effortBudgets are the thinking budgets asked for at each OpenAI-style
// reasoning effort, as the Anthropic codec asks them of Claude; 1024 is
// Claude's floor.
var effortBudgets = map[string]int64{
	"low":    1024,
	"medium": 4096,
	"high":   16384,
	"xhigh":  32768,
}

// noOutput stands in for a tool result with no content: Converse
// requires a tool result's content and refuses empty text blocks, and a
// conversation holding such a result would fail on every later turn.
const noOutput = "(no output)"

// The wire types of a Converse request. Unions (a content block, a tool
// choice) are structs of optional members of which exactly one is set.
type (
	requestWire struct {
		Messages                     []messageWire     `json:"messages"`
		System                       []systemWire      `json:"system,omitzero"`
		InferenceConfig              *inferenceConfig  `json:"inferenceConfig,omitzero"`
		ToolConfig                   *toolConfig       `json:"toolConfig,omitzero"`
		AdditionalModelRequestFields *additionalFields `json:"additionalModelRequestFields,omitzero"`
	}
	messageWire struct {
		Role    string      `json:"role"`
		Content []blockWire `json:"content"`
	}
	systemWire struct {
		Text       *string     `json:"text,omitzero"`
		CachePoint *cachePoint `json:"cachePoint,omitzero"`
	}
	// blockWire is a content block, of a request or of an answer.
	blockWire struct {
		Text             *string         `json:"text,omitzero"`
		Image            *mediaWire      `json:"image,omitzero"`
		Document         *mediaWire      `json:"document,omitzero"`
		ToolUse          *toolUseWire    `json:"toolUse,omitzero"`
		ToolResult       *toolResultWire `json:"toolResult,omitzero"`
		ReasoningContent *reasoningWire  `json:"reasoningContent,omitzero"`
		CachePoint       *cachePoint     `json:"cachePoint,omitzero"`
		// Unknown holds the members of block types the IR cannot carry
		// (citationsContent, guardContent, video): an answer holding one
		// is refused rather than shown in part.
		Unknown jsontext.Value `json:",embed"`
	}
	// mediaWire is an image or a document; only documents have a name.
	mediaWire struct {
		Format string     `json:"format"`
		Name   string     `json:"name,omitzero"`
		Source sourceWire `json:"source"`
	}
	sourceWire struct {
		Bytes string `json:"bytes"` // base64
	}
	toolUseWire struct {
		ToolUseID string         `json:"toolUseId"`
		Name      string         `json:"name"`
		Input     jsontext.Value `json:"input"`
	}
	toolResultWire struct {
		ToolUseID string              `json:"toolUseId"`
		Content   []resultContentWire `json:"content"`
		Status    string              `json:"status,omitzero"`
	}
	resultContentWire struct {
		Text     *string    `json:"text,omitzero"`
		Image    *mediaWire `json:"image,omitzero"`
		Document *mediaWire `json:"document,omitzero"`
	}
	reasoningWire struct {
		ReasoningText   *reasoningText `json:"reasoningText,omitzero"`
		RedactedContent string         `json:"redactedContent,omitzero"` // base64
	}
	reasoningText struct {
		Text      string `json:"text"`
		Signature string `json:"signature,omitzero"`
	}
	cachePoint struct {
		Type string `json:"type"`
	}
	inferenceConfig struct {
		MaxTokens     int64    `json:"maxTokens,omitzero"`
		Temperature   *float64 `json:"temperature,omitzero"`
		TopP          *float64 `json:"topP,omitzero"`
		StopSequences []string `json:"stopSequences,omitzero"`
	}
	toolConfig struct {
		Tools      []toolWire      `json:"tools"`
		ToolChoice *toolChoiceWire `json:"toolChoice,omitzero"`
	}
	toolWire struct {
		ToolSpec   *toolSpec   `json:"toolSpec,omitzero"`
		CachePoint *cachePoint `json:"cachePoint,omitzero"`
	}
	toolSpec struct {
		Name        string `json:"name"`
		Description string `json:"description,omitzero"`
		InputSchema struct {
			JSON jsontext.Value `json:"json"`
		} `json:"inputSchema"`
	}
	toolChoiceWire struct {
		Auto *struct{} `json:"auto,omitzero"`
		Any  *struct{} `json:"any,omitzero"`
		Tool *struct {
			Name string `json:"name"`
		} `json:"tool,omitzero"`
	}
	additionalFields struct {
		Thinking *thinkingWire `json:"thinking,omitzero"`
		TopK     *int64        `json:"top_k,omitzero"`
	}
	thinkingWire struct {
		Type         string `json:"type"`
		BudgetTokens int64  `json:"budget_tokens"`
	}
)

// defaultCachePoint is Bedrock's form of a prompt-cache breakpoint.
var defaultCachePoint = &cachePoint{Type: "default"}

// EncodeRequest appends the IR as a Converse request body to dst and
// returns it with the request's tool-name map, which the answer's
// decoders need. The model and whether the answer streams are not in the
// body: the caller picks the path (/model/{modelId}/converse or
// /converse-stream).
//
// Mapping:
//   - System text blocks become system [{text}], messages {role,
//     content}; consecutive turns of one role are merged and a user
//     turn's tool results put first (Bedrock requires alternating roles
//     and Claude requires results first); empty text blocks, which
//     Bedrock refuses, and unsigned reasoning (another provider's, which
//     Claude cannot verify) are left out.
//   - A {cachePoint: {type: default}} follows every system block, content
//     block and tool that carries a cache_control: dropping them was a
//     peer gateway's bug that billed every call at the uncached price.
//     A cache_control inside a tool result puts the point after the
//     result (Converse has no point inside one). The cache_control's ttl
//     has no Converse form; the default (five minutes) holds.
//   - Images and documents need base64 data (a data: URL is read as
//     such); other URLs, s3:// included (the gateway's role would read
//     them on the client's behalf), are refused. Documents are named
//     document-1, document-2, ... (Converse requires a name).
//   - Tool names and tool use ids outside [a-zA-Z0-9_-]{1,64} are
//     replaced (see Names); a tool result's status is sent only when it
//     is an error, since Bedrock refuses the member for models other
//     than Claude.
//   - Tool choice: auto, any and a named tool have Converse forms. None
//     has none: the tools are left out, which Converse refuses when the
//     conversation holds tool uses or results (it requires their tools
//     declared), so that case is an error, as is disabling parallel tool
//     calls, which Converse cannot express. A conversation with tool
//     blocks and no tools at all is sent as it is, for Bedrock to judge.
//   - MaxTokens, Temperature, TopP and Stop go to inferenceConfig;
//     ThinkingBudget (or ReasoningEffort: low 1024, medium 4096, high
//     16384 tokens; none and minimal are no reasoning) and TopK to
//     additionalModelRequestFields as Claude reads them. User has no
//     Converse member and is not sent (it changes no answer).
//
// What Converse cannot express is an *ir.UnsupportedError whose Param
// names the IR member as the other codecs do: "n", "logprobs",
// "top_logprobs", "response_format", "reasoning_effort", "tool_choice",
// "tools" and "tools[i]", "system[j]", "messages[i].content[j]" (indices
// the IR's).
func EncodeRequest(dst []byte, r *ir.Request) ([]byte, *Names, error) {
	if err := checkUnsupported(r); err != nil {
		return dst, nil, err
	}
	budget, err := thinkingBudget(r)
	if err != nil {
		return dst, nil, err
	}
	names := &Names{}
	e := encoder{names: names}
	w := requestWire{}
	if w.System, err = system(r.System); err != nil {
		return dst, nil, err
	}
	if w.Messages, err = e.messages(r.Messages); err != nil {
		return dst, nil, err
	}
	if w.ToolConfig, err = e.toolConfig(r); err != nil {
		return dst, nil, err
	}
	ic := inferenceConfig{MaxTokens: r.MaxTokens, Temperature: r.Temperature, TopP: r.TopP, StopSequences: r.Stop}
	if budget > 0 && ic.MaxTokens <= budget {
		ic.MaxTokens = budget + DefaultMaxTokens
		if ic.MaxTokens < budget { // an absurd budget: keep the sum from wrapping
			ic.MaxTokens = math.MaxInt64
		}
	}
	if ic.MaxTokens > 0 || ic.Temperature != nil || ic.TopP != nil || len(ic.StopSequences) > 0 {
		w.InferenceConfig = &ic
	}
	if budget > 0 || r.TopK != nil {
		w.AdditionalModelRequestFields = &additionalFields{TopK: r.TopK}
		if budget > 0 {
			w.AdditionalModelRequestFields.Thinking = &thinkingWire{Type: "enabled", BudgetTokens: budget}
		}
	}
	b, err := json.Marshal(&w)
	if err != nil {
		// Raw values were checked to be objects; what is left is a
		// non-finite number or invalid UTF-8 the client's decoder let by.
		return dst, nil, &ir.UnsupportedError{Param: "messages", Reason: "The request holds a value JSON cannot carry: " + err.Error()}
	}
	return append(dst, b...), names, nil
}

// checkUnsupported refuses the request members Converse has no form for.
func checkUnsupported(r *ir.Request) error {
	switch {
	case r.N > 1:
		return &ir.UnsupportedError{Param: "n", Reason: "Bedrock returns one answer per request."}
	case r.Logprobs:
		return &ir.UnsupportedError{Param: "logprobs", Reason: "Bedrock Converse does not return token log probabilities."}
	case r.TopLogprobs > 0:
		return &ir.UnsupportedError{Param: "top_logprobs", Reason: "Bedrock Converse does not return token log probabilities."}
	case r.ResponseFormat != nil:
		return &ir.UnsupportedError{Param: "response_format", Reason: "Bedrock Converse has no response format; use a tool with the schema instead."}
	}
	for param, f := range map[string]*float64{"temperature": r.Temperature, "top_p": r.TopP} {
		if f != nil && (math.IsNaN(*f) || math.IsInf(*f, 0)) {
			return &ir.UnsupportedError{Param: param, Reason: "Sampling parameters must be finite numbers."}
		}
	}
	return nil
}

// thinkingBudget is the budget_tokens to ask for, 0 for no reasoning.
func thinkingBudget(r *ir.Request) (int64, error) {
	budget := r.ThinkingBudget
	if budget <= 0 {
		switch e := r.ReasoningEffort; e {
		case "", "none", "minimal":
			return 0, nil
		default:
			var ok bool
			if budget, ok = effortBudgets[e]; !ok {
				return 0, &ir.UnsupportedError{Param: "reasoning_effort", Reason: "Unknown reasoning effort " + strconv.Quote(bound(e)) + "."}
			}
		}
	}
	if r.ToolChoice.Set && (r.ToolChoice.Mode == ir.ToolAny || r.ToolChoice.Mode == ir.ToolNamed) {
		return 0, &ir.UnsupportedError{Param: "tool_choice", Reason: "Claude cannot be forced to call a tool while it reasons; use auto, or turn reasoning off."}
	}
	return budget, nil
}

func system(blocks []ir.Block) ([]systemWire, error) {
	var out []systemWire
	for j := range blocks {
		b := &blocks[j]
		if b.Type != ir.BlockText {
			return nil, &ir.UnsupportedError{Param: "system[" + strconv.Itoa(j) + "]", Reason: "Bedrock's system prompt holds only text."}
		}
		if b.Text != "" {
			out = append(out, systemWire{Text: &b.Text})
		}
		if cached(b.CacheControl) && len(out) > 0 && out[len(out)-1].CachePoint == nil {
			out = append(out, systemWire{CachePoint: defaultCachePoint})
		}
	}
	return out, nil
}

// cached reports whether a cache_control is set.
func cached(cc ir.Raw) bool { return len(cc) > 0 && !jsonx.IsNull(cc) }

// encoder holds what encoding one request accumulates.
type encoder struct {
	names     *Names
	documents int // documents named so far
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

// turns regroups the IR's messages into the alternating turns Bedrock
// requires: tool results go to user turns, blocks that carry nothing
// are left out, and consecutive turns of one role are merged.
func turns(msgs []ir.Message) []turn {
	var ts []turn
	for i := range msgs {
		m := &msgs[i]
		for j := range m.Content {
			b := &m.Content[j]
			switch {
			case b.Type == ir.BlockText && b.Text == "" && !cached(b.CacheControl):
				continue // Bedrock refuses empty text blocks
			case b.Type == ir.BlockThinking && b.Signature == "":
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

func (e *encoder) messages(msgs []ir.Message) ([]messageWire, error) {
	ts := turns(msgs)
	out := make([]messageWire, 0, len(ts))
	for _, t := range ts {
		m := messageWire{Role: string(t.role), Content: make([]blockWire, 0, len(t.items))}
		// Claude wants a user turn's tool results first: two passes,
		// results then the rest, each in order.
		for pass := range 2 {
			for _, it := range t.items {
				if (it.b.Type == ir.BlockToolResult) != (pass == 0) {
					continue
				}
				path := "messages[" + strconv.Itoa(it.i) + "].content[" + strconv.Itoa(it.j) + "]"
				var err error
				if m.Content, err = e.block(m.Content, it.b, t.role, path); err != nil {
					return nil, err
				}
			}
		}
		if len(m.Content) > 0 {
			out = append(out, m)
		}
	}
	return out, nil
}

// block appends the Converse form of one IR block of a turn of role,
// with its cache point.
func (e *encoder) block(dst []blockWire, b *ir.Block, role ir.Role, path string) ([]blockWire, error) {
	unsupported := func(reason string) error { return &ir.UnsupportedError{Param: path, Reason: reason} }
	var w blockWire
	cache := cached(b.CacheControl)
	switch {
	case b.Type == ir.BlockText:
		if b.Text != "" {
			w.Text = &b.Text
		}
	case b.Type == ir.BlockImage && role == ir.RoleUser:
		m, err := e.media(b, path)
		if err != nil {
			return dst, err
		}
		w.Image = m
	case b.Type == ir.BlockDocument && role == ir.RoleUser:
		m, err := e.media(b, path)
		if err != nil {
			return dst, err
		}
		w.Document = m
	case b.Type == ir.BlockToolUse && role == ir.RoleAssistant:
		name, ok := e.names.add(b.Name)
		if !ok {
			return dst, unsupported("The tool name " + strconv.Quote(bound(b.Name)) + " collides with another tool's name as Bedrock must see it.")
		}
		input := jsontext.Value(b.Input)
		switch {
		case len(input) == 0 || jsonx.IsNull(input):
			input = jsontext.Value("{}")
		case !jsonx.IsObject(input):
			return dst, unsupported("A tool call's input must be a JSON object.")
		}
		w.ToolUse = &toolUseWire{ToolUseID: upstreamID(b.ID), Name: name, Input: input}
	case b.Type == ir.BlockToolResult && role == ir.RoleUser:
		tr := &toolResultWire{ToolUseID: upstreamID(b.ToolUseID)}
		if b.IsError {
			tr.Status = "error"
		}
		for k := range b.Content {
			c := &b.Content[k]
			cpath := path + ".content[" + strconv.Itoa(k) + "]"
			cache = cache || cached(c.CacheControl)
			switch c.Type {
			case ir.BlockText:
				if c.Text != "" {
					tr.Content = append(tr.Content, resultContentWire{Text: &c.Text})
				}
			case ir.BlockImage, ir.BlockDocument:
				m, err := e.media(c, cpath)
				if err != nil {
					return dst, err
				}
				if c.Type == ir.BlockImage {
					tr.Content = append(tr.Content, resultContentWire{Image: m})
				} else {
					tr.Content = append(tr.Content, resultContentWire{Document: m})
				}
			default:
				return dst, &ir.UnsupportedError{Param: cpath, Reason: "A tool result holds only text, images and documents."}
			}
		}
		if len(tr.Content) == 0 {
			text := noOutput
			tr.Content = []resultContentWire{{Text: &text}}
		}
		w.ToolResult = tr
	case b.Type == ir.BlockThinking && role == ir.RoleAssistant:
		w.ReasoningContent = &reasoningWire{ReasoningText: &reasoningText{Text: b.Text, Signature: b.Signature}}
	case b.Type == ir.BlockRedactedThinking && role == ir.RoleAssistant:
		if b.Data == "" {
			return dst, nil
		}
		w.ReasoningContent = &reasoningWire{RedactedContent: b.Data}
	default:
		return dst, unsupported("Bedrock cannot carry this block in a " + string(role) + " turn.")
	}
	if w.Text != nil || w.Image != nil || w.Document != nil || w.ToolUse != nil || w.ToolResult != nil || w.ReasoningContent != nil {
		dst = append(dst, w)
	}
	if cache && len(dst) > 0 && dst[len(dst)-1].CachePoint == nil {
		dst = append(dst, blockWire{CachePoint: defaultCachePoint})
	}
	return dst, nil
}

// imageFormats and documentFormats are Converse's formats by media type.
var (
	imageFormats = map[string]string{
		"image/png":  "png",
		"image/jpeg": "jpeg",
		"image/jpg":  "jpeg",
		"image/gif":  "gif",
		"image/webp": "webp",
	}
	documentFormats = map[string]string{
		"application/pdf":    "pdf",
		"text/csv":           "csv",
		"application/msword": "doc",
		"application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
		"application/vnd.ms-excel": "xls",
		"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
		"text/html":     "html",
		"text/plain":    "txt",
		"text/markdown": "md",
	}
)

// media is the Converse form of an image or a document.
func (e *encoder) media(b *ir.Block, path string) (*mediaWire, error) {
	mediaType, data := b.MediaType, b.Data
	if data == "" {
		var ok bool
		if mediaType, data, ok = wire.ParseDataURL(b.URL); !ok {
			return nil, &ir.UnsupportedError{Param: path, Reason: "Bedrock needs the bytes of an image or a document (base64 data); it fetches no URL."}
		}
	}
	mediaType = strings.ToLower(strings.TrimSpace(mediaType))
	if i := strings.IndexByte(mediaType, ';'); i >= 0 {
		mediaType = strings.TrimSpace(mediaType[:i]) // parameters such as charset
	}
	formats, what := imageFormats, "an image"
	if b.Type == ir.BlockDocument {
		formats, what = documentFormats, "a document"
	}
	format, ok := formats[mediaType]
	if !ok {
		return nil, &ir.UnsupportedError{Param: path, Reason: "Bedrock cannot read " + what + " of type " + strconv.Quote(bound(mediaType)) + "."}
	}
	m := &mediaWire{Format: format, Source: sourceWire{Bytes: data}}
	if b.Type == ir.BlockDocument {
		e.documents++
		m.Name = "document-" + strconv.Itoa(e.documents)
	}
	return m, nil
}

func (e *encoder) toolConfig(r *ir.Request) (*toolConfig, error) {
	tc := r.ToolChoice
	if len(r.Tools) == 0 {
		if tc.Set && (tc.Mode == ir.ToolAny || tc.Mode == ir.ToolNamed) {
			return nil, &ir.UnsupportedError{Param: "tool_choice", Reason: "A tool call cannot be required without tools."}
		}
		return nil, nil
	}
	if tc.Set && tc.Mode == ir.ToolNone {
		if hasToolBlocks(r.Messages) {
			return nil, &ir.UnsupportedError{Param: "tool_choice", Reason: "Bedrock Converse has no tool choice none, and a conversation holding tool calls must declare its tools, which lets the model call them; use auto."}
		}
		return nil, nil
	}
	if tc.DisableParallel {
		return nil, &ir.UnsupportedError{Param: "tool_choice", Reason: "Bedrock Converse cannot limit the model to one tool call per turn (parallel_tool_calls, disable_parallel_tool_use)."}
	}
	out := &toolConfig{Tools: make([]toolWire, 0, len(r.Tools))}
	for i := range r.Tools {
		t := &r.Tools[i]
		at := "tools[" + strconv.Itoa(i) + "]"
		name, ok := e.names.add(t.Name)
		if !ok {
			return nil, &ir.UnsupportedError{Param: at, Reason: "The tool name " + strconv.Quote(bound(t.Name)) + " collides with another tool's name as Bedrock must see it."}
		}
		spec := &toolSpec{Name: name, Description: t.Description}
		switch {
		case len(t.Schema) == 0 || jsonx.IsNull(t.Schema):
			// A function without parameters; Converse requires a schema.
			spec.InputSchema.JSON = jsontext.Value(`{"type":"object","properties":{}}`)
		case jsonx.IsObject(t.Schema):
			spec.InputSchema.JSON = jsontext.Value(t.Schema)
		default:
			return nil, &ir.UnsupportedError{Param: at, Reason: "A tool's schema must be a JSON object."}
		}
		out.Tools = append(out.Tools, toolWire{ToolSpec: spec})
		if cached(t.CacheControl) {
			out.Tools = append(out.Tools, toolWire{CachePoint: defaultCachePoint})
		}
	}
	if tc.Set {
		switch tc.Mode {
		case ir.ToolAny:
			out.ToolChoice = &toolChoiceWire{Any: &struct{}{}}
		case ir.ToolNamed:
			name, ok := e.names.add(tc.Name)
			if !ok {
				return nil, &ir.UnsupportedError{Param: "tool_choice", Reason: "The tool name collides with another tool's name as Bedrock must see it."}
			}
			out.ToolChoice = &toolChoiceWire{Tool: &struct {
				Name string `json:"name"`
			}{name}}
		default:
			out.ToolChoice = &toolChoiceWire{Auto: &struct{}{}}
		}
	}
	return out, nil
}

// hasToolBlocks reports whether the conversation holds a tool use or a
// tool result.
func hasToolBlocks(msgs []ir.Message) bool {
	for i := range msgs {
		for j := range msgs[i].Content {
			if t := msgs[i].Content[j].Type; t == ir.BlockToolUse || t == ir.BlockToolResult {
				return true
			}
		}
	}
	return false
}

// errorf wraps ir.ErrProtocol for an answer that breaks Converse's
// format.
func errorf(format string, args ...any) error {
	return fmt.Errorf("converse: "+format+": %w", append(args, ir.ErrProtocol)...)
}
