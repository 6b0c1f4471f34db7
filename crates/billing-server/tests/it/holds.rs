//! Authorization holds over HTTP: racing holds, holds racing debits, the lifecycle, replays,
//! expiry and the available balance.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{ADMIN_KEY, Backend, TestApp, dec, ledger_sum, spawn};

async fn hold_call(
    app: &TestApp,
    key: &str,
    path: &str,
    body: Option<Value>,
    idem: &str,
) -> (StatusCode, Value) {
    app.call(
        Method::POST,
        path,
        Some(key),
        body,
        &[("Idempotency-Key", idem)],
    )
    .await
}

async fn available(app: &TestApp, key: &str) -> (String, String) {
    let (status, body) = app.get("/v1/wallet/balance", key).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (body["balance"].to_string(), body["available"].to_string())
}

/// 50 concurrent holds against a balance that covers 10: exactly 10 succeed. Then holds
/// and debits race for what is left: the available balance never goes below zero and the
/// ledger stays exact.
pub async fn racing_holds(backend: Backend) {
    let Some(app) = spawn(backend, "racing_holds", &[]).await else {
        return;
    };
    let ada = app.customer("ada").await;
    let platform = app.platform_key(&ada.account_id).await;
    app.grant(&ada.account_id, "100").await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (client, url, key, account) = (
            app.client.clone(),
            app.url("/v1/holds"),
            platform.clone(),
            ada.account_id.clone(),
        );
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(key)
                .header("Idempotency-Key", format!("race-{i}"))
                .json(&json!({"account_id": account, "amount": "10"}))
                .send()
                .await
                .expect("request")
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.expect("task"));
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        10,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 402).count(),
        40,
        "{statuses:?}"
    );
    assert_eq!(
        available(&app, &ada.key).await,
        ("100.00".into(), "0.00".into())
    );

    // Nothing is available: a debit is refused.
    let (status, refused) = app
        .call(
            Method::POST,
            "/v1/usage",
            Some(&platform),
            Some(json!({"account_id": ada.account_id, "amount": "0.01"})),
            &[("Idempotency-Key", "blocked")],
        )
        .await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{refused}");
    assert_eq!(refused["error"]["code"], "insufficient_funds");
}

/// Holds and debits racing on one wallet never take the available balance below zero.
pub async fn holds_race_debits(backend: Backend) {
    let Some(app) = spawn(backend, "holds_race_debits", &[]).await else {
        return;
    };
    let ada = app.customer("ada").await;
    let platform = app.platform_key(&ada.account_id).await;
    app.grant(&ada.account_id, "60").await;
    let mut tasks = Vec::new();
    for i in 0..60 {
        let (client, key, account, base) = (
            app.client.clone(),
            platform.clone(),
            ada.account_id.clone(),
            app.base.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let (path, body) = if i % 2 == 0 {
                ("/v1/holds", json!({"account_id": account, "amount": "2"}))
            } else {
                ("/v1/usage", json!({"account_id": account, "amount": "2"}))
            };
            client
                .post(format!("{base}{path}"))
                .bearer_auth(key)
                .header("Idempotency-Key", format!("mix-{i}"))
                .json(&body)
                .send()
                .await
                .expect("request")
                .status()
                .as_u16()
        }));
    }
    let mut ok = 0;
    for task in tasks {
        let status = task.await.expect("task");
        assert!([201, 402].contains(&status), "{status}");
        if status == 201 {
            ok += 1;
        }
    }
    assert_eq!(ok, 30, "60 available / 2 each");
    let (balance, available) = available(&app, &ada.key).await;
    assert_eq!(available, "0.00");
    let transactions = app.all_transactions(&ada).await;
    assert_eq!(ledger_sum(&transactions), dec(&balance));
}

