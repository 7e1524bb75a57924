-- +goose Up
-- audit_events is the append-only audit log: one row per audit event from
-- any producer, keyed by the event id so that a redelivered event is stored
-- once. Rows are never updated or deleted by the service.
CREATE TABLE audit_events (
    event_id     uuid        PRIMARY KEY,          -- ce-id / Nats-Msg-Id of the event
    organization text        NOT NULL,             -- orgs/{org}; '' for platform-level actions
    actor        text        NOT NULL,             -- who acted (principal resource name)
    action       text        NOT NULL,             -- e.g. moat.config.v1.ConfigService.CreateProject
    target       text        NOT NULL,             -- resource name acted on
    outcome      text        NOT NULL CHECK (outcome IN ('allowed', 'denied', 'failed')),
    source       text        NOT NULL DEFAULT '',  -- producer, ce-source
    event_type   text        NOT NULL,             -- ce-type of the payload
    payload      bytea       NOT NULL,             -- the event as received
    occurred_at  timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_events_org_time_idx ON audit_events (organization, occurred_at DESC, event_id);

-- +goose Down
DROP TABLE audit_events;
