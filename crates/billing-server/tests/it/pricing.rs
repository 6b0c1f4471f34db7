//! The rate card and priced usage, over HTTP.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{ADMIN_KEY, Backend, TestApp, dec, spawn};

async fn priced(app: &TestApp, key: &str, body: Value, idem: &str) -> (StatusCode, Value) {
    app.call(
        Method::POST,
        "/v1/usage",
        Some(key),
        Some(body),
        &[("Idempotency-Key", idem)],
    )
    .await
}

/// Rates are managed by admins and listed to any key; a priced debit costs exactly
/// tokens × price / 10^6 rounded up to 10^-9, records its model, tokens and prices, and a
/// price change applies to requests after it only.
pub async fn rate_card_prices_usage(backend: Backend) {
    let dir = std::env::temp_dir().join(format!("billing-e2e-{}-rates", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join(format!("rates-{backend:?}.toml"));
    std::fs::write(
        &config,
        "[[rates]]\nmodel = \"assisters-chat-v1\"\ninput_per_million = \"0.50\"\noutput_per_million = \"1.50\"\n",
    )
    .expect("config");
    let Some(app) = spawn(
        backend,
        "rate_card",
        &[("BILLING_CONFIG", config.to_str().expect("utf-8"))],
    )
    .await
    else {
        return;
    };
    let ada = app.customer("ada").await;
    let platform = app.platform_key(&ada.account_id).await;
    app.grant(&ada.account_id, "10").await;

    // Seeded from the file; listed to any key.
    let (status, rates) = app.get("/v1/rates", &ada.key).await;
    assert_eq!(status, StatusCode::OK, "{rates}");
    assert_eq!(
        rates,
        json!({"rates": [{"model": "assisters-chat-v1", "input_per_million": 0.5, "output_per_million": 1.5, "currency": "USD"}]})
    );
    assert_eq!(rates["rates"][0]["input_per_million"].to_string(), "0.5");

    let (status, debit) = priced(
        &app,
        &platform,
        json!({"account_id": ada.account_id, "model": "assisters-chat-v1", "input_tokens": 1234, "output_tokens": 567}),
        "p-1",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{debit}");
    // 1234 × 0.50 / 10^6 + 567 × 1.50 / 10^6 = 0.000617 + 0.0008505
    assert_eq!(debit["amount"].to_string(), "-0.0014675");
    assert_eq!(debit["description"], "API usage - assisters-chat-v1");
    assert_eq!(
        debit["usage"],
        json!({"model": "assisters-chat-v1", "input_tokens": 1234, "output_tokens": 567,
               "input_per_million": 0.5, "output_per_million": 1.5})
    );
    // The same key with other tokens is a conflict; with the same, a replay.
    let (status, _) = priced(
        &app,
        &platform,
        json!({"account_id": ada.account_id, "model": "assisters-chat-v1", "input_tokens": 1235, "output_tokens": 567}),
        "p-1",
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, replay) = priced(
        &app,
        &platform,
        json!({"account_id": ada.account_id, "model": "assisters-chat-v1", "input_tokens": 1234, "output_tokens": 567}),
        "p-1",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(replay["id"], debit["id"]);

    // A price change applies after it; the first entry keeps its prices.
    let (status, rate) = app
        .call(
            Method::PUT,
            "/v1/admin/rates/assisters-chat-v1",
            Some(ADMIN_KEY),
            Some(json!({"input_per_million": "3", "output_per_million": 0.000000007})),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rate}");
    let (status, second) = priced(
        &app,
        &platform,
        json!({"account_id": ada.account_id, "model": "assisters-chat-v1", "input_tokens": 1, "output_tokens": 1, "description": "chat"}),
        "p-2",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    // 3 / 10^6 + 7×10^-9 / 10^6 = 0.000003000000007, rounded up to 0.000003001.
    assert_eq!(second["amount"].to_string(), "-0.000003001");
    assert_eq!(second["description"], "chat");
    let (_, first) = app
        .get(
            &format!(
                "/v1/wallet/transactions/{}",
                debit["id"].as_str().expect("id")
            ),
            &ada.key,
        )
        .await;
    assert_eq!(first["usage"]["input_per_million"].to_string(), "0.5");
    let balance = dec(&app.balance(&ada).await);
    assert_eq!(balance, dec("10") - dec("0.0014675") - dec("0.000003001"));

    // Refusals: unknown model, mixed forms, bad tokens; nothing written.
    for (body, status, code) in [
        (
            json!({"account_id": ada.account_id, "model": "nope", "input_tokens": 1, "output_tokens": 1}),
            422,
            "unknown_model",
        ),
        (
            json!({"account_id": ada.account_id, "model": "assisters-chat-v1", "input_tokens": 1}),
            400,
            "invalid_request",
        ),
        (
            json!({"account_id": ada.account_id, "amount": 1, "model": "assisters-chat-v1", "input_tokens": 1, "output_tokens": 1}),
            400,
            "invalid_request",
        ),
        (
            json!({"account_id": ada.account_id, "model": "assisters-chat-v1", "input_tokens": -1, "output_tokens": 1}),
            400,
            "invalid_request",
        ),
        (
            json!({"account_id": ada.account_id, "model": "assisters-chat-v1", "input_tokens": 1.5, "output_tokens": 1}),
            400,
            "invalid_request",
        ),
        (
            json!({"account_id": ada.account_id, "model": "assisters-chat-v1", "input_tokens": 1_000_000_001u64, "output_tokens": 1}),
            400,
            "invalid_request",
        ),
        (
            json!({"account_id": ada.account_id}),
            400,
            "invalid_request",
        ),
    ] {
        let (got, error) = priced(&app, &platform, body.clone(), "p-bad").await;
        assert_eq!(got.as_u16(), status, "{body}: {error}");
        assert_eq!(error["error"]["code"], code, "{body}");
    }
    assert_eq!(app.all_transactions(&ada).await.len(), 3);

    // Admin only; deleting makes the model unknown.
    let (status, _) = app
        .call(
            Method::PUT,
            "/v1/admin/rates/x",
            Some(&platform),
            Some(json!({"input_per_million": 1, "output_per_million": 1})),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for (price, status) in [("-1", 400), ("1000000", 400), ("0.0000000001", 400)] {
        let (got, _) = app
            .call(
                Method::PUT,
                "/v1/admin/rates/x",
                Some(ADMIN_KEY),
                Some(json!({"input_per_million": price, "output_per_million": 1})),
                &[],
            )
            .await;
        assert_eq!(got.as_u16(), status, "{price}");
    }
    let (status, _) = app
        .call(
            Method::DELETE,
            "/v1/admin/rates/assisters-chat-v1",
            Some(ADMIN_KEY),
            None,
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app
        .call(
            Method::DELETE,
            "/v1/admin/rates/assisters-chat-v1",
            Some(ADMIN_KEY),
            None,
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, rates) = app.get("/v1/rates", &ada.key).await;
    assert_eq!(rates, json!({"rates": []}));
    // A retry of a request that succeeded still replays it once the rate is gone.
    let (status, replay) = priced(
        &app,
        &platform,
        json!({"account_id": ada.account_id, "model": "assisters-chat-v1", "input_tokens": 1234, "output_tokens": 567}),
        "p-1",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{replay}");
    assert_eq!(replay["id"], debit["id"]);
    let (status, _) = priced(
        &app,
        &platform,
        json!({"account_id": ada.account_id, "model": "assisters-chat-v1", "input_tokens": 1, "output_tokens": 1}),
        "p-3",
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}
