// The storage operations, written once and compiled for each backend: this file is
// `include!`d by `sqlite.rs` and `postgres.rs`, which provide `Conn`, `write_tx` (a write
// transaction: `BEGIN IMMEDIATE` on SQLite, `BEGIN` on PostgreSQL), `lock_account` and
// `lock_topup` (`SELECT … FOR UPDATE` on PostgreSQL; the immediate transaction already holds
// SQLite's write lock). Every rule applied here is a pure function of billing-core.

use billing_core::autotopup::{
    AutoTopUpSettings, AutoTopUpState, SavedMethod, after_auto_topup,
};
use billing_core::controls::{
    MonthSpend, SpendingLimit, apply_spending, check_spending,
};
use billing_core::notices::{
    Cause, Channel, LowBalanceAlert, Notice, NoticeSettings, Topic,
};
use billing_core::holds::{Hold, HoldAction, HoldStatus, check_new_hold, decide_hold};
use billing_core::ids::{AccountId, ApiKeyId, EntryId, HoldId, TopUpId};
use billing_core::ledger::{
    LedgerEntry, NewEntry, plan_posting,
};
use billing_core::money::Credits;
use billing_core::ports::{
    Account, ApiKeyRecord, EntryQuery, HoldError, HoldOutcome, IdempotencyClaim, InsertTopUpError,
    Inserted, KeyPage, KeyQuery, OutboxItem, OutboxOutcome, PostError,
    Posted, Posting, SessionRecord, StoreError, TopUpPage, TransitionOutcome, Wallet,
};
use billing_core::pricing::Rate;
use crate::KeyRead;
use billing_core::time::Timestamp;
use billing_core::money::Currency;
use billing_core::topup::{Pack, TopUp, TopUpOrigin, TopUpStatus, Transition, decide_transition};
use diesel::prelude::*;

use crate::rows::{
    AccountRow, ApiKeyRow, AutoTopUpRow, EntryRow, HoldRow, NewClaimRow, NewEntryRow, NewOutboxRow, OutboxRow,
    AuditEntryRow, PackRow, PaymentMethodRow, RateRow, SessionRow, TopUpRow, chain_rows,
};
use crate::schema::{
    accounts, api_keys, auto_topups, dashboard_sessions, holds, idempotency_keys, ledger_entries, outbox, packs,
    payment_methods, rates, refund_links, topups, webhook_events,
};
use crate::rows::units;
use crate::{TxError, db_err, finish};

pub(crate) fn insert_account(conn: &mut Conn, account: &Account) -> Result<(), StoreError> {
    let row = AccountRow {
        id: account.id.as_str().to_owned(),
        name: account.name.clone(),
        email: account.email.clone(),
        balance: 0,
        created_at: account.created_at.as_micros(),
    };
    diesel::insert_into(accounts::table)
        .values(&row)
        .execute(conn)
        .map_err(db_err)?;
    Ok(())
}

pub(crate) fn account(conn: &mut Conn, id: &AccountId) -> Result<Option<Account>, StoreError> {
    let row = accounts::table
        .find(id.as_str())
        .select(AccountRow::as_select())
        .at_most_one(conn)
        .map_err(db_err)?;
    Ok(row.map(Account::from))
}

pub(crate) fn wallet(conn: &mut Conn, id: &AccountId) -> Result<Option<Wallet>, StoreError> {
    let balance: Option<i64> = accounts::table
        .find(id.as_str())
        .select(accounts::balance)
        .at_most_one(conn)
        .map_err(db_err)?;
    Ok(balance.map(|b| Wallet {
        account_id: id.clone(),
        balance: Credits::from_units(b),
    }))
}

pub(crate) fn account_ids(
    conn: &mut Conn,
    after: Option<&AccountId>,
    limit: u32,
) -> Result<Vec<AccountId>, StoreError> {
    let mut query = accounts::table.select(accounts::id).into_boxed();
    if let Some(after) = after {
        query = query.filter(accounts::id.gt(after.as_str().to_owned()));
    }
    let ids: Vec<String> = query
        .order(accounts::id.asc())
        .limit(i64::from(limit))
        .load(conn)
        .map_err(db_err)?;
    Ok(ids.into_iter().map(AccountId::new).collect())
}

struct ClaimRow {
    fingerprint: String,
    result_ref: String,
}

fn find_claim(
    conn: &mut Conn,
    claim: &IdempotencyClaim,
) -> Result<Option<ClaimRow>, diesel::result::Error> {
    let row: Option<(String, String)> = idempotency_keys::table
        .find((claim.scope.as_str(), claim.key.as_str()))
        .select((idempotency_keys::fingerprint, idempotency_keys::result_ref))
        .at_most_one(conn)?;
    Ok(row.map(|(fingerprint, result_ref)| ClaimRow {
        fingerprint,
        result_ref,
    }))
}

fn insert_claim(
    conn: &mut Conn,
    claim: &IdempotencyClaim,
    result_ref: &str,
    now: Timestamp,
) -> Result<(), diesel::result::Error> {
    diesel::insert_into(idempotency_keys::table)
        .values((
            idempotency_keys::scope.eq(&claim.scope),
            idempotency_keys::key.eq(&claim.key),
            idempotency_keys::fingerprint.eq(&claim.fingerprint),
            idempotency_keys::result_ref.eq(result_ref),
            idempotency_keys::created_at.eq(now.as_micros()),
        ))
        .execute(conn)?;
    Ok(())
}

/// Entries with these ids, oldest first.
fn entries_by_ids<E>(conn: &mut Conn, ids: &[&str]) -> Result<Vec<LedgerEntry>, TxError<E>>
where
    E: From<StoreError>,
{
    let rows: Vec<EntryRow> = ledger_entries::table
        .filter(ledger_entries::id.eq_any(ids))
        .order(ledger_entries::seq.asc())
        .select(EntryRow::as_select())
        .load(conn)?;
    rows.into_iter()
        .map(|r| LedgerEntry::try_from(r).map_err(|e| TxError::Op(E::from(e))))
        .collect()
}

