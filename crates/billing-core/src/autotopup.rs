//! Auto top-up: when a debit leaves the balance below the threshold, exactly one off-session
//! charge of `amount` is started. The decision is a pure function the store applies under
//! the wallet's lock, in the debit's transaction: the pending top-up it creates is the
//! record that "a charge is pending", so racing debits on any number of processes start one.
//! The charge itself is made after the commit, from the outbox.

use crate::ids::{AccountId, TopUpId};
use crate::money::{Credits, Money};
use crate::notices::{Cause, Notice, Topic};
use crate::time::Timestamp;
#[cfg(test)]
use crate::topup::TopUpOrigin;
use crate::topup::{AUTO_TOPUP_ID_PREFIX, TopUp, TopUpStatus};

/// Consecutive failed charges after which auto top-up turns itself off (the default).
pub const AUTO_TOPUP_FAILURES_MAX: u32 = 3;
/// The default monthly cap, in multiples of `amount`.
pub const MONTHLY_CAP_MULTIPLE: i64 = 10;

/// Why the service turned auto top-up off (`disabled_reason`).
pub const REASON_MONTHLY_CAP: &str = "monthly_cap_reached";
/// Turned off after `failure_limit` charges in a row failed.
pub const REASON_PAYMENT_FAILED: &str = "payment_failed";
/// Turned off because the saved payment method was removed while it was enabled.
pub const REASON_NO_PAYMENT_METHOD: &str = "payment_method_removed";
/// A pending auto top-up's failure reason when auto top-up was turned off (or its method
/// removed) before its charge: not a failed payment, not counted, nobody emailed.
pub const REASON_CANCELLED: &str = "auto_topup_cancelled";

/// A payment method saved for off-session charges (from a top-up paid with
/// `save_payment_method`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedMethod {
    /// The gateway that can charge it.
    pub gateway: String,
    /// The gateway's reference (opaque here: `cus_…/pm_…` for Stripe).
    pub reference: String,
    /// The card's brand, for display, when the gateway reports it.
    pub brand: Option<String>,
    /// The card number's last four digits, for display, when the gateway reports them.
    pub last4: Option<String>,
    /// When it was saved.
    pub saved_at: Timestamp,
}

/// What the customer set, with the quote of `amount` (credits and bonus, priced like a
/// custom amount when it was set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoTopUpSettings {
    /// Whether a debit below `threshold` may start a charge.
    pub enabled: bool,
    /// A debit that leaves the balance below this starts a charge; `None` until set.
    pub threshold: Option<Credits>,
    /// What each charge pays; `None` until set.
    pub amount: Option<Money>,
    /// The most auto top-ups may charge in a calendar month; `None`: `MONTHLY_CAP_MULTIPLE`
    /// × `amount`.
    pub monthly_cap: Option<Money>,
    /// Credits each charge adds: the quote of `amount` when it was set.
    pub credits: Credits,
    /// Bonus credits each charge adds, from the same quote.
    pub bonus: Credits,
    /// Consecutive failures that turn it off.
    pub failure_limit: u32,
}

impl AutoTopUpSettings {
    /// Disabled, nothing set.
    pub fn off() -> AutoTopUpSettings {
        AutoTopUpSettings {
            enabled: false,
            threshold: None,
            amount: None,
            monthly_cap: None,
            credits: Credits::ZERO,
            bonus: Credits::ZERO,
            failure_limit: AUTO_TOPUP_FAILURES_MAX,
        }
    }

    /// The cap in force: the one set, else `MONTHLY_CAP_MULTIPLE` × `amount`.
    pub fn cap_in_force(&self) -> Option<Money> {
        self.monthly_cap.or_else(|| {
            let amount = self.amount?;
            let minor = amount.minor_units().checked_mul(MONTHLY_CAP_MULTIPLE)?;
            Money::from_minor_units(minor, amount.currency()).ok()
        })
    }
}

/// What the service recorded about the charges it made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoTopUpState {
    /// The auto top-up being charged, if any: no second one starts while it is pending.
    pub pending: Option<TopUpId>,
    /// Failed charges in a row (cancelled ones not counted); a completed charge resets it.
    pub failures: u32,
    /// The month `month_charged` counts (its first instant, UTC).
    pub month_start: Timestamp,
    /// What auto top-ups charged (or are charging) this month, in minor units.
    pub month_charged_minor: i64,
    /// Why the service turned auto top-up off or paused it (a `REASON_*` constant); `None`
    /// otherwise.
    pub disabled_reason: Option<String>,
}

