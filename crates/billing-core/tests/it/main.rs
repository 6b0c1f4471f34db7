//! The use cases of `Billing`, over the in-memory store, with `mockall` gateways for the
//! interactions ("the gateway was asked exactly once").

use std::sync::Arc;

use billing_core::Decimal;
use billing_core::ids::{AccountId, EntryId, PackId, TopUpId};
use billing_core::ledger::EntryKind;
use billing_core::money::{Credits, Currency, Money};
use billing_core::ports::{
    Checkout, EntryQuery, GatewayError, MockPaymentGateway, Notification, PaymentGateway,
    PaymentStatus, Store, VerifiedNotification,
};
use billing_core::service::{
    Billing, CreateTopUpError, Gateways, LedgerOpError, SettleOutcome, TopUpRequest, UsageCharge,
    UsageRequest,
};
use billing_core::topup::{Pack, TopUpPolicy, TopUpRuleError, TopUpStatus};
use billing_testkit::{InMemoryStore, ManualClock, SequentialIds};

fn d(s: &str) -> Decimal {
    Decimal::from_str_exact(s).expect("test decimal")
}

fn usd(s: &str) -> Money {
    Money::new(d(s), Currency::USD).expect("money")
}

struct World {
    billing: Billing,
    store: Arc<InMemoryStore>,
    clock: Arc<ManualClock>,
    account: AccountId,
}

/// A gateway mock named `sandbox` whose checkouts echo the top-up id.
fn gateway() -> MockPaymentGateway {
    let mut gateway = MockPaymentGateway::new();
    gateway.expect_name().return_const("sandbox".to_owned());
    // After a completion the core asks whether the checkout saved a payment method.
    gateway.expect_saved_method().returning(|_| Ok(None));
    gateway
}

fn expect_checkout(gateway: &mut MockPaymentGateway, times: usize) {
    gateway
        .expect_create_checkout()
        .times(times)
        .returning(|request| {
            Ok(Checkout {
                payment_ref: format!("pay_{}", request.topup_id),
                checkout_url: format!("https://pay.example/{}", request.topup_id),
            })
        });
}

async fn world(gateway: MockPaymentGateway) -> World {
    let store = Arc::new(InMemoryStore::new());
    let clock = Arc::new(ManualClock::new());
    let gateway: Arc<dyn PaymentGateway> = Arc::new(gateway);
    let billing = Billing::new(
        store.clone() as Arc<dyn Store>,
        Gateways::new(vec![gateway], "sandbox").expect("default gateway exists"),
        clock.clone(),
        Arc::new(SequentialIds::new()),
        TopUpPolicy::default(),
    );
    use billing_core::ports::PackStore;
    store
        .upsert_pack(&Pack {
            id: PackId::new("pack_pro"),
            name: "Pro Pack".into(),
            price: usd("20"),
            credits: Credits::new(d("25")).expect("credits"),
            popular: true,
            active: true,
        })
        .await
        .expect("pack");
    let account = billing
        .create_account("Ada", "ada@example.com")
        .await
        .expect("account")
        .id;
    World {
        billing,
        store,
        clock,
        account,
    }
}

async fn balance(w: &World) -> Credits {
    w.billing
        .wallet(&w.account)
        .await
        .expect("wallet")
        .expect("exists")
        .balance
}

fn notification_for(topup: &TopUpId) -> Notification {
    event_for(topup, &format!("evt_{topup}"))
}

fn event_for(topup: &TopUpId, event_id: &str) -> Notification {
    Notification {
        headers: vec![("x-test".into(), event_id.into())],
        body: topup.as_str().as_bytes().to_vec(),
    }
}

fn verified(n: &Notification) -> VerifiedNotification {
    VerifiedNotification {
        event_id: n.header("x-test").unwrap_or_default().to_owned(),
        topup_id: Some(TopUpId::new(String::from_utf8_lossy(&n.body).into_owned())),
        payment_ref: None,
    }
}

