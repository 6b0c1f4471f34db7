//! Usage debits (platform keys) and the admin endpoints (admin keys).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, delete, get, post, put, web};
use billing_core::ids::{AccountId, ApiKeyId, EntryId};
use billing_core::ports::{Account, KeyScope, Posted};
use billing_core::service::{ManagePackError, PackInput, UsageRequest};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::amount::Amount;
use crate::auth::{Admin, Platform, issue_key};
use crate::error::{ApiError, ErrorBody};
use crate::routes::wallet::{PackResponse, Transaction};
use crate::{AppState, idempotency_key};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageBody {
    pub account_id: String,
    /// What the call cost, positive, in the wallet's unit (up to 9 decimals).
    pub amount: Amount,
    /// Shown in the customer's transactions, e.g. `API usage - chat-v1`.
    pub description: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PostedTransaction {
    pub account_id: String,
    #[serde(flatten)]
    pub transaction: Transaction,
}

fn posted_response(
    posted: &Posted,
    account: &AccountId,
    state: &AppState,
) -> Result<HttpResponse, ApiError> {
    let entry = posted
        .entries
        .first()
        .ok_or_else(|| ApiError::internal(&"a posting returned no entry"))?;
    let body = PostedTransaction {
        account_id: account.to_string(),
        transaction: Transaction::new(entry, state),
    };
    let mut response = if posted.replayed {
        HttpResponse::Ok()
    } else {
        HttpResponse::Created()
    };
    if posted.replayed {
        response.insert_header(("Idempotent-Replayed", "true"));
    }
    Ok(response.json(body))
}

/// Debits a wallet for one API call, exactly once per `Idempotency-Key` (required). The
/// same key with the same body answers the first result (200, `Idempotent-Replayed: true`);
/// with another body, 409. A balance that does not cover the amount answers 402 and
/// changes nothing.
#[utoipa::path(
    tag = "usage",
    security(("bearer" = [])),
    request_body = UsageBody,
    params(("Idempotency-Key" = String, Header, description = "Required: one key per API call")),
    responses(
        (status = 201, body = PostedTransaction),
        (status = 200, description = "Replay of an earlier request with this key", body = PostedTransaction),
        (status = 400, body = ErrorBody),
        (status = 402, description = "insufficient_funds", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody),
    )
)]
#[post("/v1/usage")]
pub async fn usage(
    state: web::Data<AppState>,
    _platform: Platform,
    req: HttpRequest,
    body: web::Json<UsageBody>,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(&req)?.ok_or_else(|| {
        ApiError::bad_request(
            "idempotency_key_required",
            "POST /v1/usage needs an Idempotency-Key header (one per API call)",
        )
    })?;
    let body = body.into_inner();
    let account = AccountId::new(body.account_id);
    let posted = state
        .billing
        .record_usage(
            &account,
            &UsageRequest {
                amount: body.amount.0,
                description: body.description,
                idempotency_key: key,
            },
        )
        .await?;
    posted_response(&posted, &account, &state)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccountBody {
    pub name: String,
    pub email: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountResponse {
    pub id: String,
    pub name: String,
    pub email: String,
    pub balance: Amount,
    pub currency: String,
    pub created_at: String,
}

async fn account_response(
    state: &AppState,
    account: &Account,
) -> Result<AccountResponse, ApiError> {
    let wallet = state
        .billing
        .wallet(&account.id)
        .await?
        .ok_or_else(|| ApiError::not_found("account"))?;
    Ok(AccountResponse {
        id: account.id.to_string(),
        name: account.name.clone(),
        email: account.email.clone(),
        balance: state.unit.show(wallet.balance),
        currency: state.unit.code.clone(),
        created_at: account.created_at.to_rfc3339(),
    })
}

/// Creates an account with an empty wallet.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    request_body = CreateAccountBody,
    responses((status = 201, body = AccountResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody))
)]
#[post("/v1/admin/accounts")]
pub async fn create_account(
    state: web::Data<AppState>,
    _admin: Admin,
    body: web::Json<CreateAccountBody>,
) -> Result<HttpResponse, ApiError> {
    let account = state
        .billing
        .create_account(&body.name, &body.email)
        .await?;
    Ok(HttpResponse::Created().json(account_response(&state, &account).await?))
}

