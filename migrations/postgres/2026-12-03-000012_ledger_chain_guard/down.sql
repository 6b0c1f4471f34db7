DROP TABLE ledger_chain_backfill;
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_hash_present;
