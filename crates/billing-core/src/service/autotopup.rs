//! Auto top-up's use cases: its settings, the saved payment method, and the off-session
//! charge the outbox asks for.

use rust_decimal::Decimal;

use super::Billing;
use crate::autotopup::{AutoTopUpSettings, AutoTopUpState, SavedMethod};
use crate::ids::{AccountId, TopUpId};
use crate::money::{Credits, Money};
use crate::ports::{GatewayError, StoreError};
use crate::topup::{TopUp, TopUpOrigin, TopUpRuleError, TopUpStatus};

/// How long an auto top-up's charge is retried: under the 24 hours gateways keep an
/// idempotency key (Stripe), so a late retry can never make a second charge.
pub const AUTO_TOPUP_CHARGE_WINDOW_SECS: i64 = 23 * 3_600;

/// Why auto top-up settings were refused. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetAutoTopUpError {
    /// A field is missing or out of range (names it).
    #[error("{0}")]
    Invalid(String),
    /// `amount` is below the top-up minimum (`below_minimum`) or at or above the
    /// contact-sales threshold (`contact_sales`): the same rules, and answers, as a custom
    /// top-up's.
    #[error("amount: {0}")]
    Amount(TopUpRuleError),
    /// Enabling needs a saved payment method (a top-up paid with `save_payment_method`).
    #[error(
        "auto top-up needs a saved payment method: pay a top-up with \"save_payment_method\": true first"
    )]
    PaymentMethodRequired,
    /// There is no such account.
    #[error("account not found")]
    AccountNotFound,
    /// The storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a customer sends (`amount` and `monthly_cap` in the top-up currency).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoTopUpInput {
    /// On (needs `threshold`, `amount` and a saved payment method) or off.
    pub enabled: bool,
    /// Charge when a debit leaves the balance below this, in the wallet unit; positive.
    pub threshold: Option<Decimal>,
    /// What each charge pays, in major units of the top-up currency; priced like a custom
    /// top-up (minimum, contact-sales threshold, bonus tiers).
    pub amount: Option<Decimal>,
    /// The most charged per calendar month; `None`: [`crate::autotopup::MONTHLY_CAP_MULTIPLE`]
    /// × `amount`.
    pub monthly_cap: Option<Decimal>,
}

/// The settings, what the service recorded, and the saved method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoTopUpView {
    /// What the customer set, with the quote of `amount` (credits and bonus).
    pub settings: AutoTopUpSettings,
    /// The charges made this month, the failures in a row and any pause, as of now.
    pub state: AutoTopUpState,
    /// The saved payment method charges use; `None` when none is saved.
    pub method: Option<SavedMethod>,
}

impl Billing {
    /// Consecutive failed charges that turn auto top-up off (default 3).
    pub fn with_auto_topup_failures_max(mut self, failures: u32) -> Billing {
        self.auto_topup_failures_max = failures.max(1);
        self
    }

    /// The account's auto top-up as of now; `None` for no account.
    pub async fn auto_topup(
        &self,
        account_id: &AccountId,
    ) -> Result<Option<AutoTopUpView>, StoreError> {
        let Some((settings, state)) = self.store.auto_topup(account_id).await? else {
            return Ok(None);
        };
        let method = self.store.payment_method(account_id).await?;
        Ok(Some(AutoTopUpView {
            settings,
            state: state.at(self.clock.now()),
            method,
        }))
    }

