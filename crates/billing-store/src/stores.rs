//! billing-core's storage ports on the Diesel store: each call runs its backend's operation
//! (`ops.rs`, compiled for each) on a pooled connection, writes under SQLite's writer lock.

use super::connect::READY_TIMEOUT;
use super::*;

#[async_trait]
impl AccountStore for DieselStore {
    async fn insert_account(&self, account: &Account) -> Result<(), StoreError> {
        let account = account.clone();
        on_write_conn!(self, |c| ops::insert_account(c, &account))
    }

    async fn account(&self, id: &AccountId) -> Result<Option<Account>, StoreError> {
        let id = id.clone();
        on_conn!(self, |c| ops::account(c, &id))
    }

    async fn wallet(&self, id: &AccountId) -> Result<Option<Wallet>, StoreError> {
        let id = id.clone();
        on_conn!(self, |c| ops::wallet(c, &id))
    }

    async fn account_ids(
        &self,
        after: Option<&AccountId>,
        limit: u32,
    ) -> Result<Vec<AccountId>, StoreError> {
        let after = after.cloned();
        on_conn!(self, |c| ops::account_ids(c, after.as_ref(), limit))
    }
}

#[async_trait]
impl LedgerStore for DieselStore {
    async fn post(&self, posting: Posting) -> Result<Posted, PostError> {
        // A refund reads the links earlier refunds wrote: alone, in its own transaction.
        // Counted where they commit (posting.rs), not here.
        if posting.refund_of.is_empty() {
            return self.ledger.post(posting).await;
        }
        on_write_conn!(self, |c| ops::post(c, &posting))
    }

    async fn post_batch(&self, postings: Vec<Posting>) -> Vec<Result<Posted, PostError>> {
        let batch = postings.clone();
        match on_write_conn!(self, |c| ops::post_batch(c, &batch)) {
            Ok(answers) => answers,
            Err(_) => {
                self.ledger.count_failed_batch();
                let mut answers = Vec::with_capacity(postings.len());
                for posting in postings {
                    answers.push(
                        on_write_conn!(self, |c| ops::post_again(c, &posting)
                            .map_err(PostError::Store))
                        .and_then(|mut a| {
                            a.pop().unwrap_or_else(|| {
                                Err(PostError::Store(StoreError::Corrupt("no answer".into())))
                            })
                        }),
                    );
                }
                answers
            }
        }
    }

    async fn entries(
        &self,
        account_id: &AccountId,
        query: &EntryQuery,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        let (account_id, query) = (account_id.clone(), query.clone());
        on_conn!(self, |c| ops::entries(c, &account_id, &query))
    }

    async fn entry(
        &self,
        account_id: &AccountId,
        id: &EntryId,
    ) -> Result<Option<LedgerEntry>, StoreError> {
        let (account_id, id) = (account_id.clone(), id.clone());
        on_conn!(self, |c| ops::entry(c, &account_id, &id))
    }

    async fn history(&self, account_id: &AccountId) -> Result<Vec<LedgerEntry>, StoreError> {
        let account_id = account_id.clone();
        on_conn!(self, |c| ops::history(c, &account_id))
    }
}

#[async_trait]
impl TopUpStore for DieselStore {
    async fn insert_topup(
        &self,
        topup: &TopUp,
        idempotency: Option<&IdempotencyClaim>,
    ) -> Result<Inserted<TopUp>, InsertTopUpError> {
        let (topup, claim) = (topup.clone(), idempotency.cloned());
        on_write_conn!(self, |c| ops::insert_topup(c, &topup, claim.as_ref()))
    }

    async fn set_checkout(
        &self,
        id: &TopUpId,
        payment_ref: &str,
        checkout_url: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let (id, payment_ref, url) = (id.clone(), payment_ref.to_owned(), checkout_url.to_owned());
        on_write_conn!(self, |c| {
            // The payment started with the gateway (a checkout, or an auto top-up's charge):
            // counted once, when its reference is first recorded.
            if let Some(gateway) = ops::set_checkout(c, &id, &payment_ref, &url, now)? {
                metered::topup(&gateway, "created");
            }
            Ok(())
        })
    }

