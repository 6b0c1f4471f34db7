//! The billing page (balance, packs, a custom amount with its bonus, the 30-day chart), the
//! top-up form and a top-up's own page (pending, then completed).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use billing_core::ids::{AccountId, PackId, TopUpId};
use billing_core::ledger::LedgerEntry;
use billing_core::money::Money;
use billing_core::ports::EntryQuery;
use billing_core::service::{ENTRY_PAGE_SIZE_MAX, TopUpRequest};
use billing_core::topup::{TopUpRuleError, TopUpStatus};
use serde::Deserialize;

use super::chart;
use super::session::{Session, random_token};
use super::views::{BillingPage, PackCard, PreviewBox, QuoteView, TopUpPageView};
use super::{
    decode, error_page, form, html, minute, money, nav, see_other, signed_in, signed_in_form,
    status_label, typed_amount,
};
use crate::AppState;
use crate::error::ApiError;

/// Pages of entries read for the chart, at most (the balance stays exact beyond them; only
/// older days' spend would be missing, and the page says so).
const CHART_PAGES_MAX: usize = 50;
/// A pending top-up's page asks its gateway at most this often (per process), however many
/// tabs refresh it.
const GATEWAY_CHECK_INTERVAL: Duration = Duration::from_secs(3);
/// Top-ups whose last gateway check this process remembers, at most.
const GATEWAY_CHECKS_MAX: usize = 10_000;

/// Whether the top-up's page may ask the gateway now; if so, records that it did.
fn gateway_check_due(id: &TopUpId) -> bool {
    static LAST: OnceLock<Mutex<HashMap<TopUpId, Instant>>> = OnceLock::new();
    let mut last = LAST
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if last
        .get(id)
        .is_some_and(|at| at.elapsed() < GATEWAY_CHECK_INTERVAL)
    {
        return false;
    }
    if last.len() >= GATEWAY_CHECKS_MAX {
        last.retain(|_, at| at.elapsed() < GATEWAY_CHECK_INTERVAL);
        if last.len() >= GATEWAY_CHECKS_MAX {
            return false;
        }
    }
    last.insert(id.clone(), Instant::now());
    true
}
/// Longest idempotency token a top-up form may carry.
const REQUEST_TOKEN_LENGTH_MAX: usize = 64;

#[derive(Deserialize)]
struct BillingQuery {
    amount: Option<String>,
}

fn credits(state: &AppState, value: billing_core::money::Credits) -> String {
    state.unit.show(value).0.to_string()
}

fn major(state: &AppState, amount: billing_core::Decimal) -> String {
    Money::new(amount, state.billing.policy().currency)
        .map(|m| money(&m))
        .unwrap_or_else(|_| amount.to_string())
}

