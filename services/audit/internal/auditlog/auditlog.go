// Package auditlog projects the audit events that config and identity
// publish into the audit log: each moat.audit.v1.AuditEvent becomes one
// record, written in the same transaction that marks the event processed,
// so that redelivery never records an action twice.
package auditlog

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/moat-ai/moat/libs/events"
	"github.com/moat-ai/moat/libs/pg"
	auditv1 "github.com/moat-ai/moat/proto/gen/go/moat/audit/v1"
	"github.com/moat-ai/moat/services/audit/internal/audit"
	"github.com/moat-ai/moat/services/audit/internal/postgres"
)

// Durable is the consumer name on every producer's stream. It is also the
// processed_events key, so it must never change once deployed; event ids
// are unique across producers, so one key serves all streams.
const Durable = "audit-log"

// The streams audit events come from and their subjects. Each stream is
// created by its producer; the consumer runner waits until it exists.
const (
	ConfigStream    = "CONFIG"
	ConfigSubject   = "config.v1.audit_event.recorded"
	IdentityStream  = "IDENTITY"
	IdentitySubject = "identity.v1.audit_event.recorded"
)

// ConsumerConfigs are the durable consumers the projector runs on, one per
// source stream.
func ConsumerConfigs() []events.ConsumerConfig {
	return []events.ConsumerConfig{
		{Stream: ConfigStream, Durable: Durable, FilterSubjects: []string{ConfigSubject}},
		{Stream: IdentityStream, Durable: Durable, FilterSubjects: []string{IdentitySubject}},
	}
}

// Projector turns audit events into audit records. It is safe for
// concurrent use.
type Projector struct {
	pool *pgxpool.Pool
}

// New returns a Projector writing to pool.
func New(pool *pgxpool.Pool) *Projector { return &Projector{pool: pool} }

// Handle records one audit event. Redelivery is expected: a second call for
// the same event id finds it in processed_events and changes nothing. An
// event that cannot be decoded or lacks what a record needs is returned as
// events.Permanent, which dead-letters it.
func (p *Projector) Handle(ctx context.Context, ev events.Event) error {
	var msg auditv1.AuditEvent
	if err := ev.Decode(&msg); err != nil {
		return events.Permanent(fmt.Errorf("decode audit event %s: %w", ev.ID, err))
	}
	r, err := record(ev, &msg)
	if err != nil {
		return events.Permanent(fmt.Errorf("audit event %s: %w", ev.ID, err))
	}
	env := audit.Envelope{Subject: ev.Subject, Type: ev.Type, Headers: ev.Header, Payload: ev.Data}
	err = pg.InTx(ctx, p.pool, func(tx pgx.Tx) error {
		first, err := events.MarkProcessed(ctx, tx, Durable, ev.ID)
		if err != nil || !first {
			return err
		}
		_, err = postgres.InsertRecord(ctx, tx, r, env)
		return err
	})
	if err != nil {
		return fmt.Errorf("record audit event %s: %w", ev.ID, err)
	}
	return nil
}

func outcome(o auditv1.AuditEvent_Outcome) (audit.Outcome, bool) {
	switch o {
	case auditv1.AuditEvent_OUTCOME_ALLOWED:
		return audit.OutcomeAllowed, true
	case auditv1.AuditEvent_OUTCOME_DENIED:
		return audit.OutcomeDenied, true
	case auditv1.AuditEvent_OUTCOME_FAILED:
		return audit.OutcomeFailed, true
	}
	return "", false
}

// record validates msg. The organization is kept as sent: a denied call
// may name one that does not exist, and its record must not be lost for
// that; only orgs/{org} values are ever listed.
func record(ev events.Event, msg *auditv1.AuditEvent) (audit.Record, error) {
	var errs []error
	if msg.GetActor() == "" {
		errs = append(errs, &audit.ValidationError{Field: "actor", Reason: "is required"})
	}
	if msg.GetAction() == "" {
		errs = append(errs, &audit.ValidationError{Field: "action", Reason: "is required"})
	}
	out, ok := outcome(msg.GetOutcome())
	if !ok {
		errs = append(errs, &audit.ValidationError{Field: "outcome", Reason: fmt.Sprintf("%v is not allowed, denied or failed", msg.GetOutcome())})
	}
	if !msg.GetEventTime().IsValid() || msg.GetEventTime().AsTime().IsZero() {
		errs = append(errs, &audit.ValidationError{Field: "event_time", Reason: "is required"})
	}
	if err := errors.Join(errs...); err != nil {
		return audit.Record{}, err
	}
	return audit.Record{
		EventID:       ev.ID,
		Organization:  msg.GetOrganization(),
		Actor:         msg.GetActor(),
		Action:        msg.GetAction(),
		Target:        msg.GetTarget(),
		Outcome:       out,
		Status:        msg.GetStatus(),
		SourceAddress: msg.GetSourceAddress(),
		RequestID:     msg.GetRequestId(),
		EventTime:     msg.GetEventTime().AsTime(),
		Producer:      ev.Source,
	}, nil
}
