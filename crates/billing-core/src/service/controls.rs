//! Wallet controls: the monthly spending limit and the low-balance alert.

use rust_decimal::Decimal;

use super::Billing;
use crate::controls::{LimitAction, MonthSpend, SpendingLimit};
use crate::ids::AccountId;
use crate::money::Credits;
use crate::notices::LowBalanceAlert;
use crate::ports::StoreError;

/// Why a spending limit or low-balance alert was not set. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetControlError {
    /// A value was refused (an unknown action, not positive, too many decimals, missing when
    /// enabled); the text says which.
    #[error("{0}")]
    Invalid(String),
    /// There is no such account.
    #[error("account not found")]
    AccountNotFound,
    /// The storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Billing {
    /// The account's spending limit and what it spent this month (UTC); `None` for no
    /// account.
    pub async fn spending_limit(
        &self,
        account_id: &AccountId,
    ) -> Result<Option<(SpendingLimit, MonthSpend)>, StoreError> {
        let now = self.clock.now();
        Ok(self
            .store
            .spending(account_id)
            .await?
            .map(|(limit, spend)| (limit, spend.at(now))))
    }

    /// Replaces the spending limit. `monthly_limit` is positive with at most `decimals`
    /// decimals (the wallet unit's), required when enabled.
    pub async fn set_spending_limit(
        &self,
        account_id: &AccountId,
        enabled: bool,
        monthly_limit: Option<Decimal>,
        action: &str,
        decimals: u32,
    ) -> Result<SpendingLimit, SetControlError> {
        let action: LimitAction = action.parse().map_err(SetControlError::Invalid)?;
        let monthly_limit = monthly_limit
            .map(|limit| positive_setting("monthly_limit", limit, decimals))
            .transpose()?;
        let limit =
            SpendingLimit::new(enabled, monthly_limit, action).map_err(SetControlError::Invalid)?;
        if !self.store.set_spending_limit(account_id, &limit).await? {
            return Err(SetControlError::AccountNotFound);
        }
        Ok(limit)
    }

    /// The account's low-balance alert; `None` for no account.
    pub async fn low_balance_alert(
        &self,
        account_id: &AccountId,
    ) -> Result<Option<LowBalanceAlert>, StoreError> {
        self.store.low_balance_alert(account_id).await
    }

    /// Replaces the low-balance alert. `threshold` is positive with at most `decimals`
    /// decimals, required when enabled.
    pub async fn set_low_balance_alert(
        &self,
        account_id: &AccountId,
        enabled: bool,
        threshold: Option<Decimal>,
        decimals: u32,
    ) -> Result<LowBalanceAlert, SetControlError> {
        let threshold = threshold
            .map(|t| positive_setting("threshold", t, decimals))
            .transpose()?;
        let alert = LowBalanceAlert::new(enabled, threshold).map_err(SetControlError::Invalid)?;
        if !self.store.set_low_balance_alert(account_id, &alert).await? {
            return Err(SetControlError::AccountNotFound);
        }
        Ok(alert)
    }
}

/// A positive credit amount a customer sets, with at most `decimals` decimals.
fn positive_setting(
    field: &str,
    value: Decimal,
    decimals: u32,
) -> Result<Credits, SetControlError> {
    if value.normalize().scale() > decimals {
        return Err(SetControlError::Invalid(format!(
            "{field} has more than {decimals} decimals"
        )));
    }
    Credits::positive(value).map_err(|e| SetControlError::Invalid(format!("{field}: {e}")))
}
