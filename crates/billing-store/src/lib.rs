//! Diesel adapter for billing-core's storage ports, on SQLite (the embedded default) and
//! PostgreSQL (production).
//!
//! Amounts are stored as `BIGINT` ledger units (10^-[`billing_core::money::LEDGER_SCALE`] of
//! the wallet unit) and prices as minor units, so that SQL comparisons are exact on both
//! backends; conversions are checked in `rows.rs`. The operations are written once
//! (`ops.rs`) and compiled for each backend; the backends differ only in how a write
//! transaction begins and how a row is locked. Diesel is blocking: every call runs on tokio's
//! blocking pool.
//!
//! # Examples
//!
//! A SQLite file (created, migrated) as the store of an account:
//!
//! ```
//! use billing_core::ids::AccountId;
//! use billing_core::money::Credits;
//! use billing_core::ports::{Account, AccountStore};
//! use billing_core::time::Timestamp;
//! use billing_store::{DieselStore, StoreOptions};
//!
//! let dir = std::env::temp_dir().join(format!("billing-store-doc-{}", std::process::id()));
//! let file = dir.join("billing.db");
//! let store = DieselStore::connect(file.to_str().expect("utf-8"), &StoreOptions::default())
//!     .expect("a new SQLite database");
//! assert_eq!(store.backend(), "sqlite");
//! let runtime = tokio::runtime::Runtime::new().expect("runtime");
//! runtime.block_on(async {
//!     let ada = Account {
//!         id: AccountId::new("acct_doc"),
//!         name: "Ada".into(),
//!         email: "ada@example.com".into(),
//!         created_at: Timestamp::from_secs(1_768_473_000),
//!     };
//!     store.insert_account(&ada).await.expect("inserted");
//!     let wallet = store.wallet(&ada.id).await.expect("read").expect("a wallet");
//!     assert_eq!(wallet.balance, Credits::ZERO);
//! });
//! # drop(store);
//! # let _ = std::fs::remove_dir_all(&dir);
//! ```

#![warn(missing_docs)]

mod checkpointer;
mod metered;
mod noise;
mod postgres;
mod rows;
mod schema;
mod sqlite;
mod writer;

