-- Auto top-up: the customer's settings (with the quote of its amount) and what the service
-- recorded about its charges, kept apart from the wallet row and read under its lock; and
-- the payment method saved for off-session charges.
CREATE TABLE auto_topups (
    account_id TEXT PRIMARY KEY REFERENCES accounts (id),
    enabled BOOLEAN NOT NULL,
    threshold BIGINT CHECK (threshold > 0),
    amount_minor BIGINT CHECK (amount_minor > 0),
    currency TEXT NOT NULL,
    monthly_cap_minor BIGINT CHECK (monthly_cap_minor > 0),
    credits BIGINT NOT NULL CHECK (credits >= 0),
    bonus BIGINT NOT NULL CHECK (bonus >= 0),
    failure_limit INTEGER NOT NULL CHECK (failure_limit > 0),
    pending_topup_id TEXT,
    failures INTEGER NOT NULL DEFAULT 0,
    month_start BIGINT NOT NULL DEFAULT 0,
    month_charged_minor BIGINT NOT NULL DEFAULT 0 CHECK (month_charged_minor >= 0),
    disabled_reason TEXT
);
CREATE TABLE payment_methods (
    account_id TEXT PRIMARY KEY REFERENCES accounts (id),
    gateway TEXT NOT NULL,
    reference TEXT NOT NULL,
    brand TEXT,
    last4 TEXT,
    saved_at BIGINT NOT NULL
);
