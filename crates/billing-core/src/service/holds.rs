//! Authorization holds: reserve the most a call can cost, capture the actual cost, release
//! the rest; extend while a response streams; expire on their own.

use rust_decimal::Decimal;

use super::{Billing, LedgerOpError, check_text, claim, text_field};
use crate::holds::{
    HOLD_EXPIRY_DEFAULT_SECS, HOLD_EXPIRY_MAX_SECS, Hold, HoldAction, HoldRuleError, HoldStatus,
};
use crate::ids::{AccountId, EntryId, HoldId};
use crate::ledger::{DESCRIPTION_LENGTH_MAX, EntryKind, NewEntry, PostingRuleError};
use crate::money::{AmountError, Credits};
use crate::ports::{HoldError, HoldOutcome, IdempotencyClaim, StoreError};
use crate::pricing::UsageDetail;

/// What a new hold reserves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldCharge {
    /// An amount, positive, in the wallet's unit.
    Amount(Decimal),
    /// The most a call to `model` can cost, priced by the rate card now; a capture by
    /// tokens uses these prices.
    Tokens {
        /// The rate card's model name.
        model: String,
        /// The most input (prompt) tokens the call may use.
        max_input_tokens: u64,
        /// The most output (completion) tokens the call may produce.
        max_output_tokens: u64,
    },
}

/// What a capture debits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptureCharge {
    /// An amount from zero to the held amount.
    Amount(Decimal),
    /// Tokens, priced at the hold's prices.
    Tokens {
        /// Input (prompt) tokens the call used.
        input_tokens: u64,
        /// Output (completion) tokens the call produced.
        output_tokens: u64,
    },
}

/// Why a hold operation did not happen. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HoldOpError {
    /// A malformed request (amount, expiry, description, idempotency key, a capture by tokens
    /// of a hold placed by amount); the text says which.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// There is no such account.
    #[error("account not found")]
    AccountNotFound,
    /// The account has no hold with this id.
    #[error("hold not found")]
    HoldNotFound,
    /// The most the call can cost is zero at the rate card's prices.
    #[error("the most this call can cost is nothing at the rate card's prices: no hold is needed")]
    NothingToHold,
    /// The rate card has no rate for this model.
    #[error("no rate for model {0:?}")]
    UnknownModel(String),
    /// The hold was already captured, released or expired: its status.
    #[error("the hold is {0}, not active")]
    NotActive(HoldStatus),
    /// The capture asks for more than the hold reserves.
    #[error("capture of {requested} exceeds the {held} held")]
    CaptureExceedsHold {
        /// What the hold reserves, in the wallet unit.
        held: Credits,
        /// The capture asked for, in the wallet unit.
        requested: Credits,
    },
    /// The available balance (the balance less active holds) does not cover the hold or the
    /// extend's increase.
    #[error("insufficient balance: {available} available, {requested} requested")]
    InsufficientFunds {
        /// The balance less active holds, in the wallet unit.
        available: Credits,
        /// The amount asked for, in the wallet unit.
        requested: Credits,
    },
    /// The key was already used on this hold operation with a different request.
    #[error("idempotency key already used with a different request")]
    IdempotencyConflict,
    /// The monthly spending limit refuses it; the text gives the limit and the spend.
    #[error("{0}")]
    SpendingLimitExceeded(String),
    /// The storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<HoldError> for HoldOpError {
    fn from(e: HoldError) -> HoldOpError {
        match e {
            HoldError::AccountNotFound => HoldOpError::AccountNotFound,
            HoldError::HoldNotFound => HoldOpError::HoldNotFound,
            HoldError::Rule(rule) => rule.into(),
            HoldError::IdempotencyConflict => HoldOpError::IdempotencyConflict,
            HoldError::Store(e) => HoldOpError::Store(e),
        }
    }
}

impl From<HoldRuleError> for HoldOpError {
    fn from(e: HoldRuleError) -> HoldOpError {
        match e {
            HoldRuleError::NotActive(status) => HoldOpError::NotActive(status),
            HoldRuleError::CaptureExceedsHold { held, requested } => {
                HoldOpError::CaptureExceedsHold { held, requested }
            }
            HoldRuleError::Posting(PostingRuleError::InsufficientFunds {
                available,
                requested,
            }) => HoldOpError::InsufficientFunds {
                available,
                requested,
            },
            HoldRuleError::Posting(rule @ PostingRuleError::SpendingLimitExceeded { .. }) => {
                HoldOpError::SpendingLimitExceeded(rule.to_string())
            }
            HoldRuleError::Posting(rule) => HoldOpError::Invalid(rule.to_string()),
        }
    }
}

