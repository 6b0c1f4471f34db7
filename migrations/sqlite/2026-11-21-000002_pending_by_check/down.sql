DROP INDEX topups_pending_checked;
CREATE INDEX topups_pending ON topups (created_at) WHERE status = 'pending';
