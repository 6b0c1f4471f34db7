//! Row structs and their checked conversions to and from domain types. Every amount crosses
//! here, as integer ledger units or minor units; a value that does not convert exactly is an
//! error, never truncated.

use billing_core::autotopup::{AutoTopUpSettings, AutoTopUpState, SavedMethod};
use billing_core::holds::{Hold, HoldStatus};
use billing_core::ids::{AccountId, ApiKeyId, EntryId, HoldId, PackId, TopUpId};
use billing_core::ledger::{EntryKind, LedgerEntry};
use billing_core::money::{Credits, Currency, Money};
use billing_core::notices::{Cause, Channel, Notice};
use billing_core::ports::OutboxItem;
use billing_core::ports::{Account, ApiKeyRecord, KeyScope, SessionRecord, StoreError};
use billing_core::pricing::{Rate, UsageDetail};
use billing_core::time::Timestamp;
use billing_core::topup::{Pack, TopUp, TopUpStatus};
use diesel::prelude::*;

use crate::schema::{
    accounts, api_keys, auto_topups, holds, idempotency_keys, ledger_entries, outbox, packs,
    payment_methods, rates, topups,
};

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

/// Ledger units of `credits`, refusing what does not fit.
pub(crate) fn units(credits: Credits) -> Result<i64, StoreError> {
    credits
        .to_units()
        .map_err(|e| corrupt(format!("amount {credits} does not fit the ledger: {e}")))
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = accounts)]
pub(crate) struct AccountRow {
    pub id: String,
    pub name: String,
    pub email: String,
    pub balance: i64,
    pub created_at: i64,
}

impl From<AccountRow> for Account {
    fn from(row: AccountRow) -> Account {
        Account {
            id: AccountId::new(row.id),
            name: row.name,
            email: row.email,
            created_at: Timestamp::from_micros(row.created_at),
        }
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = ledger_entries)]
pub(crate) struct EntryRow {
    pub id: String,
    pub account_id: String,
    pub kind: String,
    pub amount: i64,
    pub balance_after: i64,
    pub description: String,
    pub reference: Option<String>,
    pub created_at: i64,
    pub usage_model: Option<String>,
    pub usage_input_tokens: Option<i64>,
    pub usage_output_tokens: Option<i64>,
    pub usage_input_per_million: Option<i64>,
    pub usage_output_per_million: Option<i64>,
}

#[derive(Insertable)]
#[diesel(table_name = ledger_entries)]
#[diesel(treat_none_as_null = true)]
pub(crate) struct NewEntryRow {
    pub id: String,
    pub account_id: String,
    pub kind: String,
    pub amount: i64,
    pub balance_after: i64,
    pub description: String,
    pub reference: Option<String>,
    pub created_at: i64,
    pub usage_model: Option<String>,
    pub usage_input_tokens: Option<i64>,
    pub usage_output_tokens: Option<i64>,
    pub usage_input_per_million: Option<i64>,
    pub usage_output_per_million: Option<i64>,
    /// Set by [`chain_rows`] just before the row is written.
    pub hash: Option<String>,
}

impl NewEntryRow {
    /// The fields its hash covers.
    pub fn chain_fields(&self) -> billing_core::audit::ChainFields<'_> {
        billing_core::audit::ChainFields {
            id: &self.id,
            account_id: &self.account_id,
            kind: &self.kind,
            amount: self.amount,
            balance_after: self.balance_after,
            description: &self.description,
            reference: self.reference.as_deref(),
            created_at: self.created_at,
            usage_model: self.usage_model.as_deref(),
            usage: [
                self.usage_input_tokens,
                self.usage_output_tokens,
                self.usage_input_per_million,
                self.usage_output_per_million,
            ],
        }
    }
}

