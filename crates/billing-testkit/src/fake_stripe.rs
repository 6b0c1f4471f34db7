//! A local server that speaks Stripe's API for the parts billing-stripe uses (built from
//! `../shared/fixtures/stripe/`), and delivers signed webhooks.
//!
//! [`FakeStripe::start`] binds `127.0.0.1:0` and serves, with in-memory state:
//!
//! - `POST /v1/checkout/sessions` (form-encoded, Stripe's bracket notation),
//! - `GET /v1/checkout/sessions/{id}`,
//! - `POST /v1/payment_intents`,
//! - `GET /v1/payment_intents/{id}`.
//!
//! Every request must carry the secret key (`Authorization: Bearer sk_…` or `Basic` with the
//! key as user name). A POST with an `Idempotency-Key` that was seen before is answered with
//! the first answer (and `Idempotent-Replayed: true`), or with a 400 `idempotency_error` when
//! the parameters differ, as Stripe does. Answers are the fixture objects with ids, amounts,
//! URLs and statuses patched in. Every request is recorded ([`FakeStripe::requests`]) so that
//! tests assert what a client sent.
//!
//! Test controls move a session along as a customer and Stripe would
//! ([`FakeStripe::complete_paid`], [`FakeStripe::complete_unpaid`], [`FakeStripe::fail_async`],
//! [`FakeStripe::expire`]), distort it ([`FakeStripe::set_amount_total`],
//! [`FakeStripe::patch_session`], [`FakeStripe::patch_payment_intent`]) or break the API
//! ([`FakeStripe::fail_next`], [`FakeStripe::decline_next_charge`]). [`FakeStripe::event`] and
//! [`sign_event`] build webhook events signed as Stripe signs them;
//! [`FakeStripe::deliver_event`] and [`deliver`] POST them to a URL.
//!
//! Start it from a tokio runtime (a plain `#[tokio::test]` will do): the actix-web server's
//! workers run on their own threads and the server future is spawned on the caller's runtime.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::dev::ServerHandle;
use actix_web::http::StatusCode;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

const CHECKOUT_SESSION_FIXTURE: &str =
    include_str!("../../../fixtures/stripe/checkout_session.json");
const PAYMENT_INTENT_FIXTURE: &str = include_str!("../../../fixtures/stripe/payment_intent.json");
const EVENT_FIXTURE: &str = include_str!("../../../fixtures/stripe/event.json");

/// Limits of the fake: request bodies, line items per session, webhook answers read back.
const BODY_SIZE_MAX: usize = 1 << 20;
const LINE_ITEMS_MAX: usize = 100;
const DELIVERY_RESPONSE_SIZE_MAX: u64 = 1 << 20;
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new Checkout Session stays open (Stripe's default, 24 hours).
const SESSION_LIFETIME_SECS: i64 = 24 * 3600;

fn fixture(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("a Stripe fixture is not JSON: {e}"))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// One request the fake received, as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// The HTTP method (`GET`, `POST`).
    pub method: String,
    /// The path without the query (`/v1/checkout/sessions`).
    pub path: String,
    /// The raw query string.
    pub query: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    /// The form-encoded body's parameters, decoded, in order; keys keep Stripe's bracket
    /// notation (`line_items[0][price_data][unit_amount]`).
    pub form: Vec<(String, String)>,
}

impl RecordedRequest {
    /// The value of the first header called `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `Idempotency-Key` header, if the client sent one.
    pub fn idempotency_key(&self) -> Option<&str> {
        self.header("idempotency-key")
    }

    /// The first value of a body parameter (`"metadata[topup_id]"`).
    pub fn param(&self, key: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether any body parameter is `prefix` or starts with `prefix[`.
    pub fn has_param(&self, prefix: &str) -> bool {
        self.form
            .iter()
            .any(|(k, _)| k == prefix || k.starts_with(&format!("{prefix}[")))
    }
}

/// A webhook event and the `Stripe-Signature` header Stripe would send with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedEvent {
    /// The event id (`evt_…`).
    pub id: String,
    /// The raw body, exactly as signed.
    pub body: Vec<u8>,
    /// The `Stripe-Signature` header value: `t=…,v1=…[,v1=…]`.
    pub signature: String,
}

