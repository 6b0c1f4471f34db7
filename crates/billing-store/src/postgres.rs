//! The PostgreSQL backend: READ COMMITTED transactions that lock the rows they change with
//! `SELECT … FOR UPDATE` (the wallet, and the top-up before its wallet), so that any number
//! of processes sharing the database serialize per wallet.

use diesel::pg::PgConnection;

mod copies;
mod statements;

pub(crate) use copies::WalletCopies;

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
///
/// A batch whose wallets the writer holds copies of is decided against the copies (see
/// [`copies`] and [`decide_from_copies`]); where a copy turns out stale, that attempt is
/// rolled back (or, found under the locks before anything was written, not made) and the
/// batch decided again from a read. Copies are taken from each committed batch and all
/// dropped after any failure.
pub(crate) fn post_batch_chained(
    conn: &mut Conn,
    postings: &[billing_core::ports::Posting],
    chained: &mut bool,
    copies: &mut WalletCopies,
) -> Result<Vec<Result<billing_core::ports::Posted, billing_core::ports::PostError>>, StoreError> {
    let answers = post_batch_chained_copies(conn, postings, chained, copies);
    if answers.is_err() {
        copies.clear();
    }
    answers
}

fn post_batch_chained_copies(
    conn: &mut Conn,
    postings: &[billing_core::ports::Posting],
    chained: &mut bool,
    copies: &mut WalletCopies,
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
    let forget = |copies: &mut WalletCopies| {
        postings
            .iter()
            .for_each(|p| copies.forget(p.account_id.as_str()));
    };
    // The batch's write, and what became of the copies if it had them.
    let (written, outcome) = match copies.state_for(postings) {
        Some(copied) => match decide_from_copies(conn, postings, copied) {
            Ok(FromCopies::Written(written)) => (Ok(written), Some(copies::Outcome::Used)),
            // A version had moved, found under the locks this transaction now holds before
            // anything was written: read in the same transaction.
            Ok(FromCopies::Moved(locking)) => {
                forget(copies);
                (
                    post_batch_settled(conn, postings, None, locking),
                    Some(copies::Outcome::Moved),
                )
            }
            Err(e) => {
                // A copy was stale (or a key was claimed before): nothing of this attempt
                // is kept; decide the batch again from a read, which answers any other
                // failure (a database fault, a broken rule) itself.
                let error = match e {
                    TxError::Db(e) => e.to_string(),
                    TxError::Op(e) => e.to_string(),
                };
                tracing::debug!(%error, "a ledger writer's copies could not be used");
                forget(copies);
                AnsiTransactionManager::rollback_transaction(conn).map_err(db_err)?;
                AnsiTransactionManager::begin_transaction(conn).map_err(db_err)?;
                (
                    post_batch_settled(conn, postings, None, std::time::Duration::ZERO),
                    Some(copies::Outcome::Stale),
                )
            }
        },
        None => (
            post_batch_settled(conn, postings, None, std::time::Duration::ZERO),
            None,
        ),
    };
    let (answers, settled) = match written {
        Ok(written) => written,
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
    copies.settle(settled);
    if let Some(outcome) = outcome {
        copies.count(outcome);
    }
    answers.iter().for_each(crate::metered::posted);
    Ok(answers)
}

/// What [`decide_from_copies`] did.
enum FromCopies {
    /// Decided and written (not yet committed).
    Written(Written),
    /// Nothing written: a wallet's version had moved, found under the locks taken (for so
    /// long) in id order, which the transaction still holds.
    Moved(std::time::Duration),
}

/// Decides and writes a batch from its writer's copies of its wallets. One wallet: no lock
/// first; the write updates it only where its version is still the copy's (`Err` when it is
/// not: the caller rolls back). Several: locks them first, in id order, as a read would,
/// and reads their versions; `Moved` when one moved.
fn decide_from_copies(
    conn: &mut Conn,
    postings: &[billing_core::ports::Posting],
    copied: BatchState,
) -> Result<FromCopies, TxError<StoreError>> {
    let mut locking = std::time::Duration::ZERO;
    if copied.wallets.len() > 1 {
        let started = std::time::Instant::now();
        let ids: Vec<&str> = copied.wallets.keys().map(String::as_str).collect();
        let versions: Vec<(String, i64)> = statements::LockVersions::new(&ids).load(conn)?;
        locking = started.elapsed();
        let current = versions.len() == copied.wallets.len()
            && versions.iter().all(|(id, version)| {
                copied.wallets.get(id).and_then(|slot| slot.version) == Some(*version)
            });
        if !current {
            return Ok(FromCopies::Moved(locking));
        }
    }
    post_batch_settled(conn, postings, Some(copied), locking).map(FromCopies::Written)
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
    let state: (String, String, String, String, String, String) = statements::BatchState::new(
        ids,
        since.as_micros(),
        wanted.iter().map(|c| (c.scope.as_str(), c.key.as_str())),
    )
    .get_result(conn)?;
    let (wallet_rows, auto_topup_rows, method_rows, hold_rows, claim_rows, version_rows) = state;
    fn parse<T: serde::de::DeserializeOwned>(list: &str, json: &str) -> Result<T, StoreError> {
        serde_json::from_str(json)
            .map_err(|e| StoreError::Corrupt(format!("ledger_batch_state's {list}: {e}")))
    }
    let op = TxError::Op;
    let mut wallets = slots(
        parse("wallets", &wallet_rows).map_err(op)?,
        parse("auto top-ups", &auto_topup_rows).map_err(op)?,
        parse("methods", &method_rows).map_err(op)?,
    )
    .map_err(op)?;
    let versions: Vec<(String, i64)> = parse("versions", &version_rows).map_err(op)?;
    for (id, version) in versions {
        if let Some(slot) = wallets.get_mut(&id) {
            slot.version = Some(version);
        }
    }
    Ok(BatchState {
        wallets,
        holds: active_holds(parse("holds", &hold_rows).map_err(op)?),
        claims: claims_from(parse("claims", &claim_rows).map_err(op)?),
        holds_since: since,
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

    use super::{WalletCopies, end_chain, post_batch_chained};
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

    /// A new database `name` with the wallet `acct_chain` holding 10 credits, and two
    /// sessions on it; `None` (skipped) without a PostgreSQL server.
    fn wallet_of_ten(name: &str) -> Option<(PgConnection, PgConnection)> {
        wallet_of_ten_at(name).map(|(conn, other, _)| (conn, other))
    }

    /// Places a hold of `amount` (10^-9 credits) on `account` until an hour after `now`,
    /// under the wallet's lock as the service does; its id is `hold_{account}`.
    fn hold_for_an_hour(conn: &mut PgConnection, account: &str, amount: i64, now: Timestamp) {
        conn.batch_execute(&format!(
            "BEGIN; SELECT 1 FROM accounts WHERE id = '{account}' FOR UPDATE; \
             INSERT INTO holds (id, account_id, amount, status, created_at, expires_at, \
             updated_at) VALUES ('hold_{account}', '{account}', {amount}, 'active', 0, {}, 0); \
             COMMIT",
            now.as_micros() + 3_600_000_000
        ))
        .expect("hold");
    }

    /// A second wallet, `acct_two`, holding 3 credits.
    fn wallet_of_three(conn: &mut PgConnection) {
        conn.batch_execute(
            "INSERT INTO accounts (id, name, email, balance, created_at) \
             VALUES ('acct_two', 'Bob', 'bob@example.com', 3000000000, 0)",
        )
        .expect("wallet of 3");
    }

    /// [`wallet_of_ten`], with the database's URL.
    fn wallet_of_ten_at(name: &str) -> Option<(PgConnection, PgConnection, String)> {
        let admin = crate::tests::postgres_admin_url()?;
        let url = create_postgres_database(&admin, name).expect("database");
        drop(DieselStore::connect(&url, &StoreOptions::default()).expect("migrate"));
        let mut conn = PgConnection::establish(&url).expect("connect");
        let other = PgConnection::establish(&url).expect("connect");
        conn.batch_execute(
            "INSERT INTO accounts (id, name, email, balance, created_at) \
             VALUES ('acct_chain', 'Ada', 'ada@example.com', 10000000000, 0)",
        )
        .expect("wallet of 10");
        Some((conn, other, url))
    }

    /// `COMMIT AND CHAIN` commits before the batch is answered (another session sees it at
    /// once) and leaves the next batch's transaction open; a batch that fails in the
    /// database ends the chain with nothing of it written; `end_chain` closes it; and a
    /// writer whose idea of the chain is wrong writes nothing and marks its connection
    /// broken, for the pool to discard.
    #[test]
    fn postgres_chained_batches_commit_before_answering_and_fail_cleanly() {
        let Some((mut conn, mut other)) = wallet_of_ten("it_chain") else {
            return;
        };
        let now = Timestamp::from_secs(1_768_473_000);
        let debit = |n: &str| crate::tests::one_credit_debit("acct_chain", "chain", n, now);
        let mut chained = false;
        let mut copies = WalletCopies::default();
        let first = post_batch_chained(
            &mut conn,
            &[debit("1"), debit("2")],
            &mut chained,
            &mut copies,
        )
        .expect("first batch");
        assert!(first.iter().all(Result::is_ok), "{first:?}");
        assert!(
            chained && in_transaction(&mut conn),
            "the next transaction is open"
        );
        assert_eq!(committed(&mut other), (2, 8_000_000_000));
        let second = post_batch_chained(&mut conn, &[debit("3")], &mut chained, &mut copies)
            .expect("second");
        assert!(second.iter().all(Result::is_ok), "{second:?}");
        assert!(chained);
        assert_eq!(committed(&mut other), (3, 7_000_000_000));

        // An entry id that exists already: the unique index refuses the batch's write.
        assert!(
            post_batch_chained(
                &mut conn,
                &[debit("4"), debit("1")],
                &mut chained,
                &mut copies
            )
            .is_err()
        );
        assert!(
            !chained && !in_transaction(&mut conn),
            "rolled back, the chain ended"
        );
        assert_eq!(
            committed(&mut other),
            (3, 7_000_000_000),
            "nothing of it written"
        );

        let again =
            post_batch_chained(&mut conn, &[debit("4")], &mut chained, &mut copies).expect("again");
        assert!(again.iter().all(Result::is_ok), "{again:?}");
        assert_eq!(committed(&mut other), (4, 6_000_000_000));
        end_chain(&mut conn, &mut chained).expect("end the chain");
        assert!(!chained && !in_transaction(&mut conn));
        assert!(
            !conn.is_broken(),
            "a clean connection goes back to the pool"
        );

        let mut wrong = true;
        assert!(post_batch_chained(&mut conn, &[debit("5")], &mut wrong, &mut copies).is_err());
        assert!(conn.is_broken(), "the pool discards it");
        assert_eq!(committed(&mut other), (4, 6_000_000_000), "nothing written");
    }

    /// A wallet's version: moved by every change to its row, its holds, its auto top-up row
    /// and its saved method, whoever makes it.
    fn version(conn: &mut PgConnection, id: &str) -> i64 {
        diesel::sql_query(format!("SELECT version FROM accounts WHERE id = '{id}'"))
            .get_result::<Version>(conn)
            .expect("version")
            .version
    }

    #[derive(diesel::QueryableByName)]
    struct Version {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        version: i64,
    }

    #[test]
    fn postgres_wallet_version_moves_with_everything_a_posting_is_decided_against() {
        let Some(admin) = crate::tests::postgres_admin_url() else {
            return;
        };
        let url = create_postgres_database(&admin, "it_version").expect("database");
        drop(DieselStore::connect(&url, &StoreOptions::default()).expect("migrate"));
        let mut conn = PgConnection::establish(&url).expect("connect");
        conn.batch_execute(
            "INSERT INTO accounts (id, name, email, balance, created_at) \
             VALUES ('acct_v', 'Ada', 'ada@example.com', 10000000000, 0)",
        )
        .expect("wallet");
        assert_eq!(version(&mut conn, "acct_v"), 0);
        let steps = [
            (
                "UPDATE accounts SET alert_enabled = true WHERE id = 'acct_v'",
                1,
            ),
            // Whatever an UPDATE sets, the version moves by one.
            ("UPDATE accounts SET version = 100 WHERE id = 'acct_v'", 2),
            (
                "INSERT INTO holds (id, account_id, amount, status, created_at, expires_at, \
                 updated_at) VALUES ('hold_v', 'acct_v', 5, 'active', 0, 10, 0)",
                3,
            ),
            ("UPDATE holds SET expires_at = 20 WHERE id = 'hold_v'", 4),
            (
                "UPDATE holds SET status = 'expired', updated_at = 30 WHERE id = 'hold_v'",
                5,
            ),
            ("DELETE FROM holds WHERE id = 'hold_v'", 6),
            (
                "INSERT INTO auto_topups (account_id, enabled, currency, credits, bonus, \
                 failure_limit) VALUES ('acct_v', false, 'USD', 0, 0, 3)",
                7,
            ),
            (
                "UPDATE auto_topups SET enabled = true WHERE account_id = 'acct_v'",
                8,
            ),
            (
                "INSERT INTO payment_methods (account_id, gateway, reference, saved_at) \
                 VALUES ('acct_v', 'sandbox', 'pm_1', 0)",
                9,
            ),
            (
                "DELETE FROM payment_methods WHERE account_id = 'acct_v'",
                10,
            ),
        ];
        for (sql, expected) in steps {
            conn.batch_execute(sql).expect(sql);
            assert_eq!(version(&mut conn, "acct_v"), expected, "after {sql}");
        }
    }

    /// A writer decides a one-wallet batch from its copy of the wallet, and from a read
    /// whenever the wallet changed under it: a hold placed and released by another session,
    /// a debit by another writer, a key claimed by an earlier batch. Every answer is the
    /// one a read would have given.
    #[test]
    fn postgres_writer_copies_are_used_and_never_stale() {
        use billing_core::ports::{IdempotencyClaim, PostError};
        let Some((mut conn, mut other)) = wallet_of_ten("it_copies") else {
            return;
        };
        let now = Timestamp::from_secs(1_768_473_000);
        let debit = |n: &str| crate::tests::one_credit_debit("acct_chain", "copy", n, now);
        let (mut chained, mut copies) = (false, WalletCopies::default());
        let mut post = |postings: &[billing_core::ports::Posting], copies: &mut WalletCopies| {
            post_batch_chained(&mut conn, postings, &mut chained, copies).expect("batch")
        };

        assert!(post(&[debit("1")], &mut copies)[0].is_ok());
        assert_eq!(
            (copies.len(), copies.counts()),
            (1, (0, 0)),
            "read, then copied"
        );
        assert!(
            post(&[debit("2"), debit("3")], &mut copies)
                .iter()
                .all(Result::is_ok)
        );
        assert_eq!(copies.counts(), (1, 0), "decided from the copy");
        assert_eq!(committed(&mut other), (3, 7_000_000_000));

        // Another session holds 6.5 of the 7: the copy knows no hold, the row's version
        // moved, and the batch is decided again from a read: refused.
        hold_for_an_hour(&mut other, "acct_chain", 6_500_000_000, now);
        let refused = post(&[debit("4")], &mut copies);
        assert!(matches!(refused[0], Err(PostError::Rule(_))), "{refused:?}");
        assert_eq!(copies.counts(), (1, 1), "the copy was stale");
        // The copy now knows the hold.
        let refused = post(&[debit("5")], &mut copies);
        assert!(matches!(refused[0], Err(PostError::Rule(_))), "{refused:?}");
        assert_eq!(
            copies.counts(),
            (2, 1),
            "decided from the copy, with its hold"
        );
        assert_eq!(committed(&mut other), (3, 7_000_000_000), "nothing written");

        other
            .batch_execute("UPDATE holds SET status = 'released' WHERE id = 'hold_acct_chain'")
            .expect("release");
        assert!(post(&[debit("6")], &mut copies)[0].is_ok());
        assert_eq!(copies.counts(), (2, 2), "released: stale again, then read");
        assert_eq!(committed(&mut other), (4, 6_000_000_000));

        // Another writer (its own copies) debits the same wallet.
        let mut other_chained = false;
        let theirs = post_batch_chained(
            &mut other,
            &[crate::tests::one_credit_debit(
                "acct_chain",
                "theirs",
                "1",
                now,
            )],
            &mut other_chained,
            &mut WalletCopies::default(),
        )
        .expect("their batch");
        assert!(theirs[0].is_ok());
        end_chain(&mut other, &mut other_chained).expect("end their chain");
        assert!(post(&[debit("7")], &mut copies)[0].is_ok());
        assert_eq!(copies.counts(), (2, 3));
        assert_eq!(
            committed(&mut other),
            (6, 4_000_000_000),
            "both debits, once each"
        );

        // A key claimed by an earlier batch: replayed, not written twice; another request
        // with it is a conflict.
        let keyed = |n: &str, fingerprint: &str| {
            let mut posting = debit(n);
            posting.idempotency = Some(IdempotencyClaim {
                scope: "acct_chain:usage".into(),
                key: "key-1".into(),
                fingerprint: fingerprint.into(),
            });
            posting
        };
        assert!(post(&[keyed("8", "f")], &mut copies)[0].is_ok());
        assert_eq!(copies.counts(), (3, 3));
        let replayed = post(&[keyed("8", "f")], &mut copies);
        assert!(
            matches!(&replayed[0], Ok(posted) if posted.replayed),
            "{replayed:?}"
        );
        let conflict = post(&[keyed("9", "g")], &mut copies);
        assert!(
            matches!(conflict[0], Err(PostError::IdempotencyConflict)),
            "{conflict:?}"
        );
        assert_eq!(copies.counts(), (3, 5), "each found the claim from a read");
        assert_eq!(
            committed(&mut other),
            (7, 3_000_000_000),
            "one debit for the key"
        );
        assert!(post(&[debit("10")], &mut copies)[0].is_ok());
        assert_eq!(copies.counts(), (4, 5));
        assert_eq!(committed(&mut other), (8, 2_000_000_000));

        // The retry of a keyed debit that took the last credits: the copy would refuse it
        // (the wallet is empty), and a refusal claims no key, so it is read again and
        // replayed; so is a posting without entries, which only answers a claimed key.
        let last = |n: &str| {
            let mut posting = debit(n);
            posting.entries[0].amount = "-2".parse().expect("amount");
            posting.idempotency = Some(IdempotencyClaim {
                scope: "acct_chain:usage".into(),
                key: "key-2".into(),
                fingerprint: "last".into(),
            });
            posting
        };
        assert!(post(&[last("11")], &mut copies)[0].is_ok());
        assert_eq!(committed(&mut other), (9, 0), "empty");
        let (used, stale) = copies.counts();
        let retried = post(&[last("11")], &mut copies);
        assert!(
            matches!(&retried[0], Ok(posted) if posted.replayed && posted.entries.len() == 1),
            "{retried:?}"
        );
        let mut bare = last("12");
        bare.entries.clear();
        let answered = post(&[bare], &mut copies);
        assert!(
            matches!(&answered[0], Ok(posted) if posted.replayed),
            "{answered:?}"
        );
        assert_eq!(copies.counts(), (used, stale + 2), "both read their claim");
        assert_eq!(committed(&mut other), (9, 0), "nothing written twice");
    }

    /// A batch on several wallets the writer holds copies of locks them first and checks
    /// their versions: used when none moved; read in the same transaction when one did.
    #[test]
    fn postgres_writer_copies_of_several_wallets_are_locked_and_checked() {
        use billing_core::ports::PostError;
        let Some((mut conn, mut other)) = wallet_of_ten("it_copies_several") else {
            return;
        };
        wallet_of_three(&mut conn);
        let now = Timestamp::from_secs(1_768_473_000);
        let debit = |account: &str, n: &str| {
            crate::tests::one_credit_debit(account, &format!("several_{account}"), n, now)
        };
        let (mut chained, mut copies) = (false, WalletCopies::default());
        let mut post = |postings: &[billing_core::ports::Posting], copies: &mut WalletCopies| {
            post_batch_chained(&mut conn, postings, &mut chained, copies).expect("batch")
        };
        let both = |n: &str| [debit("acct_chain", n), debit("acct_two", n)];
        assert!(post(&both("1"), &mut copies).iter().all(Result::is_ok));
        assert_eq!(
            (copies.len(), copies.counts()),
            (2, (0, 0)),
            "read, then copied"
        );
        assert!(post(&both("2"), &mut copies).iter().all(Result::is_ok));
        assert_eq!(copies.counts(), (1, 0), "decided from the copies");
        let balance = |other: &mut PgConnection, id: &str| -> i64 {
            accounts::table
                .find(id)
                .select(accounts::balance)
                .first(other)
                .expect("balance")
        };
        assert_eq!(balance(&mut other, "acct_two"), 1_000_000_000);

        // Another session holds 0.5 of acct_two's last credit: its version moved, the batch
        // is read under the locks it took, and acct_two's debit is refused.
        hold_for_an_hour(&mut other, "acct_two", 500_000_000, now);
        let answers = post(&both("3"), &mut copies);
        assert!(answers[0].is_ok(), "{answers:?}");
        assert!(matches!(answers[1], Err(PostError::Rule(_))), "{answers:?}");
        assert_eq!(
            (copies.counts(), copies.moved()),
            ((1, 0), 1),
            "found moved under the locks, then read"
        );
        // Both copies are fresh again (the hold is in acct_two's): decided from them.
        let answers = post(&both("4"), &mut copies);
        assert!(answers[0].is_ok(), "{answers:?}");
        assert!(matches!(answers[1], Err(PostError::Rule(_))), "{answers:?}");
        assert_eq!((copies.counts(), copies.moved()), ((2, 0), 1));
        assert_eq!(balance(&mut other, "acct_two"), 1_000_000_000);
        assert_eq!(balance(&mut other, "acct_chain"), 6_000_000_000);
    }

    /// A batch on several copied wallets locks them in id order, as every writer of several
    /// wallets does (so two never deadlock): while another session holds the later wallet,
    /// the writer holds the earlier one and waits; then it writes from its copies.
    #[test]
    fn postgres_writer_copies_lock_several_wallets_in_id_order() {
        let Some((mut conn, mut other, url)) = wallet_of_ten_at("it_copies_order") else {
            return;
        };
        wallet_of_three(&mut conn);
        let now = Timestamp::from_secs(1_768_473_000);
        let both = move |n: &str| {
            ["acct_chain", "acct_two"].map(|account| {
                crate::tests::one_credit_debit(account, "order", &format!("{account}_{n}"), now)
            })
        };
        let (mut chained, mut copies) = (false, WalletCopies::default());
        let first = post_batch_chained(&mut conn, &both("1"), &mut chained, &mut copies)
            .expect("first batch");
        assert!(first.iter().all(Result::is_ok), "{first:?}");
        other
            .batch_execute("BEGIN; SELECT 1 FROM accounts WHERE id = 'acct_two' FOR UPDATE")
            .expect("hold acct_two's lock");
        let writer = std::thread::spawn(move || {
            let answers = post_batch_chained(&mut conn, &both("2"), &mut chained, &mut copies)
                .expect("second batch");
            (answers, copies.counts())
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        let mut third = PgConnection::establish(&url).expect("connect");
        let earlier = third.batch_execute(
            "BEGIN; SELECT 1 FROM accounts WHERE id = 'acct_chain' FOR UPDATE NOWAIT",
        );
        assert!(
            earlier.is_err(),
            "the writer holds acct_chain while it waits for acct_two"
        );
        assert!(!writer.is_finished(), "the writer waits for acct_two");
        other.batch_execute("COMMIT").expect("release acct_two");
        let (answers, counts) = writer.join().expect("writer");
        assert!(answers.iter().all(Result::is_ok), "{answers:?}");
        assert_eq!(
            counts,
            (1, 0),
            "a lock moves no version: decided from the copies"
        );
    }
}
