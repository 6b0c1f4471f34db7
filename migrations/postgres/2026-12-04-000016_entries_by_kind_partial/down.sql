CREATE INDEX IF NOT EXISTS ledger_entries_account_kind_seq ON ledger_entries (account_id, kind, seq);
DROP INDEX IF EXISTS ledger_entries_account_kind_other;
