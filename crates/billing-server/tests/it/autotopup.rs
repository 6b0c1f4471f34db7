//! Auto top-up end to end through the sandbox: a method saved at checkout, one charge
//! however many debits race across the threshold (in one process and across three on one
//! PostgreSQL), a declining card failing three times and turning it off, the monthly cap,
//! and removing the method.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{ADMIN_KEY, Backend, Customer, TestApp, dec, launch, spawn};
use crate::notices::Receiver;

async fn put_auto(app: &TestApp, customer: &Customer, body: Value) -> (StatusCode, Value) {
    app.call(
        Method::PUT,
        "/v1/wallet/auto-top-up",
        Some(&customer.key),
        Some(json!({ "auto_topup": body })),
        &[],
    )
    .await
}

/// A customer with 5 credits and a card saved at a sandbox checkout (`outcome`: `paid`, or
/// `paid_card_declines_later`).
async fn with_saved_card(app: &TestApp, name: &str, outcome: &str) -> Customer {
    let customer = app.customer(name).await;
    let topup = app
        .top_up(
            &customer,
            json!({"pack_id": "pack_starter", "save_payment_method": true}),
        )
        .await;
    let page = app
        .client
        .get(topup["checkout_url"].as_str().expect("url"))
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    assert!(
        page.contains("paid_card_declines_later"),
        "the sandbox offers a declining card"
    );
    let response = app
        .client
        .post(topup["checkout_url"].as_str().expect("url"))
        .form(&[("outcome", outcome)])
        .send()
        .await
        .expect("press");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(app.balance(&customer).await, "5.00");
    customer
}

