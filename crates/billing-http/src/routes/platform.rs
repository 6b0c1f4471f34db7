//! Usage debits (platform keys) and the admin endpoints (admin keys).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, delete, get, post, put, web};
use billing_core::ids::{AccountId, ApiKeyId, EntryId};
use billing_core::ports::{Account, ApiKeyRecord, KeyQuery, KeyScope, Posted};
use billing_core::service::{ManagePackError, PackInput, UsageCharge, UsageRequest};
use billing_core::time::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::amount::{Amount, whole_u32, whole_u64};
use crate::auth::{Admin, Caller, IssuedKey, Platform, issue_key};
use crate::error::{ApiError, ErrorBody};
use crate::routes::wallet::{PackResponse, Transaction};
use crate::{AppState, required_idempotency_key};

/// `{"account_id", "amount", "description"?}`, or priced by the rate card:
/// `{"account_id", "model", "input_tokens", "output_tokens", "description"?}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageBody {
    pub account_id: String,
    /// What the call cost, positive, in the wallet's unit (up to 9 decimals).
    pub amount: Option<Amount>,
    /// A model of the rate card: the cost is computed from the tokens.
    pub model: Option<String>,
    #[serde(default, deserialize_with = "whole_u64")]
    #[schema(value_type = Option<u64>)]
    pub input_tokens: Option<u64>,
    #[serde(default, deserialize_with = "whole_u64")]
    #[schema(value_type = Option<u64>)]
    pub output_tokens: Option<u64>,
    /// Shown in the customer's transactions; `API usage - <model>` (or `API usage`) when
    /// absent.
    pub description: Option<String>,
}

