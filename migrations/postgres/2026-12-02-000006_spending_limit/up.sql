-- The monthly spending limit, and the month's spend kept under the wallet's lock.
ALTER TABLE accounts ADD COLUMN limit_enabled BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE accounts ADD COLUMN limit_monthly BIGINT CHECK (limit_monthly > 0);
ALTER TABLE accounts ADD COLUMN limit_action TEXT NOT NULL DEFAULT 'block' CHECK (limit_action IN ('block', 'alert'));
ALTER TABLE accounts ADD COLUMN spend_month_start BIGINT NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN spend_month BIGINT NOT NULL DEFAULT 0 CHECK (spend_month >= 0);
