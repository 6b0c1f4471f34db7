//! The monthly spending limit over HTTP.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{ADMIN_KEY, Backend, spawn};

/// GET before any PUT shows the defaults; every field is validated and a bad PUT changes
/// nothing; `block` with 90 of 100 spent lets exactly 2 of 50 racing debits of 5 through;
/// the refusal names the limit and the spend; holds count; `alert` lets debits pass.
pub async fn spending_limit_blocks_exactly(backend: Backend) {
    let Some(app) = spawn(backend, "spending_limit", &[]).await else {
        return;
    };
    let ada = app.customer("ada").await;
    let platform = app.platform_key(&ada.account_id).await;
    app.grant(&ada.account_id, "500").await;
    let (status, initial) = app.get("/v1/wallet/spending-limit", &ada.key).await;
    assert_eq!(status, StatusCode::OK, "{initial}");
    assert_eq!(
        initial["spending_limit"],
        json!({"enabled": false, "monthly_limit": null, "action": "block"})
    );
    assert_eq!(initial["month_to_date"]["spent"].to_string(), "0.00");
    let put = |body: Value| {
        app.call(
            Method::PUT,
            "/v1/wallet/spending-limit",
            Some(&ada.key),
            Some(body),
            &[],
        )
    };
    for bad in [
        json!({"spending_limit": {"enabled": true, "monthly_limit": null, "action": "block"}}),
        json!({"spending_limit": {"enabled": true, "monthly_limit": 0, "action": "block"}}),
        json!({"spending_limit": {"enabled": true, "monthly_limit": -5, "action": "block"}}),
        json!({"spending_limit": {"enabled": true, "monthly_limit": 10.001, "action": "block"}}),
        json!({"spending_limit": {"enabled": true, "monthly_limit": 100, "action": "stop"}}),
        json!({"spending_limit": {"enabled": true, "action": "block"}}),
        json!({"spending_limit": {"monthly_limit": 100, "action": "block"}}),
        json!({"spending_limit": {"enabled": true, "monthly_limit": 100, "action": "block", "x": 1}}),
        json!({"enabled": true, "monthly_limit": 100, "action": "block"}),
    ] {
        let (status, body) = put(bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    let (_, unchanged) = app.get("/v1/wallet/spending-limit", &ada.key).await;
    assert_eq!(unchanged["spending_limit"], initial["spending_limit"]);

    let (status, set) = put(
        json!({"spending_limit": {"enabled": true, "monthly_limit": 100.00, "action": "block"}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{set}");
    assert_eq!(set["spending_limit"]["enabled"], true);
    assert_eq!(set["spending_limit"]["action"], "block");
    assert_eq!(set["spending_limit"]["monthly_limit"].to_string(), "100.00");
    assert!(
        set["month_to_date"]["period_start"]
            .as_str()
            .expect("start")
            .ends_with("-01T00:00:00Z")
    );
    let debit = |amount: &'static str, key: String| {
        let (client, url, platform, account) = (
            app.client.clone(),
            app.url("/v1/usage"),
            platform.clone(),
            ada.account_id.clone(),
        );
        async move {
            let response = client
                .post(url)
                .bearer_auth(platform)
                .header("Idempotency-Key", key)
                .json(&json!({"account_id": account, "amount": amount}))
                .send()
                .await
                .expect("request");
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    assert_eq!(debit("90", "first".into()).await.0, 201);
    let mut tasks = Vec::new();
    for i in 0..50 {
        tasks.push(tokio::spawn(debit("5", format!("race-{i}"))));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("task"));
    }
    assert_eq!(results.iter().filter(|(s, _)| *s == 201).count(), 2);
    let refused: Vec<&Value> = results
        .iter()
        .filter(|(s, _)| *s == 402)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(refused.len(), 48);
    assert_eq!(refused[0]["error"]["code"], "spending_limit_exceeded");
    let message = refused[0]["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("100") && message.contains("spent"),
        "{message}"
    );
    let (_, now) = app.get("/v1/wallet/spending-limit", &ada.key).await;
    assert_eq!(now["month_to_date"]["spent"].to_string(), "100.00");
    assert_eq!(app.balance(&ada).await, "400.00");

    // Holds count toward the limit.
    let (status, hold) = app
        .call(
            Method::POST,
            "/v1/holds",
            Some(&platform),
            Some(json!({"account_id": ada.account_id, "amount": 1})),
            &[("Idempotency-Key", "hold-1")],
        )
        .await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{hold}");
    assert_eq!(hold["error"]["code"], "spending_limit_exceeded");

    // The admin sees and sets the same; `alert` lets debits pass.
    let path = format!("/v1/admin/accounts/{}/spending-limit", ada.account_id);
    let (status, admin_view) = app.get(&path, ADMIN_KEY).await;
    assert_eq!(
        (status, admin_view["spending_limit"].clone()),
        (StatusCode::OK, set["spending_limit"].clone())
    );
    let (status, _) = app.get(&path, &ada.key).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app
        .call(
            Method::PUT,
            &path,
            Some(ADMIN_KEY),
            Some(json!({"spending_limit": {"enabled": true, "monthly_limit": "100", "action": "alert"}})),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(debit("5", "after-alert".into()).await.0, 201);
    let (status, _) = app
        .get("/v1/admin/accounts/acct_nobody/spending-limit", ADMIN_KEY)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
