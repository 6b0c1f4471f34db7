//! Delivering the outbox: emails to customers and signed events to the platform, at least
//! once, with retries and back-off, from any number of processes.

use std::sync::Arc;

use super::{AUTO_TOPUP_CHARGE_WINDOW_SECS, Billing};
use crate::ids::TopUpId;
use crate::notices::{Channel, RetryPolicy, email_for};
use crate::ports::{Clock, EventSink, Notifier, OutboxItem, OutboxOutcome, Store, StoreError};

/// How long a claimed item stays with the worker that claimed it before another may take it.
pub const OUTBOX_LEASE_SECS: i64 = 60;

/// What one pass of the worker did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutboxRun {
    /// Items delivered in this pass (on any channel).
    pub delivered: u32,
    /// Failed attempts, for the caller to log: the notice, its channel, the error, and
    /// whether the item was given up.
    pub failures: Vec<(String, Channel, String, bool)>,
}

/// The outbox worker's use case: claim due items, deliver each on its channel, record the
/// outcome.
pub struct OutboxDelivery {
    billing: Billing,
    store: Arc<dyn Store>,
    notifier: Arc<dyn Notifier>,
    events: Arc<dyn EventSink>,
    clock: Arc<dyn Clock>,
    policy: RetryPolicy,
    public_url: Option<String>,
}

impl OutboxDelivery {
    /// Delivers `billing`'s outbox (auto top-up charges go through `billing`).
    pub fn new(
        billing: Billing,
        notifier: Arc<dyn Notifier>,
        events: Arc<dyn EventSink>,
        policy: RetryPolicy,
        public_url: Option<String>,
    ) -> OutboxDelivery {
        OutboxDelivery {
            store: billing.store.clone(),
            clock: billing.clock.clone(),
            billing,
            notifier,
            events,
            policy,
            public_url,
        }
    }

    /// One pass over at most `limit` due items.
    pub async fn run_once(&self, limit: u32) -> Result<OutboxRun, StoreError> {
        let now = self.clock.now();
        let items = self
            .store
            .claim_outbox(now, now.plus_secs(OUTBOX_LEASE_SECS), limit)
            .await?;
        let mut run = OutboxRun::default();
        for item in items {
            // A claim that ran out (a slow batch) is left to whoever takes the item next.
            if self.clock.now() >= item.lease_until {
                continue;
            }
            let result = self.deliver(&item).await;
            let now = self.clock.now();
            let outcome = match result {
                Ok(()) => {
                    run.delivered += 1;
                    OutboxOutcome::Delivered
                }
                Err(error) => {
                    let attempts = item.attempts.saturating_add(1);
                    match self
                        .policy
                        .next_attempt(item.notice.created_at, attempts, now)
                    {
                        Some(at) => {
                            run.failures.push((
                                item.notice.id.clone(),
                                item.channel,
                                error.clone(),
                                false,
                            ));
                            OutboxOutcome::Retry { at, error }
                        }
                        None => {
                            run.failures.push((
                                item.notice.id.clone(),
                                item.channel,
                                error.clone(),
                                true,
                            ));
                            OutboxOutcome::GaveUp { error }
                        }
                    }
                }
            };
            if let Err(e) = self.store.finish_outbox(&item, &outcome, now).await {
                run.failures.push((
                    item.notice.id.clone(),
                    item.channel,
                    format!("outcome not recorded: {e}"),
                    false,
                ));
            }
        }
        Ok(run)
    }

    async fn deliver(&self, item: &OutboxItem) -> Result<(), String> {
        match item.channel {
            Channel::Charge => {
                let now = self.clock.now();
                // Past the window the gateway may have forgotten the idempotency key: no
                // charge is made any more (a late notification still credits one made).
                let past_window = item
                    .notice
                    .created_at
                    .plus_secs(AUTO_TOPUP_CHARGE_WINDOW_SECS)
                    <= now;
                let last_attempt = past_window
                    || self
                        .policy
                        .next_attempt(item.notice.created_at, item.attempts.saturating_add(1), now)
                        .is_none();
                self.billing
                    .charge_auto_topup(
                        &TopUpId::new(item.notice.cause.id()),
                        last_attempt,
                        past_window,
                    )
                    .await
            }
            Channel::Event => self.events.deliver(&item.notice).await.map_err(|e| e.0),
            Channel::Email => {
                let account = self
                    .store
                    .account(&item.notice.account_id)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("account {} is gone", item.notice.account_id))?;
                // A checkout that cannot be made (a rule changed, the gateway is gone) leaves
                // the email without its link rather than unsent.
                let checkout = self
                    .billing
                    .authentication_checkout(&item.notice)
                    .await
                    .ok()
                    .flatten();
                let Some(email) = email_for(
                    &item.notice,
                    &account.email,
                    &account.name,
                    self.public_url.as_deref(),
                    checkout.as_deref(),
                ) else {
                    return Ok(());
                };
                self.notifier.send(&email).await.map_err(|e| e.0)
            }
        }
    }
}