/// Chains `rows` (in the order they are appended) onto their wallets' heads in `heads`
/// (account id → last hash; a wallet missing from it has no entry yet), moving each head.
pub(crate) fn chain_rows(
    heads: &mut std::collections::HashMap<String, Option<String>>,
    rows: &mut [NewEntryRow],
) {
    for row in rows {
        let head = heads.entry(row.account_id.clone()).or_default();
        let hash = billing_core::audit::entry_hash(head.as_deref(), &row.chain_fields());
        row.hash = Some(hash.clone());
        *head = Some(hash);
    }
}

/// A ledger row as the audit reads it: every column, nothing converted.
#[derive(Queryable, Selectable)]
#[diesel(table_name = ledger_entries)]
pub(crate) struct AuditEntryRow {
    pub seq: i64,
    pub id: String,
    pub account_id: String,
    pub kind: String,
    pub amount: i64,
    pub balance_after: i64,
    pub description: String,
    pub reference: Option<String>,
    pub created_at: i64,
    pub usage_model: Option<String>,
    pub usage_input_tokens: Option<i64>,
    pub usage_output_tokens: Option<i64>,
    pub usage_input_per_million: Option<i64>,
    pub usage_output_per_million: Option<i64>,
    pub hash: Option<String>,
}

impl From<AuditEntryRow> for billing_core::audit::EntryFacts {
    fn from(r: AuditEntryRow) -> billing_core::audit::EntryFacts {
        billing_core::audit::EntryFacts {
            seq: r.seq,
            id: r.id,
            account_id: r.account_id,
            kind: r.kind,
            amount: r.amount,
            balance_after: r.balance_after,
            reference: r.reference,
            description: r.description,
            created_at: r.created_at,
            usage_model: r.usage_model,
            usage: [
                r.usage_input_tokens,
                r.usage_output_tokens,
                r.usage_input_per_million,
                r.usage_output_per_million,
            ],
            hash: r.hash,
        }
    }
}

impl TryFrom<EntryRow> for LedgerEntry {
    type Error = StoreError;
    fn try_from(row: EntryRow) -> Result<LedgerEntry, StoreError> {
        Ok(LedgerEntry {
            id: EntryId::new(row.id),
            account_id: AccountId::new(row.account_id),
            kind: row.kind.parse::<EntryKind>().map_err(corrupt)?,
            amount: Credits::from_units(row.amount),
            balance_after: Credits::from_units(row.balance_after),
            description: row.description,
            reference: row.reference,
            usage: usage_from_row(
                row.usage_model,
                [
                    row.usage_input_tokens,
                    row.usage_output_tokens,
                    row.usage_input_per_million,
                    row.usage_output_per_million,
                ],
            )?,
            created_at: Timestamp::from_micros(row.created_at),
        })
    }
}

impl TryFrom<&LedgerEntry> for NewEntryRow {
    type Error = StoreError;
    fn try_from(e: &LedgerEntry) -> Result<NewEntryRow, StoreError> {
        Ok(NewEntryRow {
            id: e.id.as_str().to_owned(),
            account_id: e.account_id.as_str().to_owned(),
            kind: e.kind.as_str().to_owned(),
            amount: units(e.amount)?,
            balance_after: units(e.balance_after)?,
            description: e.description.clone(),
            reference: e.reference.clone(),
            created_at: e.created_at.as_micros(),
            usage_model: e.usage.as_ref().map(|u| u.model.clone()),
            usage_input_tokens: e
                .usage
                .as_ref()
                .map(|u| tokens(u.input_tokens))
                .transpose()?,
            usage_output_tokens: e
                .usage
                .as_ref()
                .map(|u| tokens(u.output_tokens))
                .transpose()?,
            usage_input_per_million: e
                .usage
                .as_ref()
                .map(|u| price_units(u.input_per_million))
                .transpose()?,
            usage_output_per_million: e
                .usage
                .as_ref()
                .map(|u| price_units(u.output_per_million))
                .transpose()?,
            hash: None,
        })
    }
}

