//! MyFatoorah webhooks: signature verification (V1 and V2) and what a verified
//! payment-status event tells the core.
//!
//! The signature is `base64(HMAC-SHA256(secret, signing string))` in the
//! `MyFatoorah-Signature` header, with the secret and the string as UTF-8:
//!
//! - **V1** (`{EventType, Event, DateTime, CountryIsoCode, Data}`): every property of `Data`,
//!   sorted by name case-insensitively (as MyFatoorah's PHP library does with `strcasecmp`;
//!   its published test vectors depend on it), joined as `key=value` with `,`; a `null` value
//!   is written as the empty string. `RefundStatusChanged` (EventType 2) leaves out
//!   `GatewayReference`.
//! - **V2** (`{Event: {Code, Name, CountryIsoCode, CreationDate, Reference}, Data}`): a fixed
//!   list of fields per `Event.Code`, in that order (not sorted), missing or `null` as empty.
//!   For `PAYMENT_STATUS_CHANGED` (code 1): `Invoice.Id, Invoice.Status, Transaction.Status,
//!   Transaction.PaymentId, Invoice.ExternalIdentifier`.
//!
//! The version is read from the body's shape and, when present, the
//! `MyFatoorah-Webhook-Version` header (`v1`/`v2`); a header that contradicts the shape is
//! refused.
//!
//! **No replay window.** MyFatoorah signs no timestamp (V1's `DateTime` and V2's
//! `Event.CreationDate` are outside the signed string), so a captured webhook can be replayed
//! at any time and the age of a notification cannot be checked. What makes replays harmless
//! is the core: it deduplicates events by [`VerifiedNotification::event_id`] and never acts on
//! a notification's claims, only on `GetPaymentStatus` asked server to server.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use billing_core::ids::TopUpId;
use billing_core::ports::{GatewayError, Notification, VerifiedNotification};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

use crate::api::scalar_text;

/// The header holding the signature.
pub const SIGNATURE_HEADER: &str = "MyFatoorah-Signature";
/// The header naming the webhook version (`v1` or `v2`); sent by MyFatoorah according to its
/// PHP library, not mentioned by the documentation, so it is optional here.
pub const VERSION_HEADER: &str = "MyFatoorah-Webhook-Version";
/// Largest webhook body looked at, in bytes. MyFatoorah's bodies are a few kilobytes.
pub const WEBHOOK_BODY_SIZE_MAX: usize = 64 * 1024;
/// Longest event id handed to the core, in bytes (it is stored for deduplication).
pub const EVENT_ID_LENGTH_MAX: usize = 255;

/// V1 `EventType` of a payment's status change (`TransactionsStatusChanged`).
const V1_TRANSACTIONS_STATUS_CHANGED: &str = "1";
/// V1 `EventType` of a refund's status change, whose signature leaves out a field.
const V1_REFUND_STATUS_CHANGED: &str = "2";
/// V2 `Event.Code` of `PAYMENT_STATUS_CHANGED`.
const V2_PAYMENT_STATUS_CHANGED: &str = "1";

/// The two webhook formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookVersion {
    /// `{EventType, Event, DateTime, CountryIsoCode, Data}`, sorted signing string.
    V1,
    /// `{Event: {Code, …}, Data}`, fixed-order signing string.
    V2,
}

/// The signed fields of each V2 event code, in signing order (MyFatoorah's webhook
/// documentation, updated 2026-02-16, and its PHP library 2.2.9).
fn v2_signed_fields(code: &str) -> Option<&'static [&'static str]> {
    let fields: &'static [&'static str] = match code {
        "1" => &[
            "Invoice.Id",
            "Invoice.Status",
            "Transaction.Status",
            "Transaction.PaymentId",
            "Invoice.ExternalIdentifier",
        ],
        "2" => &[
            "Refund.Id",
            "Refund.Status",
            "Amount.ValueInBaseCurrency",
            "ReferencedInvoice.Id",
        ],
        "3" => &[
            "Deposit.Reference",
            "Deposit.ValueInBaseCurrency",
            "Deposit.NumberOfTransactions",
        ],
        "4" => &["Supplier.Code", "KycDecision.Status"],
        "5" => &[
            "Recurring.Id",
            "Recurring.Status",
            "Recurring.InitialInvoiceId",
        ],
        "6" => &[
            "Dispute.DisputeTransactionId",
            "Dispute.Status",
            "Invoice.Id",
            "Invoice.Status",
            "Transaction.Status",
            "Transaction.PaymentId",
            "Invoice.ExternalIdentifier",
        ],
        "7" => &["Supplier.Code", "RequestStatus.Status"],
        _ => return None,
    };
    Some(fields)
}

