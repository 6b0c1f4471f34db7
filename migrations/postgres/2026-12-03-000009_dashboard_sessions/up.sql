-- Dashboard sessions: a customer signed in with an API key. Only the token's SHA-256 is
-- stored; a session ends at expires_at, at sign-out (ended_at), or with its key.
CREATE TABLE dashboard_sessions (
    hash TEXT PRIMARY KEY NOT NULL,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    key_id TEXT NOT NULL REFERENCES api_keys (id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    ended_at BIGINT
);