#[tokio::test]
async fn pack_top_up_creates_one_checkout_and_credits_on_verified_payment() {
    let mut gw = gateway();
    expect_checkout(&mut gw, 1);
    gw.expect_verify_notification()
        .returning(|n, _| Ok(verified(n)));
    gw.expect_payment_status()
        .times(1)
        .returning(|t| Ok(PaymentStatus::Paid { amount: t.price }));
    let w = world(gw).await;
    let topup = w
        .billing
        .create_topup(
            &w.account,
            &TopUpRequest::Pack(PackId::new("pack_pro")),
            None,
            None,
        )
        .await
        .expect("top-up");
    assert_eq!(topup.status, TopUpStatus::Pending);
    assert_eq!(topup.price, usd("20"));
    assert_eq!(topup.pack_name.as_deref(), Some("Pro Pack"));
    assert!(topup.checkout_url.is_some());
    assert_eq!(balance(&w).await, Credits::ZERO, "nothing before payment");

    let outcome = w
        .billing
        .handle_notification("sandbox", &notification_for(&topup.id))
        .await
        .expect("notification");
    assert!(
        matches!(outcome, SettleOutcome::Completed(_)),
        "{outcome:?}"
    );
    assert_eq!(balance(&w).await, Credits::new(d("25")).expect("credits"));
    // The same event again is ignored; another event about a completed top-up is not
    // asked about again (payment_status is expected once).
    let again = w
        .billing
        .handle_notification("sandbox", &notification_for(&topup.id))
        .await
        .expect("notification");
    assert_eq!(again, SettleOutcome::Ignored);
    let other_event = w
        .billing
        .handle_notification("sandbox", &event_for(&topup.id, "evt_other"))
        .await
        .expect("notification");
    assert!(matches!(other_event, SettleOutcome::AlreadySettled(_)));
    assert_eq!(balance(&w).await, Credits::new(d("25")).expect("credits"));
}

#[tokio::test]
async fn custom_amount_gets_its_bonus_as_a_separate_entry() {
    let mut gw = gateway();
    expect_checkout(&mut gw, 1);
    gw.expect_verify_notification()
        .returning(|n, _| Ok(verified(n)));
    gw.expect_payment_status()
        .returning(|t| Ok(PaymentStatus::Paid { amount: t.price }));
    let w = world(gw).await;
    let topup = w
        .billing
        .create_topup(&w.account, &TopUpRequest::Amount(d("100")), None, None)
        .await
        .expect("top-up");
    assert_eq!(topup.bonus, Credits::new(d("10")).expect("bonus"));
    w.billing
        .handle_notification("sandbox", &notification_for(&topup.id))
        .await
        .expect("notification");
    let entries = w
        .billing
        .transactions(
            &w.account,
            EntryQuery {
                limit: 10,
                ..EntryQuery::default()
            },
        )
        .await
        .expect("entries");
    assert!(!entries.has_more);
    let kinds: Vec<(EntryKind, Credits)> =
        entries.entries.iter().map(|e| (e.kind, e.amount)).collect();
    assert_eq!(
        kinds,
        vec![
            (EntryKind::Bonus, Credits::new(d("10")).expect("c")),
            (EntryKind::TopUp, Credits::new(d("100")).expect("c")),
        ]
    );
    assert_eq!(balance(&w).await, Credits::new(d("110")).expect("c"));
}

