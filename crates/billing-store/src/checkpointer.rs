//! SQLite's checkpointer: copies the write-ahead log into the database file on a thread of
//! its own, so that the ledger writer (the serial part of every debit) never copies pages
//! or waits for the disk, and restarts the log so that it stays small.

use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::r2d2::CustomizeConnection;
use diesel::sqlite::SqliteConnection;
use diesel::{Connection, RunQueryDsl};

use crate::connect::SqlitePragmas;
use crate::{StoreError, db_err};

/// The checkpointer's pace: at least this long between two rounds; without writes, one
/// round per `IDLE`.
const SPACING: Duration = Duration::from_millis(100);
const IDLE: Duration = Duration::from_secs(5);
/// A round's passes outside the writer lock stop once one takes less than this: what the
/// writer appended meanwhile, all that is left for the pass under the lock, is then a few
/// milliseconds' worth.
const SETTLED: Duration = Duration::from_millis(2);
/// ... or after this many passes (a writer that appends faster than the disk takes it).
const MAX_PASSES: u32 = 16;

/// Starts the checkpointer thread for the database at `path`; `writing` is the process's
/// writer lock.
///
/// A round copies the whole log into the database so that the next write transaction
/// starts the log again from its beginning. (Passive checkpoints beside a writer that never
/// pauses never catch up: the log grew to 1.6 GB. The writer's own automatic checkpoint
/// kept it bounded, at 19% of the writer's time, measured.) Only its last pass holds the
/// writer lock, and that pass must be short, since every debit waits for it:
///
/// - Passes outside the lock, each a `PASSIVE` checkpoint (it copies the log as it stood
///   when it started, while the writer goes on appending) followed by a sync of the
///   database file, repeat until one takes under `SETTLED` (at most `MAX_PASSES`).
/// - Then, under the lock, a last `PASSIVE` checkpoint copies what was appended during the
///   previous pass and syncs the log and the database.
///
/// The sync after each pass is ours, not SQLite's: SQLite syncs the database file only in
/// the pass that copies the whole log, the locked one, which would otherwise flush every
/// page the earlier passes wrote. Measured on 200 wallets (2 cores, ext4 on a virtual
/// disk): the locked pass went from 20–37 ms (one pass outside the lock, no sync of ours)
/// to 3–5 ms, and the p99 of a debit at half the peak from 30–50 ms to 6–9 ms; peak
/// throughput fell about 10% (the disk does more, smaller syncs).
///
/// Every write of this process sends a kick (never waiting) as it starts; a round begins at
/// a kick, or after `IDLE` without one, and the next is at least `SPACING` later. The
/// thread has a connection of its own, outside the pool: waiting for a pooled one while
/// holding the writer lock would stall every write when reads fill the pool. Stops when
/// every sender is dropped (the store and its ledger writer).
pub(crate) fn start(
    path: String,
    writing: Arc<tokio::sync::Mutex<()>>,
) -> std::io::Result<std::sync::mpsc::SyncSender<()>> {
    let (kick, kicked) = std::sync::mpsc::sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("sqlite-checkpointer".into())
        .spawn(move || {
            let mut opened: Option<Opened> = None;
            let mut failing = false;
            while let Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                kicked.recv_timeout(IDLE)
            {
                match round(&path, &mut opened, &writing) {
                    Ok(()) if failing => {
                        failing = false;
                        tracing::info!("SQLite checkpoints work again");
                    }
                    Ok(()) => {}
                    Err(e) => {
                        // A fresh connection next round; one warning per incident.
                        opened = None;
                        if !failing {
                            tracing::warn!(error = %e, "SQLite checkpoint failed; retrying");
                        }
                        failing = true;
                    }
                }
                std::thread::sleep(SPACING);
            }
        })?;
    Ok(kick)
}

#[derive(diesel::QueryableByName)]
struct MainFile {
    #[diesel(sql_type = diesel::sql_types::Text)]
    file: String,
}

/// The checkpointer's connection, and the database file opened to sync it.
struct Opened {
    conn: SqliteConnection,
    file: Arc<std::fs::File>,
}

/// The database file at `path`, opened once per process and never closed. Closing any
/// descriptor of a file releases every POSIX lock the process holds on it, SQLite's
/// connections' included ("How To Corrupt An SQLite Database File", 2.2; SQLite keeps its
/// own descriptors open while it holds locks for that reason), so the checkpointer's file
/// is kept for the process's life, one per file (device and inode) however many times a
/// store on it is opened.
fn database_file(path: &str) -> std::io::Result<Arc<std::fs::File>> {
    type Files = Vec<(String, Arc<std::fs::File>)>;
    static FILES: std::sync::OnceLock<std::sync::Mutex<Files>> = std::sync::OnceLock::new();
    let mut files = FILES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let named = file_key(path, &std::fs::metadata(path)?);
    if let Some((_, file)) = files.iter().find(|(key, _)| *key == named) {
        return Ok(file.clone());
    }
    // Read and write: syncing needs write access on some systems (Windows).
    let file = Arc::new(
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?,
    );
    // Kept whatever its key (the path may name another file by now): dropping it would
    // close it.
    let opened = file.metadata().map_or(named, |m| file_key(path, &m));
    files.push((opened, file.clone()));
    Ok(file)
}

/// Which file `metadata` describes: its device and inode.
#[cfg(unix)]
fn file_key(_path: &str, metadata: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!("{}:{}", metadata.dev(), metadata.ino())
}

