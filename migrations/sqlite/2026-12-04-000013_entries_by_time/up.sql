-- Statements and the transactions listing filter an account's entries by creation time
-- (`from`, `to`): without this index a bound far in the past walks the whole history.
CREATE INDEX ledger_entries_account_created ON ledger_entries (account_id, created_at);
