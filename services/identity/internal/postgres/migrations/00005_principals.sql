-- +goose Up
-- service_accounts and agents are a project's principals that are not
-- users: they never sign in and call the gateway with the API keys they
-- own (api_keys.owner is their full resource name). They are deleted
-- outright, their keys revoked in the same transaction, so an id may be
-- used again; the revoked keys keep the old name as their owner.
CREATE TABLE service_accounts (
    organization text        NOT NULL,                 -- orgs/{org}
    project      text        NOT NULL,                 -- orgs/{org}/projects/{project}
    id           text        NOT NULL,
    display_name text        NOT NULL DEFAULT '',
    description  text        NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    PRIMARY KEY (project, id),
    CHECK (starts_with(project, organization || '/projects/'))
);

-- owner and acts_for are users/{user} of lasting memberships of the
-- organization: an agent is created or changed only under a share lock on
-- those memberships, and ending a membership is refused while an agent
-- names the user (see the index below).
CREATE TABLE agents (
    organization text        NOT NULL,                 -- orgs/{org}
    project      text        NOT NULL,                 -- orgs/{org}/projects/{project}
    id           text        NOT NULL,
    display_name text        NOT NULL DEFAULT '',
    description  text        NOT NULL DEFAULT '',
    owner        text        NOT NULL CHECK (owner <> ''),
    risk_tier    text        NOT NULL CHECK (risk_tier IN ('low', 'medium', 'high', 'critical')),
    acts_for     text        NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    PRIMARY KEY (project, id),
    CHECK (starts_with(project, organization || '/projects/'))
);
CREATE INDEX agents_owner_idx ON agents (organization, owner);
CREATE INDEX agents_acts_for_idx ON agents (organization, acts_for) WHERE acts_for <> '';

-- +goose Down
DROP TABLE agents;
DROP TABLE service_accounts;
