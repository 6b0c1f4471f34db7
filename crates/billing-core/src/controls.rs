//! Wallet controls: the monthly spending limit (and, as they land, low-balance alerts and
//! auto top-up). The decisions are pure functions the store applies under the wallet's
//! lock, in the same transaction as the debit, so they are exact under concurrency and
//! across processes.

use std::fmt;
use std::str::FromStr;

use crate::ledger::{EntryKind, PostingRuleError};
use crate::money::Credits;
use crate::time::Timestamp;

/// What a spending limit does when a debit would pass it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LimitAction {
    /// Refuse the debit (`402 spending_limit_exceeded`); nothing is written.
    #[default]
    Block,
    /// Let it pass (the customer is notified once a month).
    Alert,
}

impl LimitAction {
    /// The wire and storage name (`block`, `alert`).
    pub fn as_str(self) -> &'static str {
        match self {
            LimitAction::Block => "block",
            LimitAction::Alert => "alert",
        }
    }
}

impl fmt::Display for LimitAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LimitAction {
    type Err = String;
    fn from_str(s: &str) -> Result<LimitAction, String> {
        match s {
            "block" => Ok(LimitAction::Block),
            "alert" => Ok(LimitAction::Alert),
            other => Err(format!("action must be `block` or `alert`, not {other:?}")),
        }
    }
}

/// `{"enabled", "monthly_limit", "action"}`: a calendar month in UTC.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SpendingLimit {
    /// Whether the limit is in force; a disabled limit may keep its `monthly_limit`.
    pub enabled: bool,
    /// Positive; `None` only while disabled and never set.
    pub monthly_limit: Option<Credits>,
    /// What a debit that would pass the limit does.
    pub action: LimitAction,
}

impl SpendingLimit {
    /// A limit as a customer sets it: an enabled limit needs a positive `monthly_limit`.
    pub fn new(
        enabled: bool,
        monthly_limit: Option<Credits>,
        action: LimitAction,
    ) -> Result<SpendingLimit, String> {
        if let Some(limit) = monthly_limit
            && !limit.is_positive()
        {
            return Err("monthly_limit must be greater than zero".into());
        }
        if enabled && monthly_limit.is_none() {
            return Err("monthly_limit is required when the limit is enabled".into());
        }
        Ok(SpendingLimit {
            enabled,
            monthly_limit,
            action,
        })
    }

    /// The limit that blocks, if any.
    fn blocking(&self) -> Option<Credits> {
        match (self.enabled, self.action, self.monthly_limit) {
            (true, LimitAction::Block, Some(limit)) => Some(limit),
            _ => None,
        }
    }
}

/// What the wallet spent in one calendar month: usage debits less refunds of usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonthSpend {
    /// The first instant of the month (UTC).
    pub month_start: Timestamp,
    /// Usage debited in the month less refunds of that usage; never below zero.
    pub spent: Credits,
}

impl MonthSpend {
    /// Nothing spent in `now`'s month.
    pub fn empty(now: Timestamp) -> MonthSpend {
        MonthSpend {
            month_start: now.month_start(),
            spent: Credits::ZERO,
        }
    }

    /// This record as of `now`: a new month starts from zero. It only ever rolls forward:
    /// a posting stamped before the recorded month (a clock read before the wallet's lock,
    /// another process's clock) counts in the recorded month.
    pub fn at(self, now: Timestamp) -> MonthSpend {
        if now.month_start() > self.month_start {
            MonthSpend::empty(now)
        } else {
            self
        }
    }

    /// After debiting `debited` and refunding `refunded` (refunds never take it below 0).
    pub fn after(
        self,
        debited: Credits,
        refunded: Credits,
    ) -> Result<MonthSpend, PostingRuleError> {
        let spent = self
            .spent
            .checked_add(debited)
            .and_then(|s| s.checked_sub(refunded))
            .map_err(|_| PostingRuleError::Overflow)?
            .max(Credits::ZERO);
        Ok(MonthSpend { spent, ..self })
    }
}

/// Whether a new commitment of `amount` (a debit, or a hold) fits a blocking limit, given
/// what the month has spent and what active holds already commit: holds count toward the
/// limit. Refused: nothing is written.
pub fn check_spending(
    limit: &SpendingLimit,
    spend: MonthSpend,
    held: Credits,
    amount: Credits,
) -> Result<(), PostingRuleError> {
    let Some(monthly_limit) = limit.blocking() else {
        return Ok(());
    };
    let committed = spend
        .spent
        .checked_add(held)
        .and_then(|c| c.checked_add(amount))
        .map_err(|_| PostingRuleError::Overflow)?;
    if committed > monthly_limit {
        return Err(PostingRuleError::SpendingLimitExceeded {
            limit: monthly_limit,
            spent: spend.spent,
            held,
            requested: amount,
        });
    }
    Ok(())
}

/// The month's spend after `entries` are posted, checked against a blocking limit: usage
/// debits add to it (and must fit with what `held` commits), refunds take from it, up to
/// `refundable_this_month` (what the refunded usage entries debited in the spend's month:
/// refunds of an earlier month's usage do not lower this month's spend). The one function
/// every store applies, under the wallet's lock, to a posting and to a capture. `check` is
/// false for a capture, which its hold already authorized.
pub fn apply_spending(
    limit: &SpendingLimit,
    spend: MonthSpend,
    held: Credits,
    entries: impl IntoIterator<Item = (EntryKind, Credits)>,
    refundable_this_month: Credits,
    now: Timestamp,
    check: bool,
) -> Result<MonthSpend, PostingRuleError> {
    let spend = spend.at(now);
    let (mut debited, mut refunded) = (Credits::ZERO, Credits::ZERO);
    for (kind, amount) in entries {
        let add = |total: Credits| {
            total
                .checked_add(amount.abs())
                .map_err(|_| PostingRuleError::Overflow)
        };
        match kind {
            EntryKind::Usage => debited = add(debited)?,
            EntryKind::Refund => refunded = add(refunded)?,
            _ => {}
        }
    }
    if check && debited.is_positive() {
        check_spending(limit, spend, held, debited)?;
    }
    spend.after(debited, refunded.min(refundable_this_month))
}

