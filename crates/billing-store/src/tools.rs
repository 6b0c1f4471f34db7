//! What operators run beside the service: the audit of a whole database, a SQLite backup,
//! one-off SQL, and the test databases on a PostgreSQL server.

use super::connect::{SQLITE_BUSY_TIMEOUT_MS, sqlite_path};
use super::*;

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
