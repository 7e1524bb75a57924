-- +goose Up
-- allowed_models scopes a key to some of its project's routes (logical
-- model names); empty means every route. rotated_from names the key a key
-- was rotated from: a rotation retried with the same request id finds its
-- successor by request_id and checks that it succeeds the same key.
ALTER TABLE api_keys
    ADD COLUMN allowed_models text[] NOT NULL DEFAULT '{}',
    ADD COLUMN rotated_from uuid REFERENCES api_keys (id);

-- +goose Down
ALTER TABLE api_keys DROP COLUMN rotated_from, DROP COLUMN allowed_models;
