package keyusage_test

import (
	"context"
	"crypto/rand"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/moat-ai/moat/libs/events"
	"github.com/moat-ai/moat/libs/events/eventstest"
	"github.com/moat-ai/moat/libs/pg/pgtest"
	gatewayv1 "github.com/moat-ai/moat/proto/gen/go/moat/gateway/v1"
	"github.com/moat-ai/moat/services/identity/internal/identity"
	"github.com/moat-ai/moat/services/identity/internal/keyusage"
	"github.com/moat-ai/moat/services/identity/internal/postgres"
)

// t0 has microsecond precision, as PostgreSQL stores it.
var t0 = time.Date(2025, 3, 4, 5, 6, 7, 123456000, time.UTC)

const project = "orgs/acme/projects/web"

type env struct {
	pool  *pgxpool.Pool
	js    jetstream.JetStream
	store *postgres.Store
	rec   *keyusage.Recorder
}

// start runs the recorder's consumer against a fresh database and an
// in-process NATS server holding the GATEWAY stream.
func start(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	pool, _ := pgtest.NewDatabase(t, events.Migrations, postgres.Migrations)
	_, js := eventstest.Connect(t, eventstest.NewServer(t))
	if _, err := events.EnsureStream(ctx, js, events.StreamConfig{Name: keyusage.Stream, Subjects: []string{"gateway.>"}}); err != nil {
		t.Fatal(err)
	}
	store := postgres.NewStore(pool, nil)
	rec := keyusage.New(store)
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	c := &events.Consumer{JS: js, Pool: pool, Config: keyusage.ConsumerConfig(), Handler: rec.Handle}
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
	return &env{pool: pool, js: js, store: store, rec: rec}
}