#[derive(Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = topups)]
pub(crate) struct TopUpRow {
    pub id: String,
    pub account_id: String,
    pub pack_id: Option<String>,
    pub pack_name: Option<String>,
    pub price_minor: i64,
    pub currency: String,
    pub credits: i64,
    pub bonus: i64,
    pub status: String,
    pub gateway: String,
    pub payment_ref: Option<String>,
    pub checkout_url: Option<String>,
    pub failure_reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

fn money(minor: i64, currency: &str) -> Result<Money, StoreError> {
    let currency = Currency::from_code(currency).map_err(corrupt)?;
    Money::from_minor_units(minor, currency).map_err(corrupt)
}

impl TryFrom<TopUpRow> for TopUp {
    type Error = StoreError;
    fn try_from(row: TopUpRow) -> Result<TopUp, StoreError> {
        Ok(TopUp {
            id: TopUpId::new(row.id),
            account_id: AccountId::new(row.account_id),
            pack_id: row.pack_id.map(PackId::new),
            pack_name: row.pack_name,
            price: money(row.price_minor, &row.currency)?,
            credits: Credits::from_units(row.credits),
            bonus: Credits::from_units(row.bonus),
            status: row.status.parse::<TopUpStatus>().map_err(corrupt)?,
            gateway: row.gateway,
            payment_ref: row.payment_ref,
            checkout_url: row.checkout_url,
            failure_reason: row.failure_reason,
            created_at: Timestamp::from_micros(row.created_at),
            updated_at: Timestamp::from_micros(row.updated_at),
        })
    }
}

impl TryFrom<&TopUp> for TopUpRow {
    type Error = StoreError;
    fn try_from(t: &TopUp) -> Result<TopUpRow, StoreError> {
        Ok(TopUpRow {
            id: t.id.as_str().to_owned(),
            account_id: t.account_id.as_str().to_owned(),
            pack_id: t.pack_id.as_ref().map(|p| p.as_str().to_owned()),
            pack_name: t.pack_name.clone(),
            price_minor: t.price.minor_units(),
            currency: t.price.currency().code().to_owned(),
            credits: units(t.credits)?,
            bonus: units(t.bonus)?,
            status: t.status.as_str().to_owned(),
            gateway: t.gateway.clone(),
            payment_ref: t.payment_ref.clone(),
            checkout_url: t.checkout_url.clone(),
            failure_reason: t.failure_reason.clone(),
            created_at: t.created_at.as_micros(),
            updated_at: t.updated_at.as_micros(),
        })
    }
}

#[derive(Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = packs)]
pub(crate) struct PackRow {
    pub id: String,
    pub name: String,
    pub price_minor: i64,
    pub currency: String,
    pub credits: i64,
    pub popular: bool,
    pub active: bool,
}

impl TryFrom<PackRow> for Pack {
    type Error = StoreError;
    fn try_from(row: PackRow) -> Result<Pack, StoreError> {
        Ok(Pack {
            id: PackId::new(row.id),
            name: row.name,
            price: money(row.price_minor, &row.currency)?,
            credits: Credits::from_units(row.credits),
            popular: row.popular,
            active: row.active,
        })
    }
}

impl TryFrom<&Pack> for PackRow {
    type Error = StoreError;
    fn try_from(p: &Pack) -> Result<PackRow, StoreError> {
        Ok(PackRow {
            id: p.id.as_str().to_owned(),
            name: p.name.clone(),
            price_minor: p.price.minor_units(),
            currency: p.price.currency().code().to_owned(),
            credits: units(p.credits)?,
            popular: p.popular,
            active: p.active,
        })
    }
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = api_keys)]
pub(crate) struct ApiKeyRow {
    pub id: String,
    pub account_id: Option<String>,
    pub scope: String,
    pub prefix: String,
    pub hash: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub requests_per_minute_max: Option<i32>,
}

