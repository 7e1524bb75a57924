package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/moat-ai/moat/libs/events"
	"github.com/moat-ai/moat/libs/pg"
	auditv1 "github.com/moat-ai/moat/proto/gen/go/moat/audit/v1"
	"github.com/moat-ai/moat/services/config/internal/config"
)

// The audit events this service produces: moat.audit.v1.AuditEvent on
// AuditSubject, with ce-source Source and ce-subject the target resource.
const (
	Source       = "moat/config"
	AuditSubject = "config.v1.audit_event.recorded"
)

// RecordAudit writes a to the outbox in a transaction of its own.
func (s *Store) RecordAudit(ctx context.Context, a config.AuditRecord) error {
	return dbError(pg.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		return s.enqueueAudit(ctx, tx, a)
	}))
}

func (s *Store) enqueueAudit(ctx context.Context, tx pgx.Tx, a config.AuditRecord) error {
	ev, err := events.New(Source, AuditSubject, a.Target, auditEvent(a))
	if err != nil {
		return fmt.Errorf("build audit event: %w", err)
	}
	if !a.Time.IsZero() {
		ev.Time = a.Time.UTC()
	}
	if err := events.Enqueue(ctx, tx, s.prop, ev); err != nil {
		return fmt.Errorf("enqueue audit event: %w", err)
	}
	return nil
}

// auditEvent maps a record to the published event. Name, producer and
// record time are the audit service's to set.
func auditEvent(a config.AuditRecord) *auditv1.AuditEvent {
	ev := &auditv1.AuditEvent{
		Organization:  a.Organization,
		Actor:         a.Actor,
		Action:        a.Action,
		Target:        a.Target,
		Outcome:       outcome(a.Outcome),
		Status:        a.Status,
		SourceAddress: a.SourceAddress,
		RequestId:     a.RequestID,
	}
	if !a.Time.IsZero() {
		ev.EventTime = events.Timestamp(a.Time)
	}
	return ev
}

func outcome(o config.Outcome) auditv1.AuditEvent_Outcome {
	switch o {
	case config.OutcomeAllowed:
		return auditv1.AuditEvent_OUTCOME_ALLOWED
	case config.OutcomeDenied:
		return auditv1.AuditEvent_OUTCOME_DENIED
	case config.OutcomeFailed:
		return auditv1.AuditEvent_OUTCOME_FAILED
	default:
		return auditv1.AuditEvent_OUTCOME_UNSPECIFIED
	}
}
