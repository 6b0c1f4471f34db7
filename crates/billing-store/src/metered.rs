//! What the store counts, through the `metrics` facade (nothing is kept unless the program
//! installed a recorder; `billing-http` renders them at `/metrics`). Only what committed is
//! counted: every count below follows a successful transaction (timings are recorded as
//! they are taken).

use std::time::Duration;

use billing_core::ledger::LedgerEntry;
use billing_core::ports::{PostError, Posted};

/// Ledger entries written, by `type` and `direction` (`credit` or `debit`).
pub const LEDGER_ENTRIES: &str = "billing_ledger_entries_total";
/// Their absolute amounts, in ledger units (10^-9 of the wallet unit), by `type` and
/// `direction`: exact integers, where a float sum would drift.
pub const LEDGER_AMOUNT_UNITS: &str = "billing_ledger_amount_units_total";
/// Top-ups by `gateway` and `status`: `created` (the payment started with the gateway: a
/// checkout created, or an auto top-up charged), then `completed` or `failed`.
pub const TOPUPS: &str = "billing_topups_total";
/// Postings per ledger-writer transaction (group commit): one sample per batch's first try,
/// failed or not (a failed batch's postings are then posted one by one, uncounted here).
pub const LEDGER_BATCH_POSTINGS: &str = "billing_ledger_batch_postings";
/// How long a batch's first try took (waiting for the writer lock and a connection,
/// deciding, writing, committing; or failing), in seconds: every posting of the batch waited
/// at least this long.
pub const LEDGER_BATCH_SECONDS: &str = "billing_ledger_batch_seconds";
/// Where each posting transaction's time went (a ledger writer's batch, a posting alone, or
/// a failed batch's posting retried alone; not top-up settles or hold captures), by `phase`,
/// in seconds: `read` (its wallets locked, and what its postings are decided against read:
/// state, holds, claims, a refund's facts), `decide` (billing-core's rules, the hash chain,
/// the rows and their checks), `write` (the statements that insert and update), `commit`
/// (on PostgreSQL's writers, `COMMIT AND CHAIN`, which also opens the next batch's
/// transaction; a transaction's own `BEGIN`, and SQLite's wait for the write lock, are in no
/// phase). One sample a phase for a transaction that committed; one that failed records
/// nothing, unless its `COMMIT` failed: then the first three, and each of its postings'
/// retries records its own four, or only `commit` when it finds the posting's entries
/// written after all. Divided by the writers' postings (`billing_ledger_batch_postings_sum`),
/// the sums show what each posting cost its writer; refunds (posted alone) and retries are
/// in the sums but not in that count, so the quotient is exact for a workload of debits.
pub const LEDGER_PHASE_SECONDS: &str = "billing_ledger_posting_phase_seconds";
/// SQLite: how long each checkpointer round held the writer lock (its last pass), in
/// seconds: every write of the process waited behind it.
pub const SQLITE_CHECKPOINT_LOCK_SECONDS: &str = "billing_sqlite_checkpoint_lock_seconds";
/// PostgreSQL's batches decided from their writer's copies of their wallets, by `outcome`:
/// `used` (written as decided), `stale` (the write found a wallet changed, or a key was
/// claimed before: rolled back and decided again from a read) or `moved` (a batch on
/// several wallets found one changed when it locked them, before writing: read in the same
/// transaction). Counted once the batch committed.
pub const LEDGER_WALLET_COPIES: &str = "billing_ledger_wallet_copies_total";
/// How long taking a database connection from the pool waited, in seconds.
pub const POOL_WAIT_SECONDS: &str = "billing_db_pool_wait_seconds";

pub(crate) fn entries_written<'a>(entries: impl IntoIterator<Item = &'a LedgerEntry>) {
    for entry in entries {
        let value = entry.amount.value();
        let direction = if value.is_sign_negative() {
            "debit"
        } else {
            "credit"
        };
        let kind = entry.kind.as_str();
        metrics::counter!(LEDGER_ENTRIES, "type" => kind, "direction" => direction).increment(1);
        if let Ok(units) = entry.amount.to_units() {
            metrics::counter!(LEDGER_AMOUNT_UNITS, "type" => kind, "direction" => direction)
                .increment(units.unsigned_abs());
        }
    }
}

/// A posting's answer: its entries count unless it was a replay or was refused.
pub(crate) fn posted(answer: &Result<Posted, PostError>) {
    if let Ok(posted) = answer
        && !posted.replayed
    {
        entries_written(&posted.entries);
    }
}

pub(crate) fn topup(gateway: &str, status: &'static str) {
    metrics::counter!(TOPUPS, "gateway" => gateway.to_owned(), "status" => status).increment(1);
}

pub(crate) fn pool_wait(waited: Duration) {
    metrics::histogram!(POOL_WAIT_SECONDS).record(waited.as_secs_f64());
}

pub(crate) fn batch(postings: usize, took: Duration) {
    metrics::histogram!(LEDGER_BATCH_POSTINGS).record(postings as f64);
    metrics::histogram!(LEDGER_BATCH_SECONDS).record(took.as_secs_f64());
}

pub(crate) fn phase(phase: &'static str, took: Duration) {
    metrics::histogram!(LEDGER_PHASE_SECONDS, "phase" => phase).record(took.as_secs_f64());
}

pub(crate) fn wallet_copy(outcome: &'static str) {
    metrics::counter!(LEDGER_WALLET_COPIES, "outcome" => outcome).increment(1);
}

pub(crate) fn checkpoint_lock(held: Duration) {
    metrics::histogram!(SQLITE_CHECKPOINT_LOCK_SECONDS).record(held.as_secs_f64());
}
