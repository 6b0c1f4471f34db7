//! The background workers: reconciliation of pending top-ups, hold expiry, and the outbox.

use std::time::Duration;

use billing_core::service::{Billing, OutboxDelivery, SettleOutcome};

/// Holds written down as expired per round.
const EXPIRE_BATCH_MAX: u32 = 1000;

/// Every `interval_secs`, writes `expired` on holds past their expiry. They stopped counting
/// against the available balance at their expiry already; this only records it.
pub(crate) async fn expire_holds_forever(billing: Billing, interval_secs: u64) {
    let mut interval = tokio::time::interval(Duration::from_secs(interval_secs.max(1)));
    loop {
        interval.tick().await;
        match billing.expire_holds(EXPIRE_BATCH_MAX).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(holds = n, "holds expired"),
            Err(e) => tracing::warn!(error = %e, "hold expiry round failed"),
        }
    }
}

/// Pending top-ups re-checked per round.
const RECONCILE_BATCH_MAX: u32 = 100;

/// Every `interval_secs`, re-checks pending top-ups older than `after_secs` with their
/// gateway, so that a lost notification never leaves credits missing.
pub(crate) async fn reconcile_forever(billing: Billing, after_secs: i64, interval_secs: u64) {
    let mut interval = tokio::time::interval(Duration::from_secs(interval_secs));
    loop {
        interval.tick().await;
        let round = billing.reconcile(after_secs, RECONCILE_BATCH_MAX).await;
        metrics::counter!(
            "billing_reconciliation_runs_total",
            "outcome" => if round.is_ok() { "ok" } else { "error" }
        )
        .increment(1);
        match round {
            Ok(outcomes) => {
                for outcome in outcomes {
                    let name = outcome.as_ref().map_or("error", SettleOutcome::name);
                    metrics::counter!("billing_reconciliation_topups_total", "outcome" => name)
                        .increment(1);
                    match outcome {
                        Ok(SettleOutcome::Completed(t)) => {
                            tracing::info!(topup = %t.id, "reconciliation completed a top-up")
                        }
                        Ok(SettleOutcome::Failed(t)) => {
                            tracing::info!(topup = %t.id, "reconciliation failed a top-up")
                        }
                        Ok(SettleOutcome::AmountMismatch(t)) => tracing::error!(
                            topup = %t.id,
                            "gateway reports a different paid amount; left pending"
                        ),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "reconciliation check failed"),
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "reconciliation round failed"),
        }
    }
}

/// Outbox items delivered per pass.
const OUTBOX_BATCH_MAX: u32 = 100;

/// Delivers due outbox items (emails, events) every `interval`, and at once again while a
/// pass finds a full batch. Failures are logged here; the store records them on the item.
pub(crate) async fn deliver_outbox_forever(delivery: OutboxDelivery, interval: Duration) {
    loop {
        match delivery.run_once(OUTBOX_BATCH_MAX).await {
            Ok(run) => {
                for (notice, channel, error, gave_up) in &run.failures {
                    if *gave_up {
                        tracing::error!(
                            notice,
                            channel = channel.as_str(),
                            error,
                            "notice given up after its retry window"
                        );
                    } else {
                        tracing::warn!(
                            notice,
                            channel = channel.as_str(),
                            error,
                            "notice delivery failed; will retry"
                        );
                    }
                }
                let handled = run.delivered + u32::try_from(run.failures.len()).unwrap_or(u32::MAX);
                if handled >= OUTBOX_BATCH_MAX {
                    continue;
                }
            }
            Err(e) => tracing::warn!(error = %e, "outbox pass failed"),
        }
        tokio::time::sleep(interval).await;
    }
}
