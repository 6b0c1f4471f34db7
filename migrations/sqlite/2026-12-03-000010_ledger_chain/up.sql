-- The ledger's hash chain: each entry stores SHA-256(previous hash ‖ its canonical encoding)
-- (billing_core::audit::entry_hash), the wallet row keeps the last one. Rows written before
-- this migration are chained by the service at start-up (billing-store's chain_existing).
ALTER TABLE ledger_entries ADD COLUMN hash TEXT;
ALTER TABLE accounts ADD COLUMN ledger_head TEXT;
