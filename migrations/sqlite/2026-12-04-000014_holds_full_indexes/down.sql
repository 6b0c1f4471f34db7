DROP INDEX holds_by_status_expiry;
DROP INDEX holds_by_account_status;
CREATE INDEX holds_active_by_account ON holds (account_id) WHERE status = 'active';
CREATE INDEX holds_active_by_expiry ON holds (expires_at) WHERE status = 'active';
