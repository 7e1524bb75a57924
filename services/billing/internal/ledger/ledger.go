// Package ledger projects the gateways' usage events into the ledger: each
// moat.gateway.v1.UsageRecorded becomes one priced ledger entry, written in
// the same transaction that records the event as processed, so that
// redelivery and republishing never count a request twice.
package ledger

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"

	"github.com/moat-ai/moat/libs/events"
	"github.com/moat-ai/moat/libs/pg"
	gatewayv1 "github.com/moat-ai/moat/proto/gen/go/moat/gateway/v1"
	"github.com/moat-ai/moat/services/billing/internal/billing"
	"github.com/moat-ai/moat/services/billing/internal/postgres"
)

// The consumer's identity: the durable name is also the processed_events
// key, so it must never change once deployed.
const (
	Durable = "billing-ledger"
	Stream  = "GATEWAY"
	Subject = "gateway.v1.usage.recorded"
)

// Projector turns usage events into ledger entries. It is safe for
// concurrent use.
type Projector struct {
	pool     *pgxpool.Pool
	prices   *billing.Prices
	unpriced metric.Int64Counter
}

// New returns a Projector writing to pool and pricing with prices. mp may
// be nil.
func New(pool *pgxpool.Pool, prices *billing.Prices, mp metric.MeterProvider) (*Projector, error) {
	if mp == nil {
		mp = metricnoop.NewMeterProvider()
	}
	unpriced, err := mp.Meter("github.com/moat-ai/moat/services/billing/internal/ledger").Int64Counter(
		"moat_billing_unpriced_total",
		metric.WithDescription("Ledger entries recorded without a price because the price table has no rate for the upstream model; add the model to the table."))
	if err != nil {
		return nil, fmt.Errorf("create metric: %w", err)
	}
	return &Projector{pool: pool, prices: prices, unpriced: unpriced}, nil
}

// ConsumerConfig is the durable consumer the projector runs on.
func ConsumerConfig() events.ConsumerConfig {
	return events.ConsumerConfig{Stream: Stream, Durable: Durable, FilterSubjects: []string{Subject}}
}

// Handle records one usage event. Redelivery is expected: a second call for
// the same event id finds it in processed_events and changes nothing. An
// event that cannot be decoded or lacks what an entry needs is returned as
// events.Permanent, which dead-letters it.
func (p *Projector) Handle(ctx context.Context, ev events.Event) error {
	var u gatewayv1.UsageRecorded
	if err := ev.Decode(&u); err != nil {
		return events.Permanent(fmt.Errorf("decode usage event %s: %w", ev.ID, err))
	}
	e, err := p.entry(ev, &u)
	if err != nil {
		return events.Permanent(fmt.Errorf("usage event %s: %w", ev.ID, err))
	}
	var inserted bool
	err = pg.InTx(ctx, p.pool, func(tx pgx.Tx) error {
		first, err := events.MarkProcessed(ctx, tx, Durable, ev.ID)
		if err != nil || !first {
			return err
		}
		inserted, err = postgres.InsertEntry(ctx, tx, e)
		return err
	})
	if err != nil {
		return fmt.Errorf("record usage event %s: %w", ev.ID, err)
	}
	if inserted && !e.Priced {
		p.unpriced.Add(ctx, 1, metric.WithAttributes(attribute.String("upstream_model", metricLabel(e.UpstreamModel))))
	}
	return nil
}

// entry validates u and prices it.
func (p *Projector) entry(ev events.Event, u *gatewayv1.UsageRecorded) (billing.Entry, error) {
	var errs []error
	scope, err := billing.ParseScope("project", u.GetProject())
	switch {
	case err != nil:
		errs = append(errs, err)
	case scope.Project == "":
		errs = append(errs, &billing.ValidationError{Field: "project", Reason: "is required"})
	case scope.Organization != u.GetOrganization():
		errs = append(errs, &billing.ValidationError{Field: "organization", Reason: "is not the project's organization"})
	}
	if u.GetKeyId() == "" {
		errs = append(errs, &billing.ValidationError{Field: "key_id", Reason: "is required"})
	}
	if !u.GetRequestTime().IsValid() || u.GetRequestTime().AsTime().IsZero() {
		errs = append(errs, &billing.ValidationError{Field: "request_time", Reason: "is required"})
	}
	if u.GetLatency() != nil && (!u.GetLatency().IsValid() || u.GetLatency().AsDuration() < 0) {
		errs = append(errs, &billing.ValidationError{Field: "latency", Reason: "must be a non-negative duration"})
	}
	// An event from before the cache and reasoning counts carries zeros
	// there, which price exactly as before.
	usage := billing.Usage{
		InputTokens:           u.GetInputTokens(),
		CacheReadInputTokens:  u.GetCacheReadInputTokens(),
		CacheWriteInputTokens: u.GetCacheWriteInputTokens(),
		OutputTokens:          u.GetOutputTokens(),
		ReasoningTokens:       u.GetReasoningTokens(),
	}
	q, err := p.prices.Quote(u.GetUpstreamModel(), usage)
	if err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return billing.Entry{}, err
	}
	return billing.Entry{
		EventID:               ev.ID,
		Organization:          u.GetOrganization(),
		Project:               u.GetProject(),
		KeyID:                 u.GetKeyId(),
		Model:                 u.GetModel(),
		UpstreamModel:         u.GetUpstreamModel(),
		Provider:              u.GetProvider(),
		InputTokens:           usage.InputTokens,
		CacheReadInputTokens:  usage.CacheReadInputTokens,
		CacheWriteInputTokens: usage.CacheWriteInputTokens,
		OutputTokens:          usage.OutputTokens,
		ReasoningTokens:       usage.ReasoningTokens,
		UsageEstimated:        u.GetUsageEstimated(),
		CostMicros:            q.CostMicros,
		Currency:              q.Currency,
		Priced:                q.Priced,
		PriceVersion:          q.Version,
		HTTPStatus:            u.GetHttpStatus(),
		Stream:                u.GetStream(),
		Latency:               u.GetLatency().AsDuration(),
		RequestTime:           u.GetRequestTime().AsTime(),
	}, nil
}

// metricLabel bounds a label taken from an event: model names are short,
// and an unbounded one must not bloat the metrics endpoint.
func metricLabel(s string) string {
	if len(s) > 64 {
		return s[:64]
	}
	return s
}