impl UsageBody {
    fn charge(&self) -> Result<UsageCharge, ApiError> {
        match (
            &self.amount,
            &self.model,
            self.input_tokens,
            self.output_tokens,
        ) {
            (Some(amount), None, None, None) => Ok(UsageCharge::Amount(amount.0)),
            (None, Some(model), Some(input_tokens), Some(output_tokens)) => {
                Ok(UsageCharge::Tokens {
                    model: model.clone(),
                    input_tokens,
                    output_tokens,
                })
            }
            _ => Err(ApiError::bad_request(
                "invalid_request",
                "give either `amount`, or `model` with `input_tokens` and `output_tokens`",
            )),
        }
    }
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
        (status = 404, description = "account_not_found", body = ErrorBody),
        (status = 409, description = "Idempotency-Key reused with another request", body = ErrorBody),
        (status = 422, description = "unknown_model, or nothing_to_charge (priced at zero)", body = ErrorBody),
    )
)]
#[post("/v1/usage")]
pub async fn usage(
    state: web::Data<AppState>,
    Platform(caller): Platform,
    req: HttpRequest,
    body: web::Json<UsageBody>,
) -> Result<HttpResponse, ApiError> {
    let key = required_idempotency_key(&req)?;
    let body = body.into_inner();
    let charge = body.charge()?;
    let account = caller.account(body.account_id)?;
    let posted = state
        .billing
        .record_usage(
            &account,
            &UsageRequest {
                charge,
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

/// The account a path names, if it exists and the key acts on it; else
/// `404 account_not_found`.
async fn existing_account(
    state: &AppState,
    caller: &Caller,
    id: String,
) -> Result<Account, ApiError> {
    state
        .billing
        .account(&caller.account(id)?)
        .await?
        .ok_or_else(ApiError::account_not_found)
}

async fn account_response(
    state: &AppState,
    account: &Account,
) -> Result<AccountResponse, ApiError> {
    let wallet = state
        .billing
        .wallet(&account.id)
        .await?
        .ok_or_else(ApiError::account_not_found)?;
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
    Admin(admin): Admin,
    path: web::Path<String>,
) -> Result<web::Json<AccountResponse>, ApiError> {
    let account = existing_account(&state, &admin, path.into_inner()).await?;
    Ok(web::Json(account_response(&state, &account).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyBody {
    /// `customer` (this account's own wallet) or `platform` (usage on this account only).
    pub scope: String,
    /// RFC 3339; after it the key answers 401. In the future.
    pub expires_at: Option<String>,
    /// Most requests a minute this key may make (429 beyond); no limit of its own when absent.
    #[serde(default, deserialize_with = "whole_u32")]
    #[schema(value_type = Option<u32>)]
    pub requests_per_minute_max: Option<u32>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateServiceKeyBody {
    /// `platform`: a service key, which debits on every account.
    pub scope: String,
    /// RFC 3339; after it the key answers 401. In the future.
    pub expires_at: Option<String>,
    /// Most requests a minute this key may make (429 beyond); no limit of its own when absent.
    #[serde(default, deserialize_with = "whole_u32")]
    #[schema(value_type = Option<u32>)]
    pub requests_per_minute_max: Option<u32>,
}

/// Largest per-key request limit, a minute.
const KEY_REQUESTS_PER_MINUTE_MAX: u32 = 1_000_000;

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyResponse {
    pub id: String,
    /// The key itself. Shown once: only its hash is stored.
    pub key: String,
    pub prefix: String,
    pub scope: String,
    /// The account the key acts on; `null` for a service key (every account).
    pub account_id: Option<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub requests_per_minute_max: Option<u32>,
}

/// A key as listed: never the secret or its hash.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyInfo {
    pub id: String,
    pub prefix: String,
    /// `customer`, `platform` or `admin`.
    pub scope: String,
    /// The account the key acts on; `null` for service and admin keys (every account).
    pub account_id: Option<String>,
    pub created_at: String,
    /// The start of the minute it was last used in (recorded at most once a minute).
    pub last_used_at: Option<String>,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub requests_per_minute_max: Option<u32>,
}

impl From<&ApiKeyRecord> for KeyInfo {
    fn from(k: &ApiKeyRecord) -> KeyInfo {
        let time = |t: Option<Timestamp>| t.map(Timestamp::to_rfc3339);
        KeyInfo {
            id: k.id.to_string(),
            prefix: k.prefix.clone(),
            scope: k.scope.as_str().to_owned(),
            account_id: k.account_id.as_ref().map(ToString::to_string),
            created_at: k.created_at.to_rfc3339(),
            last_used_at: time(k.last_used_at),
            expires_at: time(k.expires_at),
            revoked_at: time(k.revoked_at),
            requests_per_minute_max: k.requests_per_minute_max,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeysResponse {
    /// Newest first.
    pub api_keys: Vec<KeyInfo>,
    /// More keys exist: pass the last id as `starting_after`.
    pub has_more: bool,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct KeysQuery {
    /// 1 to 100; default 20.
    pub limit: Option<u32>,
    /// A key id: list the ones older than it.
    pub starting_after: Option<String>,
}

/// Validates the issue options and issues a key (the record is not stored yet).
fn issue(
    state: &AppState,
    scope: KeyScope,
    account: Option<AccountId>,
    expires_at: Option<&str>,
    requests_per_minute_max: Option<u32>,
) -> Result<IssuedKey, ApiError> {
    let now = state.billing.now();
    let expires_at = expires_at
        .map(|text| {
            let at = Timestamp::parse_rfc3339(text).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_request",
                    format!("expires_at must be an RFC 3339 time, not {text:?}"),
                )
            })?;
            if at <= now {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "expires_at_in_past",
                    format!("expires_at {text} is not in the future"),
                ));
            }
            Ok(at)
        })
        .transpose()?;
    if requests_per_minute_max.is_some_and(|n| !(1..=KEY_REQUESTS_PER_MINUTE_MAX).contains(&n)) {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("requests_per_minute_max must be 1 to {KEY_REQUESTS_PER_MINUTE_MAX}"),
        ));
    }
    let mut issued = issue_key(scope, account, state.ids.as_ref(), now);
    issued.record.expires_at = expires_at;
    issued.record.requests_per_minute_max = requests_per_minute_max;
    Ok(issued)
}

async fn store_issued(state: &AppState, issued: IssuedKey) -> Result<HttpResponse, ApiError> {
    state.billing.store().insert_key(&issued.record).await?;
    let record = &issued.record;
    tracing::info!(
        key_id = %record.id,
        prefix = %record.prefix,
        scope = record.scope.as_str(),
        account = ?record.account_id,
        "api key issued"
    );
    Ok(HttpResponse::Created().json(KeyResponse {
        id: record.id.to_string(),
        prefix: record.prefix.clone(),
        scope: record.scope.as_str().to_owned(),
        account_id: record.account_id.as_ref().map(ToString::to_string),
        created_at: record.created_at.to_rfc3339(),
        expires_at: record.expires_at.map(Timestamp::to_rfc3339),
        requests_per_minute_max: record.requests_per_minute_max,
        key: issued.secret,
    }))
}

/// Issues an API key for the account: `customer` (its own wallet) or `platform` (usage on
/// this account only). The answer is the only time the key is shown.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    request_body = CreateKeyBody,
    responses(
        (status = 201, body = KeyResponse),
        (status = 404, description = "account_not_found", body = ErrorBody),
        (status = 422, description = "expires_at_in_past", body = ErrorBody),
    )
)]
#[post("/v1/admin/accounts/{id}/api-keys")]
pub async fn create_key(
    state: web::Data<AppState>,
    Admin(admin): Admin,
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
    let account = existing_account(&state, &admin, path.into_inner()).await?;
    let issued = issue(
        &state,
        scope,
        Some(account.id),
        body.expires_at.as_deref(),
        body.requests_per_minute_max,
    )?;
    store_issued(&state, issued).await
}

/// Issues a service key: a `platform` key of no account, for the platform that sells the
/// API, which may debit every account. The answer is the only time the key is shown.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    request_body = CreateServiceKeyBody,
    responses(
        (status = 201, body = KeyResponse),
        (status = 422, description = "expires_at_in_past", body = ErrorBody),
    )
)]
#[post("/v1/admin/api-keys")]
pub async fn create_service_key(
    state: web::Data<AppState>,
    _admin: Admin,
    body: web::Json<CreateServiceKeyBody>,
) -> Result<HttpResponse, ApiError> {
    if body.scope != "platform" {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!(
                "scope must be `platform` (customer keys are issued under an account), not {:?}",
                body.scope
            ),
        ));
    }
    let issued = issue(
        &state,
        KeyScope::Platform,
        None,
        body.expires_at.as_deref(),
        body.requests_per_minute_max,
    )?;
    store_issued(&state, issued).await
}

