//! The ledger writer: group commit of postings.
//!
//! Postings are sharded by wallet over a few writer threads, each with a bounded queue and
//! a connection of its own. A writer takes what has queued (at most `batch_max` postings,
//! waiting at most `batch_wait` after the first for more), decides and writes them in one
//! transaction (`post_batch`: every posting still decided by billing-core's rules, in
//! arrival order, against its wallet's state), and answers each caller only after the
//! commit. A batch whose transaction fails is retried posting by posting, so that one bad
//! posting never fails its neighbours. A full queue answers at once with
//! `StoreError::Unavailable` (the HTTP shell's `503` with `Retry-After`): memory stays
//! bounded under overload. Idle writers block on their queue; nothing polls.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::time::{Duration, Instant};

use billing_core::ports::{PostError, Posted, Posting, StoreError};
use tokio::sync::oneshot;

/// How postings are batched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchOptions {
    /// Writer threads, each with its own connection and queue; a wallet always goes to the
    /// same one. SQLite has one writer whatever this says.
    pub shards: usize,
    /// Most postings in one transaction.
    pub batch_max: usize,
    /// How long a writer waits, after a batch's first posting, for more (zero: it takes what
    /// has queued while the previous batch committed).
    pub batch_wait: Duration,
    /// Postings a shard's queue holds; past it, `Unavailable` at once.
    pub queue_max: usize,
}

impl Default for BatchOptions {
    fn default() -> BatchOptions {
        BatchOptions {
            shards: 2,
            batch_max: 256,
            batch_wait: Duration::ZERO,
            queue_max: 4096,
        }
    }
}

/// How a batch is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// The first try.
    First,
    /// A posting of a failed batch, alone: the failed batch may have committed after all
    /// (an error on `COMMIT`), so a posting whose entries exist is answered from them.
    Retry,
}

/// Why a batch's transaction did not answer.
#[derive(Debug)]
pub(crate) enum CommitError {
    /// No connection could be had: nothing was tried, and retrying at once is pointless.
    NoConnection(StoreError),
    /// The transaction failed (a statement, the connection, or a panic); nothing of it was
    /// written unless the failure was on `COMMIT`.
    Failed(StoreError),
}

/// Commits batches on a writer's connection.
pub(crate) trait Commit: Send {
    /// Commits a batch: one answer per posting.
    fn commit(
        &mut self,
        postings: &[Posting],
        attempt: Attempt,
    ) -> Result<Vec<Result<Posted, PostError>>, CommitError>;

    /// The writer is about to block, no posting having come for `IDLE_AFTER`: ends whatever
    /// the last commit held open for the next batch (PostgreSQL's chained transaction), so that
    /// nothing stays open while the writer is idle.
    fn idle(&mut self) {}
}

/// A posting that waited longer than this in a queue is answered `Unavailable` without
/// being written (its caller has likely given up; its retry with the same key is safe).
const QUEUED_MAX: Duration = Duration::from_secs(20);

struct Job {
    posting: Posting,
    reply: oneshot::Sender<Result<Posted, PostError>>,
    queued_at: Instant,
}

/// What the ledger writers have done: batches committed (or tried), postings in them, and
/// batches whose transaction failed and were posted one by one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LedgerStats {
    /// Batches committed or tried, since the store was opened.
    pub batches: u64,
    /// Postings in them.
    pub postings: u64,
    /// Batches whose transaction failed, then posted one posting at a time.
    pub failed_batches: u64,
}

#[derive(Debug, Default)]
struct Counters {
    batches: AtomicU64,
    postings: AtomicU64,
    failed: AtomicU64,
}

/// The queues of the writer threads. Closing it (or dropping it) ends them once each has
/// committed what was queued, and waits, up to `STOP_WAIT`, until each has closed its
/// connection.
pub(crate) struct LedgerWriter {
    /// Empty once closed: a posting then answers `Unavailable`.
    shards: std::sync::RwLock<Vec<SyncSender<Job>>>,
    threads: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
    counters: Arc<Counters>,
}

/// How long closing the writers waits for them to end (what was queued, then closing the
/// connection); past it, a writer stuck on an unreachable database is left running.
const STOP_WAIT: Duration = Duration::from_secs(5);

impl Drop for LedgerWriter {
    fn drop(&mut self) {
        self.close();
    }
}

fn unavailable(message: &str) -> PostError {
    PostError::Store(StoreError::Unavailable(message.to_owned()))
}