    /// Replaces the settings. `threshold` is a positive wallet amount with at most
    /// `decimals` decimals; `amount` is priced like a custom top-up (within the minimum and
    /// the contact-sales threshold, bonus tiers apply); `monthly_cap`, if given, is at least
    /// `amount`. Enabling needs `threshold`, `amount` and a saved payment method.
    pub async fn set_auto_topup(
        &self,
        account_id: &AccountId,
        input: &AutoTopUpInput,
        decimals: u32,
    ) -> Result<AutoTopUpView, SetAutoTopUpError> {
        let invalid = SetAutoTopUpError::Invalid;
        let threshold = input
            .threshold
            .map(|t| {
                if t.normalize().scale() > decimals {
                    return Err(invalid(format!(
                        "threshold has more than {decimals} decimals"
                    )));
                }
                Credits::positive(t).map_err(|e| invalid(format!("threshold: {e}")))
            })
            .transpose()?;
        let quote = input
            .amount
            .map(|a| {
                self.policy.quote_amount(a).map_err(|e| match e {
                    TopUpRuleError::Amount(e) => invalid(format!("amount: {e}")),
                    rule => SetAutoTopUpError::Amount(rule),
                })
            })
            .transpose()?;
        let currency = self.policy.currency;
        let monthly_cap = input
            .monthly_cap
            .map(|c| {
                let cap =
                    Money::new(c, currency).map_err(|e| invalid(format!("monthly_cap: {e}")))?;
                // A cap below `amount` is allowed: it lets no charge through (auto top-up
                // pauses at its first crossing and says so).
                if cap.is_zero() || c < Decimal::ZERO {
                    return Err(invalid("monthly_cap must be greater than zero".into()));
                }
                Ok(cap)
            })
            .transpose()?;
        if input.enabled && threshold.is_none() {
            return Err(invalid(
                "threshold is required when auto top-up is enabled".into(),
            ));
        }
        if input.enabled && quote.is_none() {
            return Err(invalid(
                "amount is required when auto top-up is enabled".into(),
            ));
        }
        let method = self.store.payment_method(account_id).await?;
        if input.enabled {
            let Some(method) = &method else {
                if self.store.account(account_id).await?.is_none() {
                    return Err(SetAutoTopUpError::AccountNotFound);
                }
                return Err(SetAutoTopUpError::PaymentMethodRequired);
            };
            if self.gateways.get(&method.gateway).is_none() {
                return Err(SetAutoTopUpError::PaymentMethodRequired);
            }
        }
        let settings = AutoTopUpSettings {
            enabled: input.enabled,
            threshold,
            amount: quote.as_ref().map(|q| q.price),
            monthly_cap,
            credits: quote.as_ref().map_or(Credits::ZERO, |q| q.credits),
            bonus: quote.as_ref().map_or(Credits::ZERO, |q| q.bonus),
            failure_limit: self.auto_topup_failures_max,
        };
        if !self.store.set_auto_topup(account_id, &settings).await? {
            return Err(SetAutoTopUpError::AccountNotFound);
        }
        self.auto_topup(account_id)
            .await?
            .ok_or(SetAutoTopUpError::AccountNotFound)
    }

    /// The saved payment method; `Ok(None)` when none is saved.
    pub async fn payment_method(
        &self,
        account_id: &AccountId,
    ) -> Result<Option<SavedMethod>, StoreError> {
        self.store.payment_method(account_id).await
    }

    /// Removes the saved method; auto top-up turns off. `false` when none was saved.
    pub async fn delete_payment_method(&self, account_id: &AccountId) -> Result<bool, StoreError> {
        self.store.delete_payment_method(account_id).await
    }

    /// After a checkout top-up completed: the method it saved, if the customer asked.
    pub(super) async fn remember_saved_method(&self, topup: &TopUp) -> Result<(), GatewayError> {
        if topup.origin() != TopUpOrigin::Checkout {
            return Ok(());
        }
        let Some(gateway) = self.gateways.get(&topup.gateway) else {
            return Ok(());
        };
        if let Some(mut method) = gateway.saved_method(topup).await? {
            method.saved_at = self.clock.now();
            self.store
                .save_payment_method(&topup.account_id, &method)
                .await
                .map_err(|e| GatewayError::Transient(e.to_string()))?;
        }
        Ok(())
    }

