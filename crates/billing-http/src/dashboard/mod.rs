//! The customer's billing dashboard: server-rendered pages under `/dashboard` (askama
//! templates, one hand-written stylesheet, a few lines of optional JavaScript).
//!
//! Sign-in takes a customer API key once and starts a [`session`]; every form carries the
//! session's CSRF token; every page answers HTML, errors included. The pages decide nothing
//! about money: they call the same `Billing` methods as the JSON API.

mod billing;
mod chart;
mod history;
pub mod session;
mod settings;
mod views;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use billing_core::Decimal;
use billing_core::money::parse_decimal;
use billing_core::time::Timestamp;
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::amount::REQUEST_AMOUNT_LIMIT;
use crate::auth::{self, Caller};
use crate::error::ApiError;
pub use session::DashboardSettings;
use session::Session;
use views::{ErrorPage, Nav, SignInPage};

const STYLESHEET: &str = include_str!("../../templates/dashboard/dashboard.css");
const SCRIPT: &str = include_str!("../../templates/dashboard/dashboard.js");
/// Largest form body, in bytes.
const FORM_SIZE_MAX: usize = 4 * 1024;

/// Registers the dashboard's routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/dashboard", web::get().to(home))
        .route("/dashboard/", web::get().to(home))
        .route("/dashboard/static/dashboard.css", web::get().to(stylesheet))
        .route("/dashboard/static/dashboard.js", web::get().to(script))
        .route("/dashboard/sign-in", web::get().to(sign_in_form))
        .route("/dashboard/sign-in", web::post().to(sign_in))
        .route("/dashboard/sign-out", web::post().to(sign_out))
        .route("/dashboard/billing", web::get().to(billing::page))
        .route(
            "/dashboard/billing/preview",
            web::get().to(billing::preview_fragment),
        )
        .route("/dashboard/top-up", web::post().to(billing::top_up))
        .route("/dashboard/top-ups", web::get().to(history::topups))
        .route("/dashboard/top-ups/{id}", web::get().to(billing::topup))
        .route(
            "/dashboard/transactions",
            web::get().to(history::transactions),
        )
        .route("/dashboard/transactions.csv", web::get().to(history::csv))
        .route("/dashboard/settings", web::get().to(settings::page))
        .route(
            "/dashboard/settings/payment-method/delete",
            web::post().to(settings::delete_method),
        )
        .route("/dashboard/settings/{form}", web::post().to(settings::save))
        .route("/dashboard/{tail:.*}", web::route().to(not_found));
}

/// Headers every dashboard page carries: never framed, scripts only from this origin (and,
/// like every answer that sets none, `Cache-Control: no-store`, from `serve`).
fn secure(mut response: HttpResponse) -> HttpResponse {
    let headers = response.headers_mut();
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self' 'unsafe-inline'; script-src 'self'; \
             connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    response
}

/// A rendered page with `status`.
fn html(status: StatusCode, page: &impl Template) -> HttpResponse {
    match page.render() {
        Ok(body) => secure(
            HttpResponse::build(status)
                .content_type("text/html; charset=utf-8")
                .body(body),
        ),
        Err(e) => {
            tracing::error!(error = %e, "dashboard template failed");
            secure(
                HttpResponse::InternalServerError()
                    .content_type("text/plain; charset=utf-8")
                    .body("The page could not be drawn."),
            )
        }
    }
}

/// `303 See Other` to `location` (after a form: the back button never re-posts).
fn see_other(location: &str) -> HttpResponse {
    secure(
        HttpResponse::SeeOther()
            .insert_header((header::LOCATION, location.to_owned()))
            .finish(),
    )
}

fn nav(session: &Session, current: &'static str) -> Option<Nav> {
    Some(Nav {
        current,
        account: session.account.to_string(),
        csrf: session.csrf.clone(),
    })
}

