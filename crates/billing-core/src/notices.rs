//! Notifications and events: what happened to a wallet that its customer (by email) or the
//! platform (by a signed event) should hear about, decided by pure functions the store
//! applies under the wallet's lock and written to an outbox in the same transaction as their
//! cause, so none is lost when a process dies and none is doubled when debits race.

use std::fmt;
use std::str::FromStr;

use crate::controls::{LimitAction, MonthSpend, SpendingLimit};
use crate::ids::AccountId;
use crate::money::Credits;
use crate::time::Timestamp;

/// What a notice is about; the event `type` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// A top-up completed and credited the wallet (`amount`: the credits added).
    TopUpCompleted,
    /// A top-up failed; nothing was credited (`reason`: its failure reason, if any).
    TopUpFailed,
    /// The balance went from at-or-above the low-balance alert's threshold to below it.
    BalanceLow,
    /// The balance reached zero.
    BalanceDepleted,
    /// The month's spend reached (`block`) or passed (`alert`) the spending limit.
    SpendingLimitReached,
    /// An auto top-up's charge failed (`reason` says why).
    AutoTopUpFailed,
    /// The service turned auto top-up off or paused it (`reason`: repeated failures or the monthly
    /// cap).
    AutoTopUpDisabled,
    /// Internal: an auto top-up's charge to make (never an event).
    AutoTopUpCharge,
}

impl Topic {
    /// Every topic (what parsing tries).
    pub const ALL: [Topic; 8] = [
        Topic::TopUpCompleted,
        Topic::TopUpFailed,
        Topic::BalanceLow,
        Topic::BalanceDepleted,
        Topic::SpendingLimitReached,
        Topic::AutoTopUpFailed,
        Topic::AutoTopUpDisabled,
        Topic::AutoTopUpCharge,
    ];

    /// The event `type` on the wire and the stored name (`topup.completed`, `balance.low`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Topic::TopUpCompleted => "topup.completed",
            Topic::TopUpFailed => "topup.failed",
            Topic::BalanceLow => "balance.low",
            Topic::BalanceDepleted => "balance.depleted",
            Topic::SpendingLimitReached => "spending_limit.reached",
            Topic::AutoTopUpFailed => "auto_topup.failed",
            Topic::AutoTopUpDisabled => "auto_topup.disabled",
            Topic::AutoTopUpCharge => "auto_topup.charge",
        }
    }

    /// Whether the customer is emailed (every topic is also an event for the platform).
    pub fn emails_customer(self) -> bool {
        matches!(
            self,
            Topic::BalanceLow
                | Topic::SpendingLimitReached
                | Topic::AutoTopUpFailed
                | Topic::AutoTopUpDisabled
        )
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Topic {
    type Err = String;
    fn from_str(s: &str) -> Result<Topic, String> {
        Topic::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown notice topic {s:?}"))
    }
}

/// What caused a notice: a ledger entry (a debit, a capture) or a top-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// A ledger entry, by id.
    Transaction(String),
    /// A top-up, by id.
    TopUp(String),
}

impl Cause {
    /// The id of the entry or top-up.
    pub fn id(&self) -> &str {
        match self {
            Cause::Transaction(id) | Cause::TopUp(id) => id,
        }
    }

    /// `transaction` or `topup`.
    pub fn kind(&self) -> &'static str {
        match self {
            Cause::Transaction(_) => "transaction",
            Cause::TopUp(_) => "topup",
        }
    }

    /// Rebuilds a cause from its stored [`Cause::kind`] and id; `None` for an unknown kind.
    pub fn from_parts(kind: &str, id: String) -> Option<Cause> {
        match kind {
            "transaction" => Some(Cause::Transaction(id)),
            "topup" => Some(Cause::TopUp(id)),
            _ => None,
        }
    }
}

