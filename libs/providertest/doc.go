// Package providertest is a model provider for tests and benchmarks: an
// http.Handler that speaks the wire formats of every provider the gateway
// calls (OpenAI, Azure OpenAI, Anthropic, Gemini on AI Studio and Vertex,
// Claude on Vertex, Bedrock Converse and InvokeModel) with deterministic
// answers, so that forwarding, translation, usage accounting, retries and
// timeouts can be checked without a real model. This comment is the
// authoritative description of what it serves.
//
// # Endpoints
//
// OpenAI, authenticated by `Authorization: Bearer <Credential>` (401
// invalid_api_key otherwise):
//
//   - POST /v1/chat/completions: a chat.completion with `usage`, or with
//     `"stream": true` an SSE stream of `data: {chunk}` events ending with
//     `data: [DONE]`. The first content chunk carries the role. With
//     `stream_options.include_usage` every chunk carries `"usage": null`
//     and a last chunk with empty choices carries the usage, as OpenAI
//     does. max_completion_tokens (else max_tokens) limits the text.
//   - POST /v1/completions (legacy): a text_completion with one choice
//     whatever the number of prompts, and its stream, same framing;
//     max_tokens limits the text (an absent one does not).
//   - POST /v1/embeddings: `input` a string, an array of strings, an array
//     of token ids or an array of arrays of them (at most 2048); one
//     vector per input, of `dimensions` values (1 to 4096; default
//     Config.EmbeddingDimensions) given by Embedding, as floats or with
//     `encoding_format: "base64"` as EmbeddingBase64 (little-endian
//     float32). usage is {prompt_tokens, total_tokens}.
//   - POST /v1/responses: the Responses API. Output items are a reasoning
//     item {id, type, summary: []} first when reasoning tokens are set,
//     then a message with one output_text part, or function_call items
//     instead of the message. status is "incomplete" with
//     incomplete_details.reason "max_output_tokens" when that limit cut
//     the text. usage is {input_tokens, input_tokens_details.cached_tokens,
//     output_tokens, output_tokens_details.reasoning_tokens, total_tokens}.
//     Streamed: `event: <type>` + `data: {...}` events, each with `type`
//     and a `sequence_number` from 0: response.created,
//     response.in_progress, then per item response.output_item.added,
//     (message) response.content_part.added, response.output_text.delta...,
//     response.output_text.done, response.content_part.done, (function
//     call) response.function_call_arguments.delta...,
//     response.function_call_arguments.done, then
//     response.output_item.done; last response.completed (or
//     response.incomplete). No [DONE].
//   - GET /v1/models: Config.Model in the OpenAI list format.
//
// Azure OpenAI, authenticated by an `api-key` header or by `Authorization:
// Bearer` (an Entra ID token), either equal to the Credential (401 in
// Azure's shape otherwise); bodies, answers and errors are OpenAI's:
//
//   - POST /openai/deployments/{deployment}/chat/completions,
//     .../completions and .../embeddings, and POST /openai/responses, all
//     requiring ?api-version= (400 MissingApiVersionParameter). The
//     deployment is reported as the model; the body needs none.
//   - POST /openai/v1/chat/completions, /openai/v1/completions,
//     /openai/v1/embeddings, /openai/v1/responses and GET
//     /openai/v1/models: Azure's v1 API, with the model in the body.
//
// Anthropic Messages, authenticated by `x-api-key` (401
// authentication_error otherwise):
//
//   - POST /v1/messages, requiring the `anthropic-version` header, `model`
//     and `max_tokens` (400 invalid_request_error without). The answer is
//     {id, type: "message", role, model, content, stop_reason ("end_turn",
//     "tool_use" or "max_tokens"), stop_sequence: null, usage}, usage being
//     {input_tokens, cache_creation_input_tokens, cache_read_input_tokens,
//     output_tokens} where input_tokens excludes the cached and
//     cache-write tokens. With `thinking.type` "enabled" (or "adaptive")
//     a thinking block {thinking, signature} comes before the text or the
//     tool_use blocks. Streamed (`"stream": true`): `event:` + `data:`
//     events message_start (usage with the input counts and output_tokens
//     1), ping, per block content_block_start, content_block_delta
//     (text_delta, thinking_delta then one signature_delta,
//     input_json_delta), content_block_stop, with indices from 0, then
//     message_delta (stop_reason, usage.output_tokens: the whole
//     completion) and message_stop.
//   - POST /v1/messages/count_tokens: {"input_tokens": N}, N the prompt
//     tokens (cache parts included); anthropic-version and model required.
//
// Gemini, on AI Studio authenticated by `x-goog-api-key` or the `key` query
// parameter (403 PERMISSION_DENIED without, 400 INVALID_ARGUMENT with a
// wrong one), on Vertex AI by `Authorization: Bearer` (401
// UNAUTHENTICATED):
//
//   - POST /v1beta/models/{model}:generateContent (also /v1/models/...) and
//     POST /v1/projects/{p}/locations/{l}/publishers/google/models/{model}:generateContent
//     (also /v1beta1/...): {candidates: [{content: {role: "model", parts},
//     finishReason, index: 0}], usageMetadata, modelVersion, responseId}.
//     Parts are a text part, or one functionCall part {name, args} per tool
//     call, preceded with generationConfig.thinkingConfig.includeThoughts
//     by a thought part {text, thought: true, thoughtSignature}; with
//     reasoning tokens set the first functionCall part carries a
//     thoughtSignature, Signature(<its name>). finishReason is STOP, or
//     MAX_TOKENS when generationConfig.maxOutputTokens cut the text.
//     usageMetadata is {promptTokenCount (cached included),
//     candidatesTokenCount (thoughts excluded), totalTokenCount,
//     cachedContentTokenCount, thoughtsTokenCount}, zero cache and thought
//     counts omitted. Both the lowerCamelCase and the snake_case names of
//     systemInstruction and generationConfig are read.
//   - ...:streamGenerateContent: with ?alt=sse, SSE `data:
//     {GenerateContentResponse}` events separated by CRLF as Google sends
//     them; without, one JSON array written element by element. Each chunk
//     holds one part (a thought word, a whole functionCall, a text word);
//     a last chunk with an empty text part carries finishReason and
//     usageMetadata, which no other chunk has.
//
// Claude on Vertex AI, authenticated as Vertex:
//
//   - POST /v1/projects/{p}/locations/{l}/publishers/anthropic/models/{model}:rawPredict
//     and :streamRawPredict: the Messages body with `anthropic_version` in
//     it instead of the header and the model in the path; answers and
//     errors as Anthropic's. streamRawPredict always streams, rawPredict
//     when the body says `"stream": true`.
//
// Bedrock, requiring an Authorization header when a Credential is set
// (403 MissingAuthenticationTokenException without): a SigV4 signature
// (`AWS4-HMAC-SHA256 Credential=...`), accepted without verification since
// the mock holds no AWS secret (tests check what was signed with
// ParseSigV4 on the recorded request), or a Bedrock API key as a Bearer,
// which must be the Credential (403 UnrecognizedClientException). The
// model id is the path segment, unescaped (an ARN's slash comes as %2F):
//
//   - POST /model/{modelId}/converse: {output: {message: {role, content}},
//     stopReason ("end_turn", "tool_use", "max_tokens"), usage: {inputTokens
//     (cached and cache-write excluded), outputTokens, totalTokens (all of
//     them), cacheReadInputTokens, cacheWriteInputTokens (zero ones
//     omitted)}, metrics: {latencyMs}}. Content blocks are {text},
//     {toolUse: {toolUseId, name, input}}, and first a {reasoningContent:
//     {reasoningText: {text, signature}}} block when
//     additionalModelRequestFields.thinking.type is "enabled" (or
//     "adaptive") or reasoning tokens are set. inferenceConfig.maxTokens
//     limits the text.
//   - POST /model/{modelId}/converse-stream: an AWS eventstream
//     (application/vnd.amazon.eventstream; headers :event-type,
//     :content-type, :message-type "event"), events messageStart,
//     contentBlockStart (for tool use only, as Bedrock sends it),
//     contentBlockDelta ({text}, {toolUse: {input}}, {reasoningContent:
//     {text}} then one {reasoningContent: {signature}}), contentBlockStop,
//     messageStop {stopReason}, metadata {usage, metrics}. Every payload
//     carries Bedrock's padding member `p`.
//   - POST /model/{modelId}/invoke: the Anthropic Messages body with
//     `anthropic_version` (400 ValidationException without) and the model
//     in the path; as Bedrock does, a body holding `model` or `stream`
//     ("extraneous key"), or an `anthropic_beta` that is not a list of
//     strings, is a 400 ValidationException. The answer is Anthropic's,
//     with the counts also in the X-Amzn-Bedrock-Input-Token-Count,
//     -Output-Token-Count, -Cache-Read-Input-Token-Count and
//     -Cache-Write-Input-Token-Count headers.
//   - POST /model/{modelId}/invoke-with-response-stream: the same body
//     and refusals; the Anthropic
//     events (without pings) as eventstream `chunk` events whose payload
//     is {"bytes": <base64 of the event's JSON>, "p": ...}; message_stop
//     carries amazon-bedrock-invocationMetrics {inputTokenCount,
//     outputTokenCount, invocationLatency, firstByteLatency,
//     cacheReadInputTokenCount, cacheWriteInputTokenCount}.
//
// Bedrock answers carry X-Amzn-RequestId; its errors are {"message"} with
// the type in the X-Amzn-ErrorType header.
//
// # Tokens
//
// Token counts are a documented function of the request, so tests can
// predict them:
//
//   - The prompt tokens are the number of whitespace-separated words
//     (PromptTokens) of every text the request holds: OpenAI chat message
//     contents (a string, or the `text` of each part); a legacy prompt's
//     strings and suffix, one token per id of a token-array prompt, and
//     the same for embedding inputs; Responses instructions, a string
//     input, each input item's content (string or parts' text) and a
//     function_call_output's output; Anthropic system and message contents
//     (strings, text blocks, the text inside tool_result blocks); Gemini
//     text parts of systemInstruction and contents; Converse text blocks
//     of system and messages, and inside toolResult blocks. Tool
//     definitions, tool-call arguments and images count nothing.
//   - The completion tokens are the chunk count N (Config.Chunks or
//     X-Mock-Chunks), or the request's token limit when that is lower, in
//     which case the text is cut there and the finish reason says so
//     ("length", "max_tokens", MAX_TOKENS, incomplete). The limit does not
//     apply to tool calls.
//   - The completion text is "tok1 tok2 ... tokN", one word per stream
//     chunk. A streamed word is followed by a space ("tok1 ", "tok2 "), so
//     a stream's text is the whole answer's plus a trailing space.
//   - Cached tokens C (X-Mock-Cached-Tokens) and cache-write tokens W
//     (X-Mock-Cache-Write-Tokens) are parts of the prompt tokens P, clamped
//     so that C ≤ P and C+W ≤ P. OpenAI and Gemini report P with C
//     included (cached_tokens, cachedContentTokenCount) and have no cache
//     writes; Anthropic and Bedrock report P−C−W as their input tokens,
//     with C and W beside.
//   - Reasoning tokens R (X-Mock-Reasoning-Tokens) are a part of the
//     completion tokens, clamped to them: OpenAI reports
//     completion_tokens_details.reasoning_tokens (Responses
//     output_tokens_details.reasoning_tokens), Gemini thoughtsTokenCount
//     with candidatesTokenCount N−R. Where a reasoning text is shown (see
//     the endpoints), it is "think1 ... thinkK" with K = max(R, 1), and
//     its signature is Signature(<the text as delivered>): the words
//     joined by spaces in a whole answer, each followed by a space in a
//     stream. The reasoning text adds nothing to the counts.
//   - OpenAI usage details (prompt_tokens_details,
//     completion_tokens_details) are present only when not zero.
//
// # Tool calls
//
// X-Mock-Tool-Call names a function, or several separated by commas for
// parallel calls; the answer then calls them instead of answering text
// (the legacy completions API ignores it). Call i (from 1) has arguments
// {"n":i}; a stream delivers them in two pieces, `{"n":` and `i}`, except
// Gemini, whose functionCall args come whole. Call ids come from the
// response counter: call_mock_<seq>_<i> (OpenAI; Responses items
// fc_mock_<seq>_<i>), toolu_mock_<seq>_<i> (Anthropic),
// tooluse_mock_<seq>_<i> (Bedrock). Finish reasons are "tool_calls",
// "tool_use", STOP.
//
// # Behaviour headers
//
// Behaviour is set by Config and can be overridden per request by headers
// (a header sets a value; it cannot switch off Config.ToolCalls or
// Config.StreamError); a malformed value is refused with a 400 in the
// API's error shape:
//
//   - X-Mock-Delay-Ms: the wait before the response headers.
//   - X-Mock-Ttft-Ms: the wait before a stream's first content event.
//   - X-Mock-Chunk-Delay-Ms: the wait between two content events.
//   - X-Mock-Chunks: N, 0 to 100000.
//   - X-Mock-Cached-Tokens, X-Mock-Cache-Write-Tokens,
//     X-Mock-Reasoning-Tokens: C, W and R above.
//   - X-Mock-Tool-Call: the functions to call.
//   - X-Mock-Error: an HTTP status from 400 to 599, answered after the
//     delay in the API's error shape: OpenAI {"error": {message, type,
//     param, code}} (429 rate_limit_exceeded, 5xx server_error); Anthropic
//     {"type": "error", "error": {type, message}} with 400
//     invalid_request_error, 401 authentication_error, 403
//     permission_error, 404 not_found_error, 413 request_too_large, 429
//     rate_limit_error, 500 api_error, 529 overloaded_error (other 4xx
//     invalid_request_error, other 5xx api_error); Gemini {"error": {code,
//     message, status}} with Google's canonical status names; Bedrock
//     {"message"} with X-Amzn-ErrorType ValidationException (400),
//     AccessDeniedException (403), ResourceNotFoundException (404),
//     ModelTimeoutException (408), ModelErrorException (424),
//     ThrottlingException (429), InternalServerException (500),
//     ServiceUnavailableException (503). A 429 carries Retry-After: 1.
//   - X-Mock-Stream-Error: K, the content events a stream delivers before
//     it breaks with the API's mid-stream error (status 200, headers
//     sent): OpenAI chat and completions `data: {"error": {..., "type":
//     "server_error"}}` and no [DONE]; Responses `event: error` {type,
//     code: "server_error", message, param, sequence_number}; Anthropic
//     `event: error` {"type": "error", "error": {"type":
//     "overloaded_error"}}; Gemini `data: {"error": {"code": 503, "status":
//     "UNAVAILABLE"}}`; Bedrock an eventstream exception message
//     (:message-type "exception", :exception-type
//     serviceUnavailableException). K = 0 makes the error the very first
//     event; a K at or beyond the content events breaks the stream after
//     the last of them, before the finish events. Content events are
//     those carrying a word of text or reasoning, a tool call's name or a
//     piece of its arguments; framing (message_start, pings, block starts
//     of text or thinking, signatures, stops) is not counted.
//     Non-streamed answers ignore it.
//
// Every wait honours the request's context, so a caller that hangs up
// ends the handler at once; Canceled counts those requests.
//
// # Recording and determinism
//
// Every request is recorded (method, path, escaped path, query, headers,
// body) whatever its outcome: LastRequest returns the latest, History the
// latest ones within bounds. Bodies are read up to 16 MiB (413 beyond).
// Ids come from one counter per Server (chatcmpl-mock-<seq>,
// cmpl-mock-<seq>, resp_mock_<seq>, msg_mock_<seq>, mock-response-<seq>,
// mock-request-<seq>), timestamps from Config.Now, and embeddings and
// signatures are functions of their input, so a test that pins Now and
// sends one request at a time gets byte-identical answers.
package providertest