/// An account and its balance.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    responses((status = 200, body = AccountResponse), (status = 404, body = ErrorBody))
)]
#[get("/v1/admin/accounts/{id}")]
pub async fn get_account(
    state: web::Data<AppState>,
    _admin: Admin,
    path: web::Path<String>,
) -> Result<web::Json<AccountResponse>, ApiError> {
    let account = state
        .billing
        .account(&AccountId::new(path.into_inner()))
        .await?
        .ok_or_else(|| ApiError::not_found("account"))?;
    Ok(web::Json(account_response(&state, &account).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyBody {
    /// `customer` (this account's own wallet) or `platform` (usage for any account).
    pub scope: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyResponse {
    pub id: String,
    /// The key itself. Shown once: only its hash is stored.
    pub key: String,
    pub prefix: String,
    pub scope: String,
    pub account_id: Option<String>,
    pub created_at: String,
}

/// Issues an API key for the account. The answer is the only time the key is shown.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    request_body = CreateKeyBody,
    responses((status = 201, body = KeyResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody))
)]
#[post("/v1/admin/accounts/{id}/api-keys")]
pub async fn create_key(
    state: web::Data<AppState>,
    _admin: Admin,
    path: web::Path<String>,
    body: web::Json<CreateKeyBody>,
) -> Result<HttpResponse, ApiError> {
    let scope = match body.scope.as_str() {
        "customer" => KeyScope::Customer,
        "platform" => KeyScope::Platform,
        other => {
            return Err(ApiError::bad_request(
                "invalid_request",
                format!("scope must be `customer` or `platform`, not {other:?}"),
            ));
        }
    };
    let account = state
        .billing
        .account(&AccountId::new(path.into_inner()))
        .await?
        .ok_or_else(|| ApiError::not_found("account"))?;
    let issued = issue_key(
        scope,
        Some(account.id.clone()),
        state.ids.as_ref(),
        state.billing.now(),
    );
    state.billing.store().insert_key(&issued.record).await?;
    tracing::info!(key_id = %issued.record.id, prefix = %issued.record.prefix, scope = scope.as_str(), account = %account.id, "api key issued");
    Ok(HttpResponse::Created().json(KeyResponse {
        id: issued.record.id.to_string(),
        key: issued.secret,
        prefix: issued.record.prefix,
        scope: scope.as_str().to_owned(),
        account_id: Some(account.id.to_string()),
        created_at: issued.record.created_at.to_rfc3339(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RevokedResponse {
    pub id: String,
    pub revoked: bool,
}

/// Revokes an API key (idempotent).
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    responses((status = 200, body = RevokedResponse), (status = 404, body = ErrorBody))
)]
#[delete("/v1/admin/api-keys/{id}")]
pub async fn revoke_key(
    state: web::Data<AppState>,
    _admin: Admin,
    path: web::Path<String>,
) -> Result<web::Json<RevokedResponse>, ApiError> {
    let id = ApiKeyId::new(path.into_inner());
    if !state
        .billing
        .store()
        .revoke_key(&id, state.billing.now())
        .await?
    {
        return Err(ApiError::not_found("API key"));
    }
    tracing::info!(key_id = %id, "api key revoked");
    Ok(web::Json(RevokedResponse {
        id: id.to_string(),
        revoked: true,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    pub amount: Amount,
    pub description: Option<String>,
}

/// Grants promotional credits (a `bonus` transaction).
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    request_body = GrantBody,
    params(("Idempotency-Key" = Option<String>, Header,)),
    responses((status = 201, body = PostedTransaction), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody))
)]
#[post("/v1/admin/accounts/{id}/grants")]
pub async fn grant(
    state: web::Data<AppState>,
    _admin: Admin,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<GrantBody>,
) -> Result<HttpResponse, ApiError> {
    let account = AccountId::new(path.into_inner());
    let key = idempotency_key(&req)?;
    let posted = state
        .billing
        .grant(
            &account,
            body.amount.0,
            body.description.as_deref().unwrap_or_default(),
            key.as_deref(),
        )
        .await?;
    posted_response(&posted, &account, &state)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundBody {
    /// The usage transactions this refund answers.
    pub transaction_ids: Vec<String>,
    pub amount: Amount,
    pub description: Option<String>,
}

/// Credits back usage (a `refund` transaction linked to the transactions it answers), never
/// more than their total less earlier refunds.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    request_body = RefundBody,
    params(("Idempotency-Key" = Option<String>, Header,)),
    responses((status = 201, body = PostedTransaction), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody))
)]
#[post("/v1/admin/accounts/{id}/refunds")]
pub async fn refund(
    state: web::Data<AppState>,
    _admin: Admin,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<RefundBody>,
) -> Result<HttpResponse, ApiError> {
    let account = AccountId::new(path.into_inner());
    let key = idempotency_key(&req)?;
    let body = body.into_inner();
    let posted = state
        .billing
        .refund(
            &account,
            body.transaction_ids.into_iter().map(EntryId::new).collect(),
            body.amount.0,
            body.description.as_deref().unwrap_or_default(),
            key.as_deref(),
        )
        .await?;
    posted_response(&posted, &account, &state)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PackBody {
    /// `pack_…`; generated when absent (create only).
    pub id: Option<String>,
    pub name: String,
    pub price: Amount,
    pub currency: String,
    pub credits: Amount,
    #[serde(default)]
    pub popular: bool,
    pub active: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AdminPackResponse {
    #[serde(flatten)]
    pub pack: PackResponse,
    pub active: bool,
}

impl From<ManagePackError> for ApiError {
    fn from(e: ManagePackError) -> ApiError {
        match e {
            ManagePackError::Invalid(m) => ApiError::bad_request("invalid_request", m),
            ManagePackError::NotFound => ApiError::not_found("pack"),
            ManagePackError::Exists => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                "a pack with this id already exists",
            ),
            ManagePackError::Store(e) => e.into(),
        }
    }
}

fn pack_input(body: &PackBody) -> PackInput {
    PackInput {
        name: body.name.clone(),
        price: body.price.0,
        currency: body.currency.clone(),
        credits: body.credits.0,
        popular: body.popular,
        active: body.active.unwrap_or(true),
    }
}

fn admin_pack(pack: &billing_core::topup::Pack, state: &AppState) -> AdminPackResponse {
    AdminPackResponse {
        pack: PackResponse::new(pack, state),
        active: pack.active,
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AdminPacksResponse {
    pub packs: Vec<AdminPackResponse>,
}

/// Every pack, inactive ones included.
#[utoipa::path(tag = "admin", security(("bearer" = [])), responses((status = 200, body = AdminPacksResponse)))]
#[get("/v1/admin/packs")]
pub async fn list_packs(
    state: web::Data<AppState>,
    _admin: Admin,
) -> Result<web::Json<AdminPacksResponse>, ApiError> {
    let packs = state.billing.all_packs().await?;
    Ok(web::Json(AdminPacksResponse {
        packs: packs.iter().map(|p| admin_pack(p, &state)).collect(),
    }))
}

/// Creates a pack.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    request_body = PackBody,
    responses((status = 201, body = AdminPackResponse), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody))
)]
#[post("/v1/admin/packs")]
pub async fn create_pack(
    state: web::Data<AppState>,
    _admin: Admin,
    body: web::Json<PackBody>,
) -> Result<HttpResponse, ApiError> {
    let pack = state
        .billing
        .create_pack(body.id.as_deref(), &pack_input(&body))
        .await?;
    Ok(HttpResponse::Created().json(admin_pack(&pack, &state)))
}

/// Replaces a pack's fields.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    request_body = PackBody,
    responses((status = 200, body = AdminPackResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody))
)]
#[put("/v1/admin/packs/{id}")]
pub async fn update_pack(
    state: web::Data<AppState>,
    _admin: Admin,
    path: web::Path<String>,
    body: web::Json<PackBody>,
) -> Result<web::Json<AdminPackResponse>, ApiError> {
    let id = path.into_inner();
    if body.id.as_deref().is_some_and(|b| b != id) {
        return Err(ApiError::bad_request(
            "invalid_request",
            "the body's id differs from the path's",
        ));
    }
    let pack = state.billing.update_pack(&id, &pack_input(&body)).await?;
    Ok(web::Json(admin_pack(&pack, &state)))
}

/// Takes a pack off sale.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    responses((status = 200, body = AdminPackResponse), (status = 404, body = ErrorBody))
)]
#[delete("/v1/admin/packs/{id}")]
pub async fn deactivate_pack(
    state: web::Data<AppState>,
    _admin: Admin,
    path: web::Path<String>,
) -> Result<web::Json<AdminPackResponse>, ApiError> {
    let pack = state.billing.deactivate_pack(&path.into_inner()).await?;
    Ok(web::Json(admin_pack(&pack, &state)))
}
