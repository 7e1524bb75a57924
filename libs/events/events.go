// Package events carries Moat's domain events over NATS JetStream with
// effectively-once processing: a transactional outbox and relay on the
// producing side (publish with Nats-Msg-Id = event id, mark after the
// PubAck), and on the consuming side durable pull consumers that apply an
// event and record its id in one PostgreSQL transaction before acking.
//
// Events travel in CloudEvents binary mode: the attributes are NATS headers
// (ce-id, ce-source, ce-type, ...) and the payload is the proto-encoded event
// message. The W3C trace context rides along in the same headers.
//
// The package knows nothing of any service's events; callers pass proto
// messages and subjects.
package events

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/moat-ai/moat/libs/pg"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrations creates the outbox, processed_events and dead_letters tables.
// Every service with a database applies it in its migrate subcommand, next
// to its own migrations.
var Migrations = func() pg.Migrations {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		panic(err) // the embed pattern above guarantees the directory
	}
	return pg.Migrations{Name: "events", FS: sub}
}()

// CloudEvents attribute headers (binary content mode).
const (
	HeaderSpecVersion = "ce-specversion"
	HeaderID          = "ce-id"
	HeaderSource      = "ce-source"
	HeaderType        = "ce-type"
	HeaderSubject     = "ce-subject"
	HeaderTime        = "ce-time"
	HeaderContentType = "content-type"

	contentTypeProto = "application/protobuf"
)

// Event is one domain event, either about to be published or just received.
type Event struct {
	// ID is a UUIDv7, also the Nats-Msg-Id and the consumers' dedupe key.
	ID uuid.UUID
	// Subject is the NATS subject, <service>.v<N>.<aggregate>.<event>.
	Subject string
	// Type is the proto full name of the payload message.
	Type string
	// Source is the producer, moat/<service>.
	Source string
	// Resource is the resource name the event is about (ce-subject).
	Resource string
	// Time is when the event happened.
	Time time.Time
	// Data is the proto-encoded payload.
	Data []byte
	// Header holds extra headers such as traceparent.
	Header nats.Header

	// NumDelivered counts deliveries of a received event (1 the first time).
	NumDelivered uint64

	msg jetstream.Msg
}

// New builds an event about resource from message m, with a fresh UUIDv7.
// source is the producer ("moat/config"), subject the NATS subject.
func New(source, subject, resource string, m proto.Message) (Event, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return Event{}, fmt.Errorf("new event id: %w", err)
	}
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return Event{}, fmt.Errorf("encode %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	return Event{
		ID:       id,
		Subject:  subject,
		Type:     string(m.ProtoReflect().Descriptor().FullName()),
		Source:   source,
		Resource: resource,
		Time:     time.Now().UTC(),
		Data:     data,
		Header:   nats.Header{},
	}, nil
}

// ErrTypeMismatch reports a payload decoded into the wrong message type.
var ErrTypeMismatch = errors.New("event type mismatch")

// Decode unmarshals the payload into m, checking that ce-type names m's type.
func (e Event) Decode(m proto.Message) error {
	if want := string(m.ProtoReflect().Descriptor().FullName()); e.Type != want {
		return fmt.Errorf("%w: got %q, want %q", ErrTypeMismatch, e.Type, want)
	}
	if err := proto.Unmarshal(e.Data, m); err != nil {
		return fmt.Errorf("decode %s: %w", e.Type, err)
	}
	return nil
}

// InProgress tells JetStream that a received event is still being worked
// on, resetting its AckWait. The consumer runner calls it on a timer during
// every handler call; long handlers may call it too.
func (e Event) InProgress() error {
	if e.msg == nil {
		return nil
	}
	return e.msg.InProgress()
}

// header renders the event's NATS headers.
func (e Event) header() nats.Header {
	h := nats.Header{}
	for k, v := range e.Header {
		h[k] = append([]string(nil), v...)
	}
	h.Set(jetstream.MsgIDHeader, e.ID.String())
	h.Set(HeaderSpecVersion, "1.0")
	h.Set(HeaderID, e.ID.String())
	h.Set(HeaderSource, e.Source)
	h.Set(HeaderType, e.Type)
	if e.Resource != "" {
		h.Set(HeaderSubject, e.Resource)
	}
	h.Set(HeaderTime, e.Time.UTC().Format(time.RFC3339Nano))
	h.Set(HeaderContentType, contentTypeProto)
	return h
}

