//! Top-ups: packs, custom amounts with bonus tiers, and the `pending → completed | failed`
//! lifecycle.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;

use crate::ids::{AccountId, EntryId, PackId, TopUpId};
use crate::ledger::{EntryKind, NewEntry};
use crate::money::{AmountError, Credits, Currency, Money};
use crate::time::Timestamp;

/// A fixed-price pack of credits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pack {
    /// The pack's id (`pack_…`).
    pub id: PackId,
    /// Its display name (at most [`PACK_NAME_LENGTH_MAX`] characters), copied onto the top-ups that
    /// buy it.
    pub name: String,
    /// What the customer pays.
    pub price: Money,
    /// Credits it adds; packs get no bonus.
    pub credits: Credits,
    /// Whether it is highlighted as the popular choice.
    pub popular: bool,
    /// Whether it is on sale; an inactive pack cannot be bought but stays in history.
    pub active: bool,
}

/// Limit on a pack's name, in characters.
pub const PACK_NAME_LENGTH_MAX: usize = 100;

/// `credits` more for custom top-ups of at least `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BonusTier {
    /// Smallest paid amount (major units of the top-up currency) the tier applies to.
    pub from: Decimal,
    /// Bonus in percent of the credited amount (`5` for +5%).
    pub percent: Decimal,
}

impl BonusTier {
    /// The bonus on `credits`: `credits × percent / 100`, rounded **towards zero** to the
    /// ledger scale (rounding point 1 of [`crate::money`]).
    pub fn bonus_for(&self, credits: Credits) -> Result<Credits, AmountError> {
        let exact = credits
            .value()
            .checked_mul(self.percent)
            .and_then(|v| v.checked_div(Decimal::ONE_HUNDRED))
            .ok_or(AmountError::OutOfRange)?;
        Credits::round_toward_zero(exact)
    }
}

/// The rules for custom-amount top-ups; configuration, not code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopUpPolicy {
    /// The currency customers pay in.
    pub currency: Currency,
    /// Smallest custom amount, in major units.
    pub minimum: Decimal,
    /// From this amount up, no checkout is created: the customer is sent to sales.
    pub contact_sales_from: Decimal,
    /// Bonus tiers; the highest tier whose `from` the amount reaches applies.
    pub bonus_tiers: Vec<BonusTier>,
    /// Credits one major unit of `currency` buys (1 for a wallet kept in that currency).
    pub credits_per_unit: Decimal,
}

impl Default for TopUpPolicy {
    /// The seed document's table: minimum $5, +5% from $50, +10% from $100, +15% from $250,
    /// contact sales from $500; 1 credit = 1 USD.
    fn default() -> TopUpPolicy {
        TopUpPolicy {
            currency: Currency::USD,
            minimum: Decimal::new(5, 0),
            contact_sales_from: Decimal::new(500, 0),
            bonus_tiers: vec![
                BonusTier {
                    from: Decimal::new(50, 0),
                    percent: Decimal::new(5, 0),
                },
                BonusTier {
                    from: Decimal::new(100, 0),
                    percent: Decimal::new(10, 0),
                },
                BonusTier {
                    from: Decimal::new(250, 0),
                    percent: Decimal::new(15, 0),
                },
            ],
            credits_per_unit: Decimal::ONE,
        }
    }
}

/// Why a top-up request was refused by the rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopUpRuleError {
    /// The custom amount is below the policy's minimum.
    #[error("the minimum top-up is {minimum}")]
    BelowMinimum {
        /// The policy's minimum, in its currency.
        minimum: Money,
    },
    /// The custom amount is at or above the contact-sales threshold: no checkout is created.
    #[error("top-ups of {threshold} or more are handled by sales: please contact sales")]
    ContactSales {
        /// The policy's `contact_sales_from`, in its currency.
        threshold: Money,
    },
    /// The amount is not valid money: not positive, more decimals than the currency has, or too
    /// large.
    #[error(transparent)]
    Amount(#[from] AmountError),
}

/// What a top-up will charge and credit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// What the customer pays.
    pub price: Money,
    /// Credits bought, rounded towards zero to the ledger scale.
    pub credits: Credits,
    /// Bonus credits of the tier that applies (zero for packs and below every tier).
    pub bonus: Credits,
}

impl TopUpPolicy {
    /// Credits bought by `money`: `amount × credits_per_unit`, rounded **towards zero** to the
    /// ledger scale (rounding point 2 of [`crate::money`]).
    pub fn credits_for(&self, money: &Money) -> Result<Credits, AmountError> {
        let exact = money
            .amount()
            .checked_mul(self.credits_per_unit)
            .ok_or(AmountError::OutOfRange)?;
        Credits::round_toward_zero(exact)
    }

    /// The tier that applies to `amount`, if any.
    pub fn tier_for(&self, amount: Decimal) -> Option<&BonusTier> {
        self.bonus_tiers
            .iter()
            .filter(|t| amount >= t.from)
            .max_by(|a, b| a.from.cmp(&b.from))
    }

