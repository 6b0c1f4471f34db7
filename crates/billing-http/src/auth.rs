//! API keys: generation, hashing, and the `Caller` extractor.
//!
//! A key is `bk_{scope}_{64 hex digits}`: 32 random bytes behind a readable prefix. Only its
//! SHA-256 is stored; a request's key is hashed, looked up by hash, and the stored hash is
//! compared again in constant time.

use std::collections::HashMap;
use std::future::{Ready, ready};
use std::net::IpAddr;
use std::sync::Mutex;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::AUTHORIZATION;
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use billing_core::ids::{AccountId, ApiKeyId};
use billing_core::ports::{ApiKeyRecord, IdGenerator, KeyScope};
use billing_core::time::Timestamp;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::error::ApiError;
use crate::keycache::KeyCache;
use crate::ratelimit::{Limited, RateLimiter};

/// Random bytes in a key.
const KEY_RANDOM_BYTES: usize = 32;
/// Longest `Authorization` value considered, in bytes.
const KEY_LENGTH_MAX: usize = 200;

/// A freshly issued key: the record to store and the secret to show once.
#[derive(Debug, Clone)]
pub struct IssuedKey {
    pub record: ApiKeyRecord,
    pub secret: String,
}

/// SHA-256 of a key, lower-case hex.
pub fn hash_key(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The readable start of a key, safe to show and log.
pub fn key_prefix(secret: &str) -> String {
    let scope_end = secret
        .match_indices('_')
        .nth(1)
        .map_or(secret.len(), |(i, _)| i + 1);
    secret.chars().take(scope_end + 4).collect()
}

/// Generates a new key for `scope`.
pub fn issue_key(
    scope: KeyScope,
    account_id: Option<AccountId>,
    ids: &dyn IdGenerator,
    now: Timestamp,
) -> IssuedKey {
    let mut random = [0u8; KEY_RANDOM_BYTES];
    rand::fill(&mut random);
    let secret = format!("bk_{}_{}", scope.as_str(), hex::encode(random));
    IssuedKey {
        record: key_record(&secret, scope, account_id, ids, now),
        secret,
    }
}

/// The record for a key chosen by the operator (`BILLING_ADMIN_KEY`).
pub fn key_record(
    secret: &str,
    scope: KeyScope,
    account_id: Option<AccountId>,
    ids: &dyn IdGenerator,
    now: Timestamp,
) -> ApiKeyRecord {
    ApiKeyRecord {
        id: ApiKeyId::new(ids.new_id(ApiKeyId::PREFIX)),
        account_id,
        scope,
        prefix: key_prefix(secret),
        hash: hash_key(secret),
        created_at: now,
        revoked_at: None,
        expires_at: None,
        last_used_at: None,
        requests_per_minute_max: None,
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller(pub ApiKeyRecord);

/// What [`authenticate`] found for a request that carried an `Authorization` header.
#[derive(Clone)]
struct Authenticated(Result<Caller, ApiError>);

fn bearer(req: &HttpRequest) -> Option<Result<String, ApiError>> {
    let header = req.headers().get(AUTHORIZATION)?;
    Some((|| {
        let value = header
            .to_str()
            .map_err(|_| ApiError::unauthorized("malformed Authorization header"))?;
        if value.len() > KEY_LENGTH_MAX {
            return Err(ApiError::unauthorized("invalid API key"));
        }
        let (scheme, token) = value
            .split_once(' ')
            .ok_or_else(|| ApiError::unauthorized("expected Authorization: Bearer <api key>"))?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(ApiError::unauthorized(
                "expected Authorization: Bearer <api key>",
            ));
        }
        Ok(token.trim().to_owned())
    })())
}

/// How authentication is throttled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// Failed authentications a client address may make a minute; then `429 rate_limited`.
    pub failures_per_minute: u32,
    /// Take the client address from the last `X-Forwarded-For` entry (the one the proxy in
    /// front of this service added) instead of the TCP peer. Only behind a proxy you run.
    pub trust_forwarded_for: bool,
    /// How long a key's record is served from memory before the store is asked again (the
    /// bound on how late another process's revocation is seen); zero: ask every time.
    pub key_cache_ttl: std::time::Duration,
}

impl Default for AuthSettings {
    fn default() -> AuthSettings {
        AuthSettings {
            failures_per_minute: 20,
            trust_forwarded_for: false,
            key_cache_ttl: std::time::Duration::from_secs(1),
        }
    }
}

/// Client addresses and keys tracked by the limiters, at most.
const LIMITER_ENTRIES_MAX: usize = 100_000;
/// Keys whose last minute of use this process remembers, at most.
const LAST_USED_ENTRIES_MAX: usize = 100_000;

/// What authentication keeps between requests, per process: the failure limiter per client
/// address, the request limiter per key, and the minute each key was last recorded as used.
pub struct AuthGuard {
    settings: AuthSettings,
    failures: RateLimiter<IpAddr>,
    per_key: RateLimiter<ApiKeyId>,
    last_used: Mutex<HashMap<ApiKeyId, Timestamp>>,
    /// Key records by hash, for at most `settings.key_cache_ttl`.
    pub keys: KeyCache,
}

impl AuthGuard {
    pub fn new(settings: AuthSettings) -> AuthGuard {
        AuthGuard {
            failures: RateLimiter::new(LIMITER_ENTRIES_MAX),
            per_key: RateLimiter::new(LIMITER_ENTRIES_MAX),
            last_used: Mutex::new(HashMap::new()),
            keys: KeyCache::new(settings.key_cache_ttl),
            settings,
        }
    }

    /// The address whose failed authentications are counted: the TCP peer, or with
    /// `trust_forwarded_for` the last `X-Forwarded-For` entry (the one the proxy added).
    /// An entry that is not an address counts under one shared "unknown" bucket, never
    /// under the proxy's own address (which every client shares).
    fn client_address(&self, req: &ServiceRequest) -> Option<IpAddr> {
        self.client_address_of(req.request())
    }

    /// [`AuthGuard::client_address`] of a request a handler holds (the dashboard's sign-in).
    pub fn client_address_of(&self, req: &HttpRequest) -> Option<IpAddr> {
        if self.settings.trust_forwarded_for
            && let Some(last) = req.headers().get_all("x-forwarded-for").last()
        {
            let entry = last
                .as_bytes()
                .rsplit(|b| *b == b',')
                .next()
                .unwrap_or_default();
            let ip = std::str::from_utf8(entry)
                .ok()
                .and_then(|e| parse_forwarded_address(e.trim()))
                .unwrap_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED));
            return Some(failure_bucket(ip));
        }
        req.peer_addr().map(|a| failure_bucket(a.ip()))
    }

    /// Whether `key` was used in a minute not yet recorded by this process; if so, marks it
    /// recorded. At most one write per key and minute per process.
    fn first_use_this_minute(&self, key: &ApiKeyRecord, minute: Timestamp) -> bool {
        if key.last_used_at.is_some_and(|at| at >= minute) {
            return false;
        }
        let mut seen = self.last_used.lock().unwrap_or_else(|p| p.into_inner());
        if seen.get(&key.id).is_some_and(|at| *at >= minute) {
            return false;
        }
        if seen.len() >= LAST_USED_ENTRIES_MAX {
            seen.retain(|_, at| *at >= minute);
        }
        seen.insert(key.id.clone(), minute);
        true
    }
}

