-- +goose Up
-- api_keys stores project API keys by their HMAC-SHA-256 under a server
-- secret, never the key itself; prefix is the non-secret part shown to
-- users so they can tell keys apart.
CREATE TABLE api_keys (
    id           uuid        PRIMARY KEY,          -- UUIDv7, generated in Go
    organization text        NOT NULL,             -- orgs/{org}
    project      text        NOT NULL,             -- orgs/{org}/projects/{project}
    display_name text        NOT NULL DEFAULT '',
    prefix       text        NOT NULL,
    key_hmac     bytea       NOT NULL UNIQUE CHECK (octet_length(key_hmac) = 32),
    created_at   timestamptz NOT NULL DEFAULT now(),
    expire_at    timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz
);
CREATE INDEX api_keys_project_idx ON api_keys (project, created_at DESC);

-- +goose Down
DROP TABLE api_keys;
