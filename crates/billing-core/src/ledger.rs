//! The append-only ledger and the pure decisions that guard it.
//!
//! Invariants (checked here, where entries are planned, and again by the stores' contract
//! suite where they are read):
//! - `balance == sum(amounts)` and each entry's `balance_after` is the running sum;
//! - no posting takes a balance below zero;
//! - entries are never updated or deleted.

use std::fmt;
use std::str::FromStr;

use crate::ids::{AccountId, EntryId};
use crate::money::{AmountError, Credits};
use crate::pricing::UsageDetail;
use crate::time::Timestamp;

/// What a ledger entry is. The sign of its amount follows from the kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Credits bought through a payment (positive).
    TopUp,
    /// Credits spent on an API call (negative).
    Usage,
    /// Credits given back for usage entries, by an admin (positive).
    Refund,
    /// Promotional credits: top-up bonus or admin grant (positive).
    Bonus,
    /// Admin correction, either sign.
    Adjustment,
}

impl EntryKind {
    /// Every kind, in declaration order (what parsing tries).
    pub const ALL: [EntryKind; 5] = [
        EntryKind::TopUp,
        EntryKind::Usage,
        EntryKind::Refund,
        EntryKind::Bonus,
        EntryKind::Adjustment,
    ];

    /// The wire and storage name (`topup`, `usage`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::TopUp => "topup",
            EntryKind::Usage => "usage",
            EntryKind::Refund => "refund",
            EntryKind::Bonus => "bonus",
            EntryKind::Adjustment => "adjustment",
        }
    }

    fn sign_is_valid(self, amount: Credits) -> bool {
        match self {
            EntryKind::Usage => amount.is_negative(),
            EntryKind::Adjustment => !amount.value().is_zero(),
            EntryKind::TopUp | EntryKind::Refund | EntryKind::Bonus => amount.is_positive(),
        }
    }
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A kind name that is none of [`EntryKind::ALL`]; holds the text as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown entry type {0:?}")]
pub struct UnknownEntryKindError(pub String);

impl FromStr for EntryKind {
    type Err = UnknownEntryKindError;
    fn from_str(s: &str) -> Result<EntryKind, UnknownEntryKindError> {
        EntryKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownEntryKindError(s.to_owned()))
    }
}

/// An entry to be appended, before the store has placed it after the current balance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    /// The id the entry will be stored under.
    pub id: EntryId,
    /// What it is; the amount's sign must match it.
    pub kind: EntryKind,
    /// Signed: positive credits the wallet, negative debits it; exact at
    /// [`LEDGER_SCALE`](crate::money::LEDGER_SCALE) decimals.
    pub amount: Credits,
    /// What the customer sees in their history.
    pub description: String,
    /// What this entry answers: a top-up id, a usage request id, refunded entry ids.
    pub reference: Option<String>,
    /// For priced usage: the model, tokens and prices it was charged at.
    pub usage: Option<UsageDetail>,
}

/// An entry as recorded in the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    /// The entry's id (`txn_…`).
    pub id: EntryId,
    /// The account whose wallet it is in.
    pub account_id: AccountId,
    /// What it is; its amount's sign follows from it.
    pub kind: EntryKind,
    /// Signed: positive credited the wallet, negative debited it.
    pub amount: Credits,
    /// The wallet's balance right after this entry: the running sum of the amounts.
    pub balance_after: Credits,
    /// What the customer sees in their history.
    pub description: String,
    /// What this entry answers: a top-up id, a usage request id, refunded entry ids.
    pub reference: Option<String>,
    /// For priced usage: the model, tokens and prices it was charged at.
    pub usage: Option<UsageDetail>,
    /// When it was posted.
    pub created_at: Timestamp,
}

/// Limit on an entry's description, in characters.
pub const DESCRIPTION_LENGTH_MAX: usize = 500;

/// Why a posting was refused by the ledger's rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostingRuleError {
    /// A debit (or a new hold) would take the available balance (the balance less active holds)
    /// below zero.
    #[error("insufficient balance: {available} available, {requested} requested")]
    InsufficientFunds {
        /// What was available before it; never negative.
        available: Credits,
        /// The size of the debit or hold (positive).
        requested: Credits,
    },
    /// An entry's amount has the wrong sign for its kind (say, a positive `usage` or a zero
    /// `adjustment`).
    #[error("entry amount has the wrong sign for a {0} entry")]
    WrongSign(EntryKind),
    /// A balance or total would leave the ledger's range (`i64` ledger units).
    #[error("balance would leave the ledger's range")]
    Overflow,
    /// The posting has no entries.
    #[error("a posting needs at least one entry")]
    Empty,
    /// A debit or hold would pass the account's monthly spending limit whose action is `block`.
    #[error(
        "the monthly spending limit of {limit} would be passed: {spent} spent this month, {held} held, {requested} requested"
    )]
    SpendingLimitExceeded {
        /// The monthly limit.
        limit: Credits,
        /// What the month has spent so far.
        spent: Credits,
        /// What active holds already commit.
        held: Credits,
        /// The new debit or hold.
        requested: Credits,
    },
}

