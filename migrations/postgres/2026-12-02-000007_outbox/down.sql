DROP TABLE outbox;
ALTER TABLE accounts DROP COLUMN limit_told_month;
ALTER TABLE accounts DROP COLUMN alert_threshold;
ALTER TABLE accounts DROP COLUMN alert_enabled;
