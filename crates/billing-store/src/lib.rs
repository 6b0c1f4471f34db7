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

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");

/// How long a SQLite writer waits for the write lock before giving up.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 30_000;
/// How much of a SQLite file each connection reads through a memory map instead of
/// `pread` (pages the OS already caches, shared by every connection).
const SQLITE_MMAP_BYTES: u64 = 256 * 1024 * 1024;
/// Tries of the first connection's PRAGMAs while another process creates the file.
const SQLITE_PRAGMA_ATTEMPTS_MAX: u32 = 200;
/// How long `/readyz` waits for a connection before it answers not ready.
const READY_TIMEOUT: Duration = Duration::from_secs(1);

/// Key of the PostgreSQL advisory lock under which migrations run ("billing" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x62_696c_6c69_6e67;

#[derive(Debug, thiserror::Error)]
enum MigrationError {
    #[error("{0}")]
    Run(String),
    #[error(transparent)]
    Db(#[from] diesel::result::Error),
}

/// Runs the pending migrations under a session advisory lock, so that processes started
/// together on one database (a rolling deploy, an autoscaler) take turns: the first
/// migrates, the others wait and then find nothing to do.
fn migrate_postgres(conn: &mut PgConnection) -> Result<(), ConnectError> {
    let fail = |e: &dyn std::fmt::Display| ConnectError::Migrations(e.to_string());
    diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))
        .execute(conn)
        .map_err(|e| fail(&e))?;
    let result = conn
        .run_pending_migrations(POSTGRES_MIGRATIONS)
        .map(|_| ())
        .map_err(|e| fail(&e))
        .and_then(|()| {
            conn.transaction(postgres::chain_existing)
                .map(|_| ())
                .map_err(|e| fail(&e))
        });
    let unlocked = diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"))
        .execute(conn)
        .map_err(|e| fail(&e));
    result.and(unlocked.map(|_| ()))
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A SQLite file's directory did not exist and could not be created.
    #[error("cannot create the database directory {path}: {source}")]
    Directory {
        /// The directory.
        path: String,
        /// Why it could not be created.
        source: std::io::Error,
    },
    /// No connection could be opened (wrong URL, server down, refused, timed out).
    #[error("cannot connect to the database: {0}")]
    Pool(String),
    /// A migration failed; the database is as the last successful migration left it.
    #[error("cannot run migrations: {0}")]
    Migrations(String),
}

/// Pool sizes and the like.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Pooled connections for everything but the ledger writers, which hold one each on top.
    pub max_connections: u32,
    /// How the ledger writers batch postings (group commit).
    pub batch: BatchOptions,
    /// How long a request waits for a database connection before it is answered
    /// `StoreError::Unavailable` (`503`): the bound on a request while the database is
    /// away. Reconnection attempts back off to at most half of it, so it also bounds how
    /// long after the database is back the pool notices.
    pub acquire_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            max_connections: 16,
            batch: BatchOptions::default(),
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

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

/// How long a ledger writer waits for a connection before answering its batch
/// `Unavailable` (shorter than the pool's wait: callers are queued behind it).
const WRITER_CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// The same wait once a batch has found no connection, until one is found again: while the
/// database is away, the batches queued behind a failed one are answered `Unavailable`
/// quickly instead of each waiting the full timeout in turn.
const WRITER_CONNECTION_TIMEOUT_WHILE_DOWN: Duration = Duration::from_millis(250);

/// A ledger writer's connection, and whether the last attempt to get one failed.
struct WriterConnection<M: diesel::r2d2::ManageConnection> {
    held: Option<PooledConnection<M>>,
    unreachable: bool,
}

impl<M: diesel::r2d2::ManageConnection> WriterConnection<M> {
    fn new() -> Self {
        WriterConnection {
            held: None,
            unreachable: false,
        }
    }
}

/// Runs a ledger writer's batch on its connection `held` (taken from `pool` when there is
/// none). The connection is kept only after a clean answer: after an error or a panic it
/// goes back to the pool, which discards it if it is broken or still in a transaction.
fn commit_on<M, C>(
    pool: &Pool<M>,
    writer_conn: &mut WriterConnection<M>,
    postings: &[Posting],
    attempt: writer::Attempt,
    fresh: impl Fn(&mut C) -> Result<(), diesel::result::Error>,
    post: impl Fn(
        &mut C,
        &[Posting],
        writer::Attempt,
    ) -> Result<Vec<Result<Posted, PostError>>, StoreError>,
) -> Result<Vec<Result<Posted, PostError>>, writer::CommitError>
where
    M: diesel::r2d2::ManageConnection<Connection = C>,
{
    let mut conn = match writer_conn.held.take() {
        Some(conn) => conn,
        None => {
            let wait = if writer_conn.unreachable {
                WRITER_CONNECTION_TIMEOUT_WHILE_DOWN
            } else {
                WRITER_CONNECTION_TIMEOUT
            };
            let mut conn = pool.get_timeout(wait).map_err(|e| {
                writer_conn.unreachable = true;
                writer::CommitError::NoConnection(pool_err(e))
            })?;
            writer_conn.unreachable = false;
            fresh(&mut conn).map_err(|e| writer::CommitError::Failed(db_err(e)))?;
            conn
        }
    };
    let held = &mut writer_conn.held;
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        post(&mut conn, postings, attempt)
    })) {
        Ok(Ok(answers)) => {
            *held = Some(conn);
            Ok(answers)
        }
        Ok(Err(e)) => Err(writer::CommitError::Failed(e)),
        Err(_) => Err(writer::CommitError::Failed(StoreError::Unavailable(
            "the ledger writer failed".into(),
        ))),
    }
}