pub use metered::{
    LEDGER_AMOUNT_UNITS, LEDGER_BATCH_POSTINGS, LEDGER_BATCH_SECONDS, LEDGER_ENTRIES,
    POOL_WAIT_SECONDS, TOPUPS,
};
pub use writer::{BatchOptions, LedgerStats};

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use billing_core::autotopup::{AutoTopUpSettings, AutoTopUpState, SavedMethod};
use billing_core::controls::{MonthSpend, SpendingLimit};
use billing_core::holds::{Hold, HoldAction};
use billing_core::ids::{AccountId, ApiKeyId, EntryId, HoldId, PackId, TopUpId};
use billing_core::ledger::{LedgerEntry, NewEntry};
use billing_core::money::Credits;
use billing_core::notices::LowBalanceAlert;
use billing_core::ports::{
    Account, AccountStore, ApiKeyRecord, ApiKeyStore, ControlsStore, EntryQuery, EventStore,
    HoldError, HoldOutcome, HoldStore, IdempotencyClaim, InsertTopUpError, Inserted, KeyPage,
    KeyQuery, LedgerStore, OutboxItem, OutboxOutcome, OutboxStore, PackStore, PostError, Posted,
    Posting, RateStore, Readiness, SessionRecord, StoreError, TopUpPage, TopUpStore,
    TransitionOutcome, Wallet,
};
use billing_core::pricing::Rate;
use billing_core::time::Timestamp;
use billing_core::topup::{Pack, TopUp, TopUpStatus};
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool, PooledConnection};
use diesel::result::DatabaseErrorKind;
use diesel::sqlite::SqliteConnection;
use diesel::{Connection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use noise::QuietErrors;

/// Runs `$body` with `$conn` bound to a pooled connection of whichever backend this store
/// has, on the blocking pool, with `ops` naming that backend's operations.
macro_rules! on_conn {
    ($self:ident, |$conn:ident| $body:expr) => {{
        match &$self.pools {
            Pools::Sqlite(pool, _) => {
                let pool = pool.clone();
                run_blocking(move || {
                    let mut guard = get(&pool)?;
                    let $conn = &mut *guard;
                    #[allow(unused_imports)]
                    use crate::sqlite as ops;
                    $body
                })
                .await
            }
            Pools::Postgres(pool) => {
                let pool = pool.clone();
                run_blocking(move || {
                    let mut guard = get(&pool)?;
                    let $conn = &mut *guard;
                    #[allow(unused_imports)]
                    use crate::postgres as ops;
                    $body
                })
                .await
            }
        }
    }};
}

/// [`on_conn!`] for operations that write: on SQLite, holds the process's writer lock for
/// the whole transaction.
macro_rules! on_write_conn {
    ($self:ident, |$conn:ident| $body:expr) => {{
        match &$self.pools {
            Pools::Sqlite(pool, writer) => {
                let pool = pool.clone();
                // FIFO-fair, and owned by the blocking task: held until the write ends,
                // even if the caller stops waiting.
                $self.kick_checkpointer();
                let writing = writer.clone().lock_owned().await;
                run_blocking(move || {
                    let _writing = writing;
                    let mut guard = get(&pool)?;
                    let $conn = &mut *guard;
                    #[allow(unused_imports)]
                    use crate::sqlite as ops;
                    $body
                })
                .await
            }
            Pools::Postgres(_) => on_conn!($self, |$conn| $body),
        }
    }};
}

// After the macros above, which they use.
mod commit;
mod connect;
mod stores;
mod tools;

pub use connect::{ConnectError, StoreOptions, is_postgres_url};
pub use tools::{
    AuditError, BackupError, audit_database, backup_sqlite, create_postgres_database, execute_sql,
    existing_sqlite_file,
};

#[derive(Clone)]
enum Pools {
    /// SQLite, with this process's writer lock: writers queue on it instead of polling
    /// SQLite's busy handler, whose sleeps make the tail latency of contended writes long.
    /// Other processes on the same file still wait through `busy_timeout`.
    Sqlite(
        Pool<ConnectionManager<SqliteConnection>>,
        Arc<tokio::sync::Mutex<()>>,
    ),
    Postgres(Pool<ConnectionManager<PgConnection>>),
}

/// The Diesel store: every storage port of billing-core, on SQLite or PostgreSQL.
#[derive(Clone)]
pub struct DieselStore {
    pools: Pools,
    /// The ledger writers (group commit) every posting but a refund goes through.
    ledger: Arc<writer::LedgerWriter>,
    /// SQLite: kicks the checkpointer thread (see `checkpointer::start`); it stops when the last
    /// clone of the store and the ledger writer are dropped.
    checkpointer: Option<std::sync::mpsc::SyncSender<()>>,
}

/// Reads of a query that matches at most one row (a key's), without `LIMIT`.
///
/// Not diesel's `first`: it binds `LIMIT ?`, and SQLite (the bundled 3.53) plans with a bound
/// `LIMIT`'s value, so binding it again expires the statement and every execution parses and
/// plans it afresh (`sqlite3Reprepare`): 15% of the SQLite ledger writer's time, measured.
/// Without the `LIMIT`, a cached statement is only bound and stepped.
pub(crate) trait KeyRead<C: Connection>: RunQueryDsl<C> + Sized {
    /// The row, if there is one.
    fn at_most_one<'q, U>(self, conn: &mut C) -> diesel::QueryResult<Option<U>>
    where
        Self: diesel::query_dsl::LoadQuery<'q, C, U>,
    {
        Ok(self.load::<U>(conn)?.into_iter().next())
    }

    /// The row, which must exist (`NotFound` otherwise, as diesel's `first`).
    fn exactly_one<'q, U>(self, conn: &mut C) -> diesel::QueryResult<U>
    where
        Self: diesel::query_dsl::LoadQuery<'q, C, U>,
    {
        self.at_most_one(conn)?
            .ok_or(diesel::result::Error::NotFound)
    }
}

impl<C: Connection, Q: RunQueryDsl<C>> KeyRead<C> for Q {}

impl DieselStore {
    /// Tells the SQLite checkpointer that a write starts (nothing on PostgreSQL).
    fn kick_checkpointer(&self) {
        if let Some(kick) = &self.checkpointer {
            let _ = kick.try_send(());
        }
    }

    /// What the ledger writers have done since the store was opened.
    pub fn ledger_stats(&self) -> LedgerStats {
        self.ledger.stats()
    }

    /// Closes the ledger writers: each commits what is queued and closes its connection,
    /// waited for up to 5 s; postings through them after it (usage debits and grants; not
    /// refunds, which go through the pool) answer `Unavailable`. For the end of a
    /// process, once its requests are answered, so that no writer is still closing its
    /// connection while the process exits (dropping the last clone of the store does the
    /// same, on whichever thread drops it). Blocks: call it from a blocking context.
    pub fn close_ledger(&self) {
        self.ledger.close();
    }

    /// When the newest ledger entry was written, if there is one (a clock far behind it
    /// would write entries that sort before it).
    pub async fn newest_entry_at(&self) -> Result<Option<Timestamp>, StoreError> {
        let micros = on_conn!(self, |c| ops::newest_entry_micros(c))?;
        Ok(micros.map(Timestamp::from_micros))
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match self.pools {
            Pools::Sqlite(..) => "sqlite",
            Pools::Postgres(_) => "postgres",
        }
    }

    /// The connection pool now (for `/metrics`).
    pub fn pool_state(&self) -> PoolState {
        let (state, max) = match &self.pools {
            Pools::Sqlite(pool, _) => (pool.state(), pool.max_size()),
            Pools::Postgres(pool) => (pool.state(), pool.max_size()),
        };
        PoolState {
            in_use: state.connections.saturating_sub(state.idle_connections),
            idle: state.idle_connections,
            max,
        }
    }

    /// Checks that a connection can be had and answers (for `/healthz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_conn!(self, |c| {
            diesel::sql_query("SELECT 1")
                .execute(c)
                .map(|_| ())
                .map_err(db_err)
        })
    }
}

