package events

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/moat-ai/moat/libs/events/eventstest"
	"github.com/moat-ai/moat/libs/pg"
	"github.com/moat-ai/moat/libs/pg/pgtest"
)

const (
	testStream  = "TESTSVC"
	testSubject = "testsvc.v1.thing.happened"
)

var testStreamConfig = StreamConfig{Name: testStream, Subjects: []string{"testsvc.>"}}

// effectsTable is the projection the test handlers write: one row per
// applied event, so a duplicate effect is a duplicate row.
const effectsTable = `CREATE TABLE effects (event_id uuid NOT NULL, value text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`

func newDB(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool, _ := pgtest.NewDatabase(t, Migrations)
	if _, err := pool.Exec(context.Background(), effectsTable); err != nil {
		t.Fatalf("create effects table: %v", err)
	}
	return pool
}

func newEvent(t *testing.T, value string) Event {
	t.Helper()
	ev, err := New("moat/testsvc", testSubject, "things/"+value, wrapperspb.String(value))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return ev
}

// applyOnce is the handler shape every Moat projection follows.
func applyOnce(pool *pgxpool.Pool, consumer string) Handler {
	return func(ctx context.Context, ev Event) error {
		var v wrapperspb.StringValue
		if err := ev.Decode(&v); err != nil {
			return Permanent(err)
		}
		return pg.InTx(ctx, pool, func(tx pgx.Tx) error {
			first, err := MarkProcessed(ctx, tx, consumer, ev.ID)
			if err != nil || !first {
				return err
			}
			_, err = tx.Exec(ctx, `INSERT INTO effects (event_id, value) VALUES ($1, $2)`, ev.ID, v.GetValue())
			return err
		})
	}
}

