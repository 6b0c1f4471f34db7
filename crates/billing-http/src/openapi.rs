//! The OpenAPI document, generated from the handlers and types (served at `/openapi.json`,
//! browsable at `/docs/`).

use billing_core::holds::HOLD_EXPIRY_MAX_SECS;
use billing_core::ledger::{DESCRIPTION_LENGTH_MAX, EntryKind};
use billing_core::money::LEDGER_SCALE;
use billing_core::ports::IDEMPOTENCY_KEY_LENGTH_MAX;
use billing_core::pricing::{MODEL_LENGTH_MAX, PRICE_PER_MILLION_LIMIT, TOKENS_MAX};
use billing_core::service::{
    ACCOUNT_EMAIL_LENGTH_MAX, ACCOUNT_NAME_LENGTH_MAX, ENTRY_PAGE_SIZE_MAX, PACK_ID_LENGTH_MAX,
    REFUND_ENTRIES_MAX, TOPUP_PAGE_MAX,
};
use billing_core::topup::PACK_NAME_LENGTH_MAX;
use serde_json::{Map, Value, json};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::amount::request_amount_schema;
use crate::routes::{alerts, autotopup, controls, gateway, holds, platform, rates, wallet};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key: `customer` (one account's wallet), `platform` (usage for any account) or `admin`",
                    ))
                    .build(),
            ),
        );
    }
}

/// The service's API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "billing",
        description = "Prepaid-credits billing: wallets, top-ups through payment gateways, usage debits. \
Every error is `{\"error\": {\"code\", \"message\"}}`. Amounts are JSON numbers written with their exact digits \
(strings are accepted too). Mutating calls accept an `Idempotency-Key` header (required for `POST /v1/usage`)."
    ),
    modifiers(&BearerAuth),
    paths(
        wallet::balance,
        wallet::top_up,
        wallet::top_up_status,
        wallet::transactions,
        wallet::transaction,
        wallet::topup_packs,
        wallet::topup_history,
        platform::usage,
        controls::get_spending_limit,
        controls::put_spending_limit,
        controls::admin_get_spending_limit,
        controls::admin_put_spending_limit,
        alerts::get_alert,
        alerts::put_alert,
        alerts::admin_get_alert,
        alerts::admin_put_alert,
        autotopup::get_auto_topup,
        autotopup::put_auto_topup,
        autotopup::get_payment_method,
        autotopup::delete_payment_method,
        autotopup::admin_get_auto_topup,
        autotopup::admin_put_auto_topup,
        autotopup::admin_get_payment_method,
        autotopup::admin_delete_payment_method,
        holds::place,
        holds::get_hold,
        holds::capture,
        holds::release,
        holds::extend,
        rates::rates,
        rates::set_rate,
        rates::delete_rate,
        platform::create_account,
        platform::get_account,
        platform::create_key,
        platform::list_account_keys,
        platform::create_service_key,
        platform::list_keys,
        platform::revoke_key,
        platform::grant,
        platform::refund,
        platform::list_packs,
        platform::create_pack,
        platform::update_pack,
        platform::deactivate_pack,
        gateway::webhook,
        gateway::healthz,
        gateway::readyz,
    )
)]
pub struct ApiDoc;

/// What the served document says about this deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocSettings {
    /// The top-up currency's code and exponent (decimals of prices and custom amounts).
    pub currency: String,
    pub currency_exponent: u32,
    /// The gateways a top-up may name.
    pub gateways: Vec<String>,
    /// Decimals of wallet amounts customers set (spending limits).
    pub wallet_decimals: u32,
}

/// No control characters (what the core's text checks refuse: Unicode `Cc`).
const TEXT_PATTERN: &str = "^[^\\x00-\\x1F\\x7F-\\x9F]*$";
/// Not blank, no white space at either end, no control characters.
const NAME_PATTERN: &str =
    "^[^\\s\\x00-\\x1F\\x7F-\\x9F]([^\\x00-\\x1F\\x7F-\\x9F]*[^\\s\\x00-\\x1F\\x7F-\\x9F])?$";
