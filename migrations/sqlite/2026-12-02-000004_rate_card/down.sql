ALTER TABLE ledger_entries DROP COLUMN usage_output_per_million;
ALTER TABLE ledger_entries DROP COLUMN usage_input_per_million;
ALTER TABLE ledger_entries DROP COLUMN usage_output_tokens;
ALTER TABLE ledger_entries DROP COLUMN usage_input_tokens;
ALTER TABLE ledger_entries DROP COLUMN usage_model;
DROP TABLE rates;
