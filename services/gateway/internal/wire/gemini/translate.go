package gemini

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/moat-ai/moat/services/gateway/internal/ir"
	"github.com/moat-ai/moat/services/gateway/internal/wire"
	"github.com/moat-ai/moat/services/gateway/internal/wire/jsonx"
)

// The wire types of a generateContent request and answer. Requests are
// written with them; answers are read with them, members the IR does not
// carry (safetyRatings, citationMetadata, avgLogprobs) ignored.
type (
	requestWire struct {
		Contents          []contentWire     `json:"contents"`
		SystemInstruction *contentWire      `json:"systemInstruction,omitzero"`
		Tools             []toolWire        `json:"tools,omitzero"`
		ToolConfig        *toolConfigWire   `json:"toolConfig,omitzero"`
		GenerationConfig  *generationConfig `json:"generationConfig,omitzero"`
	}
	contentWire struct {
		Role  string     `json:"role,omitzero"`
		Parts []partWire `json:"parts"`
	}
	// partWire is one part. Text is a pointer because a part needs one
	// data member: a thought part that carries only a signature still
	// sends "text":"".
	partWire struct {
		Text                *string               `json:"text,omitzero"`
		Thought             bool                  `json:"thought,omitzero"`
		InlineData          *blobWire             `json:"inlineData,omitzero"`
		FileData            *fileWire             `json:"fileData,omitzero"`
		FunctionCall        *functionCallWire     `json:"functionCall,omitzero"`
		FunctionResponse    *functionResponseWire `json:"functionResponse,omitzero"`
		ExecutableCode      jsontext.Value        `json:"executableCode,omitzero"`
		CodeExecutionResult jsontext.Value        `json:"codeExecutionResult,omitzero"`
		ThoughtSignature    string                `json:"thoughtSignature,omitzero"`
	}
	blobWire struct {
		MimeType string `json:"mimeType"`
		Data     string `json:"data"`
	}
	fileWire struct {
		MimeType string `json:"mimeType"`
		FileURI  string `json:"fileUri"`
	}
	functionCallWire struct {
		ID   string         `json:"id,omitzero"`
		Name string         `json:"name"`
		Args jsontext.Value `json:"args,omitzero"`
	}
	functionResponseWire struct {
		Name     string           `json:"name"`
		Response functionResponse `json:"response"`
	}
	// functionResponse is a function response's object. Gemini reads an
	// "error" member as a failure and any other object whole as the
	// function's output, so a text result travels as {"content": text}.
	functionResponse struct {
		Content *string `json:"content,omitzero"`
		Error   *string `json:"error,omitzero"`
	}
	toolWire struct {
		FunctionDeclarations []functionDecl `json:"functionDeclarations"`
	}
	functionDecl struct {
		Name                 string         `json:"name"`
		Description          string         `json:"description,omitzero"`
		ParametersJSONSchema jsontext.Value `json:"parametersJsonSchema,omitzero"`
	}
	toolConfigWire struct {
		FunctionCallingConfig functionCallingConfig `json:"functionCallingConfig"`
	}
	functionCallingConfig struct {
		Mode                 string   `json:"mode"`
		AllowedFunctionNames []string `json:"allowedFunctionNames,omitzero"`
	}
	generationConfig struct {
		MaxOutputTokens    int64           `json:"maxOutputTokens,omitzero"`
		Temperature        *float64        `json:"temperature,omitzero"`
		TopP               *float64        `json:"topP,omitzero"`
		TopK               *int64          `json:"topK,omitzero"`
		StopSequences      []string        `json:"stopSequences,omitzero"`
		CandidateCount     int64           `json:"candidateCount,omitzero"`
		ResponseMimeType   string          `json:"responseMimeType,omitzero"`
		ResponseJSONSchema jsontext.Value  `json:"responseJsonSchema,omitzero"`
		ResponseLogprobs   bool            `json:"responseLogprobs,omitzero"`
		Logprobs           int64           `json:"logprobs,omitzero"`
		ThinkingConfig     *thinkingConfig `json:"thinkingConfig,omitzero"`
	}
	thinkingConfig struct {
		// ThinkingBudget is always sent: 0 turns thinking off.
		ThinkingBudget  int64 `json:"thinkingBudget"`
		IncludeThoughts bool  `json:"includeThoughts,omitzero"`
	}
)

