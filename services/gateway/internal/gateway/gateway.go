// Package gateway is the data plane's domain: a Call, the fixed sequence of
// gates it passes, the attempt at a provider with its commit point, the
// relay of the answer, and the record it leaves. It consumes small
// interfaces (keys, routes, usage, the renderer of refusals) and the wire
// codecs; it knows nothing of how endpoints are mounted.
//
// Nothing on the request path waits on another service, takes a lock or
// starts a goroutine: keys and routes are read from atomically swapped
// snapshots, bodies are read into pooled buffers and only the members the
// gates need are parsed, streams are relayed event by event in the
// handler's goroutine, and usage records go to an asynchronous publisher.
package gateway

import (
	"context"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/moat-ai/moat/libs/authn"
	gatewayv1 "github.com/moat-ai/moat/proto/gen/go/moat/gateway/v1"
	identityv1 "github.com/moat-ai/moat/proto/gen/go/moat/identity/v1"
	"github.com/moat-ai/moat/services/gateway/internal/snapshot"
	"github.com/moat-ai/moat/services/gateway/internal/wire"
)

// Authenticator verifies an API key; *authn.Index is one.
type Authenticator interface {
	Authenticate(key string, now time.Time) (authn.Principal, error)
}

// Routes returns the configuration in force; *snapshot.Store is one.
type Routes interface {
	Load() *snapshot.Snapshot
}

// UsageRecorder takes a request's usage record without blocking;
// *usage.Publisher is one. A request claims a place (Reserve) before it is
// served, records into it, then releases the claim, so that no served
// request's record is ever dropped for want of room.
type UsageRecorder interface {
	Reserve() bool
	Record(ctx context.Context, id uuid.UUID, msg *gatewayv1.UsageRecorded) bool
	Release()
}

// Renderer renders refusals in a client API's own error shape: as a whole
// response before anything was sent, and as a terminal stream event after
// a stream has started. Package httpapi is the one implementation.
type Renderer interface {
	Refuse(w http.ResponseWriter, api wire.API, r *Refusal)
	AppendStreamError(dst []byte, api wire.API, r *Refusal) []byte
}