/// One thing to tell. Its `id` is derived from its cause and topic, so it is stable: a retry
/// carries the same id (the email's `Message-ID`, the event's `id`) and a receiver can
/// recognise it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// `evt_{cause id}_{topic}` (the topic's dots as underscores): the same on every retry.
    pub id: String,
    /// What it is about.
    pub topic: Topic,
    /// The account it concerns.
    pub account_id: AccountId,
    /// The balance right after the cause.
    pub balance: Credits,
    /// The entry or top-up that caused it (its id is part of `id`).
    pub cause: Cause,
    /// The alert's threshold, or the spending limit.
    pub threshold: Option<Credits>,
    /// The month's spend (spending limit), or the credits a top-up added.
    pub amount: Option<Credits>,
    /// Why a top-up failed or auto top-up was turned off; the limit's action.
    pub reason: Option<String>,
    /// When it was decided, in its cause's transaction.
    pub created_at: Timestamp,
}

impl Notice {
    /// A notice with its stable id and no `threshold`, `amount` or `reason` (callers set those).
    pub fn new(
        topic: Topic,
        account_id: &AccountId,
        balance: Credits,
        cause: Cause,
        now: Timestamp,
    ) -> Notice {
        Notice {
            id: format!("evt_{}_{}", cause.id(), topic.as_str().replace('.', "_")),
            topic,
            account_id: account_id.clone(),
            balance,
            cause,
            threshold: None,
            amount: None,
            reason: None,
            created_at: now,
        }
    }
}

/// `{"enabled", "threshold"}`: one email when a debit takes the balance below `threshold`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LowBalanceAlert {
    /// Whether a debit that crosses below `threshold` tells the customer.
    pub enabled: bool,
    /// Positive; `None` only while disabled and never set.
    pub threshold: Option<Credits>,
}

impl LowBalanceAlert {
    /// An alert as a customer sets it: an enabled alert needs a positive `threshold`.
    pub fn new(enabled: bool, threshold: Option<Credits>) -> Result<LowBalanceAlert, String> {
        if let Some(t) = threshold
            && !t.is_positive()
        {
            return Err("threshold must be greater than zero".into());
        }
        if enabled && threshold.is_none() {
            return Err("threshold is required when the alert is enabled".into());
        }
        Ok(LowBalanceAlert { enabled, threshold })
    }
}

/// A wallet's notification settings and state, as read under its lock.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NoticeSettings {
    /// The low-balance alert.
    pub alert: LowBalanceAlert,
    /// The monthly spending limit, for `spending_limit.reached`.
    pub limit: SpendingLimit,
    /// The month (its first instant) for which `spending_limit.reached` was last told, if any.
    pub limit_reached_month: Option<Timestamp>,
}

/// A debit (or a capture) as it was written: the balance around it and the month's spend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Debit<'a> {
    /// The debited account.
    pub account_id: &'a AccountId,
    /// The last entry the debit wrote.
    pub entry_id: &'a str,
    /// The balance before the debit.
    pub balance_before: Credits,
    /// The balance after it.
    pub balance_after: Credits,
    /// The month's spend after it.
    pub spend_after: MonthSpend,
    /// When it was posted.
    pub now: Timestamp,
}

