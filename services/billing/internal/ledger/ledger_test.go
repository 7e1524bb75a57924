package ledger_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/moat-ai/moat/libs/events"
	"github.com/moat-ai/moat/libs/events/eventstest"
	"github.com/moat-ai/moat/libs/pg/pgtest"
	gatewayv1 "github.com/moat-ai/moat/proto/gen/go/moat/gateway/v1"
	"github.com/moat-ai/moat/services/billing/internal/billing"
	"github.com/moat-ai/moat/services/billing/internal/ledger"
	"github.com/moat-ai/moat/services/billing/internal/postgres"
)

var requestTime = time.Date(2025, 3, 4, 5, 6, 7, 123456000, time.UTC)

// usage returns a valid usage event of the mock model; edit changes it.
func usage(t *testing.T, edit func(*gatewayv1.UsageRecorded)) events.Event {
	t.Helper()
	id := uuid.Must(uuid.NewV7())
	u := &gatewayv1.UsageRecorded{
		RequestId:     id.String(),
		Organization:  "orgs/acme",
		Project:       "orgs/acme/projects/web",
		KeyId:         "k-123",
		Model:         "chat",
		UpstreamModel: "mock-model",
		Provider:      "orgs/acme/providers/mock",
		InputTokens:   1000,
		OutputTokens:  500,
		Latency:       durationpb.New(1500 * time.Millisecond),
		HttpStatus:    200,
		Stream:        true,
		RequestTime:   timestamppb.New(requestTime),
	}
	if edit != nil {
		edit(u)
	}
	return rawEvent(t, id, string(u.ProtoReflect().Descriptor().FullName()), u)
}

func rawEvent(t *testing.T, id uuid.UUID, typ string, m proto.Message) events.Event {
	t.Helper()
	data, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return events.Event{
		ID: id, Subject: ledger.Subject, Type: typ, Source: "moat/gateway",
		Resource: "orgs/acme/projects/web", Time: requestTime, Data: data, Header: nats.Header{},
	}
}

type env struct {
	pool   *pgxpool.Pool
	js     jetstream.JetStream
	reader *sdkmetric.ManualReader
	proj   *ledger.Projector
}