/// What the core takes for an email address: a local part without `@`, then a host with a
/// dot; no white space or control characters.
const EMAIL_PATTERN: &str = "^[^@\\s\\x00-\\x1F\\x7F-\\x9F]+@[^\\s\\x00-\\x1F\\x7F-\\x9F]*\\.[^\\s\\x00-\\x1F\\x7F-\\x9F]*$";
const PACK_ID_PATTERN: &str = "^pack_[a-z0-9_]+$";
const MODEL_PATTERN: &str = "^[A-Za-z0-9._:-]+$";

/// A price per million tokens: from 0, below 10^6, at most 9 decimals.
fn price_schema() -> Value {
    json!({"anyOf": [
        {"type": "number", "minimum": 0, "exclusiveMaximum": PRICE_PER_MILLION_LIMIT, "multipleOf": 1e-9},
        {"type": "string", "pattern": "^0*[0-9]{1,6}(\\.[0-9]{1,9}0*)?$"},
    ]})
}

fn text(max: usize) -> Value {
    json!({"type": "string", "maxLength": max, "pattern": TEXT_PATTERN})
}

fn nullable(mut schema: Value) -> Value {
    if let Some(kind) = schema.get("type").cloned() {
        schema["type"] = json!([kind, "null"]);
        schema
    } else {
        json!({"anyOf": [schema, {"type": "null"}]})
    }
}

fn name(max: usize) -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": max, "pattern": NAME_PATTERN})
}

