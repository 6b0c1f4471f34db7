//! Dashboard sessions: a random token in an HTTP-only cookie, stored only as its SHA-256,
//! and a CSRF token derived from it.
//!
//! A session is a row in the store (`SessionRecord`), so it survives a restart, ends for
//! good when its customer signs out (a copied cookie is refused afterwards, not only the
//! browser's), expires after [`DashboardSettings::session_ttl`], and ends with the API key
//! it was signed in with. The API key itself is checked once at sign-in and never reaches
//! the browser again.

use actix_web::HttpRequest;
use actix_web::cookie::{Cookie, SameSite, time::Duration as CookieDuration};
use billing_core::ids::AccountId;
use billing_core::ports::SessionRecord;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::auth::hash_key;
use crate::error::ApiError;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "billing_session";
/// The sign-in form's CSRF cookie (double submit: the form must carry the same value).
pub const SIGNIN_COOKIE: &str = "billing_signin";
/// Random bytes in a session token and in a sign-in form token.
const TOKEN_BYTES: usize = 32;
/// Longest cookie or form token considered, in bytes.
const TOKEN_LENGTH_MAX: usize = 100;

/// How the dashboard's sessions behave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DashboardSettings {
    /// A session ends this long after sign-in.
    pub session_ttl: std::time::Duration,
    /// Mark cookies `Secure` (the service is reached over HTTPS).
    pub secure_cookies: bool,
    /// Where "contact sales" sends customers.
    pub sales_email: String,
}

impl Default for DashboardSettings {
    fn default() -> DashboardSettings {
        DashboardSettings {
            session_ttl: std::time::Duration::from_secs(12 * 3600),
            secure_cookies: false,
            sales_email: "sales@example.com".to_owned(),
        }
    }
}

/// A signed-in customer.
#[derive(Debug, Clone)]
pub struct Session {
    pub account: AccountId,
    /// SHA-256 of the session token (the store's key for it).
    pub hash: String,
    /// The token every form of this session carries.
    pub csrf: String,
}

/// A fresh random token, hex.
pub fn random_token() -> String {
    let mut random = [0u8; TOKEN_BYTES];
    rand::fill(&mut random);
    hex::encode(random)
}

/// The CSRF token of a session: HMAC-SHA256 keyed with the session token, so that only
/// the holder of the cookie's secret (the server reading it) can compute it.
fn csrf_for(token: &str) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(token.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(b"billing dashboard csrf v1");
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `given` is `expected`, in constant time.
pub fn same_token(given: &str, expected: &str) -> bool {
    !expected.is_empty() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

fn cookie_token(req: &HttpRequest, name: &str) -> Option<String> {
    req.cookie(name)
        .map(|c| c.value().to_owned())
        .filter(|v| !v.is_empty() && v.len() <= TOKEN_LENGTH_MAX)
}

/// The request's session, if it carries a live one. `Err` only when the store failed.
pub async fn current(state: &AppState, req: &HttpRequest) -> Result<Option<Session>, ApiError> {
    let Some(token) = cookie_token(req, SESSION_COOKIE) else {
        return Ok(None);
    };
    let hash = hash_key(&token);
    let store = state.billing.store();
    let Some(record) = store.session_by_hash(&hash).await? else {
        return Ok(None);
    };
    let now = state.billing.now();
    if !bool::from(record.hash.as_bytes().ct_eq(hash.as_bytes()))
        || record.ended_at.is_some()
        || now >= record.expires_at
    {
        return Ok(None);
    }
    // The key it was signed in with must still be usable: revoking a key ends its sessions.
    match store.key(&record.key_id).await? {
        Some(key) if key.usable_at(now).is_ok() => {}
        _ => return Ok(None),
    }
    Ok(Some(Session {
        account: record.account_id,
        hash,
        csrf: csrf_for(&token),
    }))
}

/// Starts a session for the account of the customer key `key_id`; answers its cookie.
pub async fn start(
    state: &AppState,
    account: AccountId,
    key_id: billing_core::ids::ApiKeyId,
) -> Result<Cookie<'static>, ApiError> {
    let token = format!("bs_{}", random_token());
    let now = state.billing.now();
    let ttl = state.dashboard.session_ttl;
    let secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2_000_000);
    let record = SessionRecord {
        hash: hash_key(&token),
        account_id: account,
        key_id,
        created_at: now,
        expires_at: now.plus_secs(secs),
        ended_at: None,
    };
    state.billing.store().insert_session(&record).await?;
    Ok(cookie(state, SESSION_COOKIE, token, Some(secs)))
}

/// Ends the session for good (its cookie is refused from now on, wherever it is replayed).
pub async fn end(state: &AppState, session: &Session) -> Result<(), ApiError> {
    state
        .billing
        .store()
        .end_session(&session.hash, state.billing.now())
        .await?;
    Ok(())
}

/// A cookie of the dashboard: HTTP-only, `SameSite=Lax`, `Secure` over HTTPS, for the whole
/// site (the checkout return page reads it to send the customer back to the dashboard).
/// `max_age` `None` removes it.
pub fn cookie(
    state: &AppState,
    name: &'static str,
    value: String,
    max_age: Option<i64>,
) -> Cookie<'static> {
    let mut cookie = Cookie::build(name, value)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(state.dashboard.secure_cookies)
        .finish();
    match max_age {
        Some(secs) => cookie.set_max_age(CookieDuration::seconds(secs)),
        None => cookie.make_removal(),
    }
    cookie
}

/// The sign-in form's token: the one already in the browser's cookie, or a new one (to be
/// set as a cookie beside the form).
pub fn signin_token(req: &HttpRequest) -> (String, bool) {
    match cookie_token(req, SIGNIN_COOKIE) {
        Some(token) => (token, false),
        None => (random_token(), true),
    }
}

/// Whether a posted sign-in form carries the token of the browser's sign-in cookie.
pub fn signin_token_matches(req: &HttpRequest, posted: &str) -> bool {
    cookie_token(req, SIGNIN_COOKIE).is_some_and(|expected| same_token(posted, &expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_tokens_differ_per_session_and_compare_exactly() {
        let a = csrf_for("bs_a");
        let b = csrf_for("bs_b");
        assert_ne!(a, b);
        assert_eq!(a, csrf_for("bs_a"));
        assert!(same_token(&a, &a));
        assert!(!same_token(&b, &a));
        assert!(!same_token("", &a));
        assert!(!same_token("", ""), "an empty expected token never matches");
    }
}
