package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/moat-ai/moat/services/billing/internal/billing"
)

// Store reads the ledger for the admin API. It is safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool
}

var _ billing.Store = (*Store)(nil)

// NewStore returns a Store on pool.
func NewStore(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

const entryColumns = `event_id, organization, project, key_id, model, upstream_model, provider,
	input_tokens, cache_read_input_tokens, cache_write_input_tokens, output_tokens, reasoning_tokens,
	usage_estimated, cost_micros, currency_code, priced, price_version,
	http_status, stream, latency_ms, occurred_at, recorded_at`

// InsertEntry appends e to the ledger inside tx, the transaction that marks
// its event processed. An entry whose event id is already there is left as
// it is: the first write of an event wins, the ledger is never updated.
// It reports whether e was inserted.
func InsertEntry(ctx context.Context, tx pgx.Tx, e billing.Entry) (bool, error) {
	tag, err := tx.Exec(ctx, `
		INSERT INTO ledger_entries (event_id, organization, project, key_id, model, upstream_model, provider,
			input_tokens, cache_read_input_tokens, cache_write_input_tokens, output_tokens, reasoning_tokens,
			usage_estimated, cost_micros, currency_code, priced, price_version,
			http_status, stream, latency_ms, occurred_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)
		ON CONFLICT (event_id) DO NOTHING`,
		e.EventID, e.Organization, e.Project, e.KeyID, e.Model, e.UpstreamModel, e.Provider,
		e.InputTokens, e.CacheReadInputTokens, e.CacheWriteInputTokens, e.OutputTokens, e.ReasoningTokens,
		e.UsageEstimated, e.CostMicros, e.Currency, e.Priced, e.PriceVersion,
		e.HTTPStatus, e.Stream, e.Latency.Milliseconds(), e.RequestTime)
	if err != nil {
		return false, fmt.Errorf("insert ledger entry %s: %w", e.EventID, err)
	}
	return tag.RowsAffected() == 1, nil
}

// ListEntries implements billing.Store. The keyset condition and order
// match the (organization|project, occurred_at, event_id) indexes, which
// PostgreSQL reads backwards.
func (s *Store) ListEntries(ctx context.Context, scope billing.Scope, after *billing.Cursor, limit int) ([]billing.Entry, error) {
	where, args := scopeFilter(scope)
	if after != nil {
		args = append(args, after.RequestTime, after.EventID)
		where += ` AND (occurred_at, event_id) < ($2, $3)`
	}
	rows, err := s.pool.Query(ctx, `SELECT `+entryColumns+` FROM ledger_entries WHERE `+where+
		` ORDER BY occurred_at DESC, event_id DESC LIMIT `+strconv.Itoa(limit), args...)
	if err != nil {
		return nil, fmt.Errorf("query ledger entries: %w", unavailable(err))
	}
	entries, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (billing.Entry, error) {
		var e billing.Entry
		var latencyMS int64
		err := row.Scan(&e.EventID, &e.Organization, &e.Project, &e.KeyID, &e.Model, &e.UpstreamModel, &e.Provider,
			&e.InputTokens, &e.CacheReadInputTokens, &e.CacheWriteInputTokens, &e.OutputTokens, &e.ReasoningTokens,
			&e.UsageEstimated, &e.CostMicros, &e.Currency, &e.Priced, &e.PriceVersion,
			&e.HTTPStatus, &e.Stream, &latencyMS, &e.RequestTime, &e.RecordTime)
		e.Latency = time.Duration(latencyMS) * time.Millisecond
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("read ledger entries: %w", err)
	}
	return entries, nil
}

// Totals implements billing.Store.
func (s *Store) Totals(ctx context.Context, scope billing.Scope) (billing.Totals, error) {
	where, args := scopeFilter(scope)
	var t billing.Totals
	var currencies int
	var currency *string
	err := s.pool.QueryRow(ctx, `
		SELECT count(*), COALESCE(sum(input_tokens), 0)::bigint,
		       COALESCE(sum(cache_read_input_tokens), 0)::bigint, COALESCE(sum(cache_write_input_tokens), 0)::bigint,
		       COALESCE(sum(output_tokens), 0)::bigint, COALESCE(sum(reasoning_tokens), 0)::bigint,
		       COALESCE(sum(cost_micros), 0)::bigint, count(*) FILTER (WHERE NOT priced),
		       count(*) FILTER (WHERE usage_estimated),
		       count(DISTINCT currency_code), min(currency_code)
		  FROM ledger_entries WHERE `+where, args...).
		Scan(&t.EntryCount, &t.InputTokens, &t.CacheReadInputTokens, &t.CacheWriteInputTokens, &t.OutputTokens, &t.ReasoningTokens,
			&t.CostMicros, &t.UnpricedCount, &t.EstimatedCount, &currencies, &currency)
	if err != nil {
		return billing.Totals{}, fmt.Errorf("sum ledger entries: %w", unavailable(err))
	}
	if currencies > 1 {
		return billing.Totals{}, billing.ErrMixedCurrencies
	}
	if currency != nil {
		t.Currency = *currency
	}
	return t, nil
}

// scopeFilter selects by project when the scope has one: a project name
// already contains its organization.
func scopeFilter(scope billing.Scope) (string, []any) {
	if scope.Project != "" {
		return `project = $1`, []any{scope.Project}
	}
	return `organization = $1`, []any{scope.Organization}
}

// unavailable marks a failure to reach the database, which callers report
// as a retryable condition rather than an internal error.
func unavailable(err error) error {
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) {
		return fmt.Errorf("%w: %w", billing.ErrUnavailable, err)
	}
	return err
}