async fn auto_topups(app: &TestApp, customer: &Customer) -> Vec<Value> {
    let (status, history) = app.get("/api/billing/topup-history", &customer.key).await;
    assert_eq!(status, StatusCode::OK, "{history}");
    history["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter(|t| t["origin"] == "auto_topup")
        .cloned()
        .collect()
}

/// Waits (up to 15 s) until `probe` holds.
async fn until(mut probe: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..150 {
        if probe().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn sandbox_charges(app: &TestApp) -> (u64, u64) {
    let (status, body) = app.get("/sandbox/charges", ADMIN_KEY).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (
        body["paid"].as_u64().expect("paid"),
        body["declined"].as_u64().expect("declined"),
    )
}

pub async fn auto_topup_charges_once(backend: Backend) {
    let receiver = Receiver::start(0);
    let Some(app) = spawn(
        backend,
        "auto_topup",
        &[
            ("BILLING_OUTBOX_INTERVAL_MS", "100"),
            ("BILLING_EVENTS_URL", receiver.url.as_str()),
            ("BILLING_EVENTS_SECRET", "whsec_events_e2e"),
        ],
    )
    .await
    else {
        return;
    };
    // Before anything: off, nothing saved; enabling needs a method.
    let bare = app.customer("bare").await;
    let (status, body) = app.get("/v1/wallet/auto-top-up", &bare.key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"auto_topup": {"enabled": false, "threshold": null, "amount": null,
            "monthly_cap": null, "payment_method": null, "disabled_reason": null}})
    );
    let (status, body) = app.get("/v1/wallet/payment-method", &bare.key).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::NOT_FOUND, &json!("no_payment_method"))
    );
    let (status, body) = put_auto(
        &app,
        &bare,
        json!({"enabled": true, "threshold": 5, "amount": 25}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "payment_method_required");

    // A card saved at checkout.
    let customer = with_saved_card(&app, "auto", "paid").await;
    let platform = app.platform_key(&customer.account_id).await;
    let (status, method) = app.get("/v1/wallet/payment-method", &customer.key).await;
    assert_eq!(status, StatusCode::OK, "{method}");
    assert_eq!(method["payment_method"]["gateway"], "sandbox");
    assert_eq!(method["payment_method"]["last4"], "4242");
    // Every field validated; nothing changes on a refusal.
    for (bad, code) in [
        (
            json!({"enabled": true, "threshold": 5, "amount": 1}),
            "below_minimum",
        ),
        (
            json!({"enabled": true, "threshold": 5, "amount": 600}),
            "contact_sales",
        ),
    ] {
        let (status, err) = put_auto(&app, &customer, bad.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad} -> {err}");
        assert_eq!(err["error"]["code"], code);
        let message = err["error"]["message"].as_str().unwrap_or("");
        assert!(message.starts_with("amount: "), "{message}");
    }
    for (bad, names) in [
        (
            json!({"enabled": true, "threshold": 5, "amount": "25.001"}),
            "amount",
        ),
        (
            json!({"enabled": true, "threshold": -1, "amount": 25}),
            "threshold",
        ),
        (
            json!({"enabled": true, "threshold": 5, "amount": 25, "monthly_cap": 0}),
            "monthly_cap",
        ),
        (
            json!({"enabled": true, "threshold": 5, "amount": null}),
            "amount",
        ),
        (json!({"enabled": true, "threshold": 5}), "amount"),
        (json!({"enabled": true, "amount": 25}), "threshold"),
        (
            json!({"enabled": 1, "threshold": 5, "amount": 25}),
            "enabled: ",
        ),
        (
            json!({"enabled": true, "threshold": 5, "amount": [25]}),
            "amount: ",
        ),
        (
            json!({"enabled": true, "threshold": 5, "amount": 25, "monthly_cap": false}),
            "monthly_cap: ",
        ),
        (
            json!({"enabled": true, "threshold": 5, "amount": 25, "cap": 1}),
            "cap",
        ),
    ] {
        let (status, err) = put_auto(&app, &customer, bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad} -> {err}");
        let message = err["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(names), "{bad}: {message}");
    }
    let (_, unchanged) = app.get("/v1/wallet/auto-top-up", &customer.key).await;
    assert_eq!(unchanged["auto_topup"]["enabled"], false);
    let (status, body) = put_auto(
        &app,
        &customer,
        json!({"enabled": true, "threshold": 5.00, "amount": 25.00}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["auto_topup"]["threshold"].to_string(), "5.00");
    assert_eq!(dec(&body["auto_topup"]["amount"].to_string()), dec("25"));
    assert_eq!(
        dec(&body["auto_topup"]["monthly_cap"].to_string()),
        dec("250"),
        "10 × amount"
    );
    assert_eq!(body["auto_topup"]["payment_method"]["last4"], "4242");
    let (_, stored) = app.get("/v1/wallet/auto-top-up", &customer.key).await;
    assert_eq!(stored, body, "GET shows what was stored");

    // 100 debits race across the threshold: one charge.
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (base, platform, account) = (
                app.base.clone(),
                platform.clone(),
                customer.account_id.clone(),
            );
            tokio::spawn(async move {
                TestApp::at(base, None)
                    .usage(&platform, &account, "0.04")
                    .await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("task"), StatusCode::CREATED);
    }
    assert!(
        until(async || app.balance(&customer).await == "26.00").await,
        "5 - 4 + 25: {}",
        app.balance(&customer).await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let autos = auto_topups(&app, &customer).await;
    assert_eq!(autos.len(), 1, "one charge: {autos:#?}");
    assert_eq!(autos[0]["status"], "completed");
    let (status, one) = app
        .get(
            &format!(
                "/v1/wallet/top-ups/{}",
                autos[0]["id"].as_str().expect("id")
            ),
            &customer.key,
        )
        .await;
    assert_eq!(
        (status, &one["origin"]),
        (StatusCode::OK, &json!("auto_topup"))
    );
    assert_eq!(
        sandbox_charges(&app).await,
        (1, 0),
        "counted at the sandbox"
    );
    assert!(
        until(async || !receiver.of_type("topup.completed").is_empty()).await,
        "topup.completed for the auto top-up"
    );

    // A declining card: each crossing charges and fails; the third failure turns it off.
    let declining = with_saved_card(&app, "declining", "paid_card_declines_later").await;
    let platform = app.platform_key(&declining.account_id).await;
    let (status, body) = put_auto(
        &app,
        &declining,
        json!({"enabled": true, "threshold": 5, "amount": 25}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for round in 1..=3 {
        assert_eq!(
            app.usage(&platform, &declining.account_id, "0.5").await,
            StatusCode::CREATED
        );
        assert!(
            until(async || {
                let autos = auto_topups(&app, &declining).await;
                autos.len() == round && autos.iter().all(|t| t["status"] == "failed")
            })
            .await,
            "round {round}: {:#?}",
            auto_topups(&app, &declining).await
        );
        let (_, auto) = app.get("/v1/wallet/auto-top-up", &declining.key).await;
        if round < 3 {
            assert_eq!(auto["auto_topup"]["enabled"], true, "round {round}");
            assert_eq!(auto["auto_topup"]["disabled_reason"], Value::Null);
        } else {
            assert_eq!(auto["auto_topup"]["enabled"], false);
            assert_eq!(auto["auto_topup"]["disabled_reason"], "payment_failed");
        }
    }
    let (status, failed) = app
        .get(
            &format!(
                "/v1/wallet/top-ups/{}",
                auto_topups(&app, &declining).await[0]["id"]
                    .as_str()
                    .expect("id")
            ),
            &declining.key,
        )
        .await;
    assert_eq!(
        (status, &failed["failure_reason"]),
        (StatusCode::OK, &json!("card_declined"))
    );
    assert_eq!(
        app.usage(&platform, &declining.account_id, "0.5").await,
        StatusCode::CREATED
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        auto_topups(&app, &declining).await.len(),
        3,
        "off: no fourth charge"
    );
    assert_eq!(sandbox_charges(&app).await, (1, 3));
    assert!(until(async || receiver.of_type("auto_topup.failed").len() == 3).await);
    assert!(until(async || receiver.of_type("auto_topup.disabled").len() == 1).await);
    assert_eq!(
        receiver.of_type("auto_topup.disabled")[0]["data"]["reason"],
        "payment_failed"
    );

    // The monthly cap: never a part of `amount`; paused, told once.
    let capped = with_saved_card(&app, "capped", "paid").await;
    let platform = app.platform_key(&capped.account_id).await;
    let (status, body) = put_auto(
        &app,
        &capped,
        json!({"enabled": true, "threshold": 5, "amount": 25, "monthly_cap": 25}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        app.usage(&platform, &capped.account_id, "1").await,
        StatusCode::CREATED
    );
    assert!(until(async || app.balance(&capped).await == "29.00").await);
    assert_eq!(
        app.usage(&platform, &capped.account_id, "26").await,
        StatusCode::CREATED
    );
    assert!(
        until(async || {
            let (_, auto) = app.get("/v1/wallet/auto-top-up", &capped.key).await;
            auto["auto_topup"]["disabled_reason"] == "monthly_cap_reached"
        })
        .await
    );
    assert_eq!(
        app.usage(&platform, &capped.account_id, "1").await,
        StatusCode::CREATED
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        auto_topups(&app, &capped).await.len(),
        1,
        "the cap stops the second charge"
    );
    let paused: Vec<Value> = receiver
        .of_type("auto_topup.disabled")
        .into_iter()
        .filter(|e| e["data"]["account_id"] == capped.account_id.as_str())
        .collect();
    assert_eq!(paused.len(), 1, "told once");
    assert_eq!(paused[0]["data"]["reason"], "monthly_cap_reached");

    // Removing the method turns auto top-up off.
    let (status, _) = app
        .call(
            Method::DELETE,
            "/v1/wallet/payment-method",
            Some(&capped.key),
            None,
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, auto) = app.get("/v1/wallet/auto-top-up", &capped.key).await;
    assert_eq!(auto["auto_topup"]["enabled"], false);
    assert_eq!(
        auto["auto_topup"]["disabled_reason"],
        "payment_method_removed"
    );
    assert_eq!(auto["auto_topup"]["payment_method"], Value::Null);
    let (status, _) = app.get("/v1/wallet/payment-method", &capped.key).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .call(
            Method::DELETE,
            "/v1/wallet/payment-method",
            Some(&capped.key),
            None,
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "a retried DELETE succeeds");
}

/// Three server processes on one PostgreSQL, debits racing across the threshold through
/// all of them: one charge, counted at the three sandboxes together.
pub async fn auto_topup_across_processes(backend: Backend) {
    let Some(url) = crate::helpers::database_url(backend, "auto_topup_processes") else {
        return;
    };
    // Killed when dropped, if an assertion fails first too.
    let mut children = Vec::new();
    let mut apps = Vec::new();
    for _ in 0..3 {
        let (child, base) = launch(&url);
        children.push(child);
        apps.push(TestApp::audited(base, &url));
    }
    let customer = with_saved_card(&apps[0], "multi", "paid").await;
    let platform = apps[0].platform_key(&customer.account_id).await;
    let (status, body) = put_auto(
        &apps[0],
        &customer,
        json!({"enabled": true, "threshold": 5, "amount": 25}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let tasks: Vec<_> = (0..90)
        .map(|i| {
            let (base, platform, account) = (
                apps[i % 3].base.clone(),
                platform.clone(),
                customer.account_id.clone(),
            );
            tokio::spawn(async move {
                TestApp::at(base, None)
                    .usage(&platform, &account, "0.04")
                    .await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("task"), StatusCode::CREATED);
    }
    let settled = until(async || apps[1].balance(&customer).await == "26.40").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut paid = 0;
    for app in &apps {
        paid += sandbox_charges(app).await.0;
    }
    let autos = auto_topups(&apps[2], &customer).await;
    drop(children);
    assert!(settled, "5 - 3.60 + 25");
    assert_eq!(autos.len(), 1, "{autos:#?}");
    assert_eq!(paid, 1, "one charge across three processes");
}