/// A value as it appears in a signing string: strings as is, numbers as written, `null` as
/// empty, booleans as PHP prints them (`1` / empty). `None` for objects and arrays, which no
/// documented event signs.
fn signed_value(value: &Value) -> Option<String> {
    match value {
        Value::Null | Value::Bool(false) => Some(String::new()),
        Value::Bool(true) => Some("1".to_owned()),
        Value::String(_) | Value::Number(_) => scalar_text(value),
        Value::Array(_) | Value::Object(_) => None,
    }
}

/// The V1 signing string of a webhook's `Data` object: properties sorted by name
/// case-insensitively (ties broken byte-wise), `key=value` joined with `,`. `excluded` names
/// properties left out (`GatewayReference` for refunds). `None` when a value is an object or
/// an array.
pub fn v1_signing_string(data: &Map<String, Value>, excluded: &[&str]) -> Option<String> {
    let mut keys: Vec<&String> = data
        .keys()
        .filter(|k| !excluded.contains(&k.as_str()))
        .collect();
    keys.sort_by(|a, b| {
        a.to_ascii_lowercase()
            .cmp(&b.to_ascii_lowercase())
            .then_with(|| a.cmp(b))
    });
    let mut parts = Vec::with_capacity(keys.len());
    for key in keys {
        let value = signed_value(data.get(key.as_str())?)?;
        parts.push(format!("{key}={value}"));
    }
    Some(parts.join(","))
}

/// The V2 signing string of a webhook body with event code `code`: its fixed fields of
/// `Data`, in order, `path=value` joined with `,`, a missing or `null` field as empty. `None`
/// for an event code without a documented field list, or a field that is an object or array.
pub fn v2_signing_string(code: &str, data: &Map<String, Value>) -> Option<String> {
    let fields = v2_signed_fields(code)?;
    let mut parts = Vec::with_capacity(fields.len());
    for path in fields {
        let value = match lookup(data, path) {
            Some(value) => signed_value(value)?,
            None => String::new(),
        };
        parts.push(format!("{path}={value}"));
    }
    Some(parts.join(","))
}

/// `Data` member at a dotted path (`Invoice.Id`).
fn lookup<'a>(data: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut segments = path.split('.');
    let mut current = data.get(segments.next()?)?;
    for segment in segments {
        current = current.as_object()?.get(segment)?;
    }
    Some(current)
}

/// `base64(HMAC-SHA256(secret, signing_string))`, as MyFatoorah computes it.
pub fn sign(secret: &str, signing_string: &str) -> String {
    BASE64.encode(mac(secret, signing_string).finalize().into_bytes())
}

fn mac(secret: &str, signing_string: &str) -> Hmac<Sha256> {
    // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
    let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(signing_string.as_bytes());
    mac
}

fn bad(reason: &str) -> GatewayError {
    GatewayError::BadSignature(reason.to_owned())
}

/// A parsed webhook body and its version.
struct Parsed {
    version: WebhookVersion,
    body: Map<String, Value>,
}

/// The body's version from its shape: V2 has an `Event` object, V1 an `EventType` and a
/// `Data` object.
fn shape_version(body: &Map<String, Value>) -> Option<WebhookVersion> {
    if body.get("Event").is_some_and(Value::is_object)
        && body.get("Data").is_some_and(Value::is_object)
    {
        return Some(WebhookVersion::V2);
    }
    if body.contains_key("EventType") && body.get("Data").is_some_and(Value::is_object) {
        return Some(WebhookVersion::V1);
    }
    None
}

