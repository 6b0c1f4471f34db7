//! Settings: the spending limit, the low-balance alert and auto top-up as forms (the API's
//! validation, its messages beside the field), and the saved payment method.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use billing_core::Decimal;
use billing_core::service::AutoTopUpInput;
use serde::Deserialize;

use super::session::Session;
use super::views::{SettingField, SettingForm, SettingsPage};
use super::{
    decode, error_page, form, html, nav, see_other, signed_in, signed_in_form, typed_amount,
};
use crate::AppState;
use crate::error::ApiError;

const LIMIT: &str = "spending-limit";
const ALERT: &str = "low-balance-alert";
const AUTO: &str = "auto-top-up";

fn decimals(state: &AppState) -> u32 {
    state
        .unit
        .display_scale
        .min(billing_core::money::LEDGER_SCALE)
}

fn text_field(
    name: &'static str,
    label: &'static str,
    value: String,
    hint: String,
) -> SettingField {
    SettingField {
        name,
        label,
        value,
        hint,
        error: None,
        choices: Vec::new(),
    }
}

/// The three forms filled with what is saved.
async fn saved_forms(state: &AppState, session: &Session) -> Result<Vec<SettingForm>, ApiError> {
    let account = &session.account;
    let show = |c: billing_core::money::Credits| state.unit.show(c).0.to_string();
    let (limit, spend) = state
        .billing
        .spending_limit(account)
        .await?
        .ok_or_else(ApiError::account_not_found)?;
    let alert = state
        .billing
        .low_balance_alert(account)
        .await?
        .ok_or_else(ApiError::account_not_found)?;
    let auto = state
        .billing
        .auto_topup(account)
        .await?
        .ok_or_else(ApiError::account_not_found)?;
    let unit = &state.unit.code;
    let currency = state.billing.policy().currency.code();
    Ok(vec![
        SettingForm {
            id: LIMIT,
            title: "Monthly spending limit",
            help: "Caps what usage may spend each calendar month (UTC).",
            enabled: limit.enabled,
            fields: vec![
                text_field(
                    "monthly_limit",
                    "Monthly limit",
                    limit.monthly_limit.map(show).unwrap_or_default(),
                    format!("In {unit}. Spent this month: {}.", show(spend.spent)),
                ),
                SettingField {
                    name: "action",
                    label: "When the limit is reached",
                    value: limit.action.as_str().to_owned(),
                    hint: String::new(),
                    error: None,
                    choices: vec![
                        ("block", "Refuse further usage"),
                        ("alert", "Allow it and email me"),
                    ],
                },
            ],
            error: None,
        },
        SettingForm {
            id: ALERT,
            title: "Low-balance alert",
            help: "Emails you once when the balance falls below the threshold.",
            enabled: alert.enabled,
            fields: vec![text_field(
                "threshold",
                "Threshold",
                alert.threshold.map(show).unwrap_or_default(),
                format!("In {unit}."),
            )],
            error: None,
        },
        SettingForm {
            id: AUTO,
            title: "Auto top-up",
            help: "Charges the saved payment method when the balance falls below the threshold.",
            enabled: auto.settings.enabled,
            fields: vec![
                text_field(
                    "threshold",
                    "When the balance falls below",
                    auto.settings.threshold.map(show).unwrap_or_default(),
                    format!("In {unit}."),
                ),
                text_field(
                    "amount",
                    "Top up by",
                    auto.settings
                        .amount
                        .map(|m| crate::amount::Amount::money(&m).0.to_string())
                        .unwrap_or_default(),
                    format!("In {currency}; bonus tiers apply."),
                ),
                text_field(
                    "monthly_cap",
                    "At most this much a month",
                    auto.settings
                        .monthly_cap
                        .map(|m| crate::amount::Amount::money(&m).0.to_string())
                        .unwrap_or_default(),
                    format!("In {currency}; optional."),
                ),
            ],
            error: None,
        },
    ])
}

fn method_words(method: &billing_core::autotopup::SavedMethod) -> String {
    let brand = method.brand.clone().unwrap_or_else(|| "Card".to_owned());
    match &method.last4 {
        Some(last4) => format!("{brand} ending in {last4} (via {})", method.gateway),
        None => format!("{brand} (via {})", method.gateway),
    }
}