// effortBudgets are the thinking budgets EncodeRequest asks for at each
// OpenAI-style reasoning effort. 24576 is the most Gemini 2.5 Flash
// accepts and 32768 the most 2.5 Pro does; 512 is the least every 2.5
// model that thinks accepts (Flash-Lite's floor); none turns thinking
// off, which the models that must think refuse with a 400 rather than
// think unasked.
var effortBudgets = map[string]int64{
	"none":    0,
	"minimal": 512,
	"low":     1024,
	"medium":  8192,
	"high":    24576,
	"xhigh":   32768,
}

// SkipSignature is the thought signature EncodeRequest puts on a model
// turn's first function call when the history has none for it (the call
// came from another provider, or through a client API that has no place
// for signatures, such as OpenAI's). Gemini 3 refuses a history whose
// function calls lack their signatures with a 400; Google documents this
// value as the way to send such a history, at some cost to the model's
// reasoning continuity.
const SkipSignature = "skip_thought_signature_validator"

// EncodeRequest appends r as the body of a generateContent (or
// streamGenerateContent) request to dst. The model and whether to stream
// are not in the body: r.Model and r.Stream are for the URL.
//
// Mapping: the system blocks become systemInstruction's text parts; the
// messages become contents with roles user and model, consecutive turns
// of one role merged (tool results always travel in a user turn, tool
// calls in a model turn). Text is a text part; base64 images and
// documents (and data: URLs) are inlineData; a gs:// URI is fileData,
// its media type guessed from the extension when the IR has none. A tool
// use is functionCall {name, args}; a tool result is functionResponse
// {name, response}, the name being that of the latest earlier tool use
// with its ID (Gemini pairs results with calls by name and order, so the
// IR's ids are not sent), the response {"content": text} or, for an
// error, {"error": text}, text blocks joined by newlines.
//
// Reasoning: a thinking block with a signature is replayed as a thought
// part {thought: true, text, thoughtSignature}; one with a signature and
// no text is the carrier DecodeResponse makes for a signature Gemini put
// on another part (a functionCall, a text), and its signature goes back
// on the next part of the turn (the previous one when it ends the turn).
// A thinking block without a signature (another provider's reasoning, or
// reasoning that came through a client API without signatures) and a
// redacted thinking block (Anthropic's opaque payload) mean nothing to
// Gemini and are dropped, as is reasoning in a user turn. A model turn
// whose first function call has no signature gets SkipSignature on it.
// Signatures are not checked for provenance (nothing in one says which
// provider made it): another provider's is sent as it is, and Gemini may
// refuse the request.
//
// generationConfig carries maxOutputTokens, temperature, topP, topK,
// stopSequences, candidateCount (when r.N > 1; only the first candidate
// is read back), responseLogprobs and logprobs (log probabilities are
// not read back: the IR's answer has no place for them), a response
// format (responseMimeType application/json, plus responseJsonSchema for
// json_schema) and thinkingConfig: {thinkingBudget, includeThoughts:
// true} from r.ThinkingBudget or r.ReasoningEffort (none 0 without
// thoughts, minimal 512, low 1024, medium 8192, high 24576, xhigh 32768).
// Tools are one functionDeclarations list with parametersJsonSchema;
// r.ToolChoice is toolConfig.functionCallingConfig (AUTO, ANY, NONE, or
// ANY with allowedFunctionNames for a named tool), sent only with tools.
//
// Left out because Gemini has no equivalent and losing them changes no
// answer's shape: cache_control (Gemini caches prompts implicitly, with
// no marker and no write charge), r.User, and DisableParallel (Gemini
// has no switch for parallel calls; a client that asked for one call may
// get several).
//
// What Gemini cannot express is an *ir.UnsupportedError naming the IR
// member, as the other codecs do: "messages" (none at all), "system[j]"
// (not text), "messages[i].content[j]" (an http(s) URL: Gemini does not
// fetch web URLs; a tool result without an earlier call; a block that
// has no Gemini form), "messages[i].content[j].content[k]" (a tool
// result holding more than text), "tools[i]" (a schema that is not an
// object), "response_format", "reasoning_effort" (an unknown level),
// "temperature", "top_p" and "top_k" (out of range).
func EncodeRequest(dst []byte, r *ir.Request) ([]byte, error) {
	w := requestWire{}
	var err error
	if w.SystemInstruction, err = systemInstruction(r.System); err != nil {
		return dst, err
	}
	if w.Contents, err = contents(r.Messages); err != nil {
		return dst, err
	}
	if len(r.Tools) > 0 {
		if w.Tools, err = tools(r.Tools); err != nil {
			return dst, err
		}
		w.ToolConfig = toolConfig(r)
	}
	if w.GenerationConfig, err = generation(r); err != nil {
		return dst, err
	}
	b, err := json.Marshal(&w)
	if err != nil {
		// Strings and validated raw values always marshal; what is left
		// is invalid UTF-8 or a raw value with a duplicate member.
		return dst, fmt.Errorf("encode gemini request: %w", err)
	}
	return append(dst, b...), nil
}