/// Places `entries` after `balance`, in order: the pure decision every store applies to the
/// wallet state it has locked.
///
/// `reserved` is the part of the balance held for pending authorizations; debits may not
/// spend it. Refuses the whole posting (nothing is written) if any entry has the wrong sign,
/// if a debit would take the available balance below zero, or on overflow.
pub fn plan_posting(
    account_id: &AccountId,
    balance: Credits,
    reserved: Credits,
    entries: &[NewEntry],
    now: Timestamp,
) -> Result<Vec<LedgerEntry>, PostingRuleError> {
    if entries.is_empty() {
        return Err(PostingRuleError::Empty);
    }
    let mut running = balance;
    let mut planned = Vec::with_capacity(entries.len());
    for entry in entries {
        if !entry.kind.sign_is_valid(entry.amount) {
            return Err(PostingRuleError::WrongSign(entry.kind));
        }
        let next = running
            .checked_add(entry.amount)
            .map_err(|_| PostingRuleError::Overflow)?;
        if entry.amount.is_negative() {
            let floor = reserved;
            if next < floor {
                let available = running.checked_sub(reserved).unwrap_or(Credits::ZERO);
                return Err(PostingRuleError::InsufficientFunds {
                    available: available.max(Credits::ZERO),
                    requested: entry.amount.abs(),
                });
            }
        }
        running = next;
        planned.push(LedgerEntry {
            id: entry.id.clone(),
            account_id: account_id.clone(),
            kind: entry.kind,
            amount: entry.amount,
            balance_after: running,
            description: entry.description.clone(),
            reference: entry.reference.clone(),
            usage: entry.usage.clone(),
            created_at: now,
        });
    }
    Ok(planned)
}

/// Why a refund was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefundRuleError {
    /// The refund names no entry.
    #[error("a refund must name at least one entry")]
    NoEntries,
    /// A named entry is missing, is not a `usage` entry, or belongs to another account.
    #[error("entry {0} is not a usage entry of this account")]
    NotRefundable(EntryId),
    /// The refund is more than the named entries debited, less what earlier refunds gave back.
    #[error("refund of {requested} exceeds the {refundable} still refundable on those entries")]
    ExceedsRefundable {
        /// The refund asked for.
        requested: Credits,
        /// What is still refundable on those entries.
        refundable: Credits,
    },
}

/// Checks a refund against the entries it answers: every `named` entry must be among
/// `targets` (the ones the store found) and be a usage entry of the account, and the refund
/// never gives back more than their total less what earlier refunds already gave back for
/// them.
pub fn check_refund(
    account_id: &AccountId,
    named: &[EntryId],
    targets: &[LedgerEntry],
    already_refunded: Credits,
    requested: Credits,
) -> Result<(), RefundRuleError> {
    if named.is_empty() {
        return Err(RefundRuleError::NoEntries);
    }
    if let Some(missing) = named
        .iter()
        .find(|id| !targets.iter().any(|t| &t.id == *id))
    {
        return Err(RefundRuleError::NotRefundable(missing.clone()));
    }
    let mut total = Credits::ZERO;
    for target in targets {
        if target.kind != EntryKind::Usage || &target.account_id != account_id {
            return Err(RefundRuleError::NotRefundable(target.id.clone()));
        }
        total = total
            .checked_add(target.amount.abs())
            .map_err(|_| RefundRuleError::NotRefundable(target.id.clone()))?;
    }
    let refundable = total
        .checked_sub(already_refunded)
        .unwrap_or(Credits::ZERO)
        .max(Credits::ZERO);
    if requested > refundable {
        return Err(RefundRuleError::ExceedsRefundable {
            requested,
            refundable,
        });
    }
    Ok(())
}

