package ir

import "encoding/json"

// Raw is a JSON value kept as it came: tool arguments and schemas, cache
// controls and provider options are carried, never reinterpreted.
type Raw = json.RawMessage

// Role is who speaks a message.
type Role string

// The roles. System text is not a message: it is Request.System.
const (
	RoleUser      Role = "user"
	RoleAssistant Role = "assistant"
)

// BlockType is the kind of a content block.
type BlockType uint8

// The block types. The IR follows Anthropic's block structure, the
// richest of the formats: every other maps onto it.
const (
	BlockText BlockType = iota + 1
	BlockImage
	BlockDocument
	BlockToolUse
	BlockToolResult
	BlockThinking
	BlockRedactedThinking
)

// Block is one content block of a message or an answer.
type Block struct {
	Type BlockType
	// Text is the text of a text block, and the reasoning of a thinking
	// block.
	Text string
	// Source of an image or document: base64 Data with its MediaType, or
	// a URL.
	MediaType, Data, URL string
	// ID and Name of a tool use; Input its arguments, raw JSON (an object).
	ID, Name string
	Input    Raw
	// ToolUseID, Content and IsError of a tool result.
	ToolUseID string
	Content   []Block
	IsError   bool
	// Signature of a thinking block, which must round-trip unchanged; for
	// a redacted thinking block, Data holds its opaque payload.
	Signature string
	// CacheControl is the block's cache_control, passed on where the
	// upstream has prompt caching.
	CacheControl Raw
}

// Message is one turn of the conversation.
type Message struct {
	Role    Role
	Content []Block
}

// Tool is a function the model may call.
type Tool struct {
	Name, Description string
	// Schema is the JSON schema of its input.
	Schema       Raw
	CacheControl Raw
}

// ToolChoiceMode says how the model may use tools.
type ToolChoiceMode uint8

// The tool choice modes.
const (
	ToolAuto  ToolChoiceMode = iota
	ToolAny                  // some tool must be called
	ToolNone                 // no tool may be called
	ToolNamed                // the named tool must be called
)

// ToolChoice is how the model may use tools.
type ToolChoice struct {
	Mode ToolChoiceMode
	Name string
	// DisableParallel allows at most one tool call per turn.
	DisableParallel bool
	// Set says the client chose; otherwise the upstream's default holds.
	Set bool
}

// Request is a model call in the IR.
type Request struct {
	Model    string
	System   []Block
	Messages []Message
	// MaxTokens bounds the output; 0 when the client set none.
	MaxTokens   int64
	Temperature *float64
	TopP        *float64
	TopK        *int64
	Stop        []string
	Stream      bool
	Tools       []Tool
	ToolChoice  ToolChoice
	// ThinkingBudget > 0 asks for reasoning with that many tokens at
	// most; ReasoningEffort is the OpenAI-style level (low, medium,
	// high), empty when unset.
	ThinkingBudget  int64
	ReasoningEffort string
	// User identifies the end user to the provider, for abuse tracking.
	User string
	// N is how many alternative answers the client asked for (0 or 1:
	// one); Logprobs and TopLogprobs ask for token log probabilities;
	// ResponseFormat constrains the output. Upstreams that cannot honour
	// them refuse the request (strict over lossy).
	N           int64
	Logprobs    bool
	TopLogprobs int64
	// ResponseFormat is the client's response_format, nil when none or
	// plain text.
	ResponseFormat *ResponseFormat
}

// ResponseFormat constrains an answer to JSON.
type ResponseFormat struct {
	// Type is json_object or json_schema.
	Type string
	// Name, Schema and Strict of a json_schema format.
	Name   string
	Schema Raw
	Strict bool
}

// StopReason is why the model stopped.
type StopReason uint8

// The stop reasons.
const (
	StopUnknown StopReason = iota
	StopEnd                // the model finished its turn
	StopMaxTokens
	StopSequence
	StopToolUse
	StopRefusal
	StopPause // the provider paused a long turn (Anthropic pause_turn)
)

// Response is a whole answer in the IR.
type Response struct {
	ID, Model    string
	Content      []Block
	StopReason   StopReason
	StopSequence string
	Usage        Usage
}

// EventKind is the kind of a stream event.
type EventKind uint8

// The stream events, Anthropic's grammar: one MessageStart, then for each
// block a BlockStart, deltas and a BlockStop with increasing indices, then
// MessageDelta (stop reason, usage) and MessageStop.
const (
	EventMessageStart EventKind = iota + 1
	EventBlockStart
	EventBlockDelta
	EventBlockStop
	EventMessageDelta
	EventMessageStop
)

// DeltaType is the kind of a block delta.
type DeltaType uint8

// The delta types.
const (
	DeltaText DeltaType = iota + 1
	DeltaInputJSON
	DeltaThinking
	DeltaSignature
)

// Event is one stream event. Its strings may point into the decoder's
// buffers: an encoder uses them before the next event is decoded.
type Event struct {
	Kind EventKind
	// Index is the block's index for block events.
	Index int
	// Block is the started block (type, and ID and Name of a tool use;
	// no content) for EventBlockStart.
	Block Block
	// Delta and Text for EventBlockDelta: the text, the partial JSON of
	// a tool's input, the reasoning, or the signature.
	Delta DeltaType
	Text  string
	// ID and Model for EventMessageStart.
	ID, Model string
	// StopReason and StopSequence for EventMessageDelta.
	StopReason   StopReason
	StopSequence string
	// Usage so far, cumulative, for EventMessageStart and
	// EventMessageDelta.
	Usage Usage
}
