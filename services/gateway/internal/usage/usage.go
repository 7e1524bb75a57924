// Package usage publishes the gateway's UsageRecorded events to JetStream
// off the request path: a request hands its record to a bounded queue and
// moves on. A fixed set of publisher goroutines send the records in
// batches: one takes what is queued, up to a bound (after a short linger
// when little is), publishes it all asynchronously and then collects the
// acks, so that a batch costs one write and a few wakeups instead of a
// round trip per event. An event that fails or is not acknowledged in time
// is sent again after a backoff under the same event id, so the stream
// (and billing) drop duplicates. Publishers × BatchSize bounds the
// publishes awaiting an ack.
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
	"github.com/nats-io/nats.go"
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
	// DefaultBatchSize is large enough that a burst is sent in a few
	// batches, and small enough that the default publishers keep far fewer
	// than the client library's 4000 publishes pending.
	DefaultBatchSize = 256
	// DefaultLinger turns a steady 1000 events/s into batches of about
	// five, which more than halves the CPU publishing costs per event, at
	// the price of usage events reaching the stream up to 5ms later.
	DefaultLinger = 5 * time.Millisecond
)

// Retry backoff of a batch's failed events: the first retries are quick
// (an ack lost in a reconnect), later ones settle at a pace that does not
// hammer a NATS server that is down.
const (
	minBackoff = 50 * time.Millisecond
	maxBackoff = 2 * time.Second
	// ackTimeout bounds the wait for a batch's acks; an event not acked
	// by then is sent again.
	ackTimeout = 5 * time.Second
)

