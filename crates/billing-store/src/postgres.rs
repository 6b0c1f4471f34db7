//! The PostgreSQL backend: READ COMMITTED transactions that lock the rows they change with
//! `SELECT … FOR UPDATE` (the wallet, and the top-up before its wallet), so that any number
//! of processes sharing the database serialize per wallet.

use diesel::pg::PgConnection;

pub(crate) type Conn = PgConnection;

/// Reads of a batch's rows take one statement per table (`= ANY($1)`): a round trip each.
const POINT_QUERIES: bool = false;

/// Whether this database lacks a migration this build has (a readiness check).
pub(crate) fn migrations_pending(conn: &mut Conn) -> Result<bool, billing_core::ports::StoreError> {
    use diesel_migrations::MigrationHarness;
    conn.has_pending_migration(crate::POSTGRES_MIGRATIONS)
        .map_err(|e| billing_core::ports::StoreError::Unavailable(e.to_string()))
}

pub(crate) fn write_tx<T, E>(
    conn: &mut Conn,
    f: impl FnOnce(&mut Conn) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<diesel::result::Error>,
{
    conn.transaction(f)
}

/// The audit's facts in one snapshot (a read-only repeatable-read transaction).
pub(crate) fn audit_snapshot(
    conn: &mut Conn,
) -> Result<billing_core::audit::AuditInput, StoreError> {
    conn.build_transaction()
        .repeatable_read()
        .read_only()
        .run(audit_load)
        .map_err(db_err)
}

/// The wallet's balance, with its row locked until the transaction ends.
fn lock_account(
    conn: &mut Conn,
    id: &billing_core::ids::AccountId,
) -> Result<Option<i64>, diesel::result::Error> {
    crate::schema::accounts::table
        .find(id.as_str())
        .select(crate::schema::accounts::balance)
        .for_update()
        .at_most_one(conn)
}

/// The top-up, with its row locked until the transaction ends. Always taken before the
/// wallet's lock (postings lock only wallets), so the two never deadlock.
fn lock_topup(
    conn: &mut Conn,
    id: &billing_core::ids::TopUpId,
) -> Result<Option<TopUpRow>, diesel::result::Error> {
    crate::schema::topups::table
        .filter(crate::schema::topups::id.eq(id.as_str()))
        .select(TopUpRow::as_select())
        .for_update()
        .at_most_one(conn)
}

/// The wallets' rows, locked in sorted id order (so that two batches sharing wallets never
/// deadlock) until the transaction ends.
fn lock_wallets(conn: &mut Conn, ids: &[&str]) -> Result<Vec<WalletTuple>, diesel::result::Error> {
    crate::schema::accounts::table
        .filter(crate::schema::accounts::id.eq_any(ids))
        .order(crate::schema::accounts::id.asc())
        .select(WALLET_COLUMNS)
        .for_update()
        .load(conn)
}

/// Sets the hashes of entries (by `seq`) in one statement.
fn set_hashes(conn: &mut Conn, rows: &[(i64, String)]) -> Result<(), diesel::result::Error> {
    use diesel::sql_types::{Array, BigInt, Text};
    if rows.is_empty() {
        return Ok(());
    }
    let (seqs, hashes): (Vec<i64>, Vec<String>) = rows.iter().cloned().unzip();
    diesel::sql_query(
        "UPDATE ledger_entries SET hash = u.hash \
         FROM unnest($1::bigint[], $2::text[]) AS u(seq, hash) \
         WHERE ledger_entries.seq = u.seq",
    )
    .bind::<Array<BigInt>, _>(seqs)
    .bind::<Array<Text>, _>(hashes)
    .execute(conn)
    .map(|_| ())
}

/// Bound parameters a statement may carry (PostgreSQL's protocol allows 65,535).
const PARAMETERS_MAX: usize = 60_000;

/// Writes a batch's entries, claims and wallet rows in one statement, one round trip: two
/// `INSERT`s and an `UPDATE … FROM (VALUES …)` as data-modifying CTEs (they share one
/// snapshot, which the wallets' row locks make the current state). Answers how many wallets
/// still held their old balance.
fn write_ledger(
    conn: &mut Conn,
    entries: &[NewEntryRow],
    claims: &[NewClaimRow],
    updates: &[WalletUpdate],
) -> Result<usize, diesel::result::Error> {
    use diesel::sql_types::{BigInt, Nullable, Text};
    if entries.len() * 14 + claims.len() * 5 + updates.len() * 7 > PARAMETERS_MAX {
        return write_ledger_apart(conn, entries, claims, updates);
    }
    let mut n = 0;
    let mut next = |count: usize, casts: &[&str]| {
        let params: Vec<String> = (0..count)
            .map(|i| {
                n += 1;
                format!("${n}{}", casts.get(i).copied().unwrap_or(""))
            })
            .collect();
        format!("({})", params.join(", "))
    };
    let mut parts = Vec::new();
    if !entries.is_empty() {
        let rows: Vec<String> = entries.iter().map(|_| next(14, &[])).collect();
        parts.push(format!(
            "e AS (INSERT INTO ledger_entries (id, account_id, kind, amount, balance_after, \
             description, reference, created_at, usage_model, usage_input_tokens, \
             usage_output_tokens, usage_input_per_million, usage_output_per_million, hash) \
             VALUES {} RETURNING 1)",
            rows.join(", ")
        ));
    }
    if !claims.is_empty() {
        let rows: Vec<String> = claims.iter().map(|_| next(5, &[])).collect();
        parts.push(format!(
            "c AS (INSERT INTO idempotency_keys (scope, key, fingerprint, result_ref, created_at) \
             VALUES {} RETURNING 1)",
            rows.join(", ")
        ));
    }
    let casts = [
        "::text", "::bigint", "::bigint", "::bigint", "::bigint", "::bigint", "::text",
    ];
    let count = if updates.is_empty() {
        "0::bigint".to_owned()
    } else {
        let rows: Vec<String> = updates.iter().map(|_| next(7, &casts)).collect();
        parts.push(format!(
            "w AS (UPDATE accounts SET balance = v.balance, spend_month_start = v.month_start, \
             spend_month = v.spent, limit_told_month = v.told, ledger_head = v.head \
             FROM (VALUES {}) AS v(id, old_balance, balance, month_start, spent, told, head) \
             WHERE accounts.id = v.id AND accounts.balance = v.old_balance RETURNING 1)",
            rows.join(", ")
        ));
        "(SELECT count(*) FROM w)".to_owned()
    };
    if parts.is_empty() {
        return Ok(0);
    }
    // Every data-modifying CTE runs to completion whether or not the final SELECT reads it.
    let sql = format!("WITH {} SELECT {count} AS updated", parts.join(", "));
    let mut query = diesel::sql_query(sql).into_boxed();
    for e in entries {
        query = query
            .bind::<Text, _>(e.id.as_str())
            .bind::<Text, _>(e.account_id.as_str())
            .bind::<Text, _>(e.kind.as_str())
            .bind::<BigInt, _>(e.amount)
            .bind::<BigInt, _>(e.balance_after)
            .bind::<Text, _>(e.description.as_str())
            .bind::<Nullable<Text>, _>(e.reference.as_deref())
            .bind::<BigInt, _>(e.created_at)
            .bind::<Nullable<Text>, _>(e.usage_model.as_deref())
            .bind::<Nullable<BigInt>, _>(e.usage_input_tokens)
            .bind::<Nullable<BigInt>, _>(e.usage_output_tokens)
            .bind::<Nullable<BigInt>, _>(e.usage_input_per_million)
            .bind::<Nullable<BigInt>, _>(e.usage_output_per_million)
            .bind::<Nullable<Text>, _>(e.hash.as_deref());
    }
    for c in claims {
        query = query
            .bind::<Text, _>(c.scope.as_str())
            .bind::<Text, _>(c.key.as_str())
            .bind::<Text, _>(c.fingerprint.as_str())
            .bind::<Text, _>(c.result_ref.as_str())
            .bind::<BigInt, _>(c.created_at);
    }
    for u in updates {
        query = query
            .bind::<Text, _>(u.id.as_str())
            .bind::<BigInt, _>(u.old_balance)
            .bind::<BigInt, _>(u.balance)
            .bind::<BigInt, _>(u.month_start)
            .bind::<BigInt, _>(u.spent)
            .bind::<Nullable<BigInt>, _>(u.told)
            .bind::<Nullable<Text>, _>(u.head.as_deref());
    }
    let written: Updated = query.get_result(conn)?;
    Ok(usize::try_from(written.updated).unwrap_or(0))
}

#[derive(diesel::QueryableByName)]
struct Updated {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    updated: i64,
}

/// [`write_ledger`] for a batch too large for one statement: multi-row inserts in chunks,
/// then the wallets one by one.
fn write_ledger_apart(
    conn: &mut Conn,
    entries: &[NewEntryRow],
    claims: &[NewClaimRow],
    updates: &[WalletUpdate],
) -> Result<usize, diesel::result::Error> {
    use crate::schema::{idempotency_keys, ledger_entries};
    for chunk in entries.chunks(ROWS_PER_INSERT) {
        diesel::insert_into(ledger_entries::table)
            .values(chunk)
            .execute(conn)?;
    }
    for chunk in claims.chunks(ROWS_PER_INSERT) {
        diesel::insert_into(idempotency_keys::table)
            .values(chunk)
            .execute(conn)?;
    }
    update_wallet_rows(conn, updates)
}

include!("ops.rs");
include!("posting.rs");
include!("audit.rs");