/// Which file: its path, where there are no inodes (nor POSIX locks).
#[cfg(not(unix))]
fn file_key(path: &str, _metadata: &std::fs::Metadata) -> String {
    path.to_owned()
}

/// One round (see `start`), on the checkpointer's connection (opened when there is none).
fn round(
    path: &str,
    opened: &mut Option<Opened>,
    writing: &tokio::sync::Mutex<()>,
) -> Result<(), StoreError> {
    let opened = settle(path, opened)?;
    let _writing = writing.blocking_lock();
    let locked = Instant::now();
    let last = passive(&mut opened.conn);
    crate::metered::checkpoint_lock(locked.elapsed());
    last
}

/// A round's passes outside the writer lock, each a `PASSIVE` checkpoint and a sync of the
/// database file, until one takes under `SETTLED` (at most `MAX_PASSES`).
///
/// A failed sync ends the process: the pages it could not write are lost, and the log's
/// pages, the only other copy, are already counted as copied; a retry would sync
/// successfully (Linux reports a writeback error once to each open descriptor) and the log
/// would restart over them. Started again, SQLite recovers the log and copies all of it
/// again (PostgreSQL does the same on a failed `fsync`).
fn settle<'o>(path: &str, opened: &'o mut Option<Opened>) -> Result<&'o mut Opened, StoreError> {
    let unavailable = |e: &dyn std::fmt::Display| StoreError::Unavailable(e.to_string());
    let opened = match opened {
        Some(opened) => opened,
        None => {
            let mut conn = SqliteConnection::establish(path).map_err(|e| unavailable(&e))?;
            SqlitePragmas
                .on_acquire(&mut conn)
                .map_err(|e| unavailable(&e))?;
            // The file SQLite opened, whatever form `path` has.
            let main: MainFile =
                diesel::sql_query("SELECT file FROM pragma_database_list WHERE name = 'main'")
                    .get_result(&mut conn)
                    .map_err(db_err)?;
            let file = database_file(&main.file).map_err(|e| unavailable(&e))?;
            opened.insert(Opened { conn, file })
        }
    };
    for _ in 0..MAX_PASSES {
        let started = Instant::now();
        passive(&mut opened.conn)?;
        if let Err(e) = opened.file.sync_data() {
            tracing::error!(
                error = %e,
                path,
                "cannot sync the SQLite database file: stopping so that a restart recovers \
                 the write-ahead log"
            );
            std::process::abort();
        }
        if started.elapsed() < SETTLED {
            break;
        }
    }
    Ok(opened)
}

/// One `PASSIVE` checkpoint.
fn passive(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    conn.batch_execute("PRAGMA wal_checkpoint(PASSIVE)")
        .map_err(db_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A round copies the whole log into the database while a writer keeps appending to it
    /// (its passes outside the lock never catch up by themselves), so that the next write
    /// starts the log again from its beginning.
    #[test]
    fn a_round_copies_the_whole_log_while_a_writer_appends() {
        let dir = std::env::temp_dir().join(format!("billing-ckpt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("ckpt.db").display().to_string();
        let open = || {
            let mut conn = SqliteConnection::establish(&path).expect("open");
            SqlitePragmas.on_acquire(&mut conn).expect("pragmas");
            conn
        };
        open()
            .batch_execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            .expect("table");
        let writing = Arc::new(tokio::sync::Mutex::new(()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (writing, stop, mut conn) = (writing.clone(), stop.clone(), open());
            std::thread::spawn(move || {
                let mut commits = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _held = writing.blocking_lock();
                    conn.batch_execute(
                        "BEGIN IMMEDIATE; \
                         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n \
                         WHERE i < 20) INSERT INTO t (v) SELECT hex(randomblob(200)) FROM n; \
                         COMMIT;",
                    )
                    .expect("write");
                    commits += 1;
                }
                commits
            })
        };
        // The write-ahead log's first salt (header bytes 16..20), which every restart of the
        // log increments by one, whichever connection restarts it. (Not the checkpoint
        // sequence number, bytes 12..16: each connection counts its own restarts there, so
        // after the writer's connection restarted the log, the observer's next restart can
        // write the number already there. Under a busy disk the writer restarts it between
        // rounds, and a test that read that number failed now and then: 4 of about 55 runs.)
        let wal = format!("{path}-wal");
        let sequence = || {
            let header = std::fs::read(&wal).expect("log");
            u32::from_be_bytes([header[16], header[17], header[18], header[19]])
        };
        let mut opened = None;
        let mut observer = open();
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(50));
            // The round's passes outside the lock, while the writer appends, then its last
            // pass under the lock (as `round` takes it), the test's write, and the check,
            // all under the lock: no other write comes between them.
            let opened = settle(&path, &mut opened).expect("passes");
            let _held = writing.blocking_lock();
            let before = sequence();
            passive(&mut opened.conn).expect("last pass");
            observer
                .batch_execute("INSERT INTO t (v) VALUES ('observer')")
                .expect("write");
            assert_eq!(
                sequence(),
                before.wrapping_add(1),
                "the write after the last pass starts the log again"
            );
        }
        // And `round` itself: the writer's next write, or the test's, restarts the log.
        let before = {
            let _held = writing.blocking_lock();
            sequence()
        };
        round(&path, &mut opened, &writing).expect("round");
        let held = writing.blocking_lock();
        observer
            .batch_execute("INSERT INTO t (v) VALUES ('observer')")
            .expect("write");
        assert!(sequence() != before, "the log restarted after the round");
        drop(held);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(writer.join().expect("writer") > 0, "the writer wrote");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