async fn list(
    state: &AppState,
    account_id: Option<AccountId>,
    query: KeysQuery,
) -> Result<web::Json<KeysResponse>, ApiError> {
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_request",
            "limit must be between 1 and 100",
        ));
    }
    let page = state
        .billing
        .store()
        .list_keys(&KeyQuery {
            account_id,
            after: query.starting_after.map(ApiKeyId::new),
            limit,
        })
        .await?
        .ok_or_else(|| ApiError::not_found("API key"))?;
    Ok(web::Json(KeysResponse {
        api_keys: page.keys.iter().map(KeyInfo::from).collect(),
        has_more: page.has_more,
    }))
}

/// The account's keys, newest first (never the secrets).
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(KeysQuery),
    responses(
        (status = 200, body = KeysResponse),
        (status = 404, description = "account_not_found, or `starting_after` names no key of the account", body = ErrorBody),
    )
)]
#[get("/v1/admin/accounts/{id}/api-keys")]
pub async fn list_account_keys(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    path: web::Path<String>,
    query: web::Query<KeysQuery>,
) -> Result<web::Json<KeysResponse>, ApiError> {
    let account = existing_account(&state, &admin, path.into_inner()).await?;
    list(&state, Some(account.id), query.into_inner()).await
}

/// Every key (admin, service, and every account's), newest first (never the secrets).
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(KeysQuery),
    responses(
        (status = 200, body = KeysResponse),
        (status = 404, description = "`starting_after` names no key", body = ErrorBody),
    )
)]
#[get("/v1/admin/api-keys")]
pub async fn list_keys(
    state: web::Data<AppState>,
    _admin: Admin,
    query: web::Query<KeysQuery>,
) -> Result<web::Json<KeysResponse>, ApiError> {
    list(&state, None, query.into_inner()).await
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
    state.auth.keys.forget(&id);
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
    params(("Idempotency-Key" = String, Header, description = "Required: a retried call sends the same key and is not applied twice")),
    responses(
        (status = 201, body = PostedTransaction),
        (status = 200, description = "Replay of an earlier request with this key", body = PostedTransaction),
        (status = 404, description = "account_not_found", body = ErrorBody),
        (status = 409, description = "Idempotency-Key reused with another request", body = ErrorBody),
    )
)]
#[post("/v1/admin/accounts/{id}/grants")]
pub async fn grant(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<GrantBody>,
) -> Result<HttpResponse, ApiError> {
    let account = admin.account(path.into_inner())?;
    let key = required_idempotency_key(&req)?;
    let posted = state
        .billing
        .grant(
            &account,
            body.amount.0,
            body.description.as_deref().unwrap_or_default(),
            Some(&key),
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
    params(("Idempotency-Key" = String, Header, description = "Required: a retried call sends the same key and is not applied twice")),
    responses(
        (status = 201, body = PostedTransaction),
        (status = 200, description = "Replay of an earlier request with this key", body = PostedTransaction),
        (status = 404, description = "account_not_found", body = ErrorBody),
        (status = 409, description = "Idempotency-Key reused with another request", body = ErrorBody),
        (status = 422, description = "refund_exceeds_refundable or refund_not_allowed", body = ErrorBody),
    )
)]
#[post("/v1/admin/accounts/{id}/refunds")]
pub async fn refund(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<RefundBody>,
) -> Result<HttpResponse, ApiError> {
    let account = admin.account(path.into_inner())?;
    let key = required_idempotency_key(&req)?;
    let body = body.into_inner();
    let posted = state
        .billing
        .refund(
            &account,
            body.transaction_ids.into_iter().map(EntryId::new).collect(),
            body.amount.0,
            body.description.as_deref().unwrap_or_default(),
            Some(&key),
        )
        .await?;
    posted_response(&posted, &account, &state)
}