// fromMsg reads a received message. Missing or malformed attributes are
// reported as errors, which the runner treats as permanent.
func fromMsg(m jetstream.Msg) (Event, error) {
	h := m.Headers()
	ev := Event{Subject: m.Subject(), Data: m.Data(), Header: h, msg: m}
	if md, err := m.Metadata(); err == nil {
		ev.NumDelivered = md.NumDelivered
	}
	raw := h.Get(HeaderID)
	if raw == "" {
		raw = h.Get(jetstream.MsgIDHeader)
	}
	id, err := uuid.Parse(raw)
	if err != nil {
		return ev, fmt.Errorf("event id %q is not a UUID", truncate(raw, 64))
	}
	ev.ID = id
	ev.Type = h.Get(HeaderType)
	if ev.Type == "" {
		return ev, errors.New("event has no ce-type header")
	}
	ev.Source = h.Get(HeaderSource)
	ev.Resource = h.Get(HeaderSubject)
	if t := h.Get(HeaderTime); t != "" {
		if ev.Time, err = time.Parse(time.RFC3339Nano, t); err != nil {
			return ev, fmt.Errorf("ce-time %q is not RFC 3339", truncate(t, 64))
		}
	}
	return ev, nil
}

// Timestamp is a convenience for event messages' *_time fields.
func Timestamp(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }

// Enqueue writes ev to the outbox inside tx, the transaction that makes the
// state change it announces, so that both commit or neither does. The trace
// context of ctx is stored with it and travels to the consumers.
func Enqueue(ctx context.Context, tx pgx.Tx, prop propagation.TextMapPropagator, ev Event) error {
	h := ev.header()
	if prop != nil {
		prop.Inject(ctx, propagation.HeaderCarrier(h))
	}
	if _, err := tx.Exec(ctx,
		`INSERT INTO outbox (event_id, subject, event_type, payload, headers) VALUES ($1, $2, $3, $4, $5)`,
		ev.ID, ev.Subject, ev.Type, ev.Data, map[string][]string(h)); err != nil {
		return fmt.Errorf("insert outbox event %s: %w", ev.ID, err)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_notify($1, '')`, outboxChannel); err != nil {
		return fmt.Errorf("notify outbox relay: %w", err)
	}
	return nil
}

// Publish sends ev straight to JetStream and waits for the PubAck. It is for
// producers without a database (the gateway's spool replays through it);
// services with a database use Enqueue. A retry after an ambiguous failure
// must reuse the same event: the stream drops the duplicate by its id.
func Publish(ctx context.Context, js jetstream.JetStream, prop propagation.TextMapPropagator, ev Event) (*jetstream.PubAck, error) {
	msg := Message(ev)
	if prop != nil {
		prop.Inject(ctx, propagation.HeaderCarrier(msg.Header))
	}
	ack, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID(ev.ID.String()))
	if err != nil {
		return nil, fmt.Errorf("publish %s %s: %w", ev.Subject, ev.ID, err)
	}
	return ack, nil
}

// Message renders ev as the NATS message Publish sends: its subject, its
// payload and the CloudEvents headers, with Nats-Msg-Id = ce-id = ev.ID.
// Producers that publish asynchronously (jetstream.PublishMsgAsync) build
// their messages with it, so that every event looks the same on the wire.
// The message owns its headers: callers may add to them (a trace context)
// without touching ev.
func Message(ev Event) *nats.Msg {
	return &nats.Msg{Subject: ev.Subject, Header: ev.header(), Data: ev.Data}
}

// MarkProcessed records that consumer applied eventID, inside the
// transaction that applies it. It returns false when the event was already
// applied, in which case the caller must not apply it again.
func MarkProcessed(ctx context.Context, tx pgx.Tx, consumer string, eventID uuid.UUID) (bool, error) {
	tag, err := tx.Exec(ctx,
		`INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`,
		consumer, eventID)
	if err != nil {
		return false, fmt.Errorf("mark event %s processed: %w", eventID, err)
	}
	return tag.RowsAffected() == 1, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

func discardLogger(l *slog.Logger) *slog.Logger {
	if l != nil {
		return l
	}
	return slog.New(slog.DiscardHandler)
}
