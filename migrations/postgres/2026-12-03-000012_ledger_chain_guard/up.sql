-- The hash chain is enforced from here on: a ledger entry is never written without its hash
-- (a process of an older build that does not chain fails its write, and its client retries
-- on a current one, instead of breaking the chain). NOT VALID: rows from before the chain are
-- not checked here; start-up chains them (billing-store's chain_existing) and then records it
-- in ledger_chain_backfill, after which it never chains a wallet again, so that an erased
-- chain is the audit's finding, never silently recomputed.
ALTER TABLE ledger_entries
    ADD CONSTRAINT ledger_entries_hash_present CHECK (hash IS NOT NULL) NOT VALID;
CREATE TABLE ledger_chain_backfill (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    finished_at BIGINT NOT NULL
);
