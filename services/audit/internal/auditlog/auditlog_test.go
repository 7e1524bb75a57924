package auditlog_test

import (
	"context"
	"encoding/json"
	"errors"
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
	auditv1 "github.com/moat-ai/moat/proto/gen/go/moat/audit/v1"
	"github.com/moat-ai/moat/services/audit/internal/audit"
	"github.com/moat-ai/moat/services/audit/internal/auditlog"
	"github.com/moat-ai/moat/services/audit/internal/postgres"
)

var eventTime = time.Date(2025, 3, 4, 5, 6, 7, 123456000, time.UTC)

// auditEvent returns a valid audit event from producer on subject; edit
// changes it.
func auditEvent(t *testing.T, producer, subject string, edit func(*auditv1.AuditEvent)) events.Event {
	t.Helper()
	m := &auditv1.AuditEvent{
		Organization:  "orgs/acme",
		Actor:         "keys/k-admin",
		Action:        "moat.config.v1.ConfigService.CreateProject",
		Target:        "orgs/acme/projects/web",
		Outcome:       auditv1.AuditEvent_OUTCOME_ALLOWED,
		Status:        "OK",
		SourceAddress: "192.0.2.7",
		RequestId:     "req-1",
		EventTime:     timestamppb.New(eventTime),
	}
	if edit != nil {
		edit(m)
	}
	ev, err := events.New(producer, subject, m.GetTarget(), m)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

type env struct {
	pool *pgxpool.Pool
	js   jetstream.JetStream
	proj *auditlog.Projector
}

// start runs both of the projector's consumers against a fresh database and
// an in-process NATS server. The producers' streams are created after the
// consumers start, as happens when audit starts before config or identity.
func start(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	pool, _ := pgtest.NewDatabase(t, events.Migrations, postgres.Migrations)
	_, js := eventstest.Connect(t, eventstest.NewServer(t))
	proj := auditlog.New(pool)
	cctx, cancel := context.WithCancel(ctx)
	cfgs := auditlog.ConsumerConfigs()
	done := make(chan error, len(cfgs))
	for _, cfg := range cfgs {
		c := &events.Consumer{JS: js, Pool: pool, Config: cfg, Handler: proj.Handle}
		go func() { done <- c.Run(cctx) }()
	}
	t.Cleanup(func() {
		cancel()
		for range cfgs {
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("consumer Run = %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("consumer did not stop within 10s")
			}
		}
	})
	for _, s := range []events.StreamConfig{
		{Name: auditlog.ConfigStream, Subjects: []string{"config.>"}},
		{Name: auditlog.IdentityStream, Subjects: []string{"identity.>"}},
	} {
		if _, err := events.EnsureStream(ctx, js, s); err != nil {
			t.Fatal(err)
		}
	}
	return &env{pool: pool, js: js, proj: proj}
}

func (e *env) publish(t *testing.T, ev events.Event) uint64 {
	t.Helper()
	ack, err := events.Publish(context.Background(), e.js, nil, ev)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// waitSettled waits until the consumer on stream has settled (acked or
// terminated) every message up to stream sequence seq.
func (e *env) waitSettled(t *testing.T, stream string, seq uint64) {
	t.Helper()
	eventually(t, 15*time.Second, "consumer on "+stream+" to settle the stream", func() bool {
		c, err := e.js.Consumer(context.Background(), stream, auditlog.Durable)
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		return err == nil && info.AckFloor.Stream >= seq && info.NumAckPending == 0
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

// row is a stored audit record as the tests compare it.
type row struct {
	EventID                                              uuid.UUID
	Organization, Actor, Action, Target, Outcome, Status string
	SourceAddress, RequestID                             string
	EventTime                                            time.Time
	Producer, EventType, Subject                         string
	Payload                                              []byte
	CEID                                                 string
}

func rows(t *testing.T, pool *pgxpool.Pool) []row {
	t.Helper()
	rs, err := pool.Query(context.Background(), `
		SELECT event_id, organization, actor, action, target, outcome, status, source_address, request_id,
		       occurred_at, producer, event_type, subject, payload, headers
		  FROM audit_events ORDER BY producer, occurred_at`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rs, func(r pgx.CollectableRow) (row, error) {
		var x row
		var headers []byte
		err := r.Scan(&x.EventID, &x.Organization, &x.Actor, &x.Action, &x.Target, &x.Outcome, &x.Status,
			&x.SourceAddress, &x.RequestID, &x.EventTime, &x.Producer, &x.EventType, &x.Subject, &x.Payload, &headers)
		if err != nil {
			return x, err
		}
		x.EventTime = x.EventTime.UTC()
		var h map[string][]string
		if err := json.Unmarshal(headers, &h); err != nil {
			return x, err
		}
		if v := h[events.HeaderID]; len(v) == 1 {
			x.CEID = v[0]
		}
		return x, nil
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

func TestEventsFromBothStreamsAreRecordedOnce(t *testing.T) {
	t.Parallel()
	e := start(t)
	fromConfig := auditEvent(t, "moat/config", auditlog.ConfigSubject, nil)
	fromIdentity := auditEvent(t, "moat/identity", auditlog.IdentitySubject, func(m *auditv1.AuditEvent) {
		m.Organization, m.Actor, m.Action, m.Target = "", "anonymous", "moat.identity.v1.IdentityService.CreateApiKey", ""
		m.Outcome, m.Status, m.RequestId = auditv1.AuditEvent_OUTCOME_DENIED, "UNAUTHENTICATED", ""
	})
	e.waitSettled(t, auditlog.ConfigStream, e.publish(t, fromConfig))
	e.waitSettled(t, auditlog.IdentityStream, e.publish(t, fromIdentity))

	want := []row{
		{
			EventID: fromConfig.ID, Organization: "orgs/acme", Actor: "keys/k-admin",
			Action: "moat.config.v1.ConfigService.CreateProject", Target: "orgs/acme/projects/web",
			Outcome: "allowed", Status: "OK", SourceAddress: "192.0.2.7", RequestID: "req-1", EventTime: eventTime,
			Producer: "moat/config", EventType: "moat.audit.v1.AuditEvent", Subject: auditlog.ConfigSubject,
			Payload: fromConfig.Data, CEID: fromConfig.ID.String(),
		},
		{
			EventID: fromIdentity.ID, Actor: "anonymous", Action: "moat.identity.v1.IdentityService.CreateApiKey",
			Outcome: "denied", Status: "UNAUTHENTICATED", SourceAddress: "192.0.2.7", EventTime: eventTime,
			Producer: "moat/identity", EventType: "moat.audit.v1.AuditEvent", Subject: auditlog.IdentitySubject,
			Payload: fromIdentity.Data, CEID: fromIdentity.ID.String(),
		},
	}
	if diff := cmp.Diff(want, rows(t, e.pool)); diff != "" {
		t.Errorf("audit_events mismatch (-want +got):\n%s", diff)
	}
}

func TestRedeliveredAuditEventIsRecordedOnce(t *testing.T) {
	t.Parallel()
	e := start(t)
	ev := auditEvent(t, "moat/config", auditlog.ConfigSubject, nil)
	e.publish(t, ev)
	e.publish(t, ev) // within the dedupe window: dropped by the stream
	// Past the dedupe window the stream keeps a republished copy.
	msg := &nats.Msg{Subject: ev.Subject, Data: ev.Data, Header: nats.Header{}}
	msg.Header.Set(events.HeaderID, ev.ID.String())
	msg.Header.Set(events.HeaderType, ev.Type)
	msg.Header.Set(events.HeaderSource, ev.Source)
	ack, err := e.js.PublishMsg(context.Background(), msg)
	if err != nil {
		t.Fatal(err)
	}
	if ack.Sequence != 2 {
		t.Fatalf("republished event got stream sequence %d, want 2", ack.Sequence)
	}
	e.waitSettled(t, auditlog.ConfigStream, ack.Sequence)
	if err := e.proj.Handle(context.Background(), ev); err != nil {
		t.Fatalf("Handle(redelivery) = %v", err)
	}
	if n := count(t, e.pool, `SELECT count(*) FROM audit_events WHERE event_id = $1`, ev.ID); n != 1 {
		t.Errorf("audit_events rows for %s = %d, want 1", ev.ID, n)
	}
	if n := count(t, e.pool, `SELECT count(*) FROM audit_events`); n != 1 {
		t.Errorf("audit_events rows = %d, want 1", n)
	}
}

func TestPoisonAuditEventsAreDeadLettered(t *testing.T) {
	t.Parallel()
	e := start(t)
	garbage := auditEvent(t, "moat/config", auditlog.ConfigSubject, nil)
	garbage.Data = []byte{0xff, 0xff, 0xff}
	noOutcome := auditEvent(t, "moat/identity", auditlog.IdentitySubject, func(m *auditv1.AuditEvent) {
		m.Outcome = auditv1.AuditEvent_OUTCOME_UNSPECIFIED
	})
	wrongType, err := events.New("moat/config", auditlog.ConfigSubject, "x", wrapperspb.String("hi"))
	if err != nil {
		t.Fatal(err)
	}
	goodConfig := auditEvent(t, "moat/config", auditlog.ConfigSubject, nil)
	goodIdentity := auditEvent(t, "moat/identity", auditlog.IdentitySubject, nil)

	e.publish(t, garbage)
	e.publish(t, wrongType)
	e.waitSettled(t, auditlog.ConfigStream, e.publish(t, goodConfig))
	e.publish(t, noOutcome)
	e.waitSettled(t, auditlog.IdentityStream, e.publish(t, goodIdentity))

	var stored []uuid.UUID
	for _, r := range rows(t, e.pool) {
		stored = append(stored, r.EventID)
	}
	if diff := cmp.Diff([]uuid.UUID{goodConfig.ID, goodIdentity.ID}, stored); diff != "" {
		t.Errorf("stored records mismatch (-want +got):\n%s", diff)
	}
	rs, err := e.pool.Query(context.Background(),
		`SELECT stream || ' ' || event_id FROM dead_letters WHERE consumer = $1 ORDER BY stream, stream_seq`, auditlog.Durable)
	if err != nil {
		t.Fatal(err)
	}
	dead, err := pgx.CollectRows(rs, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"CONFIG " + garbage.ID.String(), "CONFIG " + wrongType.ID.String(), "IDENTITY " + noOutcome.ID.String()}
	if diff := cmp.Diff(want, dead); diff != "" {
		t.Errorf("dead letters mismatch (-want +got):\n%s", diff)
	}
}

func TestInvalidAuditEventsArePermanent(t *testing.T) {
	t.Parallel()
	proj := auditlog.New(nil) // validation refuses these before any write
	tests := []struct {
		name string
		edit func(*auditv1.AuditEvent)
	}{
		{"no actor", func(m *auditv1.AuditEvent) { m.Actor = "" }},
		{"no action", func(m *auditv1.AuditEvent) { m.Action = "" }},
		{"unspecified outcome", func(m *auditv1.AuditEvent) { m.Outcome = auditv1.AuditEvent_OUTCOME_UNSPECIFIED }},
		{"unknown outcome", func(m *auditv1.AuditEvent) { m.Outcome = 42 }},
		{"no event time", func(m *auditv1.AuditEvent) { m.EventTime = nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := proj.Handle(context.Background(), auditEvent(t, "moat/config", auditlog.ConfigSubject, tt.edit))
			var verr *audit.ValidationError
			if !events.IsPermanent(err) || !errors.As(err, &verr) {
				t.Errorf("Handle() = %v, want a permanent ValidationError", err)
			}
		})
	}
	// A payload of another type is permanent too.
	ev := auditEvent(t, "moat/config", auditlog.ConfigSubject, nil)
	ev.Data, _ = proto.Marshal(wrapperspb.String("x"))
	ev.Type = "google.protobuf.StringValue"
	if err := proj.Handle(context.Background(), ev); !events.IsPermanent(err) {
		t.Errorf("Handle(wrong type) = %v, want a permanent error", err)
	}
}