async fn render(
    state: &AppState,
    session: &Session,
    notice: Option<String>,
    failed: Option<(&str, &HashMap<String, String>, ApiError)>,
) -> HttpResponse {
    let result: Result<(SettingsPage, StatusCode), ApiError> = async {
        let mut forms = saved_forms(state, session).await?;
        let mut status = StatusCode::OK;
        if let Some((id, typed, error)) = failed {
            status = error.status;
            if let Some(form) = forms.iter_mut().find(|f| f.id == id) {
                form.enabled = typed.get("enabled").is_some_and(|v| v == "true");
                for field in &mut form.fields {
                    field.value = typed.get(field.name).cloned().unwrap_or_default();
                }
                // The message goes beside the field it names, or above the form.
                let named = form
                    .fields
                    .iter_mut()
                    .filter(|f| f.choices.is_empty())
                    .find(|f| error.message.contains(f.name));
                match named {
                    Some(field) => field.error = Some(error.message.clone()),
                    None => form.error = Some(error.message.clone()),
                }
            }
        }
        let method = state
            .billing
            .payment_method(&session.account)
            .await?
            .map(|m| method_words(&m));
        Ok((
            SettingsPage {
                title: "Settings",
                nav: nav(session, "settings"),
                refresh_seconds: None,
                csrf: session.csrf.clone(),
                notice,
                forms,
                method,
            },
            status,
        ))
    }
    .await;
    match result {
        Ok((page, status)) => html(status, &page),
        Err(e) => error_page(&e, Some(session)),
    }
}

#[derive(Deserialize)]
struct SettingsQuery {
    saved: Option<String>,
}

pub(super) async fn page(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let session = match signed_in(&state, &req).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let query: SettingsQuery = match decode(req.query_string()) {
        Ok(q) => q,
        Err(e) => return error_page(&e, Some(&session)),
    };
    let notice = match query.saved.as_deref() {
        Some(LIMIT) => Some("Spending limit saved.".to_owned()),
        Some(ALERT) => Some("Low-balance alert saved.".to_owned()),
        Some(AUTO) => Some("Auto top-up saved.".to_owned()),
        Some("payment-method") => Some("Payment method removed; auto top-up is off.".to_owned()),
        _ => None,
    };
    render(&state, &session, notice, None).await
}

/// A typed amount, or the error to show beside `name`.
fn amount(typed: &HashMap<String, String>, name: &str) -> Result<Option<Decimal>, ApiError> {
    typed_amount(typed.get(name).map_or("", String::as_str))
        .map_err(|m| ApiError::bad_request("invalid_request", format!("{name}: {m}")))
}

async fn apply(
    state: &AppState,
    session: &Session,
    id: &str,
    typed: &HashMap<String, String>,
) -> Result<(), ApiError> {
    let enabled = typed.get("enabled").is_some_and(|v| v == "true");
    let account = &session.account;
    match id {
        LIMIT => {
            let action = typed.get("action").map_or("block", String::as_str);
            state
                .billing
                .set_spending_limit(
                    account,
                    enabled,
                    amount(typed, "monthly_limit")?,
                    action,
                    decimals(state),
                )
                .await?;
        }
        ALERT => {
            state
                .billing
                .set_low_balance_alert(
                    account,
                    enabled,
                    amount(typed, "threshold")?,
                    decimals(state),
                )
                .await?;
        }
        AUTO => {
            let input = AutoTopUpInput {
                enabled,
                threshold: amount(typed, "threshold")?,
                amount: amount(typed, "amount")?,
                monthly_cap: amount(typed, "monthly_cap")?,
            };
            state
                .billing
                .set_auto_topup(account, &input, decimals(state))
                .await?;
        }
        _ => return Err(ApiError::not_found("settings form")),
    }
    tracing::info!(account = %account, form = id, enabled, "dashboard settings saved");
    Ok(())
}

pub(super) async fn save(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let parsed: Result<HashMap<String, String>, _> = form(&body);
    let csrf = parsed.as_ref().ok().and_then(|f| f.get("csrf").cloned());
    let session = match signed_in_form(&state, &req, csrf.as_deref()).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let typed = match parsed {
        Ok(f) => f,
        Err(e) => return error_page(&e, Some(&session)),
    };
    let id = path.into_inner();
    if ![LIMIT, ALERT, AUTO].contains(&id.as_str()) {
        return error_page(&ApiError::not_found("settings form"), Some(&session));
    }
    match apply(&state, &session, &id, &typed).await {
        Ok(()) => see_other(&format!("/dashboard/settings?saved={id}")),
        Err(e) if e.status.is_client_error() => {
            render(&state, &session, None, Some((&id, &typed, e))).await
        }
        Err(e) => error_page(&e, Some(&session)),
    }
}

#[derive(Deserialize)]
struct CsrfOnly {
    csrf: Option<String>,
}

pub(super) async fn delete_method(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let csrf = form::<CsrfOnly>(&body).ok().and_then(|f| f.csrf);
    let session = match signed_in_form(&state, &req, csrf.as_deref()).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    match state.billing.delete_payment_method(&session.account).await {
        Ok(_) => {
            tracing::info!(account = %session.account, "dashboard: payment method removed");
            see_other("/dashboard/settings?saved=payment-method")
        }
        Err(e) => error_page(&e.into(), Some(&session)),
    }
}