func effects(t *testing.T, pool *pgxpool.Pool) map[string]int {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT value, count(*) FROM effects GROUP BY value`)
	if err != nil {
		t.Fatalf("read effects: %v", err)
	}
	got := map[string]int{}
	for rows.Next() {
		var v string
		var n int
		if err := rows.Scan(&v, &n); err != nil {
			t.Fatal(err)
		}
		got[v] = n
	}
	if err := rows.Err(); err != nil {
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

func startConsumer(t *testing.T, c *Consumer) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx) }()
	var once atomic.Bool
	stop = func() error {
		if !once.CompareAndSwap(false, true) {
			return nil
		}
		cancel()
		select {
		case err := <-errc:
			return err
		case <-time.After(10 * time.Second):
			return errors.New("consumer did not stop within 10s")
		}
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func streamState(t *testing.T, js jetstream.JetStream) jetstream.StreamState {
	t.Helper()
	s, err := js.Stream(context.Background(), testStream)
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	return info.State
}

// RELIABILITY.md scenario 1: a publish retried with the same event id
// (after a lost PubAck) is stored once.
func TestPublishSameIDTwiceStoredOnce(t *testing.T) {
	t.Parallel()
	srv := eventstest.NewServer(t)
	_, js := eventstest.Connect(t, srv)
	ctx := context.Background()
	if _, err := EnsureStream(ctx, js, testStreamConfig); err != nil {
		t.Fatal(err)
	}
	ev := newEvent(t, "once")
	first, err := Publish(ctx, js, nil, ev)
	if err != nil {
		t.Fatalf("first Publish: %v", err)
	}
	second, err := Publish(ctx, js, nil, ev)
	if err != nil {
		t.Fatalf("second Publish: %v", err)
	}
	if first.Duplicate || !second.Duplicate {
		t.Errorf("Duplicate flags = %v, %v; want false, true", first.Duplicate, second.Duplicate)
	}
	if st := streamState(t, js); st.Msgs != 1 {
		t.Errorf("stream holds %d messages, want 1", st.Msgs)
	}
}

// Message carries the event id three times (Nats-Msg-Id, ce-id and the
// stream's dedupe key all agree), keeps the event's extra headers and owns
// its header map.
func TestMessage(t *testing.T) {
	t.Parallel()
	ev := newEvent(t, "wire")
	ev.Time = time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	ev.Header.Set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	id := ev.ID.String()

	msg := Message(ev)
	msg.Header.Set("added", "by the caller")

	want := nats.Header{
		jetstream.MsgIDHeader: {id},
		HeaderSpecVersion:     {"1.0"},
		HeaderID:              {id},
		HeaderSource:          {"moat/testsvc"},
		HeaderType:            {"google.protobuf.StringValue"},
		HeaderSubject:         {"things/wire"},
		HeaderTime:            {"2026-01-02T03:04:05.000000006Z"},
		HeaderContentType:     {"application/protobuf"},
		"traceparent":         {"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
		"added":               {"by the caller"},
	}
	if diff := cmp.Diff(want, msg.Header); diff != "" {
		t.Errorf("Message headers mismatch (-want +got):\n%s", diff)
	}
	if msg.Subject != testSubject || string(msg.Data) != string(ev.Data) {
		t.Errorf("Message = subject %q, data %q; want %q, %q", msg.Subject, msg.Data, testSubject, ev.Data)
	}
	if got := ev.Header.Get("added"); got != "" {
		t.Errorf("event header \"added\" = %q after changing the message's, want the event untouched", got)
	}
}

// RELIABILITY.md scenario 7: the relay dies after the PubAck and before it
// marks the rows; its successor republishes them under the same ids, the
// stream drops the duplicates, the outbox drains and each effect happens once.
func TestRelayCrashAfterPubAckCausesNoDuplicate(t *testing.T) {
	t.Parallel()
	pool := newDB(t)
	srv := eventstest.NewServer(t)
	_, js := eventstest.Connect(t, srv)
	ctx := context.Background()

	want := map[string]int{}
	if err := pg.InTx(ctx, pool, func(tx pgx.Tx) error {
		for i := range 5 {
			v := fmt.Sprintf("e%d", i)
			want[v] = 1
			if err := Enqueue(ctx, tx, nil, newEvent(t, v)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("enqueue: %v", err)
	}

	// The first relay publishes, gets every PubAck, and dies.
	rctx, kill := context.WithCancel(ctx)
	var killedAfter atomic.Int32
	dying := &Relay{Pool: pool, JS: js, Stream: testStreamConfig, PollInterval: 50 * time.Millisecond, LockRetry: 20 * time.Millisecond,
		afterPublish: func(ids []uuid.UUID) error {
			killedAfter.Store(int32(len(ids)))
			kill()
			return errors.New("relay killed after PubAck")
		}}
	if err := dying.Run(rctx); err != nil {
		t.Fatalf("dying relay Run = %v", err)
	}
	if got := killedAfter.Load(); got != 5 {
		t.Fatalf("relay died after %d PubAcks, want 5", got)
	}
	if n := count(t, pool, `SELECT count(*) FROM outbox WHERE published_at IS NULL`); n != 5 {
		t.Fatalf("unpublished rows after the crash = %d, want 5", n)
	}
	if st := streamState(t, js); st.Msgs != 5 {
		t.Fatalf("stream holds %d messages after first relay, want 5", st.Msgs)
	}

	// Its successor republishes the same rows.
	next := &Relay{Pool: pool, JS: js, Stream: testStreamConfig, PollInterval: 50 * time.Millisecond, LockRetry: 20 * time.Millisecond}
	nctx, stopNext := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- next.Run(nctx) }()
	eventually(t, 10*time.Second, "outbox to drain", func() bool {
		return count(t, pool, `SELECT count(*) FROM outbox WHERE published_at IS NULL`) == 0
	})
	stopNext()
	if err := <-done; err != nil {
		t.Fatalf("relay Run = %v", err)
	}
	if st := streamState(t, js); st.Msgs != 5 || st.LastSeq != 5 {
		t.Errorf("stream state after republish = %d msgs, last seq %d; want 5, 5", st.Msgs, st.LastSeq)
	}

	stop := startConsumer(t, &Consumer{JS: js, Pool: pool, Handler: applyOnce(pool, "test-effects"),
		Config: ConsumerConfig{Stream: testStream, Durable: "test-effects", AckWait: time.Second}})
	eventually(t, 10*time.Second, "five effects", func() bool { return len(effects(t, pool)) == 5 })
	if err := stop(); err != nil {
		t.Fatalf("consumer Run = %v", err)
	}
	if diff := cmp.Diff(want, effects(t, pool)); diff != "" {
		t.Errorf("effects mismatch (-want +got):\n%s", diff)
	}
}

// RELIABILITY.md scenario 3: the consumer commits its effect and dies before
// the ack. JetStream redelivers; the second delivery finds the event in
// processed_events and changes nothing.
func TestConsumerDiesAfterCommitBeforeAck(t *testing.T) {
	t.Parallel()
	pool := newDB(t)
	srv := eventstest.NewServer(t)
	_, js := eventstest.Connect(t, srv)
	ctx := context.Background()
	if _, err := EnsureStream(ctx, js, testStreamConfig); err != nil {
		t.Fatal(err)
	}
	ev := newEvent(t, "crash")
	if _, err := Publish(ctx, js, nil, ev); err != nil {
		t.Fatal(err)
	}
	cfg := ConsumerConfig{Stream: testStream, Durable: "test-crash", AckWait: time.Second, BackOff: []time.Duration{50 * time.Millisecond}}

	// The first process commits, then loses its connection before it can ack.
	nc1, js1 := eventstest.Connect(t, srv)
	apply := applyOnce(pool, cfg.Durable)
	var firstDelivery atomic.Uint64
	crashing := &Consumer{JS: js1, Pool: pool, Config: cfg, Handler: func(ctx context.Context, ev Event) error {
		if err := apply(ctx, ev); err != nil {
			return err
		}
		firstDelivery.Store(ev.NumDelivered)
		nc1.Close() // the process dies here: committed, not acked
		return nil
	}}
	if err := crashing.Run(ctx); err == nil {
		t.Fatal("crashing consumer Run = nil, want a closed-connection error")
	}
	if got := effects(t, pool); got["crash"] != 1 {
		t.Fatalf("effects after first delivery = %v, want crash:1", got)
	}

	// The restarted process gets the event again and acks it.
	var redelivered atomic.Uint64
	_, js2 := eventstest.Connect(t, srv)
	stop := startConsumer(t, &Consumer{JS: js2, Pool: pool, Config: cfg, Handler: func(ctx context.Context, ev Event) error {
		redelivered.Store(ev.NumDelivered)
		return apply(ctx, ev)
	}})
	eventually(t, 10*time.Second, "redelivery", func() bool { return redelivered.Load() > 0 })
	cons, err := js.Consumer(ctx, testStream, cfg.Durable)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "ack", func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumAckPending == 0 && info.AckFloor.Stream == 1
	})
	if err := stop(); err != nil {
		t.Fatalf("consumer Run = %v", err)
	}
	if got := redelivered.Load(); got < 2 {
		t.Errorf("NumDelivered on redelivery = %d, want > 1", got)
	}
	if diff := cmp.Diff(map[string]int{"crash": 1}, effects(t, pool)); diff != "" {
		t.Errorf("effects mismatch (-want +got):\n%s", diff)
	}
	if n := count(t, pool, `SELECT count(*) FROM processed_events WHERE consumer = $1`, cfg.Durable); n != 1 {
		t.Errorf("processed_events rows = %d, want 1", n)
	}
}

// RELIABILITY.md scenario 5: poison messages land in the dead-letter table,
// the events after them keep flowing, and the alert metric counts them.
func TestPoisonMessagesAreDeadLettered(t *testing.T) {
	t.Parallel()
	pool := newDB(t)
	srv := eventstest.NewServer(t)
	nc, js := eventstest.Connect(t, srv)
	ctx := context.Background()
	if _, err := EnsureStream(ctx, js, testStreamConfig); err != nil {
		t.Fatal(err)
	}

	publish := func(ev Event) {
		t.Helper()
		if _, err := Publish(ctx, js, nil, ev); err != nil {
			t.Fatal(err)
		}
	}
	publish(newEvent(t, "before"))
	// No CloudEvents headers at all.
	if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: testSubject, Data: []byte("not a proto")}); err != nil {
		t.Fatal(err)
	}
	// Right headers, payload of another type.
	wrongType := newEvent(t, "x")
	wrongType.Type = "moat.testsvc.v1.Other"
	publish(wrongType)
	// Decodable, but the handler fails on it every time.
	publish(newEvent(t, "always-fails"))
	publish(newEvent(t, "after"))

	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	apply := applyOnce(pool, "test-poison")
	stop := startConsumer(t, &Consumer{JS: js, Pool: pool, Meter: mp,
		Config: ConsumerConfig{Stream: testStream, Durable: "test-poison", AckWait: time.Second, MaxDeliver: 3,
			BackOff: []time.Duration{10 * time.Millisecond}},
		Handler: func(ctx context.Context, ev Event) error {
			var v wrapperspb.StringValue
			if err := ev.Decode(&v); err == nil && v.GetValue() == "always-fails" {
				return errors.New("downstream unavailable")
			}
			return apply(ctx, ev)
		}})

	eventually(t, 15*time.Second, "three dead letters", func() bool {
		return count(t, pool, `SELECT count(*) FROM dead_letters`) == 3
	})
	eventually(t, 5*time.Second, "events after the poison", func() bool { return effects(t, pool)["after"] == 1 })
	if err := stop(); err != nil {
		t.Fatalf("consumer Run = %v", err)
	}
	if diff := cmp.Diff(map[string]int{"before": 1, "after": 1}, effects(t, pool)); diff != "" {
		t.Errorf("effects mismatch (-want +got):\n%s", diff)
	}
	var failedDeliveries int
	if err := pool.QueryRow(ctx, `SELECT num_delivered FROM dead_letters WHERE error LIKE '%downstream unavailable%'`).Scan(&failedDeliveries); err != nil {
		t.Fatalf("dead letter of the failing event: %v", err)
	}
	if failedDeliveries != 3 {
		t.Errorf("failing event dead-lettered after %d deliveries, want MaxDeliver = 3", failedDeliveries)
	}
	var payload []byte
	if err := pool.QueryRow(ctx, `SELECT payload FROM dead_letters WHERE event_id = ''`).Scan(&payload); err != nil {
		t.Fatalf("dead letter of the header-less message: %v", err)
	}
	if string(payload) != "not a proto" {
		t.Errorf("dead letter payload = %q, want the original bytes", payload)
	}
	if got := counterValue(t, reader, "moat_events_dead_lettered_total"); got != 3 {
		t.Errorf("moat_events_dead_lettered_total = %d, want 3", got)
	}
	_ = nc
}

// Trace context crosses the outbox and NATS: the consumer's span continues
// the trace of the request that enqueued the event.
func TestTraceContextCrossesOutboxAndNATS(t *testing.T) {
	t.Parallel()
	pool := newDB(t)
	srv := eventstest.NewServer(t)
	_, js := eventstest.Connect(t, srv)
	tp := sdktrace.NewTracerProvider()
	prop := propagation.TraceContext{}

	ctx, span := tp.Tracer("test").Start(context.Background(), "request")
	if err := pg.InTx(ctx, pool, func(tx pgx.Tx) error { return Enqueue(ctx, tx, prop, newEvent(t, "traced")) }); err != nil {
		t.Fatal(err)
	}
	span.End()

	rctx, stopRelay := context.WithCancel(context.Background())
	defer stopRelay()
	go func() {
		_ = (&Relay{Pool: pool, JS: js, Stream: testStreamConfig, PollInterval: 50 * time.Millisecond}).Run(rctx)
	}()

	got := make(chan trace.TraceID, 1)
	startConsumer(t, &Consumer{JS: js, Pool: pool, Tracer: tp, Prop: prop,
		Config: ConsumerConfig{Stream: testStream, Durable: "test-trace"},
		Handler: func(ctx context.Context, _ Event) error {
			select {
			case got <- trace.SpanContextFromContext(ctx).TraceID():
			default:
			}
			return nil
		}})
	select {
	case id := <-got:
		if want := span.SpanContext().TraceID(); id != want {
			t.Errorf("consumer trace id = %s, want %s", id, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("event not consumed within 10s")
	}
}

// RELIABILITY.md scenario 9: a full stream refuses new events (discard:
// new) instead of silently deleting unconsumed ones.
func TestFullStreamRefusesInsteadOfDropping(t *testing.T) {
	t.Parallel()
	srv := eventstest.NewServer(t)
	_, js := eventstest.Connect(t, srv)
	ctx := context.Background()
	cfg := testStreamConfig
	cfg.MaxBytes = 4096
	if _, err := EnsureStream(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	var refused error
	for i := range 200 {
		if _, err := Publish(ctx, js, nil, newEvent(t, fmt.Sprintf("fill-%03d", i))); err != nil {
			refused = err
			break
		}
	}
	if refused == nil {
		t.Fatal("publishing 200 events into a 4 KiB stream never failed")
	}
	st := streamState(t, js)
	if st.FirstSeq != 1 {
		t.Errorf("first sequence = %d, want 1: an unconsumed event was deleted", st.FirstSeq)
	}
}

func TestEnsureStreamIsIdempotentAndFileBacked(t *testing.T) {
	t.Parallel()
	srv := eventstest.NewServer(t)
	_, js := eventstest.Connect(t, srv)
	ctx := context.Background()
	for range 2 {
		if _, err := EnsureStream(ctx, js, testStreamConfig); err != nil {
			t.Fatalf("EnsureStream: %v", err)
		}
	}
	s, err := js.Stream(ctx, testStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := struct {
		Storage    jetstream.StorageType
		Discard    jetstream.DiscardPolicy
		Duplicates time.Duration
	}{info.Config.Storage, info.Config.Discard, info.Config.Duplicates}
	want := struct {
		Storage    jetstream.StorageType
		Discard    jetstream.DiscardPolicy
		Duplicates time.Duration
	}{jetstream.FileStorage, jetstream.DiscardNew, DefaultDuplicates}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("stream config mismatch (-want +got):\n%s", diff)
	}
}

func counterValue(t *testing.T, r *sdkmetric.ManualReader, name string) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			if sum, ok := m.Data.(metricdata.Sum[int64]); ok {
				for _, dp := range sum.DataPoints {
					total += dp.Value
				}
			}
		}
	}
	return total
}

// While NATS is down the outbox keeps the events; when it is back the relay
// publishes every one of them, and rows published long ago are purged.
func TestRelaySurvivesNATSOutageAndPurgesOldRows(t *testing.T) {
	t.Parallel()
	pool := newDB(t)
	srv := eventstest.NewServer(t)
	nc, err := nats.Connect(srv.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	old := newEvent(t, "published-long-ago")
	if err := pg.InTx(ctx, pool, func(tx pgx.Tx) error { return Enqueue(ctx, tx, nil, old) }); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE outbox SET published_at = now() - interval '2 hours' WHERE event_id = $1`, old.ID); err != nil {
		t.Fatal(err)
	}

	rctx, stopRelay := context.WithCancel(ctx)
	defer stopRelay()
	relay := &Relay{Pool: pool, JS: js, Stream: testStreamConfig, PollInterval: 50 * time.Millisecond, Retention: time.Hour}
	done := make(chan error, 1)
	go func() { done <- relay.Run(rctx) }()
	eventually(t, 10*time.Second, "old published row purged", func() bool {
		return count(t, pool, `SELECT count(*) FROM outbox WHERE event_id = $1`, old.ID) == 0
	})

	srv.Shutdown()
	srv.WaitForShutdown()
	if err := pg.InTx(ctx, pool, func(tx pgx.Tx) error {
		for i := range 3 {
			if err := Enqueue(ctx, tx, nil, newEvent(t, fmt.Sprintf("during-outage-%d", i))); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("enqueue while NATS is down: %v", err)
	}
	if n := count(t, pool, `SELECT count(*) FROM outbox WHERE published_at IS NULL`); n != 3 {
		t.Fatalf("pending rows during the outage = %d, want 3", n)
	}

	srv.Restart(t)
	eventually(t, 20*time.Second, "outbox to drain after NATS came back", func() bool {
		return count(t, pool, `SELECT count(*) FROM outbox WHERE published_at IS NULL`) == 0
	})
	stopRelay()
	if err := <-done; err != nil {
		t.Fatalf("relay Run = %v", err)
	}
	if st := streamState(t, js); st.Msgs != 3 {
		t.Errorf("stream holds %d messages, want the 3 enqueued during the outage", st.Msgs)
	}
}
