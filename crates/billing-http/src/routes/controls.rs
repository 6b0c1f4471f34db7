//! Wallet controls (the wallet document's "Spending Controls"): the customer's own under
//! `/v1/wallet/…`, any account's under `/v1/admin/accounts/{id}/…`.

use actix_web::http::StatusCode;
use actix_web::{get, put, web};
use billing_core::controls::{MonthSpend, SpendingLimit};
use billing_core::ids::AccountId;
use billing_core::service::SetControlError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::amount::Amount;
use crate::auth::{Admin, Customer};
use crate::error::{ApiError, ErrorBody};

impl From<SetControlError> for ApiError {
    fn from(e: SetControlError) -> ApiError {
        match e {
            SetControlError::Invalid(m) => ApiError::bad_request("invalid_request", m),
            SetControlError::AccountNotFound => ApiError::account_not_found(),
            SetControlError::Store(e) => e.into(),
        }
    }
}

/// `{"enabled", "monthly_limit", "action"}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpendingLimitJson {
    pub enabled: bool,
    /// Positive, at most the wallet unit's decimals; required when enabled.
    pub monthly_limit: Option<Amount>,
    /// `block` (refuse a debit that would pass the limit) or `alert` (let it pass).
    pub action: String,
}

/// The month so far (calendar month, UTC).
#[derive(Debug, Serialize, ToSchema)]
pub struct MonthToDate {
    /// Usage debits less refunds this month.
    pub spent: Amount,
    pub period_start: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SpendingLimitResponse {
    pub spending_limit: SpendingLimitJson,
    pub month_to_date: MonthToDate,
}

/// `{"spending_limit": {"enabled", "monthly_limit", "action"}}`: every field required
/// (`monthly_limit` may be `null` only when disabled).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpendingLimitBody {
    pub spending_limit: SpendingLimitFields,
}

/// What a `PUT` sends: every key present.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpendingLimitFields {
    #[serde(deserialize_with = "enabled_field")]
    pub enabled: bool,
    /// Present: a positive amount, or `null` while disabled.
    #[serde(deserialize_with = "monthly_limit_field")]
    #[schema(value_type = Option<Amount>)]
    pub monthly_limit: Option<Amount>,
    #[serde(deserialize_with = "action_field")]
    pub action: String,
}

/// Deserializers that name their field in a type error (serde itself names only the
/// position: `invalid type: string "yes", expected a boolean at line 1 column 37`). The
/// `Option` ones also make the key required (`null` allowed): without `#[serde(default)]`
/// a missing key is an error naming it.
macro_rules! named_field {
    ($fn:ident, $name:literal, $ty:ty) => {
        pub(crate) fn $fn<'de, D: serde::Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
            <$ty>::deserialize(d).map_err(|e| serde::de::Error::custom(format!("{}: {e}", $name)))
        }
    };
}
named_field!(enabled_field, "enabled", bool);
named_field!(action_field, "action", String);
named_field!(monthly_limit_field, "monthly_limit", Option<Amount>);
named_field!(threshold_field, "threshold", Option<Amount>);
named_field!(amount_field, "amount", Option<Amount>);
named_field!(monthly_cap_field, "monthly_cap", Option<Amount>);

fn response(state: &AppState, limit: &SpendingLimit, spend: MonthSpend) -> SpendingLimitResponse {
    SpendingLimitResponse {
        spending_limit: SpendingLimitJson {
            enabled: limit.enabled,
            monthly_limit: limit.monthly_limit.map(|l| state.unit.show(l)),
            action: limit.action.to_string(),
        },
        month_to_date: MonthToDate {
            spent: state.unit.show(spend.spent),
            period_start: spend.month_start.to_rfc3339(),
        },
    }
}

async fn read(state: &AppState, account: &AccountId) -> Result<SpendingLimitResponse, ApiError> {
    let (limit, spend) = state
        .billing
        .spending_limit(account)
        .await?
        .ok_or_else(ApiError::account_not_found)?;
    Ok(response(state, &limit, spend))
}

async fn write(
    state: &AppState,
    account: &AccountId,
    body: SpendingLimitBody,
) -> Result<SpendingLimitResponse, ApiError> {
    let fields = body.spending_limit;
    state
        .billing
        .set_spending_limit(
            account,
            fields.enabled,
            fields.monthly_limit.map(|l| l.0),
            &fields.action,
            state
                .unit
                .display_scale
                .min(billing_core::money::LEDGER_SCALE),
        )
        .await?;
    tracing::info!(account = %account, enabled = fields.enabled, action = %fields.action, "spending limit set");
    read(state, account).await
}

/// The wallet's monthly spending limit and what it spent this month.
#[utoipa::path(
    tag = "wallet",
    security(("bearer" = [])),
    responses((status = 200, body = SpendingLimitResponse))
)]
#[get("/v1/wallet/spending-limit")]
pub async fn get_spending_limit(
    state: web::Data<AppState>,
    Customer(account): Customer,
) -> Result<web::Json<SpendingLimitResponse>, ApiError> {
    Ok(web::Json(read(&state, &account).await?))
}

/// Replaces the monthly spending limit. `block` refuses a debit (or hold) that would take
/// the month's spend, holds included, past the limit with `402 spending_limit_exceeded`.
#[utoipa::path(
    tag = "wallet",
    security(("bearer" = [])),
    request_body = SpendingLimitBody,
    responses((status = 200, body = SpendingLimitResponse))
)]
#[put("/v1/wallet/spending-limit")]
pub async fn put_spending_limit(
    state: web::Data<AppState>,
    Customer(account): Customer,
    body: web::Json<SpendingLimitBody>,
) -> Result<web::Json<SpendingLimitResponse>, ApiError> {
    Ok(web::Json(write(&state, &account, body.into_inner()).await?))
}

/// An account's spending limit (admin).
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    responses((status = 200, body = SpendingLimitResponse), (status = 404, description = "account_not_found", body = ErrorBody))
)]
#[get("/v1/admin/accounts/{id}/spending-limit")]
pub async fn admin_get_spending_limit(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    path: web::Path<String>,
) -> Result<web::Json<SpendingLimitResponse>, ApiError> {
    let account = admin.account(path.into_inner())?;
    Ok(web::Json(read(&state, &account).await?))
}

/// Replaces an account's spending limit (admin).
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    request_body = SpendingLimitBody,
    responses((status = 200, body = SpendingLimitResponse), (status = 404, description = "account_not_found", body = ErrorBody))
)]
#[put("/v1/admin/accounts/{id}/spending-limit")]
pub async fn admin_put_spending_limit(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    path: web::Path<String>,
    body: web::Json<SpendingLimitBody>,
) -> Result<web::Json<SpendingLimitResponse>, ApiError> {
    let account = admin.account(path.into_inner())?;
    Ok(web::Json(write(&state, &account, body.into_inner()).await?))
}

/// `402 spending_limit_exceeded`, naming the limit and the spend.
pub(crate) fn spending_limit_exceeded(message: String) -> ApiError {
    ApiError::new(
        StatusCode::PAYMENT_REQUIRED,
        "spending_limit_exceeded",
        message,
    )
}
