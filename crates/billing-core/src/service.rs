//! The use cases, over the ports. Every rule about money is applied here or in the pure
//! functions this module calls; adapters only store and transport. The rate card's use
//! cases are in `rates`.

mod autotopup;
mod controls;
mod holds;
mod outbox;
mod rates;
mod statement;

pub use autotopup::{
    AUTO_TOPUP_CHARGE_WINDOW_SECS, AutoTopUpInput, AutoTopUpView, SetAutoTopUpError,
};
pub use controls::SetControlError;
pub use holds::{CaptureCharge, HoldCharge, HoldOpError};
pub use outbox::{OUTBOX_LEASE_SECS, OutboxDelivery, OutboxRun};
pub use rates::ManageRateError;
pub use statement::{
    STATEMENT_ENTRIES_MAX, Statement, StatementError, StatementQuery, statement_of,
};

use std::collections::BTreeMap;
use std::sync::Arc;

use rust_decimal::Decimal;

use crate::ids::{AccountId, EntryId, PackId, TopUpId};
use crate::ledger::{
    DESCRIPTION_LENGTH_MAX, EntryKind, LedgerEntry, NewEntry, PostingRuleError, RefundRuleError,
};
use crate::money::{AmountError, Credits, Currency};
use crate::ports::{
    Account, CheckoutRequest, Clock, EntryQuery, GatewayError, IDEMPOTENCY_KEY_LENGTH_MAX,
    IdGenerator, IdempotencyClaim, InsertTopUpError, Inserted, Notification, PaymentGateway,
    PaymentStatus, PostError, Posted, Posting, Store, StoreError, TopUpPage, TransitionOutcome,
    Wallet,
};
use crate::topup::{Pack, Quote, TopUp, TopUpPolicy, TopUpRuleError, TopUpStatus};

/// Top-ups per history page (the seed document's 20).
pub const TOPUP_PAGE_SIZE: u32 = 20;
/// Largest page of transactions a caller may ask for.
pub const ENTRY_PAGE_SIZE_MAX: u32 = 100;
/// Highest history page number accepted (bounds the OFFSET a store is asked for).
pub const TOPUP_PAGE_MAX: u32 = 100_000;
/// Most usage entries one refund may name.
pub const REFUND_ENTRIES_MAX: usize = 100;
/// Limits on account fields, in characters.
pub const ACCOUNT_NAME_LENGTH_MAX: usize = 200;
/// Longest account email, in characters.
pub const ACCOUNT_EMAIL_LENGTH_MAX: usize = 254;

/// The payment gateways a deployment enabled, and the default one.
#[derive(Clone)]
pub struct Gateways {
    by_name: BTreeMap<String, Arc<dyn PaymentGateway>>,
    default: String,
}

impl Gateways {
    /// `default` must be the name of one of `gateways`.
    pub fn new(gateways: Vec<Arc<dyn PaymentGateway>>, default: &str) -> Option<Gateways> {
        let by_name: BTreeMap<String, Arc<dyn PaymentGateway>> = gateways
            .into_iter()
            .map(|g| (g.name().to_owned(), g))
            .collect();
        by_name.contains_key(default).then(|| Gateways {
            by_name,
            default: default.to_owned(),
        })
    }

    /// The enabled gateway named `name`; `None` when no such gateway is enabled.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn PaymentGateway>> {
        self.by_name.get(name)
    }

    /// The gateway a top-up uses when the customer names none.
    pub fn default_name(&self) -> &str {
        &self.default
    }

    /// The names of every enabled gateway, in sorted order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}

/// What a customer asks to buy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopUpRequest {
    /// A custom amount, in major units of the top-up currency, priced by [`TopUpPolicy`]
    /// (minimum, bonus tiers, contact-sales threshold).
    Amount(Decimal),
    /// An active pack, at its price and for its credits (no bonus).
    Pack(PackId),
}

