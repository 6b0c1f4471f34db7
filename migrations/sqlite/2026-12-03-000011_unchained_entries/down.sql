DROP INDEX ledger_entries_unchained;