impl LedgerWriter {
    /// Starts `commits.len()` writer threads, one per commit function.
    pub(crate) fn start(
        options: &BatchOptions,
        commits: Vec<Box<dyn Commit>>,
    ) -> std::io::Result<LedgerWriter> {
        let mut shards = Vec::with_capacity(commits.len());
        let mut threads = Vec::with_capacity(commits.len());
        let counters = Arc::new(Counters::default());
        for (index, commit) in commits.into_iter().enumerate() {
            let (sender, receiver) = std::sync::mpsc::sync_channel(options.queue_max.max(1));
            let options = options.clone();
            let counters = counters.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("ledger-writer-{index}"))
                    .spawn(move || run(&receiver, &options, commit, &counters))?,
            );
            shards.push(sender);
        }
        Ok(LedgerWriter {
            shards: std::sync::RwLock::new(shards),
            threads: std::sync::Mutex::new(threads),
            counters,
        })
    }

    /// Closes the queues and waits (up to `STOP_WAIT`) until every writer has committed
    /// what was queued and closed its connection, so that no connection is still closing
    /// when the process exits (a thread closing a TLS connection while the exit handlers
    /// free OpenSSL's state can crash the exit). Postings after it answer `Unavailable`.
    /// Blocks: call it from a blocking context.
    pub(crate) fn close(&self) {
        drop(std::mem::take(
            &mut *self
                .shards
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        ));
        let threads = std::mem::take(
            &mut *self
                .threads
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let deadline = Instant::now() + STOP_WAIT;
        for thread in threads {
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            if thread.is_finished() {
                let _ = thread.join();
            } else {
                tracing::warn!(waited = ?STOP_WAIT, "a ledger writer did not stop in time; leaving it");
            }
        }
    }

    pub(crate) fn stats(&self) -> LedgerStats {
        LedgerStats {
            batches: self.counters.batches.load(Ordering::Relaxed),
            postings: self.counters.postings.load(Ordering::Relaxed),
            failed_batches: self.counters.failed.load(Ordering::Relaxed),
        }
    }

    /// Counts a batch posted one by one outside the writers (`post_batch`).
    pub(crate) fn count_failed_batch(&self) {
        self.counters.failed.fetch_add(1, Ordering::Relaxed);
    }

    /// Queues `posting` on its wallet's writer and waits for its answer (after the commit).
    pub(crate) async fn post(&self, posting: Posting) -> Result<Posted, PostError> {
        let (reply, answer) = oneshot::channel();
        let sent = {
            let shards = self
                .shards
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let shard = shard_of(posting.account_id.as_str(), shards.len());
            let Some(queue) = shards.get(shard) else {
                return Err(unavailable("the ledger writers are closed"));
            };
            queue.try_send(Job {
                posting,
                reply,
                queued_at: Instant::now(),
            })
        };
        match sent {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(unavailable(
                    "the ledger writer's queue is full; retry shortly",
                ));
            }
            Err(TrySendError::Disconnected(_)) => return Err(unavailable("ledger writer stopped")),
        }
        answer
            .await
            .unwrap_or_else(|_| Err(unavailable("ledger writer stopped")))
    }
}

/// FNV-1a of the account id: a wallet's postings always queue on one writer, in order.
fn shard_of(account_id: &str, shards: usize) -> usize {
    let hash = account_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    usize::try_from(hash % shards.max(1) as u64).unwrap_or(0)
}

/// How long a writer with an empty queue waits for a posting before it tells its commit it
/// is idle: a posting that comes meanwhile (at a moderate rate, most do) is committed in the
/// transaction the last batch left open, with no `ROLLBACK` and `BEGIN` round trips between.
const IDLE_AFTER: Duration = Duration::from_millis(20);

/// Takes the next batch: its first posting (telling `commit` it is idle when none has come
/// within `IDLE_AFTER`, then blocking for one), then what has queued, waiting until `batch_wait` after
/// the first for more. `None` when the queue is closed and empty.
fn next_batch(
    receiver: &Receiver<Job>,
    options: &BatchOptions,
    commit: &mut dyn Commit,
) -> Option<Vec<Job>> {
    let first = match receiver.recv_timeout(IDLE_AFTER) {
        Ok(job) => job,
        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
            // A panic here has nothing to answer: the next commit finds out what is left.
            let _ = catch_unwind(AssertUnwindSafe(|| commit.idle()));
            receiver.recv().ok()?
        }
    };
    let deadline = Instant::now() + options.batch_wait;
    let mut jobs = vec![first];
    while jobs.len() < options.batch_max {
        match receiver.try_recv() {
            Ok(job) => jobs.push(job),
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                match receiver.recv_timeout(deadline - now) {
                    Ok(job) => jobs.push(job),
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                }
            }
        }
    }
    Some(jobs)
}

