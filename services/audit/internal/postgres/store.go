package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/moat-ai/moat/services/audit/internal/audit"
)

// Store reads the audit log for the admin API. It is safe for concurrent
// use.
type Store struct {
	pool *pgxpool.Pool
}

var _ audit.Store = (*Store)(nil)

// NewStore returns a Store on pool.
func NewStore(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// InsertRecord appends r, with the envelope it arrived in, inside tx, the
// transaction that marks its event processed. A record whose event id is
// already there is left as it is: the first write of an event wins and the
// log is never updated. It reports whether r was inserted.
func InsertRecord(ctx context.Context, tx pgx.Tx, r audit.Record, env audit.Envelope) (bool, error) {
	headers := env.Headers
	if headers == nil {
		headers = map[string][]string{}
	}
	payload := env.Payload
	if payload == nil {
		payload = []byte{}
	}
	tag, err := tx.Exec(ctx, `
		INSERT INTO audit_events (event_id, organization, actor, action, target, outcome, status,
			source_address, request_id, occurred_at, producer, event_type, subject, headers, payload)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
		ON CONFLICT (event_id) DO NOTHING`,
		r.EventID, r.Organization, r.Actor, r.Action, r.Target, string(r.Outcome), r.Status,
		r.SourceAddress, r.RequestID, r.EventTime, r.Producer, env.Type, env.Subject, headers, payload)
	if err != nil {
		return false, fmt.Errorf("insert audit record %s: %w", r.EventID, err)
	}
	return tag.RowsAffected() == 1, nil
}

// ListRecords implements audit.Store.
func (s *Store) ListRecords(ctx context.Context, organization string, after *audit.Cursor, limit int) ([]audit.Record, error) {
	where, args := `organization = $1`, []any{organization}
	if after != nil {
		where += ` AND (occurred_at, event_id) < ($2, $3)`
		args = append(args, after.EventTime, after.EventID)
	}
	rows, err := s.pool.Query(ctx, `
		SELECT event_id, organization, actor, action, target, outcome, status, source_address,
		       request_id, occurred_at, producer, recorded_at
		  FROM audit_events WHERE `+where+`
		 ORDER BY occurred_at DESC, event_id DESC LIMIT `+strconv.Itoa(limit), args...)
	if err != nil {
		return nil, fmt.Errorf("query audit records: %w", unavailable(err))
	}
	records, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (audit.Record, error) {
		var r audit.Record
		var outcome string
		err := row.Scan(&r.EventID, &r.Organization, &r.Actor, &r.Action, &r.Target, &outcome, &r.Status,
			&r.SourceAddress, &r.RequestID, &r.EventTime, &r.Producer, &r.RecordTime)
		r.Outcome = audit.Outcome(outcome)
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("read audit records: %w", err)
	}
	return records, nil
}

// unavailable marks a failure to reach the database, which callers report
// as a retryable condition rather than an internal error.
func unavailable(err error) error {
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) {
		return fmt.Errorf("%w: %w", audit.ErrUnavailable, err)
	}
	return err
}
