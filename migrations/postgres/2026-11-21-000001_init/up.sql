-- Amounts are BIGINT at the ledger scale (10^-9 of the wallet unit) or in the currency's
-- minor units (columns ending in _minor); see docs/ARCHITECTURE.md. Times are microseconds
-- since the Unix epoch, UTC.
CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    email TEXT NOT NULL,
    balance BIGINT NOT NULL DEFAULT 0 CHECK (balance >= 0),
    created_at BIGINT NOT NULL
);

CREATE TABLE ledger_entries (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    kind TEXT NOT NULL CHECK (kind IN ('topup', 'usage', 'refund', 'bonus', 'adjustment')),
    amount BIGINT NOT NULL CHECK (amount <> 0),
    balance_after BIGINT NOT NULL CHECK (balance_after >= 0),
    description TEXT NOT NULL,
    reference TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX ledger_entries_account_seq ON ledger_entries (account_id, seq);
CREATE INDEX ledger_entries_account_kind_seq ON ledger_entries (account_id, kind, seq);

CREATE TABLE refund_links (
    refund_entry_id TEXT NOT NULL REFERENCES ledger_entries (id),
    refunded_entry_id TEXT NOT NULL REFERENCES ledger_entries (id),
    PRIMARY KEY (refund_entry_id, refunded_entry_id)
);
CREATE INDEX refund_links_refunded ON refund_links (refunded_entry_id);

CREATE TABLE idempotency_keys (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    result_ref TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (scope, key)
);

CREATE TABLE topups (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    pack_id TEXT,
    pack_name TEXT,
    price_minor BIGINT NOT NULL CHECK (price_minor > 0),
    currency TEXT NOT NULL,
    credits BIGINT NOT NULL CHECK (credits > 0),
    bonus BIGINT NOT NULL CHECK (bonus >= 0),
    status TEXT NOT NULL CHECK (status IN ('pending', 'completed', 'failed')),
    gateway TEXT NOT NULL,
    payment_ref TEXT,
    checkout_url TEXT,
    failure_reason TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (gateway, payment_ref)
);
CREATE INDEX topups_account_seq ON topups (account_id, seq);
CREATE INDEX topups_pending ON topups (created_at) WHERE status = 'pending';

CREATE TABLE packs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    price_minor BIGINT NOT NULL CHECK (price_minor > 0),
    currency TEXT NOT NULL,
    credits BIGINT NOT NULL CHECK (credits > 0),
    popular BOOLEAN NOT NULL,
    active BOOLEAN NOT NULL
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    account_id TEXT REFERENCES accounts (id),
    scope TEXT NOT NULL CHECK (scope IN ('customer', 'platform', 'admin')),
    prefix TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE TABLE webhook_events (
    gateway TEXT NOT NULL,
    event_id TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (gateway, event_id)
);
