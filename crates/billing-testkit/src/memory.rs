//! `InMemoryStore`: every storage port, in one process's memory, behind one mutex. It applies
//! the same pure rules as the Diesel store and passes the same contract suite; it is for unit
//! tests of the core and for demos, never for money that must survive a restart.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use billing_core::autotopup::{
    AfterDebit, AutoTopUpDecision, AutoTopUpSettings, AutoTopUpState, REASON_NO_PAYMENT_METHOD,
    SavedMethod, after_auto_topup, decide_auto_topup,
};
use billing_core::controls::{
    MonthSpend, SpendingLimit, apply_spending, check_spending, refundable_this_month,
};
use billing_core::holds::{
    Hold, HoldAction, HoldRuleError, HoldStatus, check_new_hold, decide_hold, reserved_at,
};
use billing_core::ids::{AccountId, ApiKeyId, EntryId, HoldId, PackId, TopUpId};
use billing_core::ledger::{LedgerEntry, NewEntry, check_refund, plan_posting};
use billing_core::money::Credits;
use billing_core::notices::{
    Cause, Channel, Debit, LowBalanceAlert, Notice, NoticeSettings, Topic, debit_notices,
};
use billing_core::ports::{
    Account, AccountStore, ApiKeyRecord, ApiKeyStore, ControlsStore, EntryQuery, EventStore,
    HoldError, HoldOutcome, HoldStore, IdempotencyClaim, InsertTopUpError, Inserted, KeyPage,
    KeyQuery, LedgerStore, OutboxItem, OutboxOutcome, OutboxStore, PackStore, PostError, Posted,
    Posting, RateStore, Readiness, SessionRecord, StoreError, TopUpPage, TopUpStore,
    TransitionOutcome, Wallet,
};
use billing_core::pricing::Rate;
use billing_core::time::Timestamp;
use billing_core::topup::{Pack, TopUp, TopUpOrigin, TopUpStatus, Transition, decide_transition};

#[derive(Default)]
struct State {
    accounts: BTreeMap<AccountId, (Account, Credits)>,
    entries: Vec<LedgerEntry>,
    refund_links: Vec<(EntryId, EntryId)>,
    claims: HashMap<(String, String), (String, String)>,
    topups: Vec<TopUp>,
    packs: BTreeMap<PackId, Pack>,
    keys: Vec<ApiKeyRecord>,
    sessions: Vec<SessionRecord>,
    events: HashSet<(String, String)>,
    rates: BTreeMap<String, Rate>,
    holds: Vec<Hold>,
    spending: HashMap<AccountId, (SpendingLimit, MonthSpend)>,
    alerts: HashMap<AccountId, LowBalanceAlert>,
    limit_told: HashMap<AccountId, Timestamp>,
    /// Items, whether still pending, and when each is next due.
    outbox: Vec<(OutboxItem, bool, Timestamp)>,
    auto: HashMap<AccountId, (AutoTopUpSettings, AutoTopUpState)>,
    methods: HashMap<AccountId, SavedMethod>,
}

/// All storage ports in memory.
#[derive(Default)]
pub struct InMemoryStore {
    state: Mutex<State>,
}

impl InMemoryStore {
    /// An empty store: no accounts, entries, packs, rates or outbox items.
    pub fn new() -> InMemoryStore {
        InMemoryStore::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        self.state
            .lock()
            .map_err(|_| StoreError::Unavailable("in-memory store poisoned".into()))
    }
}

impl State {
    fn spending_of(&self, account_id: &AccountId, now: Timestamp) -> (SpendingLimit, MonthSpend) {
        self.spending
            .get(account_id)
            .cloned()
            .unwrap_or_else(|| (SpendingLimit::default(), MonthSpend::empty(now)))
    }

    /// Writes the notices a debit tells to the outbox (see `billing_core::notices`).
    fn notify_debit(
        &mut self,
        account_id: &AccountId,
        before: Credits,
        planned: &[LedgerEntry],
        now: Timestamp,
    ) {
        let Some(last) = planned.last() else { return };
        let (limit, spend) = self.spending_of(account_id, now);
        let settings = NoticeSettings {
            alert: self.alerts.get(account_id).cloned().unwrap_or_default(),
            limit,
            limit_reached_month: self.limit_told.get(account_id).copied(),
        };
        let (notices, told) = debit_notices(
            &settings,
            &Debit {
                account_id,
                entry_id: last.id.as_str(),
                balance_before: before,
                balance_after: last.balance_after,
                spend_after: spend,
                now,
            },
        );
        if let Some(told) = told {
            self.limit_told.insert(account_id.clone(), told);
        }
        self.enqueue(notices);
    }

