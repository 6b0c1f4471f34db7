//! Saved payment methods and off-session charges (for auto top-up).

use billing_core::ids::TopUpId;
use billing_core::ports::{GatewayError, PaymentGateway, PaymentStatus};
use billing_stripe::SavedPaymentMethod;

use crate::{created, harness, money};

#[tokio::test]
async fn a_paid_checkout_with_saving_gives_a_customer_and_a_payment_method() {
    let h = harness().await;
    let (_, checkout, _) = created(&h, "topup_first", money("25.00", "USD"), true).await;
    assert_eq!(
        h.gateway.saved_payment_method(&checkout.payment_ref).await,
        Ok(None),
        "nothing is saved before the customer pays"
    );
    h.fake.complete_paid(&checkout.payment_ref);
    let saved = h
        .gateway
        .saved_payment_method(&checkout.payment_ref)
        .await
        .expect("retrieved")
        .expect("saved");
    let session = h.fake.session(&checkout.payment_ref).expect("session");
    let intent = h
        .fake
        .payment_intent(session["payment_intent"].as_str().expect("intent"))
        .expect("intent stored");
    assert_eq!(Some(saved.customer.as_str()), session["customer"].as_str());
    assert_eq!(
        Some(saved.payment_method.as_str()),
        intent["payment_method"].as_str()
    );
    assert!(saved.customer.starts_with("cus_") && saved.payment_method.starts_with("pm_"));
}

#[tokio::test]
async fn a_checkout_without_saving_saves_nothing() {
    let h = harness().await;
    let (_, checkout, _) = created(&h, "topup_nosave", money("25.00", "USD"), false).await;
    h.fake.complete_paid(&checkout.payment_ref);
    assert_eq!(
        h.gateway.saved_payment_method(&checkout.payment_ref).await,
        Ok(None)
    );
}

#[tokio::test]
async fn an_off_session_charge_confirms_a_payment_intent_once_per_topup() {
    let h = harness().await;
    let saved = SavedPaymentMethod {
        customer: "cus_QXg1o8vcGmoR32".to_owned(),
        payment_method: "pm_1Pgc75B7WZ01zgkWlHVgdEGJ".to_owned(),
    };
    let topup_id = TopUpId::new("topup_auto");
    let id = h
        .gateway
        .charge_off_session(&saved, money("1.250", "KWD"), &topup_id)
        .await
        .expect("charged");
    assert!(id.starts_with("pi_"));

    let sent = h.fake.requests_to("POST", "/v1/payment_intents");
    assert_eq!(sent.len(), 1);
    let sent = &sent[0];
    assert_eq!(sent.idempotency_key(), Some("offsession-topup_auto"));
    for (key, value) in [
        ("amount", "1250"),
        ("currency", "kwd"),
        ("customer", "cus_QXg1o8vcGmoR32"),
        ("payment_method", "pm_1Pgc75B7WZ01zgkWlHVgdEGJ"),
        ("off_session", "true"),
        ("confirm", "true"),
        ("metadata[topup_id]", "topup_auto"),
    ] {
        assert_eq!(sent.param(key), Some(value), "{key}");
    }

    let again = h
        .gateway
        .charge_off_session(&saved, money("1.250", "KWD"), &topup_id)
        .await
        .expect("replayed");
    assert_eq!(again, id, "a retry is the same charge");

    // The PaymentIntent id works as the top-up's payment reference.
    let request = crate::checkout_request("topup_auto", money("1.250", "KWD"), false);
    let mut topup = crate::pending_topup(
        &request,
        &billing_core::ports::Checkout {
            payment_ref: id.clone(),
            checkout_url: String::new(),
        },
    );
    assert_eq!(
        h.gateway.payment_status(&topup).await,
        Ok(PaymentStatus::Paid {
            amount: money("1.250", "KWD")
        })
    );
    topup.id = TopUpId::new("topup_someone_else");
    assert!(matches!(
        h.gateway.payment_status(&topup).await,
        Err(GatewayError::InvalidRequest(_))
    ));
}

#[tokio::test]
async fn a_declined_off_session_charge_is_declined() {
    let h = harness().await;
    let saved = SavedPaymentMethod {
        customer: "cus_1".to_owned(),
        payment_method: "pm_1".to_owned(),
    };
    h.fake.decline_next_charge();
    let result = h
        .gateway
        .charge_off_session(
            &saved,
            money("10.00", "USD"),
            &TopUpId::new("topup_declined"),
        )
        .await;
    assert!(
        matches!(&result, Err(GatewayError::Declined(m)) if m.contains("card_declined")),
        "{result:?}"
    );
    h.fake.fail_next(1);
    let result = h
        .gateway
        .charge_off_session(&saved, money("10.00", "USD"), &TopUpId::new("topup_flaky"))
        .await;
    assert!(
        matches!(result, Err(GatewayError::Transient(_))),
        "{result:?}"
    );
}