/// What a debit tells, and the month now recorded as told for the spending limit.
///
/// - `balance.low` when the balance went from at-or-above the alert's threshold to below it
///   (re-armed by construction: the next crossing needs the balance back at or above it);
/// - `balance.depleted` when it reached zero;
/// - `spending_limit.reached` once a month: when the spend reaches a `block` limit or passes
///   an `alert` limit.
pub fn debit_notices(
    settings: &NoticeSettings,
    debit: &Debit<'_>,
) -> (Vec<Notice>, Option<Timestamp>) {
    let cause = || Cause::Transaction(debit.entry_id.to_owned());
    let notice = |topic| {
        Notice::new(
            topic,
            debit.account_id,
            debit.balance_after,
            cause(),
            debit.now,
        )
    };
    let mut notices = Vec::new();
    if let (true, Some(threshold)) = (settings.alert.enabled, settings.alert.threshold)
        && debit.balance_before >= threshold
        && debit.balance_after < threshold
    {
        notices.push(Notice {
            threshold: Some(threshold),
            ..notice(Topic::BalanceLow)
        });
    }
    if debit.balance_before.is_positive() && debit.balance_after == Credits::ZERO {
        notices.push(notice(Topic::BalanceDepleted));
    }
    let mut told = settings.limit_reached_month;
    // Only a debit reaches the limit (a grant or refund after a new limit is set does not).
    let debited = debit.balance_after < debit.balance_before;
    if let (true, true, Some(limit)) = (
        debited,
        settings.limit.enabled,
        settings.limit.monthly_limit,
    ) {
        let spent = debit.spend_after.spent;
        let reached = match settings.limit.action {
            LimitAction::Block => spent >= limit,
            LimitAction::Alert => spent > limit,
        };
        let month = debit.spend_after.month_start;
        if reached && told.is_none_or(|m| m < month) {
            notices.push(Notice {
                threshold: Some(limit),
                amount: Some(spent),
                reason: Some(settings.limit.action.as_str().to_owned()),
                ..notice(Topic::SpendingLimitReached)
            });
            told = Some(month);
        }
    }
    (notices, told)
}

/// An email to a customer, rendered from a notice: plain, short, with the balance and a
/// link to the dashboard's billing page when the deployment has a public URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    /// The customer's address.
    pub to: String,
    /// The subject line, which says what happened.
    pub subject: String,
    /// Plain text: greeting, what happened, any payment or dashboard link, then the account id.
    pub body: String,
    /// The notice's id: the same on every retry (`Message-ID: <id@host>`).
    pub notice_id: String,
}

/// The email a notice sends, if its topic emails the customer.
pub fn email_for(
    notice: &Notice,
    to: &str,
    name: &str,
    public_url: Option<&str>,
    checkout_url: Option<&str>,
) -> Option<Email> {
    if !notice.topic.emails_customer() {
        return None;
    }
    let balance = notice.balance;
    let (subject, lead) = match notice.topic {
        Topic::BalanceLow => (
            format!("Your balance is low: {balance} credits left"),
            format!(
                "Your balance fell below your alert threshold of {} credits. It is now {balance} credits.",
                notice.threshold.unwrap_or(Credits::ZERO)
            ),
        ),
        Topic::SpendingLimitReached => {
            let limit = notice.threshold.unwrap_or(Credits::ZERO);
            let spent = notice.amount.unwrap_or(Credits::ZERO);
            let consequence = if notice.reason.as_deref() == Some("block") {
                "Further usage is refused until next month or until you raise the limit."
            } else {
                "Usage continues (your limit only alerts)."
            };
            (
                format!("Monthly spending limit of {limit} credits reached"),
                format!(
                    "You have spent {spent} credits this month, against your limit of {limit}. {consequence}"
                ),
            )
        }
        Topic::AutoTopUpFailed => (
            "Your automatic top-up failed".to_owned(),
            format!(
                "An automatic top-up could not be charged ({}). Your balance is {balance} credits.",
                notice.reason.as_deref().unwrap_or("declined")
            ),
        ),
        Topic::AutoTopUpDisabled => (
            "Automatic top-up is paused".to_owned(),
            format!(
                "Automatic top-up was turned off ({}). Your balance is {balance} credits.",
                notice.reason.as_deref().unwrap_or("disabled")
            ),
        ),
        _ => return None,
    };
    let mut body = format!("Hello {name},\n\n{lead}\n");
    if let Some(url) = checkout_url {
        body.push_str(&format!(
            "\nYour bank wants you to confirm this payment. Pay it here: {url}\n"
        ));
    }
    if let Some(url) = public_url {
        body.push_str(&format!(
            "\nManage your credits: {}/dashboard/billing\n",
            url.trim_end_matches('/')
        ));
    }
    body.push_str(&format!("\nAccount: {}\n", notice.account_id));
    Some(Email {
        to: to.to_owned(),
        subject,
        body,
        notice_id: notice.id.clone(),
    })
}