    /// [`decide_auto_topup`] after a debit.
    fn auto_after_debit(
        &mut self,
        account_id: &AccountId,
        before: Credits,
        planned: &[LedgerEntry],
        now: Timestamp,
    ) {
        let Some(last) = planned.last() else { return };
        if last.balance_after >= before {
            return;
        }
        let Some((settings, state)) = self.auto.get(account_id).cloned() else {
            return;
        };
        let method = self.methods.get(account_id).cloned();
        let debit = AfterDebit {
            account_id,
            entry_id: last.id.as_str(),
            balance_after: last.balance_after,
            now,
        };
        match decide_auto_topup(&settings, &state, method.as_ref(), &debit) {
            AutoTopUpDecision::Nothing => {}
            AutoTopUpDecision::Start { topup, state } => {
                let charge = Notice::new(
                    Topic::AutoTopUpCharge,
                    account_id,
                    last.balance_after,
                    Cause::TopUp(topup.id.as_str().to_owned()),
                    now,
                );
                self.topups.push(topup);
                self.auto.insert(account_id.clone(), (settings, state));
                self.enqueue(vec![charge]);
            }
            AutoTopUpDecision::CapReached { state, notice } => {
                self.auto.insert(account_id.clone(), (settings, state));
                self.enqueue(vec![notice]);
            }
        }
    }

    fn enqueue(&mut self, notices: Vec<Notice>) {
        for notice in notices {
            for channel in Channel::for_topic(notice.topic) {
                let due = notice.created_at;
                self.outbox.push((
                    OutboxItem {
                        notice: notice.clone(),
                        channel: *channel,
                        attempts: 0,
                        lease_until: due,
                    },
                    true,
                    due,
                ));
            }
        }
    }

    fn reserved(&self, account_id: &AccountId, now: Timestamp) -> Result<Credits, StoreError> {
        reserved_at(
            self.holds.iter().filter(|h| &h.account_id == account_id),
            now,
        )
        .map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    fn hold_outcome(&self, hold_id: &str, replayed: bool) -> Result<HoldOutcome, HoldError> {
        let hold = self
            .holds
            .iter()
            .find(|h| h.id.as_str() == hold_id)
            .cloned()
            .ok_or_else(|| StoreError::Corrupt(format!("claimed hold {hold_id} is missing")))?;
        let entry = hold
            .entry_id
            .as_ref()
            .and_then(|id| self.entries.iter().find(|e| &e.id == id).cloned());
        Ok(HoldOutcome {
            hold,
            entry,
            replayed,
        })
    }

    /// A claimed key: the first result, or a conflict.
    fn replay(&self, claim: Option<&IdempotencyClaim>) -> Result<Option<HoldOutcome>, HoldError> {
        let Some(claim) = claim else { return Ok(None) };
        match self.claims.get(&(claim.scope.clone(), claim.key.clone())) {
            None => Ok(None),
            Some((fingerprint, _)) if fingerprint != &claim.fingerprint => {
                Err(HoldError::IdempotencyConflict)
            }
            Some((_, hold_id)) => self.hold_outcome(hold_id, true).map(Some),
        }
    }

    fn remember(&mut self, claim: Option<&IdempotencyClaim>, hold_id: &HoldId) {
        if let Some(claim) = claim {
            self.claims.insert(
                (claim.scope.clone(), claim.key.clone()),
                (claim.fingerprint.clone(), hold_id.as_str().to_owned()),
            );
        }
    }

    fn entries_by_ids(&self, ids: &[&str]) -> Vec<LedgerEntry> {
        self.entries
            .iter()
            .filter(|e| ids.contains(&e.id.as_str()))
            .cloned()
            .collect()
    }

    fn append(&mut self, account_id: &AccountId, planned: &[LedgerEntry]) {
        if let Some(last) = planned.last() {
            if let Some((_, balance)) = self.accounts.get_mut(account_id) {
                *balance = last.balance_after;
            }
            self.entries.extend_from_slice(planned);
        }
    }

    fn post(&mut self, posting: &Posting) -> Result<Posted, PostError> {
        let balance = match self.accounts.get(&posting.account_id) {
            Some((_, balance)) => *balance,
            None => return Err(PostError::AccountNotFound),
        };
        if let Some(claim) = &posting.idempotency
            && let Some((fingerprint, result)) =
                self.claims.get(&(claim.scope.clone(), claim.key.clone()))
        {
            if fingerprint != &claim.fingerprint {
                return Err(PostError::IdempotencyConflict);
            }
            let ids: Vec<&str> = result.split(',').collect();
            return Ok(Posted {
                entries: self.entries_by_ids(&ids),
                replayed: true,
            });
        }
        if !posting.refund_of.is_empty() {
            let ids: Vec<&str> = posting.refund_of.iter().map(EntryId::as_str).collect();
            let targets = self.entries_by_ids(&ids);
            let earlier: HashSet<&EntryId> = self
                .refund_links
                .iter()
                .filter(|(_, target)| posting.refund_of.contains(target))
                .map(|(refund, _)| refund)
                .collect();
            let corrupt = |e: billing_core::money::AmountError| StoreError::Corrupt(e.to_string());
            let earlier_amounts = self
                .entries
                .iter()
                .filter(|e| earlier.contains(&e.id))
                .map(|e| e.amount);
            let already = Credits::sum(earlier_amounts).map_err(corrupt)?;
            let requested =
                Credits::sum(posting.entries.iter().map(|e| e.amount)).map_err(corrupt)?;
            check_refund(
                &posting.account_id,
                &posting.refund_of,
                &targets,
                already,
                requested,
            )?;
        }
        let reserved = self.reserved(&posting.account_id, posting.now)?;
        let (limit, spend) = self.spending_of(&posting.account_id, posting.now);
        let ids: Vec<&str> = posting.refund_of.iter().map(EntryId::as_str).collect();
        let refundable = refundable_this_month(
            spend,
            self.entries_by_ids(&ids)
                .iter()
                .map(|t| (t.created_at, t.amount)),
            posting.now,
        )?;
        let spend = apply_spending(
            &limit,
            spend,
            reserved,
            posting.entries.iter().map(|e| (e.kind, e.amount)),
            refundable,
            posting.now,
            true,
        )?;
        let planned = plan_posting(
            &posting.account_id,
            balance,
            reserved,
            &posting.entries,
            posting.now,
        )?;
        self.append(&posting.account_id, &planned);
        self.spending
            .insert(posting.account_id.clone(), (limit, spend));
        self.notify_debit(&posting.account_id, balance, &planned, posting.now);
        self.auto_after_debit(&posting.account_id, balance, &planned, posting.now);
        if let Some(claim) = &posting.idempotency {
            let ids: Vec<&str> = planned.iter().map(|e| e.id.as_str()).collect();
            self.claims.insert(
                (claim.scope.clone(), claim.key.clone()),
                (claim.fingerprint.clone(), ids.join(",")),
            );
        }
        for refund in &planned {
            for target in &posting.refund_of {
                self.refund_links.push((refund.id.clone(), target.clone()));
            }
        }
        Ok(Posted {
            entries: planned,
            replayed: false,
        })
    }
}

#[async_trait]
impl AccountStore for InMemoryStore {
    async fn insert_account(&self, account: &Account) -> Result<(), StoreError> {
        let mut state = self.lock()?;
        if state.accounts.contains_key(&account.id) {
            return Err(StoreError::Duplicate(format!("account {}", account.id)));
        }
        state
            .accounts
            .insert(account.id.clone(), (account.clone(), Credits::ZERO));
        Ok(())
    }

