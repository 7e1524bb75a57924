-- +goose Up
-- organizations are Moat's tenants. Every other configuration row belongs
-- to one; the resource name is orgs/{name}.
CREATE TABLE organizations (
    id           uuid        PRIMARY KEY,          -- UUIDv7, generated in Go
    name         text        NOT NULL UNIQUE
                             CHECK (name ~ '^[a-z][a-z0-9-]{1,61}[a-z0-9]$'),
    display_name text        NOT NULL DEFAULT '',
    request_id   text        UNIQUE,               -- AIP-155 idempotency of create
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE organizations;
