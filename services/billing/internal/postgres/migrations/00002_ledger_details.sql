-- +goose Up
-- The usage event's remaining facts, and the price table version each entry
-- was priced with (entries are never re-priced).
ALTER TABLE ledger_entries
    ADD COLUMN price_version text    NOT NULL DEFAULT '',
    ADD COLUMN provider      text    NOT NULL DEFAULT '',   -- orgs/{org}/providers/{provider}
    ADD COLUMN stream        boolean NOT NULL DEFAULT false, -- the response was streamed (SSE)
    ADD COLUMN http_status   integer NOT NULL DEFAULT 0,     -- returned to the client
    ADD COLUMN latency_ms    bigint  NOT NULL DEFAULT 0 CHECK (latency_ms >= 0),
    -- an entry without a price costs nothing and says so; a cost without a
    -- price would be invented
    ADD CONSTRAINT ledger_entries_unpriced_is_free CHECK (priced OR cost_micros = 0);

-- The ledger is append-only. PUBLIC never held these privileges; the revoke
-- states the rule where the schema lives. A table's owner keeps every
-- privilege on it whatever is granted or revoked, so in a cluster the
-- migrate job runs as the owning role and the service runs as another role
-- granted only SELECT and INSERT on ledger_entries.
REVOKE UPDATE, DELETE, TRUNCATE ON ledger_entries FROM PUBLIC;

-- +goose Down
ALTER TABLE ledger_entries
    DROP CONSTRAINT ledger_entries_unpriced_is_free,
    DROP COLUMN latency_ms,
    DROP COLUMN http_status,
    DROP COLUMN stream,
    DROP COLUMN provider,
    DROP COLUMN price_version;