/// Why an account was not created. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreateAccountError {
    /// The name or email was refused (empty, too long, control characters, not an email
    /// address); the text says which.
    #[error("invalid account: {0}")]
    Invalid(String),
    /// The storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a top-up was not created, or its checkout not started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreateTopUpError {
    /// There is no such account.
    #[error("account not found")]
    AccountNotFound,
    /// The pack does not exist or is no longer on sale.
    #[error("pack not found")]
    PackNotFound,
    /// No enabled gateway has this name.
    #[error("unknown payment gateway {0:?}")]
    UnknownGateway(String),
    /// The idempotency key is empty, longer than [`IDEMPOTENCY_KEY_LENGTH_MAX`] bytes, or not
    /// printable ASCII.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The amount breaks the top-up rules: below the minimum, at or above the contact-sales
    /// threshold, or not a valid amount of the currency.
    #[error(transparent)]
    Rule(#[from] TopUpRuleError),
    /// The key was already used on this account for a different top-up request (amount or
    /// pack, gateway).
    #[error("idempotency key already used with a different request")]
    IdempotencyConflict,
    /// `save_payment_method` with a gateway that cannot save one (MyFatoorah).
    #[error(
        "{0} cannot save a payment method for auto top-up: pay with a gateway that can (stripe, sandbox) or leave save_payment_method out"
    )]
    CannotSaveMethod(String),
    /// The gateway did not create the checkout; the top-up was recorded as failed.
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    /// The storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a usage debit, refund or grant did not happen. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerOpError {
    /// A malformed request (amount, description, idempotency key, refund entries) or another
    /// posting rule's refusal; the text says which.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// There is no such account.
    #[error("account not found")]
    AccountNotFound,
    /// The rate card has no rate for this model.
    #[error("no rate for model {0:?}")]
    UnknownModel(String),
    /// The tokens cost zero at the rate card's prices; nothing was recorded.
    #[error("the request costs nothing at the rate card's prices; nothing was recorded")]
    NothingToCharge,
    /// The monthly spending limit refuses the debit; the text gives the limit and the spend.
    #[error("{0}")]
    SpendingLimitExceeded(String),
    /// The available balance (the balance less active holds) does not cover the debit.
    #[error("insufficient balance: {available} available, {requested} requested")]
    InsufficientFunds {
        /// The balance less active holds, in the wallet unit.
        available: Credits,
        /// The debit asked for, in the wallet unit.
        requested: Credits,
    },
    /// The key was already used on this account for this operation with a different request.
    #[error("idempotency key already used with a different request")]
    IdempotencyConflict,
    /// A refund names no entries or entries that are not this account's usage, or gives back
    /// more than is still refundable on them.
    #[error(transparent)]
    Refund(#[from] RefundRuleError),
    /// The storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<PostError> for LedgerOpError {
    fn from(e: PostError) -> LedgerOpError {
        match e {
            PostError::AccountNotFound => LedgerOpError::AccountNotFound,
            PostError::Rule(PostingRuleError::InsufficientFunds {
                available,
                requested,
            }) => LedgerOpError::InsufficientFunds {
                available,
                requested,
            },
            PostError::Rule(rule @ PostingRuleError::SpendingLimitExceeded { .. }) => {
                LedgerOpError::SpendingLimitExceeded(rule.to_string())
            }
            PostError::Rule(rule) => LedgerOpError::Invalid(rule.to_string()),
            PostError::Refund(rule) => LedgerOpError::Refund(rule),
            PostError::IdempotencyConflict => LedgerOpError::IdempotencyConflict,
            PostError::Store(e) => LedgerOpError::Store(e),
        }
    }
}

impl From<AmountError> for LedgerOpError {
    fn from(e: AmountError) -> LedgerOpError {
        LedgerOpError::Invalid(e.to_string())
    }
}

/// Why a notification (or one reconciliation check) was not settled. A notification's event
/// is then not recorded as processed, so a redelivery is handled again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleNotificationError {
    /// No enabled gateway has this name.
    #[error("unknown payment gateway {0:?}")]
    UnknownGateway(String),
    /// The gateway rejected the notification's signature or could not give the payment's
    /// status.
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    /// The storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a verified notification or a reconciliation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettleOutcome {
    /// The top-up was completed now and the wallet credited.
    Completed(TopUp),
    /// The top-up was marked failed now.
    Failed(TopUp),
    /// Already settled: nothing changed.
    AlreadySettled(TopUp),
    /// The gateway does not say paid or failed yet: left pending.
    StillPending(TopUp),
    /// The gateway says paid, but not the amount or currency of the top-up: left pending
    /// for an operator, nothing credited.
    AmountMismatch(TopUp),
    /// The notification is about no top-up of ours, or a duplicate event: nothing changed.
    Ignored,
}

impl SettleOutcome {
    /// The outcome's name in webhook answers, logs and metrics: `completed`, `failed`,
    /// `already_settled`, `pending`, `amount_mismatch` or `ignored`.
    pub fn name(&self) -> &'static str {
        match self {
            SettleOutcome::Completed(_) => "completed",
            SettleOutcome::Failed(_) => "failed",
            SettleOutcome::AlreadySettled(_) => "already_settled",
            SettleOutcome::StillPending(_) => "pending",
            SettleOutcome::AmountMismatch(_) => "amount_mismatch",
            SettleOutcome::Ignored => "ignored",
        }
    }

    /// The top-up as it stands after settling; `None` when it was [`SettleOutcome::Ignored`].
    pub fn into_topup(self) -> Option<TopUp> {
        match self {
            SettleOutcome::Completed(t)
            | SettleOutcome::Failed(t)
            | SettleOutcome::AlreadySettled(t)
            | SettleOutcome::StillPending(t)
            | SettleOutcome::AmountMismatch(t) => Some(t),
            SettleOutcome::Ignored => None,
        }
    }
}

/// A page of ledger entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryPage {
    /// Newest first.
    pub entries: Vec<LedgerEntry>,
    /// Older entries exist beyond this page.
    pub has_more: bool,
}

/// A request to debit a wallet for usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRequest {
    /// What to debit: an amount, or tokens priced by the rate card.
    pub charge: UsageCharge,
    /// Shown in the customer's transactions; `API usage` (`API usage - <model>` when priced)
    /// when absent.
    pub description: Option<String>,
    /// Required: a retry with the same key and request replays the first debit, never charges
    /// twice; the same key with another request is a conflict.
    pub idempotency_key: String,
}

