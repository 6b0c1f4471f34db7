//! The PostgreSQL backend: READ COMMITTED transactions that lock the rows they change with
//! `SELECT … FOR UPDATE` (the wallet, and the top-up before its wallet), so that any number
//! of processes sharing the database serialize per wallet.

use diesel::pg::PgConnection;

mod statements;

pub(crate) type Conn = PgConnection;

/// Reads of several rows take one statement per table (`= ANY($1)`): a round trip each.
const POINT_QUERIES: bool = false;

/// Whether this database lacks a migration this build has (a readiness check).
pub(crate) fn migrations_pending(conn: &mut Conn) -> Result<bool, billing_core::ports::StoreError> {
    use diesel_migrations::MigrationHarness;
    conn.has_pending_migration(crate::connect::POSTGRES_MIGRATIONS)
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

/// Writes a batch's entries, claims and wallet rows in one statement, one round trip (see
/// [`statements::WriteLedger`]). Answers how many wallets still held their old balance.
fn write_ledger(
    conn: &mut Conn,
    entries: &[NewEntryRow],
    claims: &[NewClaimRow],
    updates: &[WalletUpdate],
) -> Result<usize, diesel::result::Error> {
    if entries.is_empty() && claims.is_empty() && updates.is_empty() {
        return Ok(0);
    }
    let updated: i64 = statements::WriteLedger::new(entries, claims, updates).get_result(conn)?;
    Ok(usize::try_from(updated).unwrap_or(0))
}

/// A batch's wallets (`ids` sorted, distinct), locked, and what its postings are decided
/// against, in one round trip: the `ledger_batch_state` function (migration 000015) locks
/// the wallets first and reads the rest afterwards, each list as JSON.
fn batch_state(
    conn: &mut Conn,
    ids: &[&str],
    since: Timestamp,
    postings: &[Posting],
) -> Result<BatchState, TxError<StoreError>> {
    let wanted = wanted_claims(postings);
    let state: (String, String, String, String, String) = statements::BatchState::new(
        ids,
        since.as_micros(),
        wanted.iter().map(|c| (c.scope.as_str(), c.key.as_str())),
    )
    .get_result(conn)?;
    let (wallet_rows, auto_topup_rows, method_rows, hold_rows, claim_rows) = state;
    fn parse<T: serde::de::DeserializeOwned>(list: &str, json: &str) -> Result<T, StoreError> {
        serde_json::from_str(json)
            .map_err(|e| StoreError::Corrupt(format!("ledger_batch_state's {list}: {e}")))
    }
    let op = TxError::Op;
    let wallets = slots(
        parse("wallets", &wallet_rows).map_err(op)?,
        parse("auto top-ups", &auto_topup_rows).map_err(op)?,
        parse("methods", &method_rows).map_err(op)?,
    )
    .map_err(op)?;
    Ok(BatchState {
        wallets,
        holds: active_holds(parse("holds", &hold_rows).map_err(op)?),
        claims: claims_from(parse("claims", &claim_rows).map_err(op)?),
    })
}

include!("ops.rs");
include!("posting.rs");
include!("audit.rs");
