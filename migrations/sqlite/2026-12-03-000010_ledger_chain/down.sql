ALTER TABLE accounts DROP COLUMN ledger_head;
ALTER TABLE ledger_entries DROP COLUMN hash;
