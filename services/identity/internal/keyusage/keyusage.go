// Package keyusage keeps the approximate last use of each API key from the
// gateways' usage events, so that key lists can show which keys are idle.
//
// Unlike most consumers it records no processed_events row: the write is a
// monotonic maximum (last use only ever moves forward to the event's
// request time), so applying an event twice, or out of order, leaves the
// same value as applying it once. Redeliveries and republished events are
// therefore harmless, and skipping the processed_events insert keeps a
// busy key at one write a minute instead of one per request.
package keyusage

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/moat-ai/moat/libs/events"
	gatewayv1 "github.com/moat-ai/moat/proto/gen/go/moat/gateway/v1"
)

// The consumer's identity on the GATEWAY stream. The durable name must
// never change once deployed: a new name would replay the whole stream.
const (
	Durable = "identity-key-usage"
	Stream  = "GATEWAY"
	Subject = "gateway.v1.usage.recorded"
)

// MinInterval is how far a key's last use must move before it is written
// again: a busy key costs one write per MinInterval, and ApiKey.last_use_time
// lags by at most that (plus event delivery).
const MinInterval = time.Minute

// Store records key uses; postgres.Store implements it.
type Store interface {
	// RecordKeyUse moves key id's last use forward to at unless it is
	// already within minInterval of at; an unknown key is not an error.
	RecordKeyUse(ctx context.Context, id uuid.UUID, at time.Time, minInterval time.Duration) (written bool, err error)
}

// Recorder turns usage events into key last-use times. It is safe for
// concurrent use.
type Recorder struct {
	store Store
}

// New returns a Recorder writing to store.
func New(store Store) *Recorder {
	return &Recorder{store: store}
}

// ConsumerConfig is the durable consumer the recorder runs on.
func ConsumerConfig() events.ConsumerConfig {
	return events.ConsumerConfig{Stream: Stream, Durable: Durable, FilterSubjects: []string{Subject}}
}

// Handle records the use of the event's key. An event that cannot be
// decoded, or lacks a valid key id or request time, is returned as
// events.Permanent, which dead-letters it. An event for a key identity
// does not know (deleted, or from another installation's stream) is
// acknowledged and ignored.
func (r *Recorder) Handle(ctx context.Context, ev events.Event) error {
	var u gatewayv1.UsageRecorded
	if err := ev.Decode(&u); err != nil {
		return events.Permanent(fmt.Errorf("decode usage event %s: %w", ev.ID, err))
	}
	var errs []error
	id, err := uuid.Parse(u.GetKeyId())
	if err != nil {
		errs = append(errs, fmt.Errorf("key_id %q is not a UUID", u.GetKeyId()))
	}
	if !u.GetRequestTime().IsValid() || u.GetRequestTime().AsTime().IsZero() {
		errs = append(errs, errors.New("request_time is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return events.Permanent(fmt.Errorf("usage event %s: %w", ev.ID, err))
	}
	if _, err := r.store.RecordKeyUse(ctx, id, u.GetRequestTime().AsTime(), MinInterval); err != nil {
		return fmt.Errorf("usage event %s: %w", ev.ID, err)
	}
	return nil
}
