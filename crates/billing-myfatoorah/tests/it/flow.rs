//! The core's top-up flow (`billing_core::service::Billing`) with this adapter and the fake:
//! checkout, notification, status check, credit once.

use std::sync::Arc;

use billing_core::Decimal;
use billing_core::ports::{GatewayError, PaymentGateway};
use billing_core::service::{
    Billing, Gateways, HandleNotificationError, SettleOutcome, TopUpRequest,
};
use billing_core::topup::{TopUpPolicy, TopUpStatus};
use billing_testkit::fake_myfatoorah::{FakeMyFatoorah, WebhookVersion};
use billing_testkit::{InMemoryStore, ManualClock, SequentialIds};

use crate::support::{SECRET, currency, gateway, invoice_id, notification};

fn billing(fake: &FakeMyFatoorah) -> Billing {
    let gateway: Arc<dyn PaymentGateway> = Arc::new(gateway(fake));
    let gateways = Gateways::new(vec![gateway], "myfatoorah").expect("default gateway exists");
    let policy = TopUpPolicy {
        currency: currency("KWD"),
        minimum: Decimal::ONE,
        contact_sales_from: Decimal::new(1000, 0),
        bonus_tiers: Vec::new(),
        credits_per_unit: Decimal::ONE,
    };
    Billing::new(
        Arc::new(InMemoryStore::new()),
        gateways,
        Arc::new(ManualClock::new()),
        Arc::new(SequentialIds::new()),
        policy,
    )
}

fn amount(text: &str) -> Decimal {
    Decimal::from_str_exact(text).expect("decimal")
}

#[tokio::test]
async fn a_paid_invoice_credits_the_wallet_once() {
    let fake = FakeMyFatoorah::start().await;
    let billing = billing(&fake);
    let account = billing
        .create_account("Customer", "customer@example.test")
        .await
        .expect("account");
    let topup = billing
        .create_topup(
            &account.id,
            &TopUpRequest::Amount(amount("12.5")),
            None,
            None,
        )
        .await
        .expect("top-up");
    let payment_ref = topup.payment_ref.clone().expect("checkout recorded");
    let id = invoice_id(&payment_ref);
    assert_eq!(fake.invoice(id).expect("invoice").value, "12.500");
    assert!(topup.checkout_url.is_some());

    // A notification before payment leaves the top-up pending.
    let early = fake
        .webhook(id, WebhookVersion::V1, SECRET)
        .expect("invoice");
    let outcome = billing
        .handle_notification("myfatoorah", &notification(&early))
        .await
        .expect("handled");
    assert!(
        matches!(outcome, SettleOutcome::StillPending(_)),
        "{outcome:?}"
    );

    assert!(fake.mark_paid(id));
    let paid = fake
        .webhook(id, WebhookVersion::V2, SECRET)
        .expect("invoice");
    let outcome = billing
        .handle_notification("myfatoorah", &notification(&paid))
        .await
        .expect("handled");
    match outcome {
        SettleOutcome::Completed(t) => assert_eq!(t.status, TopUpStatus::Completed),
        other => panic!("expected Completed, got {other:?}"),
    }
    // The same delivery again, and a V1 event for the same payment: nothing more.
    for webhook in [
        paid,
        fake.webhook(id, WebhookVersion::V1, SECRET)
            .expect("invoice"),
    ] {
        let outcome = billing
            .handle_notification("myfatoorah", &notification(&webhook))
            .await
            .expect("handled");
        assert!(
            matches!(
                outcome,
                SettleOutcome::Ignored | SettleOutcome::AlreadySettled(_)
            ),
            "{outcome:?}"
        );
    }
    let wallet = billing
        .wallet(&account.id)
        .await
        .expect("store")
        .expect("wallet");
    assert_eq!(wallet.balance.value(), amount("12.5"));
}

#[tokio::test]
async fn a_different_paid_amount_credits_nothing() {
    let fake = FakeMyFatoorah::start().await;
    let billing = billing(&fake);
    let account = billing
        .create_account("Customer", "customer@example.test")
        .await
        .expect("account");
    let topup = billing
        .create_topup(&account.id, &TopUpRequest::Amount(amount("20")), None, None)
        .await
        .expect("top-up");
    let id = invoice_id(topup.payment_ref.as_deref().expect("checkout recorded"));
    assert!(fake.mark_paid(id));
    assert!(fake.set_paid_amount(id, "2.000"));
    let webhook = fake
        .webhook(id, WebhookVersion::V1, SECRET)
        .expect("invoice");
    let outcome = billing
        .handle_notification("myfatoorah", &notification(&webhook))
        .await
        .expect("handled");
    assert!(
        matches!(outcome, SettleOutcome::AmountMismatch(_)),
        "{outcome:?}"
    );
    let wallet = billing
        .wallet(&account.id)
        .await
        .expect("store")
        .expect("wallet");
    assert_eq!(wallet.balance.value(), Decimal::ZERO);
}

#[tokio::test]
async fn a_forged_notification_changes_nothing() {
    let fake = FakeMyFatoorah::start().await;
    let billing = billing(&fake);
    let account = billing
        .create_account("Customer", "customer@example.test")
        .await
        .expect("account");
    let topup = billing
        .create_topup(&account.id, &TopUpRequest::Amount(amount("5")), None, None)
        .await
        .expect("top-up");
    let id = invoice_id(topup.payment_ref.as_deref().expect("checkout recorded"));
    fake.clear_requests();
    let forged = fake
        .tampered_webhook(id, WebhookVersion::V2, SECRET)
        .expect("invoice");
    let result = billing
        .handle_notification("myfatoorah", &notification(&forged))
        .await;
    assert!(
        matches!(
            result,
            Err(HandleNotificationError::Gateway(
                GatewayError::BadSignature(_)
            ))
        ),
        "{result:?}"
    );
    // Rejected before any status call.
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn a_cancelled_invoice_fails_the_top_up() {
    let fake = FakeMyFatoorah::start().await;
    let billing = billing(&fake);
    let account = billing
        .create_account("Customer", "customer@example.test")
        .await
        .expect("account");
    let topup = billing
        .create_topup(&account.id, &TopUpRequest::Amount(amount("5")), None, None)
        .await
        .expect("top-up");
    let id = invoice_id(topup.payment_ref.as_deref().expect("checkout recorded"));
    assert!(fake.mark_cancelled(id));
    let webhook = fake
        .webhook(id, WebhookVersion::V2, SECRET)
        .expect("invoice");
    let outcome = billing
        .handle_notification("myfatoorah", &notification(&webhook))
        .await
        .expect("handled");
    assert!(matches!(outcome, SettleOutcome::Failed(_)), "{outcome:?}");
}