impl From<AmountError> for HoldOpError {
    fn from(e: AmountError) -> HoldOpError {
        HoldOpError::Invalid(format!("amount: {e}"))
    }
}

impl From<LedgerOpError> for HoldOpError {
    fn from(e: LedgerOpError) -> HoldOpError {
        match e {
            LedgerOpError::UnknownModel(model) => HoldOpError::UnknownModel(model),
            LedgerOpError::Store(e) => HoldOpError::Store(e),
            other => HoldOpError::Invalid(other.to_string()),
        }
    }
}

fn expiry_secs(secs: Option<i64>) -> Result<i64, HoldOpError> {
    let secs = secs.unwrap_or(HOLD_EXPIRY_DEFAULT_SECS);
    if !(1..=HOLD_EXPIRY_MAX_SECS).contains(&secs) {
        return Err(HoldOpError::Invalid(format!(
            "expires_in_seconds must be 1 to {HOLD_EXPIRY_MAX_SECS}"
        )));
    }
    Ok(secs)
}

fn hold_claim(
    account_id: &AccountId,
    operation: &str,
    key: &str,
    fingerprint: String,
) -> Result<Option<IdempotencyClaim>, HoldOpError> {
    claim(account_id, operation, Some(key), fingerprint).map_err(HoldOpError::Invalid)
}

impl Billing {
    /// Reserves the most a call can cost, if the available balance covers it.
    pub async fn place_hold(
        &self,
        account_id: &AccountId,
        charge: &HoldCharge,
        expires_in_secs: Option<i64>,
        idempotency_key: &str,
    ) -> Result<HoldOutcome, HoldOpError> {
        let secs = expiry_secs(expires_in_secs)?;
        let (amount, rate, fingerprint) = match charge {
            HoldCharge::Amount(amount) => {
                let amount = Credits::positive(*amount)?;
                (amount, None, format!("hold|amount|{amount}"))
            }
            HoldCharge::Tokens {
                model,
                max_input_tokens,
                max_output_tokens,
            } => {
                let rate = self.rate_of(model).await?;
                let (cost, _) = rate
                    .price(*max_input_tokens, *max_output_tokens)
                    .map_err(|e| HoldOpError::Invalid(e.to_string()))?;
                if !cost.is_positive() {
                    return Err(HoldOpError::NothingToHold);
                }
                let fingerprint =
                    format!("hold|tokens|{model}|{max_input_tokens}|{max_output_tokens}");
                (cost, Some(rate), fingerprint)
            }
        };
        let claim = hold_claim(
            account_id,
            "hold",
            idempotency_key,
            format!("{fingerprint}|{secs}"),
        )?;
        let now = self.clock.now();
        let hold = Hold {
            id: HoldId::new(self.ids.new_id(HoldId::PREFIX)),
            account_id: account_id.clone(),
            amount,
            status: HoldStatus::Active,
            captured_amount: None,
            entry_id: None,
            rate,
            created_at: now,
            expires_at: now.plus_secs(secs),
            updated_at: now,
        };
        Ok(self.store.place_hold(&hold, claim.as_ref(), now).await?)
    }

    /// One hold of one account; `None` when it does not exist or is another account's.
    pub async fn hold(&self, id: &HoldId) -> Result<Option<Hold>, StoreError> {
        self.store.hold(id).await
    }

    async fn hold_of(&self, account_id: &AccountId, id: &HoldId) -> Result<Hold, HoldOpError> {
        self.store
            .hold(id)
            .await?
            .filter(|h| &h.account_id == account_id)
            .ok_or(HoldOpError::HoldNotFound)
    }

