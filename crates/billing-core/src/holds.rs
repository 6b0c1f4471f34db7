//! Authorization holds: a reservation of the most a call can cost, settled by a capture of
//! the actual cost (the rest released), a release, or expiry.
//!
//! The available balance is the balance less every active, unexpired hold; every debit and
//! every new hold (or increase) is checked against it under the wallet's lock, by the pure
//! decisions here and [`crate::ledger::plan_posting`].
//!
//! `active → captured | released | expired`; nothing leaves the last three. A hold whose
//! `expires_at` has passed counts as expired at once, whatever its stored status says,
//! until a worker writes it down.

use std::fmt;
use std::str::FromStr;

use crate::ids::{AccountId, EntryId, HoldId};
use crate::ledger::{EntryKind, LedgerEntry, NewEntry, PostingRuleError, plan_posting};
use crate::money::Credits;
use crate::pricing::Rate;
use crate::time::Timestamp;

/// Default life of a hold, in seconds.
pub const HOLD_EXPIRY_DEFAULT_SECS: i64 = 600;
/// Longest life a hold may be given at once (an extend may renew it).
pub const HOLD_EXPIRY_MAX_SECS: i64 = 86_400;

/// Where a hold stands: `active`, then `captured`, `released` or `expired`, which are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HoldStatus {
    /// Reserves its amount until it is settled or its `expires_at` passes.
    Active,
    /// Settled by a capture: the captured amount was debited, the rest released.
    Captured,
    /// Released without a debit.
    Released,
    /// Its `expires_at` passed before it was settled; it reserves nothing.
    Expired,
}

impl HoldStatus {
    /// The wire and storage name (`active`, `captured`, `released`, `expired`).
    pub fn as_str(self) -> &'static str {
        match self {
            HoldStatus::Active => "active",
            HoldStatus::Captured => "captured",
            HoldStatus::Released => "released",
            HoldStatus::Expired => "expired",
        }
    }
}

impl fmt::Display for HoldStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HoldStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<HoldStatus, String> {
        [
            HoldStatus::Active,
            HoldStatus::Captured,
            HoldStatus::Released,
            HoldStatus::Expired,
        ]
        .into_iter()
        .find(|h| h.as_str() == s)
        .ok_or_else(|| format!("unknown hold status {s:?}"))
    }
}

/// A hold as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The hold's id (`hold_…`).
    pub id: HoldId,
    /// The account whose balance it reserves.
    pub account_id: AccountId,
    /// What is reserved: the most the call may cost.
    pub amount: Credits,
    /// The stored status; [`Hold::status_at`] tells the status at a given instant.
    pub status: HoldStatus,
    /// Set by a capture.
    pub captured_amount: Option<Credits>,
    /// The usage entry a capture wrote (none for a capture of zero).
    pub entry_id: Option<EntryId>,
    /// For a hold placed by model and tokens: the prices it was placed at, which a capture
    /// by tokens uses.
    pub rate: Option<Rate>,
    /// When it was placed.
    pub created_at: Timestamp,
    /// When it stops reserving, unless settled or extended first.
    pub expires_at: Timestamp,
    /// When it last changed (placed, captured, released or extended).
    pub updated_at: Timestamp,
}

impl Hold {
    /// The status as of `now`: an active hold past its expiry is expired.
    pub fn status_at(&self, now: Timestamp) -> HoldStatus {
        match self.status {
            HoldStatus::Active if self.expires_at <= now => HoldStatus::Expired,
            status => status,
        }
    }

    /// Whether it still reserves its amount at `now`.
    pub fn reserves_at(&self, now: Timestamp) -> bool {
        self.status_at(now) == HoldStatus::Active
    }
}

/// The sum reserved by `holds` at `now`.
pub fn reserved_at<'a>(
    holds: impl IntoIterator<Item = &'a Hold>,
    now: Timestamp,
) -> Result<Credits, PostingRuleError> {
    Credits::sum(
        holds
            .into_iter()
            .filter(|h| h.reserves_at(now))
            .map(|h| h.amount),
    )
    .map_err(|_| PostingRuleError::Overflow)
}

