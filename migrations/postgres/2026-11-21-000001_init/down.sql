DROP TABLE webhook_events;
DROP TABLE api_keys;
DROP TABLE packs;
DROP TABLE topups;
DROP TABLE idempotency_keys;
DROP TABLE refund_links;
DROP TABLE ledger_entries;
DROP TABLE accounts;