#[tokio::test]
async fn refused_top_ups_never_reach_the_gateway() {
    let mut gw = gateway();
    expect_checkout(&mut gw, 0);
    let w = world(gw).await;
    let cases = [
        (TopUpRequest::Amount(d("500")), "sales"),
        (TopUpRequest::Amount(d("4.99")), "minimum"),
        (TopUpRequest::Amount(d("10.001")), "amount"),
        (TopUpRequest::Amount(d("0")), "amount"),
        (TopUpRequest::Pack(PackId::new("pack_nope")), "pack"),
    ];
    for (request, expected) in cases {
        let err = w
            .billing
            .create_topup(&w.account, &request, None, None)
            .await
            .expect_err("refused");
        let ok = matches!(
            (&err, expected),
            (
                CreateTopUpError::Rule(TopUpRuleError::ContactSales { .. }),
                "sales"
            ) | (
                CreateTopUpError::Rule(TopUpRuleError::BelowMinimum { .. }),
                "minimum"
            ) | (CreateTopUpError::Rule(TopUpRuleError::Amount(_)), "amount")
                | (CreateTopUpError::PackNotFound, "pack")
        );
        assert!(ok, "{request:?}: {err:?}");
    }
    let unknown = w
        .billing
        .create_topup(
            &w.account,
            &TopUpRequest::Amount(d("10")),
            Some("paypal"),
            None,
        )
        .await;
    assert!(matches!(unknown, Err(CreateTopUpError::UnknownGateway(_))));
    let history = w
        .billing
        .topup_history(&w.account, None, 1)
        .await
        .expect("history");
    assert_eq!(history.total, 0, "a refused request writes nothing");
}

#[tokio::test]
async fn a_failed_checkout_leaves_a_failed_top_up() {
    let mut gw = gateway();
    gw.expect_create_checkout()
        .times(1)
        .returning(|_| Err(GatewayError::Transient("timeout".into())));
    let w = world(gw).await;
    let err = w
        .billing
        .create_topup(&w.account, &TopUpRequest::Amount(d("10")), None, None)
        .await;
    assert!(matches!(
        err,
        Err(CreateTopUpError::Gateway(GatewayError::Transient(_)))
    ));
    let history = w
        .billing
        .topup_history(&w.account, None, 1)
        .await
        .expect("history");
    assert_eq!(history.topups[0].status, TopUpStatus::Failed);
}

#[tokio::test]
async fn idempotent_top_up_creation_calls_the_gateway_once() {
    let mut gw = gateway();
    expect_checkout(&mut gw, 1);
    let w = world(gw).await;
    let request = TopUpRequest::Amount(d("25"));
    let first = w
        .billing
        .create_topup(&w.account, &request, None, Some("k1"))
        .await
        .expect("first");
    let replay = w
        .billing
        .create_topup(&w.account, &request, None, Some("k1"))
        .await
        .expect("replay");
    assert_eq!(first.id, replay.id);
    let conflict = w
        .billing
        .create_topup(&w.account, &TopUpRequest::Amount(d("26")), None, Some("k1"))
        .await;
    assert_eq!(conflict, Err(CreateTopUpError::IdempotencyConflict));
}

