//! Auto top-up and the saved payment method (the wallet document's "Auto Top-Up"): the
//! customer's own under `/v1/wallet/…`, any account's under `/v1/admin/accounts/{id}/…`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, delete, get, put, web};
use billing_core::autotopup::SavedMethod;
use billing_core::ids::AccountId;
use billing_core::service::{AutoTopUpInput, AutoTopUpView, SetAutoTopUpError};
use billing_core::topup::TopUpRuleError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::amount::Amount;
use crate::auth::{Admin, Customer};
use crate::error::{ApiError, ErrorBody};

impl From<SetAutoTopUpError> for ApiError {
    fn from(e: SetAutoTopUpError) -> ApiError {
        match e {
            SetAutoTopUpError::Invalid(m) => ApiError::bad_request("invalid_request", m),
            SetAutoTopUpError::PaymentMethodRequired => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "payment_method_required",
                e.to_string(),
            ),
            SetAutoTopUpError::Amount(rule) => {
                let code = match rule {
                    TopUpRuleError::BelowMinimum { .. } => "below_minimum",
                    _ => "contact_sales",
                };
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    code,
                    format!("amount: {rule}"),
                )
            }
            SetAutoTopUpError::AccountNotFound => ApiError::account_not_found(),
            SetAutoTopUpError::Store(e) => e.into(),
        }
    }
}

/// The saved card, as much as a customer needs to recognise it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentMethodJson {
    pub gateway: String,
    pub brand: Option<String>,
    pub last4: Option<String>,
    pub saved_at: String,
}

impl From<&SavedMethod> for PaymentMethodJson {
    fn from(m: &SavedMethod) -> PaymentMethodJson {
        PaymentMethodJson {
            gateway: m.gateway.clone(),
            brand: m.brand.clone(),
            last4: m.last4.clone(),
            saved_at: m.saved_at.to_rfc3339(),
        }
    }
}

/// `{"enabled", "threshold", "amount", "monthly_cap", "payment_method", "disabled_reason"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AutoTopUpJson {
    pub enabled: bool,
    /// A debit that leaves the balance below it starts one charge (wallet unit).
    pub threshold: Option<Amount>,
    /// What each auto top-up charges, in the top-up currency (bonus tiers apply).
    pub amount: Option<Amount>,
    /// The most auto top-ups charge in a calendar month: the one set, else 10 × `amount`.
    pub monthly_cap: Option<Amount>,
    pub payment_method: Option<PaymentMethodJson>,
    /// Why the service turned it off or paused it: `payment_failed`, `monthly_cap_reached`,
    /// `payment_method_removed`; `null` otherwise.
    pub disabled_reason: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AutoTopUpResponse {
    pub auto_topup: AutoTopUpJson,
}

/// `{"auto_topup": {"enabled", "threshold", "amount", "monthly_cap"?}}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AutoTopUpBody {
    pub auto_topup: AutoTopUpFields,
}

/// What a `PUT` sends: `enabled`, `threshold` and `amount` present (`null` only while
/// disabled); `monthly_cap` optional.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AutoTopUpFields {
    #[serde(deserialize_with = "crate::routes::controls::enabled_field")]
    pub enabled: bool,
    #[serde(deserialize_with = "crate::routes::controls::threshold_field")]
    #[schema(value_type = Option<Amount>)]
    pub threshold: Option<Amount>,
    #[serde(deserialize_with = "crate::routes::controls::amount_field")]
    #[schema(value_type = Option<Amount>)]
    pub amount: Option<Amount>,
    #[serde(
        default,
        deserialize_with = "crate::routes::controls::monthly_cap_field"
    )]
    #[schema(value_type = Option<Amount>)]
    pub monthly_cap: Option<Amount>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentMethodResponse {
    pub payment_method: PaymentMethodJson,
}

fn response(state: &AppState, view: &AutoTopUpView) -> AutoTopUpResponse {
    let s = &view.settings;
    AutoTopUpResponse {
        auto_topup: AutoTopUpJson {
            enabled: s.enabled,
            threshold: s.threshold.map(|t| state.unit.show(t)),
            amount: s.amount.as_ref().map(Amount::money),
            monthly_cap: s.cap_in_force().as_ref().map(Amount::money),
            payment_method: view.method.as_ref().map(PaymentMethodJson::from),
            disabled_reason: view.state.disabled_reason.clone(),
        },
    }
}

async fn read(state: &AppState, account: &AccountId) -> Result<AutoTopUpResponse, ApiError> {
    let view = state
        .billing
        .auto_topup(account)
        .await?
        .ok_or_else(ApiError::account_not_found)?;
    Ok(response(state, &view))
}

async fn write(
    state: &AppState,
    account: &AccountId,
    body: AutoTopUpBody,
) -> Result<AutoTopUpResponse, ApiError> {
    let f = body.auto_topup;
    let input = AutoTopUpInput {
        enabled: f.enabled,
        threshold: f.threshold.map(|a| a.0),
        amount: f.amount.map(|a| a.0),
        monthly_cap: f.monthly_cap.map(|a| a.0),
    };
    let decimals = state
        .unit
        .display_scale
        .min(billing_core::money::LEDGER_SCALE);
    let view = state
        .billing
        .set_auto_topup(account, &input, decimals)
        .await?;
    tracing::info!(account = %account, enabled = input.enabled, "auto top-up set");
    Ok(response(state, &view))
}