impl SignedEvent {
    /// The headers of the delivery, names in lower case.
    pub fn headers(&self) -> Vec<(String, String)> {
        vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("stripe-signature".to_owned(), self.signature.clone()),
        ]
    }

    /// The same event with its body changed after signing (as an attacker raising the amount
    /// would): the signature no longer matches.
    pub fn tampered(mut self) -> SignedEvent {
        match serde_json::from_slice::<Value>(&self.body) {
            Ok(mut event) => {
                event["data"]["object"]["amount_total"] = json!(1);
                event["livemode"] = json!(true);
                self.body = serde_json::to_vec(&event).unwrap_or_default();
            }
            Err(_) => self.body.push(b' '),
        }
        self
    }
}

/// The answer of a webhook delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The HTTP status the receiver answered.
    pub status: u16,
    /// The answer's body, de-chunked and decoded as UTF-8 (lossily).
    pub body: String,
}

/// `t={timestamp},v1={hex}` for each secret: Stripe's signature of `body`.
pub fn stripe_signature(secrets: &[&str], timestamp: i64, body: &[u8]) -> String {
    let mut header = format!("t={timestamp}");
    for secret in secrets {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
            .unwrap_or_else(|_| panic!("HMAC accepts keys of any length"));
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        header.push_str(",v1=");
        header.push_str(&hex::encode(mac.finalize().into_bytes()));
    }
    header
}

static EVENT_SEQUENCE: AtomicU64 = AtomicU64::new(1);

/// An event shaped like `fixtures/stripe/event.json` (new id, `type`, `created` = `timestamp`,
/// `data.object` = `object`), signed at `timestamp` with each of `secrets` (one `v1` each, as
/// during a secret roll).
pub fn sign_event(
    event_type: &str,
    object: Value,
    secrets: &[&str],
    timestamp: i64,
) -> SignedEvent {
    let id = format!(
        "evt_fake{:016}",
        EVENT_SEQUENCE.fetch_add(1, Ordering::Relaxed)
    );
    let mut event = fixture(EVENT_FIXTURE);
    event["id"] = json!(id);
    event["type"] = json!(event_type);
    event["created"] = json!(timestamp);
    event["data"] = json!({ "object": object });
    event["pending_webhooks"] = json!(1);
    let body = serde_json::to_vec(&event).unwrap_or_default();
    let signature = stripe_signature(secrets, timestamp, &body);
    SignedEvent {
        id,
        body,
        signature,
    }
}

/// POSTs `event` to `url` (`http://host:port/path`) as Stripe delivers webhooks.
pub async fn deliver(url: &str, event: &SignedEvent) -> Result<Delivery, String> {
    let url = url.to_owned();
    let event = event.clone();
    tokio::task::spawn_blocking(move || post_blocking(&url, &event.headers(), &event.body))
        .await
        .map_err(|e| format!("delivery task failed: {e}"))?
}

/// A minimal HTTP/1.1 client (the test kit has no HTTP client dependency).
fn post_blocking(url: &str, headers: &[(String, String)], body: &[u8]) -> Result<Delivery, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("only http:// URLs can be delivered to, not {url}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let io_err = |e: io::Error| format!("delivery to {url}: {e}");
    let mut stream = TcpStream::connect(authority).map_err(io_err)?;
    stream
        .set_read_timeout(Some(DELIVERY_TIMEOUT))
        .map_err(io_err)?;
    stream
        .set_write_timeout(Some(DELIVERY_TIMEOUT))
        .map_err(io_err)?;
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: {authority}\r\ncontent-length: {}\r\nconnection: close\r\nuser-agent: Stripe/1.0 (fake)\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).map_err(io_err)?;
    stream.write_all(body).map_err(io_err)?;
    let mut response = Vec::new();
    stream
        .take(DELIVERY_RESPONSE_SIZE_MAX)
        .read_to_end(&mut response)
        .map_err(io_err)?;
    parse_response(&response).ok_or_else(|| format!("delivery to {url}: unreadable answer"))
}

