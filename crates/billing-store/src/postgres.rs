//! The PostgreSQL backend: READ COMMITTED transactions that lock the rows they change with
//! `SELECT … FOR UPDATE` (the wallet, and the top-up before its wallet), so that any number
//! of processes sharing the database serialize per wallet.

use diesel::pg::PgConnection;

pub(crate) type Conn = PgConnection;

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

include!("ops.rs");
include!("posting.rs");