async fn method(state: &AppState, account: &AccountId) -> Result<PaymentMethodResponse, ApiError> {
    if state.billing.store().account(account).await?.is_none() {
        return Err(ApiError::account_not_found());
    }
    let method = state
        .billing
        .payment_method(account)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no_payment_method",
                "no payment method is saved: pay a top-up with \"save_payment_method\": true",
            )
        })?;
    Ok(PaymentMethodResponse {
        payment_method: PaymentMethodJson::from(&method),
    })
}

/// Idempotent: `204` whether or not a method was saved (a retried `DELETE` succeeds).
async fn remove(state: &AppState, account: &AccountId) -> Result<HttpResponse, ApiError> {
    if state.billing.store().account(account).await?.is_none() {
        return Err(ApiError::account_not_found());
    }
    if state.billing.delete_payment_method(account).await? {
        tracing::info!(account = %account, "payment method removed; auto top-up off");
    }
    Ok(HttpResponse::NoContent().finish())
}

/// The wallet's auto top-up.
#[utoipa::path(tag = "wallet", security(("bearer" = [])), responses((status = 200, body = AutoTopUpResponse)))]
#[get("/v1/wallet/auto-top-up")]
pub async fn get_auto_topup(
    state: web::Data<AppState>,
    Customer(account): Customer,
) -> Result<web::Json<AutoTopUpResponse>, ApiError> {
    Ok(web::Json(read(&state, &account).await?))
}

/// Replaces the auto top-up settings. Enabling needs a saved payment method (`422
/// payment_method_required`).
#[utoipa::path(
    tag = "wallet",
    security(("bearer" = [])),
    request_body = AutoTopUpBody,
    responses((status = 200, body = AutoTopUpResponse), (status = 422, description = "payment_method_required, below_minimum, contact_sales", body = ErrorBody))
)]
#[put("/v1/wallet/auto-top-up")]
pub async fn put_auto_topup(
    state: web::Data<AppState>,
    Customer(account): Customer,
    body: web::Json<AutoTopUpBody>,
) -> Result<web::Json<AutoTopUpResponse>, ApiError> {
    Ok(web::Json(write(&state, &account, body.into_inner()).await?))
}

/// The saved payment method, or `404 no_payment_method`.
#[utoipa::path(
    tag = "wallet",
    security(("bearer" = [])),
    responses((status = 200, body = PaymentMethodResponse), (status = 404, description = "no_payment_method", body = ErrorBody))
)]
#[get("/v1/wallet/payment-method")]
pub async fn get_payment_method(
    state: web::Data<AppState>,
    Customer(account): Customer,
) -> Result<web::Json<PaymentMethodResponse>, ApiError> {
    Ok(web::Json(method(&state, &account).await?))
}

/// Removes the saved payment method (if any); auto top-up turns off. Idempotent.
#[utoipa::path(
    tag = "wallet",
    security(("bearer" = [])),
    responses((status = 204, description = "Removed, or none was saved"))
)]
#[delete("/v1/wallet/payment-method")]
pub async fn delete_payment_method(
    state: web::Data<AppState>,
    Customer(account): Customer,
) -> Result<HttpResponse, ApiError> {
    remove(&state, &account).await
}

/// An account's auto top-up (admin).
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    responses((status = 200, body = AutoTopUpResponse), (status = 404, description = "account_not_found", body = ErrorBody))
)]
#[get("/v1/admin/accounts/{id}/auto-top-up")]
pub async fn admin_get_auto_topup(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    path: web::Path<String>,
) -> Result<web::Json<AutoTopUpResponse>, ApiError> {
    let account = admin.account(path.into_inner())?;
    Ok(web::Json(read(&state, &account).await?))
}

/// Replaces an account's auto top-up settings (admin).
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    request_body = AutoTopUpBody,
    responses((status = 200, body = AutoTopUpResponse), (status = 404, description = "account_not_found", body = ErrorBody), (status = 422, description = "payment_method_required", body = ErrorBody))
)]
#[put("/v1/admin/accounts/{id}/auto-top-up")]
pub async fn admin_put_auto_topup(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    path: web::Path<String>,
    body: web::Json<AutoTopUpBody>,
) -> Result<web::Json<AutoTopUpResponse>, ApiError> {
    let account = admin.account(path.into_inner())?;
    Ok(web::Json(write(&state, &account, body.into_inner()).await?))
}

/// An account's saved payment method (admin).
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    responses((status = 200, body = PaymentMethodResponse), (status = 404, description = "account_not_found or no_payment_method", body = ErrorBody))
)]
#[get("/v1/admin/accounts/{id}/payment-method")]
pub async fn admin_get_payment_method(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    path: web::Path<String>,
) -> Result<web::Json<PaymentMethodResponse>, ApiError> {
    let account = admin.account(path.into_inner())?;
    Ok(web::Json(method(&state, &account).await?))
}

/// Removes an account's saved payment method (admin), if any; auto top-up turns off.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    responses((status = 204, description = "Removed, or none was saved"), (status = 404, description = "account_not_found", body = ErrorBody))
)]
#[delete("/v1/admin/accounts/{id}/payment-method")]
pub async fn admin_delete_payment_method(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let account = admin.account(path.into_inner())?;
    remove(&state, &account).await
}
