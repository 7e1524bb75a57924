-- +goose Up
-- outbox holds events committed with the state change that caused them,
-- until the relay has had a PubAck from JetStream for each.
CREATE TABLE outbox (
    event_id     uuid        PRIMARY KEY,           -- also ce-id and Nats-Msg-Id
    subject      text        NOT NULL,              -- e.g. config.v1.project.created
    event_type   text        NOT NULL,              -- proto full name, e.g. moat.config.v1.ProjectCreated
    payload      bytea       NOT NULL,              -- proto-encoded event message
    headers      jsonb       NOT NULL DEFAULT '{}', -- CloudEvents attributes, traceparent
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished_idx ON outbox (created_at, event_id) WHERE published_at IS NULL;

-- processed_events makes consumers idempotent: the effect of an event and
-- its row here commit in one transaction.
CREATE TABLE processed_events (
    consumer     text        NOT NULL,              -- durable consumer name, e.g. billing-ledger
    event_id     uuid        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

-- dead_letters keeps messages a consumer could not process (undecodable,
-- or failing past MaxDeliver), whole, so that they can be inspected and
-- replayed instead of blocking the stream or vanishing.
CREATE TABLE dead_letters (
    consumer      text        NOT NULL,
    stream        text        NOT NULL,
    stream_seq    bigint      NOT NULL,
    event_id      text        NOT NULL DEFAULT '',  -- as sent; may be missing or malformed
    subject       text        NOT NULL,
    headers       jsonb       NOT NULL DEFAULT '{}',
    payload       bytea       NOT NULL,
    error         text        NOT NULL,
    num_delivered integer     NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, stream, stream_seq)
);

-- +goose Down
DROP TABLE dead_letters;
DROP TABLE processed_events;
DROP TABLE outbox;