/// Appends already-planned entries and moves the wallet's balance to the last one's
/// `balance_after`, checking that it is the previous balance plus their sum.
fn append_entries<E>(
    conn: &mut Conn,
    account_id: &AccountId,
    previous_balance: i64,
    planned: &[LedgerEntry],
) -> Result<(), TxError<E>>
where
    E: From<StoreError>,
{
    let mut rows = planned
        .iter()
        .map(NewEntryRow::try_from)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TxError::Op(E::from(e)))?;
    if rows.is_empty() {
        return Ok(());
    }
    // The caller holds the wallet's lock: its head is the chain's end.
    let head: Option<String> = accounts::table
        .find(account_id.as_str())
        .select(accounts::ledger_head)
        .exactly_one(conn)?;
    let mut heads = std::collections::HashMap::from([(account_id.as_str().to_owned(), head)]);
    chain_rows(&mut heads, &mut rows);
    let new_head = heads.remove(account_id.as_str()).flatten();
    let Some(last) = rows.last() else {
        return Ok(());
    };
    let sum: i128 = rows.iter().map(|r| i128::from(r.amount)).sum();
    // plan_posting computed the running balance from `previous_balance`: check it again where
    // it is written.
    if i128::from(previous_balance) + sum != i128::from(last.balance_after) || last.balance_after < 0
    {
        return Err(TxError::Op(E::from(StoreError::Corrupt(format!(
            "planned balance {} is not {previous_balance} + {sum}",
            last.balance_after
        )))));
    }
    let new_balance = last.balance_after;
    diesel::insert_into(ledger_entries::table)
        .values(&rows)
        .execute(conn)?;
    let updated = diesel::update(accounts::table.find(account_id.as_str()))
        .filter(accounts::balance.eq(previous_balance))
        .set((
            accounts::balance.eq(new_balance),
            accounts::ledger_head.eq(new_head),
        ))
        .execute(conn)?;
    if updated != 1 {
        return Err(TxError::Op(E::from(StoreError::Corrupt(format!(
            "wallet {account_id} changed under its lock"
        )))));
    }
    Ok(())
}

/// The sum of the account's holds active at `now`.
fn reserved_in_tx<E: From<StoreError>>(
    conn: &mut Conn,
    account_id: &AccountId,
    now: Timestamp,
) -> Result<Credits, TxError<E>> {
    let amounts: Vec<i64> = holds::table
        .filter(holds::account_id.eq(account_id.as_str()))
        .filter(holds::status.eq(HoldStatus::Active.as_str()))
        .filter(holds::expires_at.gt(now.as_micros()))
        .select(holds::amount)
        .load(conn)?;
    Credits::sum(amounts.into_iter().map(Credits::from_units))
        .map_err(|e| TxError::Op(E::from(StoreError::Corrupt(e.to_string()))))
}

fn load_hold<E: From<StoreError>>(
    conn: &mut Conn,
    id: &str,
) -> Result<Option<Hold>, TxError<E>> {
    let row: Option<HoldRow> = holds::table
        .find(id)
        .select(HoldRow::as_select())
        .at_most_one(conn)?;
    row.map(Hold::try_from)
        .transpose()
        .map_err(|e| TxError::Op(E::from(e)))
}

/// The outcome of a hold operation as stored: the hold, and the entry its capture wrote.
fn hold_outcome(
    conn: &mut Conn,
    id: &str,
    replayed: bool,
) -> Result<HoldOutcome, TxError<HoldError>> {
    let hold = load_hold::<HoldError>(conn, id)?.ok_or_else(|| {
        TxError::Op(HoldError::Store(StoreError::Corrupt(format!(
            "claimed hold {id} is missing"
        ))))
    })?;
    let entry = match &hold.entry_id {
        Some(entry) => entries_by_ids::<HoldError>(conn, &[entry.as_str()])?
            .into_iter()
            .next(),
        None => None,
    };
    Ok(HoldOutcome {
        hold,
        entry,
        replayed,
    })
}

/// A claimed key: the first result (a hold id), or a conflict.
fn hold_replay(
    conn: &mut Conn,
    claim: Option<&IdempotencyClaim>,
) -> Result<Option<HoldOutcome>, TxError<HoldError>> {
    let Some(claim) = claim else { return Ok(None) };
    match find_claim(conn, claim)? {
        None => Ok(None),
        Some(prior) if prior.fingerprint != claim.fingerprint => {
            Err(TxError::Op(HoldError::IdempotencyConflict))
        }
        Some(prior) => hold_outcome(conn, &prior.result_ref, true).map(Some),
    }
}

fn place_hold_in_tx(
    conn: &mut Conn,
    hold: &Hold,
    claim: Option<&IdempotencyClaim>,
    now: Timestamp,
) -> Result<HoldOutcome, TxError<HoldError>> {
    let Some(balance) = lock_account(conn, &hold.account_id)? else {
        return Err(TxError::Op(HoldError::AccountNotFound));
    };
    if let Some(replayed) = hold_replay(conn, claim)? {
        return Ok(replayed);
    }
    let reserved = reserved_in_tx::<HoldError>(conn, &hold.account_id, now)?;
    check_new_hold(Credits::from_units(balance), reserved, hold.amount)
        .map_err(|e| TxError::Op(HoldError::Rule(e.into())))?;
    if let Some((limit, spend)) = load_spending::<HoldError>(conn, &hold.account_id)? {
        check_spending(&limit, spend.at(now), reserved, hold.amount)
            .map_err(|e| TxError::Op(HoldError::Rule(e.into())))?;
    }
    let row = HoldRow::try_from(hold).map_err(|e| TxError::Op(HoldError::Store(e)))?;
    diesel::insert_into(holds::table).values(&row).execute(conn)?;
    if let Some(claim) = claim {
        insert_claim(conn, claim, hold.id.as_str(), now)?;
    }
    hold_outcome(conn, hold.id.as_str(), false)
}

pub(crate) fn place_hold(
    conn: &mut Conn,
    hold: &Hold,
    claim: Option<&IdempotencyClaim>,
    now: Timestamp,
) -> Result<HoldOutcome, HoldError> {
    finish(write_tx(conn, |conn| place_hold_in_tx(conn, hold, claim, now)))
}