fn parse_response(response: &[u8]) -> Option<Delivery> {
    let split = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&response[..split]).ok()?;
    let mut payload = response[split + 4..].to_vec();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = head.lines().any(|line| {
        let line = line.to_ascii_lowercase();
        line.starts_with("transfer-encoding:") && line.contains("chunked")
    });
    if chunked {
        payload = dechunk(&payload)?;
    }
    Some(Delivery {
        status,
        body: String::from_utf8_lossy(&payload).into_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// A stored answer to an idempotent request.
struct StoredAnswer {
    fingerprint: String,
    status: u16,
    body: Value,
}

#[derive(Default)]
struct State {
    secret_key: String,
    base_url: String,
    sequence: u64,
    sessions: HashMap<String, Value>,
    intents: HashMap<String, Value>,
    /// `payment_intent_data` parameters of each session, applied to its PaymentIntent.
    session_intent_data: HashMap<String, SessionIntentData>,
    idempotent: HashMap<(String, String), StoredAnswer>,
    requests: Vec<RecordedRequest>,
    fail_next: u32,
    decline_next: u32,
    authenticate_next: u32,
}

#[derive(Default, Clone)]
struct SessionIntentData {
    setup_future_usage: Option<String>,
    metadata: serde_json::Map<String, Value>,
    create_customer: bool,
}

impl State {
    fn new_id(&mut self, prefix: &str) -> String {
        self.sequence += 1;
        format!("{prefix}_fake{:020}", self.sequence)
    }
}

/// A Stripe error answer.
fn stripe_error(status: u16, error: Value) -> (u16, Value) {
    (status, json!({ "error": error }))
}

fn invalid_request(message: &str, param: Option<&str>) -> (u16, Value) {
    stripe_error(
        400,
        json!({
            "type": "invalid_request_error",
            "message": message,
            "param": param,
        }),
    )
}

fn missing(kind: &str, id: &str) -> (u16, Value) {
    stripe_error(
        404,
        json!({
            "type": "invalid_request_error",
            "code": "resource_missing",
            "message": format!("No such {kind}: '{id}'"),
            "param": "id",
        }),
    )
}

fn param<'a>(form: &'a [(String, String)], key: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// `prefix[key]=value` parameters as a JSON object (`metadata[topup_id]=…`).
fn param_map(form: &[(String, String)], prefix: &str) -> serde_json::Map<String, Value> {
    let open = format!("{prefix}[");
    form.iter()
        .filter_map(|(k, v)| {
            let key = k.strip_prefix(&open)?.strip_suffix(']')?;
            (!key.contains('[')).then(|| (key.to_owned(), json!(v)))
        })
        .collect()
}

fn authorized(request: &HttpRequest, secret_key: &str) -> bool {
    let Some(value) = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    if let Some(token) = value.strip_prefix("Bearer ") {
        return token == secret_key;
    }
    if let Some(encoded) = value.strip_prefix("Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|d| String::from_utf8(d).ok());
        return decoded.is_some_and(|d| d.split(':').next() == Some(secret_key));
    }
    false
}

/// The line items' total and currency, or a Stripe error.
fn line_items_total(form: &[(String, String)]) -> Result<(i64, String), (u16, Value)> {
    let mut total: i64 = 0;
    let mut currency: Option<String> = None;
    let mut items = 0;
    for i in 0..LINE_ITEMS_MAX {
        let key = |field: &str| format!("line_items[{i}][{field}]");
        let Some(amount) = param(form, &key("price_data][unit_amount")) else {
            if param(form, &key("price")).is_some() {
                return Err(invalid_request(
                    "The fake serves price_data line items only",
                    Some("line_items"),
                ));
            }
            break;
        };
        let amount: i64 = amount.parse().ok().filter(|a| *a >= 0).ok_or_else(|| {
            invalid_request("Invalid integer", Some(&key("price_data][unit_amount")))
        })?;
        let quantity: i64 = param(form, &key("quantity"))
            .unwrap_or("1")
            .parse()
            .ok()
            .filter(|q| *q > 0)
            .ok_or_else(|| invalid_request("Invalid quantity", Some(&key("quantity"))))?;
        let item_currency = param(form, &key("price_data][currency")).ok_or_else(|| {
            invalid_request("Missing required param", Some(&key("price_data][currency")))
        })?;
        if param(form, &key("price_data][product_data][name")).is_none_or(str::is_empty) {
            return Err(invalid_request(
                "Missing required param",
                Some(&key("price_data][product_data][name")),
            ));
        }
        if currency.as_deref().is_some_and(|c| c != item_currency) {
            return Err(invalid_request(
                "All line items must have the same currency",
                Some("line_items"),
            ));
        }
        currency = Some(item_currency.to_owned());
        total = amount
            .checked_mul(quantity)
            .and_then(|a| total.checked_add(a))
            .ok_or_else(|| invalid_request("Amount too large", Some("line_items")))?;
        items += 1;
    }
    match currency {
        Some(currency) if items > 0 => Ok((total, currency)),
        _ => Err(invalid_request(
            "Missing required param: line_items.",
            Some("line_items"),
        )),
    }
}

fn create_session(state: &mut State, form: &[(String, String)]) -> (u16, Value) {
    let mode = param(form, "mode").unwrap_or("");
    if mode != "payment" {
        return invalid_request("The fake serves mode=payment only", Some("mode"));
    }
    let Some(success_url) = param(form, "success_url") else {
        return invalid_request("Missing required param: success_url.", Some("success_url"));
    };
    let (total, currency) = match line_items_total(form) {
        Ok(t) => t,
        Err(e) => return e,
    };
    let customer_creation = param(form, "customer_creation");
    if customer_creation.is_some_and(|c| c != "always" && c != "if_required") {
        return invalid_request("Invalid customer_creation", Some("customer_creation"));
    }
    let setup_future_usage = param(form, "payment_intent_data[setup_future_usage]");
    if setup_future_usage.is_some_and(|s| s != "off_session" && s != "on_session") {
        return invalid_request(
            "Invalid setup_future_usage",
            Some("payment_intent_data[setup_future_usage]"),
        );
    }
    let id = state.new_id("cs_test");
    let now = unix_now();
    let mut session = fixture(CHECKOUT_SESSION_FIXTURE);
    let patch = json!({
        "id": id,
        "object": "checkout.session",
        "url": format!("{}/c/pay/{id}", state.base_url),
        "mode": mode,
        "status": "open",
        "payment_status": "unpaid",
        "amount_subtotal": total,
        "amount_total": total,
        "currency": currency,
        "client_reference_id": param(form, "client_reference_id"),
        "metadata": param_map(form, "metadata"),
        "success_url": success_url,
        "cancel_url": param(form, "cancel_url"),
        "customer_email": param(form, "customer_email"),
        "customer_creation": customer_creation,
        "customer": null,
        "customer_details": null,
        "payment_intent": null,
        "created": now,
        "expires_at": now + SESSION_LIFETIME_SECS,
        "livemode": false,
        "currency_conversion": null,
        "shipping_cost": null,
        "shipping_address_collection": null,
        "collected_information": null,
        "total_details": { "amount_discount": 0, "amount_shipping": 0, "amount_tax": 0 },
    });
    merge(&mut session, patch);
    state.session_intent_data.insert(
        id.clone(),
        SessionIntentData {
            setup_future_usage: setup_future_usage.map(str::to_owned),
            metadata: param_map(form, "payment_intent_data[metadata]"),
            create_customer: customer_creation == Some("always"),
        },
    );
    state.sessions.insert(id, session.clone());
    (200, session)
}

/// Sets each of `patch`'s top-level fields on `target`.
fn merge(target: &mut Value, patch: Value) {
    if let (Value::Object(target), Value::Object(patch)) = (target, patch) {
        for (key, value) in patch {
            target.insert(key, value);
        }
    }
}

/// A PaymentIntent object from the fixture.
fn new_intent(id: &str, amount: i64, currency: &str, now: i64) -> Value {
    let mut intent = fixture(PAYMENT_INTENT_FIXTURE);
    merge(
        &mut intent,
        json!({
            "id": id,
            "object": "payment_intent",
            "amount": amount,
            "amount_received": 0,
            "amount_capturable": 0,
            "currency": currency,
            "client_secret": format!("{id}_secret_fake"),
            "created": now,
            "canceled_at": null,
            "last_payment_error": null,
            "next_action": null,
            "processing": null,
            "shipping": null,
            "transfer_data": null,
            "latest_charge": null,
            "metadata": {},
            "status": "requires_payment_method",
        }),
    );
    intent
}

fn create_intent(state: &mut State, form: &[(String, String)]) -> (u16, Value) {
    let Some(amount) = param(form, "amount").and_then(|a| a.parse::<i64>().ok()) else {
        return invalid_request("Missing required param: amount.", Some("amount"));
    };
    if amount <= 0 {
        return invalid_request("Amount must be positive", Some("amount"));
    }
    let Some(currency) = param(form, "currency") else {
        return invalid_request("Missing required param: currency.", Some("currency"));
    };
    let off_session = param(form, "off_session").is_some_and(|v| v != "false");
    let confirm = param(form, "confirm") == Some("true");
    let payment_method = param(form, "payment_method");
    if off_session && !confirm {
        return invalid_request(
            "off_session can only be used with confirm=true",
            Some("off_session"),
        );
    }
    let id = state.new_id("pi");
    let mut intent = new_intent(&id, amount, currency, unix_now());
    merge(
        &mut intent,
        json!({
            "customer": param(form, "customer"),
            "payment_method": payment_method,
            "metadata": param_map(form, "metadata"),
            "description": param(form, "description"),
        }),
    );
    if off_session && confirm && state.authenticate_next > 0 {
        state.authenticate_next -= 1;
        let error = json!({
            "type": "card_error",
            "code": "authentication_required",
            "decline_code": "authentication_required",
            "message": "Your card was declined. This transaction requires authentication.",
        });
        intent["status"] = json!("requires_payment_method");
        intent["last_payment_error"] = error.clone();
        state.intents.insert(id, intent.clone());
        let mut body = error;
        body["payment_intent"] = intent;
        return stripe_error(402, body);
    }
    if confirm && state.decline_next > 0 {
        state.decline_next -= 1;
        intent["last_payment_error"] = json!({
            "type": "card_error",
            "code": "card_declined",
            "decline_code": "insufficient_funds",
            "message": "Your card has insufficient funds.",
        });
        state.intents.insert(id, intent.clone());
        return stripe_error(
            402,
            json!({
                "type": "card_error",
                "code": "card_declined",
                "decline_code": "insufficient_funds",
                "message": "Your card has insufficient funds.",
                "payment_intent": intent,
            }),
        );
    }
    if confirm && payment_method.is_some() {
        intent["status"] = json!("succeeded");
        intent["amount_received"] = json!(amount);
    } else if confirm {
        return invalid_request(
            "You cannot confirm this PaymentIntent because it's missing a payment method.",
            Some("payment_method"),
        );
    }
    state.intents.insert(id, intent.clone());
    (200, intent)
}

/// Answers one API request; the caller has recorded and authorized it.
fn route(state: &mut State, method: &str, path: &str, form: &[(String, String)]) -> (u16, Value) {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        ("POST", ["v1", "checkout", "sessions"]) => create_session(state, form),
        ("GET", ["v1", "checkout", "sessions", id]) => match state.sessions.get(*id) {
            Some(session) => (200, session.clone()),
            None => missing("checkout.session", id),
        },
        ("POST", ["v1", "payment_intents"]) => create_intent(state, form),
        ("GET", ["v1", "payment_intents", id]) => match state.intents.get(*id) {
            Some(intent) => (200, intent.clone()),
            None => missing("payment_intent", id),
        },
        _ => invalid_request(
            &format!("Unrecognized request URL ({method}: {path})."),
            None,
        ),
    }
}

fn respond(status: u16, body: &Value, replayed: bool) -> HttpResponse {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::build(status);
    response.insert_header(("request-id", "req_fake"));
    if replayed {
        response.insert_header(("idempotent-replayed", "true"));
    }
    response.json(body)
}

type Shared = Mutex<State>;

fn lock(state: &Shared) -> MutexGuard<'_, State> {
    // A test that panicked while holding the lock leaves consistent data: every change is
    // made under one lock, in one go.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn handle(request: HttpRequest, body: web::Bytes, state: web::Data<Shared>) -> HttpResponse {
    let text = String::from_utf8_lossy(&body).into_owned();
    let form: Vec<(String, String)> = if text.is_empty() {
        Vec::new()
    } else {
        match web::Query::<Vec<(String, String)>>::from_query(&text) {
            Ok(query) => query.into_inner(),
            Err(_) => {
                let (status, error) = invalid_request("Invalid form body", None);
                return respond(status, &error, false);
            }
        }
    };
    let method = request.method().as_str().to_owned();
    let path = request.path().to_owned();
    let recorded = RecordedRequest {
        method: method.clone(),
        path: path.clone(),
        query: request.query_string().to_owned(),
        headers: request
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        form,
    };
    let idempotency_key = recorded.idempotency_key().map(str::to_owned);
    let form = recorded.form.clone();
    let mut state = lock(&state);
    state.requests.push(recorded);
    if !authorized(&request, &state.secret_key) {
        let (status, error) = stripe_error(
            401,
            json!({
                "type": "invalid_request_error",
                "message": "Invalid API Key provided.",
            }),
        );
        return respond(status, &error, false);
    }
    if state.fail_next > 0 {
        state.fail_next -= 1;
        let (status, error) = stripe_error(
            500,
            json!({
                "type": "api_error",
                "message": "An unknown error occurred (fake Stripe was told to fail).",
            }),
        );
        return respond(status, &error, false);
    }
    let key = match (method.as_str(), idempotency_key) {
        ("POST", Some(key)) => Some((path.clone(), key)),
        _ => None,
    };
    let fingerprint = text;
    if let Some(stored) = key.as_ref().and_then(|k| state.idempotent.get(k)) {
        if stored.fingerprint != fingerprint {
            let (status, error) = stripe_error(
                400,
                json!({
                    "type": "idempotency_error",
                    "message": "Keys for idempotent requests can only be used with the same parameters they were first used with.",
                }),
            );
            return respond(status, &error, false);
        }
        return respond(stored.status, &stored.body, true);
    }
    let (status, answer) = route(&mut state, &method, &path, &form);
    if let Some(key) = key {
        state.idempotent.insert(
            key,
            StoredAnswer {
                fingerprint,
                status,
                body: answer.clone(),
            },
        );
    }
    respond(status, &answer, false)
}

