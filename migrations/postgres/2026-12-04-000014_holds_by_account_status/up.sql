-- The ledger writers' sessions plan each statement once, for any parameter (a generic
-- plan). Such a plan cannot use a partial index `WHERE status = 'active'` for the batch's
-- read `status = $2`: it would scan. A full index on (account_id, status, expires_at) is
-- what that read probes, whatever the plan. (The expiry sweep keeps its partial index: it
-- runs on the pool's connections, planned with its values.)
--
-- An index of this name that a failed `CREATE INDEX CONCURRENTLY` left invalid (see
-- OPERATIONS) is dropped and built again: `IF NOT EXISTS` would accept it, and the old index
-- would be dropped with no usable one left in its place.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_index
               WHERE indexrelid = to_regclass('holds_by_account_status') AND NOT indisvalid) THEN
        DROP INDEX holds_by_account_status;
    END IF;
END
$$;
CREATE INDEX IF NOT EXISTS holds_by_account_status ON holds (account_id, status, expires_at);
DROP INDEX holds_active_by_account;