    async fn account(&self, id: &AccountId) -> Result<Option<Account>, StoreError> {
        Ok(self.lock()?.accounts.get(id).map(|(a, _)| a.clone()))
    }

    async fn wallet(&self, id: &AccountId) -> Result<Option<Wallet>, StoreError> {
        Ok(self.lock()?.accounts.get(id).map(|(_, balance)| Wallet {
            account_id: id.clone(),
            balance: *balance,
        }))
    }

    async fn account_ids(
        &self,
        after: Option<&AccountId>,
        limit: u32,
    ) -> Result<Vec<AccountId>, StoreError> {
        let state = self.lock()?;
        Ok(state
            .accounts
            .keys()
            .filter(|id| after.is_none_or(|a| *id > a))
            .take(limit as usize)
            .cloned()
            .collect())
    }
}

#[async_trait]
impl LedgerStore for InMemoryStore {
    async fn post(&self, posting: Posting) -> Result<Posted, PostError> {
        self.lock()?.post(&posting)
    }

    async fn entries(
        &self,
        account_id: &AccountId,
        query: &EntryQuery,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        let state = self.lock()?;
        let mine: Vec<&LedgerEntry> = state
            .entries
            .iter()
            .filter(|e| &e.account_id == account_id)
            .collect();
        let end = match &query.before {
            Some(before) => match mine.iter().position(|e| &e.id == before) {
                Some(position) => position,
                None => return Ok(Vec::new()),
            },
            None => mine.len(),
        };
        let start = match &query.after {
            Some(after) => match mine.iter().position(|e| &e.id == after) {
                Some(position) => position + 1,
                None => return Ok(Vec::new()),
            },
            None => 0,
        };
        Ok(mine[start.min(end)..end]
            .iter()
            .rev()
            .filter(|e| query.kind.is_none_or(|k| e.kind == k))
            .filter(|e| query.from.is_none_or(|from| e.created_at >= from))
            .filter(|e| query.to.is_none_or(|to| e.created_at < to))
            .take(query.limit as usize)
            .map(|e| (*e).clone())
            .collect())
    }