/// What a usage debit charges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageCharge {
    /// A finished amount, positive, in the wallet's unit.
    Amount(Decimal),
    /// Tokens priced by the rate card.
    Tokens {
        /// The rate card's model name.
        model: String,
        /// Input (prompt) tokens, priced at the rate's `input_per_million`.
        input_tokens: u64,
        /// Output (completion) tokens, priced at the rate's `output_per_million`.
        output_tokens: u64,
    },
}

/// The billing service: every use case of the wallet.
#[derive(Clone)]
pub struct Billing {
    store: Arc<dyn Store>,
    gateways: Gateways,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGenerator>,
    policy: TopUpPolicy,
    auto_topup_failures_max: u32,
}

/// A name: not empty, and no white space at either end (refused, not trimmed, so that what
/// is stored is what was sent).
fn check_name(field: &str, value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err(format!("{field} must not be empty"));
    }
    if value.trim() != value {
        return Err(format!("{field} must not start or end with white space"));
    }
    Ok(())
}

/// Free text inside a fingerprint, length-prefixed so that no text can pass for other
/// fields (`|` is allowed in descriptions).
fn text_field(text: &str) -> String {
    format!("{}:{text}", text.len())
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.chars().count() > max {
        return Err(format!("{field} is longer than {max} characters"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{field} contains control characters"));
    }
    Ok(())
}

fn claim(
    account_id: &AccountId,
    operation: &str,
    key: Option<&str>,
    fingerprint: String,
) -> Result<Option<IdempotencyClaim>, String> {
    let Some(key) = key else { return Ok(None) };
    if key.is_empty() || key.len() > IDEMPOTENCY_KEY_LENGTH_MAX {
        return Err(format!(
            "idempotency key must be 1 to {IDEMPOTENCY_KEY_LENGTH_MAX} bytes"
        ));
    }
    if !key.chars().all(|c| c.is_ascii_graphic()) {
        return Err("idempotency key must be printable ASCII".to_owned());
    }
    Ok(Some(IdempotencyClaim {
        scope: format!("{account_id}:{operation}"),
        key: key.to_owned(),
        fingerprint,
    }))
}

impl Billing {
    /// The service over its ports: `store`, the enabled `gateways`, the clock, the id
    /// generator and the top-up `policy`. Auto top-up turns off after
    /// [`crate::autotopup::AUTO_TOPUP_FAILURES_MAX`] failed charges in a row (see
    /// [`Billing::with_auto_topup_failures_max`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// use billing_core::ports::{MockPaymentGateway, PaymentGateway, Store};
    /// use billing_core::service::{Billing, Gateways};
    /// use billing_core::topup::TopUpPolicy;
    /// use billing_testkit::{InMemoryStore, ManualClock, SequentialIds};
    ///
    /// let mut sandbox = MockPaymentGateway::new();
    /// sandbox.expect_name().return_const("sandbox".to_owned());
    /// let sandbox: Arc<dyn PaymentGateway> = Arc::new(sandbox);
    /// let billing = Billing::new(
    ///     Arc::new(InMemoryStore::new()) as Arc<dyn Store>,
    ///     Gateways::new(vec![sandbox], "sandbox").expect("the default gateway is enabled"),
    ///     Arc::new(ManualClock::new()),
    ///     Arc::new(SequentialIds::new()),
    ///     TopUpPolicy::default(),
    /// );
    /// assert_eq!(billing.gateways().default_name(), "sandbox");
    /// ```
    pub fn new(
        store: Arc<dyn Store>,
        gateways: Gateways,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdGenerator>,
        policy: TopUpPolicy,
    ) -> Billing {
        Billing {
            store,
            gateways,
            clock,
            ids,
            policy,
            auto_topup_failures_max: crate::autotopup::AUTO_TOPUP_FAILURES_MAX,
        }
    }

    /// The top-up rules in force (currency, minimum, bonus tiers).
    pub fn policy(&self) -> &TopUpPolicy {
        &self.policy
    }

    /// The enabled payment gateways.
    pub fn gateways(&self) -> &Gateways {
        &self.gateways
    }

    /// The store the service was built with.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The current instant by the service's clock.
    pub fn now(&self) -> crate::time::Timestamp {
        self.clock.now()
    }

    fn entry_id(&self) -> EntryId {
        EntryId::new(self.ids.new_id(EntryId::PREFIX))
    }

    /// Creates an account with an empty wallet.
    pub async fn create_account(
        &self,
        name: &str,
        email: &str,
    ) -> Result<Account, CreateAccountError> {
        check_name("name", name).map_err(CreateAccountError::Invalid)?;
        check_text("name", name, ACCOUNT_NAME_LENGTH_MAX).map_err(CreateAccountError::Invalid)?;
        check_text("email", email, ACCOUNT_EMAIL_LENGTH_MAX)
            .map_err(CreateAccountError::Invalid)?;
        let valid_email = email
            .split_once('@')
            .is_some_and(|(user, host)| !user.is_empty() && host.contains('.'))
            && !email.contains(char::is_whitespace);
        if !valid_email {
            return Err(CreateAccountError::Invalid(
                "email is not an email address".into(),
            ));
        }
        let account = Account {
            id: AccountId::new(self.ids.new_id(AccountId::PREFIX)),
            name: name.to_owned(),
            email: email.to_owned(),
            created_at: self.clock.now(),
        };
        self.store.insert_account(&account).await?;
        Ok(account)
    }

    /// The account with this id; `None` when there is none.
    pub async fn account(&self, id: &AccountId) -> Result<Option<Account>, StoreError> {
        self.store.account(id).await
    }

    /// The account's wallet; `None` for no account. Its balance still includes what active
    /// holds reserve (see [`Billing::available`]).
    pub async fn wallet(&self, id: &AccountId) -> Result<Option<Wallet>, StoreError> {
        self.store.wallet(id).await
    }

    /// One page of entries, newest first; `limit` is clamped to 1..=[`ENTRY_PAGE_SIZE_MAX`].
    pub async fn transactions(
        &self,
        account_id: &AccountId,
        mut query: EntryQuery,
    ) -> Result<EntryPage, StoreError> {
        let limit = query.limit.clamp(1, ENTRY_PAGE_SIZE_MAX);
        // One more than asked tells whether another page exists.
        query.limit = limit + 1;
        let mut entries = self.store.entries(account_id, &query).await?;
        let has_more = entries.len() > limit as usize;
        entries.truncate(limit as usize);
        Ok(EntryPage { entries, has_more })
    }

    /// Active packs, cheapest first.
    pub async fn packs(&self) -> Result<Vec<Pack>, StoreError> {
        self.store.packs(false).await
    }

    /// One page (from 1) of the account's top-ups (only those in `status`, when given),
    /// [`TOPUP_PAGE_SIZE`] a page.
    pub async fn topup_history(
        &self,
        account_id: &AccountId,
        status: Option<TopUpStatus>,
        page: u32,
    ) -> Result<TopUpPage, StoreError> {
        self.store
            .topup_page(
                account_id,
                status,
                page.clamp(1, TOPUP_PAGE_MAX),
                TOPUP_PAGE_SIZE,
            )
            .await
    }

    /// Prices the request without creating anything.
    pub async fn quote(
        &self,
        request: &TopUpRequest,
    ) -> Result<(Quote, Option<Pack>), CreateTopUpError> {
        match request {
            TopUpRequest::Amount(amount) => Ok((self.policy.quote_amount(*amount)?, None)),
            TopUpRequest::Pack(id) => {
                let pack = self
                    .store
                    .pack(id)
                    .await?
                    .filter(|p| p.active)
                    .ok_or(CreateTopUpError::PackNotFound)?;
                Ok((self.policy.quote_pack(&pack), Some(pack)))
            }
        }
    }

    /// Creates a pending top-up and its checkout. The wallet is credited later, when the
    /// gateway confirms the payment ([`Billing::handle_notification`]).
    pub async fn create_topup(
        &self,
        account_id: &AccountId,
        request: &TopUpRequest,
        gateway: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> Result<TopUp, CreateTopUpError> {
        self.create_topup_with(account_id, request, gateway, idempotency_key, false)
            .await
    }

    /// [`Billing::create_topup`], where the customer may agree to save the payment method
    /// for later off-session charges.
    pub async fn create_topup_with(
        &self,
        account_id: &AccountId,
        request: &TopUpRequest,
        gateway: Option<&str>,
        idempotency_key: Option<&str>,
        save_payment_method: bool,
    ) -> Result<TopUp, CreateTopUpError> {
        let gateway_name = gateway.unwrap_or(self.gateways.default_name());
        let gateway = self
            .gateways
            .get(gateway_name)
            .ok_or_else(|| CreateTopUpError::UnknownGateway(gateway_name.to_owned()))?
            .clone();
        if save_payment_method && !gateway.saves_payment_methods() {
            return Err(CreateTopUpError::CannotSaveMethod(gateway_name.to_owned()));
        }
        let account = self
            .store
            .account(account_id)
            .await?
            .ok_or(CreateTopUpError::AccountNotFound)?;
        let (quote, pack) = self.quote(request).await?;
        let fingerprint = match request {
            TopUpRequest::Amount(a) => format!("topup|amount={}|{gateway_name}", a.normalize()),
            TopUpRequest::Pack(p) => format!("topup|pack={p}|{gateway_name}"),
        };
        let claim = claim(account_id, "topup", idempotency_key, fingerprint)
            .map_err(CreateTopUpError::Invalid)?;
        let now = self.clock.now();
        let topup = TopUp {
            id: TopUpId::new(self.ids.new_id(TopUpId::PREFIX)),
            account_id: account_id.clone(),
            pack_id: pack.as_ref().map(|p| p.id.clone()),
            pack_name: pack.as_ref().map(|p| p.name.clone()),
            price: quote.price,
            credits: quote.credits,
            bonus: quote.bonus,
            status: TopUpStatus::Pending,
            gateway: gateway_name.to_owned(),
            payment_ref: None,
            checkout_url: None,
            failure_reason: None,
            created_at: now,
            updated_at: now,
        };
        let mut topup = match self.store.insert_topup(&topup, claim.as_ref()).await {
            Ok(Inserted::New(t)) => t,
            Ok(Inserted::Replayed(t)) => return Ok(t),
            Err(InsertTopUpError::IdempotencyConflict) => {
                return Err(CreateTopUpError::IdempotencyConflict);
            }
            Err(InsertTopUpError::Store(e)) => return Err(e.into()),
        };
        let request = CheckoutRequest {
            topup_id: topup.id.clone(),
            account_id: account_id.clone(),
            price: topup.price,
            description: topup
                .pack_name
                .clone()
                .unwrap_or_else(|| "Credit top-up".to_owned()),
            customer_email: account.email,
            save_payment_method,
        };
        let checkout = match gateway.create_checkout(&request).await {
            Ok(checkout) => checkout,
            Err(e) => {
                // The customer was never sent to pay: nothing can be owed for this top-up.
                let reason = format!("checkout not created: {e}");
                self.store
                    .transition_topup(
                        &topup.id,
                        TopUpStatus::Failed,
                        Vec::new(),
                        Some(reason),
                        self.clock.now(),
                    )
                    .await?;
                return Err(e.into());
            }
        };
        self.store
            .set_checkout(
                &topup.id,
                &checkout.payment_ref,
                &checkout.checkout_url,
                self.clock.now(),
            )
            .await?;
        topup.payment_ref = Some(checkout.payment_ref);
        topup.checkout_url = Some(checkout.checkout_url);
        Ok(topup)
    }

    /// Handles a gateway notification: verify the signature first, then look up the top-up,
    /// then ask the gateway server to server and settle on what it says. A notification's
    /// own claims are never trusted.
    pub async fn handle_notification(
        &self,
        gateway_name: &str,
        notification: &Notification,
    ) -> Result<SettleOutcome, HandleNotificationError> {
        let gateway = self
            .gateways
            .get(gateway_name)
            .ok_or_else(|| HandleNotificationError::UnknownGateway(gateway_name.to_owned()))?
            .clone();
        let verified = gateway
            .verify_notification(notification, self.clock.now())
            .await?;
        let topup = match (&verified.topup_id, &verified.payment_ref) {
            (Some(id), _) => self.store.topup(id).await?,
            (None, Some(reference)) => {
                self.store
                    .topup_by_payment_ref(gateway_name, reference)
                    .await?
            }
            (None, None) => None,
        };
        // A top-up id echoed back by the gateway must belong to this gateway and, when the
        // notification names a payment, to that payment.
        let topup = topup.filter(|t| {
            t.gateway == gateway_name
                && match (&verified.payment_ref, &t.payment_ref) {
                    (Some(seen), Some(ours)) => seen == ours,
                    _ => true,
                }
        });
        let Some(topup) = topup else {
            return Ok(SettleOutcome::Ignored);
        };
        // An event already processed is not processed again. It is recorded only after it
        // was processed, so a failed attempt is retried by the gateway; two copies racing
        // both reach `transition_topup`, which credits once.
        if self
            .store
            .event_seen(gateway_name, &verified.event_id)
            .await?
        {
            return Ok(SettleOutcome::Ignored);
        }
        // An auto top-up whose charge's answer was lost (a timeout, a decline) has no
        // reference yet: the signed event names its payment, which the status check below
        // then confirms with the gateway (the payment must name this top-up).
        let mut topup = topup;
        if let (None, Some(reference), crate::topup::TopUpOrigin::AutoTopUp) =
            (&topup.payment_ref, &verified.payment_ref, topup.origin())
        {
            self.store
                .set_checkout(&topup.id, reference, "", self.clock.now())
                .await?;
            topup.payment_ref = Some(reference.clone());
        }
        let outcome = self.settle(gateway.as_ref(), topup).await?;
        if !matches!(outcome, SettleOutcome::StillPending(_)) {
            self.store
                .record_event(gateway_name, &verified.event_id, self.clock.now())
                .await?;
        }
        Ok(outcome)
    }

    /// Asks the gateway for the top-up's payment status and applies it: completes (crediting
    /// once) when paid in full in the right currency, fails when the gateway says it failed,
    /// leaves it pending otherwise.
    pub async fn settle(
        &self,
        gateway: &dyn PaymentGateway,
        topup: TopUp,
    ) -> Result<SettleOutcome, HandleNotificationError> {
        if topup.status == TopUpStatus::Completed {
            return Ok(SettleOutcome::AlreadySettled(topup));
        }
        let status = gateway.payment_status(&topup).await?;
        let (target, reason) = match status {
            PaymentStatus::Pending => return Ok(SettleOutcome::StillPending(topup)),
            PaymentStatus::Paid { amount } if amount != topup.price => {
                return Ok(SettleOutcome::AmountMismatch(topup));
            }
            PaymentStatus::Paid { .. } => (TopUpStatus::Completed, None),
            PaymentStatus::Failed { reason } => (TopUpStatus::Failed, Some(reason)),
        };
        let entries = match target {
            TopUpStatus::Completed => topup.completion_entries(self.entry_id(), self.entry_id()),
            _ => Vec::new(),
        };
        let outcome = self
            .store
            .transition_topup(&topup.id, target, entries, reason, self.clock.now())
            .await?;
        Ok(match outcome {
            None => SettleOutcome::Ignored,
            Some(TransitionOutcome::Applied { topup, .. }) if target == TopUpStatus::Completed => {
                // The credits landed; saving the method is best effort (a failure leaves the
                // customer to save one with a later top-up).
                let _ = self.remember_saved_method(&topup).await;
                SettleOutcome::Completed(topup)
            }
            Some(TransitionOutcome::Applied { topup, .. }) => SettleOutcome::Failed(topup),
            Some(TransitionOutcome::AlreadyDone(t)) | Some(TransitionOutcome::Refused(t)) => {
                SettleOutcome::AlreadySettled(t)
            }
        })
    }

    /// Re-checks pending top-ups created before `older_than_secs` ago with their gateway, so
    /// that a lost notification never leaves credits missing. Returns what each check did.
    pub async fn reconcile(
        &self,
        older_than_secs: i64,
        limit: u32,
    ) -> Result<Vec<Result<SettleOutcome, HandleNotificationError>>, StoreError> {
        let cutoff = self.clock.now().minus_secs(older_than_secs);
        let pending = self.store.pending_topups(cutoff, limit).await?;
        let mut outcomes = Vec::with_capacity(pending.len());
        for topup in pending {
            let id = topup.id.clone();
            // An auto top-up not yet charged is the outbox's, not the gateway's; one the
            // outbox never charged within its window fails, so that the next may start.
            if topup.payment_ref.is_none() && topup.origin() == crate::topup::TopUpOrigin::AutoTopUp
            {
                let now = self.clock.now();
                if topup
                    .created_at
                    .plus_secs(AUTO_TOPUP_CHARGE_WINDOW_SECS + 3_600)
                    < now
                {
                    self.store
                        .transition_topup(
                            &topup.id,
                            TopUpStatus::Failed,
                            Vec::new(),
                            Some("charge not made".into()),
                            now,
                        )
                        .await?;
                } else {
                    self.store.touch_pending_topup(&id, now).await?;
                }
                continue;
            }
            let outcome = match self.gateways.get(&topup.gateway) {
                Some(gateway) => self.settle(gateway.as_ref(), topup).await,
                None => Err(HandleNotificationError::UnknownGateway(
                    topup.gateway.clone(),
                )),
            };
            if matches!(
                outcome,
                Ok(SettleOutcome::StillPending(_) | SettleOutcome::AmountMismatch(_)) | Err(_)
            ) {
                self.store
                    .touch_pending_topup(&id, self.clock.now())
                    .await?;
            }
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    /// Debits the wallet for usage, exactly once per idempotency key: a finished amount, or
    /// tokens priced at the rate card's current prices (recorded on the entry).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use billing_core::ports::{MockPaymentGateway, PaymentGateway, Store};
    /// # use billing_core::service::{Billing, Gateways};
    /// # use billing_core::topup::TopUpPolicy;
    /// # use billing_testkit::{InMemoryStore, ManualClock, SequentialIds};
    /// use billing_core::Decimal;
    /// use billing_core::money::Credits;
    /// use billing_core::service::{UsageCharge, UsageRequest};
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(async {
    /// # let mut sandbox = MockPaymentGateway::new();
    /// # sandbox.expect_name().return_const("sandbox".to_owned());
    /// # let sandbox: Arc<dyn PaymentGateway> = Arc::new(sandbox);
    /// # let billing = Billing::new(
    /// #     Arc::new(InMemoryStore::new()) as Arc<dyn Store>,
    /// #     Gateways::new(vec![sandbox], "sandbox").expect("the default gateway is enabled"),
    /// #     Arc::new(ManualClock::new()),
    /// #     Arc::new(SequentialIds::new()),
    /// #     TopUpPolicy::default(),
    /// # );
    /// let account = billing.create_account("Ada", "ada@example.com").await.expect("account");
    /// billing.grant(&account.id, Decimal::new(10, 0), "Welcome", None).await.expect("granted");
    ///
    /// let request = UsageRequest {
    ///     charge: UsageCharge::Amount(Decimal::new(15, 2)), // 0.15 credits
    ///     description: None,
    ///     idempotency_key: "req-1".to_owned(),
    /// };
    /// let posted = billing.record_usage(&account.id, &request).await.expect("debited");
    /// let left = Credits::new(Decimal::new(985, 2)).expect("credits");
    /// assert_eq!(posted.entries[0].balance_after, left);
    ///
    /// // A retry with the same key replays the first debit: nothing is charged twice.
    /// let retry = billing.record_usage(&account.id, &request).await.expect("replayed");
    /// assert!(retry.replayed);
    /// assert_eq!(billing.wallet(&account.id).await.expect("read").expect("wallet").balance, left);
    /// # });
    /// ```
    pub async fn record_usage(
        &self,
        account_id: &AccountId,
        request: &UsageRequest,
    ) -> Result<Posted, LedgerOpError> {
        let (fingerprint, default_description) = match &request.charge {
            UsageCharge::Amount(amount) => (
                format!("usage|amount|{}", Credits::positive(*amount)?),
                "API usage".to_owned(),
            ),
            UsageCharge::Tokens {
                model,
                input_tokens,
                output_tokens,
            } => (
                format!("usage|tokens|{model}|{input_tokens}|{output_tokens}"),
                format!("API usage - {model}"),
            ),
        };
        let description = request.description.clone().unwrap_or(default_description);
        check_text("description", &description, DESCRIPTION_LENGTH_MAX)
            .map_err(LedgerOpError::Invalid)?;
        let claim = claim(
            account_id,
            "usage",
            Some(&request.idempotency_key),
            format!("{fingerprint}|{}", text_field(&description)),
        )
        .map_err(LedgerOpError::Invalid)?;
        let posting = |entries: Vec<NewEntry>| Posting {
            account_id: account_id.clone(),
            entries,
            idempotency: claim.clone(),
            refund_of: Vec::new(),
            now: self.clock.now(),
        };
        let (amount, usage) = match self.charge_of(&request.charge).await {
            Ok(charge) => charge,
            // A retry of a request that succeeded replays it, even if the rate has changed
            // or gone since: a posting without entries only answers a claimed key.
            Err(refusal @ (LedgerOpError::UnknownModel(_) | LedgerOpError::NothingToCharge)) => {
                return match self.store.post(posting(Vec::new())).await {
                    Ok(replayed) if replayed.replayed => Ok(replayed),
                    Err(PostError::IdempotencyConflict) => Err(LedgerOpError::IdempotencyConflict),
                    _ => Err(refusal),
                };
            }
            Err(other) => return Err(other),
        };
        let entry = NewEntry {
            id: self.entry_id(),
            kind: EntryKind::Usage,
            amount: amount.negated(),
            description,
            reference: Some(request.idempotency_key.clone()),
            usage,
        };
        Ok(self.store.post(posting(vec![entry])).await?)
    }

    /// What a usage request costs, and for priced usage what it records.
    async fn charge_of(
        &self,
        charge: &UsageCharge,
    ) -> Result<(Credits, Option<crate::pricing::UsageDetail>), LedgerOpError> {
        match charge {
            UsageCharge::Amount(amount) => Ok((Credits::positive(*amount)?, None)),
            UsageCharge::Tokens {
                model,
                input_tokens,
                output_tokens,
            } => {
                let rate = self.rate_of(model).await?;
                let (cost, detail) = rate
                    .price(*input_tokens, *output_tokens)
                    .map_err(|e| LedgerOpError::Invalid(e.to_string()))?;
                if !cost.is_positive() {
                    return Err(LedgerOpError::NothingToCharge);
                }
                Ok((cost, Some(detail)))
            }
        }
    }

    /// Credits back usage: a `refund` entry linked to the entries it answers, never more than
    /// their total less earlier refunds of them.
    pub async fn refund(
        &self,
        account_id: &AccountId,
        entry_ids: Vec<EntryId>,
        amount: Decimal,
        description: &str,
        idempotency_key: Option<&str>,
    ) -> Result<Posted, LedgerOpError> {
        if entry_ids.is_empty() {
            return Err(LedgerOpError::Refund(RefundRuleError::NoEntries));
        }
        if entry_ids.len() > REFUND_ENTRIES_MAX {
            return Err(LedgerOpError::Invalid(format!(
                "a refund may name at most {REFUND_ENTRIES_MAX} entries"
            )));
        }
        let mut sorted: Vec<&str> = entry_ids.iter().map(EntryId::as_str).collect();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != entry_ids.len() {
            return Err(LedgerOpError::Invalid("an entry is named twice".into()));
        }
        self.credit(
            account_id,
            EntryKind::Refund,
            amount,
            description,
            idempotency_key,
            entry_ids,
        )
        .await
    }

    /// Grants promotional credits as a `bonus` entry.
    pub async fn grant(
        &self,
        account_id: &AccountId,
        amount: Decimal,
        description: &str,
        idempotency_key: Option<&str>,
    ) -> Result<Posted, LedgerOpError> {
        self.credit(
            account_id,
            EntryKind::Bonus,
            amount,
            description,
            idempotency_key,
            Vec::new(),
        )
        .await
    }

    /// One credit entry of `kind`; for a refund, `refund_of` names the usage entries it
    /// answers (the store checks the bound under the wallet lock).
    async fn credit(
        &self,
        account_id: &AccountId,
        kind: EntryKind,
        amount: Decimal,
        description: &str,
        idempotency_key: Option<&str>,
        refund_of: Vec<EntryId>,
    ) -> Result<Posted, LedgerOpError> {
        let amount = Credits::positive(amount)?;
        check_text("description", description, DESCRIPTION_LENGTH_MAX)
            .map_err(LedgerOpError::Invalid)?;
        let mut targets: Vec<&str> = refund_of.iter().map(EntryId::as_str).collect();
        targets.sort_unstable();
        let targets = targets.join(",");
        let fingerprint = format!("{kind}|{targets}|{amount}|{description}");
        let claim = claim(account_id, kind.as_str(), idempotency_key, fingerprint)
            .map_err(LedgerOpError::Invalid)?;
        let description = match (description.is_empty(), kind) {
            (false, _) => description.to_owned(),
            (true, EntryKind::Refund) => "Refund".to_owned(),
            (true, _) => "Promotional credits".to_owned(),
        };
        let posting = Posting {
            account_id: account_id.clone(),
            entries: vec![NewEntry {
                id: self.entry_id(),
                kind,
                amount,
                description,
                reference: (!targets.is_empty()).then_some(targets),
                usage: None,
            }],
            idempotency: claim,
            refund_of,
            now: self.clock.now(),
        };
        Ok(self.store.post(posting).await?)
    }
}

/// A pack as an admin describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackInput {
    /// Shown to customers and on the checkout; not empty, no white space at either end, at
    /// most [`crate::topup::PACK_NAME_LENGTH_MAX`] characters.
    pub name: String,
    /// What the customer pays, in major units of `currency`: positive, at most the
    /// currency's decimals.
    pub price: Decimal,
    /// ISO code; must be the top-up currency (the one the gateways charge in).
    pub currency: String,
    /// What the pack adds to the wallet, in the wallet unit; positive, exact.
    pub credits: Decimal,
    /// Marked as the popular pack where packs are listed.
    pub popular: bool,
    /// On sale: an inactive pack is not listed to customers and cannot be bought.
    pub active: bool,
}

/// Why a pack was not created or changed. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManagePackError {
    /// The id or a field was refused; the text says which.
    #[error("invalid pack: {0}")]
    Invalid(String),
    /// No pack has this id (update, deactivate).
    #[error("pack not found")]
    NotFound,
    /// Creating a pack whose id is taken.
    #[error("a pack with this id already exists")]
    Exists,
    /// The storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Longest pack id, in bytes.
pub const PACK_ID_LENGTH_MAX: usize = 64;

fn validate_pack_id(id: &str) -> Result<PackId, ManagePackError> {
    let valid = id.len() <= PACK_ID_LENGTH_MAX
        && id.strip_prefix("pack_").is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        });
    if !valid {
        return Err(ManagePackError::Invalid(format!(
            "id must be `pack_` followed by lower-case letters, digits or `_`, at most {PACK_ID_LENGTH_MAX} bytes"
        )));
    }
    Ok(PackId::new(id))
}

/// A pack from its fields. Packs are priced in the top-up currency (`currency`): the one
/// the gateways charge in.
fn build_pack(id: PackId, input: &PackInput, currency: Currency) -> Result<Pack, ManagePackError> {
    let invalid = |m: String| ManagePackError::Invalid(m);
    let name = input.name.as_str();
    check_name("name", name).map_err(invalid)?;
    check_text("name", name, crate::topup::PACK_NAME_LENGTH_MAX).map_err(invalid)?;
    if input.currency != currency.code() {
        return Err(invalid(format!(
            "currency must be {}, the top-up currency, not {:?}",
            currency.code(),
            input.currency
        )));
    }
    let price = crate::money::Money::new(input.price, currency)
        .map_err(|e| invalid(format!("price: {e}")))?;
    if price.is_zero() {
        return Err(invalid("price must be greater than zero".into()));
    }
    let credits = Credits::positive(input.credits).map_err(|e| invalid(format!("credits: {e}")))?;
    Ok(Pack {
        id,
        name: name.to_owned(),
        price,
        credits,
        popular: input.popular,
        active: input.active,
    })
}

impl Billing {
    /// Every pack, inactive ones included (admin view).
    pub async fn all_packs(&self) -> Result<Vec<Pack>, StoreError> {
        self.store.packs(true).await
    }

    /// Creates a pack; its id is `id` when given (`pack_pro`), else generated.
    pub async fn create_pack(
        &self,
        id: Option<&str>,
        input: &PackInput,
    ) -> Result<Pack, ManagePackError> {
        let id = match id {
            Some(id) => validate_pack_id(id)?,
            None => PackId::new(self.ids.new_id(PackId::PREFIX)),
        };
        let pack = build_pack(id, input, self.policy.currency)?;
        if self.store.pack(&pack.id).await?.is_some() {
            return Err(ManagePackError::Exists);
        }
        self.store.upsert_pack(&pack).await?;
        Ok(pack)
    }

    /// Replaces an existing pack's fields. Top-ups already created keep the price and
    /// credits they were created with.
    pub async fn update_pack(&self, id: &str, input: &PackInput) -> Result<Pack, ManagePackError> {
        let id = PackId::new(id);
        if self.store.pack(&id).await?.is_none() {
            return Err(ManagePackError::NotFound);
        }
        let pack = build_pack(id, input, self.policy.currency)?;
        self.store.upsert_pack(&pack).await?;
        Ok(pack)
    }

    /// Takes a pack off sale (it stays in the history of the top-ups that bought it).
    pub async fn deactivate_pack(&self, id: &str) -> Result<Pack, ManagePackError> {
        let mut pack = self
            .store
            .pack(&PackId::new(id))
            .await?
            .ok_or(ManagePackError::NotFound)?;
        pack.active = false;
        self.store.upsert_pack(&pack).await?;
        Ok(pack)
    }
}
