-- +goose Up
-- The key index that identity streams to every service is versioned: each
-- change to a key (create, revoke) gives the key a new version from this
-- sequence, and watchers ask for versions above the last they saw. Writers
-- take an advisory transaction lock before drawing a version, so versions
-- commit in order and a watcher never skips a smaller version that
-- committed late.
CREATE SEQUENCE api_keys_version_seq AS bigint;

ALTER TABLE api_keys
    ADD COLUMN role text NOT NULL DEFAULT 'project'
        CHECK (role IN ('project', 'platform_admin')),
    ADD COLUMN version bigint NOT NULL DEFAULT nextval('api_keys_version_seq'),
    -- AIP-155: a create retried with the same request id returns the first key.
    ADD COLUMN request_id text UNIQUE;
ALTER SEQUENCE api_keys_version_seq OWNED BY api_keys.version;

-- Project keys belong to a project of their organization; platform admin
-- keys belong to none.
ALTER TABLE api_keys ADD CONSTRAINT api_keys_scope_check CHECK (
    (role = 'project' AND organization <> '' AND starts_with(project, organization || '/projects/'))
    OR (role = 'platform_admin' AND organization = '' AND project = ''));

CREATE UNIQUE INDEX api_keys_version_idx ON api_keys (version);

-- Lists page newest first with (created_at, id) as the cursor.
DROP INDEX api_keys_project_idx;
CREATE INDEX api_keys_project_idx ON api_keys (project, created_at DESC, id DESC);

-- +goose Down
DROP INDEX api_keys_project_idx;
CREATE INDEX api_keys_project_idx ON api_keys (project, created_at DESC);
DROP INDEX api_keys_version_idx;
-- The 00001 schema has no place for platform admin keys.
DELETE FROM api_keys WHERE role = 'platform_admin';
ALTER TABLE api_keys DROP CONSTRAINT api_keys_scope_check;
ALTER TABLE api_keys DROP COLUMN request_id, DROP COLUMN version, DROP COLUMN role;