    async fn entry(
        &self,
        account_id: &AccountId,
        id: &EntryId,
    ) -> Result<Option<LedgerEntry>, StoreError> {
        Ok(self
            .lock()?
            .entries
            .iter()
            .find(|e| &e.id == id && &e.account_id == account_id)
            .cloned())
    }

    async fn history(&self, account_id: &AccountId) -> Result<Vec<LedgerEntry>, StoreError> {
        Ok(self
            .lock()?
            .entries
            .iter()
            .filter(|e| &e.account_id == account_id)
            .cloned()
            .collect())
    }
}

#[async_trait]
impl TopUpStore for InMemoryStore {
    async fn insert_topup(
        &self,
        topup: &TopUp,
        idempotency: Option<&IdempotencyClaim>,
    ) -> Result<Inserted<TopUp>, InsertTopUpError> {
        let mut state = self.lock()?;
        if let Some(claim) = idempotency
            && let Some((fingerprint, result)) =
                state.claims.get(&(claim.scope.clone(), claim.key.clone()))
        {
            if fingerprint != &claim.fingerprint {
                return Err(InsertTopUpError::IdempotencyConflict);
            }
            let first = state
                .topups
                .iter()
                .find(|t| t.id.as_str() == result)
                .cloned()
                .ok_or_else(|| StoreError::Corrupt(format!("missing top-up {result}")))?;
            return Ok(Inserted::Replayed(first));
        }
        if state.topups.iter().any(|t| t.id == topup.id) {
            return Err(StoreError::Duplicate(format!("top-up {}", topup.id)).into());
        }
        state.topups.push(topup.clone());
        if let Some(claim) = idempotency {
            state.claims.insert(
                (claim.scope.clone(), claim.key.clone()),
                (claim.fingerprint.clone(), topup.id.as_str().to_owned()),
            );
        }
        Ok(Inserted::New(topup.clone()))
    }

    async fn set_checkout(
        &self,
        id: &TopUpId,
        payment_ref: &str,
        checkout_url: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut state = self.lock()?;
        let Some(gateway) = state
            .topups
            .iter()
            .find(|t| &t.id == id)
            .map(|t| t.gateway.clone())
        else {
            return Ok(());
        };
        if state.topups.iter().any(|t| {
            &t.id != id && t.gateway == gateway && t.payment_ref.as_deref() == Some(payment_ref)
        }) {
            return Err(StoreError::Duplicate(format!("payment {payment_ref}")));
        }
        if let Some(t) = state
            .topups
            .iter_mut()
            .find(|t| &t.id == id && t.payment_ref.is_none())
        {
            t.payment_ref = Some(payment_ref.to_owned());
            t.checkout_url = Some(checkout_url.to_owned());
            t.updated_at = now;
        }
        Ok(())
    }

    async fn topup(&self, id: &TopUpId) -> Result<Option<TopUp>, StoreError> {
        Ok(self.lock()?.topups.iter().find(|t| &t.id == id).cloned())
    }

    async fn topup_by_payment_ref(
        &self,
        gateway: &str,
        payment_ref: &str,
    ) -> Result<Option<TopUp>, StoreError> {
        Ok(self
            .lock()?
            .topups
            .iter()
            .find(|t| t.gateway == gateway && t.payment_ref.as_deref() == Some(payment_ref))
            .cloned())
    }

