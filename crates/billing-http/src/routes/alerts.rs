//! The low-balance alert (the wallet document's "Low Balance Alerts"): the customer's own
//! under `/v1/wallet/…`, any account's under `/v1/admin/accounts/{id}/…`.

use actix_web::{get, put, web};
use billing_core::ids::AccountId;
use billing_core::notices::LowBalanceAlert;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::amount::Amount;
use crate::auth::{Admin, Customer};
use crate::error::{ApiError, ErrorBody};

/// `{"enabled", "threshold"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LowBalanceAlertJson {
    pub enabled: bool,
    /// One email (and a `balance.low` event) when a debit takes the balance below it.
    pub threshold: Option<Amount>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LowBalanceAlertResponse {
    pub low_balance_alert: LowBalanceAlertJson,
}

/// `{"low_balance_alert": {"enabled", "threshold"}}`: every field required (`threshold`
/// may be `null` only when disabled).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LowBalanceAlertBody {
    pub low_balance_alert: LowBalanceAlertFields,
}

/// What a `PUT` sends: every key present.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LowBalanceAlertFields {
    #[serde(deserialize_with = "crate::routes::controls::enabled_field")]
    pub enabled: bool,
    /// Present: a positive amount, or `null` while disabled.
    #[serde(deserialize_with = "crate::routes::controls::threshold_field")]
    #[schema(value_type = Option<Amount>)]
    pub threshold: Option<Amount>,
}

fn response(state: &AppState, alert: &LowBalanceAlert) -> LowBalanceAlertResponse {
    LowBalanceAlertResponse {
        low_balance_alert: LowBalanceAlertJson {
            enabled: alert.enabled,
            threshold: alert.threshold.map(|t| state.unit.show(t)),
        },
    }
}

async fn read(state: &AppState, account: &AccountId) -> Result<LowBalanceAlertResponse, ApiError> {
    let alert = state
        .billing
        .low_balance_alert(account)
        .await?
        .ok_or_else(ApiError::account_not_found)?;
    Ok(response(state, &alert))
}

async fn write(
    state: &AppState,
    account: &AccountId,
    body: LowBalanceAlertBody,
) -> Result<LowBalanceAlertResponse, ApiError> {
    let fields = body.low_balance_alert;
    let alert = state
        .billing
        .set_low_balance_alert(
            account,
            fields.enabled,
            fields.threshold.map(|t| t.0),
            state
                .unit
                .display_scale
                .min(billing_core::money::LEDGER_SCALE),
        )
        .await?;
    tracing::info!(account = %account, enabled = alert.enabled, "low-balance alert set");
    Ok(response(state, &alert))
}

/// The wallet's low-balance alert.
#[utoipa::path(
    tag = "wallet",
    security(("bearer" = [])),
    responses((status = 200, body = LowBalanceAlertResponse))
)]
#[get("/v1/wallet/low-balance-alert")]
pub async fn get_alert(
    state: web::Data<AppState>,
    Customer(account): Customer,
) -> Result<web::Json<LowBalanceAlertResponse>, ApiError> {
    Ok(web::Json(read(&state, &account).await?))
}

/// Replaces the low-balance alert: one email when a debit takes the balance from at or
/// above `threshold` to below it, re-armed when the balance is back at or above it.
#[utoipa::path(
    tag = "wallet",
    security(("bearer" = [])),
    request_body = LowBalanceAlertBody,
    responses((status = 200, body = LowBalanceAlertResponse))
)]
#[put("/v1/wallet/low-balance-alert")]
pub async fn put_alert(
    state: web::Data<AppState>,
    Customer(account): Customer,
    body: web::Json<LowBalanceAlertBody>,
) -> Result<web::Json<LowBalanceAlertResponse>, ApiError> {
    Ok(web::Json(write(&state, &account, body.into_inner()).await?))
}

/// An account's low-balance alert (admin).
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    responses((status = 200, body = LowBalanceAlertResponse), (status = 404, description = "account_not_found", body = ErrorBody))
)]
#[get("/v1/admin/accounts/{id}/low-balance-alert")]
pub async fn admin_get_alert(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    path: web::Path<String>,
) -> Result<web::Json<LowBalanceAlertResponse>, ApiError> {
    let account = admin.account(path.into_inner())?;
    Ok(web::Json(read(&state, &account).await?))
}

/// Replaces an account's low-balance alert (admin).
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    request_body = LowBalanceAlertBody,
    responses((status = 200, body = LowBalanceAlertResponse), (status = 404, description = "account_not_found", body = ErrorBody))
)]
#[put("/v1/admin/accounts/{id}/low-balance-alert")]
pub async fn admin_put_alert(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    path: web::Path<String>,
    body: web::Json<LowBalanceAlertBody>,
) -> Result<web::Json<LowBalanceAlertResponse>, ApiError> {
    let account = admin.account(path.into_inner())?;
    Ok(web::Json(write(&state, &account, body.into_inner()).await?))
}
