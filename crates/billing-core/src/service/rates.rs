//! The rate card: per-model prices for priced usage.

use rust_decimal::Decimal;

use super::{Billing, LedgerOpError};
use crate::ports::StoreError;
use crate::pricing::{PricingError, Rate};

/// Why a rate was not set or removed. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManageRateError {
    /// The model name or a price was refused.
    #[error(transparent)]
    Invalid(#[from] PricingError),
    /// Removing a model that has no rate.
    #[error("no rate for this model")]
    NotFound,
    /// The storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Billing {
    /// Every model's rate, by name.
    pub async fn rates(&self) -> Result<Vec<Rate>, StoreError> {
        self.store.rates().await
    }

    /// Creates or replaces a model's rate. Requests priced after it use the new prices;
    /// entries already written keep the prices they recorded.
    pub async fn set_rate(
        &self,
        model: &str,
        input_per_million: Decimal,
        output_per_million: Decimal,
    ) -> Result<Rate, ManageRateError> {
        let rate = Rate::new(model, input_per_million, output_per_million)?;
        self.store.upsert_rate(&rate, self.clock.now()).await?;
        Ok(rate)
    }

    /// Removes a model's rate: requests for it answer "unknown model" afterwards.
    pub async fn delete_rate(&self, model: &str) -> Result<(), ManageRateError> {
        if self.store.delete_rate(model).await? {
            Ok(())
        } else {
            Err(ManageRateError::NotFound)
        }
    }

    /// The rate of `model`, or `UnknownModel`.
    pub(super) async fn rate_of(&self, model: &str) -> Result<Rate, LedgerOpError> {
        self.store
            .rate(model)
            .await?
            .ok_or_else(|| LedgerOpError::UnknownModel(model.to_owned()))
    }
}