/// A new pack.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PackBody {
    /// `pack_…`; generated when absent.
    pub id: Option<String>,
    pub name: String,
    /// In the top-up currency, at its decimals.
    pub price: Amount,
    /// The top-up currency.
    pub currency: String,
    /// Credits it buys, in the wallet's unit.
    pub credits: Amount,
    #[serde(default)]
    pub popular: bool,
    /// On sale; `true` when absent.
    pub active: Option<bool>,
}

/// A pack's new fields (its id is the path's).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PackUpdateBody {
    pub name: String,
    /// In the top-up currency, at its decimals.
    pub price: Amount,
    /// The top-up currency.
    pub currency: String,
    /// Credits it buys, in the wallet's unit.
    pub credits: Amount,
    #[serde(default)]
    pub popular: bool,
    /// On sale; `true` when absent.
    pub active: Option<bool>,
}

impl From<PackUpdateBody> for PackInput {
    fn from(body: PackUpdateBody) -> PackInput {
        PackInput {
            name: body.name,
            price: body.price.0,
            currency: body.currency,
            credits: body.credits.0,
            popular: body.popular,
            active: body.active.unwrap_or(true),
        }
    }
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
    request_body = PackUpdateBody,
    responses((status = 200, body = AdminPackResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody))
)]
#[put("/v1/admin/packs/{id}")]
pub async fn update_pack(
    state: web::Data<AppState>,
    _admin: Admin,
    path: web::Path<String>,
    body: web::Json<PackUpdateBody>,
) -> Result<web::Json<AdminPackResponse>, ApiError> {
    let pack = state
        .billing
        .update_pack(&path.into_inner(), &body.into_inner().into())
        .await?;
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
