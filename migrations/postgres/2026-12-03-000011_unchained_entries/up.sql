-- Entries without a hash (written before the chain existed): start-up looks for them on
-- every start; this index holds none once they are chained, so the look is instant.
CREATE INDEX ledger_entries_unchained ON ledger_entries (account_id) WHERE hash IS NULL;