// start runs the projector's consumer against a fresh database and an
// in-process NATS server holding the GATEWAY stream.
func start(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	pool, _ := pgtest.NewDatabase(t, events.Migrations, postgres.Migrations)
	_, js := eventstest.Connect(t, eventstest.NewServer(t))
	if _, err := events.EnsureStream(ctx, js, events.StreamConfig{Name: ledger.Stream, Subjects: []string{"gateway.>"}}); err != nil {
		t.Fatal(err)
	}
	prices, err := billing.EmbeddedPrices()
	if err != nil {
		t.Fatal(err)
	}
	reader := sdkmetric.NewManualReader()
	proj, err := ledger.New(pool, prices, sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	c := &events.Consumer{JS: js, Pool: pool, Config: ledger.ConsumerConfig(), Handler: proj.Handle}
	go func() { done <- c.Run(cctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("consumer Run = %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("consumer did not stop within 10s")
		}
	})
	return &env{pool: pool, js: js, reader: reader, proj: proj}
}

func (e *env) publish(t *testing.T, ev events.Event) uint64 {
	t.Helper()
	ack, err := events.Publish(context.Background(), e.js, nil, ev)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// publishRaw sends msg without stream dedupe by Nats-Msg-Id, as a producer
// republishing after the dedupe window would.
func (e *env) publishRaw(t *testing.T, msg *nats.Msg) uint64 {
	t.Helper()
	ack, err := e.js.PublishMsg(context.Background(), msg)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// waitSettled waits until the consumer has settled (acked or terminated)
// every message up to stream sequence seq.
func (e *env) waitSettled(t *testing.T, seq uint64) {
	t.Helper()
	eventually(t, 10*time.Second, "consumer to settle the stream", func() bool {
		c, err := e.js.Consumer(context.Background(), ledger.Stream, ledger.Durable)
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		return err == nil && info.AckFloor.Stream >= seq && info.NumAckPending == 0
	})
}

// row is a ledger row as the tests compare it.
type row struct {
	EventID                                             uuid.UUID
	Organization, Project, KeyID, Model, Upstream, Prov string
	In, CacheRead, CacheWrite, Out, Reasoning, Cost     int64
	Estimated                                           bool
	Currency                                            string
	Priced                                              bool
	PriceVersion                                        string
	HTTPStatus                                          int32
	Stream                                              bool
	LatencyMS                                           int64
	RequestTime                                         time.Time
}

func rows(t *testing.T, pool *pgxpool.Pool) []row {
	t.Helper()
	rs, err := pool.Query(context.Background(), `
		SELECT event_id, organization, project, key_id, model, upstream_model, provider, input_tokens,
		       cache_read_input_tokens, cache_write_input_tokens, output_tokens, reasoning_tokens, usage_estimated,
		       cost_micros, currency_code, priced, price_version, http_status, stream,
		       latency_ms, occurred_at
		  FROM ledger_entries ORDER BY occurred_at, event_id`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rs, func(r pgx.CollectableRow) (row, error) {
		var x row
		err := r.Scan(&x.EventID, &x.Organization, &x.Project, &x.KeyID, &x.Model, &x.Upstream, &x.Prov, &x.In,
			&x.CacheRead, &x.CacheWrite, &x.Out, &x.Reasoning, &x.Estimated, &x.Cost, &x.Currency, &x.Priced, &x.PriceVersion, &x.HTTPStatus, &x.Stream, &x.LatencyMS, &x.RequestTime)
		x.RequestTime = x.RequestTime.UTC()
		return x, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func count(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func unpricedCount(t *testing.T, r *sdkmetric.ManualReader) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if sum, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == "moat_billing_unpriced_total" {
				for _, dp := range sum.DataPoints {
					n += dp.Value
				}
			}
		}
	}
	return n
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestUsageEventsBecomeLedgerEntries(t *testing.T) {
	t.Parallel()
	e := start(t)
	prices, _ := billing.EmbeddedPrices()
	priced := usage(t, nil)
	unknown := usage(t, func(u *gatewayv1.UsageRecorded) {
		u.UpstreamModel, u.Model = "brand-new-model", "new"
		u.InputTokens, u.OutputTokens = 7, 0
		u.HttpStatus, u.Stream, u.Latency = 502, false, nil
		u.RequestTime = timestamppb.New(requestTime.Add(time.Second))
	})
	e.publish(t, priced)
	e.waitSettled(t, e.publish(t, unknown))

	want := []row{
		{
			EventID: priced.ID, Organization: "orgs/acme", Project: "orgs/acme/projects/web", KeyID: "k-123",
			Model: "chat", Upstream: "mock-model", Prov: "orgs/acme/providers/mock",
			// 1000 tokens at 1 USD and 500 at 2 USD per million.
			In: 1000, Out: 500, Cost: 2000, Currency: "USD", Priced: true, PriceVersion: prices.Version(),
			HTTPStatus: 200, Stream: true, LatencyMS: 1500, RequestTime: requestTime,
		},
		{
			EventID: unknown.ID, Organization: "orgs/acme", Project: "orgs/acme/projects/web", KeyID: "k-123",
			Model: "new", Upstream: "brand-new-model", Prov: "orgs/acme/providers/mock",
			In: 7, Out: 0, Cost: 0, Currency: "USD", Priced: false, PriceVersion: prices.Version(),
			HTTPStatus: 502, RequestTime: requestTime.Add(time.Second),
		},
	}
	if diff := cmp.Diff(want, rows(t, e.pool)); diff != "" {
		t.Errorf("ledger mismatch (-want +got):\n%s", diff)
	}
	if n := unpricedCount(t, e.reader); n != 1 {
		t.Errorf("moat_billing_unpriced_total = %d, want 1", n)
	}
	if n := count(t, e.pool, `SELECT count(*) FROM dead_letters`); n != 0 {
		t.Errorf("dead letters = %d, want 0", n)
	}
}

// Every token kind of an event is stored, and each is priced at its own
// rate: gpt-4o's table entry has a cached-input rate (1.25 USD per
// million) and no cache-write rate, so writes cost the input rate (2.50);
// reasoning is inside the output and not charged again. An event from a
// gateway that predates the kinds prices exactly as before.
func TestTokenKindsAreStoredAndPriced(t *testing.T) {
	t.Parallel()
	e := start(t)
	prices, _ := billing.EmbeddedPrices()
	every := usage(t, func(u *gatewayv1.UsageRecorded) {
		u.UpstreamModel = "gpt-4o"
		u.InputTokens, u.CacheReadInputTokens, u.CacheWriteInputTokens = 1000, 4000, 2000
		u.OutputTokens, u.ReasoningTokens = 500, 300
		u.UsageEstimated = true
	})
	old := usage(t, func(u *gatewayv1.UsageRecorded) {
		u.UpstreamModel = "gpt-4o"
		u.RequestTime = timestamppb.New(requestTime.Add(time.Second))
	})
	e.publish(t, every)
	e.waitSettled(t, e.publish(t, old))

	base := row{Organization: "orgs/acme", Project: "orgs/acme/projects/web", KeyID: "k-123", Model: "chat", Upstream: "gpt-4o",
		Prov: "orgs/acme/providers/mock", Currency: "USD", Priced: true, PriceVersion: prices.Version(), HTTPStatus: 200, Stream: true, LatencyMS: 1500}
	wantEvery, wantOld := base, base
	wantEvery.EventID, wantEvery.RequestTime = every.ID, requestTime
	wantEvery.In, wantEvery.CacheRead, wantEvery.CacheWrite, wantEvery.Out, wantEvery.Reasoning, wantEvery.Estimated = 1000, 4000, 2000, 500, 300, true
	// 1000 × 2.50 + 4000 × 1.25 + 2000 × 2.50 + 500 × 10.00 micro-USD.
	wantEvery.Cost = 2500 + 5000 + 5000 + 5000
	wantOld.EventID, wantOld.RequestTime = old.ID, requestTime.Add(time.Second)
	wantOld.In, wantOld.Out = 1000, 500
	wantOld.Cost = 2500 + 5000 // input and output rates only, as before the kinds
	if diff := cmp.Diff([]row{wantEvery, wantOld}, rows(t, e.pool)); diff != "" {
		t.Errorf("ledger mismatch (-want +got):\n%s", diff)
	}
}

func TestRedeliveredUsageEventIsRecordedOnce(t *testing.T) {
	t.Parallel()
	e := start(t)
	ev := usage(t, func(u *gatewayv1.UsageRecorded) { u.UpstreamModel = "unpriced-model" })
	e.publish(t, ev)
	// The same id again, within the dedupe window: the stream drops it.
	e.publish(t, ev)
	// The same event again past the dedupe window: the stream keeps it (a
	// new Nats-Msg-Id), the consumer must not count it twice.
	msg := &nats.Msg{Subject: ledger.Subject, Data: ev.Data, Header: nats.Header{}}
	msg.Header.Set(events.HeaderID, ev.ID.String())
	msg.Header.Set(events.HeaderType, ev.Type)
	msg.Header.Set(events.HeaderSource, ev.Source)
	seq := e.publishRaw(t, msg)
	if seq != 2 {
		t.Fatalf("republished event got stream sequence %d, want 2 (one stored copy before it)", seq)
	}
	e.waitSettled(t, seq)
	// And a direct redelivery to the handler.
	if err := e.proj.Handle(context.Background(), ev); err != nil {
		t.Fatalf("Handle(redelivery) = %v", err)
	}

	if got := rows(t, e.pool); len(got) != 1 || got[0].EventID != ev.ID {
		t.Errorf("ledger rows = %+v, want one row for %s", got, ev.ID)
	}
	if n := count(t, e.pool, `SELECT count(*) FROM processed_events WHERE consumer = $1`, ledger.Durable); n != 1 {
		t.Errorf("processed_events rows = %d, want 1", n)
	}
	if n := unpricedCount(t, e.reader); n != 1 {
		t.Errorf("moat_billing_unpriced_total = %d after redelivery, want 1", n)
	}
}

func TestPoisonUsageEventsAreDeadLettered(t *testing.T) {
	t.Parallel()
	e := start(t)
	garbage := usage(t, nil)
	garbage.Data = []byte{0xff, 0xff, 0xff}
	noProject := usage(t, func(u *gatewayv1.UsageRecorded) { u.Project = "" })
	wrongType := rawEvent(t, uuid.Must(uuid.NewV7()), "google.protobuf.StringValue", wrapperspb.String("hi"))
	good := usage(t, nil)

	for _, ev := range []events.Event{garbage, noProject, wrongType} {
		e.publish(t, ev)
	}
	e.waitSettled(t, e.publish(t, good))

	if got := rows(t, e.pool); len(got) != 1 || got[0].EventID != good.ID {
		t.Errorf("ledger rows = %+v, want only the good event %s", got, good.ID)
	}
	var dead []string
	rs, err := e.pool.Query(context.Background(), `SELECT event_id FROM dead_letters WHERE consumer = $1 ORDER BY stream_seq`, ledger.Durable)
	if err != nil {
		t.Fatal(err)
	}
	dead, err = pgx.CollectRows(rs, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	want := []string{garbage.ID.String(), noProject.ID.String(), wrongType.ID.String()}
	if diff := cmp.Diff(want, dead); diff != "" {
		t.Errorf("dead letters mismatch (-want +got):\n%s", diff)
	}
}

func TestInvalidUsageEventsArePermanent(t *testing.T) {
	t.Parallel()
	prices, err := billing.EmbeddedPrices()
	if err != nil {
		t.Fatal(err)
	}
	// No database: validation refuses these before any write.
	proj, err := ledger.New(nil, prices, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		edit func(*gatewayv1.UsageRecorded)
	}{
		{"no organization", func(u *gatewayv1.UsageRecorded) { u.Organization = "" }},
		{"no project", func(u *gatewayv1.UsageRecorded) { u.Project = "" }},
		{"organization only as project", func(u *gatewayv1.UsageRecorded) { u.Project = "orgs/acme" }},
		{"project of another organization", func(u *gatewayv1.UsageRecorded) { u.Organization = "orgs/other" }},
		{"malformed project", func(u *gatewayv1.UsageRecorded) { u.Project = "orgs/acme/projects/" }},
		{"no key", func(u *gatewayv1.UsageRecorded) { u.KeyId = "" }},
		{"no request time", func(u *gatewayv1.UsageRecorded) { u.RequestTime = nil }},
		{"negative tokens", func(u *gatewayv1.UsageRecorded) { u.OutputTokens = -1 }},
		{"negative cache reads", func(u *gatewayv1.UsageRecorded) { u.CacheReadInputTokens = -1 }},
		{"negative cache writes", func(u *gatewayv1.UsageRecorded) { u.CacheWriteInputTokens = -1 }},
		{"reasoning beyond the output", func(u *gatewayv1.UsageRecorded) { u.OutputTokens, u.ReasoningTokens = 10, 11 }},
		{"negative latency", func(u *gatewayv1.UsageRecorded) { u.Latency = durationpb.New(-time.Second) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := proj.Handle(context.Background(), usage(t, tt.edit))
			if !events.IsPermanent(err) {
				t.Errorf("Handle() = %v, want a permanent error", err)
			}
			var verr *billing.ValidationError
			if !errors.As(err, &verr) {
				t.Errorf("Handle() = %v, want it to wrap a ValidationError", err)
			}
		})
	}
}