impl TryFrom<ApiKeyRow> for ApiKeyRecord {
    type Error = StoreError;
    fn try_from(row: ApiKeyRow) -> Result<ApiKeyRecord, StoreError> {
        Ok(ApiKeyRecord {
            id: ApiKeyId::new(row.id),
            account_id: row.account_id.map(AccountId::new),
            scope: KeyScope::parse(&row.scope)
                .ok_or_else(|| corrupt(format!("unknown key scope {:?}", row.scope)))?,
            prefix: row.prefix,
            hash: row.hash,
            created_at: Timestamp::from_micros(row.created_at),
            revoked_at: row.revoked_at.map(Timestamp::from_micros),
            expires_at: row.expires_at.map(Timestamp::from_micros),
            last_used_at: row.last_used_at.map(Timestamp::from_micros),
            requests_per_minute_max: row
                .requests_per_minute_max
                .map(|n| {
                    u32::try_from(n)
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| corrupt(format!("key request limit {n}")))
                })
                .transpose()?,
        })
    }
}

impl From<&ApiKeyRecord> for ApiKeyRow {
    fn from(k: &ApiKeyRecord) -> ApiKeyRow {
        ApiKeyRow {
            id: k.id.as_str().to_owned(),
            account_id: k.account_id.as_ref().map(|a| a.as_str().to_owned()),
            scope: k.scope.as_str().to_owned(),
            prefix: k.prefix.clone(),
            hash: k.hash.clone(),
            created_at: k.created_at.as_micros(),
            revoked_at: k.revoked_at.map(Timestamp::as_micros),
            expires_at: k.expires_at.map(Timestamp::as_micros),
            last_used_at: k.last_used_at.map(Timestamp::as_micros),
            // Limits above i32::MAX a minute are no limit in practice; stored saturated.
            requests_per_minute_max: k
                .requests_per_minute_max
                .map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
        }
    }
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = crate::schema::dashboard_sessions)]
pub(crate) struct SessionRow {
    pub hash: String,
    pub account_id: String,
    pub key_id: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub ended_at: Option<i64>,
}

impl From<SessionRow> for SessionRecord {
    fn from(row: SessionRow) -> SessionRecord {
        SessionRecord {
            hash: row.hash,
            account_id: AccountId::new(row.account_id),
            key_id: ApiKeyId::new(row.key_id),
            created_at: Timestamp::from_micros(row.created_at),
            expires_at: Timestamp::from_micros(row.expires_at),
            ended_at: row.ended_at.map(Timestamp::from_micros),
        }
    }
}

impl From<&SessionRecord> for SessionRow {
    fn from(s: &SessionRecord) -> SessionRow {
        SessionRow {
            hash: s.hash.clone(),
            account_id: s.account_id.to_string(),
            key_id: s.key_id.to_string(),
            created_at: s.created_at.as_micros(),
            expires_at: s.expires_at.as_micros(),
            ended_at: s.ended_at.map(Timestamp::as_micros),
        }
    }
}

fn tokens(n: u64) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| corrupt(format!("token count {n}")))
}

/// A price per million tokens at the ledger scale (nano-units), exactly.
pub(crate) fn price_units(price: billing_core::Decimal) -> Result<i64, StoreError> {
    Credits::new(price)
        .and_then(Credits::to_units)
        .map_err(|e| corrupt(format!("price {price}: {e}")))
}

pub(crate) fn price_from_units(units: i64) -> billing_core::Decimal {
    Credits::from_units(units).value()
}