func systemInstruction(blocks []ir.Block) (*contentWire, error) {
	var parts []partWire
	for j := range blocks {
		b := &blocks[j]
		if b.Type != ir.BlockText {
			return nil, &ir.UnsupportedError{Param: "system[" + strconv.Itoa(j) + "]", Reason: "Gemini's system instruction holds only text."}
		}
		if b.Text != "" {
			parts = append(parts, partWire{Text: &b.Text})
		}
	}
	if len(parts) == 0 {
		return nil, nil
	}
	return &contentWire{Parts: parts}, nil
}

// turnWriter builds the contents: it merges consecutive parts of one
// role into one content and places thought signatures.
type turnWriter struct {
	out []contentWire
	// names maps tool use ids to their function names, as met so far.
	names map[string]string
	// pending is a signature waiting for the next part of the message;
	// first is where the current message's parts begin in the last
	// content (-1 when the message has added none yet).
	pending string
	first   int
}

func contents(msgs []ir.Message) ([]contentWire, error) {
	if len(msgs) == 0 {
		return nil, &ir.UnsupportedError{Param: "messages", Reason: "Gemini needs at least one message."}
	}
	t := turnWriter{names: map[string]string{}}
	for i := range msgs {
		if err := t.message(&msgs[i], "messages["+strconv.Itoa(i)+"]"); err != nil {
			return nil, err
		}
	}
	if len(t.out) == 0 {
		return nil, &ir.UnsupportedError{Param: "messages", Reason: "Gemini needs at least one message with content."}
	}
	for k := range t.out {
		if t.out[k].Role == "model" {
			signFirstCall(t.out[k].Parts)
		}
	}
	return t.out, nil
}

func (t *turnWriter) message(m *ir.Message, path string) error {
	role := "user"
	if m.Role == ir.RoleAssistant {
		role = "model"
	}
	t.pending, t.first = "", -1
	for j := range m.Content {
		b := &m.Content[j]
		bpath := path + ".content[" + strconv.Itoa(j) + "]"
		switch b.Type {
		case ir.BlockText:
			if b.Text != "" {
				t.add(role, partWire{Text: &b.Text})
			}
		case ir.BlockImage, ir.BlockDocument:
			p, err := mediaPart(b, bpath)
			if err != nil {
				return err
			}
			t.add(role, p)
		case ir.BlockToolUse:
			args := jsontext.Value(b.Input)
			switch {
			case len(args) == 0 || jsonx.IsNull(args):
				args = jsontext.Value("{}")
			case !jsonx.IsObject(args):
				return &ir.UnsupportedError{Param: bpath, Reason: "A tool call's input must be a JSON object."}
			}
			if b.ID != "" {
				t.names[b.ID] = b.Name
			}
			t.add("model", partWire{FunctionCall: &functionCallWire{Name: b.Name, Args: args}})
		case ir.BlockToolResult:
			p, err := t.result(b, bpath)
			if err != nil {
				return err
			}
			t.add("user", p)
		case ir.BlockThinking:
			switch {
			case b.Signature == "" || role != "model":
				// Unverifiable reasoning: Gemini reads nothing from it.
			case b.Text == "":
				t.pending = b.Signature
			default:
				t.add("model", partWire{Thought: true, Text: &b.Text, ThoughtSignature: b.Signature})
			}
		case ir.BlockRedactedThinking:
			// Anthropic's encrypted reasoning: opaque to Gemini.
		default:
			return &ir.UnsupportedError{Param: bpath, Reason: "This block has no Gemini form."}
		}
	}
	if t.pending != "" {
		// A signature after the message's last part belongs to it.
		if last := t.lastPart(); last != nil && t.first >= 0 && last.ThoughtSignature == "" && t.out[len(t.out)-1].Role == "model" {
			last.ThoughtSignature = t.pending
		} else {
			empty := ""
			t.add("model", partWire{Thought: true, Text: &empty, ThoughtSignature: t.pending})
		}
		t.pending = ""
	}
	return nil
}

