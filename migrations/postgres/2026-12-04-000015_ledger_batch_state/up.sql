-- The ledger writer's reads for a batch in one round trip instead of four: the wallets'
-- rows locked in id order, then their auto top-up rows, the saved methods of those with
-- auto top-up on, their active holds, and the claims already made on the batch's
-- idempotency keys, each list as a JSON array.
--
-- The locks come first, in a statement of their own. Every later statement of this
-- VOLATILE function takes a new snapshot (READ COMMITTED), so it reads all that committed
-- before the locks were granted: another process's batch on the same wallets, the holds it
-- placed, the auto top-up it started, the keys it claimed. One statement joining these
-- tables to the locked wallets would read them in the snapshot taken before it waited for
-- the locks, and miss exactly those.
--
-- Every read is by key (`= ANY`, a probe per (scope, key) pair through `LATERAL … LIMIT
-- 1`), so the generic plans the writers' sessions make never scan a table, whatever size
-- it had when they were made. Two ways a statement here would not be (a review measured
-- both): compared with the literal 'active', the holds read may use the partial index of
-- every account's active holds by expiry and filter the batch's accounts afterwards, so
-- the status is a variable (a parameter to the planner); and the saved methods are read by
-- the ids of the enabled auto top-ups just read, not through an EXISTS the planner turns
-- into a merge join over the whole auto_topups index.
CREATE FUNCTION ledger_batch_state(
    wallet_ids TEXT[],
    holds_after BIGINT,
    claim_scopes TEXT[],
    claim_keys TEXT[],
    OUT wallet_rows TEXT,
    OUT auto_topup_rows TEXT,
    OUT method_rows TEXT,
    OUT hold_rows TEXT,
    OUT claim_rows TEXT
) LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    active CONSTANT TEXT := 'active';
    enabled_ids TEXT[];
BEGIN
    SELECT coalesce(json_agg(json_build_array(w.id, w.balance, w.limit_enabled,
               w.limit_monthly, w.limit_action, w.spend_month_start, w.spend_month,
               w.alert_enabled, w.alert_threshold, w.limit_told_month, w.ledger_head)
               ORDER BY w.id), '[]')::text
      INTO wallet_rows
      FROM (SELECT a.id, a.balance, a.limit_enabled, a.limit_monthly, a.limit_action,
                   a.spend_month_start, a.spend_month, a.alert_enabled, a.alert_threshold,
                   a.limit_told_month, a.ledger_head
              FROM accounts a
             WHERE a.id = ANY (wallet_ids)
             ORDER BY a.id
               FOR UPDATE) w;
    SELECT coalesce(json_agg(t), '[]')::text,
           array_agg(t.account_id) FILTER (WHERE t.enabled)
      INTO auto_topup_rows, enabled_ids
      FROM auto_topups t
     WHERE t.account_id = ANY (wallet_ids);
    IF enabled_ids IS NULL THEN
        method_rows := '[]';
    ELSE
        SELECT coalesce(json_agg(m), '[]')::text
          INTO method_rows
          FROM payment_methods m
         WHERE m.account_id = ANY (enabled_ids);
    END IF;
    SELECT coalesce(json_agg(json_build_array(h.account_id, h.amount, h.expires_at)),
                    '[]')::text
      INTO hold_rows
      FROM holds h
     WHERE h.account_id = ANY (wallet_ids)
       AND h.status = active
       AND h.expires_at > holds_after;
    SELECT coalesce(json_agg(json_build_array(k.scope, k.key, k.fingerprint, k.result_ref)),
                    '[]')::text
      INTO claim_rows
      FROM unnest(claim_scopes, claim_keys) AS u(scope, key)
     CROSS JOIN LATERAL (SELECT i.scope, i.key, i.fingerprint, i.result_ref
                           FROM idempotency_keys i
                          WHERE i.scope = u.scope AND i.key = u.key
                          LIMIT 1) AS k;
END
$$;
