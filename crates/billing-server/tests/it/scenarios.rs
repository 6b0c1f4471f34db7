//! End-to-end scenarios, each run on SQLite and on PostgreSQL (see `main.rs`).

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

pub use crate::gateways::{
    myfatoorah_end_to_end, myfatoorah_reconciliation, stripe_auto_topup,
    stripe_auto_topup_needs_the_customer, stripe_checkout_end_to_end, stripe_reconciliation,
};
use crate::helpers::{
    ADMIN_KEY, Backend, SANDBOX_SECRET, dec, eventually, ledger_sum, now_secs, spawn,
};

fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().expect("object").keys().cloned().collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

/// Packs and custom amounts through the sandbox page; the bonus is its own entry; $500 is
/// "contact sales"; the seed documents' JSON shapes, field for field.
pub async fn top_up_through_the_sandbox(backend: Backend) {
    let Some(app) = spawn(backend, "topup", &[]).await else {
        return;
    };
    let ada = app.customer("ada").await;

    let (status, packs) = app.get("/api/billing/topup-packs", &ada.key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(keys(&packs), set(&["packs"]));
    let pro = packs["packs"]
        .as_array()
        .expect("packs")
        .iter()
        .find(|p| p["id"] == "pack_pro")
        .expect("pack_pro")
        .clone();
    assert_eq!(
        keys(&pro),
        set(&["id", "name", "price", "currency", "credits", "popular"])
    );
    assert_eq!(pro["price"].to_string(), "20.00");
    assert_eq!(pro["popular"], json!(true));

    let topup = app.top_up(&ada, json!({"pack_id": "pack_pro"})).await;
    for field in ["checkout_url", "amount", "currency"] {
        assert!(topup.get(field).is_some(), "{field} missing from {topup}");
    }
    assert_eq!(topup["amount"].to_string(), "20.00");
    assert_eq!(topup["status"], "pending");
    assert_eq!(app.balance(&ada).await, "0.00", "nothing before payment");
    let page = app
        .press(topup["checkout_url"].as_str().expect("url"), "paid")
        .await;
    assert!(page.contains("delivered and processed"), "{page}");
    assert_eq!(app.balance(&ada).await, "25.00");

    let custom = app.top_up(&ada, json!({"amount": 100.00})).await;
    assert_eq!(custom["bonus"].to_string(), "10.00");
    app.press(custom["checkout_url"].as_str().expect("url"), "paid")
        .await;
    assert_eq!(app.balance(&ada).await, "135.00");

    let (status, refused) = app
        .post("/v1/wallet/top-up", &ada.key, json!({"amount": 500}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused["error"]["code"], "contact_sales");

    let declined = app.top_up(&ada, json!({"amount": "25"})).await;
    app.press(declined["checkout_url"].as_str().expect("url"), "failed")
        .await;
    assert_eq!(app.balance(&ada).await, "135.00");

    let transactions = app.all_transactions(&ada).await;
    let kinds: Vec<&str> = transactions
        .iter()
        .map(|t| t["type"].as_str().expect("type"))
        .collect();
    assert_eq!(kinds, vec!["bonus", "topup", "topup"]);
    assert_eq!(transactions[0]["amount"].to_string(), "10.00");
    assert_eq!(transactions[0]["balance_after"].to_string(), "135.00");
    assert_eq!(
        keys(&transactions[0]),
        set(&[
            "id",
            "type",
            "amount",
            "balance_after",
            "created_at",
            "description"
        ])
    );
    assert_eq!(ledger_sum(&transactions), dec("135"));

    let (status, history) = app.get("/api/billing/topup-history", &ada.key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(keys(&history), set(&["data", "meta"]));
    assert_eq!(
        history["meta"],
        json!({"current_page": 1, "per_page": 20, "total": 3})
    );
    let statuses: Vec<&str> = history["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|t| t["status"].as_str().expect("status"))
        .collect();
    assert_eq!(statuses, vec!["failed", "completed", "completed"]);
    let item = &history["data"][2];
    assert_eq!(
        keys(item),
        set(&[
            "id",
            "pack_name",
            "credits",
            "amount_paid",
            "currency",
            "status",
            "origin",
            "created_at"
        ])
    );
    assert_eq!(item["origin"], "checkout");
    assert_eq!(item["pack_name"], "Pro Pack");
    assert_eq!(item["amount_paid"].to_string(), "20.00");
    let (status, page2) = app.get("/api/billing/topup-history?page=2", &ada.key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page2["data"], json!([]));
    assert_eq!(page2["meta"]["current_page"], 2);
}

/// The same webhook 50 times concurrently credits once; a forged or stale one changes
/// nothing; a lost one is completed by reconciliation.
pub async fn webhooks_credit_once_and_only_when_verified(backend: Backend) {
    // The sandbox's own delivery goes nowhere: this test delivers the notifications.
    let Some(app) = spawn(
        backend,
        "webhooks",
        &[("BILLING_SANDBOX_WEBHOOK_URL", "http://127.0.0.1:9")],
    )
    .await
    else {
        return;
    };
    let ada = app.customer("ada").await;
    let topup = app.top_up(&ada, json!({"pack_id": "pack_pro"})).await;
    let page = app
        .press(topup["checkout_url"].as_str().expect("url"), "paid")
        .await;
    assert!(page.contains("could not be delivered"), "{page}");
    assert_eq!(app.balance(&ada).await, "0.00");

    let now = now_secs();
    let (body, _) = app.sandbox_event(&topup, SANDBOX_SECRET, now);
    let forged = app.sandbox_event(&topup, "not-the-secret", now);
    let stale = app.sandbox_event(&topup, SANDBOX_SECRET, now - 400);
    let future = app.sandbox_event(&topup, SANDBOX_SECRET, now + 400);
    for (body, signature) in [forged, stale, future] {
        let (status, error) = app.deliver(body, &signature).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
        assert_eq!(error["error"]["code"], "invalid_signature");
    }
    let (status, _) = app.deliver(body.clone(), "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let mut tampered = body.clone();
    let signature = app.sandbox_event(&topup, SANDBOX_SECRET, now).1;
    tampered.extend_from_slice(b" ");
    assert_eq!(
        app.deliver(tampered, &signature).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(app.balance(&ada).await, "0.00");

    let mut deliveries = Vec::new();
    for _ in 0..50 {
        let (body, signature) = app.sandbox_event(&topup, SANDBOX_SECRET, now);
        let client = app.client.clone();
        let url = app.url("/webhooks/sandbox");
        deliveries.push(tokio::spawn(async move {
            let response = client
                .post(url)
                .header("content-type", "application/json")
                .header("sandbox-signature", signature)
                .body(body)
                .send()
                .await
                .expect("deliver");
            let status = response.status();
            let body: Value = response.json().await.expect("json");
            (
                status,
                body["outcome"].as_str().unwrap_or_default().to_owned(),
            )
        }));
    }
    let mut completed = 0;
    for delivery in deliveries {
        let (status, outcome) = delivery.await.expect("task");
        assert_eq!(status, StatusCode::OK);
        if outcome == "completed" {
            completed += 1;
        }
    }
    assert_eq!(completed, 1);
    assert_eq!(app.balance(&ada).await, "25.00");
    let transactions = app.all_transactions(&ada).await;
    assert_eq!(transactions.len(), 1);
}

/// A lost notification is completed by the reconciliation worker.
pub async fn reconciliation_completes_lost_webhooks(backend: Backend) {
    let Some(app) = spawn(
        backend,
        "reconcile",
        &[
            ("BILLING_SANDBOX_WEBHOOK_URL", "http://127.0.0.1:9"),
            ("BILLING_RECONCILE_AFTER_SECS", "0"),
            ("BILLING_RECONCILE_INTERVAL_SECS", "1"),
        ],
    )
    .await
    else {
        return;
    };
    let ada = app.customer("ada").await;
    let paid = app.top_up(&ada, json!({"amount": 10})).await;
    let declined = app.top_up(&ada, json!({"amount": 20})).await;
    app.press(paid["checkout_url"].as_str().expect("url"), "paid")
        .await;
    app.press(declined["checkout_url"].as_str().expect("url"), "failed")
        .await;
    let balance = eventually(&"10.00".to_owned(), || app.balance(&ada)).await;
    assert_eq!(balance, "10.00");
    let want: Vec<String> = vec!["failed".into(), "completed".into()];
    let statuses = eventually(&want, || async {
        let (_, history) = app.get("/api/billing/topup-history", &ada.key).await;
        history["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|t| t["status"].as_str().expect("status").to_owned())
            .collect::<Vec<String>>()
    })
    .await;
    assert_eq!(statuses, want);
}

/// 200 concurrent debits of 7 against 1,050: exactly 150 succeed, 50 get 402, balance 0.
pub async fn racing_usage_debits(backend: Backend) {
    let Some(app) = spawn(backend, "usage_race", &[]).await else {
        return;
    };
    let ada = app.customer("ada").await;
    let platform = app.platform_key(&ada.account_id).await;
    app.grant(&ada.account_id, "1050").await;
    let mut requests = Vec::new();
    for i in 0..200 {
        let client = app.client.clone();
        let url = app.url("/v1/usage");
        let platform = platform.clone();
        let account = ada.account_id.clone();
        requests.push(tokio::spawn(async move {
            let response = client
                .post(url)
                .bearer_auth(platform)
                .header("Idempotency-Key", format!("call-{i}"))
                .json(
                    &json!({"account_id": account, "amount": 7, "description": "API usage - chat"}),
                )
                .send()
                .await
                .expect("usage");
            let status = response.status();
            let body: Value = response.json().await.expect("json");
            (status, body)
        }));
    }
    let (mut created, mut refused) = (0, 0);
    for request in requests {
        let (status, body) = request.await.expect("task");
        match status {
            StatusCode::CREATED => created += 1,
            StatusCode::PAYMENT_REQUIRED => {
                assert_eq!(body["error"]["code"], "insufficient_funds");
                refused += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!((created, refused), (150, 50));
    assert_eq!(app.balance(&ada).await, "0.00");
    let transactions = app.all_transactions(&ada).await;
    assert_eq!(transactions.len(), 151);
    assert_eq!(ledger_sum(&transactions), dec("0"));
}

/// Usage is idempotent per key; replay answers the first result.
pub async fn usage_is_idempotent(backend: Backend) {
    let Some(app) = spawn(backend, "usage_idem", &[]).await else {
        return;
    };
    let ada = app.customer("ada").await;
    let platform = app.platform_key(&ada.account_id).await;
    app.grant(&ada.account_id, "1").await;
    let body = json!({"account_id": ada.account_id, "amount": 0.000150, "description": "API usage - tiny"});
    let call = |key: &'static str, body: Value| {
        let app = &app;
        let platform = platform.clone();
        async move {
            app.call(
                Method::POST,
                "/v1/usage",
                Some(&platform),
                Some(body),
                &[("Idempotency-Key", key)],
            )
            .await
        }
    };
    let (status, first) = call("k1", body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["amount"].to_string(), "-0.00015");
    assert_eq!(first["balance_after"].to_string(), "0.99985");
    let (status, replay) = call("k1", body.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(replay, first);
    let (status, conflict) = call(
        "k1",
        json!({"account_id": ada.account_id, "amount": 0.0002, "description": "API usage - tiny"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(conflict["error"]["code"], "idempotency_conflict");
    let (status, missing) = app.post("/v1/usage", &platform, body.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(missing["error"]["code"], "idempotency_key_required");
    assert_eq!(app.balance(&ada).await, "0.99985");
    // A customer key cannot debit, not even its own wallet.
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/usage",
            Some(&ada.key),
            Some(body),
            &[("Idempotency-Key", "k2")],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

/// Another account's key sees nothing of this one: 404 everywhere.
pub async fn accounts_are_isolated(backend: Backend) {
    let Some(app) = spawn(backend, "isolation", &[]).await else {
        return;
    };
    let ada = app.customer("ada").await;
    let bob = app.customer("bob").await;
    app.grant(&ada.account_id, "10").await;
    let topup = app.top_up(&ada, json!({"amount": 10})).await;
    let ada_txn = app.all_transactions(&ada).await[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let topup_id = topup["id"].as_str().expect("id");
    for path in [
        format!("/v1/wallet/top-ups/{topup_id}"),
        format!("/v1/wallet/transactions/{ada_txn}"),
        format!("/v1/wallet/transactions?starting_after={ada_txn}"),
    ] {
        let (status, body) = app.get(&path, &bob.key).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        let (status, _) = app.get(&path, &ada.key).await;
        assert_eq!(status, StatusCode::OK, "{path} for its owner");
    }
    assert_eq!(app.balance(&bob).await, "0.00");
    assert!(app.all_transactions(&bob).await.is_empty());
    let (_, history) = app.get("/api/billing/topup-history", &bob.key).await;
    assert_eq!(history["meta"]["total"], 0);
    for path in ["/v1/admin/accounts", "/v1/admin/packs"] {
        let (status, _) = app
            .post(
                path,
                &bob.key,
                json!({"name": "x", "email": "x@example.com"}),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
    }
    // Revoked keys and unknown keys are refused.
    let (status, _) = app.get("/v1/wallet/balance", "bk_customer_nope").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app
        .call(Method::GET, "/v1/wallet/balance", None, None, &[])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// Bad input gets its 4xx and writes nothing.
pub async fn bad_inputs_are_refused_and_write_nothing(backend: Backend) {
    let Some(app) = spawn(backend, "bad_inputs", &[]).await else {
        return;
    };
    let ada = app.customer("ada").await;
    let platform = app.platform_key(&ada.account_id).await;
    app.grant(&ada.account_id, "10").await;
    let huge = "9".repeat(40);
    let oversized = format!("{{\"amount\": 10, \"pad\": \"{}\"}}", "x".repeat(20_000));
    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        (
            "POST",
            "/v1/wallet/top-up",
            r#"{"amount": -10}"#.into(),
            400,
            "invalid_amount",
        ),
        (
            "POST",
            "/v1/wallet/top-up",
            r#"{"amount": 0}"#.into(),
            400,
            "invalid_amount",
        ),
        (
            "POST",
            "/v1/wallet/top-up",
            r#"{"amount": "abc"}"#.into(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/wallet/top-up",
            r#"{"amount": 10.001}"#.into(),
            400,
            "invalid_amount",
        ),
        (
            "POST",
            "/v1/wallet/top-up",
            format!(r#"{{"amount": {huge}}}"#),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/wallet/top-up",
            r#"{"amount": 1e-3}"#.into(),
            400,
            "invalid_amount",
        ),
        (
            "POST",
            "/v1/wallet/top-up",
            r#"{"amount": 1e3}"#.into(),
            422,
            "contact_sales",
        ),
        (
            "POST",
            "/v1/wallet/top-up",
            r#"{"amount": " 10"}"#.into(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/wallet/top-up",
            r#"{"amount": 10, "coupon": "x"}"#.into(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/wallet/top-up",
            r#"{"amount": 10"#.into(),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/v1/wallet/top-up",
            oversized,
            413,
            "payload_too_large",
        ),
        (
            "POST",
            "/v1/wallet/top-up",
            r#"{"pack_id": "pack_nope"}"#.into(),
            404,
            "pack_not_found",
        ),
        (
            "POST",
            "/v1/wallet/top-up",
            r#"{"amount": 10, "pack_id": "pack_pro"}"#.into(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/wallet/top-up",
            r#"{}"#.into(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/wallet/top-up",
            r#"{"amount": 4.99}"#.into(),
            422,
            "below_minimum",
        ),
        (
            "POST",
            "/v1/wallet/top-up",
            r#"{"amount": 10, "gateway": "paypal"}"#.into(),
            400,
            "unknown_gateway",
        ),
        (
            "GET",
            "/api/billing/topup-history?page=0",
            String::new(),
            400,
            "invalid_request",
        ),
        (
            "GET",
            "/api/billing/topup-history?page=abc",
            String::new(),
            400,
            "invalid_request",
        ),
        (
            "GET",
            "/api/billing/topup-history?page=-1",
            String::new(),
            400,
            "invalid_request",
        ),
        (
            "GET",
            "/v1/wallet/transactions?limit=0",
            String::new(),
            400,
            "invalid_request",
        ),
        (
            "GET",
            "/v1/wallet/transactions?limit=101",
            String::new(),
            400,
            "invalid_request",
        ),
        (
            "GET",
            "/v1/wallet/transactions?type=gift",
            String::new(),
            400,
            "invalid_request",
        ),
        (
            "GET",
            "/v1/wallet/transactions?sort=asc",
            String::new(),
            400,
            "invalid_request",
        ),
        ("GET", "/v1/nowhere", String::new(), 404, "not_found"),
    ];
    let usage = |amount: &str| {
        format!(
            r#"{{"account_id": "{}", "amount": {amount}, "description": "x"}}"#,
            ada.account_id
        )
    };
    let usage_cases: Vec<(String, u16, &str)> = vec![
        (usage("-1"), 400, "invalid_request"),
        (usage("0"), 400, "invalid_request"),
        (usage("0.0000000001"), 400, "invalid_request"),
        (usage(&huge), 400, "invalid_request"),
        (usage("\"seven\""), 400, "invalid_request"),
        (usage("10.000000001"), 402, "insufficient_funds"),
        (
            r#"{"account_id": "acct_nobody", "amount": 1, "description": "x"}"#.into(),
            404,
            "account_not_found",
        ),
        (
            format!(
                r#"{{"account_id": "{}", "description": "x"}}"#,
                ada.account_id
            ),
            400,
            "invalid_request",
        ),
    ];
    let send = |method: &str, path: &str, key: &str, body: String, idem: Option<String>| {
        let mut request = app
            .client
            .request(method.parse().expect("method"), app.url(path))
            .bearer_auth(key);
        if !body.is_empty() {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        if let Some(idem) = idem {
            request = request.header("Idempotency-Key", idem);
        }
        request.send()
    };
    for (method, path, body, status, code) in cases {
        let response = send(method, path, &ada.key, body.clone(), None)
            .await
            .expect("send");
        let got = response.status().as_u16();
        let json: Value = response.json().await.expect("json error body");
        assert_eq!(
            got,
            status,
            "{method} {path} {}: {json}",
            &body[..body.len().min(80)]
        );
        assert_eq!(json["error"]["code"], code, "{method} {path}: {json}");
        assert!(json["error"]["message"].is_string());
    }
    for (i, (body, status, code)) in usage_cases.into_iter().enumerate() {
        let response = send(
            "POST",
            "/v1/usage",
            &platform,
            body.clone(),
            Some(format!("bad-{i}")),
        )
        .await
        .expect("send");
        let got = response.status().as_u16();
        let json: Value = response.json().await.expect("json error body");
        assert_eq!(got, status, "{body}: {json}");
        assert_eq!(json["error"]["code"], code, "{body}: {json}");
    }
    // Nothing was written: the grant is the only transaction, no top-up exists.
    assert_eq!(app.balance(&ada).await, "10.00");
    assert_eq!(app.all_transactions(&ada).await.len(), 1);
    let (_, history) = app.get("/api/billing/topup-history", &ada.key).await;
    assert_eq!(history["meta"]["total"], 0);
}

/// Admin refunds and grants, packs management, key revocation, OpenAPI and health.
pub async fn admin_operations(backend: Backend) {
    let Some(app) = spawn(backend, "admin", &[]).await else {
        return;
    };
    let ada = app.customer("ada").await;
    let platform = app.platform_key(&ada.account_id).await;
    app.grant(&ada.account_id, "20").await;
    let (_, debit) = app
        .call(
            Method::POST,
            "/v1/usage",
            Some(&platform),
            Some(json!({"account_id": ada.account_id, "amount": 7, "description": "chat"})),
            &[("Idempotency-Key", "u1")],
        )
        .await;
    let usage_id = debit["id"].as_str().expect("id").to_owned();
    let refund_path = format!("/v1/admin/accounts/{}/refunds", ada.account_id);
    // Money-moving admin calls require a key: a retry after a dropped connection must
    // not credit twice.
    let grant_path = format!("/v1/admin/accounts/{}/grants", ada.account_id);
    for (path, body) in [
        (
            &refund_path,
            json!({"transaction_ids": [usage_id], "amount": 5}),
        ),
        (&grant_path, json!({"amount": 5})),
    ] {
        let (status, refused) = app.post(path, ADMIN_KEY, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
        assert_eq!(refused["error"]["code"], "idempotency_key_required");
    }
    assert_eq!(app.balance(&ada).await, "13.00");
    let refund_body = json!({"transaction_ids": [usage_id], "amount": 5});
    let (status, refund) = app
        .call(
            Method::POST,
            &refund_path,
            Some(ADMIN_KEY),
            Some(refund_body.clone()),
            &[("Idempotency-Key", "r1")],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{refund}");
    assert_eq!(refund["type"], "refund");
    let (status, retried) = app
        .call(
            Method::POST,
            &refund_path,
            Some(ADMIN_KEY),
            Some(refund_body),
            &[("Idempotency-Key", "r1")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(retried["id"], refund["id"]);
    let (status, too_much) = app
        .call(
            Method::POST,
            &refund_path,
            Some(ADMIN_KEY),
            Some(json!({"transaction_ids": [usage_id], "amount": 3})),
            &[("Idempotency-Key", "r2")],
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(too_much["error"]["code"], "refund_exceeds_refundable");
    assert_eq!(app.balance(&ada).await, "18.00");

    let (status, pack) = app
        .post(
            "/v1/admin/packs",
            ADMIN_KEY,
            json!({"id": "pack_mega", "name": "Mega Pack", "price": "100.00", "currency": "USD", "credits": 150}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{pack}");
    let (status, _) = app
        .post(
            "/v1/admin/packs",
            ADMIN_KEY,
            json!({"id": "pack_mega", "name": "Again", "price": 1, "currency": "USD", "credits": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = app
        .call(
            Method::DELETE,
            "/v1/admin/packs/pack_mega",
            Some(ADMIN_KEY),
            None,
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, packs) = app.get("/api/billing/topup-packs", &ada.key).await;
    assert!(!packs.to_string().contains("pack_mega"));
    let (status, _) = app
        .post(
            "/v1/wallet/top-up",
            &ada.key,
            json!({"pack_id": "pack_mega"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Revocation takes effect at once.
    let (_, key) = app
        .post(
            &format!("/v1/admin/accounts/{}/api-keys", ada.account_id),
            ADMIN_KEY,
            json!({"scope": "customer"}),
        )
        .await;
    let secret = key["key"].as_str().expect("key");
    assert_eq!(
        app.get("/v1/wallet/balance", secret).await.0,
        StatusCode::OK
    );
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/admin/api-keys/{}", key["id"].as_str().expect("id")),
            Some(ADMIN_KEY),
            None,
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        app.get("/v1/wallet/balance", secret).await.0,
        StatusCode::UNAUTHORIZED
    );

    let (status, health) = app.call(Method::GET, "/healthz", None, None, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["storage"], "ok");
    let (status, spec) = app
        .call(Method::GET, "/openapi.json", None, None, &[])
        .await;
    assert_eq!(status, StatusCode::OK);
    for path in [
        "/v1/wallet/balance",
        "/v1/wallet/top-up",
        "/v1/wallet/transactions",
        "/api/billing/topup-packs",
        "/api/billing/topup-history",
        "/v1/usage",
        "/webhooks/{gateway}",
    ] {
        assert!(
            spec["paths"].get(path).is_some(),
            "{path} missing from the spec"
        );
    }
    let docs = app
        .client
        .get(app.url("/docs/"))
        .send()
        .await
        .expect("docs");
    assert_eq!(docs.status(), StatusCode::OK);
}