/// A PostgreSQL ledger writer's commit, on a connection of its own.
fn postgres_commit(pool: Pool<ConnectionManager<PgConnection>>) -> writer::Commit {
    let mut held = WriterConnection::new();
    Box::new(move |postings, attempt| {
        commit_on(
            &pool,
            &mut held,
            postings,
            attempt,
            |_: &mut PgConnection| Ok(()),
            |c: &mut PgConnection, p, a| match a {
                writer::Attempt::First => postgres::post_batch(c, p),
                writer::Attempt::Retry => match p {
                    [one] => postgres::post_again(c, one),
                    _ => postgres::post_batch(c, p),
                },
            },
        )
    })
}

/// SQLite's one ledger writer: owns a write connection and takes this process's writer lock
/// for each batch (the other writes queue on it too), and tells the checkpointer.
fn sqlite_commit(
    pool: Pool<ConnectionManager<SqliteConnection>>,
    writer: Arc<tokio::sync::Mutex<()>>,
    checkpointer: std::sync::mpsc::SyncSender<()>,
) -> writer::Commit {
    let mut held = WriterConnection::new();
    Box::new(move |postings, attempt| {
        let _writing = writer.blocking_lock();
        // The log grows: a checkpointer round is due (never waits; one kick is enough).
        let _ = checkpointer.try_send(());
        commit_on(
            &pool,
            &mut held,
            postings,
            attempt,
            |_: &mut SqliteConnection| Ok(()),
            |c: &mut SqliteConnection, p, a| match a {
                writer::Attempt::First => sqlite::post_batch(c, p),
                writer::Attempt::Retry => match p {
                    [one] => sqlite::post_again(c, one),
                    _ => sqlite::post_batch(c, p),
                },
            },
        )
    })
}

/// Pages of write-ahead log past which a committing connection checkpoints by itself: a
/// backstop only (the checkpointer restarts the log long before it).
const SQLITE_AUTOCHECKPOINT_PAGES: u32 = 50_000;
/// The size the write-ahead log file is cut back to when the log restarts (it keeps its
/// largest size otherwise).
const SQLITE_JOURNAL_SIZE_LIMIT: u64 = 64 * 1024 * 1024;

fn writer_err(e: std::io::Error) -> ConnectError {
    ConnectError::Pool(format!("cannot start the ledger writer: {e}"))
}

/// Every PostgreSQL connection plans each statement with its parameters
/// (`plan_cache_mode = force_custom_plan`). Diesel prepares and caches statements, and
/// PostgreSQL switches a cached statement to a generic plan after five executions; a plan
/// made while a table was small (a sequential scan of `idempotency_keys` for `= ANY($1)`)
/// then stays as the table grows: measured at 9 ms a batch after 25,000 claims, against
/// 0.3 ms planned with the keys. Planning costs microseconds; a wrong plan costs the
/// debit path.
#[derive(Debug)]
struct PostgresSession;

