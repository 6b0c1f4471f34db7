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
        holds_since: since,
    })
}

include!("ops.rs");
include!("posting.rs");
include!("audit.rs");

#[cfg(test)]
mod tests {
    use diesel::connection::SimpleConnection;
    use diesel::{Connection, ExpressionMethods, QueryDsl, RunQueryDsl, SqliteConnection};

    use super::{Pending, TxError, flush, load_wallets};
    use crate::rows::NewEntryRow;
    use crate::schema::ledger_entries;
    use crate::{DieselStore, StoreError, StoreOptions};

    /// A write refuses an entry for a wallet it did not lock, and writes nothing of it: the
    /// wallet's row would not be updated with it, and its hash would not follow the
    /// wallet's chain. (Every caller builds entries for the wallets it locked; this is the
    /// check behind that, with the foreign key.)
    #[test]
    fn a_write_refuses_an_entry_for_a_wallet_it_did_not_lock() {
        let dir = std::env::temp_dir().join(format!("billing-stray-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("billing.db");
        let path = path.to_str().expect("utf-8");
        drop(DieselStore::connect(path, &StoreOptions::default()).expect("migrate"));
        let mut conn = SqliteConnection::establish(path).expect("connect");
        conn.batch_execute(
            "INSERT INTO accounts (id, name, email, balance, created_at) VALUES \
             ('acct_locked', 'Ada', 'ada@example.com', 10000000000, 0), \
             ('acct_other', 'Bob', 'bob@example.com', 10000000000, 0)",
        )
        .expect("two wallets of 10");
        let entry = |account: &str| NewEntryRow {
            id: format!("txn_stray_{account}"),
            account_id: account.to_owned(),
            kind: "usage".into(),
            amount: -1_000_000_000,
            balance_after: 9_000_000_000,
            description: "usage".into(),
            reference: None,
            created_at: 1,
            usage_model: None,
            usage_input_tokens: None,
            usage_output_tokens: None,
            usage_input_per_million: None,
            usage_output_per_million: None,
            hash: None,
        };
        let mut untimed = std::time::Duration::ZERO;
        let outcome: Result<(), TxError<StoreError>> = conn.immediate_transaction(|conn| {
            let mut wallets = load_wallets(conn, &["acct_locked"])?;
            let mut pending = Pending::default();
            pending.entries.push(entry("acct_other"));
            flush(conn, &mut pending, &mut wallets, &mut untimed)
        });
        match outcome {
            Err(TxError::Op(StoreError::Corrupt(message))) => {
                assert!(message.contains("acct_other"), "{message}");
            }
            Err(TxError::Op(e)) => panic!("refused for another reason: {e}"),
            Err(TxError::Db(e)) => panic!("the database refused it instead: {e}"),
            Ok(()) => panic!("an entry for an unlocked wallet was written"),
        }
        let written: i64 = ledger_entries::table
            .filter(ledger_entries::account_id.eq("acct_other"))
            .count()
            .get_result(&mut conn)
            .expect("count");
        assert_eq!(written, 0, "nothing of it written");
        drop(conn);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
