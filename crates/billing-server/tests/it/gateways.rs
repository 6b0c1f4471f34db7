//! End-to-end with the real gateways' adapters against the local gateway servers of
//! billing-testkit (real HTTP both ways, real signatures). Nothing here calls the internet.

use billing_testkit::fake_myfatoorah::{FakeMyFatoorah, WebhookVersion};
use billing_testkit::fake_stripe::{FakeStripe, deliver, sign_event};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Backend, Customer, TestApp, dec, eventually, now_secs, spawn};

const STRIPE_KEY: &str = "sk_test_e2e";
const STRIPE_WEBHOOK_SECRET: &str = "whsec_e2e";
const MF_TOKEN: &str = "mf_token_e2e";
const MF_SECRET: &str = "mf_webhook_secret_e2e";

async fn stripe_app(
    backend: Backend,
    name: &str,
    fake: &FakeStripe,
    extra: &[(&str, &str)],
) -> Option<TestApp> {
    let base = fake.base_url().to_owned();
    let mut env = vec![
        ("BILLING_DEFAULT_GATEWAY", "stripe"),
        ("BILLING_STRIPE_SECRET_KEY", STRIPE_KEY),
        ("BILLING_STRIPE_WEBHOOK_SECRET", STRIPE_WEBHOOK_SECRET),
        ("BILLING_STRIPE_API_BASE", base.as_str()),
    ];
    env.extend_from_slice(extra);
    spawn(backend, name, &env).await
}

fn session_of(fake: &FakeStripe, topup: &Value) -> String {
    fake.session_ids()
        .into_iter()
        .find(|id| {
            fake.session(id)
                .is_some_and(|s| s["client_reference_id"] == topup["id"])
        })
        .expect("a checkout session for the top-up")
}