    /// Prices a custom-amount top-up.
    ///
    /// # Examples
    ///
    /// ```
    /// use billing_core::Decimal;
    /// use billing_core::topup::{TopUpPolicy, TopUpRuleError};
    ///
    /// // The default policy: 1 credit per USD, +10% from $100.
    /// let policy = TopUpPolicy::default();
    /// let quote = policy.quote_amount(Decimal::new(100, 0)).expect("a valid amount");
    /// assert_eq!(quote.price.to_string(), "100.00 USD");
    /// assert_eq!(quote.credits.to_string(), "100");
    /// assert_eq!(quote.bonus.to_string(), "10");
    /// // Below the $5 minimum.
    /// assert!(matches!(
    ///     policy.quote_amount(Decimal::new(499, 2)),
    ///     Err(TopUpRuleError::BelowMinimum { .. })
    /// ));
    /// ```
    pub fn quote_amount(&self, amount: Decimal) -> Result<Quote, TopUpRuleError> {
        if amount <= Decimal::ZERO {
            return Err(AmountError::NotPositive.into());
        }
        let price = Money::new(amount, self.currency)?;
        if amount < self.minimum {
            return Err(TopUpRuleError::BelowMinimum {
                minimum: Money::new(self.minimum, self.currency)?,
            });
        }
        if amount >= self.contact_sales_from {
            return Err(TopUpRuleError::ContactSales {
                threshold: Money::new(self.contact_sales_from, self.currency)?,
            });
        }
        let credits = self.credits_for(&price)?;
        let bonus = match self.tier_for(amount) {
            Some(tier) => tier.bonus_for(credits)?,
            None => Credits::ZERO,
        };
        Ok(Quote {
            price,
            credits,
            bonus,
        })
    }

    /// Prices a pack: its price and credits, no bonus (packs carry their own discount).
    pub fn quote_pack(&self, pack: &Pack) -> Quote {
        Quote {
            price: pack.price,
            credits: pack.credits,
            bonus: Credits::ZERO,
        }
    }
}

/// Where a top-up stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopUpStatus {
    /// Created; the payment is neither confirmed nor refused yet.
    Pending,
    /// Paid: the wallet was credited. Final.
    Completed,
    /// The payment failed or was cancelled; nothing was credited (a later payment may still
    /// complete it).
    Failed,
}

impl TopUpStatus {
    /// The wire and storage name (`pending`, `completed`, `failed`).
    pub fn as_str(self) -> &'static str {
        match self {
            TopUpStatus::Pending => "pending",
            TopUpStatus::Completed => "completed",
            TopUpStatus::Failed => "failed",
        }
    }
}

impl fmt::Display for TopUpStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status name that is not `pending`, `completed` or `failed`; holds the text as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown top-up status {0:?}")]
pub struct UnknownTopUpStatusError(pub String);

impl FromStr for TopUpStatus {
    type Err = UnknownTopUpStatusError;
    fn from_str(s: &str) -> Result<TopUpStatus, UnknownTopUpStatusError> {
        match s {
            "pending" => Ok(TopUpStatus::Pending),
            "completed" => Ok(TopUpStatus::Completed),
            "failed" => Ok(TopUpStatus::Failed),
            other => Err(UnknownTopUpStatusError(other.to_owned())),
        }
    }
}

/// A top-up: one attempt to buy credits through a gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopUp {
    /// The top-up's id (`topup_…`; `topup_auto_…` for auto top-ups).
    pub id: TopUpId,
    /// The account it credits.
    pub account_id: AccountId,
    /// The pack bought, or `None` for a custom amount or an auto top-up.
    pub pack_id: Option<PackId>,
    /// The pack's name at purchase time, or `None` for a custom amount.
    pub pack_name: Option<String>,
    /// What the customer pays.
    pub price: Money,
    /// Credits added on completion, as a `topup` entry.
    pub credits: Credits,
    /// Bonus credits added on completion, as a separate `bonus` entry when positive.
    pub bonus: Credits,
    /// Where it stands: `pending`, then `completed` or `failed` as [`decide_transition`] allows.
    pub status: TopUpStatus,
    /// The gateway that takes the payment (`sandbox`, `stripe`, `myfatoorah`).
    pub gateway: String,
    /// The gateway's id for the payment (checkout session, invoice), once known.
    pub payment_ref: Option<String>,
    /// The gateway's hosted page where the customer pays, once a checkout created one.
    pub checkout_url: Option<String>,
    /// Why it failed, once it has (for example
    /// [`REASON_CANCELLED`](crate::autotopup::REASON_CANCELLED)).
    pub failure_reason: Option<String>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

impl TopUp {
    /// A checkout the customer started, or a charge auto top-up made (its id, minted only
    /// by [`crate::autotopup::decide_auto_topup`], starts `topup_auto_`).
    pub fn origin(&self) -> TopUpOrigin {
        if self.id.as_str().starts_with(AUTO_TOPUP_ID_PREFIX) {
            TopUpOrigin::AutoTopUp
        } else {
            TopUpOrigin::Checkout
        }
    }
}

/// The id prefix of auto top-ups.
pub const AUTO_TOPUP_ID_PREFIX: &str = "topup_auto_";