/// The connection pool's connections: checked out, open and waiting, and the most it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolState {
    /// Connections checked out now (a request or a writer is using them).
    pub in_use: u32,
    /// Connections open and waiting in the pool.
    pub idle: u32,
    /// The most connections the pool opens.
    pub max: u32,
}

/// An error inside a transaction: the database's, or the operation's own refusal.
pub(crate) enum TxError<E> {
    Db(diesel::result::Error),
    Op(E),
}

impl<E> From<diesel::result::Error> for TxError<E> {
    fn from(e: diesel::result::Error) -> TxError<E> {
        TxError::Db(e)
    }
}

pub(crate) fn db_err(e: diesel::result::Error) -> StoreError {
    match e {
        diesel::result::Error::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => {
            StoreError::Duplicate(info.message().to_owned())
        }
        other => StoreError::Unavailable(other.to_string()),
    }
}

pub(crate) fn finish<T, E: From<StoreError>>(result: Result<T, TxError<E>>) -> Result<T, E> {
    result.map_err(|e| match e {
        TxError::Db(db) => E::from(db_err(db)),
        TxError::Op(op) => op,
    })
}

fn pool_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("no database connection: {e}"))
}

async fn run_blocking<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, E>
where
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| E::from(StoreError::Unavailable(format!("storage task failed: {e}"))))?
}

fn get<M>(pool: &Pool<M>) -> Result<PooledConnection<M>, StoreError>
where
    M: diesel::r2d2::ManageConnection,
{
    let asked = std::time::Instant::now();
    let conn = pool.get().map_err(pool_err);
    metered::pool_wait(asked.elapsed());
    conn
}

#[cfg(test)]
mod tests {
    use diesel::sql_types::{BigInt, Text};
    use diesel::{QueryableByName, RunQueryDsl};

    use crate::connect::{
        POSTGRES_MIGRATIONS, PostgresWriterSession, SQLITE_AUTOCHECKPOINT_PAGES,
        SQLITE_BUSY_TIMEOUT_MS, SQLITE_JOURNAL_SIZE_LIMIT, sqlite_path,
    };

    use super::*;

    #[derive(QueryableByName)]
    struct Mode {
        #[diesel(sql_type = Text)]
        journal_mode: String,
    }

    #[derive(QueryableByName)]
    struct Flag {
        #[diesel(sql_type = BigInt)]
        foreign_keys: i64,
    }

    #[derive(QueryableByName)]
    struct Sync {
        #[diesel(sql_type = BigInt)]
        synchronous: i64,
    }

    #[derive(QueryableByName)]
    struct Timeout {
        #[diesel(sql_type = BigInt)]
        timeout: i64,
    }

    #[derive(QueryableByName)]
    struct AutoCheckpoint {
        #[diesel(sql_type = BigInt)]
        wal_autocheckpoint: i64,
    }

    #[derive(QueryableByName)]
    struct SizeLimit {
        #[diesel(sql_type = BigInt)]
        journal_size_limit: i64,
    }

    /// `sqlite:` and `sqlite://` name the file after them; a bare path is the file.
    #[test]
    fn sqlite_urls_name_their_file() {
        assert_eq!(sqlite_path("sqlite:billing.db"), "billing.db");
        assert_eq!(
            sqlite_path("sqlite:/var/lib/billing.db"),
            "/var/lib/billing.db"
        );
        assert_eq!(
            sqlite_path("sqlite:///var/lib/billing.db"),
            "/var/lib/billing.db"
        );
        assert_eq!(sqlite_path("sqlite://data/billing.db"), "data/billing.db");
        assert_eq!(sqlite_path("./data/billing.db"), "./data/billing.db");
    }

