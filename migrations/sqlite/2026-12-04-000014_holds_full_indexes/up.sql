-- SQLite only: full indexes instead of the partial ones. SQLite compares a bound parameter
-- with a partial index's `WHERE status = 'active'` when it plans, and a statement planned
-- with a parameter's value is planned again after every new binding: the holds read of
-- every ledger batch was parsed and planned afresh each time. With full indexes the planner
-- compares nothing, and the statement stays prepared. (PostgreSQL keeps its partial ones.)
DROP INDEX holds_active_by_account;
DROP INDEX holds_active_by_expiry;
CREATE INDEX holds_by_account_status ON holds (account_id, status, expires_at);
CREATE INDEX holds_by_status_expiry ON holds (status, expires_at);