/// `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]:443`.
fn parse_forwarded_address(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse() {
        return Some(ip);
    }
    if let Ok(socket) = entry.parse::<std::net::SocketAddr>() {
        return Some(socket.ip());
    }
    entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .and_then(|e| e.parse().ok())
}

/// One bucket per IPv4 address (IPv4-mapped IPv6 included) and per IPv6 /64, the block one
/// subscriber usually holds: otherwise one host could spread its guesses over 2^64
/// addresses.
fn failure_bucket(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut segments = v6.segments();
            segments[4..].fill(0);
            IpAddr::V6(segments.into())
        }
        v4 => v4,
    }
}

fn rate_limited(what: &str, limited: Limited) -> ApiError {
    ApiError::rate_limited(what, limited.retry_after_secs())
}

async fn lookup(state: &AppState, token: &str) -> Result<Caller, ApiError> {
    let hash = hash_key(token);
    let record = match state.auth.keys.get(&hash) {
        Some(record) => record,
        None => {
            let generation = state.auth.keys.generation();
            let record = state
                .billing
                .store()
                .key_by_hash(&hash)
                .await?
                .ok_or_else(|| ApiError::unauthorized("invalid API key"))?;
            state.auth.keys.put(&record, generation);
            record
        }
    };
    // The lookup was by hash; compare again in constant time so that no code path depends
    // on how much of a guessed key matched.
    if !bool::from(record.hash.as_bytes().ct_eq(hash.as_bytes())) {
        return Err(ApiError::unauthorized("invalid API key"));
    }
    record
        .usable_at(state.billing.now())
        .map_err(|refusal| ApiError::unauthorized(refusal.to_string()))?;
    Ok(Caller(record))
}

