//! `payment_status`: the GetPaymentStatus request and the mapping of its answers.

use std::time::Duration;

use billing_core::money::Money;
use billing_core::ports::{GatewayError, PaymentGateway, PaymentStatus};
use billing_myfatoorah::MyFatoorahGateway;
use billing_testkit::fake_myfatoorah::{FAKE_TOKEN, FakeMyFatoorah};

use crate::support::{checkout_request, config, gateway, invoice_id, money, topup};

/// A fake, the adapter, and a checkout made through it for `topup_000001` at `price` KWD.
async fn checked_out(price: &str) -> (FakeMyFatoorah, MyFatoorahGateway, u64, Money) {
    let fake = FakeMyFatoorah::start().await;
    let gateway = gateway(&fake);
    let price = money(price, "KWD");
    let checkout = gateway
        .create_checkout(&checkout_request("topup_000001", price))
        .await
        .expect("checkout");
    let id = invoice_id(&checkout.payment_ref);
    fake.clear_requests();
    (fake, gateway, id, price)
}

async fn status_of(
    gateway: &MyFatoorahGateway,
    id: u64,
    price: Money,
) -> Result<PaymentStatus, GatewayError> {
    gateway
        .payment_status(&topup("topup_000001", Some(&id.to_string()), price))
        .await
}

#[tokio::test]
async fn paid_is_paid_with_the_exact_amount() {
    let (fake, gateway, id, price) = checked_out("12.500").await;
    assert!(fake.mark_paid(id));
    let status = status_of(&gateway, id, price).await;
    assert_eq!(status, Ok(PaymentStatus::Paid { amount: price }));

    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/v2/GetPaymentStatus");
    assert_eq!(
        requests[0].header("authorization"),
        Some(format!("Bearer {FAKE_TOKEN}").as_str())
    );
    let body = requests[0].json().expect("JSON body");
    assert_eq!(body["Key"], id.to_string().as_str());
    assert_eq!(body["KeyType"], "InvoiceId");
}

#[tokio::test]
async fn a_new_invoice_is_pending() {
    let (_fake, gateway, id, price) = checked_out("5").await;
    assert_eq!(
        status_of(&gateway, id, price).await,
        Ok(PaymentStatus::Pending)
    );
}

#[tokio::test]
async fn a_failed_attempt_leaves_the_invoice_pending() {
    // MyFatoorah keeps an invoice pending after a declined card: the customer may retry.
    let (fake, gateway, id, price) = checked_out("5").await;
    assert!(fake.mark_failed(id));
    assert_eq!(
        status_of(&gateway, id, price).await,
        Ok(PaymentStatus::Pending)
    );
    // And a later successful attempt pays it.
    assert!(fake.mark_paid(id));
    assert_eq!(
        status_of(&gateway, id, price).await,
        Ok(PaymentStatus::Paid { amount: price })
    );
}

#[tokio::test]
async fn cancelled_and_expired_invoices_failed() {
    let (fake, gateway, id, price) = checked_out("5").await;
    assert!(fake.mark_cancelled(id));
    assert!(matches!(
        status_of(&gateway, id, price).await,
        Ok(PaymentStatus::Failed { .. })
    ));

    let second = fake.create_invoice("5.000", Some("topup_000001"));
    assert!(fake.mark_expired(second));
    assert!(matches!(
        status_of(&gateway, second, price).await,
        Ok(PaymentStatus::Failed { .. })
    ));
}

#[tokio::test]
async fn paid_with_another_amount_reports_that_amount() {
    // The core compares it with the top-up's price and credits nothing on a mismatch.
    let (fake, gateway, id, price) = checked_out("12.500").await;
    assert!(fake.mark_paid(id));
    assert!(fake.set_paid_amount(id, "10.000"));
    let status = status_of(&gateway, id, price).await;
    assert_eq!(
        status,
        Ok(PaymentStatus::Paid {
            amount: money("10", "KWD")
        })
    );
    assert_ne!(status, Ok(PaymentStatus::Paid { amount: price }));
}

#[tokio::test]
async fn paid_under_another_customer_reference_is_left_pending() {
    let (fake, gateway, id, price) = checked_out("12.500").await;
    assert!(fake.mark_paid(id));
    assert!(fake.set_customer_reference(id, Some("topup_999999")));
    assert_eq!(
        status_of(&gateway, id, price).await,
        Ok(PaymentStatus::Pending)
    );
    assert!(fake.set_customer_reference(id, None));
    assert_eq!(
        status_of(&gateway, id, price).await,
        Ok(PaymentStatus::Pending)
    );
}

#[tokio::test]
async fn cancelled_under_another_customer_reference_is_left_pending() {
    let (fake, gateway, id, price) = checked_out("12.500").await;
    assert!(fake.mark_cancelled(id));
    assert!(fake.set_customer_reference(id, Some("topup_999999")));
    assert_eq!(
        status_of(&gateway, id, price).await,
        Ok(PaymentStatus::Pending)
    );
}

#[tokio::test]
async fn an_amount_finer_than_the_currency_is_not_guessed() {
    let (fake, gateway, id, price) = checked_out("12.500").await;
    assert!(fake.mark_paid(id));
    assert!(fake.set_paid_amount(id, "12.5001"));
    let status = status_of(&gateway, id, price).await;
    assert!(
        matches!(status, Err(GatewayError::Transient(_))),
        "{status:?}"
    );
}

#[tokio::test]
async fn an_unknown_invoice_is_an_invalid_request() {
    let (_fake, gateway, _id, price) = checked_out("5").await;
    let status = status_of(&gateway, 1, price).await;
    assert!(
        matches!(status, Err(GatewayError::InvalidRequest(_))),
        "{status:?}"
    );
}

#[tokio::test]
async fn a_top_up_without_an_invoice_is_pending_without_asking() {
    let (fake, gateway, _id, price) = checked_out("5").await;
    let status = gateway
        .payment_status(&topup("topup_000001", None, price))
        .await;
    assert_eq!(status, Ok(PaymentStatus::Pending));
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn server_errors_are_transient() {
    let (fake, gateway, id, price) = checked_out("5").await;
    assert!(fake.mark_paid(id));
    fake.fail_next(2);
    for _ in 0..2 {
        let status = status_of(&gateway, id, price).await;
        assert!(
            matches!(status, Err(GatewayError::Transient(_))),
            "{status:?}"
        );
    }
    assert_eq!(
        status_of(&gateway, id, price).await,
        Ok(PaymentStatus::Paid { amount: price })
    );
}

#[tokio::test]
async fn a_timeout_is_transient() {
    let fake = FakeMyFatoorah::start().await;
    let price = money("5", "KWD");
    let id = fake.create_invoice("5.000", Some("topup_000001"));
    assert!(fake.mark_paid(id));
    fake.delay_next(1, Duration::from_secs(5));
    let mut config = config(&fake.base_url(), "KWD");
    config.timeout = Duration::from_millis(300);
    let gateway = MyFatoorahGateway::new(config).expect("valid configuration");
    let status = status_of(&gateway, id, price).await;
    assert!(
        matches!(status, Err(GatewayError::Transient(_))),
        "{status:?}"
    );
}
