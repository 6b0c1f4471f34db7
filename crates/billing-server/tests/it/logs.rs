//! Secrets never reach the logs: the real binary, logging at `debug`, through the usual
//! flows (keys, the sandbox, Stripe and MyFatoorah against their local servers, usage,
//! revocation, failed authentications); then no key, webhook secret or gateway token it
//! used appears in what it logged.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use billing_testkit::fake_myfatoorah::{FakeMyFatoorah, WebhookVersion};
use billing_testkit::fake_stripe::{FakeStripe, deliver};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{ADMIN_KEY, TestApp, now_secs};

const SANDBOX_SECRET: &str = "sandbox-secret-for-the-log-test-5d1e";
const STRIPE_KEY: &str = "sk_test_logtest_8f2a61c0";
const STRIPE_WEBHOOK_SECRET: &str = "whsec_logtest_77c1e9";
const MF_TOKEN: &str = "mf-token-logtest-3b9d";
const MF_SECRET: &str = "mf-webhook-secret-logtest-a41f";

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary on port 0; answers it and its base URL (read from its stdout).
fn start(env: &[(&str, &str)], log: &std::path::Path) -> (Server, String) {
    let stderr = std::fs::File::create(log).expect("log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_billing-server"))
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("start billing-server");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let base = loop {
        let line = lines
            .next()
            .expect("the server printed its address before exiting")
            .expect("stdout");
        if let Some(url) = billing_server::listening_base(&line) {
            break url;
        }
    };
    (Server(child), base)
}

