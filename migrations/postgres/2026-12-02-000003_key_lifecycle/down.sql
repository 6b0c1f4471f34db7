DROP INDEX api_keys_by_account;
DROP INDEX api_keys_newest;
ALTER TABLE api_keys DROP COLUMN requests_per_minute_max;
ALTER TABLE api_keys DROP COLUMN last_used_at;
ALTER TABLE api_keys DROP COLUMN expires_at;