#[tokio::test]
async fn unverified_unpaid_and_mismatched_payments_credit_nothing() {
    let mut gw = gateway();
    expect_checkout(&mut gw, 3);
    gw.expect_verify_notification().returning(|n, _| {
        if n.header("x-test").is_none() {
            return Err(GatewayError::BadSignature("no signature".into()));
        }
        Ok(verified(n))
    });
    // Per top-up, by creation order: pending, failed, paid the wrong amount.
    gw.expect_payment_status().returning(|t| {
        Ok(match t.price.amount().to_string().as_str() {
            "10.00" => PaymentStatus::Pending,
            "11.00" => PaymentStatus::Failed {
                reason: "declined".into(),
            },
            _ => PaymentStatus::Paid {
                amount: usd("1.00"),
            },
        })
    });
    let w = world(gw).await;
    let mut ids = Vec::new();
    for amount in ["10", "11", "12"] {
        let t = w
            .billing
            .create_topup(&w.account, &TopUpRequest::Amount(d(amount)), None, None)
            .await
            .expect("top-up");
        ids.push(t.id);
    }
    let forged = w
        .billing
        .handle_notification(
            "sandbox",
            &Notification {
                headers: vec![],
                body: ids[2].as_str().as_bytes().to_vec(),
            },
        )
        .await;
    assert!(forged.is_err());
    let outcomes = [
        w.billing
            .handle_notification("sandbox", &notification_for(&ids[0]))
            .await,
        w.billing
            .handle_notification("sandbox", &notification_for(&ids[1]))
            .await,
        w.billing
            .handle_notification("sandbox", &notification_for(&ids[2]))
            .await,
        w.billing
            .handle_notification("sandbox", &notification_for(&TopUpId::new("topup_x")))
            .await,
    ];
    assert!(matches!(outcomes[0], Ok(SettleOutcome::StillPending(_))));
    assert!(matches!(outcomes[1], Ok(SettleOutcome::Failed(_))));
    assert!(matches!(outcomes[2], Ok(SettleOutcome::AmountMismatch(_))));
    assert!(matches!(outcomes[3], Ok(SettleOutcome::Ignored)));
    assert_eq!(balance(&w).await, Credits::ZERO);
    let history = w
        .billing
        .topup_history(&w.account, None, 1)
        .await
        .expect("history");
    let statuses: Vec<TopUpStatus> = history.topups.iter().map(|t| t.status).collect();
    assert_eq!(
        statuses,
        vec![
            TopUpStatus::Pending,
            TopUpStatus::Failed,
            TopUpStatus::Pending
        ]
    );
}

#[tokio::test]
async fn reconciliation_completes_old_pending_top_ups() {
    let mut gw = gateway();
    expect_checkout(&mut gw, 1);
    gw.expect_payment_status()
        .times(1)
        .returning(|t| Ok(PaymentStatus::Paid { amount: t.price }));
    let w = world(gw).await;
    w.billing
        .create_topup(&w.account, &TopUpRequest::Amount(d("10")), None, None)
        .await
        .expect("top-up");
    // Too young: not checked.
    assert!(
        w.billing
            .reconcile(300, 10)
            .await
            .expect("reconcile")
            .is_empty()
    );
    w.clock.advance_secs(301);
    let outcomes = w.billing.reconcile(300, 10).await.expect("reconcile");
    assert!(matches!(outcomes[..], [Ok(SettleOutcome::Completed(_))]));
    assert_eq!(balance(&w).await, Credits::new(d("10")).expect("c"));
    assert!(
        w.billing
            .reconcile(300, 10)
            .await
            .expect("again")
            .is_empty()
    );
}

#[tokio::test]
async fn usage_debits_are_idempotent_and_never_overdraw() {
    let w = world(gateway()).await;
    w.billing
        .grant(&w.account, d("1"), "welcome", None)
        .await
        .expect("grant");
    let usage = |amount: &str, key: &str| UsageRequest {
        charge: UsageCharge::Amount(d(amount)),
        description: Some("API usage - chat".into()),
        idempotency_key: key.into(),
    };
    let first = w
        .billing
        .record_usage(&w.account, &usage("0.15", "req-1"))
        .await
        .expect("debit");
    let replay = w
        .billing
        .record_usage(&w.account, &usage("0.15", "req-1"))
        .await
        .expect("replay");
    assert!(replay.replayed);
    assert_eq!(replay.entries, first.entries);
    assert_eq!(
        w.billing
            .record_usage(&w.account, &usage("0.16", "req-1"))
            .await,
        Err(LedgerOpError::IdempotencyConflict)
    );
    assert!(matches!(
        w.billing
            .record_usage(&w.account, &usage("0.86", "req-2"))
            .await,
        Err(LedgerOpError::InsufficientFunds { .. })
    ));
    for (amount, key) in [("0", "k"), ("-1", "k"), ("0.0000000001", "k"), ("1", "")] {
        assert!(
            matches!(
                w.billing
                    .record_usage(&w.account, &usage(amount, key))
                    .await,
                Err(LedgerOpError::Invalid(_))
            ),
            "{amount} {key:?}"
        );
    }
    assert_eq!(
        w.billing
            .record_usage(&AccountId::new("acct_none"), &usage("1", "k"))
            .await,
        Err(LedgerOpError::AccountNotFound)
    );
    assert_eq!(balance(&w).await, Credits::new(d("0.85")).expect("c"));
}

