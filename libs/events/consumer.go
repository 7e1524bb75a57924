package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// Handler applies one event. Redelivery is normal: a handler writes its
// effect together with MarkProcessed in one transaction and does nothing
// when the event was already processed.
//
// Returning nil acks the event. Returning an error wrapped by Permanent
// dead-letters it at once. Any other error redelivers it after a backoff,
// until MaxDeliver deliveries, after which it is dead-lettered too.
type Handler func(ctx context.Context, ev Event) error

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as one that no retry can fix (an undecodable or
// invalid event): the runner dead-letters the event instead of retrying.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err was marked by Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// ConsumerConfig describes a durable pull consumer.
type ConsumerConfig struct {
	// Stream is the stream to read, e.g. GATEWAY.
	Stream string
	// Durable is the consumer name, <service>-<purpose>, e.g. billing-ledger.
	Durable string
	// FilterSubjects select the events to receive.
	FilterSubjects []string
	// AckWait is how long JetStream waits for an ack before redelivering
	// (default 30s). The runner sends in-progress acks while a handler runs.
	AckWait time.Duration
	// MaxDeliver bounds deliveries of one event (default 10).
	MaxDeliver int
	// BackOff lists the redelivery delays after handler errors, by delivery
	// count; the last one repeats (default 1s, 5s, 30s, 1m).
	BackOff []time.Duration
	// MaxAckPending bounds events in flight; 1 gives strict ordering
	// (default 1000).
	MaxAckPending int
}

func (c *ConsumerConfig) defaults() {
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
	}
	if c.MaxDeliver <= 0 {
		c.MaxDeliver = 10
	}
	if len(c.BackOff) == 0 {
		c.BackOff = []time.Duration{time.Second, 5 * time.Second, 30 * time.Second, time.Minute}
	}
	if c.MaxAckPending <= 0 {
		c.MaxAckPending = 1000
	}
}

// Consumer runs a Handler over a durable pull consumer, with the
// explicit-ack policy of the package: ack after the handler's commit, nak
// with backoff on transient errors, term plus a dead_letters row for poison
// events.
type Consumer struct {
	JS      jetstream.JetStream
	Pool    *pgxpool.Pool // holds the dead_letters table
	Config  ConsumerConfig
	Handler Handler
	Log     *slog.Logger
	Meter   metric.MeterProvider
	Tracer  trace.TracerProvider
	Prop    propagation.TextMapPropagator
}

type consumerMetrics struct {
	processed    metric.Int64Counter
	deadLettered metric.Int64Counter
}

// Run consumes until ctx is done and returns nil then. It returns an error
// when the NATS connection is closed under it or the configuration is
// invalid; it keeps retrying while NATS is merely unreachable.
func (c *Consumer) Run(ctx context.Context) error {
	if c.JS == nil || c.Pool == nil || c.Handler == nil || c.Config.Stream == "" || c.Config.Durable == "" {
		return errors.New("consumer needs jetstream, a pool, a handler, a stream and a durable name")
	}
	c.Config.defaults()
	c.Log = discardLogger(c.Log).With("consumer", c.Config.Durable)
	m, err := c.metrics()
	if err != nil {
		return err
	}

	var cons jetstream.Consumer
	for {
		cons, err = c.JS.CreateOrUpdateConsumer(ctx, c.Config.Stream, jetstream.ConsumerConfig{
			Durable:        c.Config.Durable,
			FilterSubjects: c.Config.FilterSubjects,
			AckPolicy:      jetstream.AckExplicitPolicy,
			AckWait:        c.Config.AckWait,
			MaxDeliver:     c.Config.MaxDeliver,
			MaxAckPending:  c.Config.MaxAckPending,
			DeliverPolicy:  jetstream.DeliverAllPolicy,
		})
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		c.Log.Warn("create consumer; retrying", "stream", c.Config.Stream, "err", err)
		if !sleep(ctx, time.Second) {
			return nil
		}
	}

	it, err := cons.Messages(jetstream.PullMaxMessages(min(c.Config.MaxAckPending, 256)))
	if err != nil {
		return fmt.Errorf("consume %s: %w", c.Config.Durable, err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("consume %s: %w", c.Config.Durable, err)
		}
		c.handle(ctx, msg, m)
	}
}

func (c *Consumer) metrics() (consumerMetrics, error) {
	mp := c.Meter
	if mp == nil {
		return consumerMetrics{}, nil
	}
	meter := mp.Meter("github.com/moat-ai/moat/libs/events")
	processed, err := meter.Int64Counter("moat_events_processed_total",
		metric.WithDescription("Events handled by a consumer, by outcome (ack, retry, dead_letter)."))
	if err != nil {
		return consumerMetrics{}, fmt.Errorf("create metric: %w", err)
	}
	dead, err := meter.Int64Counter("moat_events_dead_lettered_total",
		metric.WithDescription("Events a consumer moved to its dead-letter table; alert when it grows."))
	if err != nil {
		return consumerMetrics{}, fmt.Errorf("create metric: %w", err)
	}
	return consumerMetrics{processed: processed, deadLettered: dead}, nil
}

