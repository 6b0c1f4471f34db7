-- Reconciliation takes the least recently checked pending top-ups first.
DROP INDEX topups_pending;
CREATE INDEX topups_pending_checked ON topups (updated_at) WHERE status = 'pending';
