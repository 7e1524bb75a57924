package gateway

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/moat-ai/moat/libs/authn"
	gatewayv1 "github.com/moat-ai/moat/proto/gen/go/moat/gateway/v1"
	"github.com/moat-ai/moat/services/gateway/internal/ir"
	"github.com/moat-ai/moat/services/gateway/internal/snapshot"
	"github.com/moat-ai/moat/services/gateway/internal/wire"
	"github.com/moat-ai/moat/services/gateway/internal/wire/anthropic"
	"github.com/moat-ai/moat/services/gateway/internal/wire/converse"
	"github.com/moat-ai/moat/services/gateway/internal/wire/openaichat"
	"github.com/moat-ai/moat/services/gateway/internal/wire/openairesp"
)

// statusClientClosed is recorded for requests whose client went away
// before an answer (nginx's convention); it is never sent.
const statusClientClosed = 499

// Call is one client request as it moves through the gates. The endpoint
// fills the exported fields; the gates fill the rest.
type Call struct {
	// ID is the request's UUIDv7; Start when it arrived.
	ID    uuid.UUID
	Start time.Time
	// API is the wire API the client speaks.
	API wire.API
	// Body is the request body, whole (the endpoint enforced the size
	// limit). It is borrowed: valid for the duration of Serve.
	Body []byte
	// Key is the API key the client presented, empty when none.
	Key string
	// Header holds the client's request headers; only those the API
	// passes on natively (anthropic-version, anthropic-beta) are read.
	Header http.Header

	// Set by parse.
	Model  string
	Stream bool
	chat   openaichat.Request
	msgs   anthropic.Request
	resp   openairesp.Request

	// dropped lists the members a translated path dropped.
	dropped []string
	// names maps tool names for Bedrock (its names are shorter).
	names *converse.Names
	// upstreamErrorType is Bedrock's X-Amzn-ErrorType of a failed call.
	upstreamErrorType string

	renderer Renderer
	// countedByProvider marks a token count the provider made.
	countedByProvider bool
	principal         authn.Principal
	route             *snapshot.Route
	status            int
	usage             ir.Usage
}

// NewCall returns a call arriving at now.
func NewCall(api wire.API, now time.Time) *Call {
	return &Call{ID: NewRequestID(now), Start: now, API: api}
}

// parse validates the body in the client's API and reads what the gates
// need.
func (g *Gateway) parse(c *Call) *Refusal {
	var err error
	switch c.API {
	case wire.OpenAIChat:
		c.chat, err = openaichat.ParseRequest(c.Body)
		c.Model, c.Stream = c.chat.Model, c.chat.Stream
	case wire.OpenAICompletions:
		c.chat, err = openaichat.ParseCompletions(c.Body)
		c.Model, c.Stream = c.chat.Model, c.chat.Stream
	case wire.OpenAIEmbeddings:
		c.chat, err = openaichat.ParseEmbeddings(c.Body)
		c.Model = c.chat.Model
	case wire.Anthropic:
		c.msgs, err = anthropic.ParseRequest(c.Body)
		c.Model, c.Stream = c.msgs.Model, c.msgs.Stream
	case wire.AnthropicCountTokens:
		c.msgs, err = anthropic.ParseCountTokens(c.Body)
		c.Model = c.msgs.Model
	case wire.OpenAIResponses:
		c.resp, err = openairesp.ParseRequest(c.Body)
		c.Model, c.Stream = c.resp.Model, c.resp.Stream
	default:
		return &Refusal{Status: http.StatusNotFound, Type: TypeInvalidRequest, Code: CodeUnknownURL, Gate: GateShape, Message: "This API is not served."}
	}
	if err != nil {
		var re *wire.RequestError
		if !errors.As(err, &re) {
			re = openaichat.ErrMalformed
		}
		return BadRequest(re)
	}
	return nil
}

// refuse answers c with d in the client's format.
func (c *Call) refuse(w http.ResponseWriter, d *Refusal) {
	c.status = d.Status
	c.renderer.Refuse(w, c.API, d)
}

// keyHint says how the client's API presents a key.
func (c *Call) keyHint() string {
	if c.API.Anthropics() {
		return "`x-api-key: <key>` or `Authorization: Bearer <key>`"
	}
	return "`Authorization: Bearer <key>`"
}

// settle hands the usage of a routed call to the publisher.
func (g *Gateway) settle(ctx context.Context, c *Call) {
	p := c.principal
	if c.status >= 200 && c.status < 300 && !c.usage.Found {
		// The ledger entry will carry zero tokens: say so, rather than let
		// a provider that omits usage look free.
		g.o.Log.Warn("the provider reported no usage; recording zero tokens",
			"request_id", c.ID.String(), "provider", c.route.Provider.Name, "stream", c.Stream)
	}
	defer g.o.Usage.Release()
	g.o.Usage.Record(ctx, c.ID, &gatewayv1.UsageRecorded{
		RequestId:             c.ID.String(),
		Organization:          p.Organization,
		Project:               p.Project,
		KeyId:                 p.KeyID,
		Model:                 c.route.Model,
		UpstreamModel:         c.route.UpstreamModel,
		Provider:              c.route.Provider.Name,
		InputTokens:           c.usage.Input,
		CacheReadInputTokens:  c.usage.CacheRead,
		CacheWriteInputTokens: c.usage.CacheWrite,
		OutputTokens:          c.usage.Output,
		ReasoningTokens:       c.usage.Reasoning,
		UsageEstimated:        c.usage.Estimated,
		Latency:               durationpb.New(g.o.Now().Sub(c.Start)),
		HttpStatus:            int32(c.status), //nolint:gosec // an HTTP status fits
		Stream:                c.Stream,
		RequestTime:           timestamppb.New(c.Start),
	})
}
