//! `payment_status`: what Stripe says now, server to server.

use billing_core::ids::TopUpId;
use billing_core::ports::{GatewayError, PaymentGateway, PaymentStatus};
use serde_json::json;

use crate::{created, harness, money};

#[tokio::test]
async fn an_open_session_is_pending() {
    let h = harness().await;
    let (_, _, topup) = created(&h, "topup_open", money("25.00", "USD"), false).await;
    assert_eq!(
        h.gateway.payment_status(&topup).await,
        Ok(PaymentStatus::Pending)
    );
    let retrieved = h.fake.requests_to(
        "GET",
        &format!(
            "/v1/checkout/sessions/{}",
            topup.payment_ref.as_deref().unwrap_or("")
        ),
    );
    assert_eq!(retrieved.len(), 1);
}

#[tokio::test]
async fn a_paid_session_is_paid_with_the_amount_stripe_collected() {
    let h = harness().await;
    for (i, (amount, currency)) in [("25.00", "USD"), ("500", "JPY"), ("1.250", "KWD")]
        .into_iter()
        .enumerate()
    {
        let (_, checkout, topup) = created(
            &h,
            &format!("topup_paid_{i}"),
            money(amount, currency),
            false,
        )
        .await;
        h.fake.complete_paid(&checkout.payment_ref);
        assert_eq!(
            h.gateway.payment_status(&topup).await,
            Ok(PaymentStatus::Paid {
                amount: money(amount, currency)
            }),
            "{amount} {currency}"
        );
    }
}

#[tokio::test]
async fn an_expired_session_failed() {
    let h = harness().await;
    let (_, checkout, topup) = created(&h, "topup_expired", money("25.00", "USD"), false).await;
    h.fake.expire(&checkout.payment_ref);
    assert_eq!(
        h.gateway.payment_status(&topup).await,
        Ok(PaymentStatus::Failed {
            reason: "expired".to_owned()
        })
    );
}

#[tokio::test]
async fn a_delayed_payment_is_pending_until_it_succeeds_or_fails() {
    let h = harness().await;
    let (_, checkout, topup) = created(&h, "topup_async", money("25.00", "USD"), false).await;
    h.fake.complete_unpaid(&checkout.payment_ref);
    assert_eq!(
        h.gateway.payment_status(&topup).await,
        Ok(PaymentStatus::Pending)
    );
    let intent = h.fake.session(&checkout.payment_ref).expect("session")["payment_intent"]
        .as_str()
        .expect("intent id")
        .to_owned();
    assert_eq!(
        h.fake
            .requests_to("GET", &format!("/v1/payment_intents/{intent}"))
            .len(),
        1
    );

    h.fake.fail_async(&checkout.payment_ref);
    assert!(matches!(
        h.gateway.payment_status(&topup).await,
        Ok(PaymentStatus::Failed { reason }) if reason.contains("payment failed")
    ));

    let (_, later, topup) = created(&h, "topup_async_ok", money("25.00", "USD"), false).await;
    h.fake.complete_unpaid(&later.payment_ref);
    h.fake.complete_paid(&later.payment_ref);
    assert_eq!(
        h.gateway.payment_status(&topup).await,
        Ok(PaymentStatus::Paid {
            amount: money("25.00", "USD")
        })
    );
}

#[tokio::test]
async fn a_canceled_payment_intent_failed() {
    let h = harness().await;
    let (_, checkout, topup) = created(&h, "topup_canceled", money("25.00", "USD"), false).await;
    h.fake.complete_unpaid(&checkout.payment_ref);
    let intent = h.fake.session(&checkout.payment_ref).expect("session")["payment_intent"]
        .as_str()
        .expect("intent id")
        .to_owned();
    h.fake
        .patch_payment_intent(&intent, |pi| pi["status"] = json!("canceled"));
    assert_eq!(
        h.gateway.payment_status(&topup).await,
        Ok(PaymentStatus::Failed {
            reason: "payment canceled".to_owned()
        })
    );
}

#[tokio::test]
async fn requires_payment_method_without_an_error_is_not_a_failure_yet() {
    let h = harness().await;
    let (_, checkout, topup) = created(&h, "topup_rpm", money("25.00", "USD"), false).await;
    h.fake.complete_unpaid(&checkout.payment_ref);
    let intent = h.fake.session(&checkout.payment_ref).expect("session")["payment_intent"]
        .as_str()
        .expect("intent id")
        .to_owned();
    h.fake.patch_payment_intent(&intent, |pi| {
        pi["status"] = json!("requires_payment_method");
        pi["last_payment_error"] = json!(null);
    });
    assert_eq!(
        h.gateway.payment_status(&topup).await,
        Ok(PaymentStatus::Pending)
    );
}

