//! Everything a posting decides, as one pure function of the wallet it is applied to.
//!
//! A store loads a [`WalletState`] under the wallet's lock, applies [`decide_posting`] to each
//! of the wallet's postings in arrival order (the state carries the balance, the month's
//! spend, the month the limit was told and auto top-up's state from one posting to the next),
//! and writes what each [`Decided`] says, all in one transaction. A batch of a thousand
//! postings and a single posting are decided by the same rules.

use crate::autotopup::{
    AfterDebit, AutoTopUpDecision, AutoTopUpSettings, AutoTopUpState, SavedMethod,
    decide_auto_topup,
};
use crate::controls::{MonthSpend, apply_spending, refundable_this_month};
use crate::ids::AccountId;
use crate::ledger::{LedgerEntry, check_refund, plan_posting};
use crate::money::Credits;
use crate::notices::{Cause, Debit, Notice, NoticeSettings, Topic, debit_notices};
use crate::ports::{PostError, Posting, StoreError};
use crate::time::Timestamp;
use crate::topup::TopUp;

/// A wallet as its postings see it, loaded under its lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletState {
    /// The wallet's account.
    pub account_id: AccountId,
    /// The balance, moved to the last entry's `balance_after` after each decided posting.
    pub balance: Credits,
    /// Alert, spending limit and the month the limit was last told.
    pub settings: NoticeSettings,
    /// The month's recorded spend.
    pub spend: MonthSpend,
    /// Auto top-up's settings and state, when the wallet has them.
    pub auto_topup: Option<(AutoTopUpSettings, AutoTopUpState)>,
    /// The saved payment method (needed only while auto top-up is on).
    pub method: Option<SavedMethod>,
}

/// What a refund posting is checked against, loaded under the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundFacts {
    /// The entries `refund_of` names that exist.
    pub targets: Vec<LedgerEntry>,
    /// What earlier refunds of them credited.
    pub already_refunded: Credits,
}

/// What one posting writes: its entries, the notices its debit tells (outbox rows), and a
/// pending auto top-up to insert. The wallet's new state is in the [`WalletState`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    /// The entries to append, placed after the balance.
    pub entries: Vec<LedgerEntry>,
    /// Outbox rows: what the debit tells, an auto top-up's charge, or its pause at the cap.
    pub notices: Vec<Notice>,
    /// The pending auto top-up to insert, when the posting started one.
    pub auto_topup: Option<TopUp>,
}

/// Decides one posting against `wallet` (holding `held` in active holds at `posting.now`):
/// the refund rule, the spending limit, the balance floor ([`plan_posting`]), then what the
/// debit tells and whether it starts an auto top-up. On success `wallet` is the state after
/// the posting; on refusal it is unchanged and nothing is to be written.
///
/// Idempotency is the store's: a claimed key is answered before this is called.
pub fn decide_posting(
    wallet: &mut WalletState,
    posting: &Posting,
    held: Credits,
    refund: Option<&RefundFacts>,
) -> Result<Decided, PostError> {
    let corrupt =
        |e: crate::money::AmountError| PostError::Store(StoreError::Corrupt(e.to_string()));
    let refundable = match (posting.refund_of.is_empty(), refund) {
        (true, _) => Credits::ZERO,
        (false, None) => {
            return Err(PostError::Store(StoreError::Corrupt(
                "a refund posting was decided without its refund facts".into(),
            )));
        }
        (false, Some(facts)) => {
            let requested =
                Credits::sum(posting.entries.iter().map(|e| e.amount)).map_err(corrupt)?;
            check_refund(
                &posting.account_id,
                &posting.refund_of,
                &facts.targets,
                facts.already_refunded,
                requested,
            )?;
            refundable_this_month(
                wallet.spend,
                facts.targets.iter().map(|t| (t.created_at, t.amount)),
                posting.now,
            )?
        }
    };
    let spend = apply_spending(
        &wallet.settings.limit,
        wallet.spend,
        held,
        posting.entries.iter().map(|e| (e.kind, e.amount)),
        refundable,
        posting.now,
        true,
    )?;
    let entries = plan_posting(
        &posting.account_id,
        wallet.balance,
        held,
        &posting.entries,
        posting.now,
    )?;
    let balance_before = wallet.balance;
    wallet.spend = spend;
    let (notices, auto_topup) = after_debit(wallet, balance_before, &entries, posting.now);
    Ok(Decided {
        entries,
        notices,
        auto_topup,
    })
}

/// After entries are written on a wallet that held `balance_before` (a posting, or a hold's
/// capture; `wallet.spend` already counts them): moves the balance to the last entry's,
/// and answers what the debit tells ([`debit_notices`]) and the auto top-up it starts
/// ([`decide_auto_topup`], with its charge as a notice on the `charge` channel), recording
/// the month the limit was told and auto top-up's new state in `wallet`.
pub fn after_debit(
    wallet: &mut WalletState,
    balance_before: Credits,
    written: &[LedgerEntry],
    now: Timestamp,
) -> (Vec<Notice>, Option<TopUp>) {
    let Some(last) = written.last() else {
        return (Vec::new(), None);
    };
    wallet.balance = last.balance_after;
    let (mut notices, told) = debit_notices(
        &wallet.settings,
        &Debit {
            account_id: &wallet.account_id,
            entry_id: last.id.as_str(),
            balance_before,
            balance_after: last.balance_after,
            spend_after: wallet.spend,
            now,
        },
    );
    wallet.settings.limit_reached_month = told;
    let mut started = None;
    if last.balance_after < balance_before
        && let Some((settings, state)) = &mut wallet.auto_topup
        && settings.enabled
        && state.pending.is_none()
    {
        let debit = AfterDebit {
            account_id: &wallet.account_id,
            entry_id: last.id.as_str(),
            balance_after: last.balance_after,
            now,
        };
        match decide_auto_topup(settings, state, wallet.method.as_ref(), &debit) {
            AutoTopUpDecision::Nothing => {}
            AutoTopUpDecision::Start { topup, state: next } => {
                *state = next;
                notices.push(Notice::new(
                    Topic::AutoTopUpCharge,
                    &wallet.account_id,
                    last.balance_after,
                    Cause::TopUp(topup.id.as_str().to_owned()),
                    now,
                ));
                started = Some(topup);
            }
            AutoTopUpDecision::CapReached {
                state: next,
                notice,
            } => {
                *state = next;
                notices.push(notice);
            }
        }
    }
    (notices, started)
}