// add appends p to the contents under role, taking a pending signature
// when p is a model part without one.
func (t *turnWriter) add(role string, p partWire) {
	if t.pending != "" && role == "model" && p.ThoughtSignature == "" {
		p.ThoughtSignature, t.pending = t.pending, ""
	}
	n := len(t.out)
	if n == 0 || t.out[n-1].Role != role {
		t.out = append(t.out, contentWire{Role: role})
		n++
		t.first = 0
	} else if t.first < 0 {
		t.first = len(t.out[n-1].Parts)
	}
	t.out[n-1].Parts = append(t.out[n-1].Parts, p)
}

func (t *turnWriter) lastPart() *partWire {
	if n := len(t.out); n > 0 {
		if k := len(t.out[n-1].Parts); k > 0 {
			return &t.out[n-1].Parts[k-1]
		}
	}
	return nil
}

// result is the functionResponse part of a tool result.
func (t *turnWriter) result(b *ir.Block, path string) (partWire, error) {
	name, ok := t.names[b.ToolUseID]
	if !ok || name == "" {
		return partWire{}, &ir.UnsupportedError{Param: path,
			Reason: "The tool result answers no earlier tool call of the conversation; Gemini names a function's result by its function."}
	}
	var text strings.Builder
	for k := range b.Content {
		c := &b.Content[k]
		if c.Type != ir.BlockText {
			return partWire{}, &ir.UnsupportedError{Param: path + ".content[" + strconv.Itoa(k) + "]", Reason: "A tool result may hold only text for Gemini."}
		}
		if c.Text == "" {
			continue
		}
		if text.Len() > 0 {
			text.WriteByte('\n')
		}
		text.WriteString(c.Text)
	}
	s := text.String()
	fr := &functionResponseWire{Name: name}
	if b.IsError {
		fr.Response.Error = &s
	} else {
		fr.Response.Content = &s
	}
	return partWire{FunctionResponse: fr}, nil
}

// signFirstCall gives a model turn's first function call SkipSignature
// when it has no signature of its own (see EncodeRequest).
func signFirstCall(parts []partWire) {
	for k := range parts {
		if parts[k].FunctionCall != nil {
			if parts[k].ThoughtSignature == "" {
				parts[k].ThoughtSignature = SkipSignature
			}
			return
		}
	}
}

// mediaPart is the part of an image or a document: inline base64 data,
// or a Cloud Storage URI.
func mediaPart(b *ir.Block, path string) (partWire, error) {
	mediaType, data, url := b.MediaType, b.Data, b.URL
	if data == "" && strings.HasPrefix(url, "data:") {
		var ok bool
		if mediaType, data, ok = wire.ParseDataURL(url); !ok {
			return partWire{}, &ir.UnsupportedError{Param: path, Reason: "Only base64 data: URLs can be sent."}
		}
	}
	switch {
	case data != "":
		if mediaType == "" {
			return partWire{}, &ir.UnsupportedError{Param: path, Reason: "Base64 data needs its media type."}
		}
		return partWire{InlineData: &blobWire{MimeType: mediaType, Data: data}}, nil
	case strings.HasPrefix(url, "gs://"):
		if mediaType == "" {
			mediaType = mediaTypeOf(url)
		}
		if mediaType == "" {
			return partWire{}, &ir.UnsupportedError{Param: path, Reason: "The media type of this gs:// file is unknown; Gemini needs it."}
		}
		return partWire{FileData: &fileWire{MimeType: mediaType, FileURI: url}}, nil
	case strings.HasPrefix(url, "http://"), strings.HasPrefix(url, "https://"):
		return partWire{}, &ir.UnsupportedError{Param: path, Reason: "Gemini does not fetch web URLs; send the file as base64 data."}
	case url != "":
		return partWire{}, &ir.UnsupportedError{Param: path, Reason: "Gemini reads files from base64 data or gs:// URIs only."}
	}
	return partWire{}, &ir.UnsupportedError{Param: path, Reason: "An image or document needs data or a URL."}
}

// mediaTypes are the types of the files Gemini reads, by extension; the
// table is ours rather than package mime's, which reads the host's
// mime.types and would make the output depend on the machine.
var mediaTypes = map[string]string{
	"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp",
	"gif": "image/gif", "heic": "image/heic", "heif": "image/heif",
	"pdf": "application/pdf", "txt": "text/plain",
}

