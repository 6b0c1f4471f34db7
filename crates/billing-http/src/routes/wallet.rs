//! The customer's wallet: the endpoints of the wallet & top-up seed document
//! (`/v1/wallet/...`) and of the credit-packs seed document (`/api/billing/...`).

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use billing_core::ids::{EntryId, PackId, TopUpId};
use billing_core::ledger::{EntryKind, LedgerEntry};
use billing_core::ports::EntryQuery;
use billing_core::service::{StatementError, StatementQuery, TOPUP_PAGE_SIZE, TopUpRequest};
use billing_core::time::Timestamp;
use billing_core::topup::{Pack, TopUp, TopUpStatus};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::amount::Amount;
use crate::auth::{Caller, Customer};
use crate::error::{ApiError, ErrorBody};
use crate::statement::statement_csv;
use crate::{AppState, idempotency_key};

#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceResponse {
    pub balance: Amount,
    /// The balance less active holds: what debits and new holds may use.
    pub available: Amount,
    /// The wallet's unit: a currency code (`USD`) or `CREDITS`.
    pub currency: String,
}

/// The wallet's balance.
#[utoipa::path(
    tag = "wallet",
    security(("bearer" = [])),
    responses(
        (status = 200, body = BalanceResponse),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
    )
)]
#[get("/v1/wallet/balance")]
pub async fn balance(
    state: web::Data<AppState>,
    Customer(account): Customer,
) -> Result<web::Json<BalanceResponse>, ApiError> {
    let wallet = state
        .billing
        .wallet(&account)
        .await?
        .ok_or_else(|| ApiError::not_found("wallet"))?;
    let available = state.billing.available(&account).await?;
    Ok(web::Json(BalanceResponse {
        balance: state.unit.show(wallet.balance),
        available: state.unit.show(available),
        currency: state.unit.code.clone(),
    }))
}

/// `{"amount": 25.00}` or `{"pack_id": "pack_pro"}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopUpBody {
    /// A custom amount in the top-up currency.
    pub amount: Option<Amount>,
    /// A pack to buy.
    pub pack_id: Option<String>,
    /// The payment gateway (`sandbox`, `stripe`, `myfatoorah`); the configured default
    /// otherwise.
    pub gateway: Option<String>,
    /// Save the payment method for off-session charges (auto top-up), where the gateway can.
    pub save_payment_method: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TopUpResponse {
    /// Where to send the customer to pay.
    pub checkout_url: Option<String>,
    /// The price, in `currency`.
    pub amount: Amount,
    pub currency: String,
    pub id: String,
    /// `pending` until the gateway confirms the payment.
    pub status: String,
    /// Credits the payment buys (in the wallet's unit).
    pub credits: Amount,
    /// Bonus credits credited with them, as a separate `bonus` transaction.
    pub bonus: Amount,
    pub pack_id: Option<String>,
    pub gateway: String,
    /// `checkout` (the customer paid at a checkout) or `auto_topup` (charged off-session).
    pub origin: String,
    /// Why the top-up failed, once it has.
    pub failure_reason: Option<String>,
    pub created_at: String,
}

impl TopUpResponse {
    pub(crate) fn new(topup: &TopUp, state: &AppState) -> TopUpResponse {
        TopUpResponse {
            checkout_url: topup.checkout_url.clone().filter(|u| !u.is_empty()),
            amount: Amount::money(&topup.price),
            currency: topup.price.currency().code().to_owned(),
            id: topup.id.to_string(),
            status: topup.status.to_string(),
            credits: state.unit.show(topup.credits),
            bonus: state.unit.show(topup.bonus),
            pack_id: topup.pack_id.as_ref().map(ToString::to_string),
            gateway: topup.gateway.clone(),
            origin: topup.origin().as_str().to_owned(),
            failure_reason: topup.failure_reason.clone(),
            created_at: topup.created_at.to_rfc3339(),
        }
    }
}

