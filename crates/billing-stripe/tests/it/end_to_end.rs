//! The core's top-up flow with this adapter and the fake: a signed webhook completes the
//! top-up once, after a server-to-server check.

use std::sync::Arc;

use billing_core::Decimal;
use billing_core::ports::{Notification, PaymentGateway};
use billing_core::service::{Billing, Gateways, SettleOutcome, TopUpRequest};
use billing_core::topup::TopUpPolicy;
use billing_testkit::fake_stripe::{FakeStripe, SignedEvent};
use billing_testkit::{InMemoryStore, ManualClock, SequentialIds};

use crate::{SECRET_KEY, WEBHOOK_SECRET, config};

struct World {
    fake: FakeStripe,
    billing: Billing,
    clock: Arc<ManualClock>,
}

async fn world() -> World {
    let fake = FakeStripe::start(SECRET_KEY)
        .await
        .expect("fake stripe starts");
    let gateway: Arc<dyn PaymentGateway> = Arc::new(
        billing_stripe::StripeGateway::new(config(fake.base_url(), &[WEBHOOK_SECRET]))
            .expect("valid config"),
    );
    let clock = Arc::new(ManualClock::new());
    let billing = Billing::new(
        Arc::new(InMemoryStore::new()),
        Gateways::new(vec![gateway], "stripe").expect("stripe is there"),
        clock.clone(),
        Arc::new(SequentialIds::new()),
        TopUpPolicy::default(),
    );
    World {
        fake,
        billing,
        clock,
    }
}

fn notification(event: &SignedEvent) -> Notification {
    Notification {
        headers: event.headers(),
        body: event.body.clone(),
    }
}

#[tokio::test]
async fn a_paid_checkout_credits_once() {
    let w = world().await;
    let account = w
        .billing
        .create_account("Ada", "ada@example.com")
        .await
        .expect("account");
    let topup = w
        .billing
        .create_topup(
            &account.id,
            &TopUpRequest::Amount(Decimal::new(100, 0)),
            Some("stripe"),
            None,
        )
        .await
        .expect("top-up");
    let session = topup.payment_ref.clone().expect("session id");

    let now = w.billing.now().as_secs();
    let early = w
        .fake
        .event("checkout.session.completed", &session, WEBHOOK_SECRET, now);
    let outcome = w
        .billing
        .handle_notification("stripe", &notification(&early))
        .await
        .expect("handled");
    assert!(
        matches!(outcome, SettleOutcome::StillPending(_)),
        "{outcome:?}"
    );

    w.fake.complete_paid(&session);
    let event = w
        .fake
        .event("checkout.session.completed", &session, WEBHOOK_SECRET, now);
    let outcome = w
        .billing
        .handle_notification("stripe", &notification(&event))
        .await
        .expect("handled");
    assert!(
        matches!(outcome, SettleOutcome::Completed(_)),
        "{outcome:?}"
    );
    let again = w
        .billing
        .handle_notification("stripe", &notification(&event))
        .await
        .expect("handled");
    assert_eq!(again, SettleOutcome::Ignored);
    let wallet = w
        .billing
        .wallet(&account.id)
        .await
        .expect("store")
        .expect("wallet");
    // $100 buys 100 credits and the +10 % tier.
    assert_eq!(wallet.balance.value(), Decimal::new(110, 0));
}

#[tokio::test]
async fn a_wrong_amount_is_left_for_an_operator_and_a_stale_event_is_refused() {
    let w = world().await;
    let account = w
        .billing
        .create_account("Ada", "ada@example.com")
        .await
        .expect("account");
    let topup = w
        .billing
        .create_topup(
            &account.id,
            &TopUpRequest::Amount(Decimal::new(25, 0)),
            Some("stripe"),
            None,
        )
        .await
        .expect("top-up");
    let session = topup.payment_ref.clone().expect("session id");
    w.fake.complete_paid(&session);
    w.fake.set_amount_total(&session, 1);

    let sent_at = w.billing.now().as_secs();
    let event = w.fake.event(
        "checkout.session.completed",
        &session,
        WEBHOOK_SECRET,
        sent_at,
    );
    let outcome = w
        .billing
        .handle_notification("stripe", &notification(&event))
        .await
        .expect("handled");
    assert!(
        matches!(outcome, SettleOutcome::AmountMismatch(_)),
        "{outcome:?}"
    );

    w.clock.advance_secs(301);
    let stale = w
        .billing
        .handle_notification("stripe", &notification(&event))
        .await;
    assert!(stale.is_err(), "{stale:?}");
    let wallet = w
        .billing
        .wallet(&account.id)
        .await
        .expect("store")
        .expect("wallet");
    assert!(wallet.balance.value().is_zero());
}