pub async fn secrets_never_reach_the_logs() {
    let dir = std::env::temp_dir().join(format!("billing-e2e-{}-logs", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let db = dir.join("billing.db");
    let log = dir.join("server.log");
    let stripe = FakeStripe::start(STRIPE_KEY).await.expect("fake Stripe");
    let myfatoorah = FakeMyFatoorah::start_with(MF_TOKEN, "USD").await;
    let (stripe_base, mf_base) = (stripe.base_url().to_owned(), myfatoorah.base_url());
    let (server, base) = start(
        &[
            ("RUST_LOG", "debug"),
            ("BILLING_LISTEN", "127.0.0.1:0"),
            ("BILLING_DATABASE_URL", db.to_str().expect("utf-8")),
            ("BILLING_ADMIN_KEY", ADMIN_KEY),
            ("BILLING_DEFAULT_GATEWAY", "stripe"),
            ("BILLING_SANDBOX_ENABLED", "true"),
            ("BILLING_SANDBOX_SECRET", SANDBOX_SECRET),
            ("BILLING_STRIPE_SECRET_KEY", STRIPE_KEY),
            ("BILLING_STRIPE_WEBHOOK_SECRET", STRIPE_WEBHOOK_SECRET),
            ("BILLING_STRIPE_API_BASE", &stripe_base),
            ("BILLING_MYFATOORAH_TOKEN", MF_TOKEN),
            ("BILLING_MYFATOORAH_WEBHOOK_SECRET", MF_SECRET),
            ("BILLING_MYFATOORAH_API_BASE", &mf_base),
            ("BILLING_MYFATOORAH_CURRENCY", "USD"),
            ("BILLING_RECONCILE_INTERVAL_SECS", "1"),
            ("BILLING_RECONCILE_AFTER_SECS", "0"),
            ("BILLING_WORKERS", "2"),
        ],
        &log,
    );
    let app = TestApp::at(base, None);
    let ada = app.customer("ada").await;
    let platform = app.platform_key(&ada.account_id).await;
    let (status, service) = app
        .post(
            "/v1/admin/api-keys",
            ADMIN_KEY,
            json!({"scope": "platform", "expires_at": "2999-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let service = service["key"].as_str().expect("key").to_owned();
    let (status, _) = app.get("/v1/admin/api-keys", ADMIN_KEY).await;
    assert_eq!(status, StatusCode::OK);

    // The sandbox.
    let topup = app
        .top_up(&ada, json!({"amount": 100, "gateway": "sandbox"}))
        .await;
    app.press(topup["checkout_url"].as_str().expect("url"), "paid")
        .await;
    // Stripe.
    let topup = app.top_up(&ada, json!({"pack_id": "pack_pro"})).await;
    let session = stripe
        .session_ids()
        .into_iter()
        .find(|id| {
            stripe
                .session(id)
                .is_some_and(|s| s["client_reference_id"] == topup["id"])
        })
        .expect("session");
    stripe.complete_paid(&session);
    let event = stripe.event(
        "checkout.session.completed",
        &session,
        STRIPE_WEBHOOK_SECRET,
        now_secs(),
    );
    deliver(&app.url("/webhooks/stripe"), &event)
        .await
        .expect("delivered");
    // MyFatoorah.
    let topup = app
        .top_up(&ada, json!({"amount": 10, "gateway": "myfatoorah"}))
        .await;
    let invoice = myfatoorah
        .invoices()
        .into_iter()
        .find(|i| i.customer_reference.as_deref() == topup["id"].as_str())
        .expect("invoice")
        .id;
    myfatoorah.mark_paid(invoice);
    let status = myfatoorah
        .deliver_webhook(
            &app.url("/webhooks/myfatoorah"),
            invoice,
            WebhookVersion::V2,
            MF_SECRET,
        )
        .await
        .expect("delivered");
    assert_eq!(status, 200);
    // A forged webhook, usage, a wrong key, a revoked key.
    let event = stripe.event(
        "checkout.session.completed",
        &session,
        "whsec_wrong",
        now_secs(),
    );
    deliver(&app.url("/webhooks/stripe"), &event)
        .await
        .expect("delivered");
    for (key, idem) in [(&platform, "log-1"), (&service, "log-2")] {
        let (status, body) = app
            .call(
                Method::POST,
                "/v1/usage",
                Some(key),
                Some(json!({"account_id": ada.account_id, "amount": "0.5", "description": "x"})),
                &[("Idempotency-Key", idem)],
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let wrong = "bk_customer_0000aaaa1111bbbb2222cccc3333dddd4444eeee5555ffff6666aaaa7777bbbb";
    let (status, _) = app.get("/v1/wallet/balance", wrong).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, keys) = app
        .get(
            &format!("/v1/admin/accounts/{}/api-keys", ada.account_id),
            ADMIN_KEY,
        )
        .await;
    for key in keys["api_keys"].as_array().expect("keys") {
        let id = key["id"].as_str().expect("id");
        let (status, _) = app
            .call(
                Method::DELETE,
                &format!("/v1/admin/api-keys/{id}"),
                Some(ADMIN_KEY),
                None,
                &[],
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, _) = app.get("/v1/wallet/balance", &ada.key).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Let the reconciliation worker run at least once (it talks to both gateways).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(server);

    let logged = std::fs::read_to_string(&log).expect("log");
    assert!(
        logged.lines().filter(|l| l.contains("DEBUG")).count() > 10,
        "the server logged at debug level:\n{logged}"
    );
    assert!(logged.contains("api key issued"), "{logged}");
    let secrets: Vec<(&str, &str)> = vec![
        ("admin key", ADMIN_KEY),
        ("customer key", &ada.key),
        ("platform key", &platform),
        ("service key", &service),
        ("wrong key", wrong),
        ("sandbox secret", SANDBOX_SECRET),
        ("Stripe secret key", STRIPE_KEY),
        ("Stripe webhook secret", STRIPE_WEBHOOK_SECRET),
        ("MyFatoorah token", MF_TOKEN),
        ("MyFatoorah webhook secret", MF_SECRET),
    ];
    for (what, secret) in secrets {
        // The key's random part alone is a secret too (the prefix is logged by design).
        let random = secret.rsplit('_').next().unwrap_or(secret);
        for needle in [secret, random] {
            assert!(
                needle.len() < 8 || !logged.contains(needle),
                "the {what} appears in the logs:\n{}",
                logged
                    .lines()
                    .filter(|l| l.contains(needle))
                    .take(5)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
}
