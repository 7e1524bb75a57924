-- +goose Up
-- The rest of moat.audit.v1.AuditEvent, and the envelope it arrived in:
-- the record keeps the producer's event whole (payload already, now its
-- subject and headers) so that it can be re-derived and verified later.
-- "source" was the producer (ce-source); it is renamed so that it is not
-- mistaken for the caller's address.
ALTER TABLE audit_events RENAME COLUMN source TO producer;
ALTER TABLE audit_events
    ADD COLUMN status         text  NOT NULL DEFAULT '',   -- gRPC code name, e.g. PERMISSION_DENIED
    ADD COLUMN source_address text  NOT NULL DEFAULT '',   -- the caller's network address
    ADD COLUMN request_id     text  NOT NULL DEFAULT '',
    ADD COLUMN subject        text  NOT NULL DEFAULT '',   -- the NATS subject it arrived on
    ADD COLUMN headers        jsonb NOT NULL DEFAULT '{}'; -- CloudEvents attributes, traceparent

-- Lists read an organization newest first by (occurred_at, event_id), the
-- page token's keyset; the first index sorted event_id the other way.
DROP INDEX audit_events_org_time_idx;
CREATE INDEX audit_events_org_time_idx ON audit_events (organization, occurred_at DESC, event_id DESC);

-- The log is append-only. PUBLIC never held these privileges; the revoke
-- states the rule where the schema lives. A table's owner keeps every
-- privilege on it whatever is granted or revoked, so in a cluster the
-- migrate job runs as the owning role and the service runs as another role
-- granted only SELECT and INSERT on audit_events.
REVOKE UPDATE, DELETE, TRUNCATE ON audit_events FROM PUBLIC;

-- +goose Down
DROP INDEX audit_events_org_time_idx;
CREATE INDEX audit_events_org_time_idx ON audit_events (organization, occurred_at DESC, event_id);
ALTER TABLE audit_events
    DROP COLUMN headers,
    DROP COLUMN subject,
    DROP COLUMN request_id,
    DROP COLUMN source_address,
    DROP COLUMN status;
ALTER TABLE audit_events RENAME COLUMN producer TO source;
