// Package usage publishes the gateway's UsageRecorded events to JetStream
// off the request path: a request hands its record to a bounded queue and
// moves on; a fixed set of publisher goroutines sends each record with
// retries under the same event id (so the stream and billing drop
// duplicates), and the number of publishers bounds the acks in flight.
//
// When the queue is full the record is dropped and counted. A local,
// fsync'd spool that keeps them instead comes with a later change; until
// then moat_gateway_usage_dropped_total must stay at zero.
package usage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/moat-ai/moat/libs/events"
	gatewayv1 "github.com/moat-ai/moat/proto/gen/go/moat/gateway/v1"
)

// Subject is where usage events go, in the GATEWAY stream.
const Subject = "gateway.v1.usage.recorded"

// Source is the CloudEvents source of the gateway's events.
const Source = "moat/gateway"

// Defaults for the zero values of Options.
const (
	DefaultQueueSize  = 8192
	DefaultPublishers = 4
)

// Retry backoff of one event: the first retries are quick (an ack lost in
// a reconnect), later ones settle at a pace that does not hammer a NATS
// server that is down.
const (
	minBackoff     = 50 * time.Millisecond
	maxBackoff     = 2 * time.Second
	publishTimeout = 5 * time.Second
)

// Options tunes a Publisher.
type Options struct {
	// QueueSize bounds the records waiting to be published.
	QueueSize int
	// Publishers is the number of publisher goroutines, which is also the
	// most publishes awaiting an ack at once.
	Publishers int
	// Drain bounds how long Run keeps publishing queued records once its
	// context has ended.
	Drain time.Duration
	// Meter records the publisher's metrics; nil records none.
	Meter metric.MeterProvider
	// Propagator carries each request's trace into its event; nil sends
	// none.
	Propagator propagation.TextMapPropagator
	// Log reports publish failures; nil discards them.
	Log *slog.Logger
}

type item struct {
	id   uuid.UUID
	msg  *gatewayv1.UsageRecorded
	span trace.SpanContext
}

// Publisher is the asynchronous usage publisher. Record is safe for
// concurrent use and never blocks.
type Publisher struct {
	js    jetstream.JetStream
	opts  Options
	queue chan item
	// closed is set once the publishers have stopped: later records can
	// no longer be sent and are counted as dropped.
	closed atomic.Bool

	published, dropped, retries metric.Int64Counter
}

// New returns a Publisher sending to js. Start it with Run.
func New(js jetstream.JetStream, opts Options) (*Publisher, error) {
	if opts.QueueSize <= 0 {
		opts.QueueSize = DefaultQueueSize
	}
	if opts.Publishers <= 0 {
		opts.Publishers = DefaultPublishers
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	mp := opts.Meter
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	p := &Publisher{js: js, opts: opts, queue: make(chan item, opts.QueueSize)}
	meter := mp.Meter("github.com/moat-ai/moat/services/gateway/internal/usage")
	var err error
	if p.published, err = meter.Int64Counter("moat_gateway_usage_published_total",
		metric.WithDescription("Usage events acknowledged by JetStream.")); err != nil {
		return nil, fmt.Errorf("register usage metrics: %w", err)
	}
	if p.dropped, err = meter.Int64Counter("moat_gateway_usage_dropped_total",
		metric.WithDescription("Usage events lost because the queue was full or shutdown ran out of time.")); err != nil {
		return nil, fmt.Errorf("register usage metrics: %w", err)
	}
	if p.retries, err = meter.Int64Counter("moat_gateway_usage_publish_retries_total",
		metric.WithDescription("Failed usage publish attempts that were retried.")); err != nil {
		return nil, fmt.Errorf("register usage metrics: %w", err)
	}
	queued, err := meter.Int64ObservableGauge("moat_gateway_usage_queue_length",
		metric.WithDescription("Usage events waiting to be published."))
	if err != nil {
		return nil, fmt.Errorf("register usage metrics: %w", err)
	}
	if _, err := meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(queued, int64(len(p.queue)))
		return nil
	}, queued); err != nil {
		return nil, fmt.Errorf("register usage metrics: %w", err)
	}
	return p, nil
}