/// The request bodies' properties with every constraint the server enforces.
fn request_schemas(settings: &DocSettings) -> Vec<(&'static str, &'static str, Value)> {
    let credits = request_amount_schema(LEDGER_SCALE);
    let money = request_amount_schema(settings.currency_exponent);
    let description = text(DESCRIPTION_LENGTH_MAX);
    let pack_name = name(PACK_NAME_LENGTH_MAX);
    let per_minute = json!({"type": ["integer", "null"], "minimum": 1, "maximum": 1_000_000});
    let model = json!({"type": "string", "minLength": 1, "maxLength": MODEL_LENGTH_MAX, "pattern": MODEL_PATTERN});
    let tokens = json!({"type": ["integer", "null"], "minimum": 0, "maximum": TOKENS_MAX});
    let price = price_schema();
    let limit_amount = request_amount_schema(settings.wallet_decimals);
    let expiry = json!({"type": "integer", "minimum": 1, "maximum": HOLD_EXPIRY_MAX_SECS});
    // A capture may be zero: a call that ended before producing anything.
    let capture_amount = json!({"anyOf": [
        {"type": "number", "minimum": 0, "exclusiveMaximum": crate::amount::REQUEST_AMOUNT_LIMIT, "multipleOf": 1e-9},
        {"type": "string", "pattern": "^0*[0-9]{1,9}(\\.[0-9]{1,9}0*)?$"},
    ]});
    let expires_at = json!({"type": ["string", "null"], "format": "date-time"});
    vec![
        ("UsageBody", "amount", nullable(credits.clone())),
        ("UsageBody", "model", nullable(model.clone())),
        ("UsageBody", "input_tokens", tokens.clone()),
        ("UsageBody", "output_tokens", tokens.clone()),
        ("UsageBody", "description", nullable(description.clone())),
        (
            "SpendingLimitFields",
            "monthly_limit",
            nullable(limit_amount.clone()),
        ),
        (
            "SpendingLimitFields",
            "action",
            json!({"type": "string", "enum": ["block", "alert"]}),
        ),
        (
            "LowBalanceAlertFields",
            "threshold",
            nullable(limit_amount.clone()),
        ),
        (
            "AutoTopUpFields",
            "threshold",
            nullable(limit_amount.clone()),
        ),
        ("AutoTopUpFields", "amount", nullable(money.clone())),
        ("AutoTopUpFields", "monthly_cap", nullable(money.clone())),
        ("HoldBody", "amount", nullable(credits.clone())),
        ("HoldBody", "model", nullable(model.clone())),
        ("HoldBody", "max_input_tokens", tokens.clone()),
        ("HoldBody", "max_output_tokens", tokens.clone()),
        ("HoldBody", "expires_in_seconds", nullable(expiry.clone())),
        ("CaptureBody", "amount", nullable(capture_amount)),
        ("CaptureBody", "input_tokens", tokens.clone()),
        ("CaptureBody", "output_tokens", tokens.clone()),
        (
            "CaptureBody",
            "description",
            nullable(text(DESCRIPTION_LENGTH_MAX)),
        ),
        ("ExtendBody", "expires_in_seconds", expiry),
        ("ExtendBody", "amount", nullable(credits.clone())),
        ("RateBody", "input_per_million", price.clone()),
        ("RateBody", "output_per_million", price),
        ("GrantBody", "amount", credits.clone()),
        ("GrantBody", "description", nullable(description.clone())),
        ("RefundBody", "amount", credits.clone()),
        ("RefundBody", "description", nullable(description)),
        (
            "RefundBody",
            "transaction_ids",
            json!({"type": "array", "items": {"type": "string"}, "uniqueItems": true, "minItems": 1, "maxItems": REFUND_ENTRIES_MAX}),
        ),
        ("CreateAccountBody", "name", name(ACCOUNT_NAME_LENGTH_MAX)),
        (
            "CreateAccountBody",
            "email",
            json!({"type": "string", "maxLength": ACCOUNT_EMAIL_LENGTH_MAX, "pattern": EMAIL_PATTERN}),
        ),
        (
            "PackBody",
            "id",
            json!({"type": ["string", "null"], "maxLength": PACK_ID_LENGTH_MAX, "pattern": PACK_ID_PATTERN}),
        ),
        ("PackBody", "name", pack_name.clone()),
        ("PackBody", "price", money.clone()),
        (
            "PackBody",
            "currency",
            json!({"type": "string", "enum": [settings.currency]}),
        ),
        ("PackBody", "credits", credits.clone()),
        ("PackUpdateBody", "name", pack_name),
        ("PackUpdateBody", "price", money.clone()),
        (
            "PackUpdateBody",
            "currency",
            json!({"type": "string", "enum": [settings.currency]}),
        ),
        ("PackUpdateBody", "credits", credits),
        ("TopUpBody", "amount", nullable(money)),
        ("TopUpBody", "pack_id", json!({"type": ["string", "null"]})),
        (
            "TopUpBody",
            "gateway",
            json!({"type": ["string", "null"], "enum": settings.gateways.iter().map(|g| json!(g)).chain([Value::Null]).collect::<Vec<_>>()}),
        ),
        (
            "CreateKeyBody",
            "scope",
            json!({"type": "string", "enum": ["customer", "platform"]}),
        ),
        ("CreateKeyBody", "expires_at", expires_at.clone()),
        (
            "CreateKeyBody",
            "requests_per_minute_max",
            per_minute.clone(),
        ),
        (
            "CreateServiceKeyBody",
            "scope",
            json!({"type": "string", "enum": ["platform"]}),
        ),
        ("CreateServiceKeyBody", "expires_at", expires_at),
        (
            "CreateServiceKeyBody",
            "requests_per_minute_max",
            per_minute,
        ),
    ]
}

/// Query and header parameters, by name, with the server's constraints.
fn parameter_schemas() -> Vec<(&'static str, Value)> {
    // A day (its first instant, UTC) or an RFC 3339 instant.
    let period_bound =
        json!({"type": "string", "anyOf": [{"format": "date"}, {"format": "date-time"}]});
    vec![
        (
            "limit",
            json!({"type": "integer", "minimum": 1, "maximum": ENTRY_PAGE_SIZE_MAX}),
        ),
        (
            "page",
            json!({"type": "integer", "minimum": 1, "maximum": TOPUP_PAGE_MAX}),
        ),
        (
            "model",
            json!({"type": "string", "minLength": 1, "maxLength": MODEL_LENGTH_MAX, "pattern": MODEL_PATTERN}),
        ),
        (
            "type",
            json!({"type": "string", "enum": EntryKind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>()}),
        ),
        (
            "status",
            json!({"type": "string", "enum": ["pending", "completed", "failed"]}),
        ),
        ("from", period_bound.clone()),
        ("to", period_bound),
        (
            "Idempotency-Key",
            json!({"type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_KEY_LENGTH_MAX, "pattern": "^[\\x21-\\x7E]+$"}),
        ),
    ]
}

fn error_response(description: &str, retry_after: bool) -> Value {
    let mut response = json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    });
    if retry_after {
        response["headers"] = json!({"Retry-After": {
            "description": "Seconds to wait before retrying",
            "schema": {"type": "integer", "minimum": 0},
        }});
    }
    response
}