func mediaTypeOf(uri string) string {
	i := strings.LastIndexByte(uri, '.')
	if i < 0 || strings.LastIndexByte(uri, '/') > i {
		return ""
	}
	return mediaTypes[strings.ToLower(uri[i+1:])]
}

func tools(ts []ir.Tool) ([]toolWire, error) {
	decls := make([]functionDecl, 0, len(ts))
	for i := range ts {
		t := &ts[i]
		d := functionDecl{Name: t.Name, Description: t.Description}
		switch s := jsontext.Value(t.Schema); {
		case len(s) == 0 || jsonx.IsNull(s):
			// A function without parameters: Gemini needs no schema.
		case jsonx.IsObject(s):
			d.ParametersJSONSchema = s
		default:
			return nil, &ir.UnsupportedError{Param: "tools[" + strconv.Itoa(i) + "]", Reason: "A tool's schema must be a JSON object."}
		}
		decls = append(decls, d)
	}
	return []toolWire{{FunctionDeclarations: decls}}, nil
}

func toolConfig(r *ir.Request) *toolConfigWire {
	tc := r.ToolChoice
	if !tc.Set {
		return nil
	}
	c := functionCallingConfig{}
	switch tc.Mode {
	case ir.ToolAny:
		c.Mode = "ANY"
	case ir.ToolNone:
		c.Mode = "NONE"
	case ir.ToolNamed:
		c.Mode, c.AllowedFunctionNames = "ANY", []string{tc.Name}
	default:
		c.Mode = "AUTO"
	}
	return &toolConfigWire{FunctionCallingConfig: c}
}

// generation is the generationConfig, nil when it would be empty.
func generation(r *ir.Request) (*generationConfig, error) {
	g := generationConfig{MaxOutputTokens: max(r.MaxTokens, 0), StopSequences: r.Stop, TopK: r.TopK}
	if t := r.Temperature; t != nil {
		if !(*t >= 0 && *t <= 2) {
			return nil, &ir.UnsupportedError{Param: "temperature", Reason: "Gemini accepts a temperature from 0 to 2."}
		}
		g.Temperature = t
	}
	if p := r.TopP; p != nil {
		if !(*p >= 0 && *p <= 1) {
			return nil, &ir.UnsupportedError{Param: "top_p", Reason: "top_p must be from 0 to 1."}
		}
		g.TopP = p
	}
	if k := r.TopK; k != nil && *k < 0 {
		return nil, &ir.UnsupportedError{Param: "top_k", Reason: "top_k must not be negative."}
	}
	if r.N > 1 {
		g.CandidateCount = r.N
	}
	if r.Logprobs || r.TopLogprobs > 0 {
		g.ResponseLogprobs, g.Logprobs = true, max(r.TopLogprobs, 0)
	}
	if f := r.ResponseFormat; f != nil {
		switch f.Type {
		case "json_object":
			g.ResponseMimeType = "application/json"
		case "json_schema":
			if !jsonx.IsObject(f.Schema) {
				return nil, &ir.UnsupportedError{Param: "response_format", Reason: "The JSON schema must be an object."}
			}
			g.ResponseMimeType, g.ResponseJSONSchema = "application/json", jsontext.Value(f.Schema)
		default:
			return nil, &ir.UnsupportedError{Param: "response_format", Reason: "Gemini constrains output to json_object or json_schema only."}
		}
	}
	budget, thinks := r.ThinkingBudget, r.ThinkingBudget > 0
	if !thinks && r.ReasoningEffort != "" {
		var ok bool
		if budget, ok = effortBudgets[r.ReasoningEffort]; !ok {
			return nil, &ir.UnsupportedError{Param: "reasoning_effort", Reason: "Unknown reasoning effort " + strconv.Quote(wire.Bound(r.ReasoningEffort)) + "."}
		}
		thinks = true
	}
	if thinks {
		g.ThinkingConfig = &thinkingConfig{ThinkingBudget: budget, IncludeThoughts: budget > 0}
	}
	if isZero(&g) {
		return nil, nil
	}
	return &g, nil
}

func isZero(g *generationConfig) bool {
	return g.MaxOutputTokens == 0 && g.Temperature == nil && g.TopP == nil && g.TopK == nil &&
		len(g.StopSequences) == 0 && g.CandidateCount == 0 && g.ResponseMimeType == "" &&
		!g.ResponseLogprobs && g.ThinkingConfig == nil
}