    /// For the email about an auto top-up that failed because the bank wants the customer
    /// (`authentication_required`): a checkout for the same amount, with the card saved
    /// again, whose link the email carries. Idempotent per notice (a retried email links the
    /// same checkout). `None` for any other notice.
    pub(super) async fn authentication_checkout(
        &self,
        notice: &crate::notices::Notice,
    ) -> Result<Option<String>, String> {
        let needs_customer = notice.topic == crate::notices::Topic::AutoTopUpFailed
            && notice
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("authentication_required"));
        if !needs_customer {
            return Ok(None);
        }
        let failed = self
            .store
            .topup(&TopUpId::new(notice.cause.id()))
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("top-up {} is missing", notice.cause.id()))?;
        let key = format!("authenticate-{}", notice.id);
        let checkout = self
            .create_topup_with(
                &notice.account_id,
                &super::TopUpRequest::Amount(failed.price.amount()),
                Some(&failed.gateway),
                Some(&key),
                true,
            )
            .await
            .map_err(|e| format!("checkout for {}: {e}", notice.id))?;
        Ok(checkout.checkout_url)
    }

    /// Makes an auto top-up's off-session charge (from the outbox). Idempotent: the gateway
    /// charges once per top-up id, and a top-up already charged or settled is left alone.
    /// A decline fails the top-up (the store counts it). `Err` is a failure to retry; on
    /// the `last_attempt`, the top-up fails instead so that the next crossing may charge.
    pub async fn charge_auto_topup(
        &self,
        topup_id: &TopUpId,
        last_attempt: bool,
        past_window: bool,
    ) -> Result<(), String> {
        let topup = self
            .store
            .topup(topup_id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("auto top-up {topup_id} is missing"))?;
        if topup.status != TopUpStatus::Pending || topup.payment_ref.is_some() {
            return Ok(());
        }
        // Turned off (or its method removed) since the debit decided: no charge.
        let (settings, state) = self
            .store
            .auto_topup(&topup.account_id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("account {} is gone", topup.account_id))?;
        if !settings.enabled || state.pending.as_ref() != Some(&topup.id) {
            self.store
                .transition_topup(
                    &topup.id,
                    TopUpStatus::Failed,
                    Vec::new(),
                    Some(crate::autotopup::REASON_CANCELLED.to_owned()),
                    self.clock.now(),
                )
                .await
                .map_err(|e| e.to_string())?;
            return Ok(());
        }
        let method = self
            .store
            .payment_method(&topup.account_id)
            .await
            .map_err(|e| e.to_string())?
            .filter(|m| m.gateway == topup.gateway);
        let gateway = self.gateways.get(&topup.gateway).cloned();
        let outcome = match (method, gateway) {
            _ if past_window => Err(GatewayError::Transient("past the charge window".to_owned())),
            (Some(method), Some(gateway)) => gateway.charge_saved(&method, &topup).await,
            _ => Err(GatewayError::Declined("payment_method_removed".into())),
        };
        let reason = match outcome {
            Ok(payment_ref) => {
                self.store
                    .set_checkout(&topup.id, &payment_ref, "", self.clock.now())
                    .await
                    .map_err(|e| e.to_string())?;
                // Settled at once when the gateway already knows (a card charged on the
                // spot); otherwise its notification or reconciliation settles it.
                if let Some(gateway) = self.gateways.get(&topup.gateway).cloned() {
                    let charged = TopUp {
                        payment_ref: Some(payment_ref),
                        ..topup
                    };
                    let _ = self.settle(gateway.as_ref(), charged).await;
                }
                return Ok(());
            }
            Err(GatewayError::Declined(reason)) => reason,
            // Anything else may be passing (an outage, a key being rotated) or may even have
            // charged (a timeout): retried with the same idempotency key, and only on the
            // last attempt failed (a late notification still credits it).
            Err(e) if last_attempt => format!("charge not made: {e}"),
            Err(e) => return Err(e.to_string()),
        };
        self.store
            .transition_topup(
                &topup.id,
                TopUpStatus::Failed,
                Vec::new(),
                Some(reason),
                self.clock.now(),
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}