// createKey stores a new project key and returns it.
func (e *env) createKey(t *testing.T) identity.Key {
	t.Helper()
	h := make([]byte, 32)
	_, _ = rand.Read(h)
	k := identity.Key{ID: uuid.Must(uuid.NewV7()).String(), Role: identity.RoleProject, Organization: "orgs/acme",
		Project: project, DisplayName: "ci", Prefix: "moat_abcdefg", HMAC: h, CreateTime: t0.Add(-time.Hour)}
	got, _, err := e.store.CreateKey(context.Background(), k, func(k identity.Key) identity.AuditRecord {
		return identity.AuditRecord{Organization: k.Organization, Target: k.Name(), Outcome: identity.OutcomeAllowed, Time: t0}
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// usage returns a usage event of key keyID at requestTime.
func usage(t *testing.T, keyID string, requestTime time.Time) events.Event {
	t.Helper()
	return rawEvent(t, "", &gatewayv1.UsageRecorded{
		RequestId: uuid.Must(uuid.NewV7()).String(), Organization: "orgs/acme", Project: project, KeyId: keyID,
		Model: "chat", UpstreamModel: "mock-model", Provider: "orgs/acme/providers/mock",
		InputTokens: 10, OutputTokens: 5, HttpStatus: 200, RequestTime: timestamppb.New(requestTime),
	})
}

// rawEvent wraps m as an event; typ defaults to m's full name.
func rawEvent(t *testing.T, typ string, m proto.Message) events.Event {
	t.Helper()
	data, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if typ == "" {
		typ = string(m.ProtoReflect().Descriptor().FullName())
	}
	return events.Event{
		ID: uuid.Must(uuid.NewV7()), Subject: keyusage.Subject, Type: typ, Source: "moat/gateway",
		Resource: project, Time: t0, Data: data, Header: nats.Header{},
	}
}

// publish publishes ev and waits until the consumer has settled it.
func (e *env) publish(t *testing.T, ev events.Event) {
	t.Helper()
	ack, err := events.Publish(context.Background(), e.js, nil, ev)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "consumer to settle the stream", func() bool {
		c, err := e.js.Consumer(context.Background(), keyusage.Stream, keyusage.Durable)
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		return err == nil && info.AckFloor.Stream >= ack.Sequence && info.NumAckPending == 0
	})
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

// keyRow is what the tests observe of a key's row: xmin changes with every
// write of the row, so an unchanged xmin proves that no write happened.
type keyRow struct {
	LastUsed *time.Time
	Version  int64
	Xmin     uint32
}

func (e *env) row(t *testing.T, id string) keyRow {
	t.Helper()
	var r keyRow
	if err := e.pool.QueryRow(context.Background(),
		`SELECT last_used_at, version, xmin::text::bigint FROM api_keys WHERE id = $1`, id).
		Scan(&r.LastUsed, &r.Version, &r.Xmin); err != nil {
		t.Fatal(err)
	}
	if r.LastUsed != nil {
		u := r.LastUsed.UTC()
		r.LastUsed = &u
	}
	return r
}

func deadLetters(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	rs, err := pool.Query(context.Background(), `SELECT event_id FROM dead_letters WHERE consumer = $1 ORDER BY stream_seq`, keyusage.Durable)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rs, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func TestUsageMovesLastUseForwardAtMostOnceAMinute(t *testing.T) {
	t.Parallel()
	e := start(t)
	k := e.createKey(t)
	other := e.createKey(t)
	created := e.row(t, k.ID)
	if created.LastUsed != nil {
		t.Fatalf("new key last_used_at = %v, want NULL", created.LastUsed)
	}

	steps := []struct {
		name    string
		at      time.Time
		want    time.Time
		written bool
	}{
		{"first use", t0, t0, true},
		{"older event does not move it back", t0.Add(-time.Hour), t0, false},
		{"within a minute is not written", t0.Add(59 * time.Second), t0, false},
		{"a minute later is written", t0.Add(time.Minute), t0.Add(time.Minute), true},
	}
	prev := created
	for _, s := range steps {
		e.publish(t, usage(t, k.ID, s.at))
		got := e.row(t, k.ID)
		if got.LastUsed == nil || !got.LastUsed.Equal(s.want) {
			t.Errorf("%s: last_used_at = %v, want %v", s.name, got.LastUsed, s.want)
		}
		if written := got.Xmin != prev.Xmin; written != s.written {
			t.Errorf("%s: row written = %v, want %v", s.name, written, s.written)
		}
		// Last use is not part of the key index.
		if got.Version != created.Version {
			t.Errorf("%s: version = %d, want %d (unchanged)", s.name, got.Version, created.Version)
		}
		prev = got
	}
	if r := e.row(t, other.ID); r.LastUsed != nil {
		t.Errorf("other key last_used_at = %v, want NULL", r.LastUsed)
	}

	// Unknown keys are acknowledged and ignored, not dead-lettered.
	e.publish(t, usage(t, uuid.Must(uuid.NewV7()).String(), t0))
	if got := deadLetters(t, e.pool); len(got) != 0 {
		t.Errorf("dead letters = %v, want none", got)
	}
	// No processed_events bookkeeping: redelivery is harmless by itself.
	var n int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM processed_events`).Scan(&n); err != nil || n != 0 {
		t.Errorf("processed_events rows = %d (%v), want 0", n, err)
	}
	changed, _, err := e.store.ChangesSince(context.Background(), created.Version, 10)
	if err != nil || len(changed) != 1 || changed[0].ID != other.ID {
		t.Errorf("ChangesSince(%d) = %v, %v; want only the key created after it", created.Version, changed, err)
	}
}

func TestRedeliveryIsHarmless(t *testing.T) {
	t.Parallel()
	e := start(t)
	k := e.createKey(t)
	ev := usage(t, k.ID, t0)
	e.publish(t, ev)
	before := e.row(t, k.ID)
	if err := e.rec.Handle(context.Background(), ev); err != nil {
		t.Fatalf("Handle(redelivery) = %v", err)
	}
	if diff := cmp.Diff(before, e.row(t, k.ID)); diff != "" {
		t.Errorf("row changed by a redelivery (-before +after):\n%s", diff)
	}
}

func TestPoisonUsageEventsAreDeadLettered(t *testing.T) {
	t.Parallel()
	e := start(t)
	k := e.createKey(t)
	garbage := usage(t, k.ID, t0)
	garbage.Data = []byte{0xff, 0xff, 0xff}
	badKeyID := usage(t, "k-123", t0)
	noTime := usage(t, k.ID, t0)
	noTime.Data, _ = proto.Marshal(&gatewayv1.UsageRecorded{KeyId: k.ID})
	wrongType := rawEvent(t, "google.protobuf.StringValue", wrapperspb.String("hi"))
	good := usage(t, k.ID, t0)

	for _, ev := range []events.Event{garbage, badKeyID, noTime, wrongType, good} {
		e.publish(t, ev)
	}

	if r := e.row(t, k.ID); r.LastUsed == nil || !r.LastUsed.Equal(t0) {
		t.Errorf("last_used_at = %v, want %v from the good event", r.LastUsed, t0)
	}
	want := []string{garbage.ID.String(), badKeyID.ID.String(), noTime.ID.String(), wrongType.ID.String()}
	if diff := cmp.Diff(want, deadLetters(t, e.pool)); diff != "" {
		t.Errorf("dead letters mismatch (-want +got):\n%s", diff)
	}
}