/// Checks that `entries` (oldest first) form a consistent history ending at `balance`:
/// each `balance_after` is the running sum and the last equals the balance. Used by stores'
/// tests and by audits.
pub fn verify_history(entries: &[LedgerEntry], balance: Credits) -> Result<(), AmountError> {
    let mut running = Credits::ZERO;
    for entry in entries {
        running = running.checked_add(entry.amount)?;
        if running != entry.balance_after {
            return Err(AmountError::OutOfRange);
        }
    }
    if running != balance {
        return Err(AmountError::OutOfRange);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(units: i64) -> Credits {
        Credits::from_units(units * 1_000_000_000)
    }

    fn entry(kind: EntryKind, amount: Credits) -> NewEntry {
        NewEntry {
            id: EntryId::new("txn_1"),
            kind,
            amount,
            description: String::new(),
            reference: None,
            usage: None,
        }
    }

    /// Data-driven ledger scenarios: (balance, reserved, entries) → running balances or error.
    #[test]
    fn plan_posting_scenarios() {
        let acct = AccountId::new("acct_1");
        type Case = (
            i64,
            i64,
            Vec<(EntryKind, i64)>,
            Result<Vec<i64>, &'static str>,
        );
        let cases: Vec<Case> = vec![
            (0, 0, vec![(EntryKind::TopUp, 10)], Ok(vec![10])),
            (10, 0, vec![(EntryKind::Usage, -10)], Ok(vec![0])),
            (10, 0, vec![(EntryKind::Usage, -11)], Err("insufficient")),
            (10, 3, vec![(EntryKind::Usage, -8)], Err("insufficient")),
            (10, 3, vec![(EntryKind::Usage, -7)], Ok(vec![3])),
            (
                0,
                0,
                vec![(EntryKind::TopUp, 50), (EntryKind::Bonus, 5)],
                Ok(vec![50, 55]),
            ),
            (5, 0, vec![(EntryKind::Usage, 5)], Err("sign")),
            (5, 0, vec![(EntryKind::TopUp, -5)], Err("sign")),
            (5, 0, vec![(EntryKind::Adjustment, -5)], Ok(vec![0])),
            (5, 0, vec![(EntryKind::Adjustment, -6)], Err("insufficient")),
            (0, 0, vec![], Err("empty")),
        ];
        for (balance, reserved, entries, expected) in cases {
            let new: Vec<NewEntry> = entries.iter().map(|(k, a)| entry(*k, c(*a))).collect();
            let got = plan_posting(&acct, c(balance), c(reserved), &new, Timestamp::default());
            match (got, expected) {
                (Ok(planned), Ok(afters)) => {
                    let got: Vec<Credits> = planned.iter().map(|e| e.balance_after).collect();
                    let want: Vec<Credits> = afters.into_iter().map(c).collect();
                    assert_eq!(got, want, "{balance} {entries:?}");
                }
                (Err(PostingRuleError::InsufficientFunds { .. }), Err("insufficient"))
                | (Err(PostingRuleError::WrongSign(_)), Err("sign"))
                | (Err(PostingRuleError::Empty), Err("empty")) => {}
                (got, want) => panic!("{balance} {entries:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn plan_posting_refuses_overflow() {
        let acct = AccountId::new("acct_1");
        let got = plan_posting(
            &acct,
            Credits::max(),
            Credits::ZERO,
            &[entry(EntryKind::Bonus, Credits::from_units(1))],
            Timestamp::default(),
        );
        assert_eq!(got, Err(PostingRuleError::Overflow));
    }

    #[test]
    fn refunds_are_bounded_by_the_entries_they_answer() {
        let acct = AccountId::new("acct_1");
        let usage = LedgerEntry {
            id: EntryId::new("txn_u"),
            account_id: acct.clone(),
            kind: EntryKind::Usage,
            amount: c(-7),
            balance_after: c(3),
            description: String::new(),
            reference: None,
            usage: None,
            created_at: Timestamp::default(),
        };
        assert_eq!(
            check_refund(
                &acct,
                std::slice::from_ref(&usage.id),
                std::slice::from_ref(&usage),
                c(0),
                c(7)
            ),
            Ok(())
        );
        assert!(matches!(
            check_refund(
                &acct,
                std::slice::from_ref(&usage.id),
                std::slice::from_ref(&usage),
                c(5),
                c(3)
            ),
            Err(RefundRuleError::ExceedsRefundable { .. })
        ));
        assert_eq!(
            check_refund(
                &acct,
                std::slice::from_ref(&usage.id),
                std::slice::from_ref(&usage),
                c(5),
                c(2)
            ),
            Ok(())
        );
        let mut topup = usage.clone();
        topup.kind = EntryKind::TopUp;
        assert!(matches!(
            check_refund(
                &acct,
                std::slice::from_ref(&topup.id),
                std::slice::from_ref(&topup),
                c(0),
                c(1)
            ),
            Err(RefundRuleError::NotRefundable(_))
        ));
        let other = AccountId::new("acct_2");
        assert!(matches!(
            check_refund(
                &other,
                std::slice::from_ref(&usage.id),
                std::slice::from_ref(&usage),
                c(0),
                c(1)
            ),
            Err(RefundRuleError::NotRefundable(_))
        ));
        assert_eq!(
            check_refund(&acct, &[], &[], c(0), c(1)),
            Err(RefundRuleError::NoEntries)
        );
        let missing = EntryId::new("txn_missing");
        assert_eq!(
            check_refund(
                &acct,
                &[usage.id.clone(), missing.clone()],
                &[usage],
                c(0),
                c(1)
            ),
            Err(RefundRuleError::NotRefundable(missing))
        );
    }
}