    async fn topup(&self, id: &TopUpId) -> Result<Option<TopUp>, StoreError> {
        let id = id.clone();
        on_conn!(self, |c| ops::topup(c, &id))
    }

    async fn topup_by_payment_ref(
        &self,
        gateway: &str,
        payment_ref: &str,
    ) -> Result<Option<TopUp>, StoreError> {
        let (gateway, payment_ref) = (gateway.to_owned(), payment_ref.to_owned());
        on_conn!(self, |c| ops::topup_by_payment_ref(
            c,
            &gateway,
            &payment_ref
        ))
    }

    async fn transition_topup(
        &self,
        id: &TopUpId,
        target: TopUpStatus,
        entries: Vec<NewEntry>,
        failure_reason: Option<String>,
        now: Timestamp,
    ) -> Result<Option<TransitionOutcome>, StoreError> {
        let id = id.clone();
        on_write_conn!(self, |c| {
            let outcome =
                ops::transition_topup(c, &id, target, &entries, failure_reason.as_deref(), now);
            if let Ok(Some(TransitionOutcome::Applied { topup, entries })) = &outcome {
                metered::entries_written(entries);
                metered::topup(&topup.gateway, topup.status.as_str());
            }
            outcome
        })
    }

    async fn topup_page(
        &self,
        account_id: &AccountId,
        status: Option<TopUpStatus>,
        page: u32,
        per_page: u32,
    ) -> Result<TopUpPage, StoreError> {
        let account_id = account_id.clone();
        on_conn!(self, |c| ops::topup_page(
            c,
            &account_id,
            status,
            page,
            per_page
        ))
    }

    async fn pending_topups(
        &self,
        created_before: Timestamp,
        limit: u32,
    ) -> Result<Vec<TopUp>, StoreError> {
        on_conn!(self, |c| ops::pending_topups(c, created_before, limit))
    }

    async fn touch_pending_topup(&self, id: &TopUpId, now: Timestamp) -> Result<(), StoreError> {
        let id = id.clone();
        on_write_conn!(self, |c| ops::touch_pending_topup(c, &id, now))
    }
}

#[async_trait]
impl PackStore for DieselStore {
    async fn upsert_pack(&self, pack: &Pack) -> Result<(), StoreError> {
        let pack = pack.clone();
        on_write_conn!(self, |c| ops::upsert_pack(c, &pack))
    }

    async fn pack(&self, id: &PackId) -> Result<Option<Pack>, StoreError> {
        let id = id.clone();
        on_conn!(self, |c| ops::pack(c, &id))
    }

    async fn packs(&self, include_inactive: bool) -> Result<Vec<Pack>, StoreError> {
        on_conn!(self, |c| ops::packs(c, include_inactive))
    }
}

#[async_trait]
impl HoldStore for DieselStore {
    async fn place_hold(
        &self,
        hold: &Hold,
        idempotency: Option<&IdempotencyClaim>,
        now: Timestamp,
    ) -> Result<HoldOutcome, HoldError> {
        let (hold, claim) = (hold.clone(), idempotency.cloned());
        on_write_conn!(self, |c| ops::place_hold(c, &hold, claim.as_ref(), now))
    }

    async fn change_hold(
        &self,
        account_id: &AccountId,
        id: &HoldId,
        action: &HoldAction,
        idempotency: Option<&IdempotencyClaim>,
        now: Timestamp,
    ) -> Result<HoldOutcome, HoldError> {
        let (account_id, id, action, claim) = (
            account_id.clone(),
            id.clone(),
            action.clone(),
            idempotency.cloned(),
        );
        on_write_conn!(self, |c| {
            let outcome = ops::change_hold(c, &account_id, &id, &action, claim.as_ref(), now);
            if let Ok(o) = &outcome
                && !o.replayed
            {
                metered::entries_written(&o.entry);
            }
            outcome
        })
    }