fn parse(notification: &Notification) -> Result<Parsed, GatewayError> {
    let body: Map<String, Value> = match serde_json::from_slice(&notification.body) {
        Ok(Value::Object(body)) => body,
        _ => return Err(bad("body is not a JSON object")),
    };
    let shape = shape_version(&body).ok_or_else(|| bad("body is no MyFatoorah webhook"))?;
    if let Some(header) = notification.header(VERSION_HEADER) {
        let declared = match header.trim().to_ascii_lowercase().as_str() {
            "v1" => WebhookVersion::V1,
            "v2" => WebhookVersion::V2,
            _ => return Err(bad("unknown webhook version header")),
        };
        if declared != shape {
            return Err(bad("webhook version header contradicts the body"));
        }
    }
    Ok(Parsed {
        version: shape,
        body,
    })
}

fn data(body: &Map<String, Value>) -> Result<&Map<String, Value>, GatewayError> {
    body.get("Data")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("body has no Data object"))
}

/// The event kind: V1 `EventType`, V2 `Event.Code`, as text.
fn event_code(parsed: &Parsed) -> Option<String> {
    match parsed.version {
        WebhookVersion::V1 => parsed.body.get("EventType").and_then(scalar_text),
        WebhookVersion::V2 => parsed
            .body
            .get("Event")
            .and_then(|e| e.get("Code"))
            .and_then(scalar_text),
    }
}

fn signing_string(parsed: &Parsed, code: &str) -> Result<String, GatewayError> {
    let data = data(&parsed.body)?;
    let string = match parsed.version {
        WebhookVersion::V1 => {
            let excluded: &[&str] = if code == V1_REFUND_STATUS_CHANGED {
                &["GatewayReference"]
            } else {
                &[]
            };
            v1_signing_string(data, excluded)
        }
        WebhookVersion::V2 => v2_signing_string(code, data),
    };
    string.ok_or_else(|| bad("body cannot be put in a signing string"))
}

/// Verifies a webhook and reads what the core needs from it.
///
/// The signature is checked first, in constant time (`Mac::verify_slice`); anything
/// unsigned, wrongly signed, oversized or unparsable is `BadSignature`. A correctly signed
/// event this service does not act on (refunds, deposits, …) or one without an invoice id is
/// `Malformed`. There is no replay window: see the module documentation.
pub fn verify(
    notification: &Notification,
    secret: &str,
) -> Result<VerifiedNotification, GatewayError> {
    if secret.is_empty() {
        return Err(bad("no webhook secret configured"));
    }
    if notification.body.len() > WEBHOOK_BODY_SIZE_MAX {
        return Err(bad("body too large"));
    }
    let signature = notification
        .header(SIGNATURE_HEADER)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("missing MyFatoorah-Signature header"))?;
    let signature = BASE64
        .decode(signature)
        .map_err(|_| bad("signature is not base64"))?;
    let parsed = parse(notification)?;
    let code = event_code(&parsed).ok_or_else(|| bad("body has no event code"))?;
    let string = signing_string(&parsed, &code)?;
    mac(secret, &string)
        .verify_slice(&signature)
        .map_err(|_| bad("signature does not match"))?;
    // Signed by MyFatoorah from here on.
    match parsed.version {
        WebhookVersion::V1 => read_v1(&parsed.body, &code),
        WebhookVersion::V2 => read_v2(&parsed.body, &code),
    }
}

fn text_at(data: &Map<String, Value>, path: &str) -> String {
    lookup(data, path).and_then(scalar_text).unwrap_or_default()
}

fn checked_event_id(event_id: String) -> Result<String, GatewayError> {
    if event_id.len() > EVENT_ID_LENGTH_MAX || event_id.chars().any(char::is_control) {
        return Err(GatewayError::Malformed(
            "event id too long or not printable".to_owned(),
        ));
    }
    Ok(event_id)
}

fn invoice_id(text: String) -> Result<String, GatewayError> {
    let text = text.trim().to_owned();
    if text.is_empty() || text.len() > 64 || text.chars().any(char::is_control) {
        return Err(GatewayError::Malformed("event names no invoice".to_owned()));
    }
    Ok(text)
}

