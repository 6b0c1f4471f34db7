-- The rate card, and what a priced usage entry was charged for.
CREATE TABLE rates (
    model TEXT PRIMARY KEY,
    input_per_million BIGINT NOT NULL CHECK (input_per_million >= 0),
    output_per_million BIGINT NOT NULL CHECK (output_per_million >= 0),
    updated_at BIGINT NOT NULL
);
ALTER TABLE ledger_entries ADD COLUMN usage_model TEXT;
ALTER TABLE ledger_entries ADD COLUMN usage_input_tokens BIGINT;
ALTER TABLE ledger_entries ADD COLUMN usage_output_tokens BIGINT;
ALTER TABLE ledger_entries ADD COLUMN usage_input_per_million BIGINT;
ALTER TABLE ledger_entries ADD COLUMN usage_output_per_million BIGINT;
