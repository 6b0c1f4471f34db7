CREATE INDEX holds_active_by_account ON holds (account_id) WHERE status = 'active';
DROP INDEX holds_by_account_status;
