-- +goose Up
-- config_version numbers every change of every configuration row, so that
-- WatchConfig can send "every change after version N". Writers take the
-- transaction advisory lock config:write before they draw from it, so
-- versions become visible in the order they were drawn (see postgres.go).
CREATE SEQUENCE config_version;

-- Deleted rows stay as tombstones (deleted_at set, version bumped) so that
-- watchers learn of the deletion; names are unique among live rows only,
-- so a deleted id can be used again.
ALTER TABLE organizations
    ADD COLUMN version    bigint      NOT NULL DEFAULT nextval('config_version'),
    ADD COLUMN deleted_at timestamptz;
ALTER TABLE organizations DROP CONSTRAINT organizations_name_key;
CREATE UNIQUE INDEX organizations_live_name_idx ON organizations (name) WHERE deleted_at IS NULL;
CREATE UNIQUE INDEX organizations_version_idx ON organizations (version);

-- projects belong to an organization; the resource name is
-- orgs/{organization.name}/projects/{name}.
CREATE TABLE projects (
    id              uuid        PRIMARY KEY,          -- UUIDv7, generated in Go; lists page by it
    organization_id uuid        NOT NULL REFERENCES organizations (id),
    name            text        NOT NULL
                                CHECK (name ~ '^[a-z][a-z0-9-]{1,61}[a-z0-9]$'),
    display_name    text        NOT NULL DEFAULT '',
    request_id      text        UNIQUE,               -- AIP-155 idempotency of create
    version         bigint      NOT NULL DEFAULT nextval('config_version'),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz,
    UNIQUE (organization_id, id)                      -- target of routes' same-organization keys
);
CREATE UNIQUE INDEX projects_live_name_idx ON projects (organization_id, name) WHERE deleted_at IS NULL;
CREATE UNIQUE INDEX projects_version_idx ON projects (version);

-- providers hold where gateways send requests and the credential they
-- present, sealed (envelope encryption: ciphertext under a random data
-- key, wrapped_key = that data key under the KEK kek_id). The plaintext
-- is never stored. A tombstone keeps no credential.
CREATE TABLE providers (
    id              uuid        PRIMARY KEY,
    organization_id uuid        NOT NULL REFERENCES organizations (id),
    name            text        NOT NULL
                                CHECK (name ~ '^[a-z][a-z0-9-]{1,61}[a-z0-9]$'),
    display_name    text        NOT NULL DEFAULT '',
    type            text        NOT NULL CHECK (type IN ('openai_compatible')),
    base_url        text        NOT NULL,
    kek_id          text,
    wrapped_key     bytea,
    ciphertext      bytea,
    request_id      text        UNIQUE,
    version         bigint      NOT NULL DEFAULT nextval('config_version'),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz,
    UNIQUE (organization_id, id),
    CHECK ((kek_id IS NULL) = (wrapped_key IS NULL) AND (kek_id IS NULL) = (ciphertext IS NULL)),
    CHECK (deleted_at IS NULL OR kek_id IS NULL)
);
CREATE UNIQUE INDEX providers_live_name_idx ON providers (organization_id, name) WHERE deleted_at IS NULL;
CREATE UNIQUE INDEX providers_version_idx ON providers (version);

-- routes map a project's logical model name to a provider of the same
-- organization; the composite keys make the database enforce "same
-- organization" too.
CREATE TABLE routes (
    id              uuid        PRIMARY KEY,
    organization_id uuid        NOT NULL,
    project_id      uuid        NOT NULL,
    provider_id     uuid        NOT NULL,
    name            text        NOT NULL
                                CHECK (name ~ '^[a-z][a-z0-9-]{1,61}[a-z0-9]$'),
    model           text        NOT NULL                    -- printable ASCII
                                CHECK (model ~ '^[ -~]+$' AND length(model) <= 128),
    upstream_model  text        NOT NULL
                                CHECK (upstream_model ~ '^[ -~]+$' AND length(upstream_model) <= 256),
    request_id      text        UNIQUE,
    version         bigint      NOT NULL DEFAULT nextval('config_version'),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz,
    FOREIGN KEY (organization_id, project_id) REFERENCES projects (organization_id, id),
    FOREIGN KEY (organization_id, provider_id) REFERENCES providers (organization_id, id)
);
CREATE UNIQUE INDEX routes_live_name_idx ON routes (project_id, name) WHERE deleted_at IS NULL;
CREATE UNIQUE INDEX routes_live_model_idx ON routes (project_id, model) WHERE deleted_at IS NULL;
CREATE INDEX routes_live_project_idx ON routes (project_id, id) WHERE deleted_at IS NULL;
CREATE INDEX routes_live_provider_idx ON routes (provider_id) WHERE deleted_at IS NULL;
CREATE UNIQUE INDEX routes_version_idx ON routes (version);

-- +goose Down
DROP TABLE routes;
DROP TABLE providers;
DROP TABLE projects;
DROP INDEX organizations_version_idx;
DROP INDEX organizations_live_name_idx;
DELETE FROM organizations WHERE deleted_at IS NOT NULL;
ALTER TABLE organizations ADD CONSTRAINT organizations_name_key UNIQUE (name);
ALTER TABLE organizations DROP COLUMN deleted_at, DROP COLUMN version;
DROP SEQUENCE config_version;