#[tokio::test]
async fn refunds_credit_back_usage_within_bounds() {
    let w = world(gateway()).await;
    w.billing
        .grant(&w.account, d("10"), "", None)
        .await
        .expect("grant");
    let debit = w
        .billing
        .record_usage(
            &w.account,
            &UsageRequest {
                charge: UsageCharge::Amount(d("4")),
                description: Some("chat".into()),
                idempotency_key: "r".into(),
            },
        )
        .await
        .expect("debit");
    let id = debit.entries[0].id.clone();
    w.billing
        .refund(&w.account, vec![id.clone()], d("3"), "sorry", None)
        .await
        .expect("refund");
    assert!(matches!(
        w.billing
            .refund(&w.account, vec![id.clone()], d("1.5"), "", None)
            .await,
        Err(LedgerOpError::Refund(_))
    ));
    assert!(matches!(
        w.billing
            .refund(&w.account, vec![id.clone(), id.clone()], d("1"), "", None)
            .await,
        Err(LedgerOpError::Invalid(_))
    ));
    assert!(matches!(
        w.billing
            .refund(&w.account, vec![EntryId::new("txn_x")], d("1"), "", None)
            .await,
        Err(LedgerOpError::Refund(_))
    ));
    assert_eq!(balance(&w).await, Credits::new(d("9")).expect("c"));
    let _ = &w.store;
}

/// Top-ups that stay pending (the gateway cannot tell) do not starve a paid one behind them,
/// however small the reconciliation batch.
#[tokio::test]
async fn reconciliation_is_not_starved_by_stuck_top_ups() {
    let mut gw = gateway();
    expect_checkout(&mut gw, 3);
    gw.expect_payment_status().returning(|t| {
        Ok(if t.price.amount().to_string() == "30.00" {
            PaymentStatus::Paid { amount: t.price }
        } else {
            PaymentStatus::Pending
        })
    });
    let w = world(gw).await;
    for amount in ["10", "20", "30"] {
        w.billing
            .create_topup(&w.account, &TopUpRequest::Amount(d(amount)), None, None)
            .await
            .expect("top-up");
        w.clock.advance_secs(1);
    }
    w.clock.advance_secs(300);
    let mut rounds = 0;
    while balance(&w).await == Credits::ZERO && rounds < 3 {
        let outcomes = w.billing.reconcile(300, 2).await.expect("reconcile");
        assert_eq!(outcomes.len(), 2);
        w.clock.advance_secs(60);
        rounds += 1;
    }
    assert_eq!(balance(&w).await, Credits::new(d("30")).expect("c"));
    assert_eq!(rounds, 2, "the paid top-up is reached on the second round");
}

