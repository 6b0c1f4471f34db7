//! Authorization holds (service, account platform and admin keys): reserve the most an LLM
//! call can cost, capture the actual cost, release the rest.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use billing_core::holds::Hold;
use billing_core::ids::HoldId;
use billing_core::ports::HoldOutcome;
use billing_core::service::{CaptureCharge, HoldCharge, HoldOpError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::amount::{Amount, whole_u64};
use crate::auth::{Caller, Platform};
use crate::error::{ApiError, ErrorBody};
use crate::routes::wallet::Transaction;
use crate::{AppState, required_idempotency_key};

impl From<HoldOpError> for ApiError {
    fn from(e: HoldOpError) -> ApiError {
        let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
        match e {
            HoldOpError::Invalid(m) => ApiError::bad_request("invalid_request", m),
            HoldOpError::AccountNotFound => ApiError::account_not_found(),
            HoldOpError::HoldNotFound => hold_not_found(),
            free @ HoldOpError::NothingToHold => {
                ApiError::new(unprocessable, "nothing_to_charge", free.to_string())
            }
            unknown @ HoldOpError::UnknownModel(_) => {
                ApiError::new(unprocessable, "unknown_model", unknown.to_string())
            }
            inactive @ HoldOpError::NotActive(_) => ApiError::new(
                StatusCode::CONFLICT,
                "hold_not_active",
                inactive.to_string(),
            ),
            over @ HoldOpError::CaptureExceedsHold { .. } => {
                ApiError::new(unprocessable, "capture_exceeds_hold", over.to_string())
            }
            short @ HoldOpError::InsufficientFunds { .. } => ApiError::new(
                StatusCode::PAYMENT_REQUIRED,
                "insufficient_funds",
                short.to_string(),
            ),
            HoldOpError::IdempotencyConflict => ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_conflict",
                "this Idempotency-Key was already used with a different request",
            ),
            HoldOpError::SpendingLimitExceeded(m) => {
                crate::routes::controls::spending_limit_exceeded(m)
            }
            HoldOpError::Store(e) => e.into(),
        }
    }
}

fn hold_not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "hold_not_found", "no such hold")
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HoldResponse {
    pub id: String,
    pub account_id: String,
    /// What is reserved.
    pub amount: Amount,
    /// `active`, `captured`, `released` or `expired`.
    pub status: String,
    pub expires_at: String,
    pub created_at: String,
    /// What a capture debited.
    pub captured_amount: Option<Amount>,
    /// For a hold placed by model: the model its capture by tokens is priced for.
    pub model: Option<String>,
}