/// How a top-up started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopUpOrigin {
    /// The customer started a checkout.
    Checkout,
    /// Auto top-up charged the saved payment method (the id starts with [`AUTO_TOPUP_ID_PREFIX`]).
    AutoTopUp,
}

impl TopUpOrigin {
    /// The wire and storage name (`checkout`, `auto_topup`).
    pub fn as_str(self) -> &'static str {
        match self {
            TopUpOrigin::Checkout => "checkout",
            TopUpOrigin::AutoTopUp => "auto_topup",
        }
    }

    /// The origin of a wire or storage name; `None` for an unknown one.
    pub fn parse(s: &str) -> Option<TopUpOrigin> {
        match s {
            "checkout" => Some(TopUpOrigin::Checkout),
            "auto_topup" => Some(TopUpOrigin::AutoTopUp),
            _ => None,
        }
    }
}

/// What a store does when asked to move a top-up to `target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Apply the change (and, for completion, credit the wallet).
    Apply,
    /// Already in that state: change nothing, report success.
    AlreadyDone,
    /// Not allowed from the current state: change nothing.
    Refused,
}

/// The top-up state machine, applied by stores to the row they have locked.
///
/// - `pending → completed` credits the wallet; `pending → failed` credits nothing.
/// - `failed → completed` is allowed: a gateway may report a failed attempt and later a paid
///   one for the same payment (MyFatoorah invoices accept retries). Money received always
///   credits, once.
/// - `completed` is final: a completed top-up never fails and never credits again.
pub fn decide_transition(current: TopUpStatus, target: TopUpStatus) -> Transition {
    use TopUpStatus::*;
    match (current, target) {
        (Pending, Completed) | (Pending, Failed) | (Failed, Completed) => Transition::Apply,
        (Completed, Completed) | (Failed, Failed) => Transition::AlreadyDone,
        _ => Transition::Refused,
    }
}

impl TopUp {
    /// The entries that completing this top-up appends: the credits as a `topup` entry, then
    /// the bonus (if any) as its own `bonus` entry. Both reference the top-up id.
    pub fn completion_entries(&self, topup_entry: EntryId, bonus_entry: EntryId) -> Vec<NewEntry> {
        let description = match &self.pack_name {
            Some(name) => format!("Credit top-up - {name}"),
            None => "Credit top-up".to_owned(),
        };
        let mut entries = vec![NewEntry {
            id: topup_entry,
            kind: EntryKind::TopUp,
            amount: self.credits,
            description,
            reference: Some(self.id.as_str().to_owned()),
            usage: None,
        }];
        if self.bonus.is_positive() {
            entries.push(NewEntry {
                id: bonus_entry,
                kind: EntryKind::Bonus,
                amount: self.bonus,
                description: "Top-up bonus".to_owned(),
                reference: Some(self.id.as_str().to_owned()),
                usage: None,
            });
        }
        entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str_exact(s).expect("test decimal")
    }

    /// The seed document's table, row by row.
    #[test]
    fn default_policy_matches_the_seed_table() {
        let policy = TopUpPolicy::default();
        for (amount, total) in [
            ("10", "10"),
            ("25", "25"),
            ("50", "52.5"),
            ("100", "110"),
            ("250", "287.5"),
            ("49.99", "49.99"),
            ("499.99", "574.9885"),
        ] {
            let quote = policy.quote_amount(d(amount)).expect(amount);
            let sum = quote.credits.checked_add(quote.bonus).expect("in range");
            assert_eq!(sum.value(), d(total), "{amount}");
        }
        assert!(matches!(
            policy.quote_amount(d("500")),
            Err(TopUpRuleError::ContactSales { .. })
        ));
        assert!(matches!(
            policy.quote_amount(d("4.99")),
            Err(TopUpRuleError::BelowMinimum { .. })
        ));
        assert!(matches!(
            policy.quote_amount(d("10.001")),
            Err(TopUpRuleError::Amount(AmountError::TooPrecise { .. }))
        ));
        assert!(matches!(
            policy.quote_amount(d("-10")),
            Err(TopUpRuleError::Amount(AmountError::NotPositive))
        ));
    }

    #[test]
    fn bonus_rounds_toward_zero_at_ledger_scale() {
        let tier = BonusTier {
            from: Decimal::ZERO,
            percent: d("3.3333"),
        };
        let bonus = tier
            .bonus_for(Credits::new(d("0.000000007")).expect("valid"))
            .expect("in range");
        // 0.000000007 × 3.3333% = 0.000000000233331 → 0 at scale 9.
        assert_eq!(bonus, Credits::ZERO);
    }

    #[test]
    fn transitions() {
        use TopUpStatus::*;
        assert_eq!(decide_transition(Pending, Completed), Transition::Apply);
        assert_eq!(
            decide_transition(Completed, Completed),
            Transition::AlreadyDone
        );
        assert_eq!(decide_transition(Completed, Failed), Transition::Refused);
        assert_eq!(decide_transition(Failed, Completed), Transition::Apply);
        assert_eq!(decide_transition(Pending, Pending), Transition::Refused);
    }
}
