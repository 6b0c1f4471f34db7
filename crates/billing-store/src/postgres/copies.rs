//! A PostgreSQL ledger writer's copies of the wallets it has written: a batch whose postings
//! are all on one wallet it holds a copy of is decided against the copy, with no read and
//! no lock before the ledger statement, which then writes only if the wallet's row still
//! has the version the copy knew (docs/DECISIONS.md, "The hot wallet's writer decides from
//! its own copy").
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
}

impl WalletCopies {
    /// What `postings` are decided against without a read: when they are all on one
    /// wallet, none is a refund (whose facts are read), the writer holds a copy of it, and
    /// none is stamped before the copy's holds were read.
    pub(super) fn state_for(&self, postings: &[Posting]) -> Option<BatchState> {
        let first = postings.first()?;
        let id = first.account_id.as_str();
        let copy = self.copies.get(id)?;
        let eligible = postings.iter().all(|p| {
            p.account_id.as_str() == id && p.refund_of.is_empty() && p.now >= copy.holds_since
        });
        if !eligible {
            return None;
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
        let mut holds = super::ActiveHolds::new();
        if !copy.holds.is_empty() {
            holds.insert(id.to_owned(), copy.holds.clone());
        }
        Some(BatchState {
            wallets: std::iter::once((id.to_owned(), slot)).collect(),
            holds,
            claims: Claims::new(),
            holds_since: copy.holds_since,
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

    /// Counts a committed batch that was decided from a copy: written as decided, or
    /// decided again from a read because the copy was stale.
    pub(super) fn count(&mut self, used: bool) {
        if used {
            self.used += 1;
        } else {
            self.stale += 1;
        }
        crate::metered::wallet_copy(used);
    }

    /// (batches written as decided from a copy, batches whose copy was stale)
    #[cfg(test)]
    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.used, self.stale)
    }

    /// How many copies are held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.copies.len()
    }
}
