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

/// Posts a batch on a ledger writer's connection and commits it with `COMMIT AND CHAIN`,
/// which opens the next batch's transaction in the same round trip: a batch then costs no
/// `BEGIN` round trip of its own. `chained` says whether the last batch left one open; it is
/// true again only once this commit has succeeded, so every answer still follows its
/// commit. On an error the transaction is rolled back; when that fails too, Diesel still
/// counts it open and the pool discards the connection.
pub(crate) fn post_batch_chained(
    conn: &mut Conn,
    postings: &[billing_core::ports::Posting],
    chained: &mut bool,
) -> Result<Vec<Result<billing_core::ports::Posted, billing_core::ports::PostError>>, StoreError> {
    use diesel::connection::{AnsiTransactionManager, TransactionManager};
    let open = AnsiTransactionManager::transaction_manager_status_mut(conn)
        .transaction_depth()
        .map_err(db_err)?
        .is_some();
    if open != std::mem::take(chained) {
        // Never write into a transaction this writer did not open: the connection is marked
        // broken, and the pool discards it.
        AnsiTransactionManager::transaction_manager_status_mut(conn).set_in_error();
        return Err(StoreError::Unavailable(
            "the ledger writer's connection was in an unexpected transaction state".into(),
        ));
    }
    if !open {
        AnsiTransactionManager::begin_transaction(conn).map_err(db_err)?;
    }
    let answers = match post_batch_in_tx(conn, postings) {
        Ok(answers) => answers,
        Err(e) => {
            let _ = AnsiTransactionManager::rollback_transaction(conn);
            return finish(Err(e));
        }
    };
    let committing = std::time::Instant::now();
    diesel::connection::SimpleConnection::batch_execute(conn, "COMMIT AND CHAIN")
        .map_err(db_err)?;
    crate::metered::phase("commit", committing.elapsed());
    *chained = true;
    answers.iter().for_each(crate::metered::posted);
    Ok(answers)
}

/// Ends a ledger writer's chained transaction, which holds nothing (`ROLLBACK`).
pub(crate) fn end_chain(conn: &mut Conn, chained: &mut bool) -> Result<(), diesel::result::Error> {
    use diesel::connection::{AnsiTransactionManager, TransactionManager};
    if std::mem::take(chained) {
        AnsiTransactionManager::rollback_transaction(conn)?;
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use billing_core::time::Timestamp;
    use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
    use diesel::r2d2::R2D2Connection;
    use diesel::{Connection, ExpressionMethods, PgConnection, QueryDsl, RunQueryDsl};

    use super::{end_chain, post_batch_chained};
    use crate::schema::{accounts, ledger_entries};
    use crate::{DieselStore, StoreOptions, create_postgres_database};

    fn in_transaction(conn: &mut PgConnection) -> bool {
        AnsiTransactionManager::transaction_manager_status_mut(conn)
            .transaction_depth()
            .expect("status")
            .is_some()
    }

    /// What another session sees: the wallet's entries and its balance (in 10^-9 credits).
    fn committed(other: &mut PgConnection) -> (i64, i64) {
        let entries = ledger_entries::table
            .filter(ledger_entries::account_id.eq("acct_chain"))
            .count()
            .get_result(other)
            .expect("entries");
        let balance = accounts::table
            .find("acct_chain")
            .select(accounts::balance)
            .first(other)
            .expect("balance");
        (entries, balance)
    }

    /// `COMMIT AND CHAIN` commits before the batch is answered (another session sees it at
    /// once) and leaves the next batch's transaction open; a batch that fails in the
    /// database ends the chain with nothing of it written; `end_chain` closes it; and a
    /// writer whose idea of the chain is wrong writes nothing and marks its connection
    /// broken, for the pool to discard.
    #[test]
    fn postgres_chained_batches_commit_before_answering_and_fail_cleanly() {
        let Some(admin) = crate::tests::postgres_admin_url() else {
            return;
        };
        let url = create_postgres_database(&admin, "it_chain").expect("database");
        drop(DieselStore::connect(&url, &StoreOptions::default()).expect("migrate"));
        let mut conn = PgConnection::establish(&url).expect("connect");
        let mut other = PgConnection::establish(&url).expect("connect");
        conn.batch_execute(
            "INSERT INTO accounts (id, name, email, balance, created_at) \
             VALUES ('acct_chain', 'Ada', 'ada@example.com', 10000000000, 0)",
        )
        .expect("wallet of 10");
        let now = Timestamp::from_secs(1_768_473_000);
        let debit = |n: &str| crate::tests::one_credit_debit("acct_chain", "chain", n, now);
        let mut chained = false;
        let first = post_batch_chained(&mut conn, &[debit("1"), debit("2")], &mut chained)
            .expect("first batch");
        assert!(first.iter().all(Result::is_ok), "{first:?}");
        assert!(
            chained && in_transaction(&mut conn),
            "the next transaction is open"
        );
        assert_eq!(committed(&mut other), (2, 8_000_000_000));
        let second = post_batch_chained(&mut conn, &[debit("3")], &mut chained).expect("second");
        assert!(second.iter().all(Result::is_ok), "{second:?}");
        assert!(chained);
        assert_eq!(committed(&mut other), (3, 7_000_000_000));

        // An entry id that exists already: the unique index refuses the batch's write.
        assert!(post_batch_chained(&mut conn, &[debit("4"), debit("1")], &mut chained).is_err());
        assert!(
            !chained && !in_transaction(&mut conn),
            "rolled back, the chain ended"
        );
        assert_eq!(
            committed(&mut other),
            (3, 7_000_000_000),
            "nothing of it written"
        );

        let again = post_batch_chained(&mut conn, &[debit("4")], &mut chained).expect("again");
        assert!(again.iter().all(Result::is_ok), "{again:?}");
        assert_eq!(committed(&mut other), (4, 6_000_000_000));
        end_chain(&mut conn, &mut chained).expect("end the chain");
        assert!(!chained && !in_transaction(&mut conn));
        assert!(
            !conn.is_broken(),
            "a clean connection goes back to the pool"
        );

        let mut wrong = true;
        assert!(post_batch_chained(&mut conn, &[debit("5")], &mut wrong).is_err());
        assert!(conn.is_broken(), "the pool discards it");
        assert_eq!(committed(&mut other), (4, 6_000_000_000), "nothing written");
    }
}
