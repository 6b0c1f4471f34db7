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

/// Commits a batch on a writer's connection: one answer per posting, or `Err` when the
/// transaction failed and nothing was written.
pub(crate) type Commit =
    Box<dyn FnMut(&[Posting]) -> Result<Vec<Result<Posted, PostError>>, StoreError> + Send>;

struct Job {
    posting: Posting,
    reply: oneshot::Sender<Result<Posted, PostError>>,
}

/// The queues of the writer threads. Dropping it ends them (after their current batch).
pub(crate) struct LedgerWriter {
    shards: Vec<SyncSender<Job>>,
}

fn unavailable(message: &str) -> PostError {
    PostError::Store(StoreError::Unavailable(message.to_owned()))
}

impl LedgerWriter {
    /// Starts `commits.len()` writer threads, one per commit function.
    pub(crate) fn start(
        options: &BatchOptions,
        commits: Vec<Commit>,
    ) -> std::io::Result<LedgerWriter> {
        let mut shards = Vec::with_capacity(commits.len());
        for (index, commit) in commits.into_iter().enumerate() {
            let (sender, receiver) = std::sync::mpsc::sync_channel(options.queue_max.max(1));
            let options = options.clone();
            std::thread::Builder::new()
                .name(format!("ledger-writer-{index}"))
                .spawn(move || run(&receiver, &options, commit))?;
            shards.push(sender);
        }
        Ok(LedgerWriter { shards })
    }

    /// Queues `posting` on its wallet's writer and waits for its answer (after the commit).
    pub(crate) async fn post(&self, posting: Posting) -> Result<Posted, PostError> {
        let shard = shard_of(posting.account_id.as_str(), self.shards.len());
        let Some(queue) = self.shards.get(shard) else {
            return Err(unavailable("no ledger writer"));
        };
        let (reply, answer) = oneshot::channel();
        match queue.try_send(Job { posting, reply }) {
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

/// Takes the next batch: blocks for its first posting, then takes what has queued, waiting
/// until `batch_wait` after the first for more. `None` when the queue is closed and empty.
fn next_batch(receiver: &Receiver<Job>, options: &BatchOptions) -> Option<Vec<Job>> {
    let first = receiver.recv().ok()?;
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

/// A commit that cannot take the thread down with it.
fn guarded(
    commit: &mut Commit,
    postings: &[Posting],
) -> Result<Vec<Result<Posted, PostError>>, StoreError> {
    match catch_unwind(AssertUnwindSafe(|| commit(postings))) {
        Ok(Ok(answers)) if answers.len() == postings.len() => Ok(answers),
        Ok(Ok(_)) => Err(StoreError::Corrupt(
            "a batch answered the wrong number of postings".into(),
        )),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(StoreError::Unavailable("the ledger writer failed".into())),
    }
}

fn run(receiver: &Receiver<Job>, options: &BatchOptions, mut commit: Commit) {
    while let Some(jobs) = next_batch(receiver, options) {
        let (postings, replies): (Vec<Posting>, Vec<_>) =
            jobs.into_iter().map(|j| (j.posting, j.reply)).unzip();
        let answers = match guarded(&mut commit, &postings) {
            Ok(answers) => answers,
            Err(e) if postings.len() == 1 => vec![Err(PostError::Store(e))],
            Err(e) => {
                tracing::warn!(postings = postings.len(), error = %e, "a batch failed; posting its postings one by one");
                postings
                    .iter()
                    .map(|p| match guarded(&mut commit, std::slice::from_ref(p)) {
                        Ok(mut one) => one.pop().unwrap_or_else(|| Err(unavailable("no answer"))),
                        Err(e) => Err(PostError::Store(e)),
                    })
                    .collect()
            }
        };
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
}