/// Starts a top-up: answers the checkout URL; the wallet is credited when the gateway
/// confirms the payment. Custom amounts from the contact-sales threshold up are refused with
/// `422 contact_sales`.
#[utoipa::path(
    tag = "wallet",
    security(("bearer" = [])),
    request_body = TopUpBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first result for the same request")),
    responses(
        (status = 200, body = TopUpResponse),
        (status = 400, body = ErrorBody),
        (status = 404, description = "Unknown pack", body = ErrorBody),
        (status = 409, description = "Idempotency-Key reused with another request", body = ErrorBody),
        (status = 422, description = "Below the minimum, or contact sales", body = ErrorBody),
    )
)]
#[post("/v1/wallet/top-up")]
pub async fn top_up(
    state: web::Data<AppState>,
    Customer(account): Customer,
    req: HttpRequest,
    body: web::Json<TopUpBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let request = match (body.amount, body.pack_id) {
        (Some(amount), None) => TopUpRequest::Amount(amount.0),
        (None, Some(pack)) => TopUpRequest::Pack(PackId::new(pack)),
        _ => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "give exactly one of `amount` and `pack_id`",
            ));
        }
    };
    let key = idempotency_key(&req)?;
    let topup = state
        .billing
        .create_topup_with(
            &account,
            &request,
            body.gateway.as_deref(),
            key.as_deref(),
            body.save_payment_method.unwrap_or(false),
        )
        .await?;
    Ok(HttpResponse::Ok().json(TopUpResponse::new(&topup, &state)))
}

