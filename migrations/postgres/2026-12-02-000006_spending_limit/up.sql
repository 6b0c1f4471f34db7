-- The monthly spending limit, and the month's spend kept under the wallet's lock.
ALTER TABLE accounts ADD COLUMN limit_enabled BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE accounts ADD COLUMN limit_monthly BIGINT CHECK (limit_monthly > 0);
ALTER TABLE accounts ADD COLUMN limit_action TEXT NOT NULL DEFAULT 'block' CHECK (limit_action IN ('block', 'alert'));
ALTER TABLE accounts ADD COLUMN spend_month_start BIGINT NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN spend_month BIGINT NOT NULL DEFAULT 0 CHECK (spend_month >= 0);
-- What was spent this month before the upgrade counts: usage less refunds since the start of
-- the current month (UTC).
UPDATE accounts SET spend_month_start = (EXTRACT(EPOCH FROM date_trunc('month', timezone('UTC', now()))) * 1000000)::BIGINT;
UPDATE accounts SET spend_month = COALESCE((
    SELECT CASE WHEN -SUM(e.amount) > 0 THEN -SUM(e.amount) ELSE 0 END
    FROM ledger_entries e
    WHERE e.account_id = accounts.id
      AND e.kind IN ('usage', 'refund')
      AND e.created_at >= accounts.spend_month_start
), 0);
