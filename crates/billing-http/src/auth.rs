//! API keys: generation, hashing, and the `Caller` extractor.
//!
//! A key is `bk_{scope}_{64 hex digits}`: 32 random bytes behind a readable prefix. Only its
//! SHA-256 is stored; a request's key is hashed, looked up by hash, and the stored hash is
//! compared again in constant time.

use std::future::{Ready, ready};

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
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

async fn lookup(state: &AppState, token: &str) -> Result<Caller, ApiError> {
    let hash = hash_key(token);
    let record = state
        .billing
        .store()
        .key_by_hash(&hash)
        .await?
        .ok_or_else(|| ApiError::unauthorized("invalid API key"))?;
    // The lookup was by hash; compare again in constant time so that no code path depends
    // on how much of a guessed key matched.
    if !bool::from(record.hash.as_bytes().ct_eq(hash.as_bytes())) {
        return Err(ApiError::unauthorized("invalid API key"));
    }
    if record.revoked_at.is_some() {
        return Err(ApiError::unauthorized("this API key was revoked"));
    }
    Ok(Caller(record))
}

/// Middleware: resolves the request's API key before any extractor runs, so that a caller
/// without the right key gets 401/403 whatever its body holds. Handlers read the result
/// through the [`Caller`], [`Customer`], [`Platform`] and [`Admin`] extractors.
pub async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if let Some(token) = bearer(req.request()) {
        let result = match (token, req.app_data::<web::Data<AppState>>()) {
            (Ok(token), Some(state)) => lookup(state, &token).await,
            (Ok(_), None) => Err(ApiError::internal(&"application state missing")),
            (Err(e), _) => Err(e),
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

/// A platform or admin key (usage for any account). Customer keys get 403.
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
