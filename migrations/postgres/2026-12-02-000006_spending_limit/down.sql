ALTER TABLE accounts DROP COLUMN spend_month;
ALTER TABLE accounts DROP COLUMN spend_month_start;
ALTER TABLE accounts DROP COLUMN limit_action;
ALTER TABLE accounts DROP COLUMN limit_monthly;
ALTER TABLE accounts DROP COLUMN limit_enabled;