#[tokio::test]
async fn stripe_reports_the_amount_it_collected_even_when_it_differs() {
    let h = harness().await;
    let (_, checkout, topup) = created(&h, "topup_mismatch", money("25.00", "USD"), false).await;
    h.fake.complete_paid(&checkout.payment_ref);
    h.fake.set_amount_total(&checkout.payment_ref, 2499);
    assert_eq!(
        h.gateway.payment_status(&topup).await,
        Ok(PaymentStatus::Paid {
            amount: money("24.99", "USD")
        })
    );
    h.fake
        .patch_session(&checkout.payment_ref, |s| s["currency"] = json!("eur"));
    assert_eq!(
        h.gateway.payment_status(&topup).await,
        Ok(PaymentStatus::Paid {
            amount: money("24.99", "EUR")
        })
    );
}

#[tokio::test]
async fn paid_without_a_usable_amount_is_an_error_not_a_guess() {
    let h = harness().await;
    let (_, checkout, topup) = created(&h, "topup_noamount", money("25.00", "USD"), false).await;
    h.fake.complete_paid(&checkout.payment_ref);
    h.fake
        .patch_session(&checkout.payment_ref, |s| s["amount_total"] = json!(null));
    assert!(matches!(
        h.gateway.payment_status(&topup).await,
        Err(GatewayError::InvalidRequest(_))
    ));
    h.fake.patch_session(&checkout.payment_ref, |s| {
        s["amount_total"] = json!(2500);
        s["currency"] = json!("xyz");
    });
    assert!(matches!(
        h.gateway.payment_status(&topup).await,
        Err(GatewayError::InvalidRequest(_))
    ));
}

#[tokio::test]
async fn completed_without_payment_never_credits() {
    let h = harness().await;
    let (_, checkout, topup) = created(&h, "topup_free", money("25.00", "USD"), false).await;
    h.fake.patch_session(&checkout.payment_ref, |s| {
        s["status"] = json!("complete");
        s["payment_status"] = json!("no_payment_required");
        s["amount_total"] = json!(0);
    });
    assert!(matches!(
        h.gateway.payment_status(&topup).await,
        Ok(PaymentStatus::Failed { .. })
    ));
}

#[tokio::test]
async fn unknown_states_are_pending() {
    let h = harness().await;
    let (_, checkout, topup) = created(&h, "topup_weird", money("25.00", "USD"), false).await;
    h.fake.patch_session(&checkout.payment_ref, |s| {
        s["status"] = json!("something_new")
    });
    assert_eq!(
        h.gateway.payment_status(&topup).await,
        Ok(PaymentStatus::Pending)
    );
    h.fake.patch_session(&checkout.payment_ref, |s| {
        s["status"] = json!("complete");
        s["payment_status"] = json!("something_new");
    });
    assert_eq!(
        h.gateway.payment_status(&topup).await,
        Ok(PaymentStatus::Pending)
    );
}

#[tokio::test]
async fn a_session_of_another_topup_is_refused() {
    let h = harness().await;
    let (_, checkout, _) = created(&h, "topup_a", money("25.00", "USD"), false).await;
    let (_, _, mut other) = created(&h, "topup_b", money("25.00", "USD"), false).await;
    h.fake.complete_paid(&checkout.payment_ref);
    other.payment_ref = Some(checkout.payment_ref.clone());
    assert!(matches!(
        h.gateway.payment_status(&other).await,
        Err(GatewayError::InvalidRequest(_))
    ));
}

#[tokio::test]
async fn errors_of_the_status_check() {
    let h = harness().await;
    let (_, _, topup) = created(&h, "topup_errors", money("25.00", "USD"), false).await;
    h.fake.fail_next(1);
    assert!(matches!(
        h.gateway.payment_status(&topup).await,
        Err(GatewayError::Transient(_))
    ));

    let mut unknown = topup.clone();
    unknown.payment_ref = Some("cs_test_doesnotexist".to_owned());
    assert!(matches!(
        h.gateway.payment_status(&unknown).await,
        Err(GatewayError::InvalidRequest(_))
    ));

    let mut unsafe_ref = topup.clone();
    unsafe_ref.payment_ref = Some("cs_test/../../v1/charges".to_owned());
    assert!(matches!(
        h.gateway.payment_status(&unsafe_ref).await,
        Err(GatewayError::InvalidRequest(_))
    ));

    let mut none = topup;
    none.payment_ref = None;
    none.id = TopUpId::new("topup_never_created");
    assert!(matches!(
        h.gateway.payment_status(&none).await,
        Err(GatewayError::InvalidRequest(_))
    ));
}