/// V1 `TransactionsStatusChanged`: `Data.InvoiceId` is the payment reference,
/// `Data.CustomerReference` the top-up id we sent. V1 carries no event id, so one is built
/// from what distinguishes two events of one invoice: `v1:{InvoiceId}:{PaymentId}:
/// {TransactionStatus}:{DateTime}` (each attempt has its own PaymentId; a status change of
/// the same attempt has another status or time).
fn read_v1(body: &Map<String, Value>, code: &str) -> Result<VerifiedNotification, GatewayError> {
    if code != V1_TRANSACTIONS_STATUS_CHANGED {
        return Err(GatewayError::Malformed(format!(
            "V1 event type {code} is not handled"
        )));
    }
    let data = data(body)?;
    let invoice = invoice_id(text_at(data, "InvoiceId"))?;
    let topup_id = data
        .get("CustomerReference")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(TopUpId::new);
    // Only signed fields (V1 signs every `Data` property; the envelope's `DateTime` is not
    // signed): a replayed body with an edited envelope cannot mark another event as seen.
    let event_id = format!(
        "v1:{invoice}:{}:{}",
        text_at(data, "PaymentId"),
        text_at(data, "TransactionStatus"),
    );
    Ok(VerifiedNotification {
        event_id: checked_event_id(event_id)?,
        topup_id,
        payment_ref: Some(invoice),
    })
}

/// V2 `PAYMENT_STATUS_CHANGED`: `Data.Invoice.Id` is the payment reference. The event id is
/// built from the signed fields only (`Event.Reference`, e.g. `WH-626519`, is not signed: a
/// replayed body with an edited reference could otherwise mark a future event as already
/// seen). V2 does not echo `CustomerReference`, so
/// `topup_id` is `None` and the core finds the top-up by its payment reference
/// (`Invoice.ExternalIdentifier` echoes `CustomerIdentifier`, which this adapter does not
/// send).
fn read_v2(body: &Map<String, Value>, code: &str) -> Result<VerifiedNotification, GatewayError> {
    if code != V2_PAYMENT_STATUS_CHANGED {
        return Err(GatewayError::Malformed(format!(
            "V2 event code {code} is not handled"
        )));
    }
    let data = data(body)?;
    let invoice = invoice_id(text_at(data, "Invoice.Id"))?;
    let event_id = format!(
        "v2:{invoice}:{}:{}:{}",
        text_at(data, "Transaction.PaymentId"),
        text_at(data, "Transaction.Status"),
        text_at(data, "Invoice.Status"),
    );
    Ok(VerifiedNotification {
        event_id: checked_event_id(event_id)?,
        topup_id: None,
        payment_ref: Some(invoice),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(text: &str) -> Map<String, Value> {
        match serde_json::from_str(text) {
            Ok(Value::Object(map)) => map,
            other => panic!("not an object: {other:?}"),
        }
    }

    #[test]
    fn v1_sorts_case_insensitively_and_writes_null_as_empty() {
        let data = object(
            r#"{"DepositReference":"2021000008","DepositedAmount":"1520.664","NumberOfTransactions":"47","DepositFor":"VENDOR","SupplierCode":null}"#,
        );
        assert_eq!(
            v1_signing_string(&data, &[]).as_deref(),
            Some(
                "DepositedAmount=1520.664,DepositFor=VENDOR,DepositReference=2021000008,NumberOfTransactions=47,SupplierCode="
            )
        );
    }

    #[test]
    fn numbers_are_signed_as_written() {
        let data = object(r#"{"InvoiceId":994285,"Value":40.0,"Flag":true,"Off":false}"#);
        assert_eq!(
            v1_signing_string(&data, &[]).as_deref(),
            Some("Flag=1,InvoiceId=994285,Off=,Value=40.0")
        );
        let nested = object(r#"{"A":{"B":1}}"#);
        assert_eq!(v1_signing_string(&nested, &[]), None);
    }

    #[test]
    fn v2_uses_the_fixed_order_and_empties_missing_fields() {
        let data = object(
            r#"{"Invoice":{"Id":"1","Status":"PAID"},"Transaction":{"Status":"SUCCESS","PaymentId":null}}"#,
        );
        assert_eq!(
            v2_signing_string("1", &data).as_deref(),
            Some(
                "Invoice.Id=1,Invoice.Status=PAID,Transaction.Status=SUCCESS,Transaction.PaymentId=,Invoice.ExternalIdentifier="
            )
        );
        assert_eq!(v2_signing_string("99", &data), None);
    }
}
