// Postings, one or a batch, in one write transaction (included by `sqlite.rs` and
// `postgres.rs` after `ops.rs`, like it).
//
// A batch locks its wallets in sorted id order and reads what its postings are decided
// against (`batch_state`, each backend's own: auto top-up, holds, idempotency claims), then
// decides every posting in arrival order with billing-core's `decide_posting` against the
// wallet's state in memory, and writes set-based: multi-row inserts of entries, claims and
// outbox rows, one balance `UPDATE` per wallet (conditional on the balance it read). A
// refund first writes what the batch decided so far, so that its checks read it.

/// The columns of a wallet's row that its postings are decided against.
type WalletTuple = (
    String,
    i64,
    bool,
    Option<i64>,
    String,
    i64,
    i64,
    bool,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

#[allow(clippy::type_complexity)]
const WALLET_COLUMNS: (
    accounts::id,
    accounts::balance,
    accounts::limit_enabled,
    accounts::limit_monthly,
    accounts::limit_action,
    accounts::spend_month_start,
    accounts::spend_month,
    accounts::alert_enabled,
    accounts::alert_threshold,
    accounts::limit_told_month,
    accounts::ledger_head,
) = (
    accounts::id,
    accounts::balance,
    accounts::limit_enabled,
    accounts::limit_monthly,
    accounts::limit_action,
    accounts::spend_month_start,
    accounts::spend_month,
    accounts::alert_enabled,
    accounts::alert_threshold,
    accounts::limit_told_month,
    accounts::ledger_head,
);

/// Rows per multi-row `INSERT` (under both backends' limits on bound parameters).
const ROWS_PER_INSERT: usize = 500;

fn wallet_state(row: WalletTuple) -> Result<billing_core::posting::WalletState, StoreError> {
    let (
        id,
        balance,
        enabled,
        monthly,
        action,
        month_start,
        spent,
        alert_enabled,
        threshold,
        told,
        _head,
    ) = row;
    Ok(billing_core::posting::WalletState {
        account_id: AccountId::new(id),
        balance: Credits::from_units(balance),
        settings: NoticeSettings {
            alert: LowBalanceAlert {
                enabled: alert_enabled,
                threshold: threshold.map(Credits::from_units),
            },
            limit: SpendingLimit {
                enabled,
                monthly_limit: monthly.map(Credits::from_units),
                action: action.parse().map_err(StoreError::Corrupt)?,
            },
            limit_reached_month: told.map(Timestamp::from_micros),
        },
        spend: MonthSpend {
            month_start: Timestamp::from_micros(month_start),
            spent: Credits::from_units(spent),
        },
        auto_topup: None,
        method: None,
    })
}

/// A wallet in a write: its state as decided so far, and as the database holds it now.
struct Slot {
    state: billing_core::posting::WalletState,
    written: billing_core::posting::WalletState,
    /// The hash of the wallet's last entry, written or pending.
    head: Option<String>,
    /// PostgreSQL: the row's version as read under the lock, or as the writer's copy knew
    /// it; `None` on SQLite.
    version: Option<i64>,
    /// Decided from the writer's copy, not read: the row is not locked before the ledger
    /// statement, which then writes only if the version is still `version`.
    copied: bool,
    /// The updates of the row this write has made (each moves its version by one).
    updates: i64,
    /// Whether the ledger statement's updates are the only changes this write made to what
    /// the wallet's postings are decided against (no auto top-up row saved, no top-up
    /// started, no refund): only then may a writer keep a copy of it.
    only_ledger: bool,
}

/// Locks the wallets `ids` (sorted, distinct) and loads what their postings are decided
/// against: the row, auto top-up's row and, where it is on, the saved method.
fn load_wallets(
    conn: &mut Conn,
    ids: &[&str],
) -> Result<std::collections::BTreeMap<String, Slot>, TxError<StoreError>> {
    let rows = lock_wallets(conn, ids)?;
    let autos: Vec<AutoTopUpRow> = if POINT_QUERIES {
        let mut rows = Vec::new();
        for id in ids {
            rows.extend(
                auto_topups::table
                    .find(*id)
                    .select(AutoTopUpRow::as_select())
                    .at_most_one(conn)?,
            );
        }
        rows
    } else {
        auto_topups::table
            .filter(auto_topups::account_id.eq_any(ids))
            .select(AutoTopUpRow::as_select())
            .load(conn)?
    };
    let enabled: Vec<&str> = autos
        .iter()
        .filter(|row| row.enabled)
        .map(|row| row.account_id.as_str())
        .collect();
    let methods: Vec<PaymentMethodRow> = if enabled.is_empty() {
        Vec::new()
    } else {
        payment_methods::table
            .filter(payment_methods::account_id.eq_any(&enabled))
            .select(PaymentMethodRow::as_select())
            .load(conn)?
    };
    slots(rows, autos, methods).map_err(TxError::Op)
}

/// The slots of the locked wallets `rows`, with their auto top-up rows and the saved methods
/// of those whose auto top-up is on.
fn slots(
    rows: Vec<WalletTuple>,
    autos: Vec<AutoTopUpRow>,
    methods: Vec<PaymentMethodRow>,
) -> Result<std::collections::BTreeMap<String, Slot>, StoreError> {
    let mut wallets = std::collections::BTreeMap::new();
    let mut heads = std::collections::HashMap::new();
    for row in rows {
        let head = row.10.clone();
        let state = wallet_state(row)?;
        heads.insert(state.account_id.as_str().to_owned(), head);
        wallets.insert(state.account_id.as_str().to_owned(), state);
    }
    for row in autos {
        let account = row.account_id.clone();
        let (settings, state) = row.split()?;
        if let Some(wallet) = wallets.get_mut(&account) {
            wallet.auto_topup = Some((settings, state));
        }
    }
    for row in methods {
        if let Some(wallet) = wallets.get_mut(&row.account_id) {
            wallet.method = Some(SavedMethod::from(row));
        }
    }
    Ok(wallets
        .into_iter()
        .map(|(id, state)| {
            let head = heads.remove(&id).flatten();
            (
                id,
                Slot {
                    written: state.clone(),
                    state,
                    head,
                    version: None,
                    copied: false,
                    updates: 0,
                    only_ledger: true,
                },
            )
        })
        .collect())
}

/// What a batch's postings are decided against, read under its wallets' locks.
struct BatchState {
    wallets: std::collections::BTreeMap<String, Slot>,
    /// Active holds of the wallets that may still count at the batch's earliest time.
    holds: ActiveHolds,
    /// Claims made before this batch on its postings' keys.
    claims: Claims,
    /// The time `holds` were read since (a hold that expired before it is not among them).
    holds_since: Timestamp,
}

/// A batch's answers, one a posting, and what its write settled.
type Written = (Vec<Result<Posted, PostError>>, Settled);

/// What a batch's write leaves its writer knowing: its wallets as written, and the holds
/// and the time they were read since (PostgreSQL's writers keep copies of them).
#[allow(dead_code)] // read by PostgreSQL's writers only, not SQLite's
struct Settled {
    wallets: std::collections::BTreeMap<String, Slot>,
    holds: ActiveHolds,
    holds_since: Timestamp,
}

/// What a write has decided and not yet written.
#[derive(Default)]
struct Pending {
    entries: Vec<NewEntryRow>,
    claims: Vec<NewClaimRow>,
    outbox: Vec<NewOutboxRow>,
    topups: Vec<TopUpRow>,
    links: Vec<(String, String)>,
}

impl Pending {
    /// Queues a decision's rows; nothing is queued if one does not convert.
    fn add(
        &mut self,
        decided: &billing_core::posting::Decided,
        claim: Option<&IdempotencyClaim>,
        refund_of: &[EntryId],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let entries = decided
            .entries
            .iter()
            .map(NewEntryRow::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        let outbox = decided
            .notices
            .iter()
            .flat_map(|n| Channel::for_topic(n.topic).iter().map(move |c| NewOutboxRow::new(n, *c)))
            .collect::<Result<Vec<_>, _>>()?;
        let topup = decided.auto_topup.as_ref().map(TopUpRow::try_from).transpose()?;
        self.entries.extend(entries);
        self.outbox.extend(outbox);
        self.topups.extend(topup);
        if let Some(claim) = claim {
            let ids: Vec<&str> = decided.entries.iter().map(|e| e.id.as_str()).collect();
            self.claims.push(NewClaimRow {
                scope: claim.scope.clone(),
                key: claim.key.clone(),
                fingerprint: claim.fingerprint.clone(),
                result_ref: ids.join(","),
                created_at: now.as_micros(),
            });
        }
        for refund in &decided.entries {
            for target in refund_of {
                self.links
                    .push((refund.id.as_str().to_owned(), target.as_str().to_owned()));
            }
        }
        Ok(())
    }
}

/// Writes what is pending, and every wallet whose state moved (conditional on the balance
/// last written: a second guard behind the lock). The time its statements take (not the
/// hash chain and the checks before them) is added to `writing`.
fn flush(
    conn: &mut Conn,
    pending: &mut Pending,
    wallets: &mut std::collections::BTreeMap<String, Slot>,
    writing: &mut std::time::Duration,
) -> Result<(), TxError<StoreError>> {
    let mut pending = std::mem::take(pending);
    // Every entry is for a wallet this write locked: its row is then updated below,
    // conditional on the balance read under the lock, and its chain goes on from the head
    // read with it (a wallet not read here would restart its chain from nothing).
    if let Some(stray) = pending
        .entries
        .iter()
        .find(|row| !wallets.contains_key(row.account_id.as_str()))
    {
        return Err(TxError::Op(StoreError::Corrupt(format!(
            "an entry for wallet {}, which this write did not lock",
            stray.account_id
        ))));
    }
    // Each entry hashed onto its wallet's chain, in the order it is appended.
    let mut heads: std::collections::HashMap<String, Option<String>> = wallets
        .iter()
        .map(|(id, slot)| (id.clone(), slot.head.clone()))
        .collect();
    chain_rows(&mut heads, &mut pending.entries);
    let mut moved: std::collections::HashMap<&str, i128> = std::collections::HashMap::new();
    for row in &pending.entries {
        *moved.entry(row.account_id.as_str()).or_default() += i128::from(row.amount);
    }
    for (id, slot) in wallets.iter() {
        let (before, after) = (
            i128::from(units(slot.written.balance).map_err(TxError::Op)?),
            i128::from(units(slot.state.balance).map_err(TxError::Op)?),
        );
        if before + moved.get(id.as_str()).copied().unwrap_or(0) != after || after < 0 {
            return Err(TxError::Op(StoreError::Corrupt(format!(
                "wallet {id}: planned balance {after} is not {before} + its entries"
            ))));
        }
    }
    let mut updates = Vec::new();
    for (id, slot) in wallets.iter() {
        // Entries that net to zero (+5 and -5 in one batch) leave the state as it was but
        // move the chain's head: the row is written then too. So is a wallet decided from a
        // writer's copy, whatever was decided: its update is what checks the copy (a batch
        // refused against a stale copy must be decided again too).
        let head_moved = heads.get(id.as_str()).is_some_and(|h| *h != slot.head);
        let unchecked_copy = slot.copied && slot.updates == 0;
        if slot.state == slot.written && !head_moved && !unchecked_copy {
            continue;
        }
        let (state, written) = (&slot.state, &slot.written);
        updates.push(WalletUpdate {
            id: id.clone(),
            version: slot
                .version
                .filter(|_| slot.copied)
                .map(|v| v + slot.updates),
            old_balance: units(written.balance).map_err(TxError::Op)?,
            balance: units(state.balance).map_err(TxError::Op)?,
            month_start: state.spend.month_start.as_micros(),
            spent: units(state.spend.spent).map_err(TxError::Op)?,
            told: state.settings.limit_reached_month.map(Timestamp::as_micros),
            head: heads.get(id.as_str()).cloned().flatten(),
        });
    }
    let statements = std::time::Instant::now();
    // The entries first: refund links and auto top-ups name them.
    let updated = write_ledger(conn, &pending.entries, &pending.claims, &updates)?;
    if updated != updates.len() {
        return Err(TxError::Op(StoreError::Corrupt(format!(
            "{} of {} wallets changed under their lock",
            updates.len() - updated.min(updates.len()),
            updates.len()
        ))));
    }
    for update in &updates {
        if let Some(slot) = wallets.get_mut(&update.id) {
            slot.updates += 1;
        }
    }
    for row in &pending.topups {
        if let Some(slot) = wallets.get_mut(&row.account_id) {
            slot.only_ledger = false;
        }
        diesel::insert_into(topups::table).values(row).execute(conn)?;
    }
    if !pending.links.is_empty() {
        wallets.values_mut().for_each(|slot| slot.only_ledger = false);
    }
    for chunk in pending.outbox.chunks(ROWS_PER_INSERT) {
        diesel::insert_into(outbox::table).values(chunk).execute(conn)?;
    }
    for (refund, target) in &pending.links {
        diesel::insert_into(refund_links::table)
            .values((
                refund_links::refund_entry_id.eq(refund),
                refund_links::refunded_entry_id.eq(target),
            ))
            .execute(conn)?;
    }
    for (id, slot) in wallets.iter_mut() {
        if let Some(head) = heads.remove(id.as_str()) {
            slot.head = head;
        }
        if slot.state == slot.written {
            continue;
        }
        if slot.state.auto_topup != slot.written.auto_topup
            && let Some((settings, auto)) = &slot.state.auto_topup
        {
            slot.only_ledger = false;
            save_auto::<StoreError>(conn, &slot.state.account_id, settings, auto)?;
        }
        slot.written = slot.state.clone();
    }
    *writing += statements.elapsed();
    Ok(())
}

/// A wallet's row after a write: its new balance (only if it still holds `old_balance` and,
/// on PostgreSQL, `version`), month's spend and the month its limit was told.
struct WalletUpdate {
    id: String,
    /// The row's version the update requires (PostgreSQL; SQLite's writer has no copies).
    #[allow(dead_code)]
    version: Option<i64>,
    old_balance: i64,
    balance: i64,
    month_start: i64,
    spent: i64,
    told: Option<i64>,
    /// The hash of the wallet's last entry.
    head: Option<String>,
}

/// Active holds by account: (amount, expires_at) in ledger units and microseconds.
type ActiveHolds = std::collections::HashMap<String, Vec<(i64, i64)>>;

/// Holds rows (account, amount, expires_at) by account.
fn active_holds(rows: Vec<(String, i64, i64)>) -> ActiveHolds {
    let mut by_account = ActiveHolds::new();
    for (account, amount, expires_at) in rows {
        by_account.entry(account).or_default().push((amount, expires_at));
    }
    by_account
}

/// The claims made before this write on the keys of a batch, by (scope, key): (fingerprint,
/// result).
type Claims = std::collections::HashMap<(String, String), (String, String)>;

/// Claim rows (scope, key, fingerprint, result) by (scope, key).
fn claims_from(rows: Vec<(String, String, String, String)>) -> Claims {
    rows.into_iter()
        .map(|(scope, key, fingerprint, result_ref)| ((scope, key), (fingerprint, result_ref)))
        .collect()
}

/// The idempotency claims of `postings`.
fn wanted_claims(postings: &[Posting]) -> Vec<&IdempotencyClaim> {
    postings
        .iter()
        .filter_map(|p| p.idempotency.as_ref())
        .collect()
}

/// A refund's facts, read after what the write decided so far is written.
fn refund_facts(
    conn: &mut Conn,
    posting: &Posting,
) -> Result<billing_core::posting::RefundFacts, TxError<StoreError>> {
    let ids: Vec<&str> = posting.refund_of.iter().map(EntryId::as_str).collect();
    let targets = entries_by_ids::<StoreError>(conn, &ids)?;
    let earlier: Vec<String> = refund_links::table
        .filter(refund_links::refunded_entry_id.eq_any(&ids))
        .select(refund_links::refund_entry_id)
        .distinct()
        .load(conn)?;
    let earlier_amounts: Vec<i64> = ledger_entries::table
        .filter(ledger_entries::id.eq_any(&earlier))
        .select(ledger_entries::amount)
        .load(conn)?;
    let already_refunded = Credits::sum(earlier_amounts.into_iter().map(Credits::from_units))
        .map_err(|e| TxError::Op(StoreError::Corrupt(e.to_string())))?;
    Ok(billing_core::posting::RefundFacts {
        targets,
        already_refunded,
    })
}

/// Decides and writes `postings` in one transaction, in order; each answer is what that
/// posting alone would have answered. An `Err` (the database failed) means nothing was
/// written.
fn post_batch_in_tx(
    conn: &mut Conn,
    postings: &[Posting],
) -> Result<Vec<Result<Posted, PostError>>, TxError<StoreError>> {
    post_batch_settled(conn, postings, None, std::time::Duration::ZERO).map(|(answers, _)| answers)
}

/// [`post_batch_in_tx`], deciding against `copied` (a writer's copies of the batch's
/// wallets) instead of reading when it is given, and answering what the write settled as
/// well. `already_read` is the time the transaction spent reading before (counted as `read`).
fn post_batch_settled(
    conn: &mut Conn,
    postings: &[Posting],
    copied: Option<BatchState>,
    already_read: std::time::Duration,
) -> Result<Written, TxError<StoreError>> {
    let started = std::time::Instant::now();
    let mut phases = Phases {
        read: already_read,
        ..Phases::default()
    };
    let done = decide_and_write(conn, postings, &mut phases, copied)?;
    let total = started.elapsed() + already_read;
    crate::metered::phase("read", phases.read);
    crate::metered::phase("decide", total.saturating_sub(phases.read + phases.write));
    crate::metered::phase("write", phases.write);
    Ok(done)
}

/// Where a posting transaction's time went before its commit: reading (locks, state,
/// claims, refunds' facts) and writing (the statements); the rest is deciding
/// (billing-core's rules, the hash chain, the rows and their checks). See
/// `metered::LEDGER_PHASE_SECONDS`.
#[derive(Default)]
struct Phases {
    read: std::time::Duration,
    write: std::time::Duration,
}

/// Runs `f`, adding how long it took to `spent`.
fn timed<T>(spent: &mut std::time::Duration, f: impl FnOnce() -> T) -> T {
    let started = std::time::Instant::now();
    let out = f();
    *spent += started.elapsed();
    out
}

/// [`post_batch_settled`]'s work, timed by phase.
fn decide_and_write(
    conn: &mut Conn,
    postings: &[Posting],
    phases: &mut Phases,
    copied: Option<BatchState>,
) -> Result<Written, TxError<StoreError>> {
    let from_copy = copied.is_some();
    let BatchState {
        mut wallets,
        holds,
        claims: claimed,
        holds_since,
    } = match copied {
        Some(state) => state,
        None => {
            let mut ids: Vec<&str> = postings.iter().map(|p| p.account_id.as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            let earliest = postings
                .iter()
                .map(|p| p.now)
                .min()
                .unwrap_or(Timestamp::from_micros(0));
            timed(&mut phases.read, || batch_state(conn, &ids, earliest, postings))?
        }
    };
    let replayed_ids: Vec<&str> = claimed
        .values()
        .flat_map(|(_, result)| result.split(','))
        .collect();
    let replayable: std::collections::HashMap<String, LedgerEntry> = if replayed_ids.is_empty() {
        std::collections::HashMap::new()
    } else {
        timed(&mut phases.read, || {
            entries_by_ids::<StoreError>(conn, &replayed_ids)
        })?
        .into_iter()
            .map(|e| (e.id.as_str().to_owned(), e))
            .collect()
    };
    // Keys claimed by this write: (fingerprint, its entries).
    let mut claimed_here: std::collections::HashMap<(String, String), (String, Vec<LedgerEntry>)> =
        std::collections::HashMap::new();
    let mut pending = Pending::default();
    let mut answers = Vec::with_capacity(postings.len());
    for posting in postings {
        if !wallets.contains_key(posting.account_id.as_str()) {
            answers.push(Err(PostError::AccountNotFound));
            continue;
        }
        if let Some(claim) = &posting.idempotency {
            let key = (claim.scope.clone(), claim.key.clone());
            let prior = match (claimed_here.get(&key), claimed.get(&key)) {
                (Some((fingerprint, entries)), _) => Some((fingerprint, entries.clone())),
                (None, Some((fingerprint, result))) => Some((
                    fingerprint,
                    result
                        .split(',')
                        .filter_map(|id| replayable.get(id).cloned())
                        .collect(),
                )),
                (None, None) => None,
            };
            if let Some((fingerprint, entries)) = prior {
                answers.push(if fingerprint == &claim.fingerprint {
                    Ok(Posted {
                        entries,
                        replayed: true,
                    })
                } else {
                    Err(PostError::IdempotencyConflict)
                });
                continue;
            }
        }
        let refund = if posting.refund_of.is_empty() {
            None
        } else {
            flush(conn, &mut pending, &mut wallets, &mut phases.write)?;
            Some(timed(&mut phases.read, || refund_facts(conn, posting))?)
        };
        let Some(slot) = wallets.get_mut(posting.account_id.as_str()) else {
            answers.push(Err(PostError::AccountNotFound));
            continue;
        };
        let held = Credits::sum(
            holds
                .get(posting.account_id.as_str())
                .into_iter()
                .flatten()
                .filter(|(_, expires_at)| *expires_at > posting.now.as_micros())
                .map(|(amount, _)| Credits::from_units(*amount)),
        )
        .map_err(|e| TxError::Op(StoreError::Corrupt(e.to_string())))?;
        let mut next = slot.state.clone();
        let decided =
            match billing_core::posting::decide_posting(&mut next, posting, held, refund.as_ref()) {
                Ok(decided) => decided,
                Err(refused) => {
                    unclaimed_on_copy(from_copy, posting)?;
                    answers.push(Err(refused));
                    continue;
                }
            };
        if let Err(e) = pending.add(
            &decided,
            posting.idempotency.as_ref(),
            &posting.refund_of,
            posting.now,
        ) {
            unclaimed_on_copy(from_copy, posting)?;
            answers.push(Err(PostError::Store(e)));
            continue;
        }
        slot.state = next;
        if let Some(claim) = &posting.idempotency {
            claimed_here.insert(
                (claim.scope.clone(), claim.key.clone()),
                (claim.fingerprint.clone(), decided.entries.clone()),
            );
        }
        answers.push(Ok(Posted {
            entries: decided.entries,
            replayed: false,
        }));
    }
    flush(conn, &mut pending, &mut wallets, &mut phases.write)?;
    Ok((
        answers,
        Settled {
            wallets,
            holds,
            holds_since,
        },
    ))
}

/// A batch decided from a writer's copy has read no claims: a key claimed before is found
/// only by the claims' primary key when the posting claims it again. A keyed posting that
/// writes no claim (refused) may be the retry of one that succeeded, so the batch is not
/// answered from the copy: this fails it, and the writer decides it again from a read.
fn unclaimed_on_copy(from_copy: bool, posting: &Posting) -> Result<(), TxError<StoreError>> {
    if from_copy && posting.idempotency.is_some() {
        return Err(TxError::Op(StoreError::Unavailable(
            "a keyed posting refused against a writer's copy: its claim is read".into(),
        )));
    }
    Ok(())
}

/// Runs `f` as one write transaction and, once it has committed, counts the postings it
/// wrote: on the thread that committed, so a caller that stopped waiting loses no count.
fn commit_postings(
    conn: &mut Conn,
    f: impl FnOnce(&mut Conn) -> Result<Vec<Result<Posted, PostError>>, TxError<StoreError>>,
) -> Result<Vec<Result<Posted, PostError>>, StoreError> {
    let mut decided = None;
    let answers = finish(write_tx(conn, |conn| {
        let answers = f(conn);
        decided = Some(std::time::Instant::now());
        answers
    }))?;
    if let Some(decided) = decided {
        crate::metered::phase("commit", decided.elapsed());
    }
    answers.iter().for_each(crate::metered::posted);
    Ok(answers)
}

pub(crate) fn post(conn: &mut Conn, posting: &Posting) -> Result<Posted, PostError> {
    let mut answers = commit_postings(conn, |conn| {
        post_batch_in_tx(conn, std::slice::from_ref(posting))
    })?;
    answers
        .pop()
        .unwrap_or_else(|| Err(PostError::Store(StoreError::Corrupt("no answer".into()))))
}

/// Posts `postings` in one transaction (group commit); `Err` when the transaction failed
/// (and, unless it failed on `COMMIT`, nothing was written).
pub(crate) fn post_batch(
    conn: &mut Conn,
    postings: &[Posting],
) -> Result<Vec<Result<Posted, PostError>>, StoreError> {
    commit_postings(conn, |conn| post_batch_in_tx(conn, postings))
}

/// Posts one posting of a batch that failed: if the batch committed after all (its
/// `COMMIT` failed on our side only), the posting's entries exist and are its answer;
/// otherwise it is posted alone.
pub(crate) fn post_again(
    conn: &mut Conn,
    posting: &Posting,
) -> Result<Vec<Result<Posted, PostError>>, StoreError> {
    // The failed batch counted nothing: whether this finds its entries or posts them, they
    // are counted once, here.
    commit_postings(conn, |conn| {
        // Lock first: a batch whose COMMIT only failed on our side may still be committing
        // under the lock; its entries are visible once we hold the lock, not before.
        lock_wallets(conn, &[posting.account_id.as_str()]).map_err(TxError::Db)?;
        let ids: Vec<&str> = posting.entries.iter().map(|e| e.id.as_str()).collect();
        let existing = if ids.is_empty() {
            Vec::new()
        } else {
            entries_by_ids::<StoreError>(conn, &ids)?
        };
        if existing.is_empty() {
            return post_batch_in_tx(conn, std::slice::from_ref(posting));
        }
        if existing.len() == ids.len()
            && existing.iter().all(|e| e.account_id == posting.account_id)
        {
            return Ok(vec![Ok(Posted {
                entries: existing,
                replayed: false,
            })]);
        }
        Err(TxError::Op(StoreError::Corrupt(format!(
            "a retried posting's entries are partly written: {ids:?}"
        ))))
    })
}

/// Writes a capture's entries on a locked wallet that held `balance` (its spend already
/// applied by the caller) with what the debit tells and the auto top-up it starts: the same
/// rules and writes as a posting's.
fn write_capture<E: From<StoreError>>(
    conn: &mut Conn,
    account_id: &AccountId,
    spend: Option<MonthSpend>,
    entries: &[LedgerEntry],
    now: Timestamp,
) -> Result<(), TxError<E>> {
    let lift = |e: TxError<StoreError>| match e {
        TxError::Db(db) => TxError::Db(db),
        TxError::Op(op) => TxError::Op(E::from(op)),
    };
    let mut wallets = load_wallets(conn, &[account_id.as_str()]).map_err(lift)?;
    let Some(slot) = wallets.get_mut(account_id.as_str()) else {
        return Err(TxError::Op(E::from(StoreError::Corrupt(format!(
            "wallet {account_id} vanished under its lock"
        )))));
    };
    if let Some(spend) = spend {
        slot.state.spend = spend;
    }
    let balance_before = slot.state.balance;
    let (notices, auto_topup) =
        billing_core::posting::after_debit(&mut slot.state, balance_before, entries, now);
    let mut pending = Pending::default();
    pending
        .add(
            &billing_core::posting::Decided {
                entries: entries.to_vec(),
                notices,
                auto_topup,
            },
            None,
            &[],
            now,
        )
        .map_err(|e| TxError::Op(E::from(e)))?;
    // Captures are not timed by phase (`metered::LEDGER_PHASE_SECONDS`).
    let mut untimed = std::time::Duration::ZERO;
    flush(conn, &mut pending, &mut wallets, &mut untimed).map_err(lift)
}
