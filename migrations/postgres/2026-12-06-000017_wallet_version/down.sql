DROP FUNCTION ledger_batch_state(TEXT[], BIGINT, TEXT[], TEXT[]);
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
DROP TRIGGER payment_methods_wallet_version ON payment_methods;
DROP TRIGGER auto_topups_wallet_version ON auto_topups;
DROP TRIGGER holds_wallet_version ON holds;
DROP FUNCTION wallet_changed();
DROP TRIGGER accounts_version ON accounts;
DROP FUNCTION accounts_next_version();
ALTER TABLE accounts DROP COLUMN version;
