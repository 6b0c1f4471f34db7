//! A PostgreSQL ledger writer's copies of the wallets it has written: a batch whose postings
//! are all on one wallet it holds a copy of is decided against the copy, with no read and
//! no lock before the ledger statement, which then writes only if the wallet's row still
//! has the version the copy knew (docs/DECISIONS.md, "The hot wallet's writer decides from
//! its own copy"). A batch on several wallets it holds copies of locks them first, in id
//! order as every writer of several wallets does, reading only their versions.
//!
//! A copy is exact because the version moves with every change to what a posting is decided
//! against, whoever makes it (migration 000017's triggers): the row itself, the wallet's
//! holds, its auto top-up row and its saved method. A copy is taken only from a committed
//! write whose only changes to the wallet were the ledger statement's (each moves the
//! version by exactly one), so a copy's version is never ahead of the row's. Where the
//! version moved, the write changes nothing, the transaction is rolled back and the batch
//! is decided again from a read under the lock: a stale copy costs a statement, never a
//! wrong decision. Idempotency claims are not copied: a key claimed before makes the
//! statement fail on the claims' primary key, and the batch is read and decided again,
//! where the claim is found.
//!
//! A version only grows while its row lives. It would start again at 0 for an account row
//! deleted and inserted again (nothing deletes one) or a migration 000017 reverted and
//! applied again (migrations never run backwards in operation); the copies do not outlive
//! their writer's connection, which a restore or a failover replaces.

use std::collections::HashMap;

use billing_core::ports::Posting;
use billing_core::posting::WalletState;
use billing_core::time::Timestamp;

use super::{BatchState, Claims, Settled, Slot};

/// How many wallets a writer keeps copies of; past it, it forgets them all and starts again
/// (a copy is only worth keeping for a wallet that gets a batch of its own again soon).
const MAX_COPIES: usize = 4_096;

/// What a writer knows of a wallet it wrote: as it was written and committed.
struct Copy {
    state: WalletState,
    head: Option<String>,
    version: i64,
    /// Its active holds as (amount, expires_at), read since `holds_since`.
    holds: Vec<(i64, i64)>,
    holds_since: Timestamp,
}

/// A ledger writer's copies (one per writer: its own writes keep them current).
#[derive(Default)]
pub(crate) struct WalletCopies {
    copies: HashMap<String, Copy>,
    used: u64,
    stale: u64,
    moved: u64,
}

/// What became of a batch's copies.
#[derive(Clone, Copy)]
pub(crate) enum Outcome {
    /// Written as decided from them.
    Used,
    /// Stale (or a key claimed before): found by the write, rolled back, read again.
    Stale,
    /// Stale, found under the locks before anything was written: read in the same
    /// transaction (a batch on several wallets).
    Moved,
}

impl WalletCopies {
    /// What `postings` are decided against without a read: when the writer holds a copy
    /// of each of their wallets, none is a refund (whose facts are read), and none is
    /// stamped before its copy's holds were read. A batch on one wallet is then written
    /// with no lock taken first; on several, the caller locks them and checks their
    /// versions before deciding (see `decide_from_copies`).
    pub(super) fn state_for(&self, postings: &[Posting]) -> Option<BatchState> {
        let mut wallets = std::collections::BTreeMap::new();
        let mut holds = super::ActiveHolds::new();
        // The holds of every copy were read since this time or earlier.
        let mut holds_since = Timestamp::from_micros(i64::MIN);
        for posting in postings {
            let id = posting.account_id.as_str();
            let copy = self.copies.get(id)?;
            if !posting.refund_of.is_empty() || posting.now < copy.holds_since {
                return None;
            }
            if wallets.contains_key(id) {
                continue;
            }
            holds_since = holds_since.max(copy.holds_since);
            if !copy.holds.is_empty() {
                holds.insert(id.to_owned(), copy.holds.clone());
            }
            let slot = Slot {
                state: copy.state.clone(),
                written: copy.state.clone(),
                head: copy.head.clone(),
                version: Some(copy.version),
                copied: true,
                updates: 0,
                only_ledger: true,
            };
            wallets.insert(id.to_owned(), slot);
        }
        if wallets.is_empty() {
            return None;
        }
        Some(BatchState {
            wallets,
            holds,
            claims: Claims::new(),
            holds_since,
        })
    }

    /// Takes copies from a committed write: of each wallet whose row's version it knows and
    /// that only the ledger statement changed; forgets the others.
    pub(super) fn settle(&mut self, settled: Settled) {
        let Settled {
            wallets,
            mut holds,
            holds_since,
        } = settled;
        for (id, slot) in wallets {
            let Some(version) = slot.version.filter(|_| slot.only_ledger) else {
                self.copies.remove(&id);
                continue;
            };
            if self.copies.len() >= MAX_COPIES && !self.copies.contains_key(&id) {
                self.copies.clear();
            }
            let copy = Copy {
                holds: holds.remove(&id).unwrap_or_default(),
                state: slot.written,
                head: slot.head,
                version: version + slot.updates,
                holds_since,
            };
            self.copies.insert(id, copy);
        }
    }

    /// Forgets a wallet's copy.
    pub(super) fn forget(&mut self, id: &str) {
        self.copies.remove(id);
    }

    /// Forgets every copy (after a failed write, or on a new connection: the database may
    /// not be the one the copies came from).
    pub(crate) fn clear(&mut self) {
        self.copies.clear();
    }

    /// Counts a committed batch that had copies of its wallets.
    pub(super) fn count(&mut self, outcome: Outcome) {
        let (counter, label) = match outcome {
            Outcome::Used => (&mut self.used, "used"),
            Outcome::Stale => (&mut self.stale, "stale"),
            Outcome::Moved => (&mut self.moved, "moved"),
        };
        *counter += 1;
        crate::metered::wallet_copy(label);
    }

    /// (batches written as decided from copies, batches whose copies the write found stale)
    #[cfg(test)]
    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.used, self.stale)
    }

    /// Batches whose copies were found stale under the locks, before anything was written.
    #[cfg(test)]
    pub(crate) fn moved(&self) -> u64 {
        self.moved
    }

    /// How many copies are held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.copies.len()
    }
}
