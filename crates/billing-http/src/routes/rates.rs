//! The rate card: prices per million tokens by model.

use actix_web::{HttpResponse, delete, get, put, web};
use billing_core::pricing::Rate;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::amount::Amount;
use crate::auth::{Admin, Caller};
use crate::error::{ApiError, ErrorBody};

#[derive(Debug, Serialize, ToSchema)]
pub struct RateResponse {
    pub model: String,
    /// Price per million input tokens, in the wallet's unit.
    pub input_per_million: Amount,
    /// Price per million output tokens, in the wallet's unit.
    pub output_per_million: Amount,
    /// The wallet's unit.
    pub currency: String,
}

impl RateResponse {
    fn new(rate: &Rate, state: &AppState) -> RateResponse {
        RateResponse {
            model: rate.model.clone(),
            input_per_million: Amount(rate.input_per_million),
            output_per_million: Amount(rate.output_per_million),
            currency: state.unit.code.clone(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RatesResponse {
    /// By model name.
    pub rates: Vec<RateResponse>,
}

/// The rate card: every model's prices per million tokens.
#[utoipa::path(tag = "usage", security(("bearer" = [])), responses((status = 200, body = RatesResponse)))]
#[get("/v1/rates")]
pub async fn rates(
    state: web::Data<AppState>,
    _caller: Caller,
) -> Result<web::Json<RatesResponse>, ApiError> {
    let rates = state.billing.rates().await?;
    Ok(web::Json(RatesResponse {
        rates: rates.iter().map(|r| RateResponse::new(r, &state)).collect(),
    }))
}

/// A model's prices, per million tokens, in the wallet's unit (at most 9 decimals).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateBody {
    pub input_per_million: Amount,
    pub output_per_million: Amount,
}

/// Creates or replaces a model's rate. Requests after it are priced with it; entries
/// already written keep the prices they record.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    request_body = RateBody,
    responses((status = 200, body = RateResponse))
)]
#[put("/v1/admin/rates/{model}")]
pub async fn set_rate(
    state: web::Data<AppState>,
    _admin: Admin,
    path: web::Path<String>,
    body: web::Json<RateBody>,
) -> Result<web::Json<RateResponse>, ApiError> {
    let rate = state
        .billing
        .set_rate(
            &path.into_inner(),
            body.input_per_million.0,
            body.output_per_million.0,
        )
        .await?;
    tracing::info!(model = %rate.model, input = %rate.input_per_million, output = %rate.output_per_million, "rate set");
    Ok(web::Json(RateResponse::new(&rate, &state)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RateDeleted {
    pub model: String,
    pub deleted: bool,
}

/// Removes a model's rate: priced requests for it answer `422 unknown_model` afterwards.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    responses((status = 200, body = RateDeleted), (status = 404, description = "unknown_model", body = ErrorBody))
)]
#[delete("/v1/admin/rates/{model}")]
pub async fn delete_rate(
    state: web::Data<AppState>,
    _admin: Admin,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let model = path.into_inner();
    state.billing.delete_rate(&model).await?;
    tracing::info!(model = %model, "rate deleted");
    Ok(HttpResponse::Ok().json(RateDeleted {
        model,
        deleted: true,
    }))
}