/// Resolves a request's key under the limits of failed authentications per client address:
/// - an address that has used up its allowance is refused before its key is looked at;
/// - an address that failed within the last minute reserves one failure up front, given
///   back if the key is good, so that guesses sent together cannot pass the limit;
/// - any other address is looked up first and charged only for a failure (so that a busy,
///   well-behaved client's concurrent requests never touch its allowance), and a failure
///   past the allowance answers 429, not 401.
///
/// A key with a request limit of its own then uses one of its requests.
pub(crate) async fn authorize(
    state: &AppState,
    address: Option<IpAddr>,
    token: Result<String, ApiError>,
) -> Result<Caller, ApiError> {
    let guard = &state.auth;
    let per_minute = guard.settings.failures_per_minute;
    let too_many = |l| {
        rate_limited(
            "too many failed authentications from this address; retry later",
            l,
        )
    };
    let reserved = match address {
        Some(ip) => guard
            .failures
            .reserve_if_in_use(&ip, per_minute)
            .map_err(too_many)?,
        None => false,
    };
    let result = match token {
        Ok(token) => lookup(state, &token).await,
        Err(e) => Err(e),
    };
    let failed = matches!(&result, Err(e) if e.status == StatusCode::UNAUTHORIZED);
    if let Some(ip) = address {
        if reserved && !failed {
            guard.failures.release(&ip, per_minute);
        }
        if failed && !reserved {
            guard.failures.acquire(&ip, per_minute).map_err(too_many)?;
        }
    }
    match result {
        Err(e) if failed => {
            tracing::info!(client = ?address, reason = %e.message, "authentication failed");
            Err(e)
        }
        Err(e) => Err(e),
        Ok(caller) => {
            if let Some(max) = caller.0.requests_per_minute_max {
                guard
                    .per_key
                    .acquire(&caller.0.id, max)
                    .map_err(|l| rate_limited("this API key's request limit is reached", l))?;
            }
            record_use(state, &caller.0);
            Ok(caller)
        }
    }
}

/// Records the key's use, to the minute, off the request's path: at most one write per key
/// and minute per process, and a failed write is only logged.
fn record_use(state: &AppState, key: &ApiKeyRecord) {
    let minute = state.billing.now().minute_start();
    if !state.auth.first_use_this_minute(key, minute) {
        return;
    }
    let store = state.billing.store().clone();
    let id = key.id.clone();
    actix_web::rt::spawn(async move {
        if let Err(e) = store.touch_key(&id, minute).await {
            tracing::warn!(key_id = %id, error = %e, "could not record the key's last use");
        }
    });
}

/// Middleware: resolves the request's API key before any extractor runs, so that a caller
/// without the right key gets 401/403/429 whatever its body holds. Handlers read the result
/// through the [`Caller`], [`Customer`], [`Platform`] and [`Admin`] extractors.
pub async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    // `/metrics` has its own token, which is no API key: not a failed authentication.
    if req.match_info().as_str() != "/metrics"
        && let Some(token) = bearer(req.request())
    {
        let result = match req.app_data::<web::Data<AppState>>() {
            Some(state) => {
                let address = state.auth.client_address(&req);
                authorize(state, address, token).await
            }
            None => Err(ApiError::internal(&"application state missing")),
        };
        req.extensions_mut().insert(Authenticated(result));
    }
    next.call(req).await
}

