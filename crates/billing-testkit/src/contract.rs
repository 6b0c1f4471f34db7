//! The storage contract suite: what every adapter of the storage ports must do, checked the
//! same way against the in-memory store, SQLite and PostgreSQL.
//!
//! Each check takes two handles on one fresh, empty store. For the Diesel store they are two
//! separate connection pools on the same database, as two server processes would be; races
//! are spread over both.
//!
//! Use [`crate::store_contract_tests!`] to generate one `#[tokio::test]` per check.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use billing_core::Decimal;
use billing_core::controls::{LimitAction, SpendingLimit};
use billing_core::holds::{Hold, HoldAction, HoldRuleError, HoldStatus};
use billing_core::ids::{AccountId, ApiKeyId, EntryId, HoldId, PackId, TopUpId};
use billing_core::ledger::{
    EntryKind, LedgerEntry, NewEntry, PostingRuleError, RefundRuleError, verify_history,
};
use billing_core::money::{Credits, Currency, Money};
use billing_core::notices::{Channel, LowBalanceAlert, Topic};
use billing_core::ports::{
    Account, ApiKeyRecord, EntryQuery, HoldError, IdempotencyClaim, InsertTopUpError, Inserted,
    KeyPage, KeyQuery, KeyScope, OutboxOutcome, PostError, Posted, Posting, SessionRecord, Store,
    StoreError, TransitionOutcome,
};
use billing_core::pricing::Rate;
use billing_core::time::Timestamp;
use billing_core::topup::{Pack, TopUp, TopUpStatus};

/// A store handle as the contract sees it.
pub type Handle = Arc<dyn Store>;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next(prefix: &str) -> String {
    format!("{prefix}_c{:08}", NEXT_ID.fetch_add(1, Ordering::SeqCst))
}

fn now() -> Timestamp {
    Timestamp::from_secs(1_768_473_000)
}

/// Credits from a decimal string, for readable tests.
pub fn cr(s: &str) -> Credits {
    s.parse().expect("test amount")
}

fn usd(s: &str) -> Money {
    Money::new(
        Decimal::from_str_exact(s).expect("test amount"),
        Currency::USD,
    )
    .expect("test money")
}

async fn new_account(store: &Handle) -> AccountId {
    let account = Account {
        id: AccountId::new(next("acct")),
        name: "Ada".into(),
        email: "ada@example.com".into(),
        created_at: now(),
    };
    store
        .insert_account(&account)
        .await
        .expect("insert account");
    account.id
}

fn entry(kind: EntryKind, amount: Credits) -> NewEntry {
    NewEntry {
        id: EntryId::new(next("txn")),
        kind,
        amount,
        description: format!("{kind} entry"),
        reference: None,
        usage: None,
    }
}

fn posting(account: &AccountId, entries: Vec<NewEntry>) -> Posting {
    Posting {
        account_id: account.clone(),
        entries,
        idempotency: None,
        refund_of: Vec::new(),
        now: now(),
    }
}

async fn credit(store: &Handle, account: &AccountId, amount: Credits) -> Posted {
    store
        .post(posting(account, vec![entry(EntryKind::Bonus, amount)]))
        .await
        .expect("credit")
}

async fn debit(store: &Handle, account: &AccountId, amount: Credits) -> Result<Posted, PostError> {
    store
        .post(posting(
            account,
            vec![entry(EntryKind::Usage, amount.negated())],
        ))
        .await
}

/// Asserts the ledger invariants for `account`: running sums, and balance = sum.
pub async fn assert_ledger_consistent(store: &Handle, account: &AccountId) -> Credits {
    let history = store.history(account).await.expect("history");
    let wallet = store
        .wallet(account)
        .await
        .expect("wallet")
        .expect("exists");
    verify_history(&history, wallet.balance)
        .unwrap_or_else(|_| panic!("ledger of {account} inconsistent: {history:?} vs {wallet:?}"));
    assert!(!wallet.balance.is_negative(), "negative balance");
    wallet.balance
}

fn topup(account: &AccountId, credits: &str, bonus: &str) -> TopUp {
    TopUp {
        id: TopUpId::new(next("topup")),
        account_id: account.clone(),
        pack_id: None,
        pack_name: None,
        price: usd("50.00"),
        credits: cr(credits),
        bonus: cr(bonus),
        status: TopUpStatus::Pending,
        gateway: "sandbox".into(),
        payment_ref: None,
        checkout_url: None,
        failure_reason: None,
        created_at: now(),
        updated_at: now(),
    }
}

fn completion(t: &TopUp) -> Vec<NewEntry> {
    t.completion_entries(EntryId::new(next("txn")), EntryId::new(next("txn")))
}

/// Credits and debits keep exact running balances.
pub async fn credit_and_debit_keep_running_balances(store: Handle, _other: Handle) {
    let account = new_account(&store).await;
    assert_eq!(
        store
            .wallet(&account)
            .await
            .expect("wallet")
            .map(|w| w.balance),
        Some(Credits::ZERO)
    );
    credit(&store, &account, cr("10")).await;
    let posted = debit(&store, &account, cr("0.15")).await.expect("debit");
    assert_eq!(posted.entries[0].balance_after, cr("9.85"));
    assert_eq!(posted.entries[0].amount, cr("-0.15"));
    assert!(!posted.replayed);
    debit(&store, &account, cr("0.000000001"))
        .await
        .expect("debit");
    let two = store
        .post(posting(
            &account,
            vec![
                entry(EntryKind::TopUp, cr("25")),
                entry(EntryKind::Bonus, cr("1.25")),
            ],
        ))
        .await
        .expect("two entries");
    let afters: Vec<Credits> = two.entries.iter().map(|e| e.balance_after).collect();
    assert_eq!(afters, vec![cr("34.849999999"), cr("36.099999999")]);
    assert_eq!(
        assert_ledger_consistent(&store, &account).await,
        cr("36.099999999")
    );
    let history = store.history(&account).await.expect("history");
    assert_eq!(history.len(), 5);
    assert_eq!(history[1].description, "usage entry");
}

/// An insufficient balance refuses the debit and writes nothing.
pub async fn insufficient_balance_writes_nothing(store: Handle, _other: Handle) {
    let account = new_account(&store).await;
    credit(&store, &account, cr("5")).await;
    let refused = debit(&store, &account, cr("5.000000001")).await;
    assert!(
        matches!(
            refused,
            Err(PostError::Rule(PostingRuleError::InsufficientFunds { .. }))
        ),
        "{refused:?}"
    );
    assert_eq!(store.history(&account).await.expect("history").len(), 1);
    assert_eq!(assert_ledger_consistent(&store, &account).await, cr("5"));
    let missing = debit(&store, &AccountId::new("acct_missing"), cr("1")).await;
    assert_eq!(missing, Err(PostError::AccountNotFound));
}

