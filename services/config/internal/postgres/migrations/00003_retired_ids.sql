-- +goose Up
-- Organization and project ids are never used again, not even after a
-- deletion: identity (memberships, identity providers, API keys), billing
-- (the ledger) and audit (the log) key their state by these names, so a new
-- tenant under an old name would inherit the old tenant's members, keys,
-- usage and history. Names become unique over all rows, tombstones
-- included. Providers and routes keep live-only uniqueness: nothing outside
-- config keys state by their names.
--
-- A database that already reused an id cannot take the index, and no
-- automatic repair is safe: which tenant keeps the id, and what to do with
-- the state other services hold under it, is an operator's decision. So
-- the migration names the ids and stops, before any change.
-- +goose StatementBegin
DO $$
DECLARE
    reused text;
BEGIN
    SELECT string_agg('orgs/' || name, ', ' ORDER BY name) INTO reused
    FROM (SELECT name FROM organizations GROUP BY name HAVING count(*) > 1) AS d;
    IF reused IS NOT NULL THEN
        RAISE EXCEPTION 'organization ids were used again after a deletion: %; they must be unique even over deleted organizations', reused
            USING HINT = 'Identity, billing and audit may hold the old and the new tenant''s state under each of these names. '
                         'Decide which tenant keeps each id, rename the other rows (for example the deleted ones) to unused ids, '
                         'and run migrate again.';
    END IF;

    SELECT string_agg('orgs/' || o.name || '/projects/' || d.name, ', ' ORDER BY o.name, d.name) INTO reused
    FROM (SELECT organization_id, name FROM projects GROUP BY organization_id, name HAVING count(*) > 1) AS d
    JOIN organizations o ON o.id = d.organization_id;
    IF reused IS NOT NULL THEN
        RAISE EXCEPTION 'project ids were used again after a deletion: %; they must be unique even over deleted projects', reused
            USING HINT = 'Identity, billing and audit may hold the old and the new project''s state under each of these names. '
                         'Decide which project keeps each id, rename the other rows (for example the deleted ones) to unused ids, '
                         'and run migrate again.';
    END IF;
END
$$;
-- +goose StatementEnd

CREATE UNIQUE INDEX organizations_name_idx ON organizations (name);
DROP INDEX organizations_live_name_idx;
CREATE UNIQUE INDEX projects_name_idx ON projects (organization_id, name);
DROP INDEX projects_live_name_idx;

-- +goose Down
CREATE UNIQUE INDEX projects_live_name_idx ON projects (organization_id, name) WHERE deleted_at IS NULL;
DROP INDEX projects_name_idx;
CREATE UNIQUE INDEX organizations_live_name_idx ON organizations (name) WHERE deleted_at IS NULL;
DROP INDEX organizations_name_idx;
