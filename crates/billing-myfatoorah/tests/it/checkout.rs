//! `create_checkout`: the SendPayment request the adapter sends, and how answers map.

use std::net::TcpListener;
use std::time::Duration;

use billing_core::ports::{GatewayError, PaymentGateway};
use billing_myfatoorah::MyFatoorahGateway;
use billing_testkit::fake_myfatoorah::{FAKE_TOKEN, FakeMyFatoorah};

use crate::support::{PUBLIC_URL, checkout_request, config, gateway, invoice_id, money};

#[tokio::test]
async fn sends_send_payment_with_the_exact_body_and_the_bearer_token() {
    let fake = FakeMyFatoorah::start().await;
    let gateway = gateway(&fake);
    gateway
        .create_checkout(&checkout_request("topup_000001", money("12.5", "KWD")))
        .await
        .expect("checkout");

    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/v2/SendPayment");
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {FAKE_TOKEN}").as_str())
    );
    assert!(
        request
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/json"))
    );
    // The amount is a JSON number with KWD's three decimals, digit for digit.
    let text = request.body_text();
    assert!(text.contains("\"InvoiceValue\":12.500"), "{text}");
    assert!(
        !text.contains("12.5,") && !text.contains("\"12.500\""),
        "{text}"
    );

    let body = request.json().expect("JSON body");
    let return_url = format!("{PUBLIC_URL}/checkout/return/myfatoorah?topup=topup_000001");
    assert_eq!(body["NotificationOption"], "LNK");
    assert_eq!(body["CustomerReference"], "topup_000001");
    assert_eq!(body["CallBackUrl"], return_url.as_str());
    assert_eq!(body["ErrorUrl"], return_url.as_str());
    assert_eq!(body["DisplayCurrencyIso"], "KWD");
    assert_eq!(body["CustomerEmail"], "customer@example.test");
    assert_eq!(body["CustomerName"], "customer@example.test");
    assert_eq!(body["InvoiceValue"].to_string(), "12.500");
    assert!(body.get("PaymentMethodId").is_none());
}

#[tokio::test]
async fn answers_the_invoice_id_and_its_url() {
    let fake = FakeMyFatoorah::start().await;
    let checkout = gateway(&fake)
        .create_checkout(&checkout_request("topup_000001", money("1.250", "KWD")))
        .await
        .expect("checkout");

    let invoice = fake
        .invoice(invoice_id(&checkout.payment_ref))
        .expect("the fake created the invoice");
    assert_eq!(checkout.checkout_url, invoice.url);
    assert_eq!(invoice.value, "1.250");
    assert_eq!(invoice.currency, "KWD");
    assert_eq!(invoice.customer_reference.as_deref(), Some("topup_000001"));
    assert_eq!(
        invoice.callback_url.as_deref(),
        Some("https://billing.example.test/checkout/return/myfatoorah?topup=topup_000001")
    );
}

#[tokio::test]
async fn two_decimal_currencies_keep_two_decimals() {
    let fake = FakeMyFatoorah::start_with(FAKE_TOKEN, "USD").await;
    let gateway =
        MyFatoorahGateway::new(config(&fake.base_url(), "USD")).expect("valid configuration");
    gateway
        .create_checkout(&checkout_request("topup_000002", money("25", "USD")))
        .await
        .expect("checkout");
    let text = fake.requests()[0].body_text();
    assert!(text.contains("\"InvoiceValue\":25.00"), "{text}");
    assert!(text.contains("\"DisplayCurrencyIso\":\"USD\""), "{text}");
}