// Options tunes a Publisher.
type Options struct {
	// QueueSize bounds the records waiting to be published.
	QueueSize int
	// Publishers is the number of publisher goroutines.
	Publishers int
	// BatchSize bounds the events one publisher goroutine sends before it
	// waits for their acks, so Publishers × BatchSize bounds the publishes
	// awaiting an ack.
	BatchSize int
	// Linger is how long a publisher goroutine that finds fewer records
	// queued than a batch waits for more before sending: every batch
	// costs wakeups and a write and read on the connection, and at a
	// steady rate without a linger most batches would hold one event.
	// Zero means DefaultLinger, a negative value no linger.
	Linger time.Duration
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

func (o Options) withDefaults() Options {
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultQueueSize
	}
	if o.Publishers <= 0 {
		o.Publishers = DefaultPublishers
	}
	if o.BatchSize <= 0 {
		o.BatchSize = DefaultBatchSize
	}
	if o.Linger == 0 {
		o.Linger = DefaultLinger
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return o
}

// JetStreamOptions returns the options for the JetStream handle that New
// is given with opts, which should be the publisher's own. They make the
// client library fail and forget a publish whose ack never comes (without
// a timeout it stays pending for good, and enough of those would stall
// every later publish), and cap its pending publishes at what the
// publisher may have in flight.
func JetStreamOptions(opts Options) []jetstream.JetStreamOpt {
	opts = opts.withDefaults()
	return []jetstream.JetStreamOpt{
		jetstream.WithPublishAsyncTimeout(ackTimeout),
		jetstream.WithPublishAsyncMaxPending(opts.Publishers * opts.BatchSize),
	}
}

type item struct {
	id   uuid.UUID
	msg  *gatewayv1.UsageRecorded
	span trace.SpanContext
}

// outgoing is an event a publisher goroutine holds until JetStream has
// acknowledged it. It is encoded once, so every attempt sends the same id
// and bytes.
type outgoing struct {
	ev       events.Event
	id       string // ev.ID as text: the Nats-Msg-Id
	span     trace.SpanContext
	attempts int
	ack      jetstream.PubAckFuture
	err      error // of the last attempt; nil once acknowledged
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
	// collecting is held by the publisher goroutine that is waiting for
	// records, so that the records arriving while it lingers all go to
	// its batch instead of one to each idle goroutine.
	collecting sync.Mutex
	// reserved counts the places claimed by requests being served, so
	// that reserved + len(queue) never exceeds the queue's capacity and a
	// served request's record always finds its place (see Reserve).
	reserved atomic.Int64

	published, dropped, retries metric.Int64Counter
}

// New returns a Publisher sending to js, ideally a handle made with
// JetStreamOptions. Start it with Run.
func New(js jetstream.JetStream, opts Options) (*Publisher, error) {
	opts = opts.withDefaults()
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

// Reserve claims a place in the queue for the record of a request about
// to be served, and reports false when every place is taken or claimed:
// the gateway then sheds the request (503) rather than serve one whose
// record it could not keep. Call Release after the request's Record (or
// when it records nothing).
func (p *Publisher) Reserve() bool {
	if p.reserved.Add(1)+int64(len(p.queue)) > int64(cap(p.queue)) {
		p.reserved.Add(-1)
		return false
	}
	return true
}

// Release returns a claim of Reserve.
func (p *Publisher) Release() { p.reserved.Add(-1) }

// Record queues msg for publishing as event id (the request id), with the
// trace of ctx. It never blocks; a record made under a claim of Reserve
// always finds its place while the publisher runs. When the queue is full
// (a record without a claim) or the publisher has stopped, it drops the
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

// publishLoop sends batches until ctx ends, then until the queue is empty
// or drainCtx ends. What it still holds when drainCtx ends is dropped.
func (p *Publisher) publishLoop(ctx, drainCtx context.Context) {
	batch := make([]outgoing, 0, p.opts.BatchSize)
	// One timer serves the linger, the ack deadline and the backoff,
	// which never overlap.
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	wait := minBackoff
	for failedRounds := 0; ; {
		if drainCtx.Err() != nil {
			p.giveUp(batch, drainCtx.Err())
			return
		}
		batch = p.fill(ctx, timer, batch)
		if len(batch) == 0 {
			if ctx.Err() != nil {
				return
			}
			continue // the records taken did not encode
		}
		batch = p.send(drainCtx, timer, batch)
		if len(batch) == 0 {
			wait, failedRounds = minBackoff, 0
			continue
		}
		if drainCtx.Err() != nil {
			continue
		}
		p.retries.Add(context.Background(), int64(len(batch)))
		failedRounds++
		if failedRounds == 1 || failedRounds%20 == 0 {
			p.opts.Log.Warn("publish usage events; retrying", "count", len(batch),
				"request_id", batch[0].id, "attempt", batch[0].attempts, "err", batch[0].err)
		}
		timer.Reset(wait/2 + rand.N(wait/2+1)) //nolint:gosec // jitter needs no secrecy
		select {
		case <-drainCtx.Done():
			timer.Stop()
		case <-timer.C:
		}
		wait = min(wait*2, maxBackoff)
	}
}

// fill tops batch up to the batch size with what is queued. Only an empty
// batch waits, and only while ctx lasts: for a first record, then for the
// linger unless a batch is queued already. A batch of events to retry is
// topped up with what is queued at once.
func (p *Publisher) fill(ctx context.Context, timer *time.Timer, batch []outgoing) []outgoing {
	if len(batch) == 0 {
		p.collecting.Lock()
		defer p.collecting.Unlock()
		select {
		case it := <-p.queue:
			batch = p.add(batch, it)
		case <-ctx.Done():
		}
		if p.opts.Linger > 0 && ctx.Err() == nil && len(p.queue) < p.opts.BatchSize-1 {
			timer.Reset(p.opts.Linger)
			select {
			case <-timer.C:
			case <-ctx.Done():
				timer.Stop()
			}
		}
	}
	for len(batch) < p.opts.BatchSize {
		select {
		case it := <-p.queue:
			batch = p.add(batch, it)
		default:
			return batch
		}
	}
	return batch
}

// add encodes it and appends it to batch; a record that does not encode is
// dropped.
func (p *Publisher) add(batch []outgoing, it item) []outgoing {
	ev, err := events.New(Source, Subject, it.msg.GetProject(), it.msg)
	if err != nil {
		p.opts.Log.Error("encode usage event", "request_id", it.id.String(), "err", err)
		p.dropped.Add(context.Background(), 1)
		return batch
	}
	ev.ID = it.id
	return append(batch, outgoing{ev: ev, id: it.id.String(), span: it.span})
}

// send publishes every event of batch without waiting, then waits for
// their acks until the ack timeout or drainCtx ends. It counts the
// acknowledged events and returns the others, in batch's array.
func (p *Publisher) send(drainCtx context.Context, timer *time.Timer, batch []outgoing) []outgoing {
	for i := range batch {
		o := &batch[i]
		o.attempts++
		o.ack, o.err = p.js.PublishMsgAsync(p.message(o), jetstream.WithMsgID(o.id))
	}
	timer.Reset(ackTimeout)
	var late error // why the remaining acks are no longer awaited
	for i := range batch {
		o := &batch[i]
		if o.err != nil {
			continue
		}
		// Most acks are in by now: looking at Ok alone first spares the
		// error channel that Err would make. Each channel yields its
		// result once.
		select {
		case <-o.ack.Ok():
			continue
		default:
		}
		if late == nil {
			select {
			case <-o.ack.Ok():
				continue
			case o.err = <-o.ack.Err():
				continue
			case <-timer.C:
				late = jetstream.ErrAsyncPublishTimeout
			case <-drainCtx.Done():
				late = drainCtx.Err()
			}
		}
		select {
		case <-o.ack.Ok():
		case o.err = <-o.ack.Err():
		default:
			o.err = late
		}
	}
	timer.Stop()

	failed := batch[:0]
	for _, o := range batch {
		if o.err != nil {
			o.ack = nil
			failed = append(failed, o)
		}
	}
	if n := len(batch) - len(failed); n > 0 {
		p.published.Add(context.Background(), int64(n))
	}
	clear(batch[len(failed):]) // let the sent events go
	return failed
}

// message renders o for one attempt. Each attempt gets its own message: a
// future given up on may still hold the previous one.
func (p *Publisher) message(o *outgoing) *nats.Msg {
	msg := events.Message(o.ev)
	if p.opts.Propagator != nil && o.span.IsValid() {
		ctx := trace.ContextWithRemoteSpanContext(context.Background(), o.span)
		p.opts.Propagator.Inject(ctx, propagation.HeaderCarrier(msg.Header))
	}
	return msg
}

// giveUp drops the events of batch, which shutdown left no time to publish.
func (p *Publisher) giveUp(batch []outgoing, err error) {
	if len(batch) == 0 {
		return
	}
	p.dropped.Add(context.Background(), int64(len(batch)))
	o := batch[0]
	p.opts.Log.Error("usage events not published before shutdown", "count", len(batch),
		"request_id", o.id, "attempts", o.attempts, "err", errors.Join(o.err, err))
}