impl HoldResponse {
    fn new(hold: &Hold, state: &AppState) -> HoldResponse {
        HoldResponse {
            id: hold.id.to_string(),
            account_id: hold.account_id.to_string(),
            amount: state.unit.show(hold.amount),
            status: hold.status_at(state.billing.now()).to_string(),
            expires_at: hold.expires_at.to_rfc3339(),
            created_at: hold.created_at.to_rfc3339(),
            captured_amount: hold.captured_amount.map(|a| state.unit.show(a)),
            model: hold.rate.as_ref().map(|r| r.model.clone()),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CaptureResponse {
    pub hold: HoldResponse,
    /// The `usage` transaction the capture wrote (`null` for a capture of zero).
    pub transaction: Option<Transaction>,
}

fn answer(outcome: &HoldOutcome, created: bool, body: impl Serialize) -> HttpResponse {
    let mut response = if created && !outcome.replayed {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    };
    if outcome.replayed {
        response.insert_header(("Idempotent-Replayed", "true"));
    }
    response.json(body)
}

/// `{"account_id", "amount"}` or `{"account_id", "model", "max_input_tokens",
/// "max_output_tokens"}`, optional `expires_in_seconds`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldBody {
    pub account_id: String,
    /// The most the call may cost, in the wallet's unit.
    pub amount: Option<Amount>,
    /// A model of the rate card: the hold is the cost of the maximum tokens.
    pub model: Option<String>,
    #[serde(default, deserialize_with = "whole_u64")]
    #[schema(value_type = Option<u64>)]
    pub max_input_tokens: Option<u64>,
    #[serde(default, deserialize_with = "whole_u64")]
    #[schema(value_type = Option<u64>)]
    pub max_output_tokens: Option<u64>,
    /// 1 to 86400; 600 when absent.
    #[serde(default, deserialize_with = "whole_u64")]
    #[schema(value_type = Option<u64>)]
    pub expires_in_seconds: Option<u64>,
}

fn seconds(value: Option<u64>) -> Option<i64> {
    value.map(|s| i64::try_from(s).unwrap_or(i64::MAX))
}

/// Places a hold: reserves the most a call can cost against the available balance.
#[utoipa::path(
    tag = "holds",
    security(("bearer" = [])),
    request_body = HoldBody,
    params(("Idempotency-Key" = String, Header, description = "Required: one key per call")),
    responses(
        (status = 201, body = HoldResponse),
        (status = 200, description = "Replay of an earlier request with this key", body = HoldResponse),
        (status = 402, description = "insufficient_funds: the available balance does not cover it", body = ErrorBody),
        (status = 404, description = "account_not_found", body = ErrorBody),
        (status = 409, description = "Idempotency-Key reused with another request", body = ErrorBody),
        (status = 422, description = "unknown_model, or nothing_to_charge (the maximum costs nothing)", body = ErrorBody),
    )
)]
#[post("/v1/holds")]
pub async fn place(
    state: web::Data<AppState>,
    Platform(caller): Platform,
    req: HttpRequest,
    body: web::Json<HoldBody>,
) -> Result<HttpResponse, ApiError> {
    let key = required_idempotency_key(&req)?;
    let body = body.into_inner();
    let charge = match (
        body.amount,
        body.model,
        body.max_input_tokens,
        body.max_output_tokens,
    ) {
        (Some(amount), None, None, None) => HoldCharge::Amount(amount.0),
        (None, Some(model), Some(max_input_tokens), Some(max_output_tokens)) => {
            HoldCharge::Tokens {
                model,
                max_input_tokens,
                max_output_tokens,
            }
        }
        _ => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "give either `amount`, or `model` with `max_input_tokens` and `max_output_tokens`",
            ));
        }
    };
    let account = caller.account(body.account_id)?;
    let outcome = state
        .billing
        .place_hold(&account, &charge, seconds(body.expires_in_seconds), &key)
        .await?;
    Ok(answer(
        &outcome,
        true,
        HoldResponse::new(&outcome.hold, &state),
    ))
}

/// The hold `id`, if the caller's key acts on its account (else 404, as if absent).
async fn hold_for(state: &AppState, caller: &Caller, id: String) -> Result<Hold, ApiError> {
    state
        .billing
        .hold(&HoldId::new(id))
        .await?
        .filter(|h| caller.0.acts_on(&h.account_id))
        .ok_or_else(hold_not_found)
}

/// One hold.
#[utoipa::path(
    tag = "holds",
    security(("bearer" = [])),
    responses((status = 200, body = HoldResponse), (status = 404, description = "hold_not_found", body = ErrorBody))
)]
#[get("/v1/holds/{id}")]
pub async fn get_hold(
    state: web::Data<AppState>,
    Platform(caller): Platform,
    path: web::Path<String>,
) -> Result<web::Json<HoldResponse>, ApiError> {
    let hold = hold_for(&state, &caller, path.into_inner()).await?;
    Ok(web::Json(HoldResponse::new(&hold, &state)))
}

/// `{"amount"}` or `{"input_tokens", "output_tokens"}` (a hold placed by model), optional
/// `description`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureBody {
    /// The actual cost, from 0 to the held amount.
    pub amount: Option<Amount>,
    #[serde(default, deserialize_with = "whole_u64")]
    #[schema(value_type = Option<u64>)]
    pub input_tokens: Option<u64>,
    #[serde(default, deserialize_with = "whole_u64")]
    #[schema(value_type = Option<u64>)]
    pub output_tokens: Option<u64>,
    pub description: Option<String>,
}

