//! Billing in-process on a SQLite file, without HTTP: what a Rust service that embeds
//! `billing-core` with the `billing-store` adapter does.
//!
//! ```sh
//! cargo run -p billing-core --example embed_sqlite [path/to/billing.db]
//! ```
//!
//! It opens (creates and migrates) the database, creates an account, grants it credits,
//! debits usage with an idempotency key (and retries it, which charges nothing twice), tops
//! it up through an in-process sandbox gateway, and prints the ledger. It exits non-zero if
//! the balance is not the ledger's sum.

use std::error::Error;
use std::sync::Arc;

use billing_core::Decimal;
use billing_core::ports::{PaymentGateway, Store};
use billing_core::service::{
    Billing, Gateways, SettleOutcome, StatementQuery, TopUpRequest, UsageCharge, UsageRequest,
};
use billing_core::topup::TopUpPolicy;
use billing_store::{DieselStore, StoreOptions};
use billing_testkit::InstantSandbox;

/// The real clock and random-enough ids: an embedding program brings its own.
mod system {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};

    use billing_core::ports::{Clock, IdGenerator};
    use billing_core::time::Timestamp;

    pub struct SystemClock;

    impl Clock for SystemClock {
        fn now(&self) -> Timestamp {
            let micros = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
            Timestamp::from_micros(micros)
        }
    }

    /// Time-based ids with a counter: unique within this process, enough for an example.
    pub struct ExampleIds(pub AtomicU64);

    impl IdGenerator for ExampleIds {
        fn new_id(&self, prefix: &str) -> String {
            let n = self.0.fetch_add(1, Ordering::SeqCst);
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            format!("{prefix}_{now:x}{n:04}")
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let path = std::env::args().nth(1).unwrap_or_else(|| {
        std::env::temp_dir()
            .join(format!("billing-embed-{}.db", std::process::id()))
            .to_string_lossy()
            .into_owned()
    });
    // Blocking: migrations run here. In an async program, call it from spawn_blocking.
    let store = Arc::new(DieselStore::connect(&path, &StoreOptions::default())?);
    let sandbox = Arc::new(InstantSandbox::new("example-sandbox-token"));
    let gateways = Gateways::new(vec![sandbox.clone() as Arc<dyn PaymentGateway>], "sandbox")
        .ok_or("the default gateway is not enabled")?;
    let billing = Billing::new(
        store.clone() as Arc<dyn Store>,
        gateways,
        Arc::new(system::SystemClock),
        Arc::new(system::ExampleIds(Default::default())),
        TopUpPolicy::default(),
    );

    let account = billing.create_account("Ada", "ada@example.com").await?;
    println!("account {} in {path}", account.id);

    billing
        .grant(
            &account.id,
            Decimal::new(5, 0),
            "Welcome credits",
            Some("welcome"),
        )
        .await?;

    let usage = UsageRequest {
        charge: UsageCharge::Amount(Decimal::new(1_25, 2)), // 1.25
        description: Some("chat completion".into()),
        idempotency_key: "request-42".into(),
    };
    let debit = billing.record_usage(&account.id, &usage).await?;
    let retry = billing.record_usage(&account.id, &usage).await?;
    assert!(retry.replayed && retry.entries == debit.entries);
    println!(
        "debited 1.25 once (the retry replayed {})",
        retry.entries[0].id
    );

    let topup = billing
        .create_topup(
            &account.id,
            &TopUpRequest::Amount(Decimal::new(100, 0)),
            None,
            None,
        )
        .await?;
    println!("top-up {} pending at {:?}", topup.id, topup.checkout_url);
    let notification = sandbox.pay(&topup.id).ok_or("no checkout for the top-up")?;
    match billing
        .handle_notification("sandbox", &notification)
        .await?
    {
        SettleOutcome::Completed(t) => println!("top-up {} completed", t.id),
        other => return Err(format!("the top-up did not complete: {other:?}").into()),
    }

    let statement = billing
        .statement(&account.id, &StatementQuery::default())
        .await?;
    println!(
        "\n{:<28} {:<6} {:>14} {:>14}  description",
        "id", "type", "amount", "balance"
    );
    for e in &statement.entries {
        println!(
            "{:<28} {:<6} {:>14} {:>14}  {}",
            e.id.as_str(),
            e.kind.as_str(),
            e.amount.to_string(),
            e.balance_after.to_string(),
            e.description
        );
    }
    let wallet = billing
        .wallet(&account.id)
        .await?
        .ok_or("the account has no wallet")?;
    let sum = statement
        .entries
        .iter()
        .try_fold(billing_core::money::Credits::ZERO, |total, e| {
            total.checked_add(e.amount)
        })?;
    println!("\nbalance {} = ledger sum {}", wallet.balance, sum);
    if wallet.balance != sum || wallet.balance.to_string() != "113.75" {
        return Err("the balance is not what was posted".into());
    }
    Ok(())
}
