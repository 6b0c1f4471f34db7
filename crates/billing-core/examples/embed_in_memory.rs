//! `billing-core` with the in-memory store and a `mockall` gateway (the `mocks` feature):
//! how a downstream service tests its billing logic without a database or a network.
//!
//! ```sh
//! cargo run -p billing-core --example embed_in_memory
//! ```
//!
//! The mock states what the gateway must be asked ("exactly one checkout"; "the status
//! once"), and the run fails if the core asks otherwise. A downstream crate gets the same by
//! depending on `billing-core` with `features = ["mocks"]` and on `billing-testkit` in its
//! `[dev-dependencies]`.

use std::error::Error;
use std::sync::Arc;

use billing_core::Decimal;
use billing_core::ids::TopUpId;
use billing_core::money::Credits;
use billing_core::ports::{
    Checkout, MockPaymentGateway, Notification, PaymentGateway, PaymentStatus, Store,
    VerifiedNotification,
};
use billing_core::service::{
    Billing, Gateways, LedgerOpError, SettleOutcome, TopUpRequest, UsageCharge, UsageRequest,
};
use billing_core::topup::TopUpPolicy;
use billing_testkit::{InMemoryStore, ManualClock, SequentialIds};

/// A gateway that must be asked for one checkout, verifies one notification and confirms
/// the payment once.
fn gateway() -> MockPaymentGateway {
    let mut gateway = MockPaymentGateway::new();
    gateway.expect_name().return_const("mockpay".to_owned());
    gateway.expect_saved_method().returning(|_| Ok(None));
    gateway
        .expect_create_checkout()
        .times(1)
        .returning(|request| {
            Ok(Checkout {
                payment_ref: format!("pay_{}", request.topup_id),
                checkout_url: format!("https://pay.example/{}", request.topup_id),
            })
        });
    gateway
        .expect_verify_notification()
        .times(1)
        .returning(|notification, _now| {
            let topup = String::from_utf8_lossy(&notification.body).into_owned();
            Ok(VerifiedNotification {
                event_id: format!("evt_{topup}"),
                payment_ref: Some(format!("pay_{topup}")),
                topup_id: Some(TopUpId::new(topup)),
            })
        });
    gateway.expect_payment_status().times(1).returning(|topup| {
        Ok(PaymentStatus::Paid {
            amount: topup.price,
        })
    });
    gateway
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let store = Arc::new(InMemoryStore::new());
    let clock = Arc::new(ManualClock::new());
    let gateway: Arc<dyn PaymentGateway> = Arc::new(gateway());
    let billing = Billing::new(
        store.clone() as Arc<dyn Store>,
        Gateways::new(vec![gateway], "mockpay").ok_or("no default gateway")?,
        clock.clone(),
        Arc::new(SequentialIds::new()),
        TopUpPolicy::default(),
    );
    let account = billing.create_account("Ada", "ada@example.com").await?;

    // No credits yet: the debit is refused and writes nothing.
    let usage = |key: &str, amount: Decimal| UsageRequest {
        charge: UsageCharge::Amount(amount),
        description: None,
        idempotency_key: key.to_owned(),
    };
    let refused = billing
        .record_usage(&account.id, &usage("r-1", Decimal::ONE))
        .await;
    assert!(
        matches!(refused, Err(LedgerOpError::InsufficientFunds { .. })),
        "{refused:?}"
    );

    // A pack-less custom top-up of 20.00, paid: 20 credits (no bonus below 50).
    let topup = billing
        .create_topup(
            &account.id,
            &TopUpRequest::Amount(Decimal::new(20, 0)),
            None,
            None,
        )
        .await?;
    let notification = Notification {
        headers: vec![("mockpay-signature".into(), "signed".into())],
        body: topup.id.as_str().as_bytes().to_vec(),
    };
    let settled = billing
        .handle_notification("mockpay", &notification)
        .await?;
    assert!(
        matches!(settled, SettleOutcome::Completed(_)),
        "{settled:?}"
    );

    billing
        .record_usage(&account.id, &usage("r-2", Decimal::new(75, 2)))
        .await?;
    let wallet = billing.wallet(&account.id).await?.ok_or("no wallet")?;
    assert_eq!(wallet.balance, Credits::new(Decimal::new(19_25, 2))?);
    println!(
        "balance {} after a paid top-up and one debit; the gateway was asked exactly what the mock allowed",
        wallet.balance
    );
    // Dropping the mock checks its `times(1)` expectations.
    Ok(())
}
