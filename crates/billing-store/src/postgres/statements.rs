//! The ledger writer's PostgreSQL statements whose text never changes with the batch: every
//! list is bound as one array and `unnest`ed, so that Diesel prepares each statement once per
//! connection and PostgreSQL parses it once (a `sql_query` Diesel never caches, and a
//! `VALUES` list of one row per posting had a different text for every batch size: parse
//! and plan were a quarter of PostgreSQL's time per batch, measured).

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Nullable, Text};
use diesel::{QueryResult, RunQueryDsl};

use super::WalletUpdate;
use crate::rows::{NewClaimRow, NewEntryRow};

/// Writes a batch's entries, claims and wallet rows in one statement: two `INSERT … SELECT
/// FROM unnest(…)` and an `UPDATE … FROM unnest(…)` as data-modifying CTEs (one snapshot,
/// which the wallets' row locks make the current state); selects how many wallets still
/// held their old balance and, where a version is given (a batch decided from a writer's
/// copy, whose row the `UPDATE` locks), that version. A row another transaction holds is
/// waited for and its quals checked again on the version that transaction committed. Rows
/// keep their order: `unnest` in `FROM` yields the arrays in order, so entries take their
/// `seq` in the order they were chained.
pub(crate) struct WriteLedger<'a> {
    entry_id: Vec<&'a str>,
    entry_account: Vec<&'a str>,
    entry_kind: Vec<&'a str>,
    entry_amount: Vec<i64>,
    entry_balance_after: Vec<i64>,
    entry_description: Vec<&'a str>,
    entry_reference: Vec<Option<&'a str>>,
    entry_created_at: Vec<i64>,
    entry_model: Vec<Option<&'a str>>,
    entry_input_tokens: Vec<Option<i64>>,
    entry_output_tokens: Vec<Option<i64>>,
    entry_input_per_million: Vec<Option<i64>>,
    entry_output_per_million: Vec<Option<i64>>,
    entry_hash: Vec<Option<&'a str>>,
    claim_scope: Vec<&'a str>,
    claim_key: Vec<&'a str>,
    claim_fingerprint: Vec<&'a str>,
    claim_result: Vec<&'a str>,
    claim_created_at: Vec<i64>,
    wallet_id: Vec<&'a str>,
    wallet_old_balance: Vec<i64>,
    wallet_balance: Vec<i64>,
    wallet_month_start: Vec<i64>,
    wallet_spent: Vec<i64>,
    wallet_told: Vec<Option<i64>>,
    wallet_head: Vec<Option<&'a str>>,
    wallet_version: Vec<Option<i64>>,
}

impl<'a> WriteLedger<'a> {
    pub(crate) fn new(
        entries: &'a [NewEntryRow],
        claims: &'a [NewClaimRow],
        wallets: &'a [WalletUpdate],
    ) -> WriteLedger<'a> {
        WriteLedger {
            entry_id: entries.iter().map(|e| e.id.as_str()).collect(),
            entry_account: entries.iter().map(|e| e.account_id.as_str()).collect(),
            entry_kind: entries.iter().map(|e| e.kind.as_str()).collect(),
            entry_amount: entries.iter().map(|e| e.amount).collect(),
            entry_balance_after: entries.iter().map(|e| e.balance_after).collect(),
            entry_description: entries.iter().map(|e| e.description.as_str()).collect(),
            entry_reference: entries.iter().map(|e| e.reference.as_deref()).collect(),
            entry_created_at: entries.iter().map(|e| e.created_at).collect(),
            entry_model: entries.iter().map(|e| e.usage_model.as_deref()).collect(),
            entry_input_tokens: entries.iter().map(|e| e.usage_input_tokens).collect(),
            entry_output_tokens: entries.iter().map(|e| e.usage_output_tokens).collect(),
            entry_input_per_million: entries.iter().map(|e| e.usage_input_per_million).collect(),
            entry_output_per_million: entries.iter().map(|e| e.usage_output_per_million).collect(),
            entry_hash: entries.iter().map(|e| e.hash.as_deref()).collect(),
            claim_scope: claims.iter().map(|c| c.scope.as_str()).collect(),
            claim_key: claims.iter().map(|c| c.key.as_str()).collect(),
            claim_fingerprint: claims.iter().map(|c| c.fingerprint.as_str()).collect(),
            claim_result: claims.iter().map(|c| c.result_ref.as_str()).collect(),
            claim_created_at: claims.iter().map(|c| c.created_at).collect(),
            wallet_id: wallets.iter().map(|w| w.id.as_str()).collect(),
            wallet_old_balance: wallets.iter().map(|w| w.old_balance).collect(),
            wallet_balance: wallets.iter().map(|w| w.balance).collect(),
            wallet_month_start: wallets.iter().map(|w| w.month_start).collect(),
            wallet_spent: wallets.iter().map(|w| w.spent).collect(),
            wallet_told: wallets.iter().map(|w| w.told).collect(),
            wallet_head: wallets.iter().map(|w| w.head.as_deref()).collect(),
            wallet_version: wallets.iter().map(|w| w.version).collect(),
        }
    }
}