/// One top-up of the caller's account.
#[utoipa::path(
    tag = "wallet",
    security(("bearer" = [])),
    responses((status = 200, body = TopUpResponse), (status = 404, body = ErrorBody))
)]
#[get("/v1/wallet/top-ups/{id}")]
pub async fn top_up_status(
    state: web::Data<AppState>,
    Customer(account): Customer,
    path: web::Path<String>,
) -> Result<web::Json<TopUpResponse>, ApiError> {
    let topup = state
        .billing
        .store()
        .topup(&TopUpId::new(path.into_inner()))
        .await?
        .filter(|t| t.account_id == account)
        .ok_or_else(|| ApiError::not_found("top-up"))?;
    Ok(web::Json(TopUpResponse::new(&topup, &state)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Transaction {
    pub id: String,
    /// `topup`, `usage`, `refund`, `bonus` or `adjustment`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Signed: credits are positive, debits negative.
    pub amount: Amount,
    pub balance_after: Amount,
    pub created_at: String,
    pub description: String,
    /// Priced usage only: what it was charged for, at which prices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageJson>,
}

/// The model, tokens and prices of a priced usage entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageJson {
    pub model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Price per million input tokens it was charged at, in the wallet's unit.
    pub input_per_million: Amount,
    pub output_per_million: Amount,
}

impl Transaction {
    pub(crate) fn new(entry: &LedgerEntry, state: &AppState) -> Transaction {
        Transaction {
            id: entry.id.to_string(),
            kind: entry.kind.to_string(),
            amount: state.unit.show(entry.amount),
            balance_after: state.unit.show(entry.balance_after),
            created_at: entry.created_at.to_rfc3339(),
            description: entry.description.clone(),
            usage: entry.usage.as_ref().map(|u| UsageJson {
                model: u.model.clone(),
                input_tokens: u.input_tokens,
                output_tokens: u.output_tokens,
                input_per_million: Amount(u.input_per_million),
                output_per_million: Amount(u.output_per_million),
            }),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TransactionsResponse {
    /// Newest first.
    pub transactions: Vec<Transaction>,
    /// More transactions exist: pass the last id as `starting_after`.
    pub has_more: bool,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TransactionsQuery {
    /// 1 to 100; default 20. Not with `Accept: text/csv` (a statement is the whole period).
    pub limit: Option<u32>,
    /// A transaction id: list the ones older than it. Not with `Accept: text/csv`.
    pub starting_after: Option<String>,
    /// Only this type: `topup`, `usage`, `refund`, `bonus`, `adjustment`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Only transactions created at or after this day (`2026-11-01`, from its first instant
    /// in UTC) or instant (RFC 3339). A CSV statement cuts its period in ledger order
    /// instead: after the last transaction created before `from` (README, "Statements").
    pub from: Option<String>,
    /// Only transactions created before this day (`2026-12-01`, its first instant in UTC)
    /// or instant (RFC 3339); a CSV statement ends with the last one created before it.
    pub to: Option<String>,
}

/// A statement period's bound: a day or an RFC 3339 instant.
pub(crate) fn period_bound(name: &str, text: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    text.map(|t| {
        Timestamp::parse_day_or_instant(t).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_request",
                format!("{name} must be a day (2026-11-01) or an RFC 3339 instant"),
            )
        })
    })
    .transpose()
}

/// Whether the `Accept` header prefers `text/csv` to JSON (by its q-values; JSON on a tie
/// with `*/*` only when CSV is not named).
fn prefers_csv(req: &HttpRequest) -> bool {
    let Some(accept) = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let (mut csv, mut json) = (0.0f32, 0.0f32);
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let q = parts
            .find_map(|p| p.trim().strip_prefix("q="))
            .and_then(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "text/csv" | "text/*" => csv = csv.max(q),
            "application/json" | "application/*" | "*/*" => json = json.max(q),
            _ => {}
        }
    }
    csv > 0.0 && csv >= json
}

/// The wallet's transactions, newest first; with `Accept: text/csv`, the statement of the
/// period (every transaction from `from` to `to`, oldest first) as CSV (RFC 4180, exact
/// decimals).
#[utoipa::path(
    tag = "wallet",
    security(("bearer" = [])),
    params(TransactionsQuery),
    responses(
        (status = 200, description = "JSON, or with `Accept: text/csv` the statement: a header row, then one row a transaction, oldest first", content(
            (TransactionsResponse = "application/json"),
            (String = "text/csv"),
        )),
        (status = 400, description = "An invalid parameter, or more than 100,000 transactions in a CSV statement's period", body = ErrorBody),
        (status = 422, description = "`invalid_period`: `from` is not before `to`", body = ErrorBody),
        (status = 404, description = "`starting_after` names no transaction of this wallet", body = ErrorBody),
    )
)]
#[get("/v1/wallet/transactions")]
pub async fn transactions(
    state: web::Data<AppState>,
    Customer(account): Customer,
    query: web::Query<TransactionsQuery>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let kind = query
        .kind
        .map(|k| k.parse::<EntryKind>())
        .transpose()
        .map_err(|e| ApiError::bad_request("invalid_request", e.to_string()))?;
    let from = period_bound("from", query.from.as_deref())?;
    let to = period_bound("to", query.to.as_deref())?;
    if let (Some(from), Some(to)) = (from, to)
        && from >= to
    {
        return Err(StatementError::EmptyPeriod.into());
    }
    if prefers_csv(&req) {
        if query.limit.is_some() || query.starting_after.is_some() {
            return Err(ApiError::bad_request(
                "invalid_request",
                "a CSV statement is the whole period: give from and to, not limit or starting_after",
            ));
        }
        let statement = state
            .billing
            .statement(&account, &StatementQuery { kind, from, to })
            .await?;
        return Ok(HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .insert_header((header::VARY, "Accept"))
            .insert_header((
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"statement-{account}.csv\""),
            ))
            .body(statement_csv(&statement.entries, &state.unit)));
    }
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_request",
            "limit must be between 1 and 100",
        ));
    }
    if let Some(cursor) = &query.starting_after
        && state
            .billing
            .store()
            .entry(&account, &EntryId::new(cursor.clone()))
            .await?
            .is_none()
    {
        return Err(ApiError::not_found("transaction"));
    }
    let page = state
        .billing
        .transactions(
            &account,
            EntryQuery {
                kind,
                before: query.starting_after.map(EntryId::new),
                after: None,
                from,
                to,
                limit,
            },
        )
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::VARY, "Accept"))
        .json(TransactionsResponse {
            transactions: page
                .entries
                .iter()
                .map(|e| Transaction::new(e, &state))
                .collect(),
            has_more: page.has_more,
        }))
}