    async fn transition_topup(
        &self,
        id: &TopUpId,
        target: TopUpStatus,
        entries: Vec<NewEntry>,
        failure_reason: Option<String>,
        now: Timestamp,
    ) -> Result<Option<TransitionOutcome>, StoreError> {
        let mut state = self.lock()?;
        let Some(topup) = state.topups.iter().find(|t| &t.id == id).cloned() else {
            return Ok(None);
        };
        match decide_transition(topup.status, target) {
            Transition::AlreadyDone => return Ok(Some(TransitionOutcome::AlreadyDone(topup))),
            Transition::Refused => return Ok(Some(TransitionOutcome::Refused(topup))),
            Transition::Apply => {}
        }
        let mut credited = Vec::new();
        if target == TopUpStatus::Completed {
            let balance = state
                .accounts
                .get(&topup.account_id)
                .map(|(_, b)| *b)
                .ok_or_else(|| StoreError::Corrupt(format!("top-up {id} has no wallet")))?;
            credited = plan_posting(&topup.account_id, balance, Credits::ZERO, &entries, now)
                .map_err(|e| StoreError::Corrupt(format!("top-up {id}: {e}")))?;
            state.append(&topup.account_id, &credited);
        }
        let reason = match target {
            TopUpStatus::Failed => failure_reason,
            _ => None,
        };
        let Some(stored) = state.topups.iter_mut().find(|t| &t.id == id) else {
            return Ok(None);
        };
        stored.status = target;
        stored.failure_reason = reason;
        stored.updated_at = now;
        let topup = stored.clone();
        let balance = state
            .accounts
            .get(&topup.account_id)
            .map(|(_, b)| *b)
            .unwrap_or(Credits::ZERO);
        let cause = Cause::TopUp(topup.id.as_str().to_owned());
        let notice = if target == TopUpStatus::Completed {
            let added = Credits::sum(credited.iter().map(|e| e.amount))
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            Notice {
                amount: Some(added),
                ..Notice::new(
                    Topic::TopUpCompleted,
                    &topup.account_id,
                    balance,
                    cause,
                    now,
                )
            }
        } else {
            Notice {
                reason: topup.failure_reason.clone(),
                ..Notice::new(Topic::TopUpFailed, &topup.account_id, balance, cause, now)
            }
        };
        state.enqueue(vec![notice]);
        if topup.origin() == TopUpOrigin::AutoTopUp
            && let Some((mut settings, auto)) = state.auto.get(&topup.account_id).cloned()
        {
            let (auto, enabled, notices) = after_auto_topup(&settings, &auto, &topup, balance, now);
            settings.enabled = enabled;
            state
                .auto
                .insert(topup.account_id.clone(), (settings, auto));
            state.enqueue(notices);
        }
        Ok(Some(TransitionOutcome::Applied {
            topup,
            entries: credited,
        }))
    }

    async fn topup_page(
        &self,
        account_id: &AccountId,
        status: Option<TopUpStatus>,
        page: u32,
        per_page: u32,
    ) -> Result<TopUpPage, StoreError> {
        let state = self.lock()?;
        let mine: Vec<&TopUp> = state
            .topups
            .iter()
            .rev()
            .filter(|t| &t.account_id == account_id)
            .filter(|t| status.is_none_or(|s| t.status == s))
            .collect();
        let skip = (page.saturating_sub(1) as usize).saturating_mul(per_page as usize);
        Ok(TopUpPage {
            total: mine.len() as u64,
            topups: mine
                .into_iter()
                .skip(skip)
                .take(per_page as usize)
                .cloned()
                .collect(),
        })
    }

    async fn pending_topups(
        &self,
        created_before: Timestamp,
        limit: u32,
    ) -> Result<Vec<TopUp>, StoreError> {
        let state = self.lock()?;
        let mut pending: Vec<TopUp> = state
            .topups
            .iter()
            .filter(|t| t.status == TopUpStatus::Pending && t.created_at < created_before)
            .cloned()
            .collect();
        pending.sort_by_key(|t| (t.updated_at, t.created_at));
        pending.truncate(limit as usize);
        Ok(pending)
    }

    async fn touch_pending_topup(&self, id: &TopUpId, now: Timestamp) -> Result<(), StoreError> {
        let mut state = self.lock()?;
        if let Some(t) = state
            .topups
            .iter_mut()
            .find(|t| &t.id == id && t.status == TopUpStatus::Pending)
        {
            t.updated_at = now;
        }
        Ok(())
    }
}

#[async_trait]
impl PackStore for InMemoryStore {
    async fn upsert_pack(&self, pack: &Pack) -> Result<(), StoreError> {
        self.lock()?.packs.insert(pack.id.clone(), pack.clone());
        Ok(())
    }

    async fn pack(&self, id: &PackId) -> Result<Option<Pack>, StoreError> {
        Ok(self.lock()?.packs.get(id).cloned())
    }

    async fn packs(&self, include_inactive: bool) -> Result<Vec<Pack>, StoreError> {
        let mut packs: Vec<Pack> = self
            .lock()?
            .packs
            .values()
            .filter(|p| include_inactive || p.active)
            .cloned()
            .collect();
        packs.sort_by(|a, b| (a.price.minor_units(), &a.id).cmp(&(b.price.minor_units(), &b.id)));
        Ok(packs)
    }
}

#[async_trait]
impl ControlsStore for InMemoryStore {
    async fn spending(
        &self,
        account_id: &AccountId,
    ) -> Result<Option<(SpendingLimit, MonthSpend)>, StoreError> {
        let state = self.lock()?;
        if !state.accounts.contains_key(account_id) {
            return Ok(None);
        }
        Ok(Some(state.spending.get(account_id).cloned().unwrap_or((
            SpendingLimit::default(),
            MonthSpend {
                month_start: Timestamp::from_micros(0),
                spent: Credits::ZERO,
            },
        ))))
    }

