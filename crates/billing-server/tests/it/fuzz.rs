//! Property-based fuzzing of the running server (proptest on stable Rust, over real HTTP):
//! arbitrary amounts, arbitrary bytes and structurally mutated JSON bodies on every
//! money-moving and settings endpoint, arbitrary `Stripe-Signature`,
//! `MyFatoorah-Signature` and `Sandbox-Signature` headers with arbitrary or mutated webhook
//! payloads. The properties: the server never answers 5xx, every rejection is a 4xx with a
//! JSON `{"error": {"code"}}`, a webhook without a valid signature never succeeds, and the
//! balance is exactly the sum of the debits that were answered `201` (a refused request
//! wrote nothing). `BILLING_FUZZ_CASES` sets the cases per property (default 1,000).

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};

use crate::helpers::{ADMIN_KEY, Backend, Customer, dec, spawn};

const STRIPE_WEBHOOK_SECRET: &str = "whsec_fuzz_0123456789";
const MF_SECRET: &str = "bWZfZnV6el9zZWNyZXQ=";

fn cases() -> u32 {
    std::env::var("BILLING_FUZZ_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(1000)
}

/// One request to the server, answered.
struct Target {
    base: String,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl Target {
    fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<(u16, String), TestCaseError> {
        self.runtime.block_on(async {
            let mut request = self
                .client
                .request(method, format!("{}{path}", self.base))
                .header("content-type", "application/json")
                .body(body);
            for (name, value) in headers {
                request = request.header(*name, value);
            }
            let response = request
                .send()
                .await
                .map_err(|e| TestCaseError::fail(format!("no answer: {e}")))?;
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            Ok((status, text))
        })
    }
}

/// The property every answer has: no 5xx, and a 4xx carries a JSON error code.
fn well_formed(status: u16, text: &str, what: &str) -> Result<(), TestCaseError> {
    prop_assert!(status < 500, "{what}: answered {status}: {text}");
    if status >= 400 {
        let body: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        prop_assert!(
            body["error"]["code"].is_string(),
            "{what}: {status} without a JSON error code: {text}"
        );
    }
    Ok(())
}

/// Text that looks like an amount, and often is not: digits, signs, points, exponents,
/// spaces, sometimes very long.
fn amount_token() -> impl Strategy<Value = String> {
    let chars = prop::sample::select(vec![
        '0', '1', '2', '5', '9', '.', '-', '+', 'e', 'E', ' ', '_', ',',
    ]);
    prop_oneof![
        prop::collection::vec(chars, 0..40).prop_map(|c| c.into_iter().collect::<String>()),
        (1usize..400).prop_map(|n| "9".repeat(n)),
        (0u32..30, 0u64..1_000_000)
            .prop_map(|(places, n)| format!("0.{}{n}", "0".repeat(places as usize))),
        any::<f64>().prop_map(|f| f.to_string()),
        any::<i64>().prop_map(|i| i.to_string()),
    ]
}

/// The `amount` of a usage body: a raw JSON token (valid or not) or a JSON string.
fn amount_value() -> impl Strategy<Value = String> {
    prop_oneof![
        amount_token(),
        amount_token().prop_map(|t| Value::String(t).to_string()),
        any::<String>().prop_map(|s| Value::String(s).to_string()),
        Just("null".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        Just("true".to_owned()),
    ]
}

/// An arbitrary JSON leaf or small container.
fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        any::<String>().prop_map(Value::String),
        amount_token().prop_map(Value::String),
        Just(json!([])),
        Just(json!({})),
        Just(json!([1, "a", null])),
    ]
}

/// What to do to a valid body.
#[derive(Debug, Clone)]
enum Mutation {
    Remove(usize),
    Replace(usize, Value),
    Add(String, Value),
    Whole(Value),
    Bytes(Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (0usize..8).prop_map(Mutation::Remove),
        (0usize..8, json_leaf()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        (any::<String>(), json_leaf()).prop_map(|(k, v)| Mutation::Add(k, v)),
        json_leaf().prop_map(Mutation::Whole),
        prop::collection::vec(any::<u8>(), 0..300).prop_map(Mutation::Bytes),
    ]
}

fn mutate(valid: &Value, mutation: &Mutation) -> Vec<u8> {
    let mut body = valid.clone();
    let keys: Vec<String> = body
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let nth = |i: usize| keys.get(i % keys.len().max(1)).cloned().unwrap_or_default();
    match mutation {
        Mutation::Remove(i) => {
            if let Some(o) = body.as_object_mut() {
                o.remove(&nth(*i));
            }
        }
        Mutation::Replace(i, v) => {
            if let Some(o) = body.as_object_mut() {
                o.insert(nth(*i), v.clone());
            }
        }
        Mutation::Add(k, v) => {
            if let Some(o) = body.as_object_mut() {
                o.insert(k.clone(), v.clone());
            }
        }
        Mutation::Whole(v) => body = v.clone(),
        Mutation::Bytes(bytes) => return bytes.clone(),
    }
    serde_json::to_vec(&body).unwrap_or_default()
}

/// Printable ASCII (what an HTTP header value can carry).
fn header_text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(0x20u8..0x7f, 0..max)
        .prop_map(|b| b.into_iter().map(char::from).collect())
}

/// Signature headers near the real formats, and noise.
fn signature_header() -> impl Strategy<Value = String> {
    let hex = prop::collection::vec(prop::sample::select(b"0123456789abcdef".to_vec()), 0..70)
        .prop_map(|b| b.into_iter().map(char::from).collect::<String>());
    prop_oneof![
        header_text(200),
        (any::<i64>(), hex.clone()).prop_map(|(t, h)| format!("t={t},v1={h}")),
        (header_text(12), hex.clone(), hex.clone())
            .prop_map(|(t, a, b)| format!("t={t},v1={a},v0={b},v1={b}")),
        hex.prop_map(|h| format!("v1={h}")),
        header_text(60).prop_map(|s| format!("{s}==")),
        Just(String::new()),
        Just(",,,=,=,t=,v1=".to_owned()),
    ]
}

fn fixture(path: &str) -> Value {
    let text = std::fs::read_to_string(format!(
        "{}/../../fixtures/{path}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture");
    serde_json::from_str(&text).expect("fixture JSON")
}

pub async fn hostile_input_never_fails_the_server(backend: Backend) {
    let extra = [
        ("BILLING_STRIPE_SECRET_KEY", "sk_test_fuzz"),
        ("BILLING_STRIPE_WEBHOOK_SECRET", STRIPE_WEBHOOK_SECRET),
        ("BILLING_STRIPE_API_BASE", "http://127.0.0.1:9"),
        ("BILLING_MYFATOORAH_TOKEN", "mf_fuzz_token"),
        ("BILLING_MYFATOORAH_WEBHOOK_SECRET", MF_SECRET),
        ("BILLING_MYFATOORAH_API_BASE", "http://127.0.0.1:9"),
        ("BILLING_MYFATOORAH_CURRENCY", "USD"),
        ("BILLING_DEFAULT_GATEWAY", "sandbox"),
        // Every fuzz case is a request: no throttling of the fuzzer's keys.
        ("BILLING_AUTH_FAILURES_PER_MINUTE", "1000000"),
    ];
    let Some(app) = spawn(backend, "fuzz", &extra).await else {
        return;
    };
    let ada: Customer = app.customer("ada").await;
    let platform = app.platform_key(&ada.account_id).await;
    app.grant(&ada.account_id, "1000000").await;
    // The amounts property has a wallet of its own, so that its sums are exact.
    let bob: Customer = app.customer("bob").await;
    let bob_platform = app.platform_key(&bob.account_id).await;
    app.grant(&bob.account_id, "1000000").await;
    let bob_account = bob.account_id.clone();
    let base = app.url("");
    let account = ada.account_id.clone();
    let customer_key = ada.key.clone();
    let debited = tokio::task::spawn_blocking(move || {
        let target = Target {
            base,
            client: reqwest::Client::new(),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
        };
        let config = Config {
            cases: cases(),
            failure_persistence: None,
            ..Config::default()
        };
        let next_key = std::cell::Cell::new(0u64);
        let key = || {
            next_key.set(next_key.get() + 1);
            format!("fuzz-{}", next_key.get())
        };
        let post = reqwest::Method::POST;
        let put = reqwest::Method::PUT;

        // 1. Amounts: every answer is 201 or a 4xx; what was answered 201 is all that moved.
        let debited = std::cell::RefCell::new(billing_core::Decimal::ZERO);
        TestRunner::new(config.clone())
            .run(&amount_value(), |amount| {
                let body = format!(r#"{{"account_id": "{bob_account}", "amount": {amount}}}"#);
                let headers = [
                    ("authorization", format!("Bearer {bob_platform}")),
                    ("idempotency-key", key()),
                ];
                let (status, text) =
                    target.send(post.clone(), "/v1/usage", &headers, body.into_bytes())?;
                well_formed(status, &text, &format!("usage amount {amount}"))?;
                prop_assert!(
                    matches!(status, 201 | 400 | 402 | 422),
                    "usage amount {amount}: {status} {text}"
                );
                if status == 201 {
                    let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    let moved: billing_core::Decimal =
                        answer["amount"].to_string().parse().unwrap_or_default();
                    *debited.borrow_mut() += moved;
                }
                Ok(())
            })
            .expect("amounts");

        // 2. Arbitrary bytes and mutated bodies on every endpoint that takes one.
        let endpoints: Vec<(reqwest::Method, String, String, Value)> = vec![
            (post.clone(), "/v1/usage".into(), platform.clone(),
                json!({"account_id": account, "amount": "0.5", "description": "x"})),
            (post.clone(), "/v1/usage".into(), platform.clone(),
                json!({"account_id": account, "model": "assisters-chat-v1", "input_tokens": 10, "output_tokens": 5})),
            (post.clone(), "/v1/holds".into(), platform.clone(),
                json!({"account_id": account, "amount": "1", "expires_in_seconds": 60})),
            (post.clone(), "/v1/wallet/top-up".into(), customer_key.clone(),
                json!({"amount": "20", "gateway": "sandbox", "save_payment_method": false})),
            (put.clone(), "/v1/wallet/spending-limit".into(), customer_key.clone(),
                json!({"spending_limit": {"enabled": true, "monthly_limit": "500", "mode": "block"}})),
            (put.clone(), "/v1/wallet/low-balance-alert".into(), customer_key.clone(),
                json!({"low_balance_alert": {"enabled": true, "threshold": "10"}})),
            (put.clone(), "/v1/wallet/auto-top-up".into(), customer_key.clone(),
                json!({"auto_topup": {"enabled": false, "threshold": "5", "amount": "25"}})),
            (post.clone(), "/v1/admin/accounts".into(), ADMIN_KEY.into(),
                json!({"name": "Fuzz", "email": "fuzz@example.com"})),
            (post.clone(), format!("/v1/admin/accounts/{account}/grants"), ADMIN_KEY.into(),
                json!({"amount": "0.01", "description": "fuzz"})),
            (post.clone(), format!("/v1/admin/accounts/{account}/refunds"), ADMIN_KEY.into(),
                json!({"transaction_ids": ["txn_nope"], "amount": "1", "description": "fuzz"})),
            (post.clone(), format!("/v1/admin/accounts/{account}/api-keys"), ADMIN_KEY.into(),
                json!({"scope": "customer"})),
            (put.clone(), "/v1/admin/rates/fuzz-model".into(), ADMIN_KEY.into(),
                json!({"input_per_million": "1", "output_per_million": "2"})),
            (post.clone(), "/v1/admin/packs".into(), ADMIN_KEY.into(),
                json!({"name": "Fuzz", "price": "10", "credits": "10", "popular": false})),
        ];
        TestRunner::new(config.clone())
            .run(
                &(0..endpoints.len(), mutation()),
                |(which, mutation)| {
                    let (method, path, key_text, valid) = &endpoints[which];
                    let headers = [
                        ("authorization", format!("Bearer {key_text}")),
                        ("idempotency-key", key()),
                    ];
                    let (status, text) =
                        target.send(method.clone(), path, &headers, mutate(valid, &mutation))?;
                    well_formed(status, &text, &format!("{method} {path} {mutation:?}"))
                },
            )
            .expect("bodies");

        // 3. Webhooks: no signature that was not made with the secret is ever accepted.
        let stripe_event = fixture("stripe/event.json");
        let mf_event = fixture("myfatoorah/webhook_v2_payment_status_changed.json");
        let sandbox_event = json!({"id": "evt_test_1", "type": "payment.succeeded",
            "payment_ref": "sbx_1", "topup_id": "topup_1", "created": 1});
        let webhooks = [
            ("/webhooks/stripe", "stripe-signature", stripe_event),
            ("/webhooks/myfatoorah", "myfatoorah-signature", mf_event),
            ("/webhooks/sandbox", "sandbox-signature", sandbox_event),
        ];
        TestRunner::new(config)
            .run(
                &(0..webhooks.len(), signature_header(), mutation(), any::<bool>()),
                |(which, signature, mutation, with_header)| {
                    let (path, header, valid) = &webhooks[which];
                    let mut headers = Vec::new();
                    if with_header {
                        headers.push((*header, signature.clone()));
                    }
                    let (status, text) =
                        target.send(post.clone(), path, &headers, mutate(valid, &mutation))?;
                    well_formed(status, &text, &format!("{path} {signature:?}"))?;
                    prop_assert!(
                        (400..500).contains(&status),
                        "{path} with signature {signature:?} answered {status}: {text}"
                    );
                    Ok(())
                },
            )
            .expect("webhooks");
        debited.into_inner()
    })
    .await
    .expect("fuzzer");

    // On the amounts' wallet nothing moved but the debits answered 201; on the other, the
    // balance is still its ledger's sum.
    let transactions = app.all_transactions(&bob).await;
    let usage: billing_core::Decimal = transactions
        .iter()
        .filter(|t| t["type"] == "usage")
        .map(|t| dec(&t["amount"].to_string()))
        .sum();
    assert_eq!(usage, debited, "exactly the debits answered 201");
    assert_eq!(dec(&app.balance(&bob).await), dec("1000000") + debited);
    let others = app.all_transactions(&ada).await;
    let total: billing_core::Decimal = others.iter().map(|t| dec(&t["amount"].to_string())).sum();
    assert_eq!(dec(&app.balance(&ada).await), total);
    eprintln!(
        "fuzz: {} cases a property; {} debits of arbitrary amounts answered 201 (sum {debited}), \
         {} transactions from mutated bodies",
        cases(),
        transactions.len() - 1,
        others.len()
    );
}