/// 200 debits of 7 racing against 1,050: exactly 150 succeed and the balance ends at 0.
pub async fn racing_debits_never_overdraw(store: Handle, other: Handle) {
    let account = new_account(&store).await;
    credit(&store, &account, cr("1050")).await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let handle = if i % 2 == 0 {
            store.clone()
        } else {
            other.clone()
        };
        let account = account.clone();
        tasks.push(tokio::spawn(async move {
            debit(&handle, &account, cr("7")).await
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => ok += 1,
            Err(PostError::Rule(PostingRuleError::InsufficientFunds { .. })) => refused += 1,
            Err(other) => panic!("unexpected error: {other:?}"),
        }
    }
    assert_eq!((ok, refused), (150, 50));
    assert_eq!(
        assert_ledger_consistent(&store, &account).await,
        Credits::ZERO
    );
    assert_eq!(store.history(&account).await.expect("history").len(), 151);
}

/// One top-up completed 50 times concurrently credits once.
pub async fn topup_completed_concurrently_credits_once(store: Handle, other: Handle) {
    let account = new_account(&store).await;
    let t = topup(&account, "50", "2.5");
    assert!(matches!(
        store.insert_topup(&t, None).await,
        Ok(Inserted::New(_))
    ));
    let mut tasks = Vec::new();
    for i in 0..50 {
        let handle = if i % 2 == 0 {
            store.clone()
        } else {
            other.clone()
        };
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            handle
                .transition_topup(&t.id, TopUpStatus::Completed, completion(&t), None, now())
                .await
        }));
    }
    let mut applied = 0;
    for task in tasks {
        match task.await.expect("task").expect("transition") {
            Some(TransitionOutcome::Applied { entries, topup }) => {
                applied += 1;
                assert_eq!(entries.len(), 2);
                assert_eq!(entries[0].kind, EntryKind::TopUp);
                assert_eq!(entries[1].kind, EntryKind::Bonus);
                assert_eq!(topup.status, TopUpStatus::Completed);
            }
            Some(TransitionOutcome::AlreadyDone(topup)) => {
                assert_eq!(topup.status, TopUpStatus::Completed)
            }
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(applied, 1);
    assert_eq!(assert_ledger_consistent(&store, &account).await, cr("52.5"));
    // A completed top-up never fails afterwards.
    let refused = store
        .transition_topup(
            &t.id,
            TopUpStatus::Failed,
            Vec::new(),
            Some("late".into()),
            now(),
        )
        .await
        .expect("transition");
    assert!(matches!(refused, Some(TransitionOutcome::Refused(_))));
    let missing = store
        .transition_topup(
            &TopUpId::new("topup_missing"),
            TopUpStatus::Completed,
            Vec::new(),
            None,
            now(),
        )
        .await
        .expect("transition");
    assert_eq!(missing, None);
}

/// Failed top-ups credit nothing; a later verified payment still credits once.
pub async fn topup_lifecycle(store: Handle, _other: Handle) {
    let account = new_account(&store).await;
    let t = topup(&account, "20", "0");
    store.insert_topup(&t, None).await.expect("insert");
    store
        .set_checkout(&t.id, "pay_1", "https://pay.example/1", now())
        .await
        .expect("checkout");
    let found = store
        .topup_by_payment_ref("sandbox", "pay_1")
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(found.id, t.id);
    assert_eq!(found.checkout_url.as_deref(), Some("https://pay.example/1"));
    assert_eq!(found.price, usd("50.00"));
    assert_eq!(
        store
            .topup_by_payment_ref("stripe", "pay_1")
            .await
            .expect("lookup"),
        None
    );
    // One payment reference belongs to one top-up per gateway.
    let second = topup(&account, "20", "0");
    store.insert_topup(&second, None).await.expect("insert");
    let duplicate = store
        .set_checkout(&second.id, "pay_1", "https://pay.example/2", now())
        .await;
    assert!(
        matches!(duplicate, Err(StoreError::Duplicate(_))),
        "{duplicate:?}"
    );

    let failed = store
        .transition_topup(
            &t.id,
            TopUpStatus::Failed,
            Vec::new(),
            Some("declined".into()),
            now(),
        )
        .await
        .expect("fail");
    assert!(
        matches!(failed, Some(TransitionOutcome::Applied { ref entries, .. }) if entries.is_empty())
    );
    let stored = store.topup(&t.id).await.expect("get").expect("found");
    assert_eq!(stored.status, TopUpStatus::Failed);
    assert_eq!(stored.failure_reason.as_deref(), Some("declined"));
    assert_eq!(
        assert_ledger_consistent(&store, &account).await,
        Credits::ZERO
    );
    let again = store
        .transition_topup(&t.id, TopUpStatus::Failed, Vec::new(), None, now())
        .await
        .expect("fail again");
    assert!(matches!(again, Some(TransitionOutcome::AlreadyDone(_))));
    // The gateway later says paid (a retried attempt): money received always credits.
    let completed = store
        .transition_topup(&t.id, TopUpStatus::Completed, completion(&t), None, now())
        .await
        .expect("complete");
    assert!(matches!(completed, Some(TransitionOutcome::Applied { .. })));
    assert_eq!(assert_ledger_consistent(&store, &account).await, cr("20"));
    let history = store.history(&account).await.expect("history");
    assert_eq!(history.len(), 1, "no bonus entry for a zero bonus");
    assert_eq!(history[0].reference.as_deref(), Some(t.id.as_str()));
}

/// Top-up history pages, newest first, with the total; pending top-ups for reconciliation.
pub async fn topup_pages_and_pending(store: Handle, _other: Handle) {
    let account = new_account(&store).await;
    let other_account = new_account(&store).await;
    let mut ids = Vec::new();
    for i in 0..45 {
        let mut t = topup(&account, "5", "0");
        t.created_at = now().plus_secs(i);
        store.insert_topup(&t, None).await.expect("insert");
        ids.push(t.id);
    }
    store
        .insert_topup(&topup(&other_account, "5", "0"), None)
        .await
        .expect("insert");
    let first = store.topup_page(&account, None, 1, 20).await.expect("page");
    assert_eq!(first.total, 45);
    assert_eq!(first.topups.len(), 20);
    assert_eq!(first.topups[0].id, ids[44]);
    let third = store.topup_page(&account, None, 3, 20).await.expect("page");
    assert_eq!(third.topups.len(), 5);
    assert_eq!(third.topups[4].id, ids[0]);
    let beyond = store.topup_page(&account, None, 4, 20).await.expect("page");
    assert!(beyond.topups.is_empty());
    assert_eq!(beyond.total, 45);

    store
        .transition_topup(&ids[0], TopUpStatus::Failed, Vec::new(), None, now())
        .await
        .expect("fail");
    let pending = store
        .pending_topups(now().plus_secs(3), 10)
        .await
        .expect("pending");
    let pending_ids: Vec<&TopUpId> = pending.iter().map(|t| &t.id).collect();
    // The status filter: one failed top-up, 44 pending, none completed; totals follow it.
    let failed = store
        .topup_page(&account, Some(TopUpStatus::Failed), 1, 20)
        .await
        .expect("page");
    assert_eq!(failed.total, 1);
    assert_eq!(
        failed.topups.iter().map(|t| &t.id).collect::<Vec<_>>(),
        [&ids[0]]
    );
    let still_pending = store
        .topup_page(&account, Some(TopUpStatus::Pending), 3, 20)
        .await
        .expect("page");
    assert_eq!(still_pending.total, 44);
    assert_eq!(still_pending.topups.len(), 4);
    assert_eq!(still_pending.topups[3].id, ids[1]);
    assert!(
        store
            .topup_page(&account, Some(TopUpStatus::Completed), 1, 20)
            .await
            .expect("page")
            .topups
            .is_empty()
    );
    // ids[0] failed; the other account's top-up was created at now(); cutoff excludes ≥ +3s.
    assert_eq!(pending_ids.len(), 3, "{pending_ids:?}");
    assert!(pending_ids.contains(&&ids[1]) && pending_ids.contains(&&ids[2]));
    assert!(!pending_ids.contains(&&ids[0]));
    // Least recently checked first: a checked top-up goes to the back of the queue, so top-ups
    // that stay pending cannot starve the others.
    let first_two = store
        .pending_topups(now().plus_secs(100), 2)
        .await
        .expect("pending");
    for t in &first_two {
        store
            .touch_pending_topup(&t.id, now().plus_secs(1000))
            .await
            .expect("touch");
    }
    let next = store
        .pending_topups(now().plus_secs(100), 2)
        .await
        .expect("pending");
    assert!(
        next.iter().all(|t| !first_two.iter().any(|f| f.id == t.id)),
        "touched top-ups came first again: {next:?}"
    );
    let all = store
        .pending_topups(now().plus_secs(100), 100)
        .await
        .expect("pending");
    assert_eq!(
        all.len(),
        45,
        "44 of this account and the other account's one"
    );
    assert!(
        first_two
            .iter()
            .all(|f| all[43..].iter().any(|t| t.id == f.id))
    );
    // A settled top-up is not touched back into the queue.
    store
        .touch_pending_topup(&ids[0], now().plus_secs(2000))
        .await
        .expect("touch");
    let failed = store.topup(&ids[0]).await.expect("get").expect("found");
    assert_eq!(failed.status, TopUpStatus::Failed);
    assert_ne!(failed.updated_at, now().plus_secs(2000));
}

/// The same key with the same request replays the first result; with another, conflicts.
pub async fn idempotent_replay_and_conflict(store: Handle, other: Handle) {
    let account = new_account(&store).await;
    credit(&store, &account, cr("100")).await;
    let claim = IdempotencyClaim {
        scope: format!("{account}:usage"),
        key: "req-1".into(),
        fingerprint: "usage|7|chat".into(),
    };
    let with_claim = |claim: IdempotencyClaim| {
        let mut p = posting(&account, vec![entry(EntryKind::Usage, cr("-7"))]);
        p.idempotency = Some(claim);
        p
    };
    let first = store.post(with_claim(claim.clone())).await.expect("first");
    assert!(!first.replayed);
    let replay = other.post(with_claim(claim.clone())).await.expect("replay");
    assert!(replay.replayed);
    assert_eq!(replay.entries, first.entries);
    let conflict = store
        .post(with_claim(IdempotencyClaim {
            fingerprint: "usage|8|chat".into(),
            ..claim.clone()
        }))
        .await;
    assert_eq!(conflict, Err(PostError::IdempotencyConflict));
    // The same key in another scope is another key.
    let elsewhere = store
        .post(with_claim(IdempotencyClaim {
            scope: format!("{account}:other"),
            ..claim.clone()
        }))
        .await
        .expect("other scope");
    assert!(!elsewhere.replayed);
    assert_eq!(assert_ledger_consistent(&store, &account).await, cr("86"));

    // 20 concurrent requests with one new key: one write, 19 replays of it.
    let racing = IdempotencyClaim {
        key: "req-2".into(),
        ..claim
    };
    let mut tasks = Vec::new();
    for i in 0..20 {
        let handle = if i % 2 == 0 {
            store.clone()
        } else {
            other.clone()
        };
        let p = with_claim(racing.clone());
        tasks.push(tokio::spawn(async move { handle.post(p).await }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("task").expect("post"));
    }
    assert_eq!(results.iter().filter(|r| !r.replayed).count(), 1);
    assert!(results.iter().all(|r| r.entries == results[0].entries));
    assert_eq!(assert_ledger_consistent(&store, &account).await, cr("79"));

    // Top-up inserts honour keys too.
    let t = topup(&account, "5", "0");
    let topup_claim = IdempotencyClaim {
        scope: format!("{account}:topup"),
        key: "t-1".into(),
        fingerprint: "topup|5".into(),
    };
    assert!(matches!(
        store.insert_topup(&t, Some(&topup_claim)).await,
        Ok(Inserted::New(_))
    ));
    let again = topup(&account, "5", "0");
    match other.insert_topup(&again, Some(&topup_claim)).await {
        Ok(Inserted::Replayed(first)) => assert_eq!(first.id, t.id),
        other => panic!("expected a replay, got {other:?}"),
    }
    let different = IdempotencyClaim {
        fingerprint: "topup|6".into(),
        ..topup_claim
    };
    assert_eq!(
        store.insert_topup(&again, Some(&different)).await,
        Err(InsertTopUpError::IdempotencyConflict)
    );
    assert_eq!(
        store
            .topup_page(&account, None, 1, 20)
            .await
            .expect("page")
            .total,
        1
    );
}

/// Refunds answer usage entries of the account and never exceed them.
pub async fn refunds_are_bounded(store: Handle, _other: Handle) {
    let account = new_account(&store).await;
    let stranger = new_account(&store).await;
    credit(&store, &account, cr("20")).await;
    credit(&store, &stranger, cr("20")).await;
    let usage = debit(&store, &account, cr("7"))
        .await
        .expect("debit")
        .entries[0]
        .id
        .clone();
    let usage2 = debit(&store, &account, cr("3"))
        .await
        .expect("debit")
        .entries[0]
        .id
        .clone();
    let theirs = debit(&store, &stranger, cr("1"))
        .await
        .expect("debit")
        .entries[0]
        .id
        .clone();
    let grant = store.history(&account).await.expect("history")[0]
        .id
        .clone();
    let refund = |targets: Vec<EntryId>, amount: &str| {
        let mut p = posting(&account, vec![entry(EntryKind::Refund, cr(amount))]);
        p.refund_of = targets;
        p
    };
    store
        .post(refund(vec![usage.clone()], "5"))
        .await
        .expect("refund 5 of 7");
    let too_much = store.post(refund(vec![usage.clone()], "2.000000001")).await;
    assert!(
        matches!(
            too_much,
            Err(PostError::Refund(RefundRuleError::ExceedsRefundable { .. }))
        ),
        "{too_much:?}"
    );
    store
        .post(refund(vec![usage.clone()], "2"))
        .await
        .expect("the last 2");
    let nothing_left = store.post(refund(vec![usage.clone()], "0.000000001")).await;
    assert!(matches!(
        nothing_left,
        Err(PostError::Refund(RefundRuleError::ExceedsRefundable { .. }))
    ));
    // A refund naming both counts the first entry's refunds against their total.
    let both = store
        .post(refund(vec![usage.clone(), usage2.clone()], "3.5"))
        .await;
    assert!(matches!(
        both,
        Err(PostError::Refund(RefundRuleError::ExceedsRefundable { .. }))
    ));
    store
        .post(refund(vec![usage2.clone()], "3"))
        .await
        .expect("refund 3 of 3");
    for target in [grant, theirs, EntryId::new("txn_missing")] {
        let refused = store.post(refund(vec![target.clone()], "1")).await;
        assert!(
            matches!(refused, Err(PostError::Refund(RefundRuleError::NotRefundable(ref id))) if *id == target),
            "{refused:?}"
        );
    }
    assert_eq!(assert_ledger_consistent(&store, &account).await, cr("20"));
    let refunds = store
        .entries(
            &account,
            &EntryQuery {
                kind: Some(EntryKind::Refund),
                limit: 10,
                ..EntryQuery::default()
            },
        )
        .await
        .expect("entries");
    assert_eq!(refunds.len(), 3);
}

/// Amounts at the ledger scale's limits round-trip exactly, and overflow is refused.
pub async fn ledger_scale_limits_round_trip(store: Handle, _other: Handle) {
    let account = new_account(&store).await;
    credit(&store, &account, Credits::max()).await;
    assert_eq!(
        assert_ledger_consistent(&store, &account).await,
        Credits::max()
    );
    let overflow = store
        .post(posting(
            &account,
            vec![entry(EntryKind::Bonus, Credits::from_units(1))],
        ))
        .await;
    assert_eq!(overflow, Err(PostError::Rule(PostingRuleError::Overflow)));
    let smallest = Credits::from_units(1);
    debit(&store, &account, smallest)
        .await
        .expect("debit 1 unit");
    let history = store.history(&account).await.expect("history");
    assert_eq!(history[0].amount, Credits::max());
    assert_eq!(history[1].amount, smallest.negated());
    assert_eq!(history[1].balance_after, Credits::from_units(i64::MAX - 1));
    debit(&store, &account, Credits::from_units(i64::MAX - 1))
        .await
        .expect("debit all");
    assert_eq!(
        assert_ledger_consistent(&store, &account).await,
        Credits::ZERO
    );

    let pack = Pack {
        id: PackId::new("pack_big"),
        name: "Big".into(),
        price: Money::new(
            Decimal::from(1_000_000_000),
            Currency::from_code("KWD").expect("kwd"),
        )
        .expect("max money"),
        credits: Credits::max(),
        popular: false,
        active: true,
    };
    store.upsert_pack(&pack).await.expect("pack");
    assert_eq!(store.pack(&pack.id).await.expect("get"), Some(pack));
}

/// Transactions list newest first, filter by kind, and page with a cursor.
pub async fn entries_page_and_filter(store: Handle, _other: Handle) {
    let account = new_account(&store).await;
    let stranger = new_account(&store).await;
    credit(&store, &stranger, cr("1")).await;
    credit(&store, &account, cr("100")).await;
    for _ in 0..12 {
        debit(&store, &account, cr("1")).await.expect("debit");
    }
    let query = |kind, before, limit| EntryQuery {
        kind,
        before,
        limit,
        ..EntryQuery::default()
    };
    let first = store
        .entries(&account, &query(None, None, 5))
        .await
        .expect("entries");
    assert_eq!(first.len(), 5);
    assert_eq!(first[0].balance_after, cr("88"));
    let second = store
        .entries(&account, &query(None, Some(first[4].id.clone()), 100))
        .await
        .expect("entries");
    assert_eq!(second.len(), 8);
    assert_eq!(second[7].kind, EntryKind::Bonus);
    let mut all: Vec<LedgerEntry> = first.into_iter().chain(second).collect();
    all.reverse();
    assert_eq!(all, store.history(&account).await.expect("history"));
    let usage = store
        .entries(&account, &query(Some(EntryKind::Usage), None, 100))
        .await
        .expect("entries");
    assert_eq!(usage.len(), 12);
    let one = &all[3];
    assert_eq!(
        store.entry(&account, &one.id).await.expect("entry"),
        Some(one.clone())
    );
    // Another account's entry is neither visible nor a cursor here.
    let theirs_entry = store.history(&stranger).await.expect("history")[0].clone();
    assert_eq!(
        store
            .entry(&account, &theirs_entry.id)
            .await
            .expect("entry"),
        None
    );
    let theirs = store.history(&stranger).await.expect("history")[0]
        .id
        .clone();
    assert!(
        store
            .entries(&account, &query(None, Some(theirs), 10))
            .await
            .expect("entries")
            .is_empty()
    );
}

/// A period: `from` is inclusive, `to` exclusive, both combine with the type and the cursor.
pub async fn entries_in_a_period(store: Handle, _other: Handle) {
    let account = new_account(&store).await;
    let day = |d: i64| now().plus_secs(d * 86_400);
    let mut ids = Vec::new();
    for d in 0..6 {
        let mut p = posting(&account, vec![entry(EntryKind::Bonus, cr("10"))]);
        p.now = day(d);
        ids.push(store.post(p).await.expect("credit").entries[0].id.clone());
        let mut p = posting(&account, vec![entry(EntryKind::Usage, cr("-1"))]);
        p.now = day(d);
        ids.push(store.post(p).await.expect("debit").entries[0].id.clone());
    }
    let period = |kind, from, to, before: Option<EntryId>| EntryQuery {
        kind,
        before,
        after: None,
        from,
        to,
        limit: 100,
    };
    let got = |entries: Vec<LedgerEntry>| entries.into_iter().map(|e| e.id).collect::<Vec<_>>();
    // Days 2, 3 and 4: from day 2's first instant to day 5's, exclusive.
    let middle = store
        .entries(&account, &period(None, Some(day(2)), Some(day(5)), None))
        .await
        .expect("entries");
    let want: Vec<EntryId> = ids[4..10].iter().rev().cloned().collect();
    assert_eq!(got(middle), want);
    let usage = store
        .entries(
            &account,
            &period(Some(EntryKind::Usage), Some(day(2)), Some(day(5)), None),
        )
        .await
        .expect("entries");
    assert_eq!(
        got(usage),
        vec![ids[9].clone(), ids[7].clone(), ids[5].clone()]
    );
    let older = store
        .entries(
            &account,
            &period(None, Some(day(2)), None, Some(ids[6].clone())),
        )
        .await
        .expect("entries");
    assert_eq!(got(older), vec![ids[5].clone(), ids[4].clone()]);
    let open_start = store
        .entries(&account, &period(None, None, Some(day(1)), None))
        .await
        .expect("entries");
    assert_eq!(got(open_start), vec![ids[1].clone(), ids[0].clone()]);
    let empty = store
        .entries(&account, &period(None, Some(day(6)), None, None))
        .await
        .expect("entries");
    assert!(empty.is_empty());
    // A range of the ledger between two entries, both excluded; with a type.
    let range = |kind, after: &EntryId, before: &EntryId| EntryQuery {
        kind,
        before: Some(before.clone()),
        after: Some(after.clone()),
        limit: 100,
        ..EntryQuery::default()
    };
    let between = store
        .entries(&account, &range(None, &ids[4], &ids[9]))
        .await
        .expect("entries");
    let want: Vec<EntryId> = ids[5..9].iter().rev().cloned().collect();
    assert_eq!(got(between), want);
    let debits = store
        .entries(&account, &range(Some(EntryKind::Usage), &ids[4], &ids[9]))
        .await
        .expect("entries");
    assert_eq!(got(debits), vec![ids[7].clone(), ids[5].clone()]);
    let inverted = store
        .entries(&account, &range(None, &ids[9], &ids[4]))
        .await
        .expect("entries");
    assert!(
        inverted.is_empty(),
        "after a later entry than before: nothing"
    );
    let newer = EntryQuery {
        after: Some(ids[9].clone()),
        limit: 100,
        ..EntryQuery::default()
    };
    let tail = store.entries(&account, &newer).await.expect("entries");
    assert_eq!(got(tail), vec![ids[11].clone(), ids[10].clone()]);
    // Another account's entry is no cursor here.
    let stranger = new_account(&store).await;
    let theirs = credit(&store, &stranger, cr("1")).await.entries[0]
        .id
        .clone();
    let foreign = EntryQuery {
        after: Some(theirs),
        limit: 100,
        ..EntryQuery::default()
    };
    assert!(
        store
            .entries(&account, &foreign)
            .await
            .expect("entries")
            .is_empty()
    );
}

/// Accounts, packs, keys and events.
pub async fn accounts_packs_keys_events(store: Handle, other: Handle) {
    let account = new_account(&store).await;
    let again = Account {
        id: account.clone(),
        name: "Dup".into(),
        email: "d@example.com".into(),
        created_at: now(),
    };
    assert!(matches!(
        store.insert_account(&again).await,
        Err(StoreError::Duplicate(_))
    ));
    let stored = store.account(&account).await.expect("get").expect("found");
    assert_eq!(stored.name, "Ada");
    assert_eq!(stored.created_at, now());
    let ids = store.account_ids(None, 10).await.expect("ids");
    assert_eq!(ids, vec![account.clone()]);
    assert!(
        store
            .account_ids(Some(&account), 10)
            .await
            .expect("ids")
            .is_empty()
    );

    let mut pro = Pack {
        id: PackId::new("pack_pro"),
        name: "Pro Pack".into(),
        price: usd("20.00"),
        credits: cr("25000"),
        popular: true,
        active: true,
    };
    let starter = Pack {
        id: PackId::new("pack_starter"),
        name: "Starter Pack".into(),
        price: usd("5.00"),
        credits: cr("5000"),
        popular: false,
        active: true,
    };
    store.upsert_pack(&pro).await.expect("pack");
    store.upsert_pack(&starter).await.expect("pack");
    let listed: Vec<PackId> = store
        .packs(false)
        .await
        .expect("packs")
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(listed, vec![starter.id.clone(), pro.id.clone()]);
    pro.active = false;
    pro.name = "Pro Pack v2".into();
    store.upsert_pack(&pro).await.expect("update");
    assert_eq!(
        store.packs(false).await.expect("packs"),
        vec![starter.clone()]
    );
    assert_eq!(store.packs(true).await.expect("packs").len(), 2);
    assert_eq!(store.pack(&pro.id).await.expect("get"), Some(pro));

    let key = ApiKeyRecord {
        id: ApiKeyId::new("key_1"),
        account_id: Some(account.clone()),
        scope: KeyScope::Customer,
        prefix: "bk_ab12".into(),
        hash: "a".repeat(64),
        created_at: now(),
        revoked_at: None,
        expires_at: Some(now().plus_secs(3600)),
        last_used_at: None,
        requests_per_minute_max: Some(600),
    };
    store.insert_key(&key).await.expect("key");
    assert!(!store.has_admin_key().await.expect("admin?"));
    let duplicate = ApiKeyRecord {
        id: ApiKeyId::new("key_2"),
        ..key.clone()
    };
    assert!(matches!(
        store.insert_key(&duplicate).await,
        Err(StoreError::Duplicate(_))
    ));
    assert_eq!(
        store.key_by_hash(&key.hash).await.expect("get"),
        Some(key.clone())
    );
    let admin = ApiKeyRecord {
        id: ApiKeyId::new("key_admin"),
        account_id: None,
        scope: KeyScope::Admin,
        hash: "b".repeat(64),
        ..key.clone()
    };
    store.insert_key(&admin).await.expect("admin key");
    assert!(store.has_admin_key().await.expect("admin?"));
    assert!(store.revoke_key(&admin.id, now()).await.expect("revoke"));
    assert!(
        store
            .revoke_key(&admin.id, now().plus_secs(5))
            .await
            .expect("again")
    );
    assert_eq!(
        store
            .key(&admin.id)
            .await
            .expect("get")
            .and_then(|k| k.revoked_at),
        Some(now())
    );
    assert!(!store.has_admin_key().await.expect("admin?"));
    assert!(
        !store
            .revoke_key(&ApiKeyId::new("key_none"), now())
            .await
            .expect("revoke")
    );

    let mut tasks = Vec::new();
    for i in 0..20 {
        let handle = if i % 2 == 0 {
            store.clone()
        } else {
            other.clone()
        };
        tasks.push(tokio::spawn(async move {
            handle.record_event("stripe", "evt_1", now()).await
        }));
    }
    let mut firsts = 0;
    for task in tasks {
        if task.await.expect("task").expect("record") {
            firsts += 1;
        }
    }
    assert_eq!(firsts, 1);
    assert!(store.event_seen("stripe", "evt_1").await.expect("seen?"));
    assert!(
        !store
            .event_seen("myfatoorah", "evt_1")
            .await
            .expect("seen?")
    );
    assert!(
        store
            .record_event("myfatoorah", "evt_1", now())
            .await
            .expect("record")
    );
}

fn key_at(id: &str, account: Option<&AccountId>, created_secs: i64) -> ApiKeyRecord {
    ApiKeyRecord {
        id: ApiKeyId::new(id),
        account_id: account.cloned(),
        scope: if account.is_some() {
            KeyScope::Customer
        } else {
            KeyScope::Platform
        },
        prefix: "bk_x".into(),
        hash: format!("{id:0>64}"),
        created_at: now().plus_secs(created_secs),
        revoked_at: None,
        expires_at: None,
        last_used_at: None,
        requests_per_minute_max: None,
    }
}

/// Dashboard sessions: stored by hash, ended once (the first end time stays), unknown
/// hashes are `None`, a duplicate hash is refused.
pub async fn dashboard_sessions(store: Handle, other: Handle) {
    let ada = new_account(&store).await;
    let key = key_at("key_session", Some(&ada), 1);
    other.insert_key(&key).await.expect("key");
    let session = SessionRecord {
        hash: "ab".repeat(32),
        account_id: ada.clone(),
        key_id: key.id.clone(),
        created_at: now(),
        expires_at: now().plus_secs(3600),
        ended_at: None,
    };
    other.insert_session(&session).await.expect("insert");
    assert!(matches!(
        store.insert_session(&session).await,
        Err(StoreError::Duplicate(_))
    ));
    assert_eq!(
        store.session_by_hash(&session.hash).await.expect("read"),
        Some(session.clone())
    );
    assert_eq!(
        store.session_by_hash(&"cd".repeat(32)).await.expect("read"),
        None
    );
    store
        .end_session(&session.hash, now().plus_secs(10))
        .await
        .expect("end");
    other
        .end_session(&session.hash, now().plus_secs(20))
        .await
        .expect("end again");
    store
        .end_session(&"ef".repeat(32), now())
        .await
        .expect("ending an unknown session is not an error");
    let ended = other
        .session_by_hash(&session.hash)
        .await
        .expect("read")
        .expect("still stored");
    assert_eq!(ended.ended_at, Some(now().plus_secs(10)));
}

/// Keys list newest first, per account or all, in pages with an exact `has_more`; a cursor
/// that names no key (or another account's) is `None`; `last_used_at` only moves forward.
pub async fn keys_list_page_and_touch(store: Handle, other: Handle) {
    let ada = new_account(&store).await;
    let bob = new_account(&store).await;
    // Two keys share a creation time: the id breaks the tie.
    let keys = [
        key_at("key_a1", Some(&ada), 1),
        key_at("key_a2", Some(&ada), 2),
        key_at("key_a3", Some(&ada), 2),
        key_at("key_b1", Some(&bob), 3),
        key_at("key_s1", None, 4),
    ];
    for key in &keys {
        other.insert_key(key).await.expect("insert");
    }
    let ids = |page: &KeyPage| {
        page.keys
            .iter()
            .map(|k| k.id.to_string())
            .collect::<Vec<_>>()
    };
    let list = |account: Option<&AccountId>, after: Option<&str>, limit: u32| KeyQuery {
        account_id: account.cloned(),
        after: after.map(ApiKeyId::new),
        limit,
    };
    let all = store
        .list_keys(&list(None, None, 10))
        .await
        .expect("list")
        .expect("page");
    assert_eq!(
        ids(&all),
        ["key_s1", "key_b1", "key_a3", "key_a2", "key_a1"]
    );
    assert!(!all.has_more);
    assert_eq!(all.keys[4], keys[0]);
    let first = store
        .list_keys(&list(Some(&ada), None, 2))
        .await
        .expect("list")
        .expect("page");
    assert_eq!(ids(&first), ["key_a3", "key_a2"]);
    assert!(first.has_more);
    let second = store
        .list_keys(&list(Some(&ada), Some("key_a2"), 2))
        .await
        .expect("list")
        .expect("page");
    assert_eq!(ids(&second), ["key_a1"]);
    assert!(!second.has_more);
    let exact = store
        .list_keys(&list(Some(&ada), Some("key_a3"), 2))
        .await
        .expect("list")
        .expect("page");
    assert_eq!(ids(&exact), ["key_a2", "key_a1"]);
    assert!(!exact.has_more);
    for (account, cursor) in [(Some(&ada), "key_b1"), (None, "key_none")] {
        assert_eq!(
            store
                .list_keys(&list(account, Some(cursor), 2))
                .await
                .expect("list"),
            None,
            "{cursor}"
        );
    }

    let minute = now().plus_secs(120).minute_start();
    store.touch_key(&keys[0].id, minute).await.expect("touch");
    other
        .touch_key(&keys[0].id, minute.minus_secs(60))
        .await
        .expect("older touch");
    store
        .touch_key(&ApiKeyId::new("key_none"), minute)
        .await
        .expect("touch of no key");
    let touched = other.key(&keys[0].id).await.expect("get").expect("key");
    assert_eq!(touched.last_used_at, Some(minute));
    assert_eq!(
        other
            .key(&keys[1].id)
            .await
            .expect("get")
            .expect("key")
            .last_used_at,
        None
    );
}

/// The rate card's rates round-trip exactly; a priced usage entry keeps its model, tokens
/// and prices.
pub async fn rates_and_priced_usage_round_trip(store: Handle, other: Handle) {
    let d = |s: &str| Decimal::from_str_exact(s).expect("decimal");
    let chat = Rate::new("assisters-chat-v1", d("0.50"), d("1.50")).expect("rate");
    let tiny = Rate::new("tiny.m:1", d("0.000000001"), d("999999.999999999")).expect("rate");
    store.upsert_rate(&chat, now()).await.expect("upsert");
    other.upsert_rate(&tiny, now()).await.expect("upsert");
    assert_eq!(
        other.rates().await.expect("rates"),
        [chat.clone(), tiny.clone()]
    );
    let cheaper = Rate::new("assisters-chat-v1", d("0.25"), d("1")).expect("rate");
    other.upsert_rate(&cheaper, now()).await.expect("replace");
    assert_eq!(
        store.rate(&chat.model).await.expect("get"),
        Some(cheaper.clone())
    );
    assert!(store.delete_rate(&tiny.model).await.expect("delete"));
    assert!(!other.delete_rate(&tiny.model).await.expect("again"));
    assert_eq!(store.rate(&tiny.model).await.expect("get"), None);

    let account = new_account(&store).await;
    let (cost, detail) = cheaper.price(1_000, 2_000).expect("price");
    credit(&store, &account, cr("1")).await;
    let mut priced = entry(EntryKind::Usage, cost.negated());
    priced.usage = Some(detail.clone());
    let posted = other
        .post(posting(&account, vec![priced]))
        .await
        .expect("post");
    let history = store.history(&account).await.expect("history");
    assert_eq!(history.len(), 2);
    assert_eq!(history[1].usage, Some(detail));
    assert_eq!(history[1].amount, cr("-0.00225"));
    assert_eq!(history[1].balance_after, cr("0.99775"));
    assert_eq!(posted.entries, history[1..]);
    assert_eq!(history[0].usage, None);
}

fn new_hold(account: &AccountId, amount: &str, expires_in: i64) -> Hold {
    Hold {
        id: HoldId::new(next("hold")),
        account_id: account.clone(),
        amount: cr(amount),
        status: HoldStatus::Active,
        captured_amount: None,
        entry_id: None,
        rate: None,
        created_at: now(),
        expires_at: now().plus_secs(expires_in),
        updated_at: now(),
    }
}

fn hold_claim(account: &AccountId, op: &str, key: &str, fingerprint: &str) -> IdempotencyClaim {
    IdempotencyClaim {
        scope: format!("{account}:{op}"),
        key: key.into(),
        fingerprint: fingerprint.into(),
    }
}

/// Holds reserve against the available balance (debits and new holds see it); a capture
/// debits at most the held amount and releases the rest; release and expiry end a hold;
/// nothing leaves a final state; claimed keys replay or conflict; every refusal writes
/// nothing.
pub async fn holds_reserve_capture_release_and_expire(store: Handle, other: Handle) {
    let account = new_account(&store).await;
    credit(&store, &account, cr("10")).await;
    let big = new_hold(&account, "6", 600);
    let claim = hold_claim(&account, "hold", "h-1", "hold|6");
    let placed = store
        .place_hold(&big, Some(&claim), now())
        .await
        .expect("place");
    assert_eq!((placed.hold.clone(), placed.replayed), (big.clone(), false));
    // Replayed under the same key, even by another handle; a conflict with another body.
    let again = new_hold(&account, "6", 600);
    let replay = other
        .place_hold(&again, Some(&claim), now())
        .await
        .expect("replay");
    assert!(replay.replayed);
    assert_eq!(replay.hold.id, big.id);
    let conflict = hold_claim(&account, "hold", "h-1", "hold|7");
    assert_eq!(
        other
            .place_hold(&new_hold(&account, "1", 600), Some(&conflict), now())
            .await,
        Err(HoldError::IdempotencyConflict)
    );
    assert_eq!(
        store.reserved(&account, now()).await.expect("reserved"),
        cr("6")
    );
    // 4 available: a hold of 4.000000001 and a debit of 4.000000001 are refused.
    assert!(matches!(
        other
            .place_hold(&new_hold(&account, "4.000000001", 600), None, now())
            .await,
        Err(HoldError::Rule(HoldRuleError::Posting(
            PostingRuleError::InsufficientFunds { .. }
        )))
    ));
    assert!(matches!(
        other
            .post(posting(
                &account,
                vec![entry(EntryKind::Usage, cr("-4.000000001"))]
            ))
            .await,
        Err(PostError::Rule(PostingRuleError::InsufficientFunds { .. }))
    ));
    other
        .post(posting(&account, vec![entry(EntryKind::Usage, cr("-1"))]))
        .await
        .expect("a debit within the available balance");

    // Capture: more than held is refused; 2.5 of 6 is debited, the rest released.
    let debit = |amount: &str| {
        let mut e = entry(EntryKind::Usage, cr(amount).negated());
        e.reference = Some(big.id.to_string());
        e
    };
    let capture = |amount: &str| HoldAction::Capture {
        amount: cr(amount),
        entry: Some(debit(amount)),
    };
    assert_eq!(
        store
            .change_hold(&account, &big.id, &capture("6.1"), None, now())
            .await,
        Err(HoldError::Rule(HoldRuleError::CaptureExceedsHold {
            held: cr("6"),
            requested: cr("6.1")
        }))
    );
    let other_account = new_account(&store).await;
    assert_eq!(
        store
            .change_hold(&other_account, &big.id, &capture("1"), None, now())
            .await,
        Err(HoldError::HoldNotFound)
    );
    let key = hold_claim(
        &account,
        &format!("capture:{}", big.id),
        "c-1",
        "capture|2.5",
    );
    let captured = other
        .change_hold(&account, &big.id, &capture("2.5"), Some(&key), now())
        .await
        .expect("capture");
    assert_eq!(captured.hold.status, HoldStatus::Captured);
    assert_eq!(captured.hold.captured_amount, Some(cr("2.5")));
    let entry_written = captured.entry.clone().expect("entry");
    assert_eq!(entry_written.amount, cr("-2.5"));
    assert_eq!(entry_written.balance_after, cr("6.5"));
    assert_eq!(entry_written.reference.as_deref(), Some(big.id.as_str()));
    assert_eq!(
        store.reserved(&account, now()).await.expect("reserved"),
        Credits::ZERO
    );
    // The same key replays (another entry id offered changes nothing); another key is refused.
    let replayed = store
        .change_hold(&account, &big.id, &capture("2.5"), Some(&key), now())
        .await
        .expect("replay");
    assert!(replayed.replayed);
    assert_eq!(replayed.entry, Some(entry_written));
    for action in [capture("1"), HoldAction::Release] {
        assert_eq!(
            store
                .change_hold(&account, &big.id, &action, None, now())
                .await,
            Err(HoldError::Rule(HoldRuleError::NotActive(
                HoldStatus::Captured
            )))
        );
    }

    // Release, extend (an increase is checked), expiry.
    let small = new_hold(&account, "2", 60);
    store.place_hold(&small, None, now()).await.expect("place");
    let grow = |amount: &str| HoldAction::Extend {
        expires_at: now().plus_secs(120),
        amount: Some(cr(amount)),
    };
    assert!(
        store
            .change_hold(&account, &small.id, &grow("6.500000001"), None, now())
            .await
            .is_err()
    );
    let grown = other
        .change_hold(&account, &small.id, &grow("6.5"), None, now())
        .await
        .expect("extend");
    assert_eq!(
        (grown.hold.amount, grown.hold.expires_at),
        (cr("6.5"), now().plus_secs(120))
    );
    let released = store
        .change_hold(&account, &small.id, &HoldAction::Release, None, now())
        .await
        .expect("release");
    assert_eq!(released.hold.status, HoldStatus::Released);
    assert_eq!(released.entry, None);
    let short = new_hold(&account, "6.5", 30);
    other.place_hold(&short, None, now()).await.expect("place");
    assert_eq!(store.reserved(&account, now()).await.expect("r"), cr("6.5"));
    let later = now().plus_secs(30);
    assert_eq!(
        store.reserved(&account, later).await.expect("r"),
        Credits::ZERO
    );
    // Expired counts at once: a debit of everything passes, and the hold cannot be captured.
    assert_eq!(
        store
            .change_hold(&account, &short.id, &capture("1"), None, later)
            .await,
        Err(HoldError::Rule(HoldRuleError::NotActive(
            HoldStatus::Expired
        )))
    );
    assert_eq!(store.expire_holds(now(), 100).await.expect("expire"), 0);
    assert_eq!(other.expire_holds(later, 100).await.expect("expire"), 1);
    assert_eq!(
        store.hold(&short.id).await.expect("get").map(|h| h.status),
        Some(HoldStatus::Expired)
    );
    let history = store.history(&account).await.expect("history");
    verify_history(&history, cr("6.5")).expect("consistent");
    assert_eq!(history.len(), 3);
}

/// 50 holds of 10 race against 100 on two handles: exactly 10 succeed; then debits and
/// holds race against what is left and the available balance never goes below zero.
pub async fn racing_holds_and_debits_never_overdraw(store: Handle, other: Handle) {
    let account = new_account(&store).await;
    credit(&store, &account, cr("100")).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let handle = if i % 2 == 0 {
            store.clone()
        } else {
            other.clone()
        };
        let hold = new_hold(&account, "10", 600);
        tasks.push(tokio::spawn(async move {
            handle.place_hold(&hold, None, now()).await
        }));
    }
    let mut placed = Vec::new();
    for task in tasks {
        match task.await.expect("task") {
            Ok(outcome) => placed.push(outcome.hold),
            Err(HoldError::Rule(HoldRuleError::Posting(PostingRuleError::InsufficientFunds {
                ..
            }))) => {}
            Err(other) => panic!("unexpected error: {other:?}"),
        }
    }
    assert_eq!(placed.len(), 10);
    // Release half, then race 30 debits of 2 and 30 holds of 2 for the 50 freed.
    for hold in &placed[..5] {
        store
            .change_hold(&account, &hold.id, &HoldAction::Release, None, now())
            .await
            .expect("release");
    }
    let mut tasks = Vec::new();
    for i in 0..60 {
        let handle = if i % 2 == 0 {
            store.clone()
        } else {
            other.clone()
        };
        let account = account.clone();
        tasks.push(tokio::spawn(async move {
            if i % 3 == 0 {
                let hold = new_hold(&account, "2", 600);
                handle
                    .place_hold(&hold, None, now())
                    .await
                    .map(|_| ())
                    .is_ok()
            } else {
                handle
                    .post(posting(&account, vec![entry(EntryKind::Usage, cr("-2"))]))
                    .await
                    .is_ok()
            }
        }));
    }
    let mut ok = 0;
    for task in tasks {
        if task.await.expect("task") {
            ok += 1;
        }
    }
    assert_eq!(ok, 25, "50 freed / 2 each");
    let balance = store
        .wallet(&account)
        .await
        .expect("wallet")
        .expect("wallet")
        .balance;
    let reserved = store.reserved(&account, now()).await.expect("reserved");
    assert_eq!(balance.checked_sub(reserved).expect("sub"), Credits::ZERO);
    verify_history(&store.history(&account).await.expect("history"), balance).expect("consistent");
}

/// A blocking monthly limit of 100 with 90 spent: of 50 racing debits of 5 on two handles,
/// exactly 2 succeed. Holds count toward the limit, refunds of usage lower the spend, a
/// capture spends what its hold committed, and `alert` lets debits pass.
pub async fn spending_limit_is_exact_under_concurrency(store: Handle, other: Handle) {
    let account = new_account(&store).await;
    credit(&store, &account, cr("500")).await;
    let limit = SpendingLimit::new(true, Some(cr("100")), LimitAction::Block).expect("limit");
    assert!(
        store
            .set_spending_limit(&account, &limit)
            .await
            .expect("set")
    );
    assert!(
        !store
            .set_spending_limit(&AccountId::new("acct_none"), &limit)
            .await
            .expect("set")
    );
    let usage = |amount: &str| {
        posting(
            &account,
            vec![entry(EntryKind::Usage, cr(amount).negated())],
        )
    };
    let first = other.post(usage("90")).await.expect("90");
    let mut tasks = Vec::new();
    for i in 0..50 {
        let handle = if i % 2 == 0 {
            store.clone()
        } else {
            other.clone()
        };
        let posting = usage("5");
        tasks.push(tokio::spawn(async move { handle.post(posting).await }));
    }
    let mut ok = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => ok += 1,
            Err(PostError::Rule(PostingRuleError::SpendingLimitExceeded { limit, .. })) => {
                assert_eq!(limit, cr("100"));
            }
            Err(other) => panic!("unexpected error: {other:?}"),
        }
    }
    assert_eq!(ok, 2);
    let (stored, spend) = store
        .spending(&account)
        .await
        .expect("get")
        .expect("account");
    assert_eq!((stored, spend.spent), (limit.clone(), cr("100")));
    assert_eq!(spend.month_start, now().month_start());
    // Holds count; a refund of usage lowers the spend.
    assert!(matches!(
        store
            .place_hold(&new_hold(&account, "1", 600), None, now())
            .await,
        Err(HoldError::Rule(HoldRuleError::Posting(
            PostingRuleError::SpendingLimitExceeded { .. }
        )))
    ));
    let mut refund = posting(&account, vec![entry(EntryKind::Refund, cr("10"))]);
    refund.refund_of = vec![first.entries[0].id.clone()];
    other.post(refund).await.expect("refund");
    let hold = new_hold(&account, "10", 600);
    store
        .place_hold(&hold, None, now())
        .await
        .expect("hold within the limit");
    assert!(matches!(
        other.post(usage("0.000000001")).await,
        Err(PostError::Rule(
            PostingRuleError::SpendingLimitExceeded { .. }
        ))
    ));
    let mut capture_entry = entry(EntryKind::Usage, cr("-4"));
    capture_entry.reference = Some(hold.id.to_string());
    other
        .change_hold(
            &account,
            &hold.id,
            &HoldAction::Capture {
                amount: cr("4"),
                entry: Some(capture_entry),
            },
            None,
            now(),
        )
        .await
        .expect("capture");
    store.post(usage("6")).await.expect("up to the limit again");
    assert!(other.post(usage("0.000000001")).await.is_err());
    assert_eq!(
        other
            .spending(&account)
            .await
            .expect("get")
            .map(|(_, s)| s.spent),
        Some(cr("100"))
    );
    // Months: a refund of last month's usage does not lower this month's spend, and a
    // posting stamped before the recorded month counts in it.
    let months = new_account(&store).await;
    let fifty = SpendingLimit::new(true, Some(cr("50")), LimitAction::Block).expect("limit");
    store
        .set_spending_limit(&months, &fifty)
        .await
        .expect("set");
    let last_month = now().minus_secs(40 * 86_400);
    let debit_at = |amount: &str, at: Timestamp| {
        let mut p = posting(&months, vec![entry(EntryKind::Usage, cr(amount).negated())]);
        p.now = at;
        p
    };
    let mut funds = posting(&months, vec![entry(EntryKind::Bonus, cr("100"))]);
    funds.now = last_month;
    store.post(funds).await.expect("funds, last month");
    let old = other
        .post(debit_at("20", last_month))
        .await
        .expect("last month");
    store.post(debit_at("10", now())).await.expect("this month");
    let mut refund_old = posting(&months, vec![entry(EntryKind::Refund, cr("20"))]);
    refund_old.refund_of = vec![old.entries[0].id.clone()];
    other.post(refund_old).await.expect("refund of last month");
    store
        .post(debit_at("5", last_month))
        .await
        .expect("stamped late");
    assert_eq!(
        store
            .spending(&months)
            .await
            .expect("get")
            .map(|(_, s)| (s.month_start, s.spent)),
        Some((now().month_start(), cr("15")))
    );

    // `alert` lets debits pass.
    let alert = SpendingLimit::new(true, Some(cr("100")), LimitAction::Alert).expect("limit");
    other
        .set_spending_limit(&account, &alert)
        .await
        .expect("set");
    store
        .post(usage("1"))
        .await
        .expect("an alert does not block");
    verify_history(
        &store.history(&account).await.expect("history"),
        store.wallet(&account).await.expect("w").expect("w").balance,
    )
    .expect("consistent");
}