/// The part of `targets` (the usage entries a refund names: when, how much) debited in the
/// month of `spend` as of `now`: the most the refund may take off this month's spend.
pub fn refundable_this_month(
    spend: MonthSpend,
    targets: impl IntoIterator<Item = (Timestamp, Credits)>,
    now: Timestamp,
) -> Result<Credits, PostingRuleError> {
    let month_start = spend.at(now).month_start;
    Credits::sum(
        targets
            .into_iter()
            .filter(|(at, _)| *at >= month_start)
            .map(|(_, amount)| amount.abs()),
    )
    .map_err(|_| PostingRuleError::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cr(s: &str) -> Credits {
        s.parse().expect("credits")
    }

    #[test]
    fn a_blocking_limit_counts_spend_and_holds() {
        let now = Timestamp::from_secs(1_768_473_000);
        let limit = SpendingLimit::new(true, Some(cr("100")), LimitAction::Block).expect("limit");
        let spend = MonthSpend {
            month_start: now.month_start(),
            spent: cr("90"),
        };
        assert_eq!(check_spending(&limit, spend, cr("0"), cr("10")), Ok(()));
        assert!(check_spending(&limit, spend, cr("0"), cr("10.000000001")).is_err());
        assert!(check_spending(&limit, spend, cr("5"), cr("6")).is_err());
        let alert = SpendingLimit {
            action: LimitAction::Alert,
            ..limit.clone()
        };
        assert_eq!(check_spending(&alert, spend, cr("0"), cr("1000")), Ok(()));
        let off = SpendingLimit {
            enabled: false,
            ..limit.clone()
        };
        assert_eq!(check_spending(&off, spend, cr("0"), cr("1000")), Ok(()));
        // A new month starts from zero; refunds never take it below zero.
        let next_month = Timestamp::from_secs(1_768_473_000 + 31 * 86_400);
        assert_eq!(spend.at(next_month).spent, Credits::ZERO);
        assert_eq!(spend.at(now), spend);
        assert_eq!(spend.after(cr("1"), cr("0")).map(|s| s.spent), Ok(cr("91")));
        assert_eq!(spend.after(cr("0"), cr("95")).map(|s| s.spent), Ok(cr("0")));
    }

    #[test]
    fn postings_move_the_month_spend() {
        let now = Timestamp::from_secs(1_768_473_000);
        let limit = SpendingLimit::new(true, Some(cr("10")), LimitAction::Block).expect("limit");
        let spend = MonthSpend::empty(now);
        let after = apply_spending(
            &limit,
            spend,
            cr("0"),
            [(EntryKind::Usage, cr("-4")), (EntryKind::Bonus, cr("100"))],
            Credits::ZERO,
            now,
            true,
        )
        .expect("fits");
        assert_eq!(after.spent, cr("4"));
        assert!(
            apply_spending(
                &limit,
                after,
                cr("2"),
                [(EntryKind::Usage, cr("-4.5"))],
                Credits::ZERO,
                now,
                true
            )
            .is_err()
        );
        // A capture is not checked again; a refund lowers the spend.
        let captured = apply_spending(
            &limit,
            after,
            cr("0"),
            [(EntryKind::Usage, cr("-9"))],
            Credits::ZERO,
            now,
            false,
        )
        .expect("authorized by its hold");
        assert_eq!(captured.spent, cr("13"));
        let refunded = apply_spending(
            &limit,
            captured,
            cr("0"),
            [(EntryKind::Refund, cr("5"))],
            cr("9"),
            now,
            true,
        )
        .expect("refund");
        assert_eq!(refunded.spent, cr("8"));
        // A refund of last month's usage takes nothing off this month.
        let last_month = Timestamp::from_secs(1_768_473_000 - 31 * 86_400);
        let cap = refundable_this_month(refunded, [(last_month, cr("-5"))], now).expect("cap");
        assert_eq!(cap, Credits::ZERO);
        let unchanged = apply_spending(
            &limit,
            refunded,
            cr("0"),
            [(EntryKind::Refund, cr("5"))],
            cap,
            now,
            true,
        )
        .expect("refund");
        assert_eq!(unchanged.spent, cr("8"));
    }

    #[test]
    fn the_month_only_rolls_forward() {
        let december = Timestamp::from_secs(1_764_547_200); // 2025-12-01T00:00:00Z
        let spend = MonthSpend {
            month_start: december,
            spent: cr("7"),
        };
        assert_eq!(
            spend.at(december.minus_secs(1)),
            spend,
            "a late-stamped November posting"
        );
        assert_eq!(
            spend.at(december.plus_secs(31 * 86_400)).spent,
            Credits::ZERO
        );
    }

    #[test]
    fn limits_are_validated() {
        assert!(SpendingLimit::new(true, None, LimitAction::Block).is_err());
        assert!(SpendingLimit::new(true, Some(cr("0")), LimitAction::Block).is_err());
        assert!(SpendingLimit::new(false, None, LimitAction::Alert).is_ok());
        assert_eq!("alert".parse(), Ok(LimitAction::Alert));
        assert!("stop".parse::<LimitAction>().is_err());
    }
}
