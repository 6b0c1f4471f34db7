//! Opening a store: the URL's backend, migrations, the connection pools and each
//! connection's session settings, and the ledger writers' start.

use super::commit::{postgres_commit, sqlite_commit};
use super::*;

pub(crate) const SQLITE_MIGRATIONS: EmbeddedMigrations =
    embed_migrations!("../../migrations/sqlite");
pub(crate) const POSTGRES_MIGRATIONS: EmbeddedMigrations =
    embed_migrations!("../../migrations/postgres");

/// How long a SQLite writer waits for the write lock before giving up.
pub(crate) const SQLITE_BUSY_TIMEOUT_MS: u32 = 30_000;
/// How much of a SQLite file each connection reads through a memory map instead of
/// `pread` (pages the OS already caches, shared by every connection).
const SQLITE_MMAP_BYTES: u64 = 256 * 1024 * 1024;
/// Tries of the first connection's PRAGMAs while another process creates the file.
const SQLITE_PRAGMA_ATTEMPTS_MAX: u32 = 200;
/// How long `/readyz` waits for a connection before it answers not ready.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(1);

/// Key of the PostgreSQL advisory lock under which migrations run ("billing" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x62_696c_6c69_6e67;

#[derive(Debug, thiserror::Error)]
enum MigrationError {
    #[error("{0}")]
    Run(String),
    #[error(transparent)]
    Db(#[from] diesel::result::Error),
}

/// The oldest PostgreSQL the store runs on: the ledger writers commit with `COMMIT AND CHAIN`
/// (PostgreSQL 12).
const POSTGRES_VERSION_MIN: i32 = 120_000;

/// Refuses a PostgreSQL server older than [`POSTGRES_VERSION_MIN`], before anything is
/// written, rather than have every batch fail and fall back to one posting at a time.
fn postgres_version_supported(conn: &mut PgConnection) -> Result<(), ConnectError> {
    #[derive(diesel::QueryableByName)]
    struct Version {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        version: i32,
    }
    let found: Version =
        diesel::sql_query("SELECT current_setting('server_version_num')::int AS version")
            .get_result(conn)
            .map_err(|e| ConnectError::Pool(e.to_string()))?;
    if found.version < POSTGRES_VERSION_MIN {
        return Err(ConnectError::Pool(format!(
            "PostgreSQL 12 or later is required; the server is version {} ({})",
            found.version / 10_000,
            found.version
        )));
    }
    Ok(())
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

/// Pages of write-ahead log past which a committing connection checkpoints by itself: a
/// backstop only (the checkpointer restarts the log long before it).
pub(crate) const SQLITE_AUTOCHECKPOINT_PAGES: u32 = 50_000;
/// The size the write-ahead log file is cut back to when the log restarts (it keeps its
/// largest size otherwise).
pub(crate) const SQLITE_JOURNAL_SIZE_LIMIT: u64 = 64 * 1024 * 1024;

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
pub(crate) struct PostgresWriterSession;

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

/// Whether `url` names a PostgreSQL database (`postgres://` or `postgresql://`).
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The SQLite file a database URL that is not PostgreSQL's names: a path, optionally
/// prefixed `sqlite://` or `sqlite:` (`sqlite:billing.db`, `sqlite:///var/lib/billing.db`).
pub(crate) fn sqlite_path(url: &str) -> &str {
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
            postgres_version_supported(&mut conn)?;
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
}