    async fn set_spending_limit(
        &self,
        account_id: &AccountId,
        limit: &SpendingLimit,
    ) -> Result<bool, StoreError> {
        let mut state = self.lock()?;
        if !state.accounts.contains_key(account_id) {
            return Ok(false);
        }
        let spend = state
            .spending
            .get(account_id)
            .map(|(_, spend)| *spend)
            .unwrap_or(MonthSpend {
                month_start: Timestamp::from_micros(0),
                spent: Credits::ZERO,
            });
        let unchanged = state.spending.get(account_id).map(|(l, _)| l) == Some(limit);
        state
            .spending
            .insert(account_id.clone(), (limit.clone(), spend));
        if !unchanged {
            state.limit_told.remove(account_id);
        }
        Ok(true)
    }

    async fn low_balance_alert(
        &self,
        account_id: &AccountId,
    ) -> Result<Option<LowBalanceAlert>, StoreError> {
        let state = self.lock()?;
        if !state.accounts.contains_key(account_id) {
            return Ok(None);
        }
        Ok(Some(
            state.alerts.get(account_id).cloned().unwrap_or_default(),
        ))
    }

    async fn set_low_balance_alert(
        &self,
        account_id: &AccountId,
        alert: &LowBalanceAlert,
    ) -> Result<bool, StoreError> {
        let mut state = self.lock()?;
        if !state.accounts.contains_key(account_id) {
            return Ok(false);
        }
        state.alerts.insert(account_id.clone(), alert.clone());
        Ok(true)
    }

    async fn auto_topup(
        &self,
        account_id: &AccountId,
    ) -> Result<Option<(AutoTopUpSettings, AutoTopUpState)>, StoreError> {
        let state = self.lock()?;
        if !state.accounts.contains_key(account_id) {
            return Ok(None);
        }
        Ok(Some(state.auto.get(account_id).cloned().unwrap_or_else(
            || (AutoTopUpSettings::off(), AutoTopUpState::new()),
        )))
    }

    async fn set_auto_topup(
        &self,
        account_id: &AccountId,
        settings: &AutoTopUpSettings,
    ) -> Result<bool, StoreError> {
        let mut state = self.lock()?;
        if !state.accounts.contains_key(account_id) {
            return Ok(false);
        }
        let mut auto = state
            .auto
            .get(account_id)
            .map(|(_, s)| s.clone())
            .unwrap_or_default();
        auto.disabled_reason = None;
        auto.failures = 0;
        state
            .auto
            .insert(account_id.clone(), (settings.clone(), auto));
        Ok(true)
    }

    async fn payment_method(
        &self,
        account_id: &AccountId,
    ) -> Result<Option<SavedMethod>, StoreError> {
        Ok(self.lock()?.methods.get(account_id).cloned())
    }

    async fn save_payment_method(
        &self,
        account_id: &AccountId,
        method: &SavedMethod,
    ) -> Result<bool, StoreError> {
        let mut state = self.lock()?;
        if !state.accounts.contains_key(account_id) {
            return Ok(false);
        }
        state.methods.insert(account_id.clone(), method.clone());
        Ok(true)
    }

    async fn delete_payment_method(&self, account_id: &AccountId) -> Result<bool, StoreError> {
        let mut state = self.lock()?;
        if state.methods.remove(account_id).is_none() {
            return Ok(false);
        }
        if let Some((settings, auto)) = state.auto.get_mut(account_id)
            && settings.enabled
        {
            settings.enabled = false;
            auto.disabled_reason = Some(REASON_NO_PAYMENT_METHOD.to_owned());
        }
        Ok(true)
    }
}

#[async_trait]
impl Readiness for InMemoryStore {
    async fn ready(&self) -> Result<(), StoreError> {
        self.lock().map(|_| ())
    }
}

#[async_trait]
impl OutboxStore for InMemoryStore {
    async fn claim_outbox(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let mut state = self.lock()?;
        let mut due: Vec<&mut (OutboxItem, bool, Timestamp)> = state
            .outbox
            .iter_mut()
            .filter(|(_, pending, at)| *pending && *at <= now)
            .collect();
        due.sort_by_key(|(_, _, at)| *at);
        Ok(due
            .into_iter()
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .map(|entry| {
                entry.2 = lease_until;
                entry.0.lease_until = lease_until;
                entry.0.clone()
            })
            .collect())
    }

