//! The PostgreSQL backend: READ COMMITTED transactions that lock the rows they change with
//! `SELECT … FOR UPDATE` (the wallet, and the top-up before its wallet), so that any number
//! of processes sharing the database serialize per wallet.

use diesel::pg::PgConnection;

pub(crate) type Conn = PgConnection;

/// Rows are inserted in multi-row statements: one round trip per table and batch.
const ROW_AT_A_TIME: bool = false;

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

/// The wallet's balance, with its row locked until the transaction ends.
fn lock_account(
    conn: &mut Conn,
    id: &billing_core::ids::AccountId,
) -> Result<Option<i64>, diesel::result::Error> {
    crate::schema::accounts::table
        .find(id.as_str())
        .select(crate::schema::accounts::balance)
        .for_update()
        .first(conn)
        .optional()
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
        .first(conn)
        .optional()
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

/// Writes every wallet's new row in one statement (one round trip however many wallets a
/// batch touched); answers how many still held their old balance.
fn update_wallets(
    conn: &mut Conn,
    updates: &[WalletUpdate],
) -> Result<usize, diesel::result::Error> {
    use diesel::sql_types::{BigInt, Nullable, Text};
    if updates.is_empty() {
        return Ok(0);
    }
    let rows: Vec<String> = (0..updates.len())
        .map(|i| {
            let n = i * 6;
            format!(
                "(${}::text, ${}::bigint, ${}::bigint, ${}::bigint, ${}::bigint, ${}::bigint)",
                n + 1,
                n + 2,
                n + 3,
                n + 4,
                n + 5,
                n + 6
            )
        })
        .collect();
    let sql = format!(
        "UPDATE accounts SET balance = v.balance, spend_month_start = v.month_start, \
         spend_month = v.spent, limit_told_month = v.told \
         FROM (VALUES {}) AS v(id, old_balance, balance, month_start, spent, told) \
         WHERE accounts.id = v.id AND accounts.balance = v.old_balance",
        rows.join(", ")
    );
    let mut query = diesel::sql_query(sql).into_boxed();
    for u in updates {
        query = query
            .bind::<Text, _>(u.id.as_str())
            .bind::<BigInt, _>(u.old_balance)
            .bind::<BigInt, _>(u.balance)
            .bind::<BigInt, _>(u.month_start)
            .bind::<BigInt, _>(u.spent)
            .bind::<Nullable<BigInt>, _>(u.told);
    }
    query.execute(conn)
}

include!("ops.rs");
include!("posting.rs");