    async fn hold(&self, id: &HoldId) -> Result<Option<Hold>, StoreError> {
        let id = id.clone();
        on_conn!(self, |c| ops::hold(c, &id))
    }

    async fn reserved(
        &self,
        account_id: &AccountId,
        now: Timestamp,
    ) -> Result<Credits, StoreError> {
        let account_id = account_id.clone();
        on_conn!(self, |c| ops::reserved(c, &account_id, now))
    }

    async fn expire_holds(&self, now: Timestamp, limit: u32) -> Result<u32, StoreError> {
        on_write_conn!(self, |c| ops::expire_holds(c, now, limit))
    }
}

#[async_trait]
impl ControlsStore for DieselStore {
    async fn spending(
        &self,
        account_id: &AccountId,
    ) -> Result<Option<(SpendingLimit, MonthSpend)>, StoreError> {
        let account_id = account_id.clone();
        on_conn!(self, |c| ops::spending(c, &account_id))
    }

    async fn set_spending_limit(
        &self,
        account_id: &AccountId,
        limit: &SpendingLimit,
    ) -> Result<bool, StoreError> {
        let (account_id, limit) = (account_id.clone(), limit.clone());
        on_write_conn!(self, |c| ops::set_spending_limit(c, &account_id, &limit))
    }

    async fn low_balance_alert(
        &self,
        account_id: &AccountId,
    ) -> Result<Option<LowBalanceAlert>, StoreError> {
        let account_id = account_id.clone();
        on_conn!(self, |c| ops::low_balance_alert(c, &account_id))
    }

    async fn set_low_balance_alert(
        &self,
        account_id: &AccountId,
        alert: &LowBalanceAlert,
    ) -> Result<bool, StoreError> {
        let (account_id, alert) = (account_id.clone(), alert.clone());
        on_write_conn!(self, |c| ops::set_low_balance_alert(c, &account_id, &alert))
    }

    async fn auto_topup(
        &self,
        account_id: &AccountId,
    ) -> Result<Option<(AutoTopUpSettings, AutoTopUpState)>, StoreError> {
        let account_id = account_id.clone();
        on_conn!(self, |c| ops::auto_topup(c, &account_id))
    }

    async fn set_auto_topup(
        &self,
        account_id: &AccountId,
        settings: &AutoTopUpSettings,
    ) -> Result<bool, StoreError> {
        let (account_id, settings) = (account_id.clone(), settings.clone());
        on_write_conn!(self, |c| ops::set_auto_topup(c, &account_id, &settings))
    }

    async fn payment_method(
        &self,
        account_id: &AccountId,
    ) -> Result<Option<SavedMethod>, StoreError> {
        let account_id = account_id.clone();
        on_conn!(self, |c| ops::payment_method(c, &account_id))
    }

    async fn save_payment_method(
        &self,
        account_id: &AccountId,
        method: &SavedMethod,
    ) -> Result<bool, StoreError> {
        let (account_id, method) = (account_id.clone(), method.clone());
        on_write_conn!(self, |c| ops::save_payment_method(c, &account_id, &method))
    }

    async fn delete_payment_method(&self, account_id: &AccountId) -> Result<bool, StoreError> {
        let account_id = account_id.clone();
        on_write_conn!(self, |c| ops::delete_payment_method(c, &account_id))
    }
}

