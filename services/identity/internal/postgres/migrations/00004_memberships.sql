-- +goose Up
-- memberships holds each user's role in an organization. Users are
-- Keycloak's; user_id is the `sub` of their access tokens. Memberships are
-- part of the key index that every service authorizes against, so they are
-- versioned from the same sequence as keys, and an ended membership stays
-- as a tombstone (deleted_at set, new version) so watchers learn of it.
CREATE TABLE memberships (
    organization      text        NOT NULL,                  -- orgs/{org}
    user_id           text        NOT NULL,
    role              text        NOT NULL CHECK (role IN ('org_admin', 'member')),
    source            text        NOT NULL CHECK (source IN ('admin', 'just_in_time')),
    identity_provider text        NOT NULL DEFAULT '',       -- orgs/{org}/identityProviders/{idp} for just_in_time
    email             text        NOT NULL DEFAULT '',
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    deleted_at        timestamptz,
    version           bigint      NOT NULL DEFAULT nextval('api_keys_version_seq'),
    PRIMARY KEY (organization, user_id)
);
CREATE UNIQUE INDEX memberships_version_idx ON memberships (version);
CREATE INDEX memberships_user_idx ON memberships (user_id) WHERE deleted_at IS NULL;

-- identity_providers are organizations' own IdPs, brokered by Keycloak
-- under alias. The client secret of an OIDC provider lives in Keycloak
-- only; settings holds the rest of the protocol configuration.
CREATE TABLE identity_providers (
    organization        text        NOT NULL,                -- orgs/{org}
    id                  text        NOT NULL,
    alias               text        NOT NULL UNIQUE,
    display_name        text        NOT NULL DEFAULT '',
    protocol            text        NOT NULL CHECK (protocol IN ('oidc', 'saml')),
    settings            jsonb       NOT NULL,
    group_role_mappings jsonb       NOT NULL DEFAULT '[]',
    default_role        text        NOT NULL DEFAULT '' CHECK (default_role IN ('', 'org_admin', 'member')),
    email_domains       text[]      NOT NULL,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    PRIMARY KEY (organization, id)
);

-- An email domain is vouched for by one identity provider of one
-- organization on the whole platform, so no organization's IdP can sign
-- users of another's domain into it.
CREATE TABLE email_domains (
    domain            text PRIMARY KEY,
    organization      text NOT NULL,
    identity_provider text NOT NULL,
    FOREIGN KEY (organization, identity_provider) REFERENCES identity_providers (organization, id) ON DELETE CASCADE
);

-- owner is the principal a key acts for (users/{user}); allowed_mcp_tools
-- scopes it to some MCP tools.
ALTER TABLE api_keys
    ADD COLUMN owner text NOT NULL DEFAULT '',
    ADD COLUMN allowed_mcp_tools text[] NOT NULL DEFAULT '{}';
CREATE INDEX api_keys_owner_idx ON api_keys (organization, owner) WHERE owner <> '';

-- +goose Down
DROP INDEX api_keys_owner_idx;
ALTER TABLE api_keys DROP COLUMN allowed_mcp_tools, DROP COLUMN owner;
DROP TABLE email_domains;
DROP TABLE identity_providers;
DROP TABLE memberships;