impl QueryId for WriteLedger<'_> {
    type QueryId = ();
    // Cached by its text, which is always the same. (Diesel caches a statement only while
    // nothing in `walk_ast` marks it unsafe to: no `sql_query`, `IN (…)` lists or `UPDATE`
    // builders inside these.)
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for WriteLedger<'_> {
    type SqlType = BigInt;
}

impl<C> RunQueryDsl<C> for WriteLedger<'_> {}

impl QueryFragment<Pg> for WriteLedger<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "WITH e AS (INSERT INTO ledger_entries (id, account_id, kind, amount, \
             balance_after, description, reference, created_at, usage_model, \
             usage_input_tokens, usage_output_tokens, usage_input_per_million, \
             usage_output_per_million, hash) SELECT * FROM unnest(",
        );
        out.push_bind_param::<Array<Text>, _>(&self.entry_id)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<Text>, _>(&self.entry_account)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<Text>, _>(&self.entry_kind)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<BigInt>, _>(&self.entry_amount)?;
        out.push_sql("::bigint[], ");
        out.push_bind_param::<Array<BigInt>, _>(&self.entry_balance_after)?;
        out.push_sql("::bigint[], ");
        out.push_bind_param::<Array<Text>, _>(&self.entry_description)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.entry_reference)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<BigInt>, _>(&self.entry_created_at)?;
        out.push_sql("::bigint[], ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.entry_model)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<Nullable<BigInt>>, _>(&self.entry_input_tokens)?;
        out.push_sql("::bigint[], ");
        out.push_bind_param::<Array<Nullable<BigInt>>, _>(&self.entry_output_tokens)?;
        out.push_sql("::bigint[], ");
        out.push_bind_param::<Array<Nullable<BigInt>>, _>(&self.entry_input_per_million)?;
        out.push_sql("::bigint[], ");
        out.push_bind_param::<Array<Nullable<BigInt>>, _>(&self.entry_output_per_million)?;
        out.push_sql("::bigint[], ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.entry_hash)?;
        out.push_sql(
            "::text[]) RETURNING 1), \
             c AS (INSERT INTO idempotency_keys (scope, key, fingerprint, result_ref, \
             created_at) SELECT * FROM unnest(",
        );
        out.push_bind_param::<Array<Text>, _>(&self.claim_scope)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<Text>, _>(&self.claim_key)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<Text>, _>(&self.claim_fingerprint)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<Text>, _>(&self.claim_result)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<BigInt>, _>(&self.claim_created_at)?;
        out.push_sql(
            "::bigint[]) RETURNING 1), \
             w AS (UPDATE accounts SET balance = v.balance, spend_month_start = \
             v.month_start, spend_month = v.spent, limit_told_month = v.told, \
             ledger_head = v.head FROM unnest(",
        );
        out.push_bind_param::<Array<Text>, _>(&self.wallet_id)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<BigInt>, _>(&self.wallet_old_balance)?;
        out.push_sql("::bigint[], ");
        out.push_bind_param::<Array<BigInt>, _>(&self.wallet_balance)?;
        out.push_sql("::bigint[], ");
        out.push_bind_param::<Array<BigInt>, _>(&self.wallet_month_start)?;
        out.push_sql("::bigint[], ");
        out.push_bind_param::<Array<BigInt>, _>(&self.wallet_spent)?;
        out.push_sql("::bigint[], ");
        out.push_bind_param::<Array<Nullable<BigInt>>, _>(&self.wallet_told)?;
        out.push_sql("::bigint[], ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.wallet_head)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<Nullable<BigInt>>, _>(&self.wallet_version)?;
        // `accounts.id = ANY(…)` as well as the join: the generic plan then reads accounts
        // by an index condition, whatever size the table had when it was planned (joined
        // only by `id = v.id`, a plan made on a few rows may scan the whole index).
        out.push_sql(
            "::bigint[]) AS v(id, old_balance, balance, month_start, spent, told, head, \
             version) WHERE accounts.id = ANY(",
        );
        out.push_bind_param::<Array<Text>, _>(&self.wallet_id)?;
        out.push_sql(
            "::text[]) AND accounts.id = v.id AND accounts.balance = v.old_balance \
             AND (v.version IS NULL OR accounts.version = v.version) \
             RETURNING 1) SELECT count(*) FROM w",
        );
        Ok(())
    }
}

/// `SELECT * FROM ledger_batch_state(…)`: a batch's wallets locked, then their auto top-up
/// rows, saved methods, active holds since a time, and the claims already made on the
/// batch's (scope, key) pairs, each list as JSON text (see migration 000015, which says why
/// the locks and the reads are separate statements inside one function).
pub(crate) struct BatchState<'a> {
    wallet_ids: &'a [&'a str],
    holds_after: i64,
    scopes: Vec<&'a str>,
    keys: Vec<&'a str>,
}