/// An error as a page: its title from the status, its message from the error.
fn error_page(error: &ApiError, session: Option<&Session>) -> HttpResponse {
    let title = match error.status {
        StatusCode::NOT_FOUND => "Page not found".to_owned(),
        StatusCode::FORBIDDEN => "Not allowed".to_owned(),
        StatusCode::SERVICE_UNAVAILABLE => "Please try again".to_owned(),
        StatusCode::TOO_MANY_REQUESTS => "Too many attempts".to_owned(),
        s if s.is_server_error() => "Something went wrong".to_owned(),
        _ => "That did not work".to_owned(),
    };
    let message =
        if error.status.is_server_error() && error.status != StatusCode::SERVICE_UNAVAILABLE {
            "The service could not answer; nothing was changed. Please try again.".to_owned()
        } else {
            error.message.clone()
        };
    let mut response = html(
        error.status,
        &ErrorPage {
            title,
            nav: session.and_then(|s| nav(s, "")),
            refresh_seconds: None,
            message,
        },
    );
    if let Some(secs) = error.retry_after
        && let Ok(value) = HeaderValue::from_str(&secs.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// The request's session, or the response to send instead: the sign-in page for a visitor
/// without one, an error page when the store failed.
async fn signed_in(state: &AppState, req: &HttpRequest) -> Result<Session, HttpResponse> {
    match session::current(state, req).await {
        Ok(Some(session)) => Ok(session),
        Ok(None) => Err(see_other("/dashboard/sign-in")),
        Err(e) => Err(error_page(&e, None)),
    }
}

/// Whether the browser says the request comes from another site (`Sec-Fetch-Site`): a
/// second line of defence behind the CSRF token.
fn cross_site(req: &HttpRequest) -> bool {
    req.headers()
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site")
}

/// [`signed_in`], for a posted form: also checks its CSRF token.
async fn signed_in_form(
    state: &AppState,
    req: &HttpRequest,
    csrf: Option<&str>,
) -> Result<Session, HttpResponse> {
    let session = signed_in(state, req).await?;
    if cross_site(req) || !csrf.is_some_and(|token| session::same_token(token, &session.csrf)) {
        tracing::warn!(account = %session.account, "dashboard form refused: CSRF token missing or wrong");
        return Err(error_page(
            &ApiError::forbidden(
                "This form was not sent from your dashboard (its security token is missing or \
                 wrong). Reload the page and try again.",
            ),
            Some(&session),
        ));
    }
    Ok(session)
}

/// Parses a query string or a url-encoded form body into `T`.
fn decode<T: DeserializeOwned>(text: &str) -> Result<T, ApiError> {
    web::Query::<T>::from_query(text)
        .map(web::Query::into_inner)
        .map_err(|e| ApiError::bad_request("invalid_request", format!("invalid form: {e}")))
}

/// A posted url-encoded form.
fn form<T: DeserializeOwned>(body: &web::Bytes) -> Result<T, ApiError> {
    if body.len() > FORM_SIZE_MAX {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the form is larger than {FORM_SIZE_MAX} bytes"),
        ));
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("invalid_request", "the form is not UTF-8"))?;
    decode(text)
}

/// An amount typed into a form: empty is `None`; otherwise a plain decimal below
/// [`REQUEST_AMOUNT_LIMIT`], or a message for beside the field.
fn typed_amount(text: &str) -> Result<Option<Decimal>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let value = parse_decimal(text).map_err(|e| format!("{text:?} is not an amount: {e}"))?;
    if value.abs() >= Decimal::from(REQUEST_AMOUNT_LIMIT) {
        return Err(format!("must be less than {REQUEST_AMOUNT_LIMIT}"));
    }
    Ok(Some(value))
}

/// `2026-12-03 08:15` (UTC).
fn minute(at: Timestamp) -> String {
    let text = at.to_rfc3339();
    text.get(..16).unwrap_or(&text).replace('T', " ")
}

/// Money in words a customer reads: `$50.00`, `12.500 KWD`.
fn money(money: &billing_core::money::Money) -> String {
    let amount = crate::amount::Amount::money(money).0;
    match money.currency().code() {
        "USD" => format!("${amount}"),
        "EUR" => format!("€{amount}"),
        "GBP" => format!("£{amount}"),
        code => format!("{amount} {code}"),
    }
}

fn status_label(status: &str) -> &'static str {
    match status {
        "pending" => "Pending",
        "completed" => "Completed",
        "failed" => "Failed",
        _ => "Unknown",
    }
}

async fn home(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    match session::current(&state, &req).await {
        Ok(Some(_)) => see_other("/dashboard/billing"),
        Ok(None) => see_other("/dashboard/sign-in"),
        Err(e) => error_page(&e, None),
    }
}

async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .body(STYLESHEET)
}