/// How a notice reaches its audience.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// An email to the customer (only for topics that email them).
    Email,
    /// A signed event to the platform (every topic but the internal auto top-up charge).
    Event,
    /// An auto top-up's off-session charge.
    Charge,
}

impl Channel {
    /// The stored name (`email`, `event`, `charge`).
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Event => "event",
            Channel::Charge => "charge",
        }
    }

    /// The channel of a stored name; `None` for an unknown one.
    pub fn parse(s: &str) -> Option<Channel> {
        match s {
            "email" => Some(Channel::Email),
            "event" => Some(Channel::Event),
            "charge" => Some(Channel::Charge),
            _ => None,
        }
    }

    /// The channels a notice goes out on.
    pub fn for_topic(topic: Topic) -> &'static [Channel] {
        if topic == Topic::AutoTopUpCharge {
            &[Channel::Charge]
        } else if topic.emails_customer() {
            &[Channel::Email, Channel::Event]
        } else {
            &[Channel::Event]
        }
    }
}

/// When a failed delivery is tried again: after `base_secs`, doubling up to an hour, for
/// `window_secs` after the notice was written; then it is given up (and logged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before the first retry, in seconds (at least 1); doubles after each further failure.
    pub base_secs: u64,
    /// Longest delay between attempts, in seconds.
    pub max_delay_secs: u64,
    /// How long after the notice was written it is tried, in seconds.
    pub window_secs: u64,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            base_secs: 10,
            max_delay_secs: 3_600,
            window_secs: 24 * 3_600,
        }
    }
}