#[async_trait]
impl Readiness for DieselStore {
    async fn ready(&self) -> Result<(), StoreError> {
        // A probe waits a second at most: a load balancer's check must not hang while the
        // database is away.
        let pending = match &self.pools {
            Pools::Sqlite(pool, _) => {
                let pool = pool.clone();
                run_blocking(move || {
                    let mut c = pool.get_timeout(READY_TIMEOUT).map_err(pool_err)?;
                    sqlite::migrations_pending(&mut c)
                })
                .await
            }
            Pools::Postgres(pool) => {
                let pool = pool.clone();
                run_blocking(move || {
                    let mut c = pool.get_timeout(READY_TIMEOUT).map_err(pool_err)?;
                    postgres::migrations_pending(&mut c)
                })
                .await
            }
        }?;
        if pending {
            return Err(StoreError::Unavailable(
                "the database lacks migrations this build expects".into(),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl OutboxStore for DieselStore {
    async fn claim_outbox(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        on_write_conn!(self, |c| ops::claim_outbox(c, now, lease_until, limit))
    }

    async fn finish_outbox(
        &self,
        item: &OutboxItem,
        outcome: &OutboxOutcome,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let (item, outcome) = (item.clone(), outcome.clone());
        on_write_conn!(self, |c| ops::finish_outbox(c, &item, &outcome, now))
    }

    async fn outbox_depth(&self) -> Result<(u64, Option<Timestamp>), StoreError> {
        on_conn!(self, |c| ops::outbox_depth(c))
    }
}

#[async_trait]
impl RateStore for DieselStore {
    async fn upsert_rate(&self, rate: &Rate, now: Timestamp) -> Result<(), StoreError> {
        let rate = rate.clone();
        on_write_conn!(self, |c| ops::upsert_rate(c, &rate, now))
    }

    async fn delete_rate(&self, model: &str) -> Result<bool, StoreError> {
        let model = model.to_owned();
        on_write_conn!(self, |c| ops::delete_rate(c, &model))
    }

    async fn rate(&self, model: &str) -> Result<Option<Rate>, StoreError> {
        let model = model.to_owned();
        on_conn!(self, |c| ops::rate(c, &model))
    }

    async fn rates(&self) -> Result<Vec<Rate>, StoreError> {
        on_conn!(self, |c| ops::rates(c))
    }
}

#[async_trait]
impl ApiKeyStore for DieselStore {
    async fn insert_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        let key = key.clone();
        on_write_conn!(self, |c| ops::insert_key(c, &key))
    }

    async fn key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let hash = hash.to_owned();
        on_conn!(self, |c| ops::key_by_hash(c, &hash))
    }

    async fn key(&self, id: &ApiKeyId) -> Result<Option<ApiKeyRecord>, StoreError> {
        let id = id.clone();
        on_conn!(self, |c| ops::key(c, &id))
    }

    async fn revoke_key(&self, id: &ApiKeyId, now: Timestamp) -> Result<bool, StoreError> {
        let id = id.clone();
        on_write_conn!(self, |c| ops::revoke_key(c, &id, now))
    }

    async fn has_admin_key(&self) -> Result<bool, StoreError> {
        on_conn!(self, |c| ops::has_admin_key(c))
    }

    async fn list_keys(&self, query: &KeyQuery) -> Result<Option<KeyPage>, StoreError> {
        let query = query.clone();
        on_conn!(self, |c| ops::list_keys(c, &query))
    }

    async fn touch_key(&self, id: &ApiKeyId, minute: Timestamp) -> Result<(), StoreError> {
        let id = id.clone();
        on_write_conn!(self, |c| ops::touch_key(c, &id, minute))
    }

    async fn insert_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        let session = session.clone();
        on_write_conn!(self, |c| ops::insert_session(c, &session))
    }

    async fn session_by_hash(&self, hash: &str) -> Result<Option<SessionRecord>, StoreError> {
        let hash = hash.to_owned();
        on_conn!(self, |c| ops::session_by_hash(c, &hash))
    }

    async fn end_session(&self, hash: &str, now: Timestamp) -> Result<(), StoreError> {
        let hash = hash.to_owned();
        on_write_conn!(self, |c| ops::end_session(c, &hash, now))
    }
}

#[async_trait]
impl EventStore for DieselStore {
    async fn record_event(
        &self,
        gateway: &str,
        event_id: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let (gateway, event_id) = (gateway.to_owned(), event_id.to_owned());
        on_write_conn!(self, |c| ops::record_event(c, &gateway, &event_id, now))
    }

    async fn event_seen(&self, gateway: &str, event_id: &str) -> Result<bool, StoreError> {
        let (gateway, event_id) = (gateway.to_owned(), event_id.to_owned());
        on_conn!(self, |c| ops::event_seen(c, &gateway, &event_id))
    }
}