/// The usage detail of an entry: all five columns, or none.
fn usage_from_row(
    model: Option<String>,
    numbers: [Option<i64>; 4],
) -> Result<Option<UsageDetail>, StoreError> {
    match (model, numbers) {
        (None, [None, None, None, None]) => Ok(None),
        (
            Some(model),
            [
                Some(input),
                Some(output),
                Some(input_price),
                Some(output_price),
            ],
        ) => {
            let count = |n: i64| u64::try_from(n).map_err(|_| corrupt(format!("token count {n}")));
            Ok(Some(UsageDetail {
                model,
                input_tokens: count(input)?,
                output_tokens: count(output)?,
                input_per_million: price_from_units(input_price),
                output_per_million: price_from_units(output_price),
            }))
        }
        _ => Err(corrupt(
            "a usage entry's detail is partly missing".to_owned(),
        )),
    }
}

#[derive(Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = rates)]
pub(crate) struct RateRow {
    pub model: String,
    pub input_per_million: i64,
    pub output_per_million: i64,
    pub updated_at: i64,
}

impl RateRow {
    pub(crate) fn new(rate: &Rate, now: Timestamp) -> Result<RateRow, StoreError> {
        Ok(RateRow {
            model: rate.model.clone(),
            input_per_million: price_units(rate.input_per_million)?,
            output_per_million: price_units(rate.output_per_million)?,
            updated_at: now.as_micros(),
        })
    }
}

impl From<RateRow> for Rate {
    fn from(row: RateRow) -> Rate {
        Rate {
            model: row.model,
            input_per_million: price_from_units(row.input_per_million),
            output_per_million: price_from_units(row.output_per_million),
        }
    }
}

#[derive(Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = holds)]
#[diesel(treat_none_as_null = true)]
pub(crate) struct HoldRow {
    pub id: String,
    pub account_id: String,
    pub amount: i64,
    pub status: String,
    pub captured_amount: Option<i64>,
    pub entry_id: Option<String>,
    pub rate_model: Option<String>,
    pub rate_input_per_million: Option<i64>,
    pub rate_output_per_million: Option<i64>,
    pub created_at: i64,
    pub expires_at: i64,
    pub updated_at: i64,
}

impl TryFrom<&Hold> for HoldRow {
    type Error = StoreError;
    fn try_from(h: &Hold) -> Result<HoldRow, StoreError> {
        Ok(HoldRow {
            id: h.id.as_str().to_owned(),
            account_id: h.account_id.as_str().to_owned(),
            amount: units(h.amount)?,
            status: h.status.as_str().to_owned(),
            captured_amount: h.captured_amount.map(units).transpose()?,
            entry_id: h.entry_id.as_ref().map(|e| e.as_str().to_owned()),
            rate_model: h.rate.as_ref().map(|r| r.model.clone()),
            rate_input_per_million: h
                .rate
                .as_ref()
                .map(|r| price_units(r.input_per_million))
                .transpose()?,
            rate_output_per_million: h
                .rate
                .as_ref()
                .map(|r| price_units(r.output_per_million))
                .transpose()?,
            created_at: h.created_at.as_micros(),
            expires_at: h.expires_at.as_micros(),
            updated_at: h.updated_at.as_micros(),
        })
    }
}

impl TryFrom<HoldRow> for Hold {
    type Error = StoreError;
    fn try_from(row: HoldRow) -> Result<Hold, StoreError> {
        let rate = match (
            row.rate_model,
            row.rate_input_per_million,
            row.rate_output_per_million,
        ) {
            (None, None, None) => None,
            (Some(model), Some(input), Some(output)) => Some(Rate {
                model,
                input_per_million: price_from_units(input),
                output_per_million: price_from_units(output),
            }),
            _ => {
                return Err(corrupt(format!(
                    "hold {}: its rate is partly missing",
                    row.id
                )));
            }
        };
        Ok(Hold {
            id: HoldId::new(row.id),
            account_id: AccountId::new(row.account_id),
            amount: Credits::from_units(row.amount),
            status: row.status.parse::<HoldStatus>().map_err(corrupt)?,
            captured_amount: row.captured_amount.map(Credits::from_units),
            entry_id: row.entry_id.map(EntryId::new),
            rate,
            created_at: Timestamp::from_micros(row.created_at),
            expires_at: Timestamp::from_micros(row.expires_at),
            updated_at: Timestamp::from_micros(row.updated_at),
        })
    }
}