    async fn finish_outbox(
        &self,
        item: &OutboxItem,
        outcome: &OutboxOutcome,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let mut state = self.lock()?;
        let Some(entry) = state.outbox.iter_mut().find(|(stored, pending, due)| {
            *pending
                && *due == item.lease_until
                && stored.notice.id == item.notice.id
                && stored.channel == item.channel
        }) else {
            return Ok(false);
        };
        entry.0.attempts += 1;
        match outcome {
            OutboxOutcome::Delivered | OutboxOutcome::GaveUp { .. } => {
                entry.1 = false;
                entry.2 = now;
            }
            OutboxOutcome::Retry { at, .. } => entry.2 = *at,
        }
        Ok(true)
    }

    async fn outbox_depth(&self) -> Result<(u64, Option<Timestamp>), StoreError> {
        let state = self.lock()?;
        let pending = state.outbox.iter().filter(|(_, pending, _)| *pending);
        let count = pending.clone().count();
        let oldest = pending.map(|(item, _, _)| item.notice.created_at).min();
        Ok((u64::try_from(count).unwrap_or(u64::MAX), oldest))
    }
}

#[async_trait]
impl HoldStore for InMemoryStore {
    async fn place_hold(
        &self,
        hold: &Hold,
        idempotency: Option<&IdempotencyClaim>,
        now: Timestamp,
    ) -> Result<HoldOutcome, HoldError> {
        let mut state = self.lock()?;
        let balance = match state.accounts.get(&hold.account_id) {
            Some((_, balance)) => *balance,
            None => return Err(HoldError::AccountNotFound),
        };
        if let Some(replayed) = state.replay(idempotency)? {
            return Ok(replayed);
        }
        let reserved = state.reserved(&hold.account_id, now)?;
        check_new_hold(balance, reserved, hold.amount).map_err(HoldRuleError::from)?;
        let (limit, spend) = state.spending_of(&hold.account_id, now);
        check_spending(&limit, spend.at(now), reserved, hold.amount)
            .map_err(HoldRuleError::from)?;
        state.holds.push(hold.clone());
        state.remember(idempotency, &hold.id);
        state.hold_outcome(hold.id.as_str(), false)
    }

    async fn change_hold(
        &self,
        account_id: &AccountId,
        id: &HoldId,
        action: &HoldAction,
        idempotency: Option<&IdempotencyClaim>,
        now: Timestamp,
    ) -> Result<HoldOutcome, HoldError> {
        let mut state = self.lock()?;
        let balance = match state.accounts.get(account_id) {
            Some((_, balance)) => *balance,
            None => return Err(HoldError::AccountNotFound),
        };
        if let Some(replayed) = state.replay(idempotency)? {
            return Ok(replayed);
        }
        let index = state
            .holds
            .iter()
            .position(|h| &h.id == id && &h.account_id == account_id)
            .ok_or(HoldError::HoldNotFound)?;
        let reserved = state.reserved(account_id, now)?;
        let change = decide_hold(&state.holds[index], action, balance, reserved, now)?;
        let (limit, spend) = state.spending_of(account_id, now);
        let before = state.holds[index].amount;
        if change.hold.amount > before {
            let increase = change
                .hold
                .amount
                .checked_sub(before)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            check_spending(&limit, spend.at(now), reserved, increase)
                .map_err(HoldRuleError::from)?;
        }
        let spend = apply_spending(
            &limit,
            spend,
            reserved,
            change.entries.iter().map(|e| (e.kind, e.amount)),
            Credits::ZERO,
            now,
            false,
        )
        .map_err(HoldRuleError::from)?;
        state.spending.insert(account_id.clone(), (limit, spend));
        state.append(account_id, &change.entries);
        state.notify_debit(account_id, balance, &change.entries, now);
        state.auto_after_debit(account_id, balance, &change.entries, now);
        state.holds[index] = change.hold;
        state.remember(idempotency, id);
        state.hold_outcome(id.as_str(), false)
    }

    async fn hold(&self, id: &HoldId) -> Result<Option<Hold>, StoreError> {
        Ok(self.lock()?.holds.iter().find(|h| &h.id == id).cloned())
    }

    async fn reserved(
        &self,
        account_id: &AccountId,
        now: Timestamp,
    ) -> Result<Credits, StoreError> {
        self.lock()?.reserved(account_id, now)
    }