impl RetryPolicy {
    /// The next attempt after `attempts` failed ones, or `None` to give up.
    pub fn next_attempt(
        &self,
        created_at: Timestamp,
        attempts: u32,
        now: Timestamp,
    ) -> Option<Timestamp> {
        let doublings = attempts.saturating_sub(1).min(32);
        let delay = self
            .base_secs
            .max(1)
            .saturating_mul(1u64 << doublings)
            .min(self.max_delay_secs.max(1));
        let secs = |s: u64| i64::try_from(s).unwrap_or(i64::MAX / 2_000_000);
        let deadline = created_at.plus_secs(secs(self.window_secs));
        let next = now.plus_secs(secs(delay));
        (now < deadline).then(|| next.min(deadline))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cr(s: &str) -> Credits {
        s.parse().expect("credits")
    }

    fn debit<'a>(
        account: &'a AccountId,
        before: &str,
        after: &str,
        spent: &str,
        now: Timestamp,
    ) -> Debit<'a> {
        Debit {
            account_id: account,
            entry_id: "ent_1",
            balance_before: cr(before),
            balance_after: cr(after),
            spend_after: MonthSpend {
                month_start: now.month_start(),
                spent: cr(spent),
            },
            now,
        }
    }

    #[test]
    fn the_alert_fires_on_the_crossing_only() {
        let account = AccountId::new("acct_1");
        let now = Timestamp::from_secs(1_768_473_000);
        let settings = NoticeSettings {
            alert: LowBalanceAlert::new(true, Some(cr("10"))).expect("alert"),
            ..NoticeSettings::default()
        };
        let topics = |b: &str, a: &str| {
            debit_notices(&settings, &debit(&account, b, a, "0", now))
                .0
                .into_iter()
                .map(|n| n.topic)
                .collect::<Vec<_>>()
        };
        assert_eq!(topics("12", "9"), vec![Topic::BalanceLow]);
        assert_eq!(topics("10", "9.999"), vec![Topic::BalanceLow]);
        assert_eq!(topics("9", "8"), vec![], "already below: no second email");
        assert_eq!(
            topics("12", "10"),
            vec![],
            "at the threshold is not below it"
        );
        assert_eq!(
            topics("12", "0"),
            vec![Topic::BalanceLow, Topic::BalanceDepleted]
        );
        assert_eq!(topics("5", "0"), vec![Topic::BalanceDepleted]);
        let off = NoticeSettings::default();
        assert!(
            debit_notices(&off, &debit(&account, "12", "9", "0", now))
                .0
                .is_empty()
        );
        let notice = &debit_notices(&settings, &debit(&account, "12", "9", "0", now)).0[0];
        assert_eq!(notice.id, "evt_ent_1_balance_low");
        assert_eq!(notice.threshold, Some(cr("10")));
        assert_eq!(notice.balance, cr("9"));
    }

    #[test]
    fn the_spending_limit_is_told_once_a_month() {
        let account = AccountId::new("acct_1");
        let now = Timestamp::from_secs(1_768_473_000);
        let mut settings = NoticeSettings {
            limit: SpendingLimit::new(true, Some(cr("100")), LimitAction::Block).expect("limit"),
            ..NoticeSettings::default()
        };
        let (n, told) = debit_notices(&settings, &debit(&account, "50", "40", "99", now));
        assert!(n.is_empty() && told.is_none());
        let (n, told) = debit_notices(&settings, &debit(&account, "50", "40", "100", now));
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].topic, Topic::SpendingLimitReached);
        assert_eq!(n[0].amount, Some(cr("100")));
        assert_eq!(told, Some(now.month_start()));
        settings.limit_reached_month = told;
        assert!(
            debit_notices(&settings, &debit(&account, "50", "40", "100", now))
                .0
                .is_empty()
        );
        let next_month = now.plus_secs(31 * 86_400);
        assert_eq!(
            debit_notices(&settings, &debit(&account, "50", "40", "100", next_month))
                .0
                .len(),
            1
        );
        // `alert` tells when the spend passes the limit.
        settings.limit.action = LimitAction::Alert;
        settings.limit_reached_month = None;
        assert!(
            debit_notices(&settings, &debit(&account, "50", "40", "100", now))
                .0
                .is_empty()
        );
        assert_eq!(
            debit_notices(&settings, &debit(&account, "50", "40", "100.5", now))
                .0
                .len(),
            1
        );
    }

    #[test]
    fn emails_are_plain_and_name_the_balance() {
        let account = AccountId::new("acct_1");
        let now = Timestamp::from_secs(1_768_473_000);
        let mut notice = Notice::new(
            Topic::BalanceLow,
            &account,
            cr("9.5"),
            Cause::Transaction("ent_9".into()),
            now,
        );
        notice.threshold = Some(cr("10"));
        let email = email_for(
            &notice,
            "a@example.com",
            "Ada",
            Some("https://billing.example/"),
            None,
        )
        .expect("email");
        assert!(email.subject.contains("9.5"), "{}", email.subject);
        assert!(
            email
                .body
                .contains("https://billing.example/dashboard/billing"),
            "{}",
            email.body
        );
        assert_eq!(email.notice_id, "evt_ent_9_balance_low");
        let completed = Notice::new(
            Topic::TopUpCompleted,
            &account,
            cr("1"),
            Cause::TopUp("top_1".into()),
            now,
        );
        assert_eq!(
            email_for(&completed, "a@example.com", "Ada", None, None),
            None
        );
    }

    #[test]
    fn retries_double_to_an_hour_for_a_day() {
        let policy = RetryPolicy::default();
        let t0 = Timestamp::from_secs(1_768_473_000);
        assert_eq!(policy.next_attempt(t0, 1, t0), Some(t0.plus_secs(10)));
        assert_eq!(policy.next_attempt(t0, 2, t0), Some(t0.plus_secs(20)));
        assert_eq!(policy.next_attempt(t0, 20, t0), Some(t0.plus_secs(3_600)));
        let late = t0.plus_secs(24 * 3_600 - 5);
        assert_eq!(
            policy.next_attempt(t0, 20, late),
            Some(t0.plus_secs(24 * 3_600))
        );
        assert_eq!(policy.next_attempt(t0, 21, t0.plus_secs(24 * 3_600)), None);
        assert_eq!("balance.low".parse(), Ok(Topic::BalanceLow));
        assert!("balance.lower".parse::<Topic>().is_err());
    }
}
