-- +goose Up
-- Providers speak one of several APIs, and some types need settings of
-- their own, stored in the columns of that type (NULL: not set). A
-- settings column of another type than the row's would be ignored by
-- gateways, so the database refuses it as config does. base_url may now be
-- empty: gateways then use the type's public endpoint (config refuses an
-- empty one for the types that have none).
ALTER TABLE providers DROP CONSTRAINT providers_type_check;
ALTER TABLE providers
    ADD CONSTRAINT providers_type_check CHECK (type IN (
        'openai_compatible', 'openai', 'azure_openai', 'anthropic', 'gemini', 'vertex_ai', 'bedrock')),
    ADD COLUMN azure_api_version text,   -- '' is the versionless v1 API
    ADD COLUMN vertex_project    text,
    ADD COLUMN vertex_location   text,
    ADD COLUMN bedrock_region    text,
    ADD CONSTRAINT providers_azure_settings_check CHECK (azure_api_version IS NULL OR type = 'azure_openai'),
    ADD CONSTRAINT providers_vertex_settings_check CHECK (
        (vertex_project IS NULL) = (vertex_location IS NULL) AND (vertex_project IS NULL OR type = 'vertex_ai')),
    ADD CONSTRAINT providers_bedrock_settings_check CHECK (bedrock_region IS NULL OR type = 'bedrock');

-- +goose Down
-- Going back would leave providers of types the old code cannot serve, or
-- cannot even read; which to delete (and which routes with them) is an
-- operator's decision, so the migration names them and stops.
-- +goose StatementBegin
DO $$
DECLARE
    newer text;
BEGIN
    SELECT string_agg('orgs/' || o.name || '/providers/' || v.name, ', ' ORDER BY o.name, v.name) INTO newer
    FROM providers v JOIN organizations o ON o.id = v.organization_id
    WHERE v.type <> 'openai_compatible' AND v.deleted_at IS NULL;
    IF newer IS NOT NULL THEN
        RAISE EXCEPTION 'providers of types other than openai_compatible exist: %', newer
            USING HINT = 'Delete these providers (and the routes using them), or change them to TYPE_OPENAI_COMPATIBLE, and migrate down again.';
    END IF;
END
$$;
-- +goose StatementEnd
UPDATE providers SET type = 'openai_compatible' WHERE type <> 'openai_compatible' AND deleted_at IS NOT NULL;
ALTER TABLE providers
    DROP CONSTRAINT providers_bedrock_settings_check,
    DROP CONSTRAINT providers_vertex_settings_check,
    DROP CONSTRAINT providers_azure_settings_check,
    DROP COLUMN bedrock_region,
    DROP COLUMN vertex_location,
    DROP COLUMN vertex_project,
    DROP COLUMN azure_api_version,
    DROP CONSTRAINT providers_type_check,
    ADD CONSTRAINT providers_type_check CHECK (type IN ('openai_compatible'));