/// One transaction of the caller's wallet.
#[utoipa::path(
    tag = "wallet",
    security(("bearer" = [])),
    responses((status = 200, body = Transaction), (status = 404, body = ErrorBody))
)]
#[get("/v1/wallet/transactions/{id}")]
pub async fn transaction(
    state: web::Data<AppState>,
    Customer(account): Customer,
    path: web::Path<String>,
) -> Result<web::Json<Transaction>, ApiError> {
    let entry = state
        .billing
        .store()
        .entry(&account, &EntryId::new(path.into_inner()))
        .await?
        .ok_or_else(|| ApiError::not_found("transaction"))?;
    Ok(web::Json(Transaction::new(&entry, &state)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PackResponse {
    pub id: String,
    pub name: String,
    pub price: Amount,
    pub currency: String,
    pub credits: Amount,
    pub popular: bool,
}

impl PackResponse {
    pub(crate) fn new(pack: &Pack, state: &AppState) -> PackResponse {
        PackResponse {
            id: pack.id.to_string(),
            name: pack.name.clone(),
            price: Amount::money(&pack.price),
            currency: pack.price.currency().code().to_owned(),
            credits: state.unit.show(pack.credits),
            popular: pack.popular,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PacksResponse {
    pub packs: Vec<PackResponse>,
}

/// The packs on sale, cheapest first.
#[utoipa::path(
    tag = "billing",
    security(("bearer" = [])),
    responses((status = 200, body = PacksResponse), (status = 401, body = ErrorBody))
)]
#[get("/api/billing/topup-packs")]
pub async fn topup_packs(
    state: web::Data<AppState>,
    _caller: Caller,
) -> Result<web::Json<PacksResponse>, ApiError> {
    let packs = state.billing.packs().await?;
    Ok(web::Json(PacksResponse {
        packs: packs.iter().map(|p| PackResponse::new(p, &state)).collect(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryItem {
    pub id: String,
    /// The pack's name, or `Custom amount`.
    pub pack_name: String,
    /// Credits added on completion, bonus included.
    pub credits: Amount,
    pub amount_paid: Amount,
    pub currency: String,
    /// `pending`, `completed` or `failed`.
    pub status: String,
    /// `checkout` or `auto_topup`.
    pub origin: String,
    pub created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryMeta {
    pub current_page: u32,
    pub per_page: u32,
    pub total: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryResponse {
    pub data: Vec<HistoryItem>,
    pub meta: HistoryMeta,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// From 1.
    pub page: Option<String>,
    /// Only top-ups in this status: `pending`, `completed` or `failed`.
    pub status: Option<String>,
}

/// The account's top-ups, newest first, 20 a page.
#[utoipa::path(
    tag = "billing",
    security(("bearer" = [])),
    params(HistoryQuery),
    responses((status = 200, body = HistoryResponse), (status = 400, body = ErrorBody))
)]
#[get("/api/billing/topup-history")]
pub async fn topup_history(
    state: web::Data<AppState>,
    Customer(account): Customer,
    query: web::Query<HistoryQuery>,
) -> Result<web::Json<HistoryResponse>, ApiError> {
    let query = query.into_inner();
    let status = query
        .status
        .map(|s| {
            s.parse::<TopUpStatus>().map_err(|_| {
                ApiError::bad_request(
                    "invalid_request",
                    "status must be pending, completed or failed",
                )
            })
        })
        .transpose()?;
    let page = match query.page {
        None => 1,
        Some(p) => p
            .parse::<u32>()
            .ok()
            .filter(|p| (1..=billing_core::service::TOPUP_PAGE_MAX).contains(p))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_request",
                    format!(
                        "page must be a whole number from 1 to {}",
                        billing_core::service::TOPUP_PAGE_MAX
                    ),
                )
            })?,
    };
    let history = state.billing.topup_history(&account, status, page).await?;
    let data = history
        .topups
        .iter()
        .map(|t| {
            let total = t.credits.checked_add(t.bonus).unwrap_or(t.credits);
            HistoryItem {
                id: t.id.to_string(),
                pack_name: t
                    .pack_name
                    .clone()
                    .unwrap_or_else(|| "Custom amount".to_owned()),
                credits: state.unit.show(total),
                amount_paid: Amount::money(&t.price),
                currency: t.price.currency().code().to_owned(),
                status: t.status.to_string(),
                origin: t.origin().as_str().to_owned(),
                created_at: t.created_at.to_rfc3339(),
            }
        })
        .collect();
    Ok(web::Json(HistoryResponse {
        data,
        meta: HistoryMeta {
            current_page: page,
            per_page: TOPUP_PAGE_SIZE,
            total: history.total,
        },
    }))
}
