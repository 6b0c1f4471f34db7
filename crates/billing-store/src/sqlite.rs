//! The SQLite backend: one file, WAL, a busy timeout, and `BEGIN IMMEDIATE` for every write
//! transaction so that writers queue on SQLite's single write lock instead of failing.

use diesel::sqlite::SqliteConnection;

mod statements;

pub(crate) type Conn = SqliteConnection;

/// Whether this database lacks a migration this build has (a readiness check).
pub(crate) fn migrations_pending(conn: &mut Conn) -> Result<bool, billing_core::ports::StoreError> {
    use diesel_migrations::MigrationHarness;
    conn.has_pending_migration(crate::connect::SQLITE_MIGRATIONS)
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

/// The audit's facts in one snapshot (a read transaction of WAL mode).
pub(crate) fn audit_snapshot(
    conn: &mut Conn,
) -> Result<billing_core::audit::AuditInput, StoreError> {
    conn.transaction(audit_load).map_err(db_err)
}

/// The wallet's balance. The immediate transaction already holds the database's write lock.
fn lock_account(
    conn: &mut Conn,
    id: &billing_core::ids::AccountId,
) -> Result<Option<i64>, diesel::result::Error> {
    crate::schema::accounts::table
        .find(id.as_str())
        .select(crate::schema::accounts::balance)
        .at_most_one(conn)
}

fn lock_topup(
    conn: &mut Conn,
    id: &billing_core::ids::TopUpId,
) -> Result<Option<TopUpRow>, diesel::result::Error> {
    crate::schema::topups::table
        .filter(crate::schema::topups::id.eq(id.as_str()))
        .select(TopUpRow::as_select())
        .at_most_one(conn)
}

/// Sets the hashes of entries (by `seq`): one cached prepared statement each, in process.
fn set_hashes(conn: &mut Conn, rows: &[(i64, String)]) -> Result<(), diesel::result::Error> {
    use crate::schema::ledger_entries;
    for (seq, hash) in rows {
        diesel::update(ledger_entries::table.find(seq))
            .set(ledger_entries::hash.eq(hash))
            .execute(conn)?;
    }
    Ok(())
}

/// Reads by key take one cached prepared statement each (in process, no round trip), not
/// one `IN (…)` statement parsed afresh for every length of list.
const POINT_QUERIES: bool = true;

/// The wallets' rows (`ids` sorted). The immediate transaction already holds the database's
/// write lock.
fn lock_wallets(conn: &mut Conn, ids: &[&str]) -> Result<Vec<WalletTuple>, diesel::result::Error> {
    let mut rows = Vec::with_capacity(ids.len());
    for id in ids {
        rows.extend(
            crate::schema::accounts::table
                .find(*id)
                .select(WALLET_COLUMNS)
                .at_most_one(conn)?,
        );
    }
    Ok(rows)
}

/// Writes a batch's entries, claims and wallet rows: a statement per row, because in
/// process a statement costs no round trip and a single-row insert is a cached prepared
/// statement (a multi-row one would be parsed every time). Answers how many wallets still
/// held their old balance.
fn write_ledger(
    conn: &mut Conn,
    entries: &[NewEntryRow],
    claims: &[NewClaimRow],
    updates: &[WalletUpdate],
) -> Result<usize, diesel::result::Error> {
    for row in entries {
        statements::InsertEntry(row).execute(conn)?;
    }
    for row in claims {
        diesel::insert_into(crate::schema::idempotency_keys::table)
            .values(row)
            .execute(conn)?;
    }
    update_wallet_rows(conn, updates)
}

/// Writes each wallet's new row with its own (cached) statement; answers how many still held
/// their old balance.
fn update_wallet_rows(
    conn: &mut Conn,
    updates: &[WalletUpdate],
) -> Result<usize, diesel::result::Error> {
    let mut updated = 0;
    for u in updates {
        updated += statements::UpdateWallet(u).execute(conn)?;
    }
    Ok(updated)
}

/// A batch's wallets (`ids` sorted, distinct) and what its postings are decided against:
/// a cached point read per row (in process, no round trip), under the write lock the
/// immediate transaction holds.
fn batch_state(
    conn: &mut Conn,
    ids: &[&str],
    since: Timestamp,
    postings: &[Posting],
) -> Result<BatchState, TxError<StoreError>> {
    let wallets = load_wallets(conn, ids)?;
    let mut held = Vec::new();
    for id in ids {
        held.extend(
            holds::table
                .filter(holds::account_id.eq(*id))
                .filter(holds::status.eq(HoldStatus::Active.as_str()))
                .filter(holds::expires_at.gt(since.as_micros()))
                .select((holds::account_id, holds::amount, holds::expires_at))
                .load::<(String, i64, i64)>(conn)?,
        );
    }
    let mut claimed = Vec::new();
    for claim in wanted_claims(postings) {
        if let Some(prior) = find_claim(conn, claim)? {
            claimed.push((
                claim.scope.clone(),
                claim.key.clone(),
                prior.fingerprint,
                prior.result_ref,
            ));
        }
    }
    Ok(BatchState {
        wallets,
        holds: active_holds(held),
        claims: claims_from(claimed),
    })
}

include!("ops.rs");
include!("posting.rs");
include!("audit.rs");