/// The spending month turns at midnight UTC: a limit reached in the last second of a leap
/// day (2028-02-29T23:59:59Z) blocks until 2028-03-01T00:00:00Z, and not a second longer.
#[tokio::test]
async fn the_spending_month_turns_at_midnight_utc_after_a_leap_day() {
    use billing_core::ports::Clock;
    use billing_core::time::Timestamp;
    let w = world(gateway()).await;
    w.billing
        .grant(&w.account, d("100"), "welcome", None)
        .await
        .expect("grant");
    let last_second = Timestamp::parse_rfc3339("2028-02-29T23:59:59Z").expect("time");
    w.clock
        .advance_secs(last_second.as_secs() - w.clock.now().as_secs());
    w.billing
        .set_spending_limit(&w.account, true, Some(d("10")), "block", 2)
        .await
        .expect("limit");
    let usage = |amount: &str, key: &str| UsageRequest {
        charge: UsageCharge::Amount(d(amount)),
        description: None,
        idempotency_key: key.into(),
    };
    w.billing
        .record_usage(&w.account, &usage("10", "feb-1"))
        .await
        .expect("within the limit");
    assert!(matches!(
        w.billing
            .record_usage(&w.account, &usage("0.01", "feb-2"))
            .await,
        Err(LedgerOpError::SpendingLimitExceeded(_))
    ));
    let (_, spend) = w
        .billing
        .spending_limit(&w.account)
        .await
        .expect("read")
        .expect("account");
    assert_eq!(
        spend.month_start,
        Timestamp::parse_rfc3339("2028-02-01T00:00:00Z").expect("time")
    );
    w.clock.advance_secs(1);
    assert_eq!(w.clock.now().to_rfc3339(), "2028-03-01T00:00:00Z");
    w.billing
        .record_usage(&w.account, &usage("0.01", "mar-1"))
        .await
        .expect("a new month");
    let (_, spend) = w
        .billing
        .spending_limit(&w.account)
        .await
        .expect("read")
        .expect("account");
    assert_eq!(spend.month_start, w.clock.now());
    assert_eq!(spend.spent, Credits::new(d("0.01")).expect("credits"));
}

/// A hold expires at its `expires_at` to the second, across the end of a leap day's month:
/// placed at 2028-02-29T23:58:59Z for 61 s, it reserves (and counts toward February's
/// spending limit) through 23:59:59; at 2028-03-01T00:00:00Z it is expired: it reserves
/// nothing, a capture answers not active, and March's spend starts from nothing.
#[tokio::test]
async fn a_hold_expires_to_the_second_across_a_leap_day_month_end() {
    use billing_core::holds::HoldStatus;
    use billing_core::ports::Clock;
    use billing_core::service::{CaptureCharge, HoldCharge, HoldOpError};
    use billing_core::time::Timestamp;
    let w = world(gateway()).await;
    w.billing
        .grant(&w.account, d("100"), "welcome", None)
        .await
        .expect("grant");
    let placed_at = Timestamp::parse_rfc3339("2028-02-29T23:58:59Z").expect("time");
    w.clock
        .advance_secs(placed_at.as_secs() - w.clock.now().as_secs());
    w.billing
        .set_spending_limit(&w.account, true, Some(d("50")), "block", 2)
        .await
        .expect("limit");
    let placed = w
        .billing
        .place_hold(
            &w.account,
            &HoldCharge::Amount(d("40")),
            Some(61),
            "leap-hold",
        )
        .await
        .expect("hold");
    assert_eq!(
        placed.hold.expires_at.to_rfc3339(),
        "2028-03-01T00:00:00Z",
        "61 s after 23:58:59 on a leap day"
    );
    w.clock.advance_secs(59);
    assert_eq!(w.clock.now().to_rfc3339(), "2028-02-29T23:59:58Z");
    assert_eq!(
        w.billing.available(&w.account).await.expect("available"),
        Credits::new(d("60")).expect("c")
    );
    // The held 40 counts toward February's 50: 10.01 more is over it.
    assert!(matches!(
        w.billing
            .place_hold(
                &w.account,
                &HoldCharge::Amount(d("10.01")),
                Some(60),
                "over"
            )
            .await,
        Err(HoldOpError::SpendingLimitExceeded(_))
    ));
    w.clock.advance_secs(1);
    assert_eq!(w.clock.now().to_rfc3339(), "2028-02-29T23:59:59Z");
    assert_eq!(
        w.billing.available(&w.account).await.expect("available"),
        Credits::new(d("60")).expect("c"),
        "still held in the last second of February"
    );
    w.clock.advance_secs(1);
    assert_eq!(w.clock.now().to_rfc3339(), "2028-03-01T00:00:00Z");
    assert_eq!(
        w.billing.available(&w.account).await.expect("available"),
        Credits::new(d("100")).expect("c"),
        "expired at its expires_at: nothing reserved"
    );
    assert!(matches!(
        w.billing
            .capture_hold(
                &w.account,
                &placed.hold.id,
                &CaptureCharge::Amount(d("1")),
                None,
                "late-capture"
            )
            .await,
        Err(HoldOpError::NotActive(HoldStatus::Expired))
    ));
    // March's limit starts from nothing: 50 may be held again.
    w.billing
        .place_hold(&w.account, &HoldCharge::Amount(d("50")), Some(60), "march")
        .await
        .expect("a new month's limit");
    assert_eq!(
        balance(&w).await,
        Credits::new(d("100")).expect("c"),
        "an expired hold never moved money"
    );
}

