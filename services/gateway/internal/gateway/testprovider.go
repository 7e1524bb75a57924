package gateway

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/moat-ai/moat/services/gateway/internal/egress"
	"github.com/moat-ai/moat/services/gateway/internal/ir"
	"github.com/moat-ai/moat/services/gateway/internal/provider"
	"github.com/moat-ai/moat/services/gateway/internal/wire"
	"github.com/moat-ai/moat/services/gateway/internal/wire/anthropic"
	"github.com/moat-ai/moat/services/gateway/internal/wire/converse"
	"github.com/moat-ai/moat/services/gateway/internal/wire/gemini"
	"github.com/moat-ai/moat/services/gateway/internal/wire/openaichat"
)

// testTimeout bounds a provider test, answer included.
const testTimeout = 20 * time.Second

// ErrorClass is what a failed provider test means.
type ErrorClass uint8

// The classes of failed tests.
const (
	TestOK ErrorClass = iota
	TestCredential
	TestRetryable
	TestRequest
	TestUnreachable
	TestTimeout
	TestBlocked
	TestConfiguration
	TestProtocol
)

// TestResult is the outcome of TestProvider. Message holds no secret and
// nothing of the provider's answer but its error type.
type TestResult struct {
	Class      ErrorClass
	Latency    time.Duration
	HTTPStatus int
	Message    string
	Model      string
	API        wire.API
}

// ErrNoProvider reports a provider the snapshot does not hold.
var ErrNoProvider = errors.New("no such provider")

// ErrNoModel reports a provider test without a model to call.
var ErrNoModel = errors.New("no model to test: no route uses this provider; name a model")

// TestProvider sends one minimal chat (one short user message, at most one
// output token) to the provider named name, as the gateway would for a
// client: the adapter's URL and authentication, the wire format it speaks
// for the model (translated from the IR), the shared egress-checked
// transport. model empty means the upstream model of the first route that
// uses the provider.
func (g *Gateway) TestProvider(ctx context.Context, name, model string) (TestResult, error) {
	snap := g.o.Routes.Load()
	p, ok := snap.Provider(name)
	if !ok {
		return TestResult{}, ErrNoProvider
	}
	if model == "" {
		model = snap.ModelOf(name)
	}
	if model == "" {
		return TestResult{}, ErrNoModel
	}
	res := TestResult{Model: model}
	if p.Unusable != "" {
		res.Class, res.Message = TestConfiguration, p.Unusable
		return res, nil
	}
	api, ok := p.UpstreamFor(wire.OpenAIChat, model)
	if !ok || api == wire.APIUnknown {
		res.Class, res.Message = TestConfiguration, "the provider serves no chat API"
		return res, nil
	}
	res.API = api
	r := &ir.Request{Model: model, MaxTokens: 1, Messages: []ir.Message{{Role: ir.RoleUser, Content: []ir.Block{{Type: ir.BlockText, Text: "ping"}}}}}
	var (
		body  []byte
		names *converse.Names
		err   error
	)
	switch api {
	case wire.OpenAIChat:
		body, err = openaichat.EncodeRequest(nil, r, model)
	case wire.Anthropic:
		body, err = anthropic.EncodeRequest(nil, r, model)
	case wire.Gemini:
		body, err = gemini.EncodeRequest(nil, r)
	case wire.Converse:
		body, names, err = converse.EncodeRequest(nil, r)
	}
	if err != nil {
		res.Class, res.Message = TestConfiguration, "the test request cannot be encoded for this provider"
		return res, nil
	}
	ctx, cancel := context.WithTimeout(ctx, testTimeout)
	defer cancel()
	req, err := p.NewRequest(ctx, provider.Call{API: api, Model: model, Body: body, RequestID: NewRequestID(g.o.Now()).String()})
	if err != nil {
		// NewRequest's errors name no secret (a token not ready yet, a
		// signing failure).
		res.Class, res.Message = TestConfiguration, err.Error()
		return res, nil
	}
	start := time.Now()
	resp, err := g.o.Transport.RoundTrip(req)
	if err != nil {
		res.Latency = time.Since(start)
		switch {
		case errors.Is(err, egress.ErrBlocked):
			res.Class, res.Message = TestBlocked, "the egress policy refuses the provider's address"
		case timedOut(ctx, err):
			res.Class, res.Message = TestTimeout, "the provider did not answer within "+testTimeout.String()
		default:
			res.Class, res.Message = TestUnreachable, "the provider could not be reached"
		}
		return res, nil
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	res.Latency, res.HTTPStatus = time.Since(start), resp.StatusCode
	if err != nil {
		res.Class, res.Message = TestUnreachable, "the provider's answer broke off"
		if timedOut(ctx, err) {
			res.Class, res.Message = TestTimeout, "the provider did not finish its answer in time"
		}
		return res, nil
	}
	switch p.Classify(resp.StatusCode) {
	case provider.Success:
		if err := decodeTestAnswer(api, b, names); err != nil {
			res.Class, res.Message = TestProtocol, "the provider answered 2xx with something the gateway cannot read"
		}
		return res, nil
	case provider.Credential:
		res.Class = TestCredential
	case provider.Retryable:
		res.Class = TestRetryable
	case provider.Redirect:
		res.Class = TestRequest
		res.Message = "the provider answered with a redirect, which the gateway does not follow"
		return res, nil
	default:
		res.Class = TestRequest
	}
	res.Message = "the provider answered " + http.StatusText(resp.StatusCode)
	if t := testErrorType(api, b, resp.Header.Get("X-Amzn-Errortype")); t != "" {
		res.Message += " (" + wire.Bound(t) + ")"
	}
	return res, nil
}

// decodeTestAnswer checks that a 2xx answer reads in its format.
func decodeTestAnswer(api wire.API, b []byte, names *converse.Names) error {
	var err error
	switch api {
	case wire.OpenAIChat:
		_, err = openaichat.DecodeResponse(b)
	case wire.Anthropic:
		_, err = anthropic.DecodeResponse(b)
	case wire.Gemini:
		_, err = gemini.DecodeResponse(b)
	case wire.Converse:
		_, err = converse.DecodeResponse(b, names)
	}
	return err
}

// testErrorType is the provider's own error type in a failed answer; the
// message is not kept (it may echo the request).
func testErrorType(api wire.API, b []byte, amzn string) string {
	var (
		e  ir.ProviderError
		ok bool
	)
	switch api {
	case wire.OpenAIChat:
		e, ok = openaichat.StreamError(b)
	case wire.Anthropic:
		e, ok = anthropic.DecodeError(b)
	case wire.Gemini:
		e, ok = gemini.DecodeError(b)
	case wire.Converse:
		e, ok = converse.DecodeError(b, amzn)
	}
	if !ok {
		return ""
	}
	return strings.TrimSpace(e.Type)
}
