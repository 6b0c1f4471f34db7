//! The service without HTTP: tasks calling billing-core's `record_usage` in process, as the
//! `POST /v1/usage` handler does after it has authenticated and parsed the request, through
//! the same service and store (`billing_server::build` with the HTTP run's configuration):
//! the ledger writers, their queues and group commit, on the database the HTTP run wrote.
//! No sockets, no HTTP workers, no JSON, no API-key lookup. What it reaches is what the
//! service over HTTP could reach on this machine if its HTTP layer cost nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use billing_core::Decimal;
use billing_core::ids::AccountId;
use billing_core::service::{UsageCharge, UsageRequest};

/// What a run without HTTP did.
pub struct Alone {
    pub rate: f64,
    /// Debits the service refused (402) or could not take (503): none expected.
    pub refused: u64,
    /// Where its CPU went (from `/proc`, as for the run over HTTP).
    pub cost: Option<crate::cpu::Cost>,
    /// Where its ledger writers' time went (from the process's metrics recorder, which the
    /// in-process server installed).
    pub phases: Option<crate::phases::Split>,
}

/// Debits `amount` from `accounts` (all of them uniformly, or the first when `hot`) from
/// `tasks` tasks for `seconds`, in process, on the service `config` describes; the HTTP
/// server must have stopped (its ledger writers closed).
pub async fn run(
    config: &billing_server::Config,
    accounts: &[String],
    hot: bool,
    amount: Decimal,
    tasks: usize,
    seconds: u64,
) -> Result<Alone, String> {
    if accounts.is_empty() {
        return Err("no accounts".into());
    }
    let parts = billing_server::build(config, "http://127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let billing = Arc::new(parts.billing);
    let accounts: Arc<Vec<AccountId>> =
        Arc::new(accounts.iter().map(|a| AccountId::new(a.clone())).collect());
    let (done, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    // One sequence for every task, as the HTTP client's: the keys of a batch's claims sort
    // together in the claims' index.
    let sequence = Arc::new(AtomicU64::new(0));
    let prefix = format!("inproc-{}", rand::random::<u32>());
    let recorder = billing_http::metrics::recorder();
    let scrape = || recorder.as_ref().map(|r| crate::phases::parse(&r.render()));
    let phases_before = scrape();
    let cpu_before = crate::cpu::sample();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut handles = Vec::with_capacity(tasks);
    for _ in 0..tasks.max(1) {
        let (billing, accounts, done, refused, sequence, prefix) = (
            billing.clone(),
            accounts.clone(),
            done.clone(),
            refused.clone(),
            sequence.clone(),
            prefix.clone(),
        );
        handles.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let account = if hot || accounts.len() == 1 {
                    &accounts[0]
                } else {
                    &accounts[rand::random_range(0..accounts.len())]
                };
                let request = UsageRequest {
                    charge: UsageCharge::Amount(amount),
                    description: Some("API usage - load".into()),
                    idempotency_key: format!(
                        "{prefix}-{}",
                        sequence.fetch_add(1, Ordering::Relaxed)
                    ),
                };
                match billing.record_usage(account, &request).await {
                    Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => refused.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for handle in handles {
        handle.await.map_err(|e| e.to_string())?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let done = done.load(Ordering::Relaxed);
    let cost = crate::cpu::Cost::between(&cpu_before, &crate::cpu::sample(), done);
    let phases = phases_before
        .zip(scrape())
        .and_then(|(before, after)| crate::phases::Split::between(&before, &after));
    let store = parts.store.clone();
    drop(billing);
    // Waits for its writers to close their connections (blocking, up to seconds).
    tokio::task::spawn_blocking(move || store.close_ledger())
        .await
        .map_err(|e| e.to_string())?;
    Ok(Alone {
        rate: done as f64 / elapsed,
        refused: refused.load(Ordering::Relaxed),
        cost,
        phases,
    })
}