impl AutoTopUpState {
    /// Nothing pending, no failures, nothing charged; the month starts at the epoch, so the first
    /// [`AutoTopUpState::at`] rolls it forward.
    pub fn new() -> AutoTopUpState {
        AutoTopUpState {
            pending: None,
            failures: 0,
            month_start: Timestamp::from_micros(0),
            month_charged_minor: 0,
            disabled_reason: None,
        }
    }

    /// This state as of `now`: a new month starts from nothing charged, and a pause for the
    /// monthly cap ends with its month.
    pub fn at(&self, now: Timestamp) -> AutoTopUpState {
        if now.month_start() > self.month_start {
            AutoTopUpState {
                month_start: now.month_start(),
                month_charged_minor: 0,
                disabled_reason: self
                    .disabled_reason
                    .clone()
                    .filter(|r| r != REASON_MONTHLY_CAP),
                ..self.clone()
            }
        } else {
            self.clone()
        }
    }
}

impl Default for AutoTopUpState {
    fn default() -> AutoTopUpState {
        AutoTopUpState::new()
    }
}

/// What a debit does to auto top-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AutoTopUpDecision {
    /// Nothing to start (above the threshold, off, no method, one pending, paused); the
    /// state may still have rolled into a new month.
    Nothing,
    /// Start this top-up (pending, `origin: auto_topup`) and record `state`.
    Start {
        /// The pending top-up to insert, with id `topup_auto_{entry_id}`.
        topup: TopUp,
        /// The state to record: `pending` names the new top-up, and its price counts toward
        /// the month's cap.
        state: AutoTopUpState,
    },
    /// The charge would pass the monthly cap: nothing is charged; auto top-up pauses until
    /// next month (`state.disabled_reason`) and the customer is told once.
    CapReached {
        /// The state to record, with `disabled_reason` set to [`REASON_MONTHLY_CAP`].
        state: AutoTopUpState,
        /// The `auto_topup.disabled` notice telling the customer.
        notice: Notice,
    },
}

/// The debit that may start a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfterDebit<'a> {
    /// The debited account.
    pub account_id: &'a AccountId,
    /// The debit's last entry (the new top-up's id is derived from it).
    pub entry_id: &'a str,
    /// The balance after the debit, compared with the threshold.
    pub balance_after: Credits,
    /// When the debit was posted: the month the cap counts and the new top-up's creation time.
    pub now: Timestamp,
}

/// The one rule: a debit that leaves the balance below the threshold starts a charge of
/// `amount` on the saved method, unless auto top-up is off, paused, already charging, or the
/// charge would pass the month's cap (never a part of `amount`).
pub fn decide_auto_topup(
    settings: &AutoTopUpSettings,
    state: &AutoTopUpState,
    method: Option<&SavedMethod>,
    debit: &AfterDebit<'_>,
) -> AutoTopUpDecision {
    let (true, Some(threshold), Some(amount), Some(method)) = (
        settings.enabled,
        settings.threshold,
        settings.amount,
        method,
    ) else {
        return AutoTopUpDecision::Nothing;
    };
    if debit.balance_after >= threshold || state.pending.is_some() {
        return AutoTopUpDecision::Nothing;
    }
    let mut state = state.at(debit.now);
    if state.disabled_reason.is_some() {
        return AutoTopUpDecision::Nothing;
    }
    let charged = state.month_charged_minor.checked_add(amount.minor_units());
    let cap = settings.cap_in_force().map(|c| c.minor_units());
    let topup_id = TopUpId::new(format!("{AUTO_TOPUP_ID_PREFIX}{}", debit.entry_id));
    match (charged, cap) {
        (Some(charged), Some(cap)) if charged <= cap => {
            state.month_charged_minor = charged;
            state.pending = Some(topup_id.clone());
            AutoTopUpDecision::Start {
                topup: TopUp {
                    id: topup_id,
                    account_id: debit.account_id.clone(),
                    pack_id: None,
                    pack_name: None,
                    price: amount,
                    credits: settings.credits,
                    bonus: settings.bonus,
                    status: TopUpStatus::Pending,
                    gateway: method.gateway.clone(),
                    payment_ref: None,
                    checkout_url: None,
                    failure_reason: None,
                    created_at: debit.now,
                    updated_at: debit.now,
                },
                state,
            }
        }
        _ => {
            state.disabled_reason = Some(REASON_MONTHLY_CAP.to_owned());
            let mut notice = Notice::new(
                Topic::AutoTopUpDisabled,
                debit.account_id,
                debit.balance_after,
                Cause::Transaction(debit.entry_id.to_owned()),
                debit.now,
            );
            notice.reason = Some(REASON_MONTHLY_CAP.to_owned());
            AutoTopUpDecision::CapReached { state, notice }
        }
    }
}