    /// Every PRAGMA of `SqlitePragmas` is in force on pooled connections.
    #[test]
    fn sqlite_connections_use_wal_foreign_keys_and_a_busy_timeout() {
        let dir = std::env::temp_dir().join(format!("billing-pragmas-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("billing.db");
        let store = DieselStore::connect(path.to_str().expect("utf-8"), &StoreOptions::default())
            .expect("open");
        let Pools::Sqlite(pool, _) = &store.pools else {
            panic!("a file path opens SQLite");
        };
        let mut conn = pool.get().expect("connection");
        let mode: Mode = diesel::sql_query("PRAGMA journal_mode")
            .get_result(&mut *conn)
            .expect("journal_mode");
        assert_eq!(mode.journal_mode, "wal");
        let fk: Flag = diesel::sql_query("PRAGMA foreign_keys")
            .get_result(&mut *conn)
            .expect("foreign_keys");
        assert_eq!(fk.foreign_keys, 1);
        let sync: Sync = diesel::sql_query("PRAGMA synchronous")
            .get_result(&mut *conn)
            .expect("synchronous");
        assert_eq!(sync.synchronous, 1, "NORMAL");
        let timeout: Timeout = diesel::sql_query("PRAGMA busy_timeout")
            .get_result(&mut *conn)
            .expect("busy_timeout");
        assert_eq!(timeout.timeout, i64::from(SQLITE_BUSY_TIMEOUT_MS));
        let pages: AutoCheckpoint = diesel::sql_query("PRAGMA wal_autocheckpoint")
            .get_result(&mut *conn)
            .expect("wal_autocheckpoint");
        assert_eq!(
            pages.wal_autocheckpoint,
            i64::from(SQLITE_AUTOCHECKPOINT_PAGES)
        );
        let limit: SizeLimit = diesel::sql_query("PRAGMA journal_size_limit")
            .get_result(&mut *conn)
            .expect("journal_size_limit");
        assert_eq!(
            u64::try_from(limit.journal_size_limit).ok(),
            Some(SQLITE_JOURNAL_SIZE_LIMIT)
        );
    }

    #[derive(QueryableByName)]
    struct PlanMode {
        #[diesel(sql_type = Text)]
        plan_cache_mode: String,
    }

    #[derive(QueryableByName)]
    struct Scanned {
        #[diesel(sql_type = Text)]
        relname: String,
        #[diesel(sql_type = BigInt)]
        seq_scan: i64,
        #[diesel(sql_type = BigInt)]
        idx_tup_fetch: i64,
    }

    /// The statements a connection runs, as text (their binds left out), while `f` runs.
    fn statements_of<C: diesel::Connection>(conn: &mut C, f: impl FnOnce(&mut C)) -> Vec<String> {
        use diesel::connection::InstrumentationEvent;
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = seen.clone();
        conn.set_instrumentation(move |event: InstrumentationEvent<'_>| {
            if let InstrumentationEvent::StartQuery { query, .. } = event
                && let Ok(mut seen) = sink.lock()
            {
                let text = query.to_string();
                let sql = text.split(" -- binds:").next().unwrap_or_default();
                seen.push(sql.to_owned());
            }
        });
        f(conn);
        conn.set_instrumentation(|_: InstrumentationEvent<'_>| {});
        seen.lock().expect("statements").clone()
    }

    /// A transactions listing filtered by a type other than usage reads the partial index
    /// of those entries (`ledger_entries_account_kind_other`) in a plan made without the
    /// bound values (SQLite's, always; PostgreSQL's generic one): the listing states the
    /// index's condition. A listing of usage debits reads `(account_id, seq)`.
    #[test]
    fn listings_by_type_read_the_partial_index() {
        use billing_core::ledger::EntryKind;
        use billing_core::ports::EntryQuery;
        #[derive(QueryableByName)]
        struct Step {
            #[diesel(sql_type = Text)]
            detail: String,
        }
        #[derive(QueryableByName)]
        struct PlanLine {
            #[diesel(sql_type = Text)]
            #[diesel(column_name = "QUERY PLAN")]
            line: String,
        }
        let account = AccountId::new("acct_listing");
        let listing = |kind: EntryKind| EntryQuery {
            kind: Some(kind),
            limit: 10,
            ..EntryQuery::default()
        };
        let listing_sql = |statements: Vec<String>| {
            statements
                .into_iter()
                .find(|s| s.contains("ledger_entries"))
                .expect("the listing's statement")
        };
        let dir = std::env::temp_dir().join(format!("billing-listing-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("billing.db");
        drop(
            DieselStore::connect(path.to_str().expect("utf-8"), &StoreOptions::default())
                .expect("open"),
        );
        let mut conn = SqliteConnection::establish(path.to_str().expect("utf-8")).expect("open");
        for (kind, index) in [
            (EntryKind::TopUp, "ledger_entries_account_kind_other"),
            (EntryKind::Refund, "ledger_entries_account_kind_other"),
            (EntryKind::Usage, "ledger_entries_account_seq"),
        ] {
            let sql = listing_sql(statements_of(&mut conn, |c| {
                sqlite::entries(c, &account, &listing(kind)).expect("listing");
            }));
            let plan: Vec<Step> = diesel::sql_query(format!("EXPLAIN QUERY PLAN {sql}"))
                .load(&mut conn)
                .expect("plan");
            assert!(
                plan.iter().any(|s| s.detail.contains(index)),
                "SQLite lists {kind:?} through {index}: {:?}",
                plan.iter().map(|s| &s.detail).collect::<Vec<_>>()
            );
        }
        let Some(admin) = postgres_admin_url() else {
            return;
        };
        let url = create_postgres_database(&admin, "it_listing_plans").expect("database");
        drop(DieselStore::connect(&url, &StoreOptions::default()).expect("migrate"));
        let mut conn = PgConnection::establish(&url).expect("connect");
        conn.batch_execute("SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off")
            .expect("generic plans");
        let sql = listing_sql(statements_of(&mut conn, |c| {
            postgres::entries(c, &account, &listing(EntryKind::TopUp)).expect("listing");
        }));
        conn.batch_execute(&format!("PREPARE listing AS {sql}"))
            .expect("prepare");
        let plan: Vec<PlanLine> =
            diesel::sql_query("EXPLAIN EXECUTE listing('acct_listing', 'topup', 10)")
                .load(&mut conn)
                .expect("plan");
        assert!(
            plan.iter()
                .any(|l| l.line.contains("ledger_entries_account_kind_other")),
            "PostgreSQL lists top-ups through the partial index: {:?}",
            plan.iter().map(|l| &l.line).collect::<Vec<_>>()
        );
    }

    /// A debit of 1 credit on `account`, with no key: its entry's id is `txn_{tag}_{n}` and
    /// its description `tag`.
    pub(crate) fn one_credit_debit(account: &str, tag: &str, n: &str, now: Timestamp) -> Posting {
        Posting {
            account_id: AccountId::new(account),
            entries: vec![NewEntry {
                id: EntryId::new(format!("txn_{tag}_{n}")),
                kind: billing_core::ledger::EntryKind::Usage,
                amount: "-1".parse().expect("amount"),
                description: tag.into(),
                reference: None,
                usage: None,
            }],
            idempotency: None,
            refund_of: Vec::new(),
            now,
        }
    }

    /// The PostgreSQL server the tests make their databases on; `None` (the test skips, and
    /// says so) when none is configured, which `BILLING_REQUIRE_POSTGRES` (CI) forbids.
    pub(crate) fn postgres_admin_url() -> Option<String> {
        let Ok(admin) = std::env::var("BILLING_TEST_POSTGRES_URL") else {
            assert!(
                std::env::var("BILLING_REQUIRE_POSTGRES").is_err(),
                "BILLING_REQUIRE_POSTGRES is set but BILLING_TEST_POSTGRES_URL is not"
            );
            eprintln!("SKIPPED: set BILLING_TEST_POSTGRES_URL to run this PostgreSQL test");
            return None;
        };
        Some(admin)
    }

    /// A PostgreSQL batch reads what its postings are decided against only once its wallets
    /// are locked: a credit, a hold placed and a key claimed by another transaction that held
    /// the wallet's lock while the batch waited for it are all seen (a read in a snapshot
    /// taken before the wait would let the batch spend held credits and fail on the claimed
    /// key).
    #[test]
    fn postgres_batches_read_what_committed_while_they_waited_for_the_lock() {
        use billing_core::ledger::EntryKind;
        use billing_core::ledger::PostingRuleError;
        let Some(admin) = postgres_admin_url() else {
            return;
        };
        let url = create_postgres_database(&admin, "it_batch_waits").expect("database");
        drop(DieselStore::connect(&url, &StoreOptions::default()).expect("migrate"));
        let now = Timestamp::from_secs(1_768_473_000);
        let mut setup = PgConnection::establish(&url).expect("connect");
        setup
            .batch_execute(
                "INSERT INTO accounts (id, name, email, balance, created_at) \
                 VALUES ('acct_wait', 'Ada', 'ada@example.com', 10000000000, 0)",
            )
            .expect("wallet with 10 credits");
        // Another transaction holds the wallet's lock: it credits 2 (to 12), places a hold of
        // 8 and claims a key.
        let mut other = PgConnection::establish(&url).expect("connect");
        other.batch_execute("BEGIN").expect("begin");
        other
            .batch_execute(&format!(
                "UPDATE accounts SET balance = 12000000000 WHERE id = 'acct_wait'; \
                 INSERT INTO holds (id, account_id, amount, status, created_at, expires_at, \
                 updated_at) VALUES ('hold_wait', 'acct_wait', 8000000000, 'active', {t}, \
                 {end}, {t}); \
                 INSERT INTO idempotency_keys (scope, key, fingerprint, result_ref, created_at) \
                 VALUES ('acct_wait:usage', 'k-wait', 'f-k-wait', '', {t});",
                t = now.as_micros(),
                end = now.as_micros() + 3_600_000_000,
            ))
            .expect("hold and claim under the lock");
        let batch = std::thread::spawn(move || {
            let mut conn = PgConnection::establish(&url).expect("connect");
            PostgresWriterSession
                .on_acquire(&mut conn)
                .expect("writer session");
            let debit = |n: &str, amount: &str, key: Option<&str>| Posting {
                account_id: AccountId::new("acct_wait"),
                entries: vec![NewEntry {
                    id: EntryId::new(format!("txn_wait_{n}")),
                    kind: EntryKind::Usage,
                    amount: amount.parse().expect("amount"),
                    description: "waits".into(),
                    reference: None,
                    usage: None,
                }],
                idempotency: key.map(|k| IdempotencyClaim {
                    scope: "acct_wait:usage".into(),
                    key: k.into(),
                    fingerprint: format!("f-{k}"),
                }),
                refund_of: Vec::new(),
                now,
            };
            postgres::post_batch(
                &mut conn,
                &[
                    debit("1", "-5", None),
                    debit("2", "-1", Some("k-wait")),
                    debit("3", "-4", None),
                ],
            )
        });
        // Commit once the batch waits for the wallet's lock.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            #[derive(QueryableByName)]
            struct Waiting {
                #[diesel(sql_type = BigInt)]
                waiting: i64,
            }
            let waiting: Waiting = diesel::sql_query(
                "SELECT count(*) AS waiting FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .get_result(&mut setup)
            .expect("activity");
            if waiting.waiting > 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the batch never waited for the lock"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        other.batch_execute("COMMIT").expect("commit");
        let answers = batch.join().expect("batch thread").expect("batch");
        assert!(
            matches!(
                answers[0],
                Err(PostError::Rule(PostingRuleError::InsufficientFunds { .. }))
            ),
            "12 credits, 8 held: a debit of 5 is refused, got {:?}",
            answers[0]
        );
        assert!(
            answers[2].is_ok(),
            "12 credits (the row as committed, not the 10 before), 8 held: a debit of 4 \
             passes, got {:?}",
            answers[2]
        );
        assert!(
            matches!(&answers[1], Ok(posted) if posted.replayed),
            "the key claimed meanwhile is replayed, got {:?}",
            answers[1]
        );
    }

    /// A migration that replaces an index takes one an operator built beforehand
    /// `CREATE INDEX CONCURRENTLY` only if that build succeeded: an invalid index of the name
    /// (a build that failed or was cancelled) is dropped and built again, never left as the
    /// only index once the old one is dropped (000014 for holds, 000016 for the ledger).
    #[test]
    fn postgres_migrations_rebuild_an_invalid_index_built_beforehand() {
        #[derive(QueryableByName)]
        struct Index {
            #[diesel(sql_type = Text)]
            name: String,
            #[diesel(sql_type = diesel::sql_types::Bool)]
            valid: bool,
            #[diesel(sql_type = Text)]
            definition: String,
        }
        let Some(admin) = postgres_admin_url() else {
            return;
        };
        let url = create_postgres_database(&admin, "it_invalid_index").expect("database");
        drop(DieselStore::connect(&url, &StoreOptions::default()).expect("migrate"));
        let mut conn = PgConnection::establish(&url).expect("connect");
        let now = Timestamp::from_secs(1_768_473_000);
        conn.batch_execute(&format!(
            "INSERT INTO accounts (id, name, email, balance, created_at) \
             VALUES ('acct_index', 'Ada', 'ada@example.com', 10000000000, 0); \
             INSERT INTO holds (id, account_id, amount, status, created_at, expires_at, \
             updated_at) VALUES \
             ('hold_a', 'acct_index', 1000000000, 'active', {t}, {end}, {t}), \
             ('hold_b', 'acct_index', 1000000000, 'active', {t}, {end}, {t});",
            t = now.as_micros(),
            end = now.as_micros() + 3_600_000_000,
        ))
        .expect("two holds");
        let debit = |n: &str| one_credit_debit("acct_index", "index", n, now);
        let posted = postgres::post_batch(&mut conn, &[debit("1"), debit("2")]).expect("batch");
        assert!(posted.iter().all(Result::is_ok), "two entries: {posted:?}");
        // Back to before 000014 (000017 to 000014 reverted), then the operator's early
        // builds fail: a unique index cannot hold two rows of one account, so each is left
        // behind invalid.
        for _ in 0..4 {
            conn.revert_last_migration(POSTGRES_MIGRATIONS)
                .expect("revert");
        }
        for failing in [
            "CREATE UNIQUE INDEX CONCURRENTLY holds_by_account_status ON holds (account_id)",
            "CREATE UNIQUE INDEX CONCURRENTLY ledger_entries_account_kind_other \
             ON ledger_entries (account_id)",
        ] {
            assert!(
                conn.batch_execute(failing).is_err(),
                "{failing} fails on duplicates"
            );
        }
        let indexes = |conn: &mut PgConnection| -> Vec<Index> {
            diesel::sql_query(
                "SELECT c.relname::text AS name, i.indisvalid AS valid, \
                 pg_get_indexdef(i.indexrelid) AS definition \
                 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
                 WHERE c.relname IN ('holds_by_account_status', 'holds_active_by_account', \
                 'ledger_entries_account_kind_other', 'ledger_entries_account_kind_seq') \
                 ORDER BY 1",
            )
            .load(conn)
            .expect("indexes")
        };
        assert!(
            indexes(&mut conn).iter().filter(|i| !i.valid).count() == 2,
            "the failed builds left two invalid indexes"
        );
        drop(DieselStore::connect(&url, &StoreOptions::default()).expect("migrate again"));
        let after = indexes(&mut conn);
        let summary: Vec<_> = after
            .iter()
            .map(|i| format!("{} valid={} {}", i.name, i.valid, i.definition))
            .collect();
        assert_eq!(
            after.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
            [
                "holds_by_account_status",
                "ledger_entries_account_kind_other"
            ],
            "the old indexes are replaced: {summary:?}"
        );
        assert!(
            after.iter().all(|i| i.valid),
            "both indexes are valid: {summary:?}"
        );
        assert!(
            after[0]
                .definition
                .contains("(account_id, status, expires_at)")
                && after[1]
                    .definition
                    .contains("(account_id, kind, seq) WHERE (kind <> 'usage'::text)"),
            "both indexes are the migrations' own: {summary:?}"
        );
    }

    /// The ledger writers' PostgreSQL sessions plan each statement once (generic plans), so
    /// none of their statements may scan a table, however small the table was when it was
    /// planned: a batch with a replayed key, an active hold, an auto top-up with its saved
    /// method and a refund, then a retried posting whose entries exist, read no table by
    /// sequential scan (foreign-key checks included), on tables of a few rows where a scan is
    /// what the planner would otherwise pick, nor past 100 rows once the tables have grown
    /// (other accounts' active holds, enabled auto top-ups and saved methods included).
    #[tokio::test(flavor = "multi_thread")]
    async fn postgres_writer_sessions_never_scan_a_table() {
        use billing_core::holds::HoldStatus;
        use billing_core::ledger::EntryKind;
        use billing_core::ports::{AccountStore, LedgerStore};
        let Some(admin) = postgres_admin_url() else {
            return;
        };
        let url = create_postgres_database(&admin, "it_writer_scans").expect("database");
        let store = DieselStore::connect(&url, &StoreOptions::default()).expect("open");
        let now = Timestamp::from_secs(1_768_473_000);
        let entry = |n: &str, kind: EntryKind, amount: &str| NewEntry {
            id: EntryId::new(format!("txn_scan_{n}")),
            kind,
            amount: amount.parse().expect("amount"),
            description: "scan test".into(),
            reference: None,
            usage: None,
        };
        let posting = |account: &str, e: NewEntry, key: Option<&str>| Posting {
            account_id: AccountId::new(account),
            entries: vec![e],
            idempotency: key.map(|k| IdempotencyClaim {
                scope: format!("{account}:usage"),
                key: k.into(),
                fingerprint: format!("f-{k}"),
            }),
            refund_of: Vec::new(),
            now,
        };
        for id in ["acct_scan_a", "acct_scan_b"] {
            store
                .insert_account(&billing_core::ports::Account {
                    id: AccountId::new(id),
                    name: "Ada".into(),
                    email: "ada@example.com".into(),
                    created_at: now,
                })
                .await
                .expect("account");
            store
                .post(posting(id, entry(id, EntryKind::Bonus, "10"), None))
                .await
                .expect("funds");
        }
        store
            .post(posting(
                "acct_scan_b",
                entry("claimed", EntryKind::Usage, "-1"),
                Some("k-claimed"),
            ))
            .await
            .expect("claimed");
        store
            .place_hold(
                &Hold {
                    id: HoldId::new("hold_scan"),
                    account_id: AccountId::new("acct_scan_a"),
                    amount: "2".parse().expect("amount"),
                    status: HoldStatus::Active,
                    captured_amount: None,
                    entry_id: None,
                    rate: None,
                    created_at: now,
                    expires_at: Timestamp::from_secs(1_768_473_600),
                    updated_at: now,
                },
                None,
                now,
            )
            .await
            .expect("hold");
        let batch = |n: &str| {
            vec![
                posting(
                    "acct_scan_a",
                    entry(&format!("{n}1"), EntryKind::Usage, "-1"),
                    Some(&format!("{n}k1")),
                ),
                posting(
                    "acct_scan_b",
                    entry(&format!("{n}2"), EntryKind::Usage, "-1"),
                    Some(&format!("{n}k2")),
                ),
                posting(
                    "acct_scan_b",
                    entry("claimed", EntryKind::Usage, "-1"),
                    Some("k-claimed"),
                ),
                posting(
                    "acct_scan_a",
                    entry(&format!("{n}3"), EntryKind::Usage, "-8"),
                    None,
                ),
                // A refund of the claimed usage (1): the first batch's passes, the second's
                // is refused (nothing left to refund); both read what a refund reads.
                Posting {
                    refund_of: vec![EntryId::new("txn_scan_claimed")],
                    ..posting(
                        "acct_scan_b",
                        entry(&format!("{n}4"), EntryKind::Refund, "1"),
                        None,
                    )
                },
            ]
        };
        // The shared pool plans with the values (its statements are not all key lookups).
        let Pools::Postgres(pool) = &store.pools else {
            panic!("a postgres:// URL opens PostgreSQL");
        };
        let mut shared = pool.get().expect("pooled connection");
        let mode: PlanMode = diesel::sql_query("SHOW plan_cache_mode")
            .get_result(&mut *shared)
            .expect("plan_cache_mode");
        assert_eq!(mode.plan_cache_mode, "force_custom_plan");
        drop(shared);
        // Statistics that say every table is tiny: the plans below are made on them. One
        // wallet has auto top-up on (a threshold no debit here reaches) and a saved method,
        // so that the batch reads both.
        let mut admin_conn = PgConnection::establish(&url).expect("connect");
        admin_conn
            .batch_execute(
                "INSERT INTO auto_topups (account_id, enabled, threshold, amount_minor, \
                 currency, credits, bonus, failure_limit) \
                 VALUES ('acct_scan_a', true, 1, 1000, 'USD', 10000000000, 0, 3); \
                 INSERT INTO payment_methods (account_id, gateway, reference, saved_at) \
                 VALUES ('acct_scan_a', 'stripe', 'cus_scan/pm_scan', 0); \
                 ANALYZE;",
            )
            .expect("auto top-up, method, analyze");
        let mut conn = PgConnection::establish(&url).expect("connect");
        PostgresWriterSession
            .on_acquire(&mut conn)
            .expect("writer session");
        // One batch, then a retried posting; what the transaction read, by table.
        let mut run = |postings: Vec<Posting>, refunds: bool| {
            conn.transaction::<_, diesel::result::Error, _>(|c| {
                let answers = postgres::post_batch(c, &postings).expect("batch");
                assert!(answers[..3].iter().all(Result::is_ok), "{answers:?}");
                assert!(answers[3].is_err(), "the hold reserves 2 of a's balance");
                assert_eq!(answers[4].is_ok(), refunds, "the refund: {:?}", answers[4]);
                let again = postgres::post_again(c, &postings[0]).expect("again");
                assert!(matches!(again.as_slice(), [Ok(_)]), "{again:?}");
                diesel::sql_query(
                    "SELECT relname::text AS relname, seq_scan, \
                     coalesce(idx_tup_fetch, 0) AS idx_tup_fetch \
                     FROM pg_stat_xact_user_tables ORDER BY relname",
                )
                .load::<Scanned>(c)
            })
            .expect("transaction")
        };
        let first = run(batch("a"), true);
        // The tables grow far past what the cached plans were made for (no new statistics).
        admin_conn
            .batch_execute(
                "INSERT INTO accounts (id, name, email, balance, created_at) \
                 SELECT 'acct_filler_' || n, 'x', 'x@example.com', 0, 0 \
                 FROM generate_series(1, 3000) n; \
                 INSERT INTO idempotency_keys (scope, key, fingerprint, result_ref, created_at) \
                 SELECT 'acct_scan_a:usage', 'filler-' || n, 'f', '', 0 \
                 FROM generate_series(1, 3000) n; \
                 INSERT INTO holds (id, account_id, amount, status, created_at, expires_at, \
                 updated_at) SELECT 'hold_filler_' || n, 'acct_scan_a', 1, 'released', 0, 0, 0 \
                 FROM generate_series(1, 3000) n; \
                 INSERT INTO holds (id, account_id, amount, status, created_at, expires_at, \
                 updated_at) SELECT 'hold_active_filler_' || n, 'acct_filler_' || n, 1, \
                 'active', 0, 9000000000000000, 0 FROM generate_series(1, 3000) n; \
                 INSERT INTO auto_topups (account_id, enabled, threshold, amount_minor, \
                 currency, credits, bonus, failure_limit) SELECT 'acct_filler_' || n, true, \
                 1, 1000, 'USD', 10000000000, 0, 3 FROM generate_series(1, 3000) n; \
                 INSERT INTO payment_methods (account_id, gateway, reference, saved_at) \
                 SELECT 'acct_filler_' || n, 'stripe', 'cus_x/pm_x', 0 \
                 FROM generate_series(1, 3000) n;",
            )
            .expect("filler rows");
        let grown = run(batch("b"), false);
        for (when, read) in [("tiny", first), ("grown", grown)] {
            let wide: Vec<String> = read
                .iter()
                .filter(|s| s.seq_scan > 0 || s.idx_tup_fetch > 100)
                .map(|s| {
                    format!(
                        "{} (scans {}, index rows {})",
                        s.relname, s.seq_scan, s.idx_tup_fetch
                    )
                })
                .collect();
            assert!(wide.is_empty(), "{when} tables, read too widely: {wide:?}");
        }
    }
}
