-- +goose Up
-- ledger_entries is the usage ledger: one row per billable event, keyed by
-- the event id so that a redelivered usage event is recorded once. Money is
-- integer micro-units of the currency, never a float.
CREATE TABLE ledger_entries (
    event_id           uuid        PRIMARY KEY,    -- the usage event's id (= request id)
    organization       text        NOT NULL,       -- orgs/{org}
    project            text        NOT NULL,       -- orgs/{org}/projects/{project}
    key_id             text        NOT NULL,
    model              text        NOT NULL,
    upstream_model     text        NOT NULL,
    input_tokens       bigint      NOT NULL CHECK (input_tokens >= 0),
    output_tokens      bigint      NOT NULL CHECK (output_tokens >= 0),
    cost_micros        bigint      NOT NULL CHECK (cost_micros >= 0),
    currency_code      char(3)     NOT NULL DEFAULT 'USD',
    priced             boolean     NOT NULL,       -- false: no price known; flagged, never silently zero
    occurred_at        timestamptz NOT NULL,
    recorded_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_entries_org_time_idx ON ledger_entries (organization, occurred_at, event_id);
CREATE INDEX ledger_entries_project_time_idx ON ledger_entries (project, occurred_at, event_id);

-- +goose Down
DROP TABLE ledger_entries;