/// The answers every operation of a kind can give, whatever its handler: authentication
/// (401, 403, 429), body parsing (400, 413, 415), parameters (400), storage (503).
fn add_standard_responses(operation_id: &str, operation: &mut Map<String, Value>) {
    let secured = operation
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|s| !s.is_empty());
    let has_body = operation.contains_key("requestBody");
    let has_params = operation
        .get("parameters")
        .and_then(Value::as_array)
        .is_some_and(|p| !p.is_empty());
    let mut add: Vec<(&str, Value)> = Vec::new();
    if secured {
        add.push((
            "401",
            error_response("Missing, unknown, revoked or expired API key", false),
        ));
        add.push(("429", error_response("`rate_limited`: too many failed authentications from this address, or the key's own request limit", true)));
        // Any valid key may list the packs; every other secured operation wants one kind.
        if operation_id != "topup_packs" {
            add.push((
                "403",
                error_response("This kind of key may not call this operation", false),
            ));
        }
    }
    if has_body || has_params {
        add.push((
            "400",
            error_response("Invalid request: the message names the field", false),
        ));
    }
    if has_body {
        add.push((
            "413",
            error_response("`payload_too_large`: the body is over its limit", false),
        ));
        add.push((
            "415",
            error_response(
                "`unsupported_media_type`: send `Content-Type: application/json`",
                false,
            ),
        ));
    }
    if operation_id != "healthz" {
        add.push((
            "503",
            error_response(
                "Storage or the payment gateway is temporarily unavailable: retry",
                false,
            ),
        ));
    }
    let responses = operation.entry("responses").or_insert_with(|| json!({}));
    if let Some(responses) = responses.as_object_mut() {
        for (status, response) in add {
            responses.entry(status).or_insert(response);
        }
    }
}

/// One form of a two-form body: `fields` required and not null, `others` absent or null.
fn one_form(fields: &[&str], others: &[&str]) -> Value {
    let mut properties = Map::new();
    for field in fields {
        properties.insert((*field).to_owned(), json!({"not": {"type": "null"}}));
    }
    for field in others {
        properties.insert((*field).to_owned(), json!({"type": "null"}));
    }
    json!({"required": fields, "properties": properties})
}