func (c *Consumer) count(ctx context.Context, m consumerMetrics, outcome string) {
	if m.processed == nil {
		return
	}
	attrs := metric.WithAttributes(attribute.String("consumer", c.Config.Durable), attribute.String("outcome", outcome))
	m.processed.Add(ctx, 1, attrs)
	if outcome == "dead_letter" {
		m.deadLettered.Add(ctx, 1, metric.WithAttributes(attribute.String("consumer", c.Config.Durable)))
	}
}

// handle runs the handler on one message and settles it.
func (c *Consumer) handle(ctx context.Context, msg jetstream.Msg, m consumerMetrics) {
	ev, perr := fromMsg(msg)
	if c.Prop != nil {
		ctx = c.Prop.Extract(ctx, propagation.HeaderCarrier(msg.Headers()))
	}
	tp := c.Tracer
	if tp == nil {
		tp = tracenoop.NewTracerProvider()
	}
	ctx, span := tp.Tracer("github.com/moat-ai/moat/libs/events").Start(ctx, "process "+msg.Subject(),
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.String("messaging.system", "nats"),
			attribute.String("messaging.destination.name", msg.Subject()),
			attribute.String("messaging.consumer.group.name", c.Config.Durable),
			attribute.String("messaging.message.id", ev.ID.String()),
		))
	defer span.End()

	err := perr
	if err == nil {
		err = c.runHandler(ctx, ev)
	} else {
		err = Permanent(err)
	}
	log := c.Log.With("event_id", ev.ID.String(), "subject", msg.Subject(), "delivery", ev.NumDelivered)
	switch {
	case err == nil:
		if aerr := msg.Ack(); aerr != nil {
			// The effect is committed; the redelivery this causes is a no-op.
			log.WarnContext(ctx, "ack event", "err", aerr)
		}
		c.count(ctx, m, "ack")
	case IsPermanent(err) || ev.NumDelivered >= uint64(max(c.Config.MaxDeliver, 1)):
		span.RecordError(err)
		if derr := c.deadLetter(ctx, msg, ev, err); derr != nil {
			log.ErrorContext(ctx, "dead-letter event; will retry", "err", derr, "cause", err)
			_ = msg.NakWithDelay(c.backoff(ev.NumDelivered))
			c.count(ctx, m, "retry")
			return
		}
		log.ErrorContext(ctx, "event dead-lettered", "err", err)
		if terr := msg.TermWithReason("dead-lettered"); terr != nil {
			log.WarnContext(ctx, "term event", "err", terr)
		}
		c.count(ctx, m, "dead_letter")
	default:
		span.RecordError(err)
		delay := c.backoff(ev.NumDelivered)
		log.WarnContext(ctx, "handle event; will retry", "err", err, "retry_in", delay)
		if nerr := msg.NakWithDelay(delay); nerr != nil {
			log.WarnContext(ctx, "nak event", "err", nerr)
		}
		c.count(ctx, m, "retry")
	}
}

// runHandler calls the handler while telling JetStream, every half AckWait,
// that the event is in progress, so long work is not redelivered under it.
func (c *Consumer) runHandler(ctx context.Context, ev Event) (err error) {
	done := make(chan struct{})
	defer close(done)
	go func() {
		t := time.NewTicker(c.Config.AckWait / 2)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = ev.InProgress()
			}
		}
	}()
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("handler panic: %v", p)
		}
	}()
	return c.Handler(ctx, ev)
}

func (c *Consumer) backoff(delivered uint64) time.Duration {
	last := uint64(len(c.Config.BackOff) - 1) //nolint:gosec // defaults() guarantees a non-empty list
	i := min(max(delivered, 1)-1, last)
	return c.Config.BackOff[i]
}

func (c *Consumer) deadLetter(ctx context.Context, msg jetstream.Msg, ev Event, cause error) error {
	md, err := msg.Metadata()
	if err != nil {
		return fmt.Errorf("message metadata: %w", err)
	}
	raw := msg.Headers().Get(HeaderID)
	if raw == "" {
		raw = msg.Headers().Get(jetstream.MsgIDHeader)
	}
	headers := map[string][]string(msg.Headers())
	if headers == nil {
		headers = map[string][]string{}
	}
	data := msg.Data()
	if data == nil {
		data = []byte{}
	}
	_, err = c.Pool.Exec(ctx, `
		INSERT INTO dead_letters (consumer, stream, stream_seq, event_id, subject, headers, payload, error, num_delivered)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
		ON CONFLICT DO NOTHING`,
		c.Config.Durable, md.Stream, int64(md.Sequence.Stream), truncate(raw, 128), msg.Subject(), //nolint:gosec // stream sequences fit in int64
		headers, data, truncate(cause.Error(), 2000), int(ev.NumDelivered)) //nolint:gosec // bounded by MaxDeliver
	if err != nil {
		return fmt.Errorf("insert dead letter: %w", err)
	}
	return nil
}