#[tokio::test]
async fn refuses_another_currency_without_calling_myfatoorah() {
    let fake = FakeMyFatoorah::start().await;
    let result = gateway(&fake)
        .create_checkout(&checkout_request("topup_000001", money("10.00", "USD")))
        .await;
    assert!(
        matches!(result, Err(GatewayError::InvalidRequest(_))),
        "{result:?}"
    );
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn a_validation_error_is_an_invalid_request_with_the_api_message() {
    let fake = FakeMyFatoorah::start().await;
    let result = gateway(&fake)
        .create_checkout(&checkout_request("topup_000001", money("0", "KWD")))
        .await;
    match result {
        Err(GatewayError::InvalidRequest(message)) => {
            assert!(
                message.contains("Invoice value must be more than 0"),
                "{message}"
            );
        }
        other => panic!("expected InvalidRequest, got {other:?}"),
    }
    assert!(fake.invoices().is_empty());
}

#[tokio::test]
async fn a_wrong_token_is_unauthorized() {
    let fake = FakeMyFatoorah::start().await;
    let mut config = config(&fake.base_url(), "KWD");
    config.token = "not-the-token".to_owned();
    let gateway = MyFatoorahGateway::new(config).expect("valid configuration");
    let result = gateway
        .create_checkout(&checkout_request("topup_000001", money("5", "KWD")))
        .await;
    assert_eq!(
        result,
        Err(GatewayError::InvalidRequest("unauthorized".to_owned()))
    );
    assert_eq!(
        fake.requests()[0].header("authorization"),
        Some("Bearer not-the-token")
    );
}

#[tokio::test]
async fn a_server_error_is_transient_and_creates_nothing() {
    let fake = FakeMyFatoorah::start().await;
    fake.fail_next(1);
    let gateway = gateway(&fake);
    let result = gateway
        .create_checkout(&checkout_request("topup_000001", money("5", "KWD")))
        .await;
    assert!(
        matches!(result, Err(GatewayError::Transient(_))),
        "{result:?}"
    );
    assert!(fake.invoices().is_empty());
    // The next call goes through.
    assert!(
        gateway
            .create_checkout(&checkout_request("topup_000001", money("5", "KWD")))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_timeout_is_transient() {
    let fake = FakeMyFatoorah::start().await;
    fake.delay_next(1, Duration::from_secs(5));
    let mut config = config(&fake.base_url(), "KWD");
    config.timeout = Duration::from_millis(300);
    let gateway = MyFatoorahGateway::new(config).expect("valid configuration");
    let result = gateway
        .create_checkout(&checkout_request("topup_000001", money("5", "KWD")))
        .await;
    match result {
        Err(GatewayError::Transient(message)) => {
            assert!(message.contains("timed out"), "{message}")
        }
        other => panic!("expected Transient, got {other:?}"),
    }
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    };
    let gateway = MyFatoorahGateway::new(config(&format!("http://127.0.0.1:{port}"), "KWD"))
        .expect("valid configuration");
    let result = gateway
        .create_checkout(&checkout_request("topup_000001", money("5", "KWD")))
        .await;
    assert!(
        matches!(result, Err(GatewayError::Transient(_))),
        "{result:?}"
    );
}

#[test]
fn bad_configurations_are_refused() {
    use billing_myfatoorah::BuildGatewayError;
    let base = config("http://127.0.0.1:1", "KWD");
    let mut c = base.clone();
    c.api_base = "apitest.myfatoorah.com".to_owned();
    assert_eq!(
        MyFatoorahGateway::new(c).err(),
        Some(BuildGatewayError::ApiBase)
    );
    let mut c = base.clone();
    c.public_url = String::new();
    assert_eq!(
        MyFatoorahGateway::new(c).err(),
        Some(BuildGatewayError::PublicUrl)
    );
    let mut c = base.clone();
    c.token = " ".to_owned();
    assert_eq!(
        MyFatoorahGateway::new(c).err(),
        Some(BuildGatewayError::MissingToken)
    );
    let mut c = base.clone();
    c.webhook_secret = String::new();
    assert_eq!(
        MyFatoorahGateway::new(c).err(),
        Some(BuildGatewayError::MissingWebhookSecret)
    );
    let mut c = base;
    c.public_url = "https://billing.example.test/".to_owned();
    let gateway = MyFatoorahGateway::new(c).expect("a trailing slash is fine");
    assert_eq!(
        gateway.return_url("topup_1"),
        "https://billing.example.test/checkout/return/myfatoorah?topup=topup_1"
    );
    assert_eq!(gateway.name(), "myfatoorah");
}