/// A commit that cannot take the thread down with it, and whose answer has one answer per
/// posting.
fn guarded(
    commit: &mut dyn Commit,
    postings: &[Posting],
    attempt: Attempt,
) -> Result<Vec<Result<Posted, PostError>>, CommitError> {
    match catch_unwind(AssertUnwindSafe(|| commit.commit(postings, attempt))) {
        Ok(Ok(answers)) if answers.len() == postings.len() => Ok(answers),
        // Committed or not, nothing is known of each posting: never retried.
        Ok(Ok(_)) => Ok(postings
            .iter()
            .map(|_| {
                Err(PostError::Store(StoreError::Corrupt(
                    "a batch answered the wrong number of postings".into(),
                )))
            })
            .collect()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(CommitError::Failed(StoreError::Unavailable(
            "the ledger writer failed".into(),
        ))),
    }
}

/// Answers a batch: committed together, or (when its transaction failed) each posting
/// alone on a fresh connection, so that one bad posting fails no neighbour.
fn answer(
    commit: &mut dyn Commit,
    postings: &[Posting],
    counters: &Counters,
) -> Vec<Result<Posted, PostError>> {
    counters.batches.fetch_add(1, Ordering::Relaxed);
    counters
        .postings
        .fetch_add(postings.len() as u64, Ordering::Relaxed);
    let started = Instant::now();
    let first = guarded(commit, postings, Attempt::First);
    // Every first try counts, a failed one (or one that waited for a connection) included:
    // its postings waited that long.
    crate::metered::batch(postings.len(), started.elapsed());
    let failed = match first {
        Ok(answers) => return answers,
        Err(CommitError::NoConnection(e)) => {
            return postings
                .iter()
                .map(|_| Err(PostError::Store(e.clone())))
                .collect();
        }
        Err(CommitError::Failed(e)) => e,
    };
    counters.failed.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(postings = postings.len(), error = %failed, "a ledger batch failed; posting its postings one by one");
    let mut answers = Vec::with_capacity(postings.len());
    let mut down = None;
    for posting in postings {
        if let Some(e) = &down {
            answers.push(Err(PostError::Store(StoreError::clone(e))));
            continue;
        }
        answers.push(
            match guarded(commit, std::slice::from_ref(posting), Attempt::Retry) {
                Ok(mut one) => one.pop().unwrap_or_else(|| Err(unavailable("no answer"))),
                Err(CommitError::NoConnection(e)) => {
                    down = Some(e.clone());
                    Err(PostError::Store(e))
                }
                Err(CommitError::Failed(e)) => Err(PostError::Store(e)),
            },
        );
    }
    answers
}

fn run(
    receiver: &Receiver<Job>,
    options: &BatchOptions,
    mut commit: Box<dyn Commit>,
    counters: &Counters,
) {
    while let Some(jobs) = next_batch(receiver, options, commit.as_mut()) {
        let (fresh, stale): (Vec<Job>, Vec<Job>) = jobs
            .into_iter()
            .partition(|j| j.queued_at.elapsed() < QUEUED_MAX);
        for job in stale {
            let _ = job.reply.send(Err(unavailable(
                "the posting waited too long for the ledger writer; retry with the same key",
            )));
        }
        if fresh.is_empty() {
            continue;
        }
        let (postings, replies): (Vec<Posting>, Vec<_>) =
            fresh.into_iter().map(|j| (j.posting, j.reply)).unzip();
        let answers = answer(commit.as_mut(), &postings, counters);
        for (reply, answer) in replies.into_iter().zip(answers) {
            // A caller that stopped waiting still had its posting committed.
            let _ = reply.send(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wallet_always_goes_to_one_shard_and_shards_are_used() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..100 {
            let id = format!("acct_{i}");
            assert_eq!(shard_of(&id, 4), shard_of(&id, 4));
            seen.insert(shard_of(&id, 4));
        }
        assert_eq!(seen.len(), 4);
        assert_eq!(shard_of("acct_x", 1), 0);
    }

    /// A commit whose connection takes a while to close, and says when it has.
    struct SlowToClose(Arc<std::sync::atomic::AtomicBool>);

    impl Commit for SlowToClose {
        fn commit(
            &mut self,
            _postings: &[Posting],
            _attempt: Attempt,
        ) -> Result<Vec<Result<Posted, PostError>>, CommitError> {
            Err(CommitError::Failed(StoreError::Unavailable(
                "unused".into(),
            )))
        }
    }

    impl Drop for SlowToClose {
        fn drop(&mut self) {
            std::thread::sleep(Duration::from_millis(100));
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// A commit that tells the size of each batch as it starts, waits to be let go, then
    /// answers every posting and counts them.
    struct Gated {
        started: std::sync::mpsc::Sender<usize>,
        go: std::sync::mpsc::Receiver<()>,
        committed: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Commit for Gated {
        fn commit(
            &mut self,
            postings: &[Posting],
            _attempt: Attempt,
        ) -> Result<Vec<Result<Posted, PostError>>, CommitError> {
            let _ = self.started.send(postings.len());
            let _ = self.go.recv_timeout(Duration::from_secs(10));
            self.committed.fetch_add(postings.len(), Ordering::SeqCst);
            Ok(postings
                .iter()
                .map(|_| {
                    Ok(Posted {
                        entries: Vec::new(),
                        replayed: false,
                    })
                })
                .collect())
        }
    }

    fn posting(n: u32) -> Posting {
        Posting {
            account_id: billing_core::ids::AccountId::new(format!("acct_{n}")),
            entries: Vec::new(),
            idempotency: None,
            refund_of: Vec::new(),
            now: billing_core::time::Timestamp::from_micros(0),
        }
    }

    type Answer = std::pin::Pin<Box<dyn Future<Output = Result<Posted, PostError>> + Send>>;

    /// A posting queued on `writer` (its first poll queues it) and its answer to come.
    fn queue(writer: &Arc<LedgerWriter>, n: u32) -> Answer {
        let writer = writer.clone();
        let mut answer: Answer = Box::pin(async move { writer.post(posting(n)).await });
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(answer.as_mut().poll(&mut context).is_pending());
        answer
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn closing_commits_what_was_queued_then_refuses_postings() {
        let (started_tx, started) = std::sync::mpsc::channel();
        let (go, go_rx) = std::sync::mpsc::channel();
        let committed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let commits: Vec<Box<dyn Commit>> = vec![Box::new(Gated {
            started: started_tx,
            go: go_rx,
            committed: committed.clone(),
        })];
        let writer =
            Arc::new(LedgerWriter::start(&BatchOptions::default(), commits).expect("start"));
        let mut answers = vec![queue(&writer, 0)];
        // The first batch is in flight, held; 19 more queue behind it.
        let first = started.recv_timeout(Duration::from_secs(10));
        assert_eq!(first, Ok(1));
        answers.extend((1..20).map(|n| queue(&writer, n)));
        let closing = writer.clone();
        let mut closed = tokio::task::spawn_blocking(move || closing.close());
        // Not closed while the batch in flight is held.
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut closed)
                .await
                .is_err(),
            "closed with a batch in flight"
        );
        go.send(()).expect("go");
        go.send(()).expect("go");
        closed.await.expect("close");
        // Closed only once what was queued was committed, in one more batch, and answered.
        assert_eq!(started.try_recv(), Ok(19));
        assert_eq!(committed.load(Ordering::SeqCst), 20);
        for answer in answers {
            assert!(answer.await.is_ok());
        }
        assert!(matches!(
            writer.post(posting(99)).await,
            Err(PostError::Store(StoreError::Unavailable(_)))
        ));
    }

    #[test]
    fn dropping_the_writers_waits_until_their_connections_are_closed() {
        let closed: Vec<_> = (0..2)
            .map(|_| Arc::new(std::sync::atomic::AtomicBool::new(false)))
            .collect();
        let commits: Vec<Box<dyn Commit>> = closed
            .iter()
            .map(|flag| Box::new(SlowToClose(flag.clone())) as Box<dyn Commit>)
            .collect();
        let writer = LedgerWriter::start(&BatchOptions::default(), commits).expect("start");
        drop(writer);
        for flag in &closed {
            assert!(
                flag.load(Ordering::SeqCst),
                "a writer's connection was still open"
            );
        }
    }
}