impl CustomizeConnection<PgConnection, diesel::r2d2::Error> for PostgresSession {
    fn on_acquire(&self, conn: &mut PgConnection) -> Result<(), diesel::r2d2::Error> {
        conn.batch_execute("SET plan_cache_mode = force_custom_plan")
            .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// The ledger writers' PostgreSQL sessions plan each statement once (`plan_cache_mode =
/// force_generic_plan`), as `pgbench -M prepared` does: under custom plans, planning their
/// statements and the foreign-key checks of every inserted entry was a fifth of
/// PostgreSQL's time per batch (measured). A generic plan cannot see the table grow, so
/// these sessions also refuse sequential scans (`enable_seqscan = off`): every statement
/// they run is a lookup by key, and a plan made while a table was small stays an index
/// probe as it grows. `jit = off`: a refused scan's cost would otherwise cross the JIT
/// threshold and compile the statement at every execution.
#[derive(Debug)]
struct PostgresWriterSession;

impl CustomizeConnection<PgConnection, diesel::r2d2::Error> for PostgresWriterSession {
    fn on_acquire(&self, conn: &mut PgConnection) -> Result<(), diesel::r2d2::Error> {
        conn.batch_execute(
            "SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off; SET jit = off",
        )
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

#[derive(Debug)]
pub(crate) struct SqlitePragmas;

impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for SqlitePragmas {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        // `batch_execute`, not `sql_query`: a prepared statement runs only the first of
        // several statements.
        conn.batch_execute(&format!(
            "PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}; PRAGMA journal_mode = WAL; \
             PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
             PRAGMA mmap_size = {SQLITE_MMAP_BYTES}; \
             PRAGMA wal_autocheckpoint = {SQLITE_AUTOCHECKPOINT_PAGES}; \
             PRAGMA journal_size_limit = {SQLITE_JOURNAL_SIZE_LIMIT};"
        ))
        .map_err(diesel::r2d2::Error::QueryError)
    }
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

/// Whether `url` names a PostgreSQL database (`postgres://` or `postgresql://`).
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The SQLite file a database URL that is not PostgreSQL's names: a path, optionally
/// prefixed `sqlite://` or `sqlite:` (`sqlite:billing.db`, `sqlite:///var/lib/billing.db`).
fn sqlite_path(url: &str) -> &str {
    url.strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url)
}

impl DieselStore {
    /// Opens the database `url` names (a `postgres://` URL, or a SQLite file path, optionally
    /// prefixed `sqlite://` or `sqlite:`), creating a SQLite file and its directory if needed, and runs
    /// pending migrations.
    pub fn connect(url: &str, options: &StoreOptions) -> Result<DieselStore, ConnectError> {
        if is_postgres_url(url) {
            let shards = options.batch.shards.max(1);
            let pool = Pool::builder()
                .error_handler(Box::new(QuietErrors::default()))
                .max_size(options.max_connections)
                .connection_timeout(options.acquire_timeout)
                .connection_customizer(Box::new(PostgresSession))
                .build(ConnectionManager::<PgConnection>::new(url))
                .map_err(|e| ConnectError::Pool(e.to_string()))?;
            let mut conn = pool.get().map_err(|e| ConnectError::Pool(e.to_string()))?;
            migrate_postgres(&mut conn)?;
            drop(conn);
            // The ledger writers' connections: a pool of their own, so that their session
            // settings never reach another statement.
            let writers = Pool::builder()
                .error_handler(Box::new(QuietErrors::default()))
                .max_size(u32::try_from(shards).unwrap_or(u32::MAX))
                .connection_timeout(options.acquire_timeout)
                .connection_customizer(Box::new(PostgresWriterSession))
                .build(ConnectionManager::<PgConnection>::new(url))
                .map_err(|e| ConnectError::Pool(e.to_string()))?;
            let commits = (0..shards)
                .map(|_| postgres_commit(writers.clone()))
                .collect();
            let ledger =
                writer::LedgerWriter::start(&options.batch, commits).map_err(writer_err)?;
            return Ok(DieselStore {
                pools: Pools::Postgres(pool),
                ledger: Arc::new(ledger),
                checkpointer: None,
            });
        }
        let path = sqlite_path(url);
        if let Some(dir) = Path::new(path)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|source| ConnectError::Directory {
                path: dir.display().to_string(),
                source,
            })?;
        }
        // Migrations first, on one connection, before the pool's connections switch to WAL.
        let mut conn =
            SqliteConnection::establish(path).map_err(|e| ConnectError::Pool(e.to_string()))?;
        // Switching a new file to WAL needs the lock without waiting for it: processes
        // creating the file together retry for a while.
        let mut attempts = 0;
        while let Err(e) = SqlitePragmas.on_acquire(&mut conn) {
            attempts += 1;
            if attempts >= SQLITE_PRAGMA_ATTEMPTS_MAX || !e.to_string().contains("locked") {
                return Err(ConnectError::Pool(e.to_string()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Under the write lock: processes starting together on one file take turns, and
        // the later ones find nothing to do.
        conn.immediate_transaction(|conn| {
            conn.run_pending_migrations(SQLITE_MIGRATIONS)
                .map(|_| ())
                .map_err(|e| MigrationError::Run(e.to_string()))?;
            sqlite::chain_existing(conn)?;
            Ok::<(), MigrationError>(())
        })
        .map_err(|e| ConnectError::Migrations(e.to_string()))?;
        drop(conn);
        let pool = Pool::builder()
            .error_handler(Box::new(QuietErrors::default()))
            // The ledger writer holds one on top.
            .max_size(options.max_connections + 1)
            .connection_timeout(options.acquire_timeout)
            .connection_customizer(Box::new(SqlitePragmas))
            .build(ConnectionManager::<SqliteConnection>::new(path))
            .map_err(|e| ConnectError::Pool(e.to_string()))?;
        let writing = Arc::new(tokio::sync::Mutex::new(()));
        let checkpointer =
            checkpointer::start(path.to_owned(), writing.clone()).map_err(writer_err)?;
        let commit = sqlite_commit(pool.clone(), writing.clone(), checkpointer.clone());
        let ledger =
            writer::LedgerWriter::start(&options.batch, vec![commit]).map_err(writer_err)?;
        Ok(DieselStore {
            pools: Pools::Sqlite(pool, writing),
            ledger: Arc::new(ledger),
            checkpointer: Some(checkpointer),
        })
    }

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

#[async_trait]
impl AccountStore for DieselStore {
    async fn insert_account(&self, account: &Account) -> Result<(), StoreError> {
        let account = account.clone();
        on_write_conn!(self, |c| ops::insert_account(c, &account))
    }

    async fn account(&self, id: &AccountId) -> Result<Option<Account>, StoreError> {
        let id = id.clone();
        on_conn!(self, |c| ops::account(c, &id))
    }

    async fn wallet(&self, id: &AccountId) -> Result<Option<Wallet>, StoreError> {
        let id = id.clone();
        on_conn!(self, |c| ops::wallet(c, &id))
    }

    async fn account_ids(
        &self,
        after: Option<&AccountId>,
        limit: u32,
    ) -> Result<Vec<AccountId>, StoreError> {
        let after = after.cloned();
        on_conn!(self, |c| ops::account_ids(c, after.as_ref(), limit))
    }
}

#[async_trait]
impl LedgerStore for DieselStore {
    async fn post(&self, posting: Posting) -> Result<Posted, PostError> {
        // A refund reads the links earlier refunds wrote: alone, in its own transaction.
        // Counted where they commit (posting.rs), not here.
        if posting.refund_of.is_empty() {
            return self.ledger.post(posting).await;
        }
        on_write_conn!(self, |c| ops::post(c, &posting))
    }

    async fn post_batch(&self, postings: Vec<Posting>) -> Vec<Result<Posted, PostError>> {
        let batch = postings.clone();
        match on_write_conn!(self, |c| ops::post_batch(c, &batch)) {
            Ok(answers) => answers,
            Err(_) => {
                self.ledger.count_failed_batch();
                let mut answers = Vec::with_capacity(postings.len());
                for posting in postings {
                    answers.push(
                        on_write_conn!(self, |c| ops::post_again(c, &posting)
                            .map_err(PostError::Store))
                        .and_then(|mut a| {
                            a.pop().unwrap_or_else(|| {
                                Err(PostError::Store(StoreError::Corrupt("no answer".into())))
                            })
                        }),
                    );
                }
                answers
            }
        }
    }

    async fn entries(
        &self,
        account_id: &AccountId,
        query: &EntryQuery,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        let (account_id, query) = (account_id.clone(), query.clone());
        on_conn!(self, |c| ops::entries(c, &account_id, &query))
    }

    async fn entry(
        &self,
        account_id: &AccountId,
        id: &EntryId,
    ) -> Result<Option<LedgerEntry>, StoreError> {
        let (account_id, id) = (account_id.clone(), id.clone());
        on_conn!(self, |c| ops::entry(c, &account_id, &id))
    }

    async fn history(&self, account_id: &AccountId) -> Result<Vec<LedgerEntry>, StoreError> {
        let account_id = account_id.clone();
        on_conn!(self, |c| ops::history(c, &account_id))
    }
}

#[async_trait]
impl TopUpStore for DieselStore {
    async fn insert_topup(
        &self,
        topup: &TopUp,
        idempotency: Option<&IdempotencyClaim>,
    ) -> Result<Inserted<TopUp>, InsertTopUpError> {
        let (topup, claim) = (topup.clone(), idempotency.cloned());
        on_write_conn!(self, |c| ops::insert_topup(c, &topup, claim.as_ref()))
    }

    async fn set_checkout(
        &self,
        id: &TopUpId,
        payment_ref: &str,
        checkout_url: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let (id, payment_ref, url) = (id.clone(), payment_ref.to_owned(), checkout_url.to_owned());
        on_write_conn!(self, |c| {
            // The payment started with the gateway (a checkout, or an auto top-up's charge):
            // counted once, when its reference is first recorded.
            if let Some(gateway) = ops::set_checkout(c, &id, &payment_ref, &url, now)? {
                metered::topup(&gateway, "created");
            }
            Ok(())
        })
    }

    async fn topup(&self, id: &TopUpId) -> Result<Option<TopUp>, StoreError> {
        let id = id.clone();
        on_conn!(self, |c| ops::topup(c, &id))
    }

    async fn topup_by_payment_ref(
        &self,
        gateway: &str,
        payment_ref: &str,
    ) -> Result<Option<TopUp>, StoreError> {
        let (gateway, payment_ref) = (gateway.to_owned(), payment_ref.to_owned());
        on_conn!(self, |c| ops::topup_by_payment_ref(
            c,
            &gateway,
            &payment_ref
        ))
    }

    async fn transition_topup(
        &self,
        id: &TopUpId,
        target: TopUpStatus,
        entries: Vec<NewEntry>,
        failure_reason: Option<String>,
        now: Timestamp,
    ) -> Result<Option<TransitionOutcome>, StoreError> {
        let id = id.clone();
        on_write_conn!(self, |c| {
            let outcome =
                ops::transition_topup(c, &id, target, &entries, failure_reason.as_deref(), now);
            if let Ok(Some(TransitionOutcome::Applied { topup, entries })) = &outcome {
                metered::entries_written(entries);
                metered::topup(&topup.gateway, topup.status.as_str());
            }
            outcome
        })
    }

    async fn topup_page(
        &self,
        account_id: &AccountId,
        status: Option<TopUpStatus>,
        page: u32,
        per_page: u32,
    ) -> Result<TopUpPage, StoreError> {
        let account_id = account_id.clone();
        on_conn!(self, |c| ops::topup_page(
            c,
            &account_id,
            status,
            page,
            per_page
        ))
    }

    async fn pending_topups(
        &self,
        created_before: Timestamp,
        limit: u32,
    ) -> Result<Vec<TopUp>, StoreError> {
        on_conn!(self, |c| ops::pending_topups(c, created_before, limit))
    }

    async fn touch_pending_topup(&self, id: &TopUpId, now: Timestamp) -> Result<(), StoreError> {
        let id = id.clone();
        on_write_conn!(self, |c| ops::touch_pending_topup(c, &id, now))
    }
}

#[async_trait]
impl PackStore for DieselStore {
    async fn upsert_pack(&self, pack: &Pack) -> Result<(), StoreError> {
        let pack = pack.clone();
        on_write_conn!(self, |c| ops::upsert_pack(c, &pack))
    }

    async fn pack(&self, id: &PackId) -> Result<Option<Pack>, StoreError> {
        let id = id.clone();
        on_conn!(self, |c| ops::pack(c, &id))
    }

    async fn packs(&self, include_inactive: bool) -> Result<Vec<Pack>, StoreError> {
        on_conn!(self, |c| ops::packs(c, include_inactive))
    }
}

#[async_trait]
impl HoldStore for DieselStore {
    async fn place_hold(
        &self,
        hold: &Hold,
        idempotency: Option<&IdempotencyClaim>,
        now: Timestamp,
    ) -> Result<HoldOutcome, HoldError> {
        let (hold, claim) = (hold.clone(), idempotency.cloned());
        on_write_conn!(self, |c| ops::place_hold(c, &hold, claim.as_ref(), now))
    }

    async fn change_hold(
        &self,
        account_id: &AccountId,
        id: &HoldId,
        action: &HoldAction,
        idempotency: Option<&IdempotencyClaim>,
        now: Timestamp,
    ) -> Result<HoldOutcome, HoldError> {
        let (account_id, id, action, claim) = (
            account_id.clone(),
            id.clone(),
            action.clone(),
            idempotency.cloned(),
        );
        on_write_conn!(self, |c| {
            let outcome = ops::change_hold(c, &account_id, &id, &action, claim.as_ref(), now);
            if let Ok(o) = &outcome
                && !o.replayed
            {
                metered::entries_written(&o.entry);
            }
            outcome
        })
    }

    async fn hold(&self, id: &HoldId) -> Result<Option<Hold>, StoreError> {
        let id = id.clone();
        on_conn!(self, |c| ops::hold(c, &id))
    }

    async fn reserved(
        &self,
        account_id: &AccountId,
        now: Timestamp,
    ) -> Result<Credits, StoreError> {
        let account_id = account_id.clone();
        on_conn!(self, |c| ops::reserved(c, &account_id, now))
    }

    async fn expire_holds(&self, now: Timestamp, limit: u32) -> Result<u32, StoreError> {
        on_write_conn!(self, |c| ops::expire_holds(c, now, limit))
    }
}

#[async_trait]
impl ControlsStore for DieselStore {
    async fn spending(
        &self,
        account_id: &AccountId,
    ) -> Result<Option<(SpendingLimit, MonthSpend)>, StoreError> {
        let account_id = account_id.clone();
        on_conn!(self, |c| ops::spending(c, &account_id))
    }

    async fn set_spending_limit(
        &self,
        account_id: &AccountId,
        limit: &SpendingLimit,
    ) -> Result<bool, StoreError> {
        let (account_id, limit) = (account_id.clone(), limit.clone());
        on_write_conn!(self, |c| ops::set_spending_limit(c, &account_id, &limit))
    }

    async fn low_balance_alert(
        &self,
        account_id: &AccountId,
    ) -> Result<Option<LowBalanceAlert>, StoreError> {
        let account_id = account_id.clone();
        on_conn!(self, |c| ops::low_balance_alert(c, &account_id))
    }

    async fn set_low_balance_alert(
        &self,
        account_id: &AccountId,
        alert: &LowBalanceAlert,
    ) -> Result<bool, StoreError> {
        let (account_id, alert) = (account_id.clone(), alert.clone());
        on_write_conn!(self, |c| ops::set_low_balance_alert(c, &account_id, &alert))
    }

    async fn auto_topup(
        &self,
        account_id: &AccountId,
    ) -> Result<Option<(AutoTopUpSettings, AutoTopUpState)>, StoreError> {
        let account_id = account_id.clone();
        on_conn!(self, |c| ops::auto_topup(c, &account_id))
    }

    async fn set_auto_topup(
        &self,
        account_id: &AccountId,
        settings: &AutoTopUpSettings,
    ) -> Result<bool, StoreError> {
        let (account_id, settings) = (account_id.clone(), settings.clone());
        on_write_conn!(self, |c| ops::set_auto_topup(c, &account_id, &settings))
    }

    async fn payment_method(
        &self,
        account_id: &AccountId,
    ) -> Result<Option<SavedMethod>, StoreError> {
        let account_id = account_id.clone();
        on_conn!(self, |c| ops::payment_method(c, &account_id))
    }

    async fn save_payment_method(
        &self,
        account_id: &AccountId,
        method: &SavedMethod,
    ) -> Result<bool, StoreError> {
        let (account_id, method) = (account_id.clone(), method.clone());
        on_write_conn!(self, |c| ops::save_payment_method(c, &account_id, &method))
    }

    async fn delete_payment_method(&self, account_id: &AccountId) -> Result<bool, StoreError> {
        let account_id = account_id.clone();
        on_write_conn!(self, |c| ops::delete_payment_method(c, &account_id))
    }
}

#[async_trait]
impl Readiness for DieselStore {
    async fn ready(&self) -> Result<(), StoreError> {
        // A probe waits a second at most: a load balancer's check must not hang while the
        // database is away.
        let pending = match &self.pools {
            Pools::Sqlite(pool, _) => {
                let pool = pool.clone();
                run_blocking(move || {
                    let mut c = pool.get_timeout(READY_TIMEOUT).map_err(pool_err)?;
                    sqlite::migrations_pending(&mut c)
                })
                .await
            }
            Pools::Postgres(pool) => {
                let pool = pool.clone();
                run_blocking(move || {
                    let mut c = pool.get_timeout(READY_TIMEOUT).map_err(pool_err)?;
                    postgres::migrations_pending(&mut c)
                })
                .await
            }
        }?;
        if pending {
            return Err(StoreError::Unavailable(
                "the database lacks migrations this build expects".into(),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl OutboxStore for DieselStore {
    async fn claim_outbox(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        on_write_conn!(self, |c| ops::claim_outbox(c, now, lease_until, limit))
    }

    async fn finish_outbox(
        &self,
        item: &OutboxItem,
        outcome: &OutboxOutcome,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let (item, outcome) = (item.clone(), outcome.clone());
        on_write_conn!(self, |c| ops::finish_outbox(c, &item, &outcome, now))
    }

    async fn outbox_depth(&self) -> Result<(u64, Option<Timestamp>), StoreError> {
        on_conn!(self, |c| ops::outbox_depth(c))
    }
}

#[async_trait]
impl RateStore for DieselStore {
    async fn upsert_rate(&self, rate: &Rate, now: Timestamp) -> Result<(), StoreError> {
        let rate = rate.clone();
        on_write_conn!(self, |c| ops::upsert_rate(c, &rate, now))
    }

    async fn delete_rate(&self, model: &str) -> Result<bool, StoreError> {
        let model = model.to_owned();
        on_write_conn!(self, |c| ops::delete_rate(c, &model))
    }

    async fn rate(&self, model: &str) -> Result<Option<Rate>, StoreError> {
        let model = model.to_owned();
        on_conn!(self, |c| ops::rate(c, &model))
    }

    async fn rates(&self) -> Result<Vec<Rate>, StoreError> {
        on_conn!(self, |c| ops::rates(c))
    }
}

#[async_trait]
impl ApiKeyStore for DieselStore {
    async fn insert_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        let key = key.clone();
        on_write_conn!(self, |c| ops::insert_key(c, &key))
    }

    async fn key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let hash = hash.to_owned();
        on_conn!(self, |c| ops::key_by_hash(c, &hash))
    }

    async fn key(&self, id: &ApiKeyId) -> Result<Option<ApiKeyRecord>, StoreError> {
        let id = id.clone();
        on_conn!(self, |c| ops::key(c, &id))
    }

    async fn revoke_key(&self, id: &ApiKeyId, now: Timestamp) -> Result<bool, StoreError> {
        let id = id.clone();
        on_write_conn!(self, |c| ops::revoke_key(c, &id, now))
    }

    async fn has_admin_key(&self) -> Result<bool, StoreError> {
        on_conn!(self, |c| ops::has_admin_key(c))
    }

    async fn list_keys(&self, query: &KeyQuery) -> Result<Option<KeyPage>, StoreError> {
        let query = query.clone();
        on_conn!(self, |c| ops::list_keys(c, &query))
    }

    async fn touch_key(&self, id: &ApiKeyId, minute: Timestamp) -> Result<(), StoreError> {
        let id = id.clone();
        on_write_conn!(self, |c| ops::touch_key(c, &id, minute))
    }

    async fn insert_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        let session = session.clone();
        on_write_conn!(self, |c| ops::insert_session(c, &session))
    }

    async fn session_by_hash(&self, hash: &str) -> Result<Option<SessionRecord>, StoreError> {
        let hash = hash.to_owned();
        on_conn!(self, |c| ops::session_by_hash(c, &hash))
    }

    async fn end_session(&self, hash: &str, now: Timestamp) -> Result<(), StoreError> {
        let hash = hash.to_owned();
        on_write_conn!(self, |c| ops::end_session(c, &hash, now))
    }
}

#[async_trait]
impl EventStore for DieselStore {
    async fn record_event(
        &self,
        gateway: &str,
        event_id: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let (gateway, event_id) = (gateway.to_owned(), event_id.to_owned());
        on_write_conn!(self, |c| ops::record_event(c, &gateway, &event_id, now))
    }

    async fn event_seen(&self, gateway: &str, event_id: &str) -> Result<bool, StoreError> {
        let (gateway, event_id) = (gateway.to_owned(), event_id.to_owned());
        on_conn!(self, |c| ops::event_seen(c, &gateway, &event_id))
    }
}

/// The file of the SQLite database `url` names, if it exists (never created here).
pub fn existing_sqlite_file(url: &str) -> Option<&str> {
    let path = sqlite_path(url);
    Path::new(path).is_file().then_some(path)
}

/// A connection to a SQLite file outside the pools (the audit, a backup, one-off SQL),
/// which waits for running servers' write lock as theirs do.
fn sqlite_beside_servers(path: &str) -> Result<SqliteConnection, String> {
    let mut conn = SqliteConnection::establish(path).map_err(|e| e.to_string())?;
    conn.batch_execute(&format!("PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS};"))
        .map_err(|e| e.to_string())?;
    Ok(conn)
}

/// Why the audit could not run.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The SQLite file does not exist (the audit never creates one).
    #[error("no database at {0}")]
    Missing(String),
    /// No connection could be opened.
    #[error("cannot connect to the database: {0}")]
    Connect(String),
    /// Migrations or the one-time chaining have not run on this database yet.
    #[error(
        "the database has not been brought up to this build (its migrations, or the chaining of \
         wallets from before the hash chain, have not run): start the service on it once"
    )]
    NotReady,
    /// A query of the snapshot failed.
    #[error("cannot read the books: {0}")]
    Read(String),
}

/// Audits the books of the database `url` names in one snapshot: every wallet recomputed
/// from its ledger, every hash chain, idempotency claim and completed top-up checked
/// ([`billing_core::audit::audit`]). Empty: the books are clean. Changes nothing (no
/// migration, no chaining, no file created), so it is safe while the service runs and it
/// never repairs what it should report.
pub fn audit_database(url: &str) -> Result<Vec<billing_core::audit::Finding>, AuditError> {
    let input = if is_postgres_url(url) {
        let mut conn =
            PgConnection::establish(url).map_err(|e| AuditError::Connect(e.to_string()))?;
        if !postgres::chain_backfilled(&mut conn).unwrap_or(false) {
            return Err(AuditError::NotReady);
        }
        postgres::audit_snapshot(&mut conn).map_err(|e| AuditError::Read(e.to_string()))?
    } else {
        let path = existing_sqlite_file(url)
            .ok_or_else(|| AuditError::Missing(sqlite_path(url).into()))?;
        let mut conn = sqlite_beside_servers(path).map_err(AuditError::Connect)?;
        if !sqlite::chain_backfilled(&mut conn).unwrap_or(false) {
            return Err(AuditError::NotReady);
        }
        sqlite::audit_snapshot(&mut conn).map_err(|e| AuditError::Read(e.to_string()))?
    };
    Ok(billing_core::audit::audit(&input))
}

/// Why a backup was not written.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// `url` names a PostgreSQL database: `pg_dump` backs those up.
    #[error(
        "this is a PostgreSQL database: back it up with pg_dump (README, \"Backups\"), \
         not with this command"
    )]
    Postgres,
    /// The SQLite file to back up does not exist.
    #[error("no database at {0}")]
    Missing(String),
    /// The target file exists already.
    #[error("{0} already exists: a backup never overwrites a file")]
    TargetExists(String),
    /// SQLite refused or failed the copy (disk full, permissions, a corrupt source).
    #[error("cannot back up: {0}")]
    Failed(String),
}

/// Writes a consistent copy of the SQLite database `url` names to the new file `target`
/// with `VACUUM INTO`: one read transaction, so a copy of the books as of one instant
/// (every committed batch in it whole, none in part), safe while servers write. The copy
/// is a normal database file: restore by pointing `BILLING_DATABASE_URL` at it (or moving
/// it in place while the service is stopped).
pub fn backup_sqlite(url: &str, target: &str) -> Result<(), BackupError> {
    if is_postgres_url(url) {
        return Err(BackupError::Postgres);
    }
    let path =
        existing_sqlite_file(url).ok_or_else(|| BackupError::Missing(sqlite_path(url).into()))?;
    if Path::new(target).exists() {
        return Err(BackupError::TargetExists(target.to_owned()));
    }
    let mut conn = sqlite_beside_servers(path).map_err(BackupError::Failed)?;
    diesel::sql_query("VACUUM INTO ?")
        .bind::<diesel::sql_types::Text, _>(target)
        .execute(&mut conn)
        .map_err(|e| BackupError::Failed(e.to_string()))?;
    Ok(())
}

/// Runs `sql` (statements separated by `;`) on the database `url` names, outside the
/// service: for tests that tamper with rows and for an operator's one-off repair. Answers
/// the rows the last statement changed.
pub fn execute_sql(url: &str, sql: &str) -> Result<usize, ConnectError> {
    let fail = |e: diesel::result::Error| ConnectError::Pool(e.to_string());
    let mut changed = 0;
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let mut conn =
            PgConnection::establish(url).map_err(|e| ConnectError::Pool(e.to_string()))?;
        for statement in sql.split(';').filter(|s| !s.trim().is_empty()) {
            changed = diesel::sql_query(statement)
                .execute(&mut conn)
                .map_err(fail)?;
        }
    } else {
        let mut conn = sqlite_beside_servers(url).map_err(ConnectError::Pool)?;
        for statement in sql.split(';').filter(|s| !s.trim().is_empty()) {
            changed = diesel::sql_query(statement)
                .execute(&mut conn)
                .map_err(fail)?;
        }
    }
    Ok(changed)
}

/// Creates (dropping it first if it exists) the database `name` on the server `admin_url`
/// points at, and returns a URL for it. For tests and benchmarks that need a fresh database;
/// `name` is made of `[a-z0-9_]` only and suffixed with this process's id.
pub fn create_postgres_database(admin_url: &str, name: &str) -> Result<String, ConnectError> {
    let name: String = format!("{name}_{}", std::process::id())
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(63)
        .collect();
    let mut conn =
        PgConnection::establish(admin_url).map_err(|e| ConnectError::Pool(e.to_string()))?;
    diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .map_err(|e| ConnectError::Pool(e.to_string()))?;
    diesel::sql_query(format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .map_err(|e| ConnectError::Pool(e.to_string()))?;
    let (base, _) = admin_url
        .rsplit_once('/')
        .ok_or_else(|| ConnectError::Pool(format!("no database in URL {admin_url}")))?;
    Ok(format!("{base}/{name}"))
}

#[cfg(test)]
mod tests {
    use diesel::sql_types::{BigInt, Text};
    use diesel::{QueryableByName, RunQueryDsl};

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

    /// The PostgreSQL server the tests make their databases on; `None` (the test skips, and
    /// says so) when none is configured, which `BILLING_REQUIRE_POSTGRES` (CI) forbids.
    fn postgres_admin_url() -> Option<String> {
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
        use billing_core::ledger::EntryKind;
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
        let debit = |n: &str| Posting {
            account_id: AccountId::new("acct_index"),
            entries: vec![NewEntry {
                id: EntryId::new(format!("txn_index_{n}")),
                kind: EntryKind::Usage,
                amount: "-1".parse().expect("amount"),
                description: "index".into(),
                reference: None,
                usage: None,
            }],
            idempotency: None,
            refund_of: Vec::new(),
            now,
        };
        let posted = postgres::post_batch(&mut conn, &[debit("1"), debit("2")]).expect("batch");
        assert!(posted.iter().all(Result::is_ok), "two entries: {posted:?}");
        // Back to before 000014 (000016, 000015 and 000014 reverted), then the operator's
        // early builds fail: a unique index cannot hold two rows of one account, so each is
        // left behind invalid.
        for _ in 0..3 {
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