// Options configures a Gateway.
type Options struct {
	Keys     Authenticator
	Routes   Routes
	Usage    UsageRecorder
	Renderer Renderer
	// Transport sends requests to providers; NewTransport builds the
	// shared, pooled one. Redirects are never followed: a RoundTripper
	// does not follow them.
	Transport http.RoundTripper
	// IdleTimeout bounds the silence of a provider once its response has
	// started (between two reads of the body); 0 means no bound.
	IdleTimeout time.Duration
	// MaxInFlight bounds the calls served at once; beyond it calls are
	// shed with 503 and Retry-After. 0 means no bound.
	MaxInFlight int
	// Meter registers the gateway's metrics; nil means none.
	Meter metric.MeterProvider
	Log   *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Gateway runs calls through the gates. It is safe for concurrent use.
type Gateway struct {
	o        Options
	inFlight atomic.Int64
	// dropped counts translated calls that dropped request members, by
	// client and upstream API.
	dropped metric.Int64Counter
}

// New returns a Gateway.
func New(o Options) *Gateway {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Meter == nil {
		o.Meter = noop.NewMeterProvider()
	}
	g := &Gateway{o: o}
	var err error
	g.dropped, err = o.Meter.Meter("github.com/moat-ai/moat/services/gateway/internal/gateway").Int64Counter(
		"moat_gateway_dropped_parameters_total",
		metric.WithDescription("Translated calls that dropped request members the upstream's format has no place for (listed in the Moat-Dropped-Parameters header)."))
	if err != nil {
		// Only an invalid instrument name fails, and this one is valid.
		g.dropped, _ = noop.NewMeterProvider().Meter("").Int64Counter("")
	}
	return g
}

// Now is the gateway's clock.
func (g *Gateway) Now() time.Time { return g.o.Now() }

// Serve runs c through the gates and, when none refuses, calls the
// provider and relays its answer to w. The order of the gates is the
// product's: it is written here once, as a sequence.
func (g *Gateway) Serve(w http.ResponseWriter, r *http.Request, c *Call) {
	c.renderer = g.o.Renderer
	d := g.parse(c) // 400 shape
	if d == nil {
		d = g.authenticate(c) // 401 / 403
	}
	if d == nil {
		d = g.route(c) // 404 model_not_found / 403 model_not_allowed
	}
	billable := c.API.Billable()
	if d == nil && billable {
		d = g.reserveRecord() // 503: no room to record the usage
	}
	if d != nil {
		g.deny(w, c, d)
		return
	}
	// From here on the call reached a provider's route: whatever happens,
	// a billable call is recorded.
	g.call(w, r, c)
	if billable {
		g.settle(r.Context(), c)
	}
}

// Enter admits a call into the bounded set served at once, or sheds it:
// under overload the excess is refused at once, before its body is read,
// instead of queueing until memory runs out. Every admitted call must
// Leave.
func (g *Gateway) Enter() *Refusal {
	n := g.inFlight.Add(1)
	if g.o.MaxInFlight > 0 && n > int64(g.o.MaxInFlight) {
		g.inFlight.Add(-1)
		return &Refusal{Status: http.StatusServiceUnavailable, Type: TypeOverloaded, Code: CodeOverloaded, Gate: GateLoad,
			RetryAfter: time.Second, Message: "The gateway is serving as many requests as it may; retry shortly."}
	}
	return nil
}

// Leave ends a call admitted by Enter.
func (g *Gateway) Leave() { g.inFlight.Add(-1) }

// reserveRecord claims the place of the call's usage record.
func (g *Gateway) reserveRecord() *Refusal {
	if g.o.Usage.Reserve() {
		return nil
	}
	return &Refusal{Status: http.StatusServiceUnavailable, Type: TypeOverloaded, Code: CodeOverloaded, Gate: GateLoad,
		RetryAfter: time.Second, Message: "The gateway cannot record usage right now (its event queue is full); retry shortly."}
}

// deny answers a refused call. Refusals before forwarding record no usage.
func (g *Gateway) deny(w http.ResponseWriter, c *Call, d *Refusal) { c.refuse(w, d) }

// authenticate checks the API key: a project key passes; a missing or
// unknown key gets 401, and any other key (a platform admin's) 403.
func (g *Gateway) authenticate(c *Call) *Refusal {
	if c.Key == "" {
		return &Refusal{Status: http.StatusUnauthorized, Type: TypeAuthentication, Code: CodeInvalidAPIKey, Gate: GateAuth,
			Message: "You didn't provide an API key. Send it as " + c.keyHint() + "."}
	}
	p, err := g.o.Keys.Authenticate(c.Key, c.Start)
	if err != nil {
		// Never echo the key, not even masked.
		return &Refusal{Status: http.StatusUnauthorized, Type: TypeAuthentication, Code: CodeInvalidAPIKey, Gate: GateAuth,
			Message: "Incorrect API key provided: it is unknown, revoked or expired."}
	}
	if p.Role != identityv1.KeyIndexEntry_ROLE_PROJECT || p.Project == "" {
		return &Refusal{Status: http.StatusForbidden, Type: TypePermission, Code: CodePermissionDenied, Gate: GateAuth,
			Message: "This key cannot call models: the data plane takes project keys."}
	}
	c.principal = p
	return nil
}

// route resolves the model to the project's route and checks that the key
// may call it, and that the route's provider can serve the client's API.
func (g *Gateway) route(c *Call) *Refusal {
	rt, ok := g.o.Routes.Load().Route(c.principal.Project, c.Model)
	if !ok {
		return &Refusal{Status: http.StatusNotFound, Type: TypeInvalidRequest, Code: CodeModelNotFound, Param: "model", Gate: GateRoute,
			Message: "The model `" + Truncate(c.Model, 128) + "` does not exist or you do not have access to it."}
	}
	if !c.principal.MayUseModel(rt.Model) {
		return &Refusal{Status: http.StatusForbidden, Type: TypeInvalidRequest, Code: CodeModelNotAllowed, Param: "model", Gate: GateRoute,
			Message: "This API key may not call the model `" + Truncate(c.Model, 128) + "`."}
	}
	c.route = rt
	return nil
}

// Models returns the routes of the key's project that the key may call,
// or a refusal of the key.
func (g *Gateway) Models(c *Call) ([]*snapshot.Route, *Refusal) {
	if d := g.authenticate(c); d != nil {
		return nil, d
	}
	all := g.o.Routes.Load().Routes(c.principal.Project)
	out := make([]*snapshot.Route, 0, len(all))
	for _, rt := range all {
		if c.principal.MayUseModel(rt.Model) {
			out = append(out, rt)
		}
	}
	return out, nil
}