async fn script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .body(SCRIPT)
}

async fn not_found(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let session = session::current(&state, &req).await.ok().flatten();
    error_page(
        &ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "There is no page at this address.",
        ),
        session.as_ref(),
    )
}

fn sign_in_page(
    req: &HttpRequest,
    state: &AppState,
    status: StatusCode,
    error: Option<String>,
) -> HttpResponse {
    let (csrf, new) = session::signin_token(req);
    let mut response = html(
        status,
        &SignInPage {
            title: "Sign in",
            nav: None,
            refresh_seconds: None,
            csrf: csrf.clone(),
            error,
        },
    );
    if new {
        let cookie = session::cookie(state, session::SIGNIN_COOKIE, csrf, Some(3600));
        if let Err(e) = response.add_cookie(&cookie) {
            tracing::warn!(error = %e, "could not set the sign-in cookie");
        }
    }
    response
}

async fn sign_in_form(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    match session::current(&state, &req).await {
        Ok(Some(_)) => see_other("/dashboard/billing"),
        Ok(None) => sign_in_page(&req, &state, StatusCode::OK, None),
        Err(e) => error_page(&e, None),
    }
}

#[derive(serde::Deserialize)]
struct SignInForm {
    csrf: Option<String>,
    api_key: Option<String>,
}

async fn sign_in(state: web::Data<AppState>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let form: SignInForm = match form(&body) {
        Ok(f) => f,
        Err(e) => return error_page(&e, None),
    };
    if cross_site(&req)
        || !form
            .csrf
            .as_deref()
            .is_some_and(|token| session::signin_token_matches(&req, token))
    {
        return sign_in_page(
            &req,
            &state,
            StatusCode::FORBIDDEN,
            Some("This sign-in form expired. Please try again.".to_owned()),
        );
    }
    let key = form.api_key.unwrap_or_default();
    let key = key.trim();
    if key.is_empty() {
        return sign_in_page(
            &req,
            &state,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("Enter your API key.".to_owned()),
        );
    }
    let address = state.auth.client_address_of(&req);
    let (account, key_id) = match auth::authorize(&state, address, Ok(key.to_owned())).await {
        Ok(Caller(record)) => match (record.scope, record.account_id) {
            (billing_core::ports::KeyScope::Customer, Some(account)) => (account, record.id),
            _ => {
                return sign_in_page(
                    &req,
                    &state,
                    StatusCode::FORBIDDEN,
                    Some(
                        "This is not a customer key. Sign in with your account's own key \
                         (bk_customer_…)."
                            .to_owned(),
                    ),
                );
            }
        },
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {
            return sign_in_page(
                &req,
                &state,
                StatusCode::UNAUTHORIZED,
                Some(format!("That key does not work: {}.", e.message)),
            );
        }
        Err(e) if e.status == StatusCode::TOO_MANY_REQUESTS => {
            return sign_in_page(&req, &state, e.status, Some(e.message));
        }
        Err(e) => return error_page(&e, None),
    };
    match session::start(&state, account.clone(), key_id).await {
        Ok(cookie) => {
            tracing::info!(account = %account, "dashboard sign-in");
            let mut response = see_other("/dashboard/billing");
            let spent = session::cookie(&state, session::SIGNIN_COOKIE, String::new(), None);
            for c in [cookie, spent] {
                if let Err(e) = response.add_cookie(&c) {
                    tracing::warn!(error = %e, "could not set a dashboard cookie");
                }
            }
            response
        }
        Err(e) => error_page(&e, None),
    }
}

#[derive(serde::Deserialize)]
struct CsrfForm {
    csrf: Option<String>,
}

async fn sign_out(state: web::Data<AppState>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let form: CsrfForm = match form(&body) {
        Ok(f) => f,
        Err(e) => return error_page(&e, None),
    };
    let session = match signed_in_form(&state, &req, form.csrf.as_deref()).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    if let Err(e) = session::end(&state, &session).await {
        return error_page(&e, Some(&session));
    }
    tracing::info!(account = %session.account, "dashboard sign-out");
    let mut response = see_other("/dashboard/sign-in");
    let gone = session::cookie(&state, session::SESSION_COOKIE, String::new(), None);
    if let Err(e) = response.add_cookie(&gone) {
        tracing::warn!(error = %e, "could not remove the session cookie");
    }
    response
}