/// A statement's period, rows and balances: opening + Σ amounts = closing, and a type
/// filter keeps the balances of every type.
#[tokio::test]
async fn statements_cover_their_period_with_its_balances() {
    use billing_core::service::{StatementError, StatementQuery};

    let w = world(gateway()).await;
    let day0 = w.billing.now();
    w.billing
        .grant(&w.account, d("10"), "Welcome", None)
        .await
        .expect("grant");
    let debit = |key: &'static str, amount: &'static str| UsageRequest {
        charge: UsageCharge::Amount(d(amount)),
        description: None,
        idempotency_key: key.to_owned(),
    };
    for (key, amount) in [("d1", "1.5"), ("d2", "0.25"), ("d3", "2")] {
        w.clock.advance_secs(86_400);
        w.billing
            .record_usage(&w.account, &debit(key, amount))
            .await
            .expect("debit");
    }
    let day = |n: i64| day0.plus_secs(n * 86_400);
    let cr = |s: &str| Credits::new(d(s)).expect("credits");

    // Days 1 and 2: the debits of 1.5 and 0.25, after the grant.
    let middle = StatementQuery {
        from: Some(day(1)),
        to: Some(day(3)),
        ..StatementQuery::default()
    };
    let s = w
        .billing
        .statement(&w.account, &middle)
        .await
        .expect("statement");
    let amounts: Vec<Credits> = s.entries.iter().map(|e| e.amount).collect();
    assert_eq!(amounts, vec![cr("-1.5"), cr("-0.25")], "oldest first");
    assert_eq!(
        (s.opening_balance, s.closing_balance),
        (cr("10"), cr("8.25"))
    );

    // Only bonuses in days 1 to 3: none, and the balances still move with the debits.
    let bonuses = StatementQuery {
        kind: Some(EntryKind::Bonus),
        ..middle.clone()
    };
    let s = w
        .billing
        .statement(&w.account, &bonuses)
        .await
        .expect("statement");
    assert!(s.entries.is_empty());
    assert_eq!(
        (s.opening_balance, s.closing_balance),
        (cr("10"), cr("8.25"))
    );

    // Everything: from zero to the balance.
    let all = w
        .billing
        .statement(&w.account, &StatementQuery::default())
        .await
        .expect("statement");
    assert_eq!(all.entries.len(), 4);
    assert_eq!(
        (all.opening_balance, all.closing_balance),
        (cr("0"), balance(&w).await)
    );

    // An empty period is refused; a period without entries has equal balances.
    let empty = StatementQuery {
        from: Some(day(2)),
        to: Some(day(2)),
        ..StatementQuery::default()
    };
    assert_eq!(
        w.billing.statement(&w.account, &empty).await,
        Err(StatementError::EmptyPeriod)
    );
    let later = StatementQuery {
        from: Some(day(9)),
        ..StatementQuery::default()
    };
    let s = w
        .billing
        .statement(&w.account, &later)
        .await
        .expect("statement");
    assert_eq!(
        (s.opening_balance, s.closing_balance),
        (cr("6.25"), cr("6.25"))
    );
    assert_eq!(
        w.billing
            .statement(&AccountId::new("acct_nobody"), &StatementQuery::default())
            .await,
        Err(StatementError::AccountNotFound)
    );
}
