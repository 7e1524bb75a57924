-- +goose Up
-- The token kinds of a usage event besides uncached input and output:
-- input read from and written to a prompt cache (not in input_tokens),
-- the part of output_tokens spent on reasoning (a subset, never more),
-- and whether the counts are the gateway's estimate. Entries recorded
-- before had none of these, which is what the defaults say.
ALTER TABLE ledger_entries
    ADD COLUMN cache_read_input_tokens  bigint  NOT NULL DEFAULT 0 CHECK (cache_read_input_tokens >= 0),
    ADD COLUMN cache_write_input_tokens bigint  NOT NULL DEFAULT 0 CHECK (cache_write_input_tokens >= 0),
    ADD COLUMN reasoning_tokens         bigint  NOT NULL DEFAULT 0 CHECK (reasoning_tokens >= 0),
    ADD COLUMN usage_estimated          boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT ledger_entries_reasoning_in_output CHECK (reasoning_tokens <= output_tokens);

-- +goose Down
ALTER TABLE ledger_entries
    DROP CONSTRAINT ledger_entries_reasoning_in_output,
    DROP COLUMN usage_estimated,
    DROP COLUMN reasoning_tokens,
    DROP COLUMN cache_write_input_tokens,
    DROP COLUMN cache_read_input_tokens;
