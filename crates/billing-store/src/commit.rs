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
pub(crate) fn postgres_commit(pool: Pool<ConnectionManager<PgConnection>>) -> writer::Commit {
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
pub(crate) fn sqlite_commit(
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
