-- A wallet's version: moved by every change to what its postings are decided against, by
-- whoever makes it, so that a ledger writer may decide a batch from its own copy of the
-- wallet and write it only where the version is still the one it knew (docs/DECISIONS.md,
-- "The hot wallet's writer decides from its own copy").
--
-- The row's own changes move it (any UPDATE of accounts, whatever it sets); so do its
-- holds, its auto top-up row and its saved method. Every writer of those three holds the
-- wallet's row lock when it writes them (place, capture, release, extend and expire a hold;
-- the auto top-up's settings and state; the saved method), so the triggers' UPDATE takes no
-- lock in a new order.
ALTER TABLE accounts ADD COLUMN version BIGINT NOT NULL DEFAULT 0;

CREATE FUNCTION accounts_next_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := OLD.version + 1;
    RETURN NEW;
END
$$;

CREATE TRIGGER accounts_version BEFORE UPDATE ON accounts
    FOR EACH ROW EXECUTE FUNCTION accounts_next_version();

CREATE FUNCTION wallet_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        UPDATE accounts SET version = version WHERE id = OLD.account_id;
    END IF;
    IF TG_OP <> 'DELETE' AND (TG_OP = 'INSERT' OR NEW.account_id <> OLD.account_id) THEN
        UPDATE accounts SET version = version WHERE id = NEW.account_id;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER holds_wallet_version AFTER INSERT OR UPDATE OR DELETE ON holds
    FOR EACH ROW EXECUTE FUNCTION wallet_changed();
CREATE TRIGGER auto_topups_wallet_version AFTER INSERT OR UPDATE OR DELETE ON auto_topups
    FOR EACH ROW EXECUTE FUNCTION wallet_changed();
CREATE TRIGGER payment_methods_wallet_version AFTER INSERT OR UPDATE OR DELETE ON payment_methods
    FOR EACH ROW EXECUTE FUNCTION wallet_changed();

-- ledger_batch_state as before (migration 000015), with the versions of the wallets it
-- locked: the row's version is read under the lock, with the row.
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
    OUT claim_rows TEXT,
    OUT version_rows TEXT
) LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    active CONSTANT TEXT := 'active';
    enabled_ids TEXT[];
BEGIN
    SELECT coalesce(json_agg(json_build_array(w.id, w.balance, w.limit_enabled,
               w.limit_monthly, w.limit_action, w.spend_month_start, w.spend_month,
               w.alert_enabled, w.alert_threshold, w.limit_told_month, w.ledger_head)
               ORDER BY w.id), '[]')::text,
           coalesce(json_agg(json_build_array(w.id, w.version) ORDER BY w.id), '[]')::text
      INTO wallet_rows, version_rows
      FROM (SELECT a.id, a.balance, a.limit_enabled, a.limit_monthly, a.limit_action,
                   a.spend_month_start, a.spend_month, a.alert_enabled, a.alert_threshold,
                   a.limit_told_month, a.ledger_head, a.version
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