    async fn expire_holds(&self, now: Timestamp, limit: u32) -> Result<u32, StoreError> {
        let mut state = self.lock()?;
        // Soonest expiry first, as the Diesel store does.
        let mut due: Vec<usize> = (0..state.holds.len())
            .filter(|i| {
                let hold = &state.holds[*i];
                hold.status == HoldStatus::Active && hold.expires_at <= now
            })
            .collect();
        due.sort_by_key(|i| state.holds[*i].expires_at);
        due.truncate(limit as usize);
        for i in &due {
            state.holds[*i].status = HoldStatus::Expired;
            state.holds[*i].updated_at = now;
        }
        Ok(u32::try_from(due.len()).unwrap_or(u32::MAX))
    }
}

#[async_trait]
impl RateStore for InMemoryStore {
    async fn upsert_rate(&self, rate: &Rate, _now: Timestamp) -> Result<(), StoreError> {
        self.lock()?.rates.insert(rate.model.clone(), rate.clone());
        Ok(())
    }

    async fn delete_rate(&self, model: &str) -> Result<bool, StoreError> {
        Ok(self.lock()?.rates.remove(model).is_some())
    }

    async fn rate(&self, model: &str) -> Result<Option<Rate>, StoreError> {
        Ok(self.lock()?.rates.get(model).cloned())
    }

    async fn rates(&self) -> Result<Vec<Rate>, StoreError> {
        Ok(self.lock()?.rates.values().cloned().collect())
    }
}

#[async_trait]
impl ApiKeyStore for InMemoryStore {
    async fn insert_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        let mut state = self.lock()?;
        if state
            .keys
            .iter()
            .any(|k| k.id == key.id || k.hash == key.hash)
        {
            return Err(StoreError::Duplicate(format!("key {}", key.id)));
        }
        state.keys.push(key.clone());
        Ok(())
    }

    async fn key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        Ok(self.lock()?.keys.iter().find(|k| k.hash == hash).cloned())
    }

    async fn key(&self, id: &ApiKeyId) -> Result<Option<ApiKeyRecord>, StoreError> {
        Ok(self.lock()?.keys.iter().find(|k| &k.id == id).cloned())
    }

    async fn revoke_key(&self, id: &ApiKeyId, now: Timestamp) -> Result<bool, StoreError> {
        let mut state = self.lock()?;
        match state.keys.iter_mut().find(|k| &k.id == id) {
            Some(key) => {
                key.revoked_at.get_or_insert(now);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn has_admin_key(&self) -> Result<bool, StoreError> {
        Ok(self
            .lock()?
            .keys
            .iter()
            .any(|k| k.scope == billing_core::ports::KeyScope::Admin && k.revoked_at.is_none()))
    }

    async fn list_keys(&self, query: &KeyQuery) -> Result<Option<KeyPage>, StoreError> {
        let state = self.lock()?;
        let mut keys: Vec<&ApiKeyRecord> = state
            .keys
            .iter()
            .filter(|k| query.account_id.is_none() || k.account_id == query.account_id)
            .collect();
        keys.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        let start = match &query.after {
            None => 0,
            Some(after) => match keys.iter().position(|k| &k.id == after) {
                Some(i) => i + 1,
                None => return Ok(None),
            },
        };
        let rest = &keys[start..];
        let limit = query.limit as usize;
        Ok(Some(KeyPage {
            keys: rest.iter().take(limit).map(|k| (*k).clone()).collect(),
            has_more: rest.len() > limit,
        }))
    }

    async fn touch_key(&self, id: &ApiKeyId, minute: Timestamp) -> Result<(), StoreError> {
        let mut state = self.lock()?;
        if let Some(key) = state.keys.iter_mut().find(|k| &k.id == id)
            && key.last_used_at.is_none_or(|at| at < minute)
        {
            key.last_used_at = Some(minute);
        }
        Ok(())
    }

    async fn insert_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        let mut state = self.lock()?;
        if state.sessions.iter().any(|s| s.hash == session.hash) {
            return Err(StoreError::Duplicate("session".to_owned()));
        }
        state.sessions.push(session.clone());
        Ok(())
    }

    async fn session_by_hash(&self, hash: &str) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self
            .lock()?
            .sessions
            .iter()
            .find(|s| s.hash == hash)
            .cloned())
    }

    async fn end_session(&self, hash: &str, now: Timestamp) -> Result<(), StoreError> {
        let mut state = self.lock()?;
        if let Some(session) = state.sessions.iter_mut().find(|s| s.hash == hash) {
            session.ended_at.get_or_insert(now);
        }
        Ok(())
    }
}

#[async_trait]
impl EventStore for InMemoryStore {
    async fn record_event(
        &self,
        gateway: &str,
        event_id: &str,
        _now: Timestamp,
    ) -> Result<bool, StoreError> {
        Ok(self
            .lock()?
            .events
            .insert((gateway.to_owned(), event_id.to_owned())))
    }

    async fn event_seen(&self, gateway: &str, event_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .lock()?
            .events
            .contains(&(gateway.to_owned(), event_id.to_owned())))
    }
}