impl<'a> BatchState<'a> {
    pub(crate) fn new(
        wallet_ids: &'a [&'a str],
        holds_after: i64,
        claims: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> BatchState<'a> {
        let (scopes, keys) = claims.unzip();
        BatchState {
            wallet_ids,
            holds_after,
            scopes,
            keys,
        }
    }
}

impl QueryId for BatchState<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for BatchState<'_> {
    type SqlType = (Text, Text, Text, Text, Text, Text);
}

impl<C> RunQueryDsl<C> for BatchState<'_> {}

impl QueryFragment<Pg> for BatchState<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "SELECT wallet_rows, auto_topup_rows, method_rows, hold_rows, claim_rows, \
             version_rows FROM ledger_batch_state(",
        );
        out.push_bind_param::<Array<Text>, _>(self.wallet_ids)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<BigInt, _>(&self.holds_after)?;
        out.push_sql("::bigint, ");
        out.push_bind_param::<Array<Text>, _>(&self.scopes)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<Text>, _>(&self.keys)?;
        out.push_sql("::text[])");
        Ok(())
    }
}

/// `SELECT id, version FROM accounts WHERE id = ANY(…) ORDER BY id FOR UPDATE`: a batch's
/// wallets locked in id order (as `ledger_batch_state` locks them) with their versions, for
/// a batch on several wallets its writer holds copies of.
pub(crate) struct LockVersions<'a> {
    wallet_ids: &'a [&'a str],
}

impl<'a> LockVersions<'a> {
    pub(crate) fn new(wallet_ids: &'a [&'a str]) -> LockVersions<'a> {
        LockVersions { wallet_ids }
    }
}

impl QueryId for LockVersions<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for LockVersions<'_> {
    type SqlType = (Text, BigInt);
}

impl<C> RunQueryDsl<C> for LockVersions<'_> {}

impl QueryFragment<Pg> for LockVersions<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("SELECT id, version FROM accounts WHERE id = ANY(");
        out.push_bind_param::<Array<Text>, _>(self.wallet_ids)?;
        out.push_sql("::text[]) ORDER BY id FOR UPDATE");
        Ok(())
    }
}