    /// Settles a hold: debits the actual cost (at most the held amount) as one `usage`
    /// entry whose reference is the hold's id, and releases the rest.
    pub async fn capture_hold(
        &self,
        account_id: &AccountId,
        id: &HoldId,
        charge: &CaptureCharge,
        description: Option<&str>,
        idempotency_key: &str,
    ) -> Result<HoldOutcome, HoldOpError> {
        let hold = self.hold_of(account_id, id).await?;
        let (amount, usage, fingerprint) = match charge {
            CaptureCharge::Amount(amount) => {
                let amount = Credits::new(*amount)?;
                if amount.is_negative() {
                    return Err(AmountError::NotPositive.into());
                }
                (amount, None, format!("capture|amount|{amount}"))
            }
            CaptureCharge::Tokens {
                input_tokens,
                output_tokens,
            } => {
                let rate = hold.rate.as_ref().ok_or_else(|| {
                    HoldOpError::Invalid("this hold was placed by amount: capture an amount".into())
                })?;
                let (cost, detail): (Credits, UsageDetail) = rate
                    .price(*input_tokens, *output_tokens)
                    .map_err(|e| HoldOpError::Invalid(e.to_string()))?;
                (
                    cost,
                    Some(detail),
                    format!("capture|tokens|{input_tokens}|{output_tokens}"),
                )
            }
        };
        let description = match (description, &usage) {
            (Some(d), _) => d.to_owned(),
            (None, Some(detail)) => format!("API usage - {}", detail.model),
            (None, None) => "API usage".to_owned(),
        };
        check_text("description", &description, DESCRIPTION_LENGTH_MAX)
            .map_err(HoldOpError::Invalid)?;
        let entry = amount.is_positive().then(|| NewEntry {
            id: EntryId::new(self.ids.new_id(EntryId::PREFIX)),
            kind: EntryKind::Usage,
            amount: amount.negated(),
            description: description.clone(),
            reference: Some(id.as_str().to_owned()),
            usage,
        });
        let claim = hold_claim(
            account_id,
            &format!("capture:{id}"),
            idempotency_key,
            format!("{fingerprint}|{}", text_field(&description)),
        )?;
        let action = HoldAction::Capture { amount, entry };
        Ok(self
            .store
            .change_hold(account_id, id, &action, claim.as_ref(), self.clock.now())
            .await?)
    }

    /// Ends a hold without debiting anything.
    pub async fn release_hold(
        &self,
        account_id: &AccountId,
        id: &HoldId,
        idempotency_key: &str,
    ) -> Result<HoldOutcome, HoldOpError> {
        self.hold_of(account_id, id).await?;
        let claim = hold_claim(
            account_id,
            &format!("release:{id}"),
            idempotency_key,
            "release".into(),
        )?;
        Ok(self
            .store
            .change_hold(
                account_id,
                id,
                &HoldAction::Release,
                claim.as_ref(),
                self.clock.now(),
            )
            .await?)
    }

    /// Keeps a hold alive for `expires_in_secs` from now (a streamed response), and when
    /// `amount` is given makes it the new total (an increase must fit the available
    /// balance).
    pub async fn extend_hold(
        &self,
        account_id: &AccountId,
        id: &HoldId,
        expires_in_secs: i64,
        amount: Option<Decimal>,
        idempotency_key: &str,
    ) -> Result<HoldOutcome, HoldOpError> {
        self.hold_of(account_id, id).await?;
        let secs = expiry_secs(Some(expires_in_secs))?;
        let amount = amount.map(Credits::positive).transpose()?;
        let claim = hold_claim(
            account_id,
            &format!("extend:{id}"),
            idempotency_key,
            format!(
                "extend|{secs}|{}",
                amount.map(|a| a.to_string()).unwrap_or_default()
            ),
        )?;
        let now = self.clock.now();
        let action = HoldAction::Extend {
            expires_at: now.plus_secs(secs),
            amount,
        };
        Ok(self
            .store
            .change_hold(account_id, id, &action, claim.as_ref(), now)
            .await?)
    }

    /// The balance less every active hold.
    pub async fn available(&self, account_id: &AccountId) -> Result<Credits, StoreError> {
        let now = self.clock.now();
        let wallet = self.store.wallet(account_id).await?;
        let reserved = self.store.reserved(account_id, now).await?;
        let balance = wallet.map(|w| w.balance).unwrap_or(Credits::ZERO);
        Ok(balance
            .checked_sub(reserved)
            .unwrap_or(Credits::ZERO)
            .max(Credits::ZERO))
    }

    /// Writes `expired` on holds past their expiry (they stopped counting already).
    pub async fn expire_holds(&self, limit: u32) -> Result<u32, StoreError> {
        self.store.expire_holds(self.clock.now(), limit).await
    }
}