/// Notices are decided under the wallet's lock: racing debits across the alert's threshold
/// write exactly one `balance.low` (email and event) and one `balance.depleted`; the
/// spending limit is told once a month; an outbox item is claimed by one worker at a time,
/// comes back when its retry is due, and never after it was delivered.
pub async fn notices_are_written_once_and_claimed_once(store: Handle, other: Handle) {
    let account = new_account(&store).await;
    assert_eq!(
        store.low_balance_alert(&account).await.expect("get"),
        Some(LowBalanceAlert::default())
    );
    assert_eq!(
        store
            .low_balance_alert(&AccountId::new("acct_none"))
            .await
            .expect("get"),
        None
    );
    let alert = LowBalanceAlert::new(true, Some(cr("10"))).expect("alert");
    assert!(
        store
            .set_low_balance_alert(&account, &alert)
            .await
            .expect("set")
    );
    assert_eq!(
        other.low_balance_alert(&account).await.expect("get"),
        Some(alert.clone())
    );
    credit(&store, &account, cr("20")).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let handle = if i % 2 == 0 {
            store.clone()
        } else {
            other.clone()
        };
        let account = account.clone();
        tasks.push(tokio::spawn(async move {
            debit(&handle, &account, cr("1")).await
        }));
    }
    for task in tasks {
        task.await.expect("task").expect("debit");
    }
    let t = now();
    let lease = t.plus_secs(60);
    let (a, b) = tokio::join!(
        store.claim_outbox(t, lease, 100),
        other.claim_outbox(t, lease, 100)
    );
    let mut claimed = a.expect("claim");
    claimed.extend(b.expect("claim"));
    let mut seen: Vec<(Topic, Channel)> = claimed
        .iter()
        .map(|i| (i.notice.topic, i.channel))
        .collect();
    seen.sort_by_key(|(t, c)| (t.as_str(), c.as_str()));
    assert_eq!(
        seen,
        vec![
            (Topic::BalanceDepleted, Channel::Event),
            (Topic::BalanceLow, Channel::Email),
            (Topic::BalanceLow, Channel::Event),
        ],
        "one crossing, one depletion, each claimed by one worker"
    );
    let low = claimed
        .iter()
        .find(|i| i.notice.topic == Topic::BalanceLow)
        .expect("low");
    assert_eq!(low.notice.balance, cr("9"));
    assert_eq!(low.notice.threshold, Some(cr("10")));
    assert_eq!(low.notice.account_id, account);
    assert_eq!(low.attempts, 0);
    assert!(
        store
            .claim_outbox(t, lease, 100)
            .await
            .expect("claim")
            .is_empty()
    );
    assert_eq!(store.outbox_depth().await.expect("depth"), (3, Some(t)));
    // One retried, the others delivered.
    for item in &claimed {
        let outcome = if item.notice.topic == Topic::BalanceDepleted {
            OutboxOutcome::Retry {
                at: t.plus_secs(10),
                error: "503".into(),
            }
        } else {
            OutboxOutcome::Delivered
        };
        assert!(
            other
                .finish_outbox(item, &outcome, t)
                .await
                .expect("finish")
        );
    }
    assert!(
        store
            .claim_outbox(t.plus_secs(9), lease, 100)
            .await
            .expect("claim")
            .is_empty()
    );
    let again = store
        .claim_outbox(t.plus_secs(10), t.plus_secs(70), 100)
        .await
        .expect("claim");
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].notice.topic, again[0].attempts),
        (Topic::BalanceDepleted, 1)
    );
    // A stale outcome (from the first claim, whose lease another claim replaced) changes
    // nothing.
    let stale = claimed
        .iter()
        .find(|i| i.notice.topic == Topic::BalanceDepleted)
        .expect("depleted");
    assert!(
        !other
            .finish_outbox(stale, &OutboxOutcome::Delivered, t)
            .await
            .expect("finish")
    );
    assert!(
        store
            .finish_outbox(&again[0], &OutboxOutcome::Delivered, t)
            .await
            .expect("finish")
    );
    let delivered_low = claimed
        .iter()
        .find(|i| i.notice.topic == Topic::BalanceLow)
        .expect("low");
    assert!(
        !store
            .finish_outbox(
                delivered_low,
                &OutboxOutcome::Retry {
                    at: t,
                    error: "late".into()
                },
                t
            )
            .await
            .expect("finish"),
        "a late outcome never reopens a delivered item"
    );
    assert_eq!(store.outbox_depth().await.expect("depth"), (0, None));
    assert!(
        store
            .claim_outbox(t.plus_secs(7_200), t.plus_secs(7_300), 100)
            .await
            .expect("claim")
            .is_empty()
    );

    // Back above the threshold re-arms the alert.
    credit(&store, &account, cr("15")).await;
    debit(&other, &account, cr("6"))
        .await
        .expect("crossing again");
    let rearmed = store.claim_outbox(t, lease, 100).await.expect("claim");
    assert_eq!(rearmed.len(), 2);
    assert!(rearmed.iter().all(|i| i.notice.topic == Topic::BalanceLow));

    // The spending limit: told once a month, when it is reached.
    let limited = new_account(&store).await;
    credit(&store, &limited, cr("100")).await;
    let limit = SpendingLimit::new(true, Some(cr("10")), LimitAction::Block).expect("limit");
    store
        .set_spending_limit(&limited, &limit)
        .await
        .expect("set");
    debit(&store, &limited, cr("9")).await.expect("under");
    debit(&other, &limited, cr("1")).await.expect("reaches");
    assert!(debit(&store, &limited, cr("1")).await.is_err());
    let told = store.claim_outbox(t, lease, 100).await.expect("claim");
    let mut topics: Vec<(Topic, Channel)> =
        told.iter().map(|i| (i.notice.topic, i.channel)).collect();
    topics.sort_by_key(|(t, c)| (t.as_str(), c.as_str()));
    assert_eq!(
        topics,
        vec![
            (Topic::SpendingLimitReached, Channel::Email),
            (Topic::SpendingLimitReached, Channel::Event)
        ]
    );
    assert_eq!(told[0].notice.amount, Some(cr("10")));
    let alert_only = SpendingLimit::new(true, Some(cr("10")), LimitAction::Alert).expect("limit");
    store
        .set_spending_limit(&limited, &alert_only)
        .await
        .expect("set");
    debit(&store, &limited, cr("1")).await.expect("passes");
    debit(&store, &limited, cr("1"))
        .await
        .expect("passes again");
    assert_eq!(
        store
            .claim_outbox(t, lease, 100)
            .await
            .expect("claim")
            .len(),
        2,
        "a new limit is told once"
    );
    // The same limit saved again is not told again this month.
    store
        .set_spending_limit(&limited, &alert_only)
        .await
        .expect("set");
    debit(&store, &limited, cr("1")).await.expect("passes");
    assert!(
        store
            .claim_outbox(t, lease, 100)
            .await
            .expect("claim")
            .is_empty()
    );
    // A changed one is, on the next debit, not on a credit.
    let lower = SpendingLimit::new(true, Some(cr("9")), LimitAction::Alert).expect("limit");
    store
        .set_spending_limit(&limited, &lower)
        .await
        .expect("set");
    credit(&store, &limited, cr("1")).await;
    assert!(
        store
            .claim_outbox(t, lease, 100)
            .await
            .expect("claim")
            .is_empty(),
        "a grant does not reach the limit"
    );
    debit(&store, &limited, cr("1")).await.expect("passes");
    assert_eq!(
        store
            .claim_outbox(t, lease, 100)
            .await
            .expect("claim")
            .len(),
        2
    );
}