async fn history_statuses(app: &TestApp, customer: &Customer) -> Vec<String> {
    let (_, history) = app.get("/api/billing/topup-history", &customer.key).await;
    history["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|t| t["status"].as_str().expect("status").to_owned())
        .collect()
}

/// Stripe: pack and custom amount credit once with the right bonus; 50 concurrent copies of
/// a webhook credit once; expired, async-failed and unpaid sessions credit nothing; bad and
/// stale signatures and a mismatched amount change nothing.
pub async fn stripe_checkout_end_to_end(backend: Backend) {
    let fake = FakeStripe::start(STRIPE_KEY).await.expect("fake Stripe");
    let Some(app) = stripe_app(backend, "stripe", &fake, &[]).await else {
        return;
    };
    let webhook = app.url("/webhooks/stripe");
    let ada = app.customer("ada").await;

    // The sandbox is off when a real gateway is the default.
    let (status, refused) = app
        .post(
            "/v1/wallet/top-up",
            &ada.key,
            json!({"amount": 10, "gateway": "sandbox"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert_eq!(refused["error"]["code"], "unknown_gateway");

    let pack = app.top_up(&ada, json!({"pack_id": "pack_pro"})).await;
    assert_eq!(pack["gateway"], "stripe");
    // Saving the card for off-session charges only when the customer agrees.
    let saved = app
        .top_up(&ada, json!({"amount": 5, "save_payment_method": true}))
        .await;
    let created = fake.requests_to("POST", "/v1/checkout/sessions");
    let form_of = |topup: &Value| {
        created
            .iter()
            .find(|r| r.param("client_reference_id") == topup["id"].as_str())
            .expect("a session request for the top-up")
            .clone()
    };
    let agreed = form_of(&saved);
    assert_eq!(
        agreed.param("payment_intent_data[setup_future_usage]"),
        Some("off_session")
    );
    assert_eq!(agreed.param("customer_creation"), Some("always"));
    assert_eq!(
        form_of(&pack).param("payment_intent_data[setup_future_usage]"),
        None
    );

    let session = session_of(&fake, &pack);
    assert_eq!(
        pack["checkout_url"],
        fake.session(&session).expect("session")["url"]
    );
    fake.complete_paid(&session);
    let now = now_secs();
    let mut deliveries = Vec::new();
    let event = fake.event(
        "checkout.session.completed",
        &session,
        STRIPE_WEBHOOK_SECRET,
        now,
    );
    for _ in 0..50 {
        let (url, event) = (webhook.clone(), event.clone());
        deliveries.push(tokio::spawn(async move { deliver(&url, &event).await }));
    }
    let mut completed = 0;
    for delivery in deliveries {
        let answer = delivery.await.expect("task").expect("delivered");
        assert_eq!(answer.status, 200, "{}", answer.body);
        if answer.body.contains("\"completed\"") {
            completed += 1;
        }
    }
    assert_eq!(completed, 1);
    assert_eq!(app.balance(&ada).await, "25.00");

    let custom = app.top_up(&ada, json!({"amount": "100.00"})).await;
    let session = session_of(&fake, &custom);
    fake.complete_paid(&session);
    // A different event for the same payment credits nothing more.
    for event_type in [
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
    ] {
        let answer = fake
            .deliver_event(&webhook, event_type, &session, STRIPE_WEBHOOK_SECRET, now)
            .await
            .expect("delivered");
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    assert_eq!(app.balance(&ada).await, "135.00");
    let transactions = app.all_transactions(&ada).await;
    let kinds: Vec<&str> = transactions
        .iter()
        .map(|t| t["type"].as_str().expect("type"))
        .collect();
    assert_eq!(kinds, ["bonus", "topup", "topup"]);
    assert_eq!(transactions[0]["amount"].to_string(), "10.00");

    // Expired, async-failed: failed in the history, nothing credited.
    let expired = app.top_up(&ada, json!({"amount": 10})).await;
    let session = session_of(&fake, &expired);
    fake.expire(&session);
    fake.deliver_event(
        &webhook,
        "checkout.session.expired",
        &session,
        STRIPE_WEBHOOK_SECRET,
        now,
    )
    .await
    .expect("delivered");
    let async_failed = app.top_up(&ada, json!({"amount": 11})).await;
    let session = session_of(&fake, &async_failed);
    fake.fail_async(&session);
    fake.deliver_event(
        &webhook,
        "checkout.session.async_payment_failed",
        &session,
        STRIPE_WEBHOOK_SECRET,
        now,
    )
    .await
    .expect("delivered");
    // Completed but unpaid (an async method still processing): stays pending.
    let unpaid = app.top_up(&ada, json!({"amount": 12})).await;
    let session = session_of(&fake, &unpaid);
    fake.complete_unpaid(&session);
    let answer = fake
        .deliver_event(
            &webhook,
            "checkout.session.completed",
            &session,
            STRIPE_WEBHOOK_SECRET,
            now,
        )
        .await
        .expect("delivered");
    assert!(answer.body.contains("\"pending\""), "{}", answer.body);
    assert_eq!(app.balance(&ada).await, "135.00");
    assert_eq!(
        history_statuses(&app, &ada).await,
        [
            "pending",
            "failed",
            "failed",
            "completed",
            "pending",
            "completed"
        ]
    );

    // Paid, but the webhook is forged, stale, tampered, or Stripe's amount differs.
    let target = app.top_up(&ada, json!({"amount": 13})).await;
    let session = session_of(&fake, &target);
    fake.complete_paid(&session);
    let forged = fake.event("checkout.session.completed", &session, "whsec_wrong", now);
    let stale = fake.event(
        "checkout.session.completed",
        &session,
        STRIPE_WEBHOOK_SECRET,
        now - 301,
    );
    let tampered = fake
        .event(
            "checkout.session.completed",
            &session,
            STRIPE_WEBHOOK_SECRET,
            now,
        )
        .tampered();
    for event in [forged, stale, tampered] {
        let answer = deliver(&webhook, &event).await.expect("delivered");
        assert_eq!(answer.status, 400, "{}", answer.body);
        assert!(answer.body.contains("invalid_signature"), "{}", answer.body);
    }
    fake.set_amount_total(&session, 100);
    let answer = fake
        .deliver_event(
            &webhook,
            "checkout.session.completed",
            &session,
            STRIPE_WEBHOOK_SECRET,
            now,
        )
        .await
        .expect("delivered");
    assert!(answer.body.contains("amount_mismatch"), "{}", answer.body);
    assert_eq!(app.balance(&ada).await, "135.00");
    let (_, topup) = app
        .get(
            &format!("/v1/wallet/top-ups/{}", target["id"].as_str().expect("id")),
            &ada.key,
        )
        .await;
    assert_eq!(topup["status"], "pending");

    // The customer's return is never trusted: it only triggers the status check.
    let page = app
        .client
        .get(app.url(&format!(
            "/checkout/return/stripe?topup={}&session_id={session}",
            target["id"].as_str().expect("id")
        )))
        .send()
        .await
        .expect("return page")
        .text()
        .await
        .expect("html");
    assert!(page.contains("Payment pending"), "{page}");
    assert_eq!(app.balance(&ada).await, "135.00");
}

/// Stripe: a webhook that never arrives is completed by reconciliation.
pub async fn stripe_reconciliation(backend: Backend) {
    let fake = FakeStripe::start(STRIPE_KEY).await.expect("fake Stripe");
    let Some(app) = stripe_app(
        backend,
        "stripe_reconcile",
        &fake,
        &[
            ("BILLING_RECONCILE_AFTER_SECS", "0"),
            ("BILLING_RECONCILE_INTERVAL_SECS", "1"),
        ],
    )
    .await
    else {
        return;
    };
    let ada = app.customer("ada").await;
    let paid = app.top_up(&ada, json!({"amount": 20})).await;
    let expired = app.top_up(&ada, json!({"amount": 30})).await;
    fake.complete_paid(&session_of(&fake, &paid));
    fake.expire(&session_of(&fake, &expired));
    let want: Vec<String> = vec!["failed".into(), "completed".into()];
    let statuses = eventually(&want, || history_statuses(&app, &ada)).await;
    assert_eq!(statuses, ["failed", "completed"]);
    assert_eq!(app.balance(&ada).await, "20.00");
}

fn myfatoorah_config(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("billing-e2e-mf-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("billing.toml");
    std::fs::write(
        &path,
        r#"
[wallet]
unit = "KWD"

[topup]
currency = "KWD"
minimum = "1"
contact_sales_from = "150"
bonus_tiers = [{ from = "15", percent = "5" }, { from = "30", percent = "10" }]

[[packs]]
id = "pack_pro"
name = "Pro Pack"
price = "6.000"
credits = "7.500"
popular = true
"#,
    )
    .expect("write config");
    path.to_str().expect("utf-8").to_owned()
}

async fn myfatoorah_app(
    backend: Backend,
    name: &str,
    fake: &FakeMyFatoorah,
    extra: &[(&str, &str)],
) -> Option<TestApp> {
    let base = fake.base_url();
    let config = myfatoorah_config(name);
    let mut env = vec![
        ("BILLING_CONFIG", config.as_str()),
        ("BILLING_DEFAULT_GATEWAY", "myfatoorah"),
        ("BILLING_MYFATOORAH_TOKEN", MF_TOKEN),
        ("BILLING_MYFATOORAH_WEBHOOK_SECRET", MF_SECRET),
        ("BILLING_MYFATOORAH_API_BASE", base.as_str()),
        ("BILLING_MYFATOORAH_CURRENCY", "KWD"),
    ];
    env.extend_from_slice(extra);
    spawn(backend, name, &env).await
}

fn invoice_of(fake: &FakeMyFatoorah, topup: &Value) -> u64 {
    fake.invoices()
        .into_iter()
        .find(|i| i.customer_reference.as_deref() == topup["id"].as_str())
        .expect("an invoice for the top-up")
        .id
}

/// MyFatoorah: KWD with 3 decimals; paid invoices credit once with the right bonus, V1 and
/// V2 webhooks; cancelled ones fail; forged, unpaid and mismatched ones change nothing; the
/// callback redirect only triggers the status check.
pub async fn myfatoorah_end_to_end(backend: Backend) {
    let fake = FakeMyFatoorah::start_with(MF_TOKEN, "KWD").await;
    let Some(app) = myfatoorah_app(backend, "myfatoorah", &fake, &[]).await else {
        return;
    };
    let webhook = app.url("/webhooks/myfatoorah");
    let ada = app.customer("ada").await;
    // MyFatoorah cannot save a card for auto top-up, and says so; nothing is written.
    let (status, err) = app
        .post(
            "/v1/wallet/top-up",
            &ada.key,
            json!({"pack_id": "pack_pro", "save_payment_method": true}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["code"], "payment_method_not_savable");
    assert!(
        err["error"]["message"]
            .as_str()
            .expect("message")
            .contains("myfatoorah")
    );
    let (_, history) = app.get("/api/billing/topup-history", &ada.key).await;
    assert_eq!(history["meta"]["total"], 0);

    let pack = app.top_up(&ada, json!({"pack_id": "pack_pro"})).await;
    assert_eq!(pack["amount"].to_string(), "6.000");
    assert_eq!(pack["currency"], "KWD");
    let invoice = invoice_of(&fake, &pack);
    assert_eq!(fake.invoice(invoice).expect("invoice").value, "6.000");
    assert_eq!(
        pack["checkout_url"],
        fake.invoice(invoice).expect("invoice").url
    );
    fake.mark_paid(invoice);
    let signed = fake
        .webhook(invoice, WebhookVersion::V2, MF_SECRET)
        .expect("webhook");
    let mut deliveries = Vec::new();
    for _ in 0..50 {
        let client = app.client.clone();
        let (url, signed) = (webhook.clone(), signed.clone());
        deliveries.push(tokio::spawn(async move {
            let mut request = client.post(url).body(signed.body.clone());
            for (name, value) in &signed.headers {
                request = request.header(name.as_str(), value.as_str());
            }
            let response = request.send().await.expect("deliver");
            let status = response.status();
            (status, response.text().await.expect("body"))
        }));
    }
    let mut completed = 0;
    for delivery in deliveries {
        let (status, body) = delivery.await.expect("task");
        assert_eq!(status, StatusCode::OK, "{body}");
        if body.contains("\"completed\"") {
            completed += 1;
        }
    }
    assert_eq!(completed, 1);
    assert_eq!(app.balance(&ada).await, "7.500");

    let custom = app.top_up(&ada, json!({"amount": "30.000"})).await;
    assert_eq!(custom["bonus"].to_string(), "3.000");
    let invoice = invoice_of(&fake, &custom);
    fake.mark_paid(invoice);
    let status = fake
        .deliver_webhook(&webhook, invoice, WebhookVersion::V1, MF_SECRET)
        .await
        .expect("delivered");
    assert_eq!(status, 200);
    assert_eq!(app.balance(&ada).await, "40.500");

    // Cancelled: failed, nothing credited.
    let cancelled = app.top_up(&ada, json!({"amount": 5})).await;
    let invoice = invoice_of(&fake, &cancelled);
    fake.mark_cancelled(invoice);
    fake.deliver_webhook(&webhook, invoice, WebhookVersion::V2, MF_SECRET)
        .await
        .expect("delivered");
    // Forged and tampered webhooks about a paid invoice are refused.
    let target = app.top_up(&ada, json!({"amount": 7})).await;
    let invoice = invoice_of(&fake, &target);
    fake.mark_paid(invoice);
    for forged in [
        fake.webhook(invoice, WebhookVersion::V2, "wrong-secret"),
        fake.tampered_webhook(invoice, WebhookVersion::V2, MF_SECRET),
        fake.tampered_webhook(invoice, WebhookVersion::V1, MF_SECRET),
        fake.webhook(invoice, WebhookVersion::V1, MF_SECRET)
            .map(|w| w.without_header("myfatoorah-signature")),
    ] {
        let status = fake
            .deliver(&webhook, &forged.expect("webhook"))
            .await
            .expect("delivered");
        assert_eq!(status, 400);
    }
    // The gateway says paid, but not the top-up's amount: nothing credited.
    fake.set_paid_amount(invoice, "0.700");
    fake.deliver_webhook(&webhook, invoice, WebhookVersion::V2, MF_SECRET)
        .await
        .expect("delivered");
    // A signed webhook about an invoice whose status check says unpaid: nothing credited.
    let unpaid = app.top_up(&ada, json!({"amount": 8})).await;
    let unpaid_invoice = invoice_of(&fake, &unpaid);
    fake.mark_failed(unpaid_invoice);
    fake.deliver_webhook(&webhook, unpaid_invoice, WebhookVersion::V1, MF_SECRET)
        .await
        .expect("delivered");
    assert_eq!(app.balance(&ada).await, "40.500");
    assert_eq!(
        history_statuses(&app, &ada).await,
        ["pending", "pending", "failed", "completed", "completed"]
    );

    // The callback redirect is not trusted: for a pending invoice nothing happens; once the
    // invoice is really paid, the same redirect's status check completes it.
    let redirect = app.top_up(&ada, json!({"amount": 9})).await;
    let invoice = invoice_of(&fake, &redirect);
    let return_url = app.url(&format!(
        "/checkout/return/myfatoorah?topup={}&paymentId=07076409988323998875&Id=07076409988323998875",
        redirect["id"].as_str().expect("id")
    ));
    let page = app
        .client
        .get(&return_url)
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    assert!(page.contains("Payment pending"), "{page}");
    assert_eq!(app.balance(&ada).await, "40.500");
    fake.mark_paid(invoice);
    let page = app
        .client
        .get(&return_url)
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    assert!(page.contains("Payment received"), "{page}");
    assert_eq!(app.balance(&ada).await, "49.500");
}

/// MyFatoorah: a webhook that never arrives is completed by reconciliation.
pub async fn myfatoorah_reconciliation(backend: Backend) {
    let fake = FakeMyFatoorah::start_with(MF_TOKEN, "KWD").await;
    let Some(app) = myfatoorah_app(
        backend,
        "mf_reconcile",
        &fake,
        &[
            ("BILLING_RECONCILE_AFTER_SECS", "0"),
            ("BILLING_RECONCILE_INTERVAL_SECS", "1"),
        ],
    )
    .await
    else {
        return;
    };
    let ada = app.customer("ada").await;
    let paid = app.top_up(&ada, json!({"amount": "2.250"})).await;
    fake.mark_paid(invoice_of(&fake, &paid));
    let balance = eventually(&"2.250".to_owned(), || app.balance(&ada)).await;
    assert_eq!(balance, "2.250");
    assert_eq!(history_statuses(&app, &ada).await, ["completed"]);
}

/// Auto top-up through Stripe: the card saved by a Checkout with `save_payment_method`,
/// 100 debits racing across the threshold make one off-session PaymentIntent at the local
/// Stripe server (under the top-up's idempotency key) and credit it; a decline fails the
/// next one, and its `payment_intent.payment_failed` webhook settles instead of erroring.
pub async fn stripe_auto_topup(backend: Backend) {
    let fake = FakeStripe::start(STRIPE_KEY).await.expect("fake Stripe");
    let Some(app) = stripe_app(
        backend,
        "stripe_auto_topup",
        &fake,
        &[("BILLING_OUTBOX_INTERVAL_MS", "100")],
    )
    .await
    else {
        return;
    };
    let webhook = app.url("/webhooks/stripe");
    let ada = app.customer("ada").await;
    let platform = app.platform_key(&ada.account_id).await;
    let saved = app
        .top_up(&ada, json!({"amount": 5, "save_payment_method": true}))
        .await;
    let session = session_of(&fake, &saved);
    fake.complete_paid(&session);
    let event = fake.event(
        "checkout.session.completed",
        &session,
        STRIPE_WEBHOOK_SECRET,
        now_secs(),
    );
    assert_eq!(
        deliver(&webhook, &event).await.expect("delivered").status,
        200
    );
    assert_eq!(app.balance(&ada).await, "5.00");
    let (status, method) = app.get("/v1/wallet/payment-method", &ada.key).await;
    assert_eq!(status, StatusCode::OK, "{method}");
    assert_eq!(method["payment_method"]["gateway"], "stripe");
    let (status, body) = app
        .call(
            reqwest::Method::PUT,
            "/v1/wallet/auto-top-up",
            Some(&ada.key),
            Some(json!({"auto_topup": {"enabled": true, "threshold": 5, "amount": 25}})),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (base, platform, account) =
                (app.base.clone(), platform.clone(), ada.account_id.clone());
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
    let balance = eventually(&"26.00".to_owned(), || app.balance(&ada)).await;
    assert_eq!(balance, "26.00", "5 - 4 + 25");
    let charges = fake.requests_to("POST", "/v1/payment_intents");
    assert_eq!(charges.len(), 1, "one charge at the Stripe server");
    let charge = &charges[0];
    assert_eq!(charge.param("off_session"), Some("true"));
    assert_eq!(charge.param("confirm"), Some("true"));
    assert_eq!(charge.param("amount"), Some("2500"));
    let topup_id = charge
        .param("metadata[topup_id]")
        .expect("topup id")
        .to_owned();
    assert!(topup_id.starts_with("topup_auto_"));
    assert_eq!(
        charge.idempotency_key(),
        Some(format!("offsession-{topup_id}").as_str())
    );

    // A decline fails the next auto top-up.
    fake.decline_next_charge();
    assert_eq!(
        app.usage(&platform, &ada.account_id, "22").await,
        StatusCode::CREATED
    );
    let statuses = eventually(
        &vec![
            "failed".to_owned(),
            "completed".to_owned(),
            "completed".to_owned(),
        ],
        || history_statuses(&app, &ada),
    )
    .await;
    assert_eq!(statuses, vec!["failed", "completed", "completed"]);
    assert_eq!(fake.requests_to("POST", "/v1/payment_intents").len(), 2);
    // Its webhook names the PaymentIntent: recorded, status-checked, settled (200).
    let declined_topup = {
        let (_, history) = app.get("/api/billing/topup-history", &ada.key).await;
        history["data"][0]["id"].as_str().expect("id").to_owned()
    };
    let declined = fake
        .payment_intent_ids()
        .into_iter()
        .filter_map(|id| fake.payment_intent(&id))
        .find(|pi| pi["metadata"]["topup_id"] == declined_topup.as_str())
        .expect("the declined PaymentIntent");
    let event = sign_event(
        "payment_intent.payment_failed",
        declined.clone(),
        &[STRIPE_WEBHOOK_SECRET],
        now_secs(),
    );
    let answer = deliver(&webhook, &event).await.expect("delivered");
    assert_eq!(answer.status, 200, "{}", answer.body);
    let (status, topup) = app
        .get(&format!("/v1/wallet/top-ups/{declined_topup}"), &ada.key)
        .await;
    assert_eq!(
        (status, &topup["status"]),
        (StatusCode::OK, &json!("failed"))
    );
    assert_eq!(
        app.balance(&ada).await,
        "4.00",
        "nothing credited for a decline"
    );
}

/// An off-session charge the bank wants the customer to confirm (`authentication_required`):
/// the auto top-up fails with that reason, and the customer is emailed a checkout link for
/// the same amount (one, however often the email is retried).
pub async fn stripe_auto_topup_needs_the_customer(backend: Backend) {
    let Some(smtp) = crate::notices::Smtp::start(&format!("stripe-auth-{backend:?}")) else {
        return;
    };
    let fake = FakeStripe::start(STRIPE_KEY).await.expect("fake Stripe");
    let smtp_url = smtp.url();
    let Some(app) = stripe_app(
        backend,
        "stripe_auto_topup_auth",
        &fake,
        &[
            ("BILLING_OUTBOX_INTERVAL_MS", "100"),
            ("BILLING_SMTP_URL", smtp_url.as_str()),
            ("BILLING_EMAIL_FROM", "billing@example.com"),
        ],
    )
    .await
    else {
        return;
    };
    let webhook = app.url("/webhooks/stripe");
    let ada = app.customer("ada").await;
    let platform = app.platform_key(&ada.account_id).await;
    let saved = app
        .top_up(&ada, json!({"amount": 5, "save_payment_method": true}))
        .await;
    let session = session_of(&fake, &saved);
    fake.complete_paid(&session);
    let event = fake.event(
        "checkout.session.completed",
        &session,
        STRIPE_WEBHOOK_SECRET,
        now_secs(),
    );
    assert_eq!(
        deliver(&webhook, &event).await.expect("delivered").status,
        200
    );
    let (status, body) = app
        .call(
            reqwest::Method::PUT,
            "/v1/wallet/auto-top-up",
            Some(&ada.key),
            Some(json!({"auto_topup": {"enabled": true, "threshold": 5, "amount": 25}})),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    fake.require_authentication_next_charge();
    assert_eq!(
        app.usage(&platform, &ada.account_id, "1").await,
        StatusCode::CREATED
    );
    let mut emails = Vec::new();
    for _ in 0..150 {
        emails = smtp.messages();
        if !emails.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert_eq!(smtp.messages().len(), 1, "{emails:#?}");
    let email = &emails[0];
    assert!(email.contains("confirm this payment"), "{email}");
    // The link is a Checkout Session at the (local) Stripe server, for the same 25.00.
    let (_, history) = app.get("/api/billing/topup-history", &ada.key).await;
    let data = history["data"].as_array().expect("data").clone();
    let auto = data
        .iter()
        .find(|t| t["origin"] == "auto_topup")
        .expect("auto top-up");
    assert_eq!(auto["status"], "failed");
    let (_, failed) = app
        .get(
            &format!("/v1/wallet/top-ups/{}", auto["id"].as_str().expect("id")),
            &ada.key,
        )
        .await;
    assert!(
        failed["failure_reason"]
            .as_str()
            .expect("reason")
            .contains("authentication_required"),
        "{failed}"
    );
    let checkouts: Vec<&Value> = data
        .iter()
        .filter(|t| t["origin"] == "checkout" && t["status"] == "pending")
        .collect();
    assert_eq!(
        checkouts.len(),
        1,
        "one checkout for the customer: {data:#?}"
    );
    let (_, checkout) = app
        .get(
            &format!(
                "/v1/wallet/top-ups/{}",
                checkouts[0]["id"].as_str().expect("id")
            ),
            &ada.key,
        )
        .await;
    assert_eq!(dec(&checkout["amount"].to_string()), dec("25"));
    let url = checkout["checkout_url"].as_str().expect("checkout url");
    // The body is quoted-printable: soft line breaks undone.
    let body = email
        .replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=");
    assert!(body.contains(url), "the email links {url}: {email}");
}