// Record queues msg for publishing as event id (the request id), with the
// trace of ctx. It never blocks: when the queue is full it drops the
// record, counts it and returns false.
func (p *Publisher) Record(ctx context.Context, id uuid.UUID, msg *gatewayv1.UsageRecorded) bool {
	if !p.closed.Load() {
		select {
		case p.queue <- item{id: id, msg: msg, span: trace.SpanContextFromContext(ctx)}:
			return true
		default:
		}
	}
	p.dropped.Add(context.Background(), 1)
	return false
}

// Run publishes queued records until ctx ends, then keeps publishing what
// is queued (and what requests still finishing add) for at most
// Options.Drain, and returns nil. Run it after the HTTP server has
// drained, or with a context that ends then, so that the last requests'
// records are in the queue.
func (p *Publisher) Run(ctx context.Context) error {
	drainCtx, cancelDrain := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelDrain()
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range p.opts.Publishers {
		wg.Go(func() { p.publishLoop(ctx, drainCtx) })
	}
	go func() {
		wg.Wait()
		close(done)
	}()

	select {
	case <-done:
	case <-ctx.Done():
		deadline := time.NewTimer(p.opts.Drain)
		select {
		case <-done:
		case <-deadline.C:
			cancelDrain()
			<-done
		}
		deadline.Stop()
	}
	p.closed.Store(true)
	if n := len(p.queue); n > 0 {
		p.dropped.Add(context.Background(), int64(n))
		p.opts.Log.Error("usage events not published before the drain deadline", "count", n)
	}
	return nil
}

// publishLoop takes records until ctx ends, then until the queue is empty
// or drainCtx ends.
func (p *Publisher) publishLoop(ctx, drainCtx context.Context) {
	for {
		select {
		case it := <-p.queue:
			if !p.publish(drainCtx, it) {
				p.dropped.Add(context.Background(), 1)
			}
			continue
		case <-ctx.Done():
		}
		// Draining: empty the queue, then stop.
		for {
			select {
			case it := <-p.queue:
				if !p.publish(drainCtx, it) {
					p.dropped.Add(context.Background(), 1)
				}
			default:
				return
			}
			if drainCtx.Err() != nil {
				return
			}
		}
	}
}

// publish sends one record, retrying with the same event id until it is
// acknowledged or ctx ends; it reports whether it was acknowledged.
func (p *Publisher) publish(ctx context.Context, it item) bool {
	ev, err := events.New(Source, Subject, it.msg.GetProject(), it.msg)
	if err != nil {
		p.opts.Log.Error("encode usage event", "request_id", it.id.String(), "err", err)
		return false
	}
	ev.ID = it.id
	tctx := ctx
	if it.span.IsValid() {
		tctx = trace.ContextWithRemoteSpanContext(ctx, it.span)
	}
	wait := minBackoff
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(tctx, publishTimeout)
		_, err := events.Publish(actx, p.js, p.opts.Propagator, ev)
		cancel()
		if err == nil {
			p.published.Add(context.Background(), 1)
			return true
		}
		if ctx.Err() != nil {
			p.opts.Log.Error("usage event not published before shutdown", "request_id", it.id.String(), "attempts", attempt, "err", err)
			return false
		}
		p.retries.Add(context.Background(), 1)
		if attempt == 1 || attempt%20 == 0 {
			p.opts.Log.Warn("publish usage event; retrying", "request_id", it.id.String(), "attempt", attempt, "err", err)
		}
		d := wait/2 + rand.N(wait/2+1) //nolint:gosec // jitter needs no secrecy
		select {
		case <-ctx.Done():
			p.opts.Log.Error("usage event not published before shutdown", "request_id", it.id.String(), "attempts", attempt, "err", errors.Join(err, ctx.Err()))
			return false
		case <-time.After(d):
		}
		wait = min(wait*2, maxBackoff)
	}
}