/// Auto top-up is decided under the wallet's lock: debits racing across the threshold on
/// two pools start exactly one pending top-up and one charge item; its failure is counted,
/// and the failure limit turns auto top-up off; removing the method turns it off too.
pub async fn auto_topup_starts_one_charge(store: Handle, other: Handle) {
    use billing_core::autotopup::{
        AutoTopUpSettings, REASON_NO_PAYMENT_METHOD, REASON_PAYMENT_FAILED, SavedMethod,
    };
    let account = new_account(&store).await;
    assert_eq!(store.payment_method(&account).await.expect("get"), None);
    let (settings, state) = store
        .auto_topup(&account)
        .await
        .expect("get")
        .expect("account");
    assert_eq!((settings, state.pending), (AutoTopUpSettings::off(), None));
    assert!(
        store
            .auto_topup(&AccountId::new("acct_none"))
            .await
            .expect("get")
            .is_none()
    );
    let method = SavedMethod {
        gateway: "sandbox".into(),
        reference: "sbx_pm_1".into(),
        brand: Some("visa".into()),
        last4: Some("4242".into()),
        saved_at: now(),
    };
    assert!(
        store
            .save_payment_method(&account, &method)
            .await
            .expect("save")
    );
    assert_eq!(
        other.payment_method(&account).await.expect("get"),
        Some(method.clone())
    );
    let settings = AutoTopUpSettings {
        enabled: true,
        threshold: Some(cr("5")),
        amount: Some(usd("25.00")),
        monthly_cap: None,
        credits: cr("25"),
        bonus: cr("0"),
        failure_limit: 2,
    };
    assert!(
        store
            .set_auto_topup(&account, &settings)
            .await
            .expect("set")
    );
    credit(&store, &account, cr("10")).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let handle = if i % 2 == 0 {
            store.clone()
        } else {
            other.clone()
        };
        let account = account.clone();
        tasks.push(tokio::spawn(async move {
            debit(&handle, &account, cr("0.2")).await
        }));
    }
    for task in tasks {
        task.await.expect("task").expect("debit");
    }
    let (_, state) = store
        .auto_topup(&account)
        .await
        .expect("get")
        .expect("account");
    let pending = state.pending.clone().expect("one charge pending");
    assert_eq!(state.month_charged_minor, 2_500);
    let topup = store
        .topup(&pending)
        .await
        .expect("get")
        .expect("inserted with the debit");
    assert_eq!(
        (topup.status, topup.price, topup.credits),
        (TopUpStatus::Pending, usd("25.00"), cr("25"))
    );
    assert_eq!(topup.origin(), billing_core::topup::TopUpOrigin::AutoTopUp);
    let t = now();
    let charges: Vec<_> = store
        .claim_outbox(t, t.plus_secs(60), 100)
        .await
        .expect("claim")
        .into_iter()
        .filter(|i| i.channel == Channel::Charge)
        .collect();
    assert_eq!(charges.len(), 1, "one charge item");
    assert_eq!(charges[0].notice.cause.id(), pending.as_str());
    // A failed charge is counted; the next debit below the threshold charges again.
    other
        .transition_topup(
            &pending,
            TopUpStatus::Failed,
            Vec::new(),
            Some("card_declined".into()),
            t,
        )
        .await
        .expect("fail");
    let (settings_now, state) = store
        .auto_topup(&account)
        .await
        .expect("get")
        .expect("account");
    assert_eq!(
        (
            state.pending.clone(),
            state.failures,
            state.month_charged_minor
        ),
        (None, 1, 0)
    );
    assert!(settings_now.enabled);
    debit(&store, &account, cr("0.1")).await.expect("debit");
    let (_, state) = store
        .auto_topup(&account)
        .await
        .expect("get")
        .expect("account");
    let second = state.pending.clone().expect("a second charge");
    assert_ne!(second, pending);
    other
        .transition_topup(
            &second,
            TopUpStatus::Failed,
            Vec::new(),
            Some("card_declined".into()),
            t,
        )
        .await
        .expect("fail");
    let (settings_now, state) = store
        .auto_topup(&account)
        .await
        .expect("get")
        .expect("account");
    assert!(!settings_now.enabled, "the failure limit turns it off");
    assert_eq!(
        state.disabled_reason.as_deref(),
        Some(REASON_PAYMENT_FAILED)
    );
    debit(&store, &account, cr("0.1")).await.expect("debit");
    assert_eq!(
        store
            .auto_topup(&account)
            .await
            .expect("get")
            .expect("a")
            .1
            .pending,
        None
    );
    // A customer's PUT re-enables; removing the method turns it off.
    assert!(
        store
            .set_auto_topup(&account, &settings)
            .await
            .expect("set")
    );
    let (_, state) = store
        .auto_topup(&account)
        .await
        .expect("get")
        .expect("account");
    assert_eq!((state.failures, state.disabled_reason), (0, None));
    assert!(store.delete_payment_method(&account).await.expect("delete"));
    assert!(!store.delete_payment_method(&account).await.expect("delete"));
    let (settings_now, state) = store
        .auto_topup(&account)
        .await
        .expect("get")
        .expect("account");
    assert!(!settings_now.enabled);
    assert_eq!(
        state.disabled_reason.as_deref(),
        Some(REASON_NO_PAYMENT_METHOD)
    );
    verify_history(
        &store.history(&account).await.expect("history"),
        store.wallet(&account).await.expect("w").expect("w").balance,
    )
    .expect("consistent");
}

