//! The ledger writers' commits: each writer's own connection, taken from its pool and kept
//! while it works, and the batch it commits on it (PostgreSQL or SQLite).

use super::*;

/// How long a ledger writer waits for a connection before answering its batch
/// `Unavailable` (shorter than the pool's wait: callers are queued behind it).
const WRITER_CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// The same wait once a batch has found no connection, until one is found again: while the
/// database is away, the batches queued behind a failed one are answered `Unavailable`
/// quickly instead of each waiting the full timeout in turn.
const WRITER_CONNECTION_TIMEOUT_WHILE_DOWN: Duration = Duration::from_millis(250);

/// A ledger writer's connection, whether the last attempt to get one failed, and whether a
/// transaction is open on it for the next batch (PostgreSQL's `COMMIT AND CHAIN`).
struct WriterConnection<M: diesel::r2d2::ManageConnection> {
    held: Option<PooledConnection<M>>,
    unreachable: bool,
    chained: bool,
}

impl<M: diesel::r2d2::ManageConnection> WriterConnection<M> {
    fn new() -> Self {
        WriterConnection {
            held: None,
            unreachable: false,
            chained: false,
        }
    }
}

/// Runs a ledger writer's batch on its connection `held` (taken from `pool` when there is
/// none). The connection is kept only after a clean answer: after an error or a panic it
/// goes back to the pool, which discards it if it is broken or still in a transaction
/// (Diesel counts a chained transaction as open, so a connection that failed with one is
/// discarded too).
fn commit_on<M, C>(
    pool: &Pool<M>,
    writer_conn: &mut WriterConnection<M>,
    post: impl FnOnce(&mut C, &mut bool) -> Result<Vec<Result<Posted, PostError>>, StoreError>,
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
            let conn = pool.get_timeout(wait).map_err(|e| {
                writer_conn.unreachable = true;
                writer::CommitError::NoConnection(pool_err(e))
            })?;
            writer_conn.unreachable = false;
            writer_conn.chained = false;
            conn
        }
    };
    let chained = &mut writer_conn.chained;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        post(&mut conn, &mut *chained)
    }));
    match outcome {
        Ok(Ok(answers)) => {
            writer_conn.held = Some(conn);
            Ok(answers)
        }
        Ok(Err(e)) => {
            writer_conn.chained = false;
            Err(writer::CommitError::Failed(e))
        }
        Err(_) => {
            writer_conn.chained = false;
            Err(writer::CommitError::Failed(StoreError::Unavailable(
                "the ledger writer failed".into(),
            )))
        }
    }
}

/// A PostgreSQL ledger writer: its pool, the connection it keeps, and its copies of the
/// wallets it wrote (kept while it keeps the connection).
struct PostgresCommit {
    pool: Pool<ConnectionManager<PgConnection>>,
    conn: WriterConnection<ConnectionManager<PgConnection>>,
    copies: postgres::WalletCopies,
}

impl writer::Commit for PostgresCommit {
    fn commit(
        &mut self,
        postings: &[Posting],
        attempt: writer::Attempt,
    ) -> Result<Vec<Result<Posted, PostError>>, writer::CommitError> {
        let copies = &mut self.copies;
        if self.conn.held.is_none() {
            // A new connection: the database may not be the one the copies came from.
            copies.clear();
        }
        commit_on(
            &self.pool,
            &mut self.conn,
            |c: &mut PgConnection, chained| {
                match (attempt, postings) {
                    (writer::Attempt::Retry, [one]) => {
                        // A retry runs in a transaction of its own, never inside a chained one
                        // (where Diesel would make it a savepoint).
                        copies.clear();
                        postgres::end_chain(c, chained).map_err(db_err)?;
                        postgres::post_again(c, one)
                    }
                    _ => postgres::post_batch_chained(c, postings, chained, copies),
                }
            },
        )
    }

    fn idle(&mut self) {
        // `end_chain` does nothing unless a chain is open, and always clears the flag.
        if let Some(conn) = self.conn.held.as_mut()
            && postgres::end_chain(conn, &mut self.conn.chained).is_err()
        {
            // Back to the pool, which discards it (Diesel still counts its transaction).
            self.conn.held = None;
        }
        self.conn.chained = false;
    }
}

/// A PostgreSQL ledger writer's commit, on a connection of its own: each batch's
/// transaction commits with `COMMIT AND CHAIN`, which opens the next batch's in the same
/// round trip (one `BEGIN` round trip fewer a batch); the writer ends it (`ROLLBACK`,
/// nothing in it) before it waits idle.
pub(crate) fn postgres_commit(
    pool: Pool<ConnectionManager<PgConnection>>,
) -> Box<dyn writer::Commit> {
    Box::new(PostgresCommit {
        pool,
        conn: WriterConnection::new(),
        copies: postgres::WalletCopies::default(),
    })
}

/// SQLite's one ledger writer (see [`sqlite_commit`]).
struct SqliteCommit {
    pool: Pool<ConnectionManager<SqliteConnection>>,
    writer: Arc<tokio::sync::Mutex<()>>,
    checkpointer: std::sync::mpsc::SyncSender<()>,
    conn: WriterConnection<ConnectionManager<SqliteConnection>>,
}

impl writer::Commit for SqliteCommit {
    fn commit(
        &mut self,
        postings: &[Posting],
        attempt: writer::Attempt,
    ) -> Result<Vec<Result<Posted, PostError>>, writer::CommitError> {
        let _writing = self.writer.blocking_lock();
        // The log grows: a checkpointer round is due (never waits; one kick is enough).
        let _ = self.checkpointer.try_send(());
        commit_on(
            &self.pool,
            &mut self.conn,
            |c: &mut SqliteConnection, _| match (attempt, postings) {
                (writer::Attempt::Retry, [one]) => sqlite::post_again(c, one),
                _ => sqlite::post_batch(c, postings),
            },
        )
    }
}

/// SQLite's one ledger writer: owns a write connection and takes this process's writer lock
/// for each batch (the other writes queue on it too), and tells the checkpointer.
pub(crate) fn sqlite_commit(
    pool: Pool<ConnectionManager<SqliteConnection>>,
    writer: Arc<tokio::sync::Mutex<()>>,
    checkpointer: std::sync::mpsc::SyncSender<()>,
) -> Box<dyn writer::Commit> {
    Box::new(SqliteCommit {
        pool,
        writer,
        checkpointer,
        conn: WriterConnection::new(),
    })
}
