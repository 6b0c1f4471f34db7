//! What `create_checkout` sends to Stripe and what it answers.

use billing_core::ports::{GatewayError, PaymentGateway};
use billing_stripe::StripeGateway;

use crate::{WEBHOOK_SECRET, checkout_request, config, created, harness, money};

#[tokio::test]
async fn creates_a_payment_session_with_one_inline_priced_line_item() {
    let h = harness().await;
    let (_, checkout, _) = created(&h, "topup_000001", money("25.00", "USD"), false).await;

    let sent = h.fake.requests_to("POST", "/v1/checkout/sessions");
    assert_eq!(sent.len(), 1);
    let sent = &sent[0];
    assert_eq!(
        sent.header("authorization"),
        Some("Bearer sk_test_fake_0123456789")
    );
    assert_eq!(sent.idempotency_key(), Some("checkout-topup_000001"));
    for (key, value) in [
        ("mode", "payment"),
        ("line_items[0][price_data][currency]", "usd"),
        ("line_items[0][price_data][unit_amount]", "2500"),
        ("line_items[0][price_data][product_data][name]", "Pro Pack"),
        ("line_items[0][quantity]", "1"),
        ("client_reference_id", "topup_000001"),
        ("metadata[topup_id]", "topup_000001"),
        ("payment_intent_data[metadata][topup_id]", "topup_000001"),
        (
            "success_url",
            "https://billing.example.test/checkout/return/stripe?topup=topup_000001",
        ),
        (
            "cancel_url",
            "https://billing.example.test/checkout/return/stripe?topup=topup_000001&cancelled=1",
        ),
        ("customer_email", "ada@example.com"),
    ] {
        assert_eq!(sent.param(key), Some(value), "{key}");
    }
    assert!(!sent.has_param("line_items[1]"));
    assert!(!sent.has_param("customer_creation"));
    assert!(!sent.has_param("payment_intent_data[setup_future_usage]"));

    let session = h
        .fake
        .session(&checkout.payment_ref)
        .expect("session stored");
    assert!(checkout.payment_ref.starts_with("cs_test_"));
    assert_eq!(
        session["url"].as_str(),
        Some(checkout.checkout_url.as_str())
    );
    assert_eq!(session["amount_total"].as_i64(), Some(2500));
}

#[tokio::test]
async fn unit_amount_is_in_minor_units_of_each_currency() {
    let h = harness().await;
    for (i, (amount, currency, minor)) in [
        ("25.00", "USD", "2500"),
        ("0.05", "USD", "5"),
        ("500", "JPY", "500"),
        ("1.250", "KWD", "1250"),
        ("12.345", "KWD", "12345"),
    ]
    .into_iter()
    .enumerate()
    {
        h.fake.clear_requests();
        let topup = format!("topup_minor_{i}");
        created(&h, &topup, money(amount, currency), false).await;
        let sent = &h.fake.requests_to("POST", "/v1/checkout/sessions")[0];
        assert_eq!(
            sent.param("line_items[0][price_data][unit_amount]"),
            Some(minor),
            "{amount} {currency}"
        );
        assert_eq!(
            sent.param("line_items[0][price_data][currency]"),
            Some(currency.to_ascii_lowercase().as_str())
        );
    }
}

#[tokio::test]
async fn saving_the_payment_method_asks_for_a_customer_and_off_session_usage() {
    let h = harness().await;
    created(&h, "topup_save", money("10.00", "USD"), true).await;
    let sent = &h.fake.requests_to("POST", "/v1/checkout/sessions")[0];
    assert_eq!(sent.param("customer_creation"), Some("always"));
    assert_eq!(
        sent.param("payment_intent_data[setup_future_usage]"),
        Some("off_session")
    );
}

#[tokio::test]
async fn a_retry_for_the_same_topup_gets_the_same_session() {
    let h = harness().await;
    let (_, first, _) = created(&h, "topup_retry", money("10.00", "USD"), false).await;
    let (_, second, _) = created(&h, "topup_retry", money("10.00", "USD"), false).await;
    assert_eq!(first, second);
    assert_eq!(h.fake.session_ids().len(), 1);
    let sent = h.fake.requests_to("POST", "/v1/checkout/sessions");
    assert_eq!(sent.len(), 2);
    assert!(
        sent.iter()
            .all(|r| r.idempotency_key() == Some("checkout-topup_retry"))
    );
}

#[tokio::test]
async fn server_errors_are_transient() {
    let h = harness().await;
    h.fake.fail_next(1);
    let result = h
        .gateway
        .create_checkout(&checkout_request("topup_500", money("10.00", "USD"), false))
        .await;
    assert!(
        matches!(result, Err(GatewayError::Transient(_))),
        "{result:?}"
    );
    // The next call goes through: the failure was not remembered under the key.
    let retry = h
        .gateway
        .create_checkout(&checkout_request("topup_500", money("10.00", "USD"), false))
        .await;
    assert!(retry.is_ok(), "{retry:?}");
}

#[tokio::test]
async fn a_wrong_api_key_is_an_invalid_request() {
    let h = harness().await;
    let mut wrong = config(h.fake.base_url(), &[WEBHOOK_SECRET]);
    wrong.secret_key = "sk_test_wrong".to_owned();
    let gateway = StripeGateway::new(wrong).expect("valid config");
    let result = gateway
        .create_checkout(&checkout_request("topup_401", money("10.00", "USD"), false))
        .await;
    assert!(
        matches!(result, Err(GatewayError::InvalidRequest(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn an_unreachable_stripe_is_transient() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let gateway = StripeGateway::new(config(
        &format!("http://127.0.0.1:{port}"),
        &[WEBHOOK_SECRET],
    ))
    .expect("valid config");
    let result = gateway
        .create_checkout(&checkout_request(
            "topup_down",
            money("10.00", "USD"),
            false,
        ))
        .await;
    assert!(
        matches!(result, Err(GatewayError::Transient(_))),
        "{result:?}"
    );
}

#[test]
fn configuration_is_checked() {
    assert!(StripeGateway::new(config("http://127.0.0.1:1", &[])).is_err());
    assert!(StripeGateway::new(config("http://127.0.0.1:1", &[""])).is_err());
    assert!(StripeGateway::new(config("ftp://127.0.0.1:1", &[WEBHOOK_SECRET])).is_err());
    let mut no_key = config("http://127.0.0.1:1", &[WEBHOOK_SECRET]);
    no_key.secret_key = String::new();
    assert!(StripeGateway::new(no_key).is_err());
    let shown = format!("{:?}", config("http://127.0.0.1:1", &[WEBHOOK_SECRET]));
    assert!(
        !shown.contains("sk_test") && !shown.contains("whsec"),
        "{shown}"
    );
}