fn caller(req: &HttpRequest) -> Result<Caller, ApiError> {
    match req.extensions().get::<Authenticated>() {
        Some(Authenticated(result)) => result.clone(),
        None => Err(ApiError::unauthorized(
            "missing Authorization: Bearer <api key>",
        )),
    }
}

impl Caller {
    /// The account a request names (in its path or body), if this key may act on it; any
    /// other answers `404 account_not_found`, exactly as an account that does not exist.
    pub fn account(&self, id: String) -> Result<AccountId, ApiError> {
        let account = AccountId::new(id);
        if self.0.acts_on(&account) {
            Ok(account)
        } else {
            Err(ApiError::account_not_found())
        }
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Caller, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(caller(req))
    }
}

/// The account of a customer key (an account's own wallet). Other keys get 403.
#[derive(Debug, Clone)]
pub struct Customer(pub AccountId);

impl FromRequest for Customer {
    type Error = ApiError;
    type Future = Ready<Result<Customer, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(caller(req).and_then(|c| match (c.0.scope, c.0.account_id) {
            (KeyScope::Customer, Some(account)) => Ok(Customer(account)),
            _ => Err(ApiError::forbidden(
                "this endpoint needs a customer key (an account's own key)",
            )),
        }))
    }
}

/// A platform key (a service key, or one issued under an account) or an admin key: usage.
/// Customer keys get 403. Which accounts it may act on is [`Caller::account`]'s rule.
#[derive(Debug, Clone)]
pub struct Platform(pub Caller);

impl FromRequest for Platform {
    type Error = ApiError;
    type Future = Ready<Result<Platform, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(caller(req).and_then(|c| match c.0.scope {
            KeyScope::Platform | KeyScope::Admin => Ok(Platform(c)),
            KeyScope::Customer => Err(ApiError::forbidden("this endpoint needs a platform key")),
        }))
    }
}

/// An admin key. Other keys get 403.
#[derive(Debug, Clone)]
pub struct Admin(pub Caller);

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Admin, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(caller(req).and_then(|c| match c.0.scope {
            KeyScope::Admin => Ok(Admin(c)),
            _ => Err(ApiError::forbidden("this endpoint needs an admin key")),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_per_ipv4_address_and_ipv6_block() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(failure_bucket(ip("10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(failure_bucket(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(
            failure_bucket(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            failure_bucket(ip("2001:db8:1:2::1"))
        );
        assert_ne!(
            failure_bucket(ip("2001:db8:1:2::1")),
            failure_bucket(ip("2001:db8:1:3::1"))
        );
        for (entry, want) in [
            ("1.2.3.4", Some("1.2.3.4")),
            ("1.2.3.4:5678", Some("1.2.3.4")),
            ("2001:db8::1", Some("2001:db8::1")),
            ("[2001:db8::1]", Some("2001:db8::1")),
            ("[2001:db8::1]:443", Some("2001:db8::1")),
            ("unknown", None),
            ("", None),
        ] {
            assert_eq!(parse_forwarded_address(entry), want.map(ip), "{entry}");
        }
    }
    use billing_testkit::SequentialIds;

    #[test]
    fn keys_are_random_prefixed_and_stored_as_hashes() {
        let ids = SequentialIds::new();
        let a = issue_key(KeyScope::Customer, None, &ids, Timestamp::default());
        let b = issue_key(KeyScope::Customer, None, &ids, Timestamp::default());
        assert_ne!(a.secret, b.secret);
        assert!(a.secret.starts_with("bk_customer_"));
        assert_eq!(a.secret.len(), "bk_customer_".len() + 64);
        assert_eq!(a.record.prefix, a.secret[.."bk_customer_".len() + 4]);
        assert_eq!(a.record.hash, hash_key(&a.secret));
        assert_eq!(a.record.hash.len(), 64);
        assert!(!a.record.hash.contains(&a.secret[12..]));
        assert_eq!(key_prefix("bk_admin_0123456789"), "bk_admin_0123");
    }
}