/// The OpenAPI document as served: generated from the handlers, with the constraints the
/// server enforces on every request schema and parameter, the answers every operation can
/// give, and this deployment's currency and gateways.
pub fn document(settings: &DocSettings) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
    for (schema, property, constrained) in request_schemas(settings) {
        if let Some(slot) = doc.pointer_mut(&format!(
            "/components/schemas/{schema}/properties/{property}"
        )) {
            *slot = constrained;
        }
    }
    // Bodies that take exactly one of two forms: each form's fields present (not null), the
    // other form's absent or null.
    let forms: [(&str, &[&str], &[&str]); 4] = [
        (
            "UsageBody",
            &["amount"],
            &["model", "input_tokens", "output_tokens"],
        ),
        (
            "HoldBody",
            &["amount"],
            &["model", "max_input_tokens", "max_output_tokens"],
        ),
        (
            "CaptureBody",
            &["amount"],
            &["input_tokens", "output_tokens"],
        ),
        ("TopUpBody", &["amount"], &["pack_id"]),
    ];
    for (schema, first, second) in forms {
        if let Some(body) = doc.pointer_mut(&format!("/components/schemas/{schema}")) {
            body["oneOf"] = json!([one_form(first, second), one_form(second, first)]);
        }
    }
    for (schema, required) in [
        ("UsageBody", &["account_id"][..]),
        ("HoldBody", &["account_id"][..]),
        ("ExtendBody", &["expires_in_seconds"][..]),
        (
            "SpendingLimitFields",
            &["enabled", "monthly_limit", "action"][..],
        ),
        ("SpendingLimitBody", &["spending_limit"][..]),
        ("LowBalanceAlertFields", &["enabled", "threshold"][..]),
        ("LowBalanceAlertBody", &["low_balance_alert"][..]),
        ("AutoTopUpFields", &["enabled", "threshold", "amount"][..]),
        ("AutoTopUpBody", &["auto_topup"][..]),
    ] {
        if let Some(body) = doc.pointer_mut(&format!("/components/schemas/{schema}")) {
            body["required"] = json!(required);
        }
    }
    // An enabled limit or alert needs an amount; a disabled one may keep `null`.
    for (schema, field) in [
        ("SpendingLimitFields", "monthly_limit"),
        ("LowBalanceAlertFields", "threshold"),
    ] {
        if let Some(fields) = doc.pointer_mut(&format!("/components/schemas/{schema}")) {
            fields["oneOf"] = json!([
                {"properties": {"enabled": {"const": true}, field: {"not": {"type": "null"}}}},
                {"properties": {"enabled": {"const": false}}},
            ]);
        }
    }
    if let Some(fields) = doc.pointer_mut("/components/schemas/AutoTopUpFields") {
        fields["oneOf"] = json!([
            {"properties": {"enabled": {"const": true}, "threshold": {"not": {"type": "null"}}, "amount": {"not": {"type": "null"}}}},
            {"properties": {"enabled": {"const": false}}},
        ]);
    }
    let parameters = parameter_schemas();
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for item in paths.values_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for operation in item.values_mut() {
                let Some(operation) = operation.as_object_mut() else {
                    continue;
                };
                if let Some(params) = operation
                    .get_mut("parameters")
                    .and_then(Value::as_array_mut)
                {
                    for param in params {
                        let name = param["name"].as_str().unwrap_or_default().to_owned();
                        if let Some((_, schema)) = parameters.iter().find(|(n, _)| *n == name) {
                            param["schema"] = schema.clone();
                        }
                    }
                }
                let id = operation
                    .get("operationId")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                add_standard_responses(&id, operation);
            }
        }
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> DocSettings {
        DocSettings {
            currency: "KWD".into(),
            currency_exponent: 3,
            gateways: vec!["sandbox".into()],
            wallet_decimals: 2,
        }
    }

    #[test]
    fn every_constrained_property_exists() {
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("json");
        for (schema, property, _) in request_schemas(&settings()) {
            assert!(
                doc.pointer(&format!(
                    "/components/schemas/{schema}/properties/{property}"
                ))
                .is_some(),
                "{schema}.{property} is not in the generated document"
            );
        }
    }

    #[test]
    fn every_operation_documents_its_failures() {
        let doc = document(&settings());
        let paths = doc["paths"].as_object().expect("paths");
        assert!(paths.len() > 15);
        for (path, item) in paths {
            for (method, operation) in item.as_object().expect("item") {
                let responses = operation["responses"].as_object().expect("responses");
                if operation.get("security").is_some() {
                    for status in ["401", "429"] {
                        assert!(responses.contains_key(status), "{method} {path}: {status}");
                    }
                }
                if operation.get("requestBody").is_some() {
                    for status in ["400", "413", "415"] {
                        assert!(responses.contains_key(status), "{method} {path}: {status}");
                    }
                }
            }
        }
        assert_eq!(
            doc.pointer("/components/schemas/PackBody/properties/currency/enum"),
            Some(&json!(["KWD"]))
        );
        assert_eq!(
            doc.pointer("/components/schemas/TopUpBody/oneOf"),
            Some(&json!([
                {"required": ["amount"], "properties": {"amount": {"not": {"type": "null"}}, "pack_id": {"type": "null"}}},
                {"required": ["pack_id"], "properties": {"pack_id": {"not": {"type": "null"}}, "amount": {"type": "null"}}},
            ]))
        );
        assert_eq!(
            doc.pointer("/components/schemas/PackBody/properties/price/anyOf/0/multipleOf")
                .map(ToString::to_string),
            Some("0.001".to_owned())
        );
    }
}
