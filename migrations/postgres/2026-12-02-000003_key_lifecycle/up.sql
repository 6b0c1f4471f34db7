-- Key lifecycle: optional expiry, last use (to the minute), an optional request limit per key.
ALTER TABLE api_keys ADD COLUMN expires_at BIGINT;
ALTER TABLE api_keys ADD COLUMN last_used_at BIGINT;
ALTER TABLE api_keys ADD COLUMN requests_per_minute_max INTEGER CHECK (requests_per_minute_max > 0);
CREATE INDEX api_keys_newest ON api_keys (created_at, id);
CREATE INDEX api_keys_by_account ON api_keys (account_id, created_at, id);