/// A batch answers each posting as if it had been posted alone, in order: mixed accounts,
/// an insufficient posting in the middle, a key replayed and a key conflicting (claimed
/// before the batch and within it), an unknown account, refunds of an entry the batch
/// itself wrote; and batches racing over the same wallets in opposite orders stay exact.
pub async fn batches_post_each_as_if_alone(store: Handle, other: Handle) {
    let (a, b, c) = (
        new_account(&store).await,
        new_account(&store).await,
        new_account(&store).await,
    );
    credit(&store, &a, cr("11")).await;
    credit(&store, &b, cr("5")).await;
    let keyed = |account: &AccountId, amount: &str, key: &str, fingerprint: &str| {
        let mut p = posting(account, vec![entry(EntryKind::Usage, cr(amount))]);
        p.idempotency = Some(IdempotencyClaim {
            scope: format!("{account}:usage"),
            key: key.into(),
            fingerprint: fingerprint.into(),
        });
        p
    };
    let before = store
        .post(keyed(&a, "-1", "k0", "f0"))
        .await
        .expect("claimed before the batch");
    let mut empty = keyed(&a, "-1", "k3", "f3");
    empty.entries.clear();
    let refund = |amount: &str, of: &EntryId| {
        let mut p = posting(&a, vec![entry(EntryKind::Refund, cr(amount))]);
        p.refund_of = vec![of.clone()];
        p
    };
    let first = keyed(&a, "-3", "k1", "f1");
    let first_entry = first.entries[0].id.clone();
    let batch = vec![
        first,                                                // 0: a 10 -> 7
        posting(&b, vec![entry(EntryKind::Usage, cr("-6"))]), // 1: b has 5
        keyed(&a, "-3", "k1", "f1"),                          // 2: replay of 0
        keyed(&a, "-3", "k1", "other"),                       // 3: conflict
        posting(&b, vec![entry(EntryKind::Usage, cr("-5"))]), // 4: b 5 -> 0
        posting(
            &AccountId::new("acct_none"),
            vec![entry(EntryKind::Bonus, cr("1"))],
        ), // 5
        posting(&c, vec![entry(EntryKind::Bonus, cr("2"))]),  // 6: c 0 -> 2
        posting(&a, vec![entry(EntryKind::Usage, cr("-8"))]), // 7: a has 7
        keyed(&a, "-7", "k2", "f2"),                          // 8: a 7 -> 0
        keyed(&a, "-1", "k0", "f0"),                          // 9: replay, before
        keyed(&a, "-1", "k0", "changed"),                     // 10: conflict
        empty,                                                // 11: nothing to post
        refund("2", &first_entry),                            // 12: a 0 -> 2
        refund("2", &first_entry),                            // 13: 1 left of 3
    ];
    let answers = store.post_batch(batch).await;
    assert_eq!(answers.len(), 14, "{answers:#?}");
    let ok = |i: usize| answers[i].as_ref().unwrap_or_else(|e| panic!("{i}: {e:?}"));
    assert!(!ok(0).replayed);
    assert_eq!(ok(0).entries[0].balance_after, cr("7"));
    assert!(matches!(
        answers[1],
        Err(PostError::Rule(PostingRuleError::InsufficientFunds { .. }))
    ));
    assert!(ok(2).replayed);
    assert_eq!(ok(2).entries, ok(0).entries);
    assert_eq!(answers[3], Err(PostError::IdempotencyConflict));
    assert_eq!(ok(4).entries[0].balance_after, Credits::ZERO);
    assert_eq!(answers[5], Err(PostError::AccountNotFound));
    assert_eq!(ok(6).entries[0].balance_after, cr("2"));
    assert!(matches!(
        answers[7],
        Err(PostError::Rule(PostingRuleError::InsufficientFunds { .. }))
    ));
    assert_eq!(ok(8).entries[0].balance_after, Credits::ZERO);
    assert!(ok(9).replayed);
    assert_eq!(ok(9).entries, before.entries);
    assert_eq!(answers[10], Err(PostError::IdempotencyConflict));
    assert_eq!(answers[11], Err(PostError::Rule(PostingRuleError::Empty)));
    assert_eq!(ok(12).entries[0].balance_after, cr("2"));
    assert!(
        matches!(answers[13], Err(PostError::Refund(_))),
        "{:?}",
        answers[13]
    );
    assert_eq!(assert_ledger_consistent(&store, &a).await, cr("2"));
    assert_eq!(assert_ledger_consistent(&other, &b).await, Credits::ZERO);
    assert_eq!(assert_ledger_consistent(&other, &c).await, cr("2"));
    assert_eq!(store.history(&a).await.expect("history").len(), 5);
    // The batch's claims were written: a later post replays them, from either handle.
    let again = other
        .post(keyed(&a, "-3", "k1", "f1"))
        .await
        .expect("replay after the batch");
    assert!(again.replayed);
    assert_eq!(again.entries, ok(0).entries);

    // Batches racing over two wallets, taken in opposite orders, on both handles: 160
    // debits of 1 against 60 + 60: exactly 120 succeed, and nothing deadlocks.
    let (d, e) = (new_account(&store).await, new_account(&store).await);
    credit(&store, &d, cr("60")).await;
    credit(&store, &e, cr("60")).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let handle = if i % 2 == 0 {
            store.clone()
        } else {
            other.clone()
        };
        let (first, second) = if i % 2 == 0 { (&d, &e) } else { (&e, &d) };
        let batch: Vec<Posting> = (0..20)
            .map(|j| {
                let account = if j % 2 == 0 { first } else { second };
                posting(account, vec![entry(EntryKind::Usage, cr("-1"))])
            })
            .collect();
        tasks.push(tokio::spawn(async move { handle.post_batch(batch).await }));
    }
    let mut succeeded = 0;
    for task in tasks {
        for answer in task.await.expect("task") {
            match answer {
                Ok(_) => succeeded += 1,
                Err(PostError::Rule(PostingRuleError::InsufficientFunds { .. })) => {}
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(succeeded, 120);
    assert_eq!(assert_ledger_consistent(&store, &d).await, Credits::ZERO);
    assert_eq!(assert_ledger_consistent(&store, &e).await, Credits::ZERO);
}

/// Generates one `#[tokio::test]` per contract check. `$factory` is an async function
/// `fn(&'static str) -> Option<(Handle, Handle)>` that returns two handles on one fresh
/// store, or `None` when the backend is unavailable and the suite is allowed to skip (it
/// must say so loudly).
#[macro_export]
macro_rules! store_contract_tests {
    ($factory:path) => {
        $crate::store_contract_tests!(@each $factory;
            credit_and_debit_keep_running_balances,
            insufficient_balance_writes_nothing,
            racing_debits_never_overdraw,
            topup_completed_concurrently_credits_once,
            topup_lifecycle,
            topup_pages_and_pending,
            idempotent_replay_and_conflict,
            refunds_are_bounded,
            ledger_scale_limits_round_trip,
            entries_page_and_filter,
            entries_in_a_period,
            accounts_packs_keys_events,
            keys_list_page_and_touch,
            dashboard_sessions,
            rates_and_priced_usage_round_trip,
            holds_reserve_capture_release_and_expire,
            racing_holds_and_debits_never_overdraw,
            spending_limit_is_exact_under_concurrency,
            notices_are_written_once_and_claimed_once,
            auto_topup_starts_one_charge,
            batches_post_each_as_if_alone
        );
    };
    (@each $factory:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let Some((store, other)) = $factory(stringify!($name)).await else {
                    return;
                };
                $crate::contract::$name(store, other).await;
            }
        )*
    };
}
