-- The low-balance alert, the month the spending limit was last told, and the outbox of
-- notices (emails, events) written in the same transaction as their cause.
ALTER TABLE accounts ADD COLUMN alert_enabled BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE accounts ADD COLUMN alert_threshold BIGINT CHECK (alert_threshold > 0);
ALTER TABLE accounts ADD COLUMN limit_told_month BIGINT;
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    notice_id TEXT NOT NULL,
    channel TEXT NOT NULL CHECK (channel IN ('email', 'event', 'charge')),
    topic TEXT NOT NULL,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    balance BIGINT NOT NULL,
    cause_kind TEXT NOT NULL CHECK (cause_kind IN ('transaction', 'topup')),
    cause_id TEXT NOT NULL,
    threshold BIGINT,
    amount BIGINT,
    reason TEXT,
    status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'given_up')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    UNIQUE (notice_id, channel)
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE status = 'pending';