/// The bonus tiers in words: `+5% from $50, +10% from $100`.
fn tiers(state: &AppState) -> String {
    let policy = state.billing.policy();
    if policy.bonus_tiers.is_empty() {
        return "none".to_owned();
    }
    policy
        .bonus_tiers
        .iter()
        .map(|t| format!("+{}% from {}", t.percent.normalize(), major(state, t.from)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The preview of a typed custom amount, and whether it can be bought.
fn preview(state: &AppState, amount: &str, problem: Option<String>) -> (PreviewBox, bool) {
    let mut view = PreviewBox {
        quote: None,
        problem,
        contact_sales: false,
        sales_email: state.dashboard.sales_email.clone(),
        tiers: format!("Bonus: {}.", tiers(state)),
    };
    if view.problem.is_some() || amount.trim().is_empty() {
        return (view, false);
    }
    let policy = state.billing.policy();
    let value = match typed_amount(amount) {
        Ok(Some(v)) => v,
        Ok(None) => return (view, false),
        Err(message) => {
            view.problem = Some(message);
            return (view, false);
        }
    };
    match policy.quote_amount(value) {
        Ok(q) => {
            let total = q.credits.checked_add(q.bonus).unwrap_or(q.credits);
            view.quote = Some(QuoteView {
                price: money(&q.price),
                credits: credits(state, q.credits),
                percent: policy
                    .tier_for(value)
                    .map(|t| t.percent.normalize().to_string()),
                bonus: credits(state, q.bonus),
                total: credits(state, total),
            });
            (view, true)
        }
        Err(e @ TopUpRuleError::ContactSales { .. }) => {
            view.problem = Some(format!("Top-ups this large go through sales: {e}."));
            view.contact_sales = true;
            (view, false)
        }
        Err(e) => {
            view.problem = Some(format!("{e}."));
            (view, false)
        }
    }
}

/// The account's entries of the chart's window, newest first, plus the newest one before
/// it (the opening balance), within [`CHART_PAGES_MAX`] pages.
/// `true` beside them when the window holds more entries than were read.
async fn chart_entries(
    state: &AppState,
    account: &AccountId,
) -> Result<(Vec<LedgerEntry>, bool), ApiError> {
    let start = chart::window_start(state.billing.now());
    let mut out: Vec<LedgerEntry> = Vec::new();
    let mut before = None;
    for _ in 0..CHART_PAGES_MAX {
        let page = state
            .billing
            .transactions(
                account,
                EntryQuery {
                    before: before.clone(),
                    limit: ENTRY_PAGE_SIZE_MAX,
                    ..EntryQuery::default()
                },
            )
            .await?;
        let done = !page.has_more || page.entries.last().is_none_or(|e| e.created_at < start);
        before = page.entries.last().map(|e| e.id.clone());
        out.extend(page.entries);
        if done {
            return Ok((out, false));
        }
    }
    Ok((out, true))
}

async fn billing_view(
    state: &AppState,
    session: &Session,
    amount: String,
    problem: Option<String>,
) -> Result<BillingPage, ApiError> {
    let wallet = state
        .billing
        .wallet(&session.account)
        .await?
        .ok_or_else(|| ApiError::not_found("wallet"))?;
    let available = state.billing.available(&session.account).await?;
    let packs = state.billing.packs().await?;
    let (preview_box, quote_ok) = preview(state, &amount, problem);
    let problem = preview_box.problem.clone();
    let preview_html = preview_box.render().map_err(|e| ApiError::internal(&e))?;
    let (entries, truncated) = chart_entries(state, &session.account).await?;
    let days = chart::days(&entries, state.billing.now());
    let mut chart_html = chart::svg(&days, &state.unit.code, state.unit.display_scale);
    if truncated && let Some(oldest) = entries.last() {
        chart_html.push_str(&format!(
            "<p class=\"muted small\">Spend is drawn from {} on: this month holds more \
             transactions than the chart reads. The balance line is exact.</p>",
            minute(oldest.created_at)
        ));
    }
    let policy = state.billing.policy();
    Ok(BillingPage {
        title: "Billing",
        nav: nav(session, "billing"),
        refresh_seconds: None,
        csrf: session.csrf.clone(),
        notice: None,
        balance: credits(state, wallet.balance),
        available: credits(state, available),
        unit: state.unit.code.clone(),
        currency: policy.currency.code().to_owned(),
        packs: packs
            .iter()
            .map(|p| PackCard {
                id: p.id.to_string(),
                name: p.name.clone(),
                price: money(&p.price),
                credits: credits(state, p.credits),
                popular: p.popular,
            })
            .collect(),
        request_key: random_token(),
        amount,
        problem,
        quote_ok,
        can_save: state
            .billing
            .gateways()
            .get(state.billing.gateways().default_name())
            .is_some_and(|g| g.saves_payment_methods()),
        preview: preview_html,
        minimum: major(state, policy.minimum),
        contact_sales_from: major(state, policy.contact_sales_from),
        tiers: tiers(state),
        chart: chart_html,
    })
}

async fn render(
    state: &AppState,
    session: &Session,
    amount: String,
    problem: Option<String>,
    status: StatusCode,
) -> HttpResponse {
    match billing_view(state, session, amount, problem).await {
        Ok(view) => html(status, &view),
        Err(e) => error_page(&e, Some(session)),
    }
}

pub(super) async fn page(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let session = match signed_in(&state, &req).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let query: BillingQuery = match decode(req.query_string()) {
        Ok(q) => q,
        Err(e) => return error_page(&e, Some(&session)),
    };
    let amount = query.amount.unwrap_or_default();
    match billing_view(&state, &session, amount, None).await {
        // An amount that cannot be bought is the page's answer: 422, with the page.
        Ok(view) if view.problem.is_some() => html(StatusCode::UNPROCESSABLE_ENTITY, &view),
        Ok(view) => html(StatusCode::OK, &view),
        Err(e) => error_page(&e, Some(&session)),
    }
}

/// The preview box alone, for the page's script.
pub(super) async fn preview_fragment(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let session = match signed_in(&state, &req).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let query: BillingQuery = match decode(req.query_string()) {
        Ok(q) => q,
        Err(e) => return error_page(&e, Some(&session)),
    };
    let (view, _) = preview(&state, &query.amount.unwrap_or_default(), None);
    html(StatusCode::OK, &view)
}

#[derive(Deserialize)]
struct TopUpForm {
    csrf: Option<String>,
    request: Option<String>,
    pack_id: Option<String>,
    amount: Option<String>,
    save_card: Option<String>,
}

pub(super) async fn top_up(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let parsed: Result<TopUpForm, _> = form(&body);
    let csrf = parsed.as_ref().ok().and_then(|f| f.csrf.clone());
    let session = match signed_in_form(&state, &req, csrf.as_deref()).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let form = match parsed {
        Ok(f) => f,
        Err(e) => return error_page(&e, Some(&session)),
    };
    let token = form.request.unwrap_or_default();
    if token.is_empty()
        || token.len() > REQUEST_TOKEN_LENGTH_MAX
        || !token.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return error_page(
            &ApiError::bad_request(
                "invalid_request",
                "This form is incomplete; reload the page.",
            ),
            Some(&session),
        );
    }
    let amount_text = form.amount.unwrap_or_default();
    let (request, what) = match form.pack_id.filter(|p| !p.is_empty()) {
        Some(pack) if pack.len() <= 100 => (
            TopUpRequest::Pack(PackId::new(pack.clone())),
            format!("pack={pack}"),
        ),
        Some(_) => {
            return error_page(&ApiError::not_found("pack"), Some(&session));
        }
        None => match typed_amount(&amount_text) {
            Ok(Some(value)) => (
                TopUpRequest::Amount(value),
                format!("amount={}", value.normalize()),
            ),
            Ok(None) => {
                return render(
                    &state,
                    &session,
                    amount_text,
                    Some("Enter an amount.".to_owned()),
                    StatusCode::UNPROCESSABLE_ENTITY,
                )
                .await;
            }
            Err(message) => {
                return render(
                    &state,
                    &session,
                    amount_text,
                    Some(message),
                    StatusCode::UNPROCESSABLE_ENTITY,
                )
                .await;
            }
        },
    };
    let save = form.save_card.as_deref() == Some("true");
    // One form rendering starts one top-up, however often it is submitted.
    let key = format!(
        "dashboard:{token}:{what}:{}",
        if save { "save" } else { "once" }
    );
    match state
        .billing
        .create_topup_with(&session.account, &request, None, Some(&key), save)
        .await
    {
        Ok(topup) => match topup.checkout_url.filter(|u| !u.is_empty()) {
            Some(url) if topup.status == TopUpStatus::Pending => {
                tracing::info!(account = %session.account, topup = %topup.id, "dashboard top-up started");
                see_other(&url)
            }
            _ => see_other(&format!("/dashboard/top-ups/{}", topup.id)),
        },
        Err(e) => {
            let error = ApiError::from(e);
            if matches!(request, TopUpRequest::Amount(_)) && error.status.is_client_error() {
                render(
                    &state,
                    &session,
                    amount_text,
                    Some(error.message),
                    error.status,
                )
                .await
            } else {
                error_page(&error, Some(&session))
            }
        }
    }
}

/// A top-up of the signed-in account: pending (the page refreshes itself and asks the
/// gateway), completed (with the new balance) or failed. Another account's top-up is 404.
pub(super) async fn topup(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    let session = match signed_in(&state, &req).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let id = path.into_inner();
    let found = if id.len() <= 100 {
        state.billing.store().topup(&TopUpId::new(id)).await
    } else {
        Ok(None)
    };
    let mut topup = match found {
        Ok(Some(t)) if t.account_id == session.account => t,
        Ok(_) => return error_page(&ApiError::not_found("top-up"), Some(&session)),
        Err(e) => return error_page(&e.into(), Some(&session)),
    };
    if topup.status == TopUpStatus::Pending
        && topup.payment_ref.is_some()
        && gateway_check_due(&topup.id)
        && let Some(gateway) = state.billing.gateways().get(&topup.gateway).cloned()
    {
        match state.billing.settle(gateway.as_ref(), topup.clone()).await {
            Ok(outcome) => topup = outcome.into_topup().unwrap_or(topup),
            Err(e) => tracing::warn!(topup = %topup.id, error = %e, "could not ask the gateway"),
        }
    }
    let balance = match state.billing.wallet(&session.account).await {
        Ok(Some(w)) => credits(&state, w.balance),
        Ok(None) => return error_page(&ApiError::not_found("wallet"), Some(&session)),
        Err(e) => return error_page(&e.into(), Some(&session)),
    };
    let status = topup.status.as_str().to_owned();
    html(
        StatusCode::OK,
        &TopUpPageView {
            title: "Top-up",
            nav: nav(&session, "top-ups"),
            // Every 2 s for the first minute, then every 10 s.
            refresh_seconds: (topup.status == TopUpStatus::Pending).then_some(
                if state.billing.now().as_secs() - topup.created_at.as_secs() < 60 {
                    2
                } else {
                    10
                },
            ),
            id: topup.id.to_string(),
            status_label: status_label(&status),
            status,
            checkout_url: topup.checkout_url.clone().filter(|u| !u.is_empty()),
            price: money(&topup.price),
            credits: credits(&state, topup.credits),
            bonus: credits(&state, topup.bonus),
            has_bonus: topup.bonus != billing_core::money::Credits::ZERO,
            balance,
            failure_reason: topup.failure_reason.clone(),
            created_at: minute(topup.created_at),
        },
    )
}