/// What to do to a hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldAction {
    /// Settle: debit `amount` (at most the hold's) as the `usage` entry given (amount
    /// negated; `None` for a capture of zero), release the rest.
    Capture {
        /// What to debit; at most the hold's amount.
        amount: Credits,
        /// The `usage` entry to write; `None` for a capture of zero.
        entry: Option<NewEntry>,
    },
    /// Settle without a debit: the whole amount is released.
    Release,
    /// Keep it alive until `expires_at`; `amount`, when given, is the new total (an increase
    /// is checked against the available balance).
    Extend {
        /// The new expiry.
        expires_at: Timestamp,
        /// The new total reserved, or `None` to keep the current amount.
        amount: Option<Credits>,
    },
}

/// Why a hold operation was refused. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HoldRuleError {
    /// The hold is no longer active (its status as of now).
    #[error("the hold is {0}, not active")]
    NotActive(HoldStatus),
    /// A capture asked for more than the hold reserves.
    #[error("capture of {requested} exceeds the {held} held")]
    CaptureExceedsHold {
        /// What the hold reserves.
        held: Credits,
        /// What the capture asked for.
        requested: Credits,
    },
    /// A capture's entry or an extend was refused by the ledger's rules (insufficient funds,
    /// overflow, …).
    #[error(transparent)]
    Posting(#[from] PostingRuleError),
}

/// A new hold of `amount` on a wallet of `balance` of which `reserved` is held: refused when
/// it exceeds the available balance.
pub fn check_new_hold(
    balance: Credits,
    reserved: Credits,
    amount: Credits,
) -> Result<(), PostingRuleError> {
    let available = balance
        .checked_sub(reserved)
        .map_err(|_| PostingRuleError::Overflow)?;
    if amount > available {
        return Err(PostingRuleError::InsufficientFunds {
            available: available.max(Credits::ZERO),
            requested: amount,
        });
    }
    Ok(())
}

/// The hold after an action, and the entries to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldChange {
    /// The hold to store: new status, amounts, expiry and `updated_at`.
    pub hold: Hold,
    /// The entries to append: a capture's `usage` entry, else none.
    pub entries: Vec<LedgerEntry>,
}

