//! Wallet controls: the monthly spending limit.

use rust_decimal::Decimal;

use super::Billing;
use crate::controls::{LimitAction, MonthSpend, SpendingLimit};
use crate::ids::AccountId;
use crate::money::Credits;
use crate::ports::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetControlError {
    #[error("{0}")]
    Invalid(String),
    #[error("account not found")]
    AccountNotFound,
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
            .map(|limit| {
                if limit.normalize().scale() > decimals {
                    return Err(SetControlError::Invalid(format!(
                        "monthly_limit has more than {decimals} decimals"
                    )));
                }
                Credits::positive(limit)
                    .map_err(|e| SetControlError::Invalid(format!("monthly_limit: {e}")))
            })
            .transpose()?;
        let limit =
            SpendingLimit::new(enabled, monthly_limit, action).map_err(SetControlError::Invalid)?;
        if !self.store.set_spending_limit(account_id, &limit).await? {
            return Err(SetControlError::AccountNotFound);
        }
        Ok(limit)
    }
}
