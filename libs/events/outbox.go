package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/moat-ai/moat/libs/pg"
)

const outboxChannel = "moat_outbox"

// Relay publishes committed outbox rows to JetStream and marks each one
// published after its PubAck. It is a singleton per database (it runs under
// an advisory lock, so any number of replicas is safe). A crash between the
// PubAck and the mark republishes the row with the same Nats-Msg-Id, which
// the stream drops as a duplicate.
type Relay struct {
	Pool   *pgxpool.Pool
	JS     jetstream.JetStream
	Stream StreamConfig
	Log    *slog.Logger
	Meter  metric.MeterProvider

	// BatchSize bounds the rows published per round (default 256).
	BatchSize int
	// PollInterval is the fallback wake-up when no NOTIFY arrives
	// (default 1s); a commit through Enqueue wakes the relay at once.
	PollInterval time.Duration
	// Retention is how long published rows are kept before they are
	// deleted (default 1h), for inspection.
	Retention time.Duration
	// LockRetry is how often a standby replica tries to take over.
	LockRetry time.Duration

	// afterPublish runs after the PubAcks of a batch and before the rows
	// are marked; tests use it to kill the relay at the worst moment.
	afterPublish func(ids []uuid.UUID) error
}

// Run relays until ctx is done. It returns nil on shutdown and an error only
// for misconfiguration; database and NATS outages are retried.
func (r *Relay) Run(ctx context.Context) error {
	if r.Pool == nil || r.JS == nil {
		return errors.New("outbox relay needs a pool and a jetstream handle")
	}
	r.defaults()
	log := r.Log.With("component", "outbox-relay")
	published, err := r.meter().Int64Counter("moat_outbox_published_total",
		metric.WithDescription("Outbox events published to JetStream (duplicates included)."))
	if err != nil {
		return fmt.Errorf("create metric: %w", err)
	}
	for {
		err := pg.RunExclusive(ctx, r.Pool, "events:outbox-relay", pg.LockOptions{Retry: r.LockRetry}, func(ctx context.Context) error {
			log.Info("outbox relay active")
			return r.relay(ctx, log, published)
		})
		if ctx.Err() != nil {
			return nil
		}
		log.Warn("outbox relay interrupted; retrying", "err", err)
		if !sleep(ctx, time.Second) {
			return nil
		}
	}
}

func (r *Relay) defaults() {
	if r.BatchSize <= 0 {
		r.BatchSize = 256
	}
	if r.PollInterval <= 0 {
		r.PollInterval = time.Second
	}
	if r.Retention <= 0 {
		r.Retention = time.Hour
	}
	r.Log = discardLogger(r.Log)
}

func (r *Relay) meter() metric.Meter {
	if r.Meter == nil {
		return noop.NewMeterProvider().Meter("")
	}
	return r.Meter.Meter("github.com/moat-ai/moat/libs/events")
}

// relay runs while this replica holds the lock.
func (r *Relay) relay(ctx context.Context, log *slog.Logger, published metric.Int64Counter) error {
	if r.Stream.Name != "" {
		for {
			_, err := EnsureStream(ctx, r.JS, r.Stream)
			if err == nil {
				break
			}
			log.Warn("ensure stream; retrying", "stream", r.Stream.Name, "err", err)
			if !sleep(ctx, r.PollInterval) {
				return ctx.Err()
			}
		}
	}
	listen, err := r.Pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire listen connection: %w", err)
	}
	defer listen.Release()
	if _, err := listen.Exec(ctx, "LISTEN "+outboxChannel); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer func() {
		_, _ = listen.Exec(context.WithoutCancel(ctx), "UNLISTEN "+outboxChannel)
	}()

	lastPurge := time.Time{}
	for {
		for {
			n, err := r.publishBatch(ctx, published)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				log.Warn("publish outbox batch; retrying", "err", err)
				if !sleep(ctx, r.PollInterval) {
					return ctx.Err()
				}
				continue
			}
			if n < r.BatchSize {
				break
			}
		}
		if time.Since(lastPurge) > r.Retention/10 {
			if _, err := r.Pool.Exec(ctx, `DELETE FROM outbox WHERE published_at < now() - $1::interval`, r.Retention); err != nil && ctx.Err() == nil {
				log.Warn("purge published outbox rows", "err", err)
			}
			lastPurge = time.Now()
		}
		wctx, cancel := context.WithTimeout(ctx, r.PollInterval)
		_, err := listen.Conn().WaitForNotification(wctx)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("wait for outbox notification: %w", err)
		}
	}
}

type outboxRow struct {
	ID      uuid.UUID
	Subject string
	Payload []byte
	Headers map[string][]string
}

// publishBatch publishes up to BatchSize pending rows, oldest first, and
// marks those acknowledged. It returns how many rows it read.
func (r *Relay) publishBatch(ctx context.Context, published metric.Int64Counter) (int, error) {
	rows, err := r.Pool.Query(ctx, `
		SELECT event_id, subject, payload, headers FROM outbox
		WHERE published_at IS NULL
		ORDER BY created_at, event_id
		LIMIT $1`, r.BatchSize)
	if err != nil {
		return 0, fmt.Errorf("read outbox: %w", err)
	}
	batch, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (outboxRow, error) {
		var o outboxRow
		var raw []byte
		if err := row.Scan(&o.ID, &o.Subject, &o.Payload, &raw); err != nil {
			return o, err
		}
		if err := json.Unmarshal(raw, &o.Headers); err != nil {
			return o, fmt.Errorf("outbox headers of %s: %w", o.ID, err)
		}
		return o, nil
	})
	if err != nil {
		return 0, fmt.Errorf("read outbox: %w", err)
	}
	if len(batch) == 0 {
		return 0, nil
	}

	// Publish the batch asynchronously and wait for every PubAck: one
	// round trip per batch rather than per event.
	futures := make([]jetstream.PubAckFuture, len(batch))
	for i, o := range batch {
		msg := &nats.Msg{Subject: o.Subject, Header: nats.Header(o.Headers), Data: o.Payload}
		f, err := r.JS.PublishMsgAsync(msg, jetstream.WithMsgID(o.ID.String()))
		if err != nil {
			futures = futures[:i]
			break
		}
		futures[i] = f
	}
	var acked []uuid.UUID
	var firstErr error
	for i, f := range futures {
		select {
		case ack := <-f.Ok():
			acked = append(acked, batch[i].ID)
			published.Add(ctx, 1, metric.WithAttributes(attribute.Bool("duplicate", ack.Duplicate)))
		case err := <-f.Err():
			if firstErr == nil {
				firstErr = fmt.Errorf("publish %s: %w", batch[i].ID, err)
			}
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	if len(futures) < len(batch) && firstErr == nil {
		firstErr = errors.New("publish: async publish refused (too many pending acks)")
	}
	if r.afterPublish != nil {
		if err := r.afterPublish(acked); err != nil {
			return 0, err
		}
	}
	if len(acked) > 0 {
		if _, err := r.Pool.Exec(ctx, `UPDATE outbox SET published_at = now() WHERE event_id = ANY($1) AND published_at IS NULL`, acked); err != nil {
			return 0, fmt.Errorf("mark outbox rows published: %w", err)
		}
	}
	if firstErr != nil {
		return 0, firstErr
	}
	return len(batch), nil
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
