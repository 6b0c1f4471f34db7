-- Authorization holds: reservations against the available balance.
CREATE TABLE holds (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    amount BIGINT NOT NULL CHECK (amount > 0),
    status TEXT NOT NULL CHECK (status IN ('active', 'captured', 'released', 'expired')),
    captured_amount BIGINT CHECK (captured_amount >= 0),
    entry_id TEXT,
    rate_model TEXT,
    rate_input_per_million BIGINT,
    rate_output_per_million BIGINT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX holds_active_by_account ON holds (account_id) WHERE status = 'active';
CREATE INDEX holds_active_by_expiry ON holds (expires_at) WHERE status = 'active';