/// Place, get, capture (partial, over, replay, after the end), release, extend, expiry;
/// priced holds; another account's key cannot see or touch a hold.
pub async fn hold_lifecycle(backend: Backend) {
    let dir = std::env::temp_dir().join(format!("billing-e2e-{}-holds", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join(format!("holds-{backend:?}.toml"));
    std::fs::write(
        &config,
        "[[rates]]\nmodel = \"chat\"\ninput_per_million = \"0.50\"\noutput_per_million = \"1.50\"\n",
    )
    .expect("config");
    let Some(app) = spawn(
        backend,
        "hold_lifecycle",
        &[
            ("BILLING_CONFIG", config.to_str().expect("utf-8")),
            ("BILLING_HOLD_EXPIRY_INTERVAL_SECS", "1"),
        ],
    )
    .await
    else {
        return;
    };
    let ada = app.customer("ada").await;
    let bob = app.customer("bob").await;
    let platform = app.platform_key(&ada.account_id).await;
    let bobs_platform = app.platform_key(&bob.account_id).await;
    app.grant(&ada.account_id, "10").await;

    let (status, hold) = hold_call(
        &app,
        &platform,
        "/v1/holds",
        Some(json!({"account_id": ada.account_id, "amount": 5})),
        "h-1",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    assert_eq!(hold["status"], "active");
    assert_eq!(hold["amount"].to_string(), "5.00");
    let id = hold["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("hold_"));
    assert_eq!(
        available(&app, &ada.key).await,
        ("10.00".into(), "5.00".into())
    );
    // Replay; conflict; another account's key sees nothing.
    let (status, replay) = hold_call(
        &app,
        &platform,
        "/v1/holds",
        Some(json!({"account_id": ada.account_id, "amount": 5})),
        "h-1",
    )
    .await;
    assert_eq!(
        (status, replay["id"].clone()),
        (StatusCode::OK, hold["id"].clone())
    );
    let (status, _) = hold_call(
        &app,
        &platform,
        "/v1/holds",
        Some(json!({"account_id": ada.account_id, "amount": 6})),
        "h-1",
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, got) = app.get(&format!("/v1/holds/{id}"), &bobs_platform).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{got}");
    assert_eq!(got["error"]["code"], "hold_not_found");
    let (status, _) = hold_call(
        &app,
        &bobs_platform,
        &format!("/v1/holds/{id}/release"),
        None,
        "steal",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, got) = app.get(&format!("/v1/holds/{id}"), &platform).await;
    assert_eq!(
        (status, got["status"].clone()),
        (StatusCode::OK, json!("active"))
    );

    // Over-capture refused; partial capture debits once, releases the rest; replays.
    let capture = format!("/v1/holds/{id}/capture");
    let (status, over) = hold_call(
        &app,
        &platform,
        &capture,
        Some(json!({"amount": "5.01"})),
        "c-0",
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{over}");
    assert_eq!(over["error"]["code"], "capture_exceeds_hold");
    let (status, captured) = hold_call(
        &app,
        &platform,
        &capture,
        Some(json!({"amount": "1.25"})),
        "c-1",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{captured}");
    assert_eq!(captured["hold"]["status"], "captured");
    assert_eq!(captured["hold"]["captured_amount"].to_string(), "1.25");
    assert_eq!(captured["transaction"]["type"], "usage");
    assert_eq!(captured["transaction"]["amount"].to_string(), "-1.25");
    assert_eq!(
        available(&app, &ada.key).await,
        ("8.75".into(), "8.75".into())
    );
    let (status, replayed) = hold_call(
        &app,
        &platform,
        &capture,
        Some(json!({"amount": "1.25"})),
        "c-1",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(replayed["transaction"]["id"], captured["transaction"]["id"]);
    for (path, body, key) in [
        (capture.clone(), Some(json!({"amount": "1"})), "c-2"),
        (format!("/v1/holds/{id}/release"), None, "r-1"),
        (
            format!("/v1/holds/{id}/extend"),
            Some(json!({"expires_in_seconds": 60})),
            "e-1",
        ),
    ] {
        let (status, body) = hold_call(&app, &platform, &path, body, key).await;
        assert_eq!(status, StatusCode::CONFLICT, "{path}: {body}");
        assert_eq!(body["error"]["code"], "hold_not_active");
    }
    let usage: Vec<Value> = app
        .all_transactions(&ada)
        .await
        .into_iter()
        .filter(|t| t["type"] == "usage")
        .collect();
    assert_eq!(usage.len(), 1);

    // Priced: the hold is the maximum's cost; the capture prices the actual tokens.
    let (status, priced) = hold_call(
        &app,
        &platform,
        "/v1/holds",
        Some(json!({"account_id": ada.account_id, "model": "chat", "max_input_tokens": 1000, "max_output_tokens": 4000})),
        "h-2",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{priced}");
    assert_eq!(priced["amount"].to_string(), "0.0065");
    assert_eq!(priced["model"], "chat");
    let priced_id = priced["id"].as_str().expect("id");
    let (status, settled) = hold_call(
        &app,
        &platform,
        &format!("/v1/holds/{priced_id}/capture"),
        Some(json!({"input_tokens": 1000, "output_tokens": 333})),
        "c-3",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{settled}");
    // 1000 × 0.50 / 10^6 + 333 × 1.50 / 10^6 = 0.0005 + 0.0004995
    assert_eq!(settled["transaction"]["amount"].to_string(), "-0.0009995");
    assert_eq!(settled["transaction"]["usage"]["output_tokens"], 333);

    // Release, extend with an increase, expiry.
    let (_, released) = hold_call(
        &app,
        &platform,
        "/v1/holds",
        Some(json!({"account_id": ada.account_id, "amount": 1})),
        "h-3",
    )
    .await;
    let released_id = released["id"].as_str().expect("id");
    let (status, body) = hold_call(
        &app,
        &platform,
        &format!("/v1/holds/{released_id}/release"),
        None,
        "r-2",
    )
    .await;
    assert_eq!(
        (status, body["status"].clone()),
        (StatusCode::OK, json!("released"))
    );
    let (_, short) = hold_call(
        &app,
        &platform,
        "/v1/holds",
        Some(json!({"account_id": ada.account_id, "amount": 1, "expires_in_seconds": 2})),
        "h-4",
    )
    .await;
    let short_id = short["id"].as_str().expect("id").to_owned();
    let (status, grown) = hold_call(
        &app,
        &platform,
        &format!("/v1/holds/{short_id}/extend"),
        Some(json!({"expires_in_seconds": 2, "amount": 2})),
        "e-2",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{grown}");
    assert_eq!(grown["amount"].to_string(), "2.00");
    let (status, too_big) = hold_call(
        &app,
        &platform,
        &format!("/v1/holds/{short_id}/extend"),
        Some(json!({"expires_in_seconds": 2, "amount": 100})),
        "e-3",
    )
    .await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{too_big}");
    let (_, before) = available(&app, &ada.key).await;
    tokio::time::sleep(std::time::Duration::from_millis(3200)).await;
    let (status, expired) = app.get(&format!("/v1/holds/{short_id}"), &platform).await;
    assert_eq!(
        (status, expired["status"].clone()),
        (StatusCode::OK, json!("expired"))
    );
    let (status, late) = hold_call(
        &app,
        &platform,
        &format!("/v1/holds/{short_id}/capture"),
        Some(json!({"amount": 1})),
        "c-4",
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{late}");
    let (balance, after) = available(&app, &ada.key).await;
    assert_eq!(dec(&after), dec(&before) + dec("2"));
    assert_eq!(after, balance);
    // Keys: customers may not hold; idempotency keys are required.
    let (status, _) = hold_call(
        &app,
        &ada.key,
        "/v1/holds",
        Some(json!({"account_id": ada.account_id, "amount": 1})),
        "x",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/holds",
            Some(ADMIN_KEY),
            Some(json!({"account_id": ada.account_id, "amount": 1})),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "idempotency_key_required");
}