/// The pure decision every store applies to a hold it has locked with its wallet:
/// `balance` is the wallet's, `reserved` the sum of every active hold of it at `now`
/// (this one included).
pub fn decide_hold(
    hold: &Hold,
    action: &HoldAction,
    balance: Credits,
    reserved: Credits,
    now: Timestamp,
) -> Result<HoldChange, HoldRuleError> {
    let status = hold.status_at(now);
    if status != HoldStatus::Active {
        return Err(HoldRuleError::NotActive(status));
    }
    let mut next = hold.clone();
    next.updated_at = now;
    let mut entries = Vec::new();
    match action {
        HoldAction::Capture { amount, entry } => {
            if *amount > hold.amount {
                return Err(HoldRuleError::CaptureExceedsHold {
                    held: hold.amount,
                    requested: *amount,
                });
            }
            if let Some(entry) = entry {
                // The hold's own reservation is what pays: only the others stay reserved.
                let others = reserved
                    .checked_sub(hold.amount)
                    .map_err(|_| PostingRuleError::Overflow)?;
                entries = plan_posting(
                    &hold.account_id,
                    balance,
                    others,
                    std::slice::from_ref(entry),
                    now,
                )?;
                debug_assert!(entries.iter().all(|e| e.kind == EntryKind::Usage));
                next.entry_id = Some(entry.id.clone());
            }
            next.status = HoldStatus::Captured;
            next.captured_amount = Some(*amount);
        }
        HoldAction::Release => next.status = HoldStatus::Released,
        HoldAction::Extend { expires_at, amount } => {
            // The whole hold must fit what the others leave: for an increase that is the
            // increase checked against the available balance, and it also refuses to revive
            // a hold whose expiry others have already spent against (an extend decided with
            // a clock read before the lock).
            let total = amount.unwrap_or(hold.amount);
            let others = reserved
                .checked_sub(hold.amount)
                .map_err(|_| PostingRuleError::Overflow)?;
            check_new_hold(balance, others, total)?;
            next.amount = total;
            next.expires_at = *expires_at;
        }
    }
    Ok(HoldChange {
        hold: next,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cr(s: &str) -> Credits {
        s.parse().expect("credits")
    }

    fn hold(amount: &str) -> Hold {
        Hold {
            id: HoldId::new("hold_1"),
            account_id: AccountId::new("acct_1"),
            amount: cr(amount),
            status: HoldStatus::Active,
            captured_amount: None,
            entry_id: None,
            rate: None,
            created_at: Timestamp::from_secs(100),
            expires_at: Timestamp::from_secs(700),
            updated_at: Timestamp::from_secs(100),
        }
    }

    fn usage(amount: &str) -> NewEntry {
        NewEntry {
            id: EntryId::new("txn_1"),
            kind: EntryKind::Usage,
            amount: cr(amount).negated(),
            description: "x".into(),
            reference: Some("hold_1".into()),
            usage: None,
        }
    }

    #[test]
    fn new_holds_fit_the_available_balance() {
        assert_eq!(check_new_hold(cr("10"), cr("4"), cr("6")), Ok(()));
        assert_eq!(
            check_new_hold(cr("10"), cr("4"), cr("6.000000001")),
            Err(PostingRuleError::InsufficientFunds {
                available: cr("6"),
                requested: cr("6.000000001")
            })
        );
    }

    #[test]
    fn the_lifecycle_as_a_table() {
        let now = Timestamp::from_secs(200);
        let h = hold("5");
        let capture = |amount: &str| HoldAction::Capture {
            amount: cr(amount),
            entry: Some(usage(amount)),
        };
        // Capture: at most the hold; the rest is released; the entry is planned against the
        // balance less the other holds.
        let change = decide_hold(&h, &capture("3"), cr("5"), cr("5"), now).expect("capture");
        assert_eq!(change.hold.status, HoldStatus::Captured);
        assert_eq!(change.hold.captured_amount, Some(cr("3")));
        assert_eq!(change.entries[0].balance_after, cr("2"));
        assert_eq!(
            decide_hold(&h, &capture("5.000000001"), cr("9"), cr("5"), now),
            Err(HoldRuleError::CaptureExceedsHold {
                held: cr("5"),
                requested: cr("5.000000001")
            })
        );
        // Extend: only an increase is checked against what is available.
        let extend = |amount: Option<&str>| HoldAction::Extend {
            expires_at: Timestamp::from_secs(900),
            amount: amount.map(cr),
        };
        let longer = decide_hold(&h, &extend(None), cr("5"), cr("5"), now).expect("extend");
        assert_eq!(longer.hold.expires_at, Timestamp::from_secs(900));
        assert!(decide_hold(&h, &extend(Some("6")), cr("5"), cr("5"), now).is_err());
        // Others spent what this hold held (its expiry seen by them, not by this extend):
        // it is not revived.
        assert!(decide_hold(&h, &extend(None), cr("5"), cr("10"), now).is_err());
        let bigger = decide_hold(&h, &extend(Some("6")), cr("6"), cr("5"), now).expect("grow");
        assert_eq!(bigger.hold.amount, cr("6"));
        // Nothing leaves a final state, and an expired hold is expired already.
        for status in [
            HoldStatus::Captured,
            HoldStatus::Released,
            HoldStatus::Expired,
        ] {
            let done = Hold {
                status,
                ..h.clone()
            };
            for action in [capture("1"), HoldAction::Release, extend(None)] {
                assert_eq!(
                    decide_hold(&done, &action, cr("5"), cr("0"), now),
                    Err(HoldRuleError::NotActive(status))
                );
            }
        }
        let late = Timestamp::from_secs(700);
        assert_eq!(
            decide_hold(&h, &HoldAction::Release, cr("5"), cr("5"), late),
            Err(HoldRuleError::NotActive(HoldStatus::Expired))
        );
        assert!(!h.reserves_at(late));
        assert_eq!(reserved_at([&h, &hold("2")], now), Ok(cr("7")));
        assert_eq!(reserved_at([&h], late), Ok(cr("0")));
    }
}