/// Captures a hold: debits the actual cost as one `usage` transaction (its `reference` is
/// the hold's id) and releases the rest.
#[utoipa::path(
    tag = "holds",
    security(("bearer" = [])),
    request_body = CaptureBody,
    params(("Idempotency-Key" = String, Header, description = "Required; a repeat replays")),
    responses(
        (status = 200, body = CaptureResponse),
        (status = 404, description = "hold_not_found", body = ErrorBody),
        (status = 409, description = "hold_not_active, or Idempotency-Key reused with another request", body = ErrorBody),
        (status = 422, description = "capture_exceeds_hold", body = ErrorBody),
    )
)]
#[post("/v1/holds/{id}/capture")]
pub async fn capture(
    state: web::Data<AppState>,
    Platform(caller): Platform,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<CaptureBody>,
) -> Result<HttpResponse, ApiError> {
    let key = required_idempotency_key(&req)?;
    let body = body.into_inner();
    let charge = match (body.amount, body.input_tokens, body.output_tokens) {
        (Some(amount), None, None) => CaptureCharge::Amount(amount.0),
        (None, Some(input_tokens), Some(output_tokens)) => CaptureCharge::Tokens {
            input_tokens,
            output_tokens,
        },
        _ => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "give either `amount`, or `input_tokens` and `output_tokens`",
            ));
        }
    };
    let hold = hold_for(&state, &caller, path.into_inner()).await?;
    let outcome = state
        .billing
        .capture_hold(
            &hold.account_id,
            &hold.id,
            &charge,
            body.description.as_deref(),
            &key,
        )
        .await?;
    Ok(answer(
        &outcome,
        false,
        CaptureResponse {
            hold: HoldResponse::new(&outcome.hold, &state),
            transaction: outcome.entry.as_ref().map(|e| Transaction::new(e, &state)),
        },
    ))
}

/// Releases a hold: it ends, nothing is debited.
#[utoipa::path(
    tag = "holds",
    security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "Required; a repeat replays")),
    responses(
        (status = 200, body = HoldResponse),
        (status = 404, description = "hold_not_found", body = ErrorBody),
        (status = 409, description = "hold_not_active, or Idempotency-Key reused with another request", body = ErrorBody),
    )
)]
#[post("/v1/holds/{id}/release")]
pub async fn release(
    state: web::Data<AppState>,
    Platform(caller): Platform,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let key = required_idempotency_key(&req)?;
    let hold = hold_for(&state, &caller, path.into_inner()).await?;
    let outcome = state
        .billing
        .release_hold(&hold.account_id, &hold.id, &key)
        .await?;
    Ok(answer(
        &outcome,
        false,
        HoldResponse::new(&outcome.hold, &state),
    ))
}

/// `{"expires_in_seconds"}`, optional `amount` (the new total).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendBody {
    /// 1 to 86400, from now.
    #[serde(default, deserialize_with = "whole_u64")]
    #[schema(value_type = u64)]
    pub expires_in_seconds: Option<u64>,
    /// The hold's new total; an increase is checked against the available balance.
    pub amount: Option<Amount>,
}

/// Keeps a hold alive while a response streams (and optionally raises it).
#[utoipa::path(
    tag = "holds",
    security(("bearer" = [])),
    request_body = ExtendBody,
    params(("Idempotency-Key" = String, Header, description = "Required; a repeat replays")),
    responses(
        (status = 200, body = HoldResponse),
        (status = 402, description = "insufficient_funds for the increase", body = ErrorBody),
        (status = 404, description = "hold_not_found", body = ErrorBody),
        (status = 409, description = "hold_not_active, or Idempotency-Key reused with another request", body = ErrorBody),
    )
)]
#[post("/v1/holds/{id}/extend")]
pub async fn extend(
    state: web::Data<AppState>,
    Platform(caller): Platform,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<ExtendBody>,
) -> Result<HttpResponse, ApiError> {
    let key = required_idempotency_key(&req)?;
    let secs = seconds(body.expires_in_seconds).ok_or_else(|| {
        ApiError::bad_request("invalid_request", "expires_in_seconds is required")
    })?;
    let hold = hold_for(&state, &caller, path.into_inner()).await?;
    let outcome = state
        .billing
        .extend_hold(
            &hold.account_id,
            &hold.id,
            secs,
            body.amount.map(|a| a.0),
            &key,
        )
        .await?;
    Ok(answer(
        &outcome,
        false,
        HoldResponse::new(&outcome.hold, &state),
    ))
}