fn change_hold_in_tx(
    conn: &mut Conn,
    account_id: &AccountId,
    id: &HoldId,
    action: &HoldAction,
    claim: Option<&IdempotencyClaim>,
    now: Timestamp,
) -> Result<HoldOutcome, TxError<HoldError>> {
    let Some(balance) = lock_account(conn, account_id)? else {
        return Err(TxError::Op(HoldError::AccountNotFound));
    };
    if let Some(replayed) = hold_replay(conn, claim)? {
        return Ok(replayed);
    }
    let hold = load_hold::<HoldError>(conn, id.as_str())?
        .filter(|h| &h.account_id == account_id)
        .ok_or(TxError::Op(HoldError::HoldNotFound))?;
    let reserved = reserved_in_tx::<HoldError>(conn, account_id, now)?;
    let change = decide_hold(&hold, action, Credits::from_units(balance), reserved, now)
        .map_err(|e| TxError::Op(HoldError::Rule(e)))?;
    let mut spend_after = None;
    if let Some((settings, spend)) = load_controls::<HoldError>(conn, account_id)? {
        let limit = &settings.limit;
        // A larger hold commits more of the month's limit; a capture spends what its hold
        // committed (not checked again).
        if change.hold.amount > hold.amount {
            let increase = change
                .hold
                .amount
                .checked_sub(hold.amount)
                .map_err(|e| TxError::Op(HoldError::Store(StoreError::Corrupt(e.to_string()))))?;
            check_spending(limit, spend.at(now), reserved, increase)
                .map_err(|e| TxError::Op(HoldError::Rule(e.into())))?;
        }
        let next = apply_spending(
            limit,
            spend,
            reserved,
            change.entries.iter().map(|e| (e.kind, e.amount)),
            Credits::ZERO,
            now,
            false,
        )
        .map_err(|e| TxError::Op(HoldError::Rule(e.into())))?;
        spend_after = Some(next);
    }
    write_capture::<HoldError>(conn, account_id, spend_after, &change.entries, now)?;
    let row = HoldRow::try_from(&change.hold).map_err(|e| TxError::Op(HoldError::Store(e)))?;
    diesel::update(holds::table.find(id.as_str()))
        .set(&row)
        .execute(conn)?;
    if let Some(claim) = claim {
        insert_claim(conn, claim, id.as_str(), now)?;
    }
    hold_outcome(conn, id.as_str(), false)
}

pub(crate) fn change_hold(
    conn: &mut Conn,
    account_id: &AccountId,
    id: &HoldId,
    action: &HoldAction,
    claim: Option<&IdempotencyClaim>,
    now: Timestamp,
) -> Result<HoldOutcome, HoldError> {
    finish(write_tx(conn, |conn| {
        change_hold_in_tx(conn, account_id, id, action, claim, now)
    }))
}

pub(crate) fn hold(conn: &mut Conn, id: &HoldId) -> Result<Option<Hold>, StoreError> {
    finish(load_hold::<StoreError>(conn, id.as_str()))
}

pub(crate) fn reserved(
    conn: &mut Conn,
    account_id: &AccountId,
    now: Timestamp,
) -> Result<Credits, StoreError> {
    finish(reserved_in_tx::<StoreError>(conn, account_id, now))
}

pub(crate) fn expire_holds(conn: &mut Conn, now: Timestamp, limit: u32) -> Result<u32, StoreError> {
    let due: Vec<(String, String)> = holds::table
        .filter(holds::status.eq(HoldStatus::Active.as_str()))
        .filter(holds::expires_at.le(now.as_micros()))
        .order(holds::expires_at.asc())
        .limit(i64::from(limit))
        .select((holds::id, holds::account_id))
        .load(conn)
        .map_err(db_err)?;
    if due.is_empty() {
        return Ok(0);
    }
    let ids: Vec<&str> = due.iter().map(|(id, _)| id.as_str()).collect();
    let mut wallets: Vec<&str> = due.iter().map(|(_, account)| account.as_str()).collect();
    wallets.sort_unstable();
    wallets.dedup();
    finish(write_tx(conn, |conn| {
        // Their wallets first, in id order, as a posting or a capture locks them before a
        // hold: the expiry moves each wallet's version (PostgreSQL, migration 000017).
        lock_wallets(conn, &wallets)?;
        // The expiry is checked again where it is written: an extend that committed after
        // the ids were read must keep its hold.
        let updated = diesel::update(
            holds::table
                .filter(holds::id.eq_any(&ids))
                .filter(holds::status.eq(HoldStatus::Active.as_str()))
                .filter(holds::expires_at.le(now.as_micros())),
        )
        .set((
            holds::status.eq(HoldStatus::Expired.as_str()),
            holds::updated_at.eq(now.as_micros()),
        ))
        .execute(conn)?;
        Ok::<_, TxError<StoreError>>(u32::try_from(updated).unwrap_or(u32::MAX))
    }))
}

/// The account's notification settings (alert, spending limit, the month the limit was
/// last told) and recorded month spend (the wallet is locked or only read).
fn load_controls<E: From<StoreError>>(
    conn: &mut Conn,
    account_id: &AccountId,
) -> Result<Option<(NoticeSettings, MonthSpend)>, TxError<E>> {
    let row: Option<WalletTuple> = accounts::table
        .find(account_id.as_str())
        .select(WALLET_COLUMNS)
        .at_most_one(conn)?;
    row.map(|row| {
        wallet_state(row)
            .map(|w| (w.settings, w.spend))
            .map_err(|e| TxError::Op(E::from(e)))
    })
    .transpose()
}

/// The account's spending limit and recorded month spend.
fn load_spending<E: From<StoreError>>(
    conn: &mut Conn,
    account_id: &AccountId,
) -> Result<Option<(SpendingLimit, MonthSpend)>, TxError<E>> {
    Ok(load_controls::<E>(conn, account_id)?.map(|(settings, spend)| (settings.limit, spend)))
}