/// What an auto top-up's end does: completed, the failures start over; failed, it counts
/// (its amount no longer counts toward the cap), the customer is told, and after
/// `failure_limit` failures in a row auto top-up turns off. Answers the new state, whether
/// auto top-up stays enabled, and the notices.
pub fn after_auto_topup(
    settings: &AutoTopUpSettings,
    state: &AutoTopUpState,
    topup: &TopUp,
    balance: Credits,
    now: Timestamp,
) -> (AutoTopUpState, bool, Vec<Notice>) {
    let mut next = state.clone();
    let was_pending = next.pending.as_ref() == Some(&topup.id);
    if was_pending {
        next.pending = None;
    }
    let notice = |topic, reason: &str| {
        let mut n = Notice::new(
            topic,
            &topup.account_id,
            balance,
            Cause::TopUp(topup.id.as_str().to_owned()),
            now,
        );
        n.reason = Some(reason.to_owned());
        n.amount = Some(topup.credits);
        n
    };
    match topup.status {
        TopUpStatus::Completed => {
            // A completion after the top-up had failed (its answer was lost, a late
            // notification): its amount counts toward the month's cap again.
            if !was_pending && next.month_start.month_start() == topup.created_at.month_start() {
                next.month_charged_minor = next
                    .month_charged_minor
                    .saturating_add(topup.price.minor_units());
            }
            next.failures = 0;
            (next, settings.enabled, Vec::new())
        }
        TopUpStatus::Failed => {
            if next.month_start.month_start() == topup.created_at.month_start() {
                next.month_charged_minor = next
                    .month_charged_minor
                    .saturating_sub(topup.price.minor_units())
                    .max(0);
            }
            if topup.failure_reason.as_deref() == Some(REASON_CANCELLED) {
                return (next, settings.enabled, Vec::new());
            }
            next.failures = next.failures.saturating_add(1);
            let reason = topup.failure_reason.as_deref().unwrap_or("declined");
            let mut notices = vec![notice(Topic::AutoTopUpFailed, reason)];
            let mut enabled = settings.enabled;
            if next.failures >= settings.failure_limit.max(1) && enabled {
                enabled = false;
                next.disabled_reason = Some(REASON_PAYMENT_FAILED.to_owned());
                notices.push(notice(Topic::AutoTopUpDisabled, REASON_PAYMENT_FAILED));
            }
            (next, enabled, notices)
        }
        TopUpStatus::Pending => (next, settings.enabled, Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Currency;

    fn usd(minor: i64) -> Money {
        Money::from_minor_units(minor, Currency::USD).expect("usd")
    }

    fn settings() -> AutoTopUpSettings {
        AutoTopUpSettings {
            enabled: true,
            threshold: Some("5".parse().expect("credits")),
            amount: Some(usd(2_500)),
            monthly_cap: None,
            credits: "25".parse().expect("credits"),
            bonus: Credits::ZERO,
            failure_limit: 3,
        }
    }

    fn method() -> SavedMethod {
        SavedMethod {
            gateway: "sandbox".into(),
            reference: "pm_1".into(),
            brand: None,
            last4: None,
            saved_at: Timestamp::from_secs(0),
        }
    }

    fn debit<'a>(account: &'a AccountId, balance: &str, now: Timestamp) -> AfterDebit<'a> {
        AfterDebit {
            account_id: account,
            entry_id: "txn_1",
            balance_after: balance.parse().expect("credits"),
            now,
        }
    }

    #[test]
    fn one_charge_below_the_threshold_and_none_while_pending() {
        let account = AccountId::new("acct_1");
        let now = Timestamp::from_secs(1_768_473_000);
        let state = AutoTopUpState::new();
        assert_eq!(
            decide_auto_topup(
                &settings(),
                &state,
                Some(&method()),
                &debit(&account, "5", now)
            ),
            AutoTopUpDecision::Nothing,
            "at the threshold is not below it"
        );
        let AutoTopUpDecision::Start { topup, state } = decide_auto_topup(
            &settings(),
            &state,
            Some(&method()),
            &debit(&account, "4.99", now),
        ) else {
            panic!("a charge is due");
        };
        assert_eq!(topup.id.as_str(), "topup_auto_txn_1");
        assert_eq!(
            (topup.origin(), topup.price),
            (TopUpOrigin::AutoTopUp, usd(2_500))
        );
        assert_eq!(state.pending, Some(topup.id.clone()));
        assert_eq!(state.month_charged_minor, 2_500);
        assert_eq!(
            decide_auto_topup(
                &settings(),
                &state,
                Some(&method()),
                &debit(&account, "1", now)
            ),
            AutoTopUpDecision::Nothing,
            "one pending: no second charge"
        );
        assert_eq!(
            decide_auto_topup(
                &settings(),
                &AutoTopUpState::new(),
                None,
                &debit(&account, "1", now)
            ),
            AutoTopUpDecision::Nothing,
            "no saved method"
        );
    }

    #[test]
    fn the_cap_pauses_until_next_month_and_never_charges_part() {
        let account = AccountId::new("acct_1");
        let now = Timestamp::from_secs(1_768_473_000);
        let state = AutoTopUpState {
            month_start: now.month_start(),
            month_charged_minor: 23_000,
            ..AutoTopUpState::new()
        };
        let AutoTopUpDecision::CapReached { state, notice } = decide_auto_topup(
            &settings(),
            &state,
            Some(&method()),
            &debit(&account, "1", now),
        ) else {
            panic!("25 more would pass the cap of 250");
        };
        assert_eq!(state.disabled_reason.as_deref(), Some(REASON_MONTHLY_CAP));
        assert_eq!(notice.topic, Topic::AutoTopUpDisabled);
        assert_eq!(
            decide_auto_topup(
                &settings(),
                &state,
                Some(&method()),
                &debit(&account, "1", now)
            ),
            AutoTopUpDecision::Nothing,
            "paused: told once"
        );
        let next_month = now.plus_secs(31 * 86_400);
        assert!(matches!(
            decide_auto_topup(
                &settings(),
                &state,
                Some(&method()),
                &debit(&account, "1", next_month)
            ),
            AutoTopUpDecision::Start { .. }
        ));
    }

    #[test]
    fn three_failures_turn_it_off() {
        let account = AccountId::new("acct_1");
        let now = Timestamp::from_secs(1_768_473_000);
        let AutoTopUpDecision::Start {
            mut topup,
            mut state,
        } = decide_auto_topup(
            &settings(),
            &AutoTopUpState::new(),
            Some(&method()),
            &debit(&account, "1", now),
        )
        else {
            panic!("start");
        };
        topup.status = TopUpStatus::Failed;
        topup.failure_reason = Some("card_declined".into());
        for round in 1..=3 {
            state.pending = Some(topup.id.clone());
            let (next, enabled, notices) =
                after_auto_topup(&settings(), &state, &topup, Credits::ZERO, now);
            assert_eq!(next.pending, None);
            assert_eq!(next.failures, round);
            assert_eq!(
                next.month_charged_minor, 0,
                "a failed charge does not count"
            );
            assert_eq!(enabled, round < 3);
            assert_eq!(notices[0].topic, Topic::AutoTopUpFailed);
            assert_eq!(notices.len(), if round < 3 { 1 } else { 2 });
            state = next;
            state.month_charged_minor = 2_500;
        }
        assert_eq!(
            state.disabled_reason.as_deref(),
            Some(REASON_PAYMENT_FAILED)
        );
        // A charge cancelled because auto top-up was turned off is not a failed payment.
        let mut cancelled = topup.clone();
        cancelled.failure_reason = Some(REASON_CANCELLED.into());
        let fresh = AutoTopUpState {
            pending: Some(cancelled.id.clone()),
            month_start: now.month_start(),
            month_charged_minor: 2_500,
            ..AutoTopUpState::new()
        };
        let (next, _, notices) =
            after_auto_topup(&settings(), &fresh, &cancelled, Credits::ZERO, now);
        assert_eq!(
            (
                next.failures,
                next.pending.clone(),
                next.month_charged_minor
            ),
            (0, None, 0)
        );
        assert!(notices.is_empty());
        topup.status = TopUpStatus::Completed;
        let (next, _, notices) = after_auto_topup(&settings(), &state, &topup, Credits::ZERO, now);
        assert_eq!((next.failures, notices.len()), (0, 0));
    }
}