/// A running fake Stripe. Stopped when dropped.
pub struct FakeStripe {
    state: Arc<Shared>,
    base_url: String,
    server: ServerHandle,
}

impl std::fmt::Debug for FakeStripe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeStripe")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl Drop for FakeStripe {
    fn drop(&mut self) {
        // The stop command is sent now; nothing needs to wait for the workers to finish.
        drop(self.server.stop(false));
    }
}

impl FakeStripe {
    /// Starts a fake Stripe on `127.0.0.1:0` that accepts `secret_key`. Call it from a tokio
    /// runtime.
    pub async fn start(secret_key: &str) -> io::Result<FakeStripe> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(Mutex::new(State {
            secret_key: secret_key.to_owned(),
            base_url: base_url.clone(),
            ..State::default()
        }));
        let data = web::Data::from(Arc::clone(&state));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(BODY_SIZE_MAX))
                .default_service(web::to(handle))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)?
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(FakeStripe {
            state,
            base_url,
            server: handle,
        })
    }

    /// `http://127.0.0.1:{port}`, without a trailing slash: the API base for a client.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state().requests.clone()
    }

    /// The requests received with this method and path, oldest first.
    pub fn requests_to(&self, method: &str, path: &str) -> Vec<RecordedRequest> {
        self.state()
            .requests
            .iter()
            .filter(|r| r.method == method && r.path == path)
            .cloned()
            .collect()
    }

    /// Forgets the recorded requests (state is kept).
    pub fn clear_requests(&self) {
        self.state().requests.clear();
    }

    /// A Checkout Session as the API would answer it now.
    pub fn session(&self, id: &str) -> Option<Value> {
        self.state().sessions.get(id).cloned()
    }

    /// A PaymentIntent as the API would answer it now.
    pub fn payment_intent(&self, id: &str) -> Option<Value> {
        self.state().intents.get(id).cloned()
    }

    /// The ids of every PaymentIntent created or submitted, sorted.
    pub fn payment_intent_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.state().intents.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// The ids of every Checkout Session created, in no particular order.
    pub fn session_ids(&self) -> Vec<String> {
        self.state().sessions.keys().cloned().collect()
    }

    /// Changes a session with `change` (any field, any value): for answers the other
    /// controls do not produce. Panics if there is no such session.
    pub fn patch_session(&self, id: &str, change: impl FnOnce(&mut Value)) {
        let mut state = self.state();
        let session = state
            .sessions
            .get_mut(id)
            .unwrap_or_else(|| panic!("fake Stripe has no checkout session {id}"));
        change(session);
    }

    /// Changes a PaymentIntent with `change`. Panics if there is no such PaymentIntent.
    pub fn patch_payment_intent(&self, id: &str, change: impl FnOnce(&mut Value)) {
        let mut state = self.state();
        let intent = state
            .intents
            .get_mut(id)
            .unwrap_or_else(|| panic!("fake Stripe has no payment intent {id}"));
        change(intent);
    }

    /// Overrides the session's `amount_total` (for amount-mismatch tests).
    pub fn set_amount_total(&self, id: &str, amount_total: i64) {
        self.patch_session(id, |s| s["amount_total"] = json!(amount_total));
    }

    /// The session's PaymentIntent, created as Checkout creates it when the customer submits
    /// (with the session's `payment_intent_data` and, for `customer_creation=always`, a new
    /// customer). Returns its id.
    fn submit(state: &mut State, id: &str) -> String {
        let session = state
            .sessions
            .get(id)
            .unwrap_or_else(|| panic!("fake Stripe has no checkout session {id}"))
            .clone();
        if let Some(existing) = session["payment_intent"].as_str() {
            return existing.to_owned();
        }
        let data = state
            .session_intent_data
            .get(id)
            .cloned()
            .unwrap_or_default();
        let intent_id = state.new_id("pi");
        let method_id = state.new_id("pm");
        let customer = data.create_customer.then(|| state.new_id("cus"));
        let amount = session["amount_total"].as_i64().unwrap_or(0);
        let currency = session["currency"].as_str().unwrap_or("usd").to_owned();
        let mut intent = new_intent(&intent_id, amount, &currency, unix_now());
        merge(
            &mut intent,
            json!({
                "customer": customer,
                "payment_method": method_id,
                "setup_future_usage": data.setup_future_usage,
                "metadata": data.metadata,
                "status": "processing",
            }),
        );
        state.intents.insert(intent_id.clone(), intent);
        let email = session["customer_email"].clone();
        if let Some(session) = state.sessions.get_mut(id) {
            let mut details = fixture(CHECKOUT_SESSION_FIXTURE)["customer_details"].clone();
            details["email"] = email;
            merge(
                session,
                json!({
                    "status": "complete",
                    "url": null,
                    "payment_intent": intent_id,
                    "customer": customer,
                    "customer_details": details,
                }),
            );
        }
        intent_id
    }

    fn update_intent(state: &mut State, intent_id: &str, patch: Value) {
        if let Some(intent) = state.intents.get_mut(intent_id) {
            merge(intent, patch);
        }
    }

    /// The customer paid: session `complete` / `paid`, its PaymentIntent `succeeded` for the
    /// session's amount. Also the async success after [`FakeStripe::complete_unpaid`].
    pub fn complete_paid(&self, id: &str) {
        let mut state = self.state();
        let intent_id = FakeStripe::submit(&mut state, id);
        let amount = state.sessions.get(id).map(|s| s["amount_total"].clone());
        FakeStripe::update_intent(
            &mut state,
            &intent_id,
            json!({ "status": "succeeded", "amount_received": amount, "last_payment_error": null }),
        );
        if let Some(session) = state.sessions.get_mut(id) {
            session["payment_status"] = json!("paid");
        }
    }

    /// The customer submitted a delayed payment method (bank debit): session `complete` /
    /// `unpaid`, its PaymentIntent `processing`.
    pub fn complete_unpaid(&self, id: &str) {
        let mut state = self.state();
        let intent_id = FakeStripe::submit(&mut state, id);
        FakeStripe::update_intent(&mut state, &intent_id, json!({ "status": "processing" }));
        if let Some(session) = state.sessions.get_mut(id) {
            session["payment_status"] = json!("unpaid");
        }
    }

    /// The delayed payment failed: session `complete` / `unpaid`, its PaymentIntent back to
    /// `requires_payment_method` with a `last_payment_error`.
    pub fn fail_async(&self, id: &str) {
        let mut state = self.state();
        let intent_id = FakeStripe::submit(&mut state, id);
        FakeStripe::update_intent(
            &mut state,
            &intent_id,
            json!({
                "status": "requires_payment_method",
                "amount_received": 0,
                "last_payment_error": {
                    "type": "invalid_request_error",
                    "code": "payment_intent_payment_attempt_failed",
                    "message": "The payment failed.",
                },
            }),
        );
        if let Some(session) = state.sessions.get_mut(id) {
            session["payment_status"] = json!("unpaid");
        }
    }

    /// The session expired unpaid.
    pub fn expire(&self, id: &str) {
        self.patch_session(id, |s| {
            merge(
                s,
                json!({ "status": "expired", "payment_status": "unpaid", "url": null }),
            );
        });
    }

    /// The next `n` API calls answer 500 `api_error`.
    pub fn fail_next(&self, n: u32) {
        self.state().fail_next = n;
    }

    /// The next confirmed PaymentIntent creation answers 402 `card_declined`.
    pub fn decline_next_charge(&self) {
        self.state().decline_next += 1;
    }

    /// The next off-session charge answers 402 `authentication_required` (the bank wants
    /// the customer), as Stripe does for an off-session charge that needs 3-D Secure.
    pub fn require_authentication_next_charge(&self) {
        self.state().authenticate_next += 1;
    }

    /// A `{event_type}` event about the session as it is now, signed with `secret` at
    /// `timestamp` (Unix seconds; pass an old one for a stale event). Panics if there is no
    /// such session.
    pub fn event(
        &self,
        event_type: &str,
        session_id: &str,
        secret: &str,
        timestamp: i64,
    ) -> SignedEvent {
        let session = self
            .session(session_id)
            .unwrap_or_else(|| panic!("fake Stripe has no checkout session {session_id}"));
        sign_event(event_type, session, &[secret], timestamp)
    }

    /// POSTs a correctly signed `{event_type}` event about the session to `url`, as Stripe
    /// delivers webhooks. For a tampered or stale one, build it with [`FakeStripe::event`]
    /// (and [`SignedEvent::tampered`]) and send it with [`deliver`].
    pub async fn deliver_event(
        &self,
        url: &str,
        event_type: &str,
        session_id: &str,
        secret: &str,
        timestamp: i64,
    ) -> Result<Delivery, String> {
        let event = self.event(event_type, session_id, secret, timestamp);
        deliver(url, &event).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_answers_are_decoded() {
        let raw = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(raw),
            Some(Delivery {
                status: 200,
                body: "abcde".to_owned()
            })
        );
    }

    #[test]
    fn bracket_parameters_become_maps() {
        let form = vec![
            ("metadata[topup_id]".to_owned(), "topup_1".to_owned()),
            ("metadata[a][b]".to_owned(), "nested".to_owned()),
            ("mode".to_owned(), "payment".to_owned()),
        ];
        let map = param_map(&form, "metadata");
        assert_eq!(map.len(), 1);
        assert_eq!(map["topup_id"], json!("topup_1"));
    }
}
