-- The hash chain is enforced from here on: a ledger entry is never written without its hash
-- (a process of an older build that does not chain fails its write, and its client retries
-- on a current one, instead of breaking the chain). SQLite cannot add a constraint to a
-- column: two triggers refuse a missing hash. Rows from before the chain are chained at
-- start-up (billing-store's chain_existing), which then records it in ledger_chain_backfill
-- and never chains a wallet again, so that an erased chain is the audit's finding, never
-- silently recomputed.
CREATE TRIGGER ledger_entries_hash_on_insert BEFORE INSERT ON ledger_entries
WHEN NEW.hash IS NULL
BEGIN
    SELECT RAISE(ABORT, 'a ledger entry needs its hash');
END;
CREATE TRIGGER ledger_entries_hash_on_update BEFORE UPDATE OF hash ON ledger_entries
WHEN NEW.hash IS NULL
BEGIN
    SELECT RAISE(ABORT, 'a ledger entry needs its hash');
END;
CREATE TABLE ledger_chain_backfill (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    finished_at BIGINT NOT NULL
);