/// Writes one outbox item per channel of each notice.
fn enqueue_notices<E: From<StoreError>>(
    conn: &mut Conn,
    notices: &[Notice],
) -> Result<(), TxError<E>> {
    let rows = notices
        .iter()
        .flat_map(|n| Channel::for_topic(n.topic).iter().map(move |c| NewOutboxRow::new(n, *c)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TxError::Op(E::from(e)))?;
    if !rows.is_empty() {
        diesel::insert_into(outbox::table).values(&rows).execute(conn)?;
    }
    Ok(())
}

pub(crate) fn spending(
    conn: &mut Conn,
    account_id: &AccountId,
) -> Result<Option<(SpendingLimit, MonthSpend)>, StoreError> {
    finish(load_spending::<StoreError>(conn, account_id))
}

pub(crate) fn set_spending_limit(
    conn: &mut Conn,
    account_id: &AccountId,
    limit: &SpendingLimit,
) -> Result<bool, StoreError> {
    let monthly = limit.monthly_limit.map(units).transpose()?;
    let Some((current, _)) = finish(load_spending::<StoreError>(conn, account_id))? else {
        return Ok(false);
    };
    // A changed limit may be told again this month; the same one saved again is not.
    let told_reset = if &current == limit {
        None
    } else {
        Some(accounts::limit_told_month.eq(None::<i64>))
    };
    let updated = diesel::update(accounts::table.find(account_id.as_str()))
        .set((
            accounts::limit_enabled.eq(limit.enabled),
            accounts::limit_monthly.eq(monthly),
            accounts::limit_action.eq(limit.action.as_str()),
        ))
        .execute(conn)
        .map_err(db_err)?;
    if let Some(reset) = told_reset {
        diesel::update(accounts::table.find(account_id.as_str()))
            .set(reset)
            .execute(conn)
            .map_err(db_err)?;
    }
    Ok(updated == 1)
}

/// The ledger position of the account's entry `id` (a cursor); `None` when the account has
/// no such entry.
fn entry_seq(
    conn: &mut Conn,
    account_id: &AccountId,
    id: &EntryId,
) -> Result<Option<i64>, StoreError> {
    ledger_entries::table
        .filter(ledger_entries::id.eq(id.as_str()))
        .filter(ledger_entries::account_id.eq(account_id.as_str()))
        .select(ledger_entries::seq)
        .at_most_one(conn)
        .map_err(db_err)
}

pub(crate) fn entries(
    conn: &mut Conn,
    account_id: &AccountId,
    query: &EntryQuery,
) -> Result<Vec<LedgerEntry>, StoreError> {
    let mut select = ledger_entries::table
        .filter(ledger_entries::account_id.eq(account_id.as_str().to_owned()))
        .into_boxed();
    if let Some(kind) = query.kind {
        select = select.filter(ledger_entries::kind.eq(kind.as_str()));
        if kind != billing_core::ledger::EntryKind::Usage {
            // The condition of the partial index `ledger_entries_account_kind_other`, as a
            // literal: a plan made without the bound value (SQLite's, a generic one) can use
            // that index only if the query states it. Usage debits, nearly all entries, are
            // listed through `(account_id, seq)`.
            select = select.filter(diesel::dsl::sql::<diesel::sql_types::Bool>(
                "ledger_entries.kind <> 'usage'",
            ));
        }
    }
    if let Some(from) = query.from {
        select = select.filter(ledger_entries::created_at.ge(from.as_micros()));
    }
    if let Some(to) = query.to {
        select = select.filter(ledger_entries::created_at.lt(to.as_micros()));
    }
    if let Some(before) = &query.before {
        match entry_seq(conn, account_id, before)? {
            Some(seq) => select = select.filter(ledger_entries::seq.lt(seq)),
            None => return Ok(Vec::new()),
        }
    }
    if let Some(after) = &query.after {
        match entry_seq(conn, account_id, after)? {
            Some(seq) => select = select.filter(ledger_entries::seq.gt(seq)),
            None => return Ok(Vec::new()),
        }
    }
    let rows: Vec<EntryRow> = select
        .order(ledger_entries::seq.desc())
        .limit(i64::from(query.limit))
        .select(EntryRow::as_select())
        .load(conn)
        .map_err(db_err)?;
    rows.into_iter().map(LedgerEntry::try_from).collect()
}

pub(crate) fn entry(
    conn: &mut Conn,
    account_id: &AccountId,
    id: &EntryId,
) -> Result<Option<LedgerEntry>, StoreError> {
    let row: Option<EntryRow> = ledger_entries::table
        .filter(ledger_entries::id.eq(id.as_str()))
        .filter(ledger_entries::account_id.eq(account_id.as_str()))
        .select(EntryRow::as_select())
        .at_most_one(conn)
        .map_err(db_err)?;
    row.map(LedgerEntry::try_from).transpose()
}

pub(crate) fn history(
    conn: &mut Conn,
    account_id: &AccountId,
) -> Result<Vec<LedgerEntry>, StoreError> {
    let rows: Vec<EntryRow> = ledger_entries::table
        .filter(ledger_entries::account_id.eq(account_id.as_str()))
        .order(ledger_entries::seq.asc())
        .select(EntryRow::as_select())
        .load(conn)
        .map_err(db_err)?;
    rows.into_iter().map(LedgerEntry::try_from).collect()
}

fn load_topup(conn: &mut Conn, id: &str) -> Result<Option<TopUp>, StoreError> {
    let row = topups::table
        .filter(topups::id.eq(id))
        .select(TopUpRow::as_select())
        .at_most_one(conn)
        .map_err(db_err)?;
    row.map(TopUp::try_from).transpose()
}

fn insert_topup_in_tx(
    conn: &mut Conn,
    topup: &TopUp,
    claim: Option<&IdempotencyClaim>,
) -> Result<Inserted<TopUp>, TxError<InsertTopUpError>> {
    if let Some(claim) = claim {
        // The account lock serializes requests that share a key.
        if lock_account(conn, &topup.account_id)?.is_none() {
            return Err(TxError::Op(InsertTopUpError::Store(StoreError::Corrupt(
                format!("account {} not found", topup.account_id),
            ))));
        }
        if let Some(prior) = find_claim(conn, claim)? {
            if prior.fingerprint != claim.fingerprint {
                return Err(TxError::Op(InsertTopUpError::IdempotencyConflict));
            }
            return match load_topup(conn, &prior.result_ref) {
                Ok(Some(first)) => Ok(Inserted::Replayed(first)),
                Ok(None) => Err(TxError::Op(InsertTopUpError::Store(StoreError::Corrupt(
                    format!("idempotency key points at missing top-up {}", prior.result_ref),
                )))),
                Err(e) => Err(TxError::Op(e.into())),
            };
        }
    }
    let row = TopUpRow::try_from(topup).map_err(|e| TxError::Op(e.into()))?;
    diesel::insert_into(topups::table).values(&row).execute(conn)?;
    if let Some(claim) = claim {
        insert_claim(conn, claim, topup.id.as_str(), topup.created_at)?;
    }
    Ok(Inserted::New(topup.clone()))
}

pub(crate) fn insert_topup(
    conn: &mut Conn,
    topup: &TopUp,
    claim: Option<&IdempotencyClaim>,
) -> Result<Inserted<TopUp>, InsertTopUpError> {
    finish(write_tx(conn, |conn| insert_topup_in_tx(conn, topup, claim)))
}

pub(crate) fn set_checkout(
    conn: &mut Conn,
    id: &TopUpId,
    payment_ref: &str,
    checkout_url: &str,
    now: Timestamp,
) -> Result<Option<String>, StoreError> {
    // Set once: a reference already recorded (by a racing notification) stays. Answers the
    // top-up's gateway when this call set it (the payment started then).
    diesel::update(
        topups::table
            .filter(topups::id.eq(id.as_str()))
            .filter(topups::payment_ref.is_null()),
    )
        .set((
            topups::payment_ref.eq(payment_ref),
            topups::checkout_url.eq(checkout_url),
            topups::updated_at.eq(now.as_micros()),
        ))
        .returning(topups::gateway)
        .get_result(conn)
        .optional()
        .map_err(db_err)
}

pub(crate) fn topup(conn: &mut Conn, id: &TopUpId) -> Result<Option<TopUp>, StoreError> {
    load_topup(conn, id.as_str())
}

pub(crate) fn topup_by_payment_ref(
    conn: &mut Conn,
    gateway: &str,
    payment_ref: &str,
) -> Result<Option<TopUp>, StoreError> {
    let row = topups::table
        .filter(topups::gateway.eq(gateway))
        .filter(topups::payment_ref.eq(payment_ref))
        .select(TopUpRow::as_select())
        .at_most_one(conn)
        .map_err(db_err)?;
    row.map(TopUp::try_from).transpose()
}

fn transition_in_tx(
    conn: &mut Conn,
    id: &TopUpId,
    target: TopUpStatus,
    entries: &[NewEntry],
    failure_reason: Option<&str>,
    now: Timestamp,
) -> Result<Option<TransitionOutcome>, TxError<StoreError>> {
    let Some(row) = lock_topup(conn, id)? else {
        return Ok(None);
    };
    let mut topup = TopUp::try_from(row).map_err(TxError::Op)?;
    match decide_transition(topup.status, target) {
        Transition::AlreadyDone => return Ok(Some(TransitionOutcome::AlreadyDone(topup))),
        Transition::Refused => return Ok(Some(TransitionOutcome::Refused(topup))),
        Transition::Apply => {}
    }
    let mut credited = Vec::new();
    if target == TopUpStatus::Completed {
        let Some(balance) = lock_account(conn, &topup.account_id)? else {
            return Err(TxError::Op(StoreError::Corrupt(format!(
                "top-up {id} has no wallet"
            ))));
        };
        credited = plan_posting(
            &topup.account_id,
            Credits::from_units(balance),
            Credits::ZERO,
            entries,
            now,
        )
        .map_err(|e| TxError::Op(StoreError::Corrupt(format!("top-up {id}: {e}"))))?;
        append_entries::<StoreError>(conn, &topup.account_id, balance, &credited)?;
    }
    let reason = match target {
        TopUpStatus::Failed => failure_reason.map(str::to_owned),
        _ => None,
    };
    diesel::update(topups::table.filter(topups::id.eq(id.as_str())))
        .set((
            topups::status.eq(target.as_str()),
            topups::failure_reason.eq(&reason),
            topups::updated_at.eq(now.as_micros()),
        ))
        .execute(conn)?;
    topup.status = target;
    topup.failure_reason = reason;
    topup.updated_at = now;
    if let Some(notice) = topup_notice(conn, &topup, &credited, now)? {
        enqueue_notices::<StoreError>(conn, &[notice])?;
    }
    if topup.origin() == TopUpOrigin::AutoTopUp {
        auto_topup_after_transition(conn, &topup, now)?;
    }
    Ok(Some(TransitionOutcome::Applied {
        topup,
        entries: credited,
    }))
}

/// `topup.completed` (the credits it added, the balance after) or `topup.failed`.
fn topup_notice(
    conn: &mut Conn,
    topup: &TopUp,
    credited: &[LedgerEntry],
    now: Timestamp,
) -> Result<Option<Notice>, TxError<StoreError>> {
    let cause = Cause::TopUp(topup.id.as_str().to_owned());
    Ok(match topup.status {
        TopUpStatus::Completed => {
            let balance = credited
                .last()
                .map(|e| e.balance_after)
                .ok_or_else(|| TxError::Op(StoreError::Corrupt(format!("top-up {} credited nothing", topup.id))))?;
            let added = Credits::sum(credited.iter().map(|e| e.amount))
                .map_err(|e| TxError::Op(StoreError::Corrupt(e.to_string())))?;
            Some(Notice {
                amount: Some(added),
                ..Notice::new(Topic::TopUpCompleted, &topup.account_id, balance, cause, now)
            })
        }
        TopUpStatus::Failed => {
            let balance: i64 = accounts::table
                .find(topup.account_id.as_str())
                .select(accounts::balance)
                .exactly_one(conn)?;
            Some(Notice {
                reason: topup.failure_reason.clone(),
                ..Notice::new(Topic::TopUpFailed, &topup.account_id, Credits::from_units(balance), cause, now)
            })
        }
        TopUpStatus::Pending => None,
    })
}

pub(crate) fn transition_topup(
    conn: &mut Conn,
    id: &TopUpId,
    target: TopUpStatus,
    entries: &[NewEntry],
    failure_reason: Option<&str>,
    now: Timestamp,
) -> Result<Option<TransitionOutcome>, StoreError> {
    finish(write_tx(conn, |conn| {
        transition_in_tx(conn, id, target, entries, failure_reason, now)
    }))
}

pub(crate) fn topup_page(
    conn: &mut Conn,
    account_id: &AccountId,
    status: Option<TopUpStatus>,
    page: u32,
    per_page: u32,
) -> Result<TopUpPage, StoreError> {
    let mine = || {
        let mut query = topups::table
            .filter(topups::account_id.eq(account_id.as_str().to_owned()))
            .into_boxed();
        if let Some(status) = status {
            query = query.filter(topups::status.eq(status.as_str()));
        }
        query
    };
    let total: i64 = mine().count().get_result(conn).map_err(db_err)?;
    let offset = i64::from(page.saturating_sub(1)) * i64::from(per_page);
    let rows: Vec<TopUpRow> = mine()
        .order(topups::seq.desc())
        .limit(i64::from(per_page))
        .offset(offset)
        .select(TopUpRow::as_select())
        .load(conn)
        .map_err(db_err)?;
    Ok(TopUpPage {
        topups: rows
            .into_iter()
            .map(TopUp::try_from)
            .collect::<Result<_, _>>()?,
        total: u64::try_from(total).unwrap_or(0),
    })
}

pub(crate) fn pending_topups(
    conn: &mut Conn,
    created_before: Timestamp,
    limit: u32,
) -> Result<Vec<TopUp>, StoreError> {
    let rows: Vec<TopUpRow> = topups::table
        .filter(topups::status.eq(TopUpStatus::Pending.as_str()))
        .filter(topups::created_at.lt(created_before.as_micros()))
        .order((topups::updated_at.asc(), topups::seq.asc()))
        .limit(i64::from(limit))
        .select(TopUpRow::as_select())
        .load(conn)
        .map_err(db_err)?;
    rows.into_iter().map(TopUp::try_from).collect()
}

pub(crate) fn upsert_pack(conn: &mut Conn, pack: &Pack) -> Result<(), StoreError> {
    let row = PackRow::try_from(pack)?;
    diesel::insert_into(packs::table)
        .values(&row)
        .on_conflict(packs::id)
        .do_update()
        .set(&row)
        .execute(conn)
        .map_err(db_err)?;
    Ok(())
}

pub(crate) fn upsert_rate(conn: &mut Conn, rate: &Rate, now: Timestamp) -> Result<(), StoreError> {
    let row = RateRow::new(rate, now)?;
    diesel::insert_into(rates::table)
        .values(&row)
        .on_conflict(rates::model)
        .do_update()
        .set(&row)
        .execute(conn)
        .map_err(db_err)?;
    Ok(())
}

pub(crate) fn delete_rate(conn: &mut Conn, model: &str) -> Result<bool, StoreError> {
    let deleted = diesel::delete(rates::table.find(model))
        .execute(conn)
        .map_err(db_err)?;
    Ok(deleted > 0)
}

pub(crate) fn rate(conn: &mut Conn, model: &str) -> Result<Option<Rate>, StoreError> {
    let row = rates::table
        .find(model)
        .select(RateRow::as_select())
        .at_most_one(conn)
        .map_err(db_err)?;
    Ok(row.map(Rate::from))
}

pub(crate) fn rates(conn: &mut Conn) -> Result<Vec<Rate>, StoreError> {
    let rows: Vec<RateRow> = rates::table
        .order(rates::model.asc())
        .select(RateRow::as_select())
        .load(conn)
        .map_err(db_err)?;
    Ok(rows.into_iter().map(Rate::from).collect())
}

pub(crate) fn pack(
    conn: &mut Conn,
    id: &billing_core::ids::PackId,
) -> Result<Option<Pack>, StoreError> {
    let row = packs::table
        .find(id.as_str())
        .select(PackRow::as_select())
        .at_most_one(conn)
        .map_err(db_err)?;
    row.map(Pack::try_from).transpose()
}

pub(crate) fn packs(conn: &mut Conn, include_inactive: bool) -> Result<Vec<Pack>, StoreError> {
    let mut query = packs::table.select(PackRow::as_select()).into_boxed();
    if !include_inactive {
        query = query.filter(packs::active.eq(true));
    }
    let rows: Vec<PackRow> = query
        .order((packs::price_minor.asc(), packs::id.asc()))
        .load(conn)
        .map_err(db_err)?;
    rows.into_iter().map(Pack::try_from).collect()
}

pub(crate) fn insert_key(conn: &mut Conn, key: &ApiKeyRecord) -> Result<(), StoreError> {
    diesel::insert_into(api_keys::table)
        .values(ApiKeyRow::from(key))
        .execute(conn)
        .map_err(db_err)?;
    Ok(())
}

pub(crate) fn key_by_hash(conn: &mut Conn, hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
    let row = api_keys::table
        .filter(api_keys::hash.eq(hash))
        .select(ApiKeyRow::as_select())
        .at_most_one(conn)
        .map_err(db_err)?;
    row.map(ApiKeyRecord::try_from).transpose()
}

pub(crate) fn key(conn: &mut Conn, id: &ApiKeyId) -> Result<Option<ApiKeyRecord>, StoreError> {
    let row = api_keys::table
        .find(id.as_str())
        .select(ApiKeyRow::as_select())
        .at_most_one(conn)
        .map_err(db_err)?;
    row.map(ApiKeyRecord::try_from).transpose()
}

pub(crate) fn revoke_key(conn: &mut Conn, id: &ApiKeyId, now: Timestamp) -> Result<bool, StoreError> {
    diesel::update(
        api_keys::table
            .find(id.as_str())
            .filter(api_keys::revoked_at.is_null()),
    )
    .set(api_keys::revoked_at.eq(now.as_micros()))
    .execute(conn)
    .map_err(db_err)?;
    Ok(key(conn, id)?.is_some())
}

pub(crate) fn insert_session(conn: &mut Conn, session: &SessionRecord) -> Result<(), StoreError> {
    diesel::insert_into(dashboard_sessions::table)
        .values(SessionRow::from(session))
        .execute(conn)
        .map_err(db_err)?;
    Ok(())
}

pub(crate) fn session_by_hash(
    conn: &mut Conn,
    hash: &str,
) -> Result<Option<SessionRecord>, StoreError> {
    let row = dashboard_sessions::table
        .find(hash)
        .select(SessionRow::as_select())
        .at_most_one(conn)
        .map_err(db_err)?;
    Ok(row.map(SessionRecord::from))
}

pub(crate) fn end_session(conn: &mut Conn, hash: &str, now: Timestamp) -> Result<(), StoreError> {
    diesel::update(
        dashboard_sessions::table
            .find(hash)
            .filter(dashboard_sessions::ended_at.is_null()),
    )
    .set(dashboard_sessions::ended_at.eq(now.as_micros()))
    .execute(conn)
    .map_err(db_err)?;
    Ok(())
}

pub(crate) fn list_keys(conn: &mut Conn, query: &KeyQuery) -> Result<Option<KeyPage>, StoreError> {
    let mut select = api_keys::table.into_boxed();
    if let Some(account) = &query.account_id {
        select = select.filter(api_keys::account_id.eq(account.as_str().to_owned()));
    }
    if let Some(after) = &query.after {
        let Some(cursor) = key(conn, after)?.filter(|k| {
            query.account_id.is_none() || k.account_id == query.account_id
        }) else {
            return Ok(None);
        };
        let (at, id) = (cursor.created_at.as_micros(), cursor.id.as_str().to_owned());
        select = select.filter(
            api_keys::created_at
                .lt(at)
                .or(api_keys::created_at.eq(at).and(api_keys::id.lt(id))),
        );
    }
    let mut rows: Vec<ApiKeyRow> = select
        .order((api_keys::created_at.desc(), api_keys::id.desc()))
        .limit(i64::from(query.limit) + 1)
        .select(ApiKeyRow::as_select())
        .load(conn)
        .map_err(db_err)?;
    let has_more = rows.len() > query.limit as usize;
    rows.truncate(query.limit as usize);
    let keys = rows
        .into_iter()
        .map(ApiKeyRecord::try_from)
        .collect::<Result<_, _>>()?;
    Ok(Some(KeyPage { keys, has_more }))
}

pub(crate) fn touch_key(conn: &mut Conn, id: &ApiKeyId, minute: Timestamp) -> Result<(), StoreError> {
    let minute = minute.as_micros();
    diesel::update(
        api_keys::table.find(id.as_str()).filter(
            api_keys::last_used_at
                .is_null()
                .or(api_keys::last_used_at.lt(minute)),
        ),
    )
    .set(api_keys::last_used_at.eq(minute))
    .execute(conn)
    .map_err(db_err)?;
    Ok(())
}

pub(crate) fn has_admin_key(conn: &mut Conn) -> Result<bool, StoreError> {
    let count: i64 = api_keys::table
        .filter(api_keys::scope.eq("admin"))
        .filter(api_keys::revoked_at.is_null())
        .count()
        .get_result(conn)
        .map_err(db_err)?;
    Ok(count > 0)
}

pub(crate) fn record_event(
    conn: &mut Conn,
    gateway: &str,
    event_id: &str,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let inserted = diesel::insert_into(webhook_events::table)
        .values((
            webhook_events::gateway.eq(gateway),
            webhook_events::event_id.eq(event_id),
            webhook_events::received_at.eq(now.as_micros()),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .map_err(db_err)?;
    Ok(inserted == 1)
}

pub(crate) fn event_seen(
    conn: &mut Conn,
    gateway: &str,
    event_id: &str,
) -> Result<bool, StoreError> {
    let count: i64 = webhook_events::table
        .filter(webhook_events::gateway.eq(gateway))
        .filter(webhook_events::event_id.eq(event_id))
        .count()
        .get_result(conn)
        .map_err(db_err)?;
    Ok(count > 0)
}

pub(crate) fn touch_pending_topup(
    conn: &mut Conn,
    id: &TopUpId,
    now: Timestamp,
) -> Result<(), StoreError> {
    diesel::update(
        topups::table
            .filter(topups::id.eq(id.as_str()))
            .filter(topups::status.eq(TopUpStatus::Pending.as_str())),
    )
    .set(topups::updated_at.eq(now.as_micros()))
    .execute(conn)
    .map_err(db_err)?;
    Ok(())
}

pub(crate) fn low_balance_alert(
    conn: &mut Conn,
    account_id: &AccountId,
) -> Result<Option<LowBalanceAlert>, StoreError> {
    finish(load_controls::<StoreError>(conn, account_id)).map(|c| c.map(|(s, _)| s.alert))
}

pub(crate) fn set_low_balance_alert(
    conn: &mut Conn,
    account_id: &AccountId,
    alert: &LowBalanceAlert,
) -> Result<bool, StoreError> {
    let threshold = alert.threshold.map(units).transpose()?;
    let updated = diesel::update(accounts::table.find(account_id.as_str()))
        .set((
            accounts::alert_enabled.eq(alert.enabled),
            accounts::alert_threshold.eq(threshold),
        ))
        .execute(conn)
        .map_err(db_err)?;
    Ok(updated == 1)
}

pub(crate) fn claim_outbox(
    conn: &mut Conn,
    now: Timestamp,
    lease_until: Timestamp,
    limit: u32,
) -> Result<Vec<OutboxItem>, StoreError> {
    let due: Vec<OutboxRow> = outbox::table
        .filter(outbox::status.eq("pending"))
        .filter(outbox::next_attempt_at.le(now.as_micros()))
        .order(outbox::next_attempt_at.asc())
        .limit(i64::from(limit))
        .select(OutboxRow::as_select())
        .load(conn)
        .map_err(db_err)?;
    let mut claimed = Vec::with_capacity(due.len());
    for row in due {
        let mine = outbox::table
            .filter(outbox::notice_id.eq(row.notice_id.clone()))
            .filter(outbox::channel.eq(row.channel.clone()))
            .filter(outbox::status.eq("pending"))
            .filter(outbox::next_attempt_at.eq(row.next_attempt_at));
        let (notice_id, channel) = (row.notice_id.clone(), row.channel.clone());
        match OutboxItem::try_from(row) {
            Ok(mut item) => {
                // Taken only if no other worker took it since it was read.
                let taken = diesel::update(mine)
                    .set(outbox::next_attempt_at.eq(lease_until.as_micros()))
                    .execute(conn)
                    .map_err(db_err)?;
                if taken == 1 {
                    item.lease_until = lease_until;
                    claimed.push(item);
                }
            }
            Err(e) => {
                // A row this version cannot read (written by a newer one?) is set aside
                // with its reason rather than blocking every pass.
                tracing::error!(notice = %notice_id, channel = %channel, error = %e, "unreadable outbox item given up");
                diesel::update(mine)
                    .set((
                        outbox::status.eq("given_up"),
                        outbox::last_error.eq(e.to_string()),
                    ))
                    .execute(conn)
                    .map_err(db_err)?;
            }
        }
    }
    Ok(claimed)
}

pub(crate) fn finish_outbox(
    conn: &mut Conn,
    item: &OutboxItem,
    outcome: &OutboxOutcome,
    now: Timestamp,
) -> Result<bool, StoreError> {
    // Only while this claim holds the item: pending and not taken again since, so a late
    // outcome never reopens or overwrites another worker's.
    let mine = outbox::table
        .filter(outbox::notice_id.eq(&item.notice.id))
        .filter(outbox::channel.eq(item.channel.as_str()))
        .filter(outbox::status.eq("pending"))
        .filter(outbox::next_attempt_at.eq(item.lease_until.as_micros()));
    let (status, next, error) = match outcome {
        OutboxOutcome::Delivered => ("delivered", None, None),
        OutboxOutcome::Retry { at, error } => ("pending", Some(at.as_micros()), Some(error.as_str())),
        OutboxOutcome::GaveUp { error } => ("given_up", None, Some(error.as_str())),
    };
    // A finished item's next_attempt_at records when it finished.
    let updated = diesel::update(mine)
        .set((
            outbox::status.eq(status),
            outbox::attempts.eq(outbox::attempts + 1),
            outbox::last_error.eq(error),
            outbox::next_attempt_at.eq(next.unwrap_or(now.as_micros())),
        ))
        .execute(conn)
        .map_err(db_err)?;
    Ok(updated == 1)
}

pub(crate) fn outbox_depth(conn: &mut Conn) -> Result<(u64, Option<Timestamp>), StoreError> {
    let (count, oldest): (i64, Option<i64>) = outbox::table
        .filter(outbox::status.eq("pending"))
        .select((diesel::dsl::count_star(), diesel::dsl::min(outbox::created_at)))
        .exactly_one(conn)
        .map_err(db_err)?;
    Ok((u64::try_from(count).unwrap_or(0), oldest.map(Timestamp::from_micros)))
}

fn load_auto<E: From<StoreError>>(
    conn: &mut Conn,
    account_id: &AccountId,
) -> Result<Option<(AutoTopUpSettings, AutoTopUpState)>, TxError<E>> {
    let row: Option<AutoTopUpRow> = auto_topups::table
        .find(account_id.as_str())
        .select(AutoTopUpRow::as_select())
        .at_most_one(conn)?;
    row.map(AutoTopUpRow::split)
        .transpose()
        .map_err(|e| TxError::Op(E::from(e)))
}

fn load_method<E: From<StoreError>>(
    conn: &mut Conn,
    account_id: &AccountId,
) -> Result<Option<SavedMethod>, TxError<E>> {
    let row: Option<PaymentMethodRow> = payment_methods::table
        .find(account_id.as_str())
        .select(PaymentMethodRow::as_select())
        .at_most_one(conn)?;
    Ok(row.map(SavedMethod::from))
}

fn save_auto<E: From<StoreError>>(
    conn: &mut Conn,
    account_id: &AccountId,
    settings: &AutoTopUpSettings,
    state: &AutoTopUpState,
) -> Result<(), TxError<E>> {
    let row = AutoTopUpRow::new(account_id, settings, state, Currency::USD)
        .map_err(|e| TxError::Op(E::from(e)))?;
    diesel::insert_into(auto_topups::table)
        .values(&row)
        .on_conflict(auto_topups::account_id)
        .do_update()
        .set(&row)
        .execute(conn)?;
    Ok(())
}

/// After an auto top-up completed or failed, in its transition's transaction:
/// [`after_auto_topup`] (failures, the cap, turning itself off) and its notices.
fn auto_topup_after_transition(
    conn: &mut Conn,
    topup: &TopUp,
    now: Timestamp,
) -> Result<(), TxError<StoreError>> {
    // The wallet's lock orders this with the debits that decide new charges.
    let Some(balance) = lock_account(conn, &topup.account_id)? else {
        return Ok(());
    };
    let Some((mut settings, state)) = load_auto::<StoreError>(conn, &topup.account_id)? else {
        return Ok(());
    };
    let (state, enabled, notices) =
        after_auto_topup(&settings, &state, topup, Credits::from_units(balance), now);
    settings.enabled = enabled;
    save_auto::<StoreError>(conn, &topup.account_id, &settings, &state)?;
    enqueue_notices::<StoreError>(conn, &notices)
}

pub(crate) fn auto_topup(
    conn: &mut Conn,
    account_id: &AccountId,
) -> Result<Option<(AutoTopUpSettings, AutoTopUpState)>, StoreError> {
    let exists: Option<String> = accounts::table
        .find(account_id.as_str())
        .select(accounts::id)
        .at_most_one(conn)
        .map_err(db_err)?;
    if exists.is_none() {
        return Ok(None);
    }
    Ok(Some(
        finish(load_auto::<StoreError>(conn, account_id))?
            .unwrap_or_else(|| (AutoTopUpSettings::off(), AutoTopUpState::new())),
    ))
}

pub(crate) fn set_auto_topup(
    conn: &mut Conn,
    account_id: &AccountId,
    settings: &AutoTopUpSettings,
) -> Result<bool, StoreError> {
    finish(write_tx(conn, |conn| {
        if lock_account(conn, account_id)?.is_none() {
            return Ok(false);
        }
        let (_, mut state) = load_auto::<StoreError>(conn, account_id)?
            .unwrap_or_else(|| (AutoTopUpSettings::off(), AutoTopUpState::new()));
        state.disabled_reason = None;
        state.failures = 0;
        save_auto::<StoreError>(conn, account_id, settings, &state)?;
        Ok(true)
    }))
}

pub(crate) fn payment_method(
    conn: &mut Conn,
    account_id: &AccountId,
) -> Result<Option<SavedMethod>, StoreError> {
    finish(load_method::<StoreError>(conn, account_id))
}

pub(crate) fn save_payment_method(
    conn: &mut Conn,
    account_id: &AccountId,
    method: &SavedMethod,
) -> Result<bool, StoreError> {
    finish(write_tx(conn, |conn| {
        if lock_account(conn, account_id)?.is_none() {
            return Ok(false);
        }
        let row = PaymentMethodRow::new(account_id, method);
        diesel::insert_into(payment_methods::table)
            .values(&row)
            .on_conflict(payment_methods::account_id)
            .do_update()
            .set(&row)
            .execute(conn)?;
        Ok(true)
    }))
}

pub(crate) fn delete_payment_method(
    conn: &mut Conn,
    account_id: &AccountId,
) -> Result<bool, StoreError> {
    finish(write_tx(conn, |conn| {
        if lock_account(conn, account_id)?.is_none() {
            return Ok(false);
        }
        let deleted = diesel::delete(payment_methods::table.find(account_id.as_str())).execute(conn)?;
        if deleted == 0 {
            return Ok(false);
        }
        if let Some((mut settings, mut state)) = load_auto::<StoreError>(conn, account_id)?
            && settings.enabled
        {
            settings.enabled = false;
            state.disabled_reason =
                Some(billing_core::autotopup::REASON_NO_PAYMENT_METHOD.to_owned());
            save_auto::<StoreError>(conn, account_id, &settings, &state)?;
        }
        Ok(true)
    }))
}
