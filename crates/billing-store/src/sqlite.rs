//! The SQLite backend: one file, WAL, a busy timeout, and `BEGIN IMMEDIATE` for every write
//! transaction so that writers queue on SQLite's single write lock instead of failing.

use diesel::sqlite::SqliteConnection;

pub(crate) type Conn = SqliteConnection;

/// Rows are inserted one statement each: in process a statement costs no round trip, and a
/// single-row insert is a cached prepared statement (a multi-row one is parsed every time).
const ROW_AT_A_TIME: bool = true;

/// Whether this database lacks a migration this build has (a readiness check).
pub(crate) fn migrations_pending(conn: &mut Conn) -> Result<bool, billing_core::ports::StoreError> {
    use diesel_migrations::MigrationHarness;
    conn.has_pending_migration(crate::SQLITE_MIGRATIONS)
        .map_err(|e| billing_core::ports::StoreError::Unavailable(e.to_string()))
}

pub(crate) fn write_tx<T, E>(
    conn: &mut Conn,
    f: impl FnOnce(&mut Conn) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<diesel::result::Error>,
{
    conn.immediate_transaction(f)
}

/// The wallet's balance. The immediate transaction already holds the database's write lock.
fn lock_account(
    conn: &mut Conn,
    id: &billing_core::ids::AccountId,
) -> Result<Option<i64>, diesel::result::Error> {
    crate::schema::accounts::table
        .find(id.as_str())
        .select(crate::schema::accounts::balance)
        .first(conn)
        .optional()
}

fn lock_topup(
    conn: &mut Conn,
    id: &billing_core::ids::TopUpId,
) -> Result<Option<TopUpRow>, diesel::result::Error> {
    crate::schema::topups::table
        .filter(crate::schema::topups::id.eq(id.as_str()))
        .select(TopUpRow::as_select())
        .first(conn)
        .optional()
}

/// The wallets' rows, sorted by id. The immediate transaction already holds the database's
/// write lock.
fn lock_wallets(conn: &mut Conn, ids: &[&str]) -> Result<Vec<WalletTuple>, diesel::result::Error> {
    crate::schema::accounts::table
        .filter(crate::schema::accounts::id.eq_any(ids))
        .order(crate::schema::accounts::id.asc())
        .select(WALLET_COLUMNS)
        .load(conn)
}

/// Writes each wallet's new row (in process: a statement each costs no round trip); answers
/// how many still held their old balance.
fn update_wallets(
    conn: &mut Conn,
    updates: &[WalletUpdate],
) -> Result<usize, diesel::result::Error> {
    use crate::schema::accounts;
    let mut updated = 0;
    for u in updates {
        updated += diesel::update(accounts::table.find(u.id.as_str()))
            .filter(accounts::balance.eq(u.old_balance))
            .set((
                accounts::balance.eq(u.balance),
                accounts::spend_month_start.eq(u.month_start),
                accounts::spend_month.eq(u.spent),
                accounts::limit_told_month.eq(u.told),
            ))
            .execute(conn)?;
    }
    Ok(updated)
}

include!("ops.rs");
include!("posting.rs");
