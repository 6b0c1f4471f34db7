//! Transactions (filtered by type, paged by cursor, downloadable as CSV) and the top-up
//! history (filtered by status, paged by number).

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use billing_core::ids::EntryId;
use billing_core::ledger::{EntryKind, LedgerEntry};
use billing_core::ports::EntryQuery;
use billing_core::service::{StatementQuery, TOPUP_PAGE_MAX};
use billing_core::topup::TopUpStatus;
use serde::Deserialize;

use super::views::{EntryRow, TopUpRow, TopUpsPage, TransactionsPage};
use super::{decode, error_page, html, minute, money, nav, secure, signed_in, status_label};
use crate::AppState;
use crate::error::ApiError;
use crate::routes::wallet::period_bound;
use crate::statement::statement_csv;

/// Transactions a page shows.
const PAGE_SIZE: u32 = 25;

const KINDS: [(&str, &str); 5] = [
    ("topup", "Top-up"),
    ("bonus", "Bonus"),
    ("usage", "Usage"),
    ("refund", "Refund"),
    ("adjustment", "Adjustment"),
];
const STATUSES: [(&str, &str); 3] = [
    ("pending", "Pending"),
    ("completed", "Completed"),
    ("failed", "Failed"),
];

fn kind_label(kind: EntryKind) -> &'static str {
    let kind = kind.to_string();
    KINDS
        .iter()
        .find(|(value, _)| *value == kind)
        .map_or("Other", |(_, label)| label)
}

#[derive(Deserialize)]
struct TransactionsQuery {
    #[serde(rename = "type")]
    kind: Option<String>,
    starting_after: Option<String>,
}

/// The statement's form: a type and a period (days), all optional.
#[derive(Deserialize)]
struct StatementForm {
    #[serde(rename = "type")]
    kind: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

fn parse_kind(kind: Option<&str>) -> Result<Option<EntryKind>, ApiError> {
    match kind.filter(|k| !k.is_empty()) {
        None => Ok(None),
        Some(k) => k.parse::<EntryKind>().map(Some).map_err(|_| {
            ApiError::bad_request(
                "invalid_request",
                "type must be topup, bonus, usage, refund or adjustment",
            )
        }),
    }
}

fn signed(state: &AppState, entry: &LedgerEntry) -> String {
    let amount = state.unit.show(entry.amount).0;
    if amount.is_sign_positive() {
        format!("+{amount}")
    } else {
        amount.to_string()
    }
}

pub(super) async fn transactions(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let session = match signed_in(&state, &req).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let result: Result<TransactionsPage, ApiError> = async {
        let query: TransactionsQuery = decode(req.query_string())?;
        let kind = parse_kind(query.kind.as_deref())?;
        let before = query
            .starting_after
            .filter(|s| !s.is_empty() && s.len() <= 100)
            .map(EntryId::new);
        if let Some(cursor) = &before
            && state
                .billing
                .store()
                .entry(&session.account, cursor)
                .await?
                .is_none()
        {
            return Err(ApiError::not_found("transaction"));
        }
        let page = state
            .billing
            .transactions(
                &session.account,
                EntryQuery {
                    kind,
                    before: before.clone(),
                    limit: PAGE_SIZE,
                    ..EntryQuery::default()
                },
            )
            .await?;
        Ok(TransactionsPage {
            title: "Transactions",
            nav: nav(&session, "transactions"),
            refresh_seconds: None,
            kind: kind.map(|k| k.to_string()).unwrap_or_default(),
            kinds: KINDS.to_vec(),
            next: page
                .has_more
                .then(|| page.entries.last().map(|e| e.id.to_string()))
                .flatten(),
            rows: page
                .entries
                .iter()
                .map(|e| EntryRow {
                    date: minute(e.created_at),
                    kind: kind_label(e.kind).to_owned(),
                    description: e.description.clone(),
                    amount: signed(&state, e),
                    credit: e.amount.value().is_sign_positive(),
                    balance_after: state.unit.show(e.balance_after).0.to_string(),
                })
                .collect(),
            not_first: before.is_some(),
        })
    }
    .await;
    match result {
        Ok(page) => html(StatusCode::OK, &page),
        Err(e) => error_page(&e, Some(&session)),
    }
}

/// Every transaction (of one type, when asked), oldest first, as `text/csv`: the account's
/// statement (see [`crate::statement`]).
pub(super) async fn csv(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let session = match signed_in(&state, &req).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let result: Result<String, ApiError> = async {
        let query: StatementForm = decode(req.query_string())?;
        let kind = parse_kind(query.kind.as_deref())?;
        let bound = |name, text: &Option<String>| {
            period_bound(name, text.as_deref().filter(|t| !t.is_empty()))
        };
        let statement = state
            .billing
            .statement(
                &session.account,
                &StatementQuery {
                    kind,
                    from: bound("from", &query.from)?,
                    to: bound("to", &query.to)?,
                },
            )
            .await?;
        Ok(statement_csv(&statement.entries, &state.unit))
    }
    .await;
    match result {
        Ok(body) => secure(
            HttpResponse::Ok()
                .content_type("text/csv; charset=utf-8")
                .insert_header((
                    header::CONTENT_DISPOSITION,
                    format!(
                        "attachment; filename=\"transactions-{}.csv\"",
                        session.account
                    ),
                ))
                .body(body),
        ),
        Err(e) => error_page(&e, Some(&session)),
    }
}

#[derive(Deserialize)]
struct TopUpsQuery {
    page: Option<String>,
    status: Option<String>,
}

pub(super) async fn topups(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let session = match signed_in(&state, &req).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let result: Result<TopUpsPage, ApiError> = async {
        let query: TopUpsQuery = decode(req.query_string())?;
        let page = match query.page.as_deref().filter(|p| !p.is_empty()) {
            None => 1,
            Some(p) => p
                .parse::<u32>()
                .ok()
                .filter(|p| (1..=TOPUP_PAGE_MAX).contains(p))
                .ok_or_else(|| {
                    ApiError::bad_request("invalid_request", "page must be a whole number from 1")
                })?,
        };
        let status = match query.status.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(s.parse::<TopUpStatus>().map_err(|_| {
                ApiError::bad_request(
                    "invalid_request",
                    "status must be pending, completed or failed",
                )
            })?),
        };
        let history = state
            .billing
            .topup_history(&session.account, status, page)
            .await?;
        let shown = u64::from(page) * u64::from(billing_core::service::TOPUP_PAGE_SIZE);
        Ok(TopUpsPage {
            title: "Top-up history",
            nav: nav(&session, "top-ups"),
            refresh_seconds: None,
            status: status.map(|s| s.as_str().to_owned()).unwrap_or_default(),
            statuses: STATUSES.to_vec(),
            rows: history
                .topups
                .iter()
                .map(|t| TopUpRow {
                    id: t.id.to_string(),
                    date: minute(t.created_at),
                    what: t
                        .pack_name
                        .clone()
                        .unwrap_or_else(|| "Custom amount".to_owned()),
                    price: money(&t.price),
                    credits: state.unit.show(t.credits).0.to_string(),
                    bonus: state.unit.show(t.bonus).0.to_string(),
                    status: t.status.as_str().to_owned(),
                    status_label: status_label(t.status.as_str()),
                })
                .collect(),
            page,
            has_more: history.total > shown,
        })
    }
    .await;
    match result {
        Ok(page) => html(StatusCode::OK, &page),
        Err(e) => error_page(&e, Some(&session)),
    }
}