/// An idempotency claim as written.
#[derive(Insertable)]
#[diesel(table_name = idempotency_keys)]
pub(crate) struct NewClaimRow {
    pub scope: String,
    pub key: String,
    pub fingerprint: String,
    pub result_ref: String,
    pub created_at: i64,
}

/// One outbox item as written (pending, no attempt yet).
#[derive(Insertable)]
#[diesel(table_name = outbox)]
#[diesel(treat_none_as_null = true)]
pub(crate) struct NewOutboxRow {
    pub notice_id: String,
    pub channel: String,
    pub topic: String,
    pub account_id: String,
    pub balance: i64,
    pub cause_kind: String,
    pub cause_id: String,
    pub threshold: Option<i64>,
    pub amount: Option<i64>,
    pub reason: Option<String>,
    pub status: String,
    pub next_attempt_at: i64,
    pub created_at: i64,
}

impl NewOutboxRow {
    pub(crate) fn new(notice: &Notice, channel: Channel) -> Result<NewOutboxRow, StoreError> {
        Ok(NewOutboxRow {
            notice_id: notice.id.clone(),
            channel: channel.as_str().to_owned(),
            topic: notice.topic.as_str().to_owned(),
            account_id: notice.account_id.as_str().to_owned(),
            balance: units(notice.balance)?,
            cause_kind: notice.cause.kind().to_owned(),
            cause_id: notice.cause.id().to_owned(),
            threshold: notice.threshold.map(units).transpose()?,
            amount: notice.amount.map(units).transpose()?,
            reason: notice.reason.clone(),
            status: "pending".to_owned(),
            next_attempt_at: notice.created_at.as_micros(),
            created_at: notice.created_at.as_micros(),
        })
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = outbox)]
pub(crate) struct OutboxRow {
    pub notice_id: String,
    pub channel: String,
    pub topic: String,
    pub account_id: String,
    pub balance: i64,
    pub cause_kind: String,
    pub cause_id: String,
    pub threshold: Option<i64>,
    pub amount: Option<i64>,
    pub reason: Option<String>,
    pub attempts: i32,
    pub next_attempt_at: i64,
    pub created_at: i64,
}

impl TryFrom<OutboxRow> for OutboxItem {
    type Error = StoreError;
    fn try_from(row: OutboxRow) -> Result<OutboxItem, StoreError> {
        let channel = Channel::parse(&row.channel).ok_or_else(|| {
            corrupt(format!(
                "outbox {}: channel {:?}",
                row.notice_id, row.channel
            ))
        })?;
        let cause = Cause::from_parts(&row.cause_kind, row.cause_id).ok_or_else(|| {
            corrupt(format!(
                "outbox {}: cause {:?}",
                row.notice_id, row.cause_kind
            ))
        })?;
        Ok(OutboxItem {
            notice: Notice {
                topic: row.topic.parse().map_err(corrupt)?,
                id: row.notice_id,
                account_id: AccountId::new(row.account_id),
                balance: Credits::from_units(row.balance),
                cause,
                threshold: row.threshold.map(Credits::from_units),
                amount: row.amount.map(Credits::from_units),
                reason: row.reason,
                created_at: Timestamp::from_micros(row.created_at),
            },
            channel,
            attempts: u32::try_from(row.attempts).unwrap_or(0),
            lease_until: Timestamp::from_micros(row.next_attempt_at),
        })
    }
}

#[derive(Queryable, Selectable, Insertable, AsChangeset, serde::Deserialize)]
#[diesel(table_name = auto_topups)]
#[diesel(treat_none_as_null = true)]
pub(crate) struct AutoTopUpRow {
    pub account_id: String,
    pub enabled: bool,
    pub threshold: Option<i64>,
    pub amount_minor: Option<i64>,
    pub currency: String,
    pub monthly_cap_minor: Option<i64>,
    pub credits: i64,
    pub bonus: i64,
    pub failure_limit: i32,
    pub pending_topup_id: Option<String>,
    pub failures: i32,
    pub month_start: i64,
    pub month_charged_minor: i64,
    pub disabled_reason: Option<String>,
}

impl AutoTopUpRow {
    pub(crate) fn new(
        account_id: &AccountId,
        settings: &AutoTopUpSettings,
        state: &AutoTopUpState,
        currency: Currency,
    ) -> Result<AutoTopUpRow, StoreError> {
        let int = |n: u32| i32::try_from(n).map_err(|_| corrupt(format!("count {n} out of range")));
        Ok(AutoTopUpRow {
            account_id: account_id.as_str().to_owned(),
            enabled: settings.enabled,
            threshold: settings.threshold.map(units).transpose()?,
            amount_minor: settings.amount.map(|m| m.minor_units()),
            currency: settings
                .amount
                .or(settings.monthly_cap)
                .map(|m| m.currency())
                .unwrap_or(currency)
                .code()
                .to_owned(),
            monthly_cap_minor: settings.monthly_cap.map(|m| m.minor_units()),
            credits: units(settings.credits)?,
            bonus: units(settings.bonus)?,
            failure_limit: int(settings.failure_limit)?,
            pending_topup_id: state.pending.as_ref().map(|t| t.as_str().to_owned()),
            failures: int(state.failures)?,
            month_start: state.month_start.as_micros(),
            month_charged_minor: state.month_charged_minor,
            disabled_reason: state.disabled_reason.clone(),
        })
    }

    pub(crate) fn split(self) -> Result<(AutoTopUpSettings, AutoTopUpState), StoreError> {
        let amount = self
            .amount_minor
            .map(|m| money(m, &self.currency))
            .transpose()?;
        let cap = self
            .monthly_cap_minor
            .map(|m| money(m, &self.currency))
            .transpose()?;
        Ok((
            AutoTopUpSettings {
                enabled: self.enabled,
                threshold: self.threshold.map(Credits::from_units),
                amount,
                monthly_cap: cap,
                credits: Credits::from_units(self.credits),
                bonus: Credits::from_units(self.bonus),
                failure_limit: u32::try_from(self.failure_limit).unwrap_or(1),
            },
            AutoTopUpState {
                pending: self.pending_topup_id.map(TopUpId::new),
                failures: u32::try_from(self.failures).unwrap_or(0),
                month_start: Timestamp::from_micros(self.month_start),
                month_charged_minor: self.month_charged_minor,
                disabled_reason: self.disabled_reason,
            },
        ))
    }
}

#[derive(Queryable, Selectable, Insertable, AsChangeset, serde::Deserialize)]
#[diesel(table_name = payment_methods)]
#[diesel(treat_none_as_null = true)]
pub(crate) struct PaymentMethodRow {
    pub account_id: String,
    pub gateway: String,
    pub reference: String,
    pub brand: Option<String>,
    pub last4: Option<String>,
    pub saved_at: i64,
}

impl PaymentMethodRow {
    pub(crate) fn new(account_id: &AccountId, m: &SavedMethod) -> PaymentMethodRow {
        PaymentMethodRow {
            account_id: account_id.as_str().to_owned(),
            gateway: m.gateway.clone(),
            reference: m.reference.clone(),
            brand: m.brand.clone(),
            last4: m.last4.clone(),
            saved_at: m.saved_at.as_micros(),
        }
    }
}

impl From<PaymentMethodRow> for SavedMethod {
    fn from(row: PaymentMethodRow) -> SavedMethod {
        SavedMethod {
            gateway: row.gateway,
            reference: row.reference,
            brand: row.brand,
            last4: row.last4,
            saved_at: Timestamp::from_micros(row.saved_at),
        }
    }
}
