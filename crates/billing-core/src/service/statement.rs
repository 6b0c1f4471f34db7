//! Statements: every entry of a period, oldest first, with the balances around it.

use super::Billing;
use crate::ids::AccountId;
use crate::ledger::{EntryKind, LedgerEntry};
use crate::money::Credits;
use crate::ports::{Account, EntryQuery, Store, StoreError};
use crate::time::Timestamp;

/// Most entries one statement holds. A longer period is refused (ask for a shorter one),
/// never cut short: a statement that silently stops is worse than none.
pub const STATEMENT_ENTRIES_MAX: usize = 100_000;

/// Entries are read from the store this many at a time.
const STATEMENT_PAGE: u32 = 1_000;

/// Which part of the ledger a statement covers. The default is all of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatementQuery {
    /// Only entries of this type (the balances still count every type).
    pub kind: Option<EntryKind>,
    /// The period starts after the last entry created before this instant (entries are
    /// cut in ledger order: see [`statement_of`]); from the first entry when `None`.
    pub from: Option<Timestamp>,
    /// The period ends with the last entry created before this instant; with the newest
    /// entry when `None`.
    pub to: Option<Timestamp>,
}

/// An account's entries over a period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The account the statement is for, as it is now.
    pub account: Account,
    /// The balance just before the period: the `balance_after` of the last entry (in ledger
    /// order) created before `from`, zero when there is none. Without a type filter,
    /// opening + Σ amounts = closing exactly.
    pub opening_balance: Credits,
    /// The balance at the period's end: the `balance_after` of the last entry (in ledger
    /// order, of any type) created before `to`, or of the newest entry without a `to`.
    pub closing_balance: Credits,
    /// Oldest first.
    pub entries: Vec<LedgerEntry>,
}

/// Why a statement could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatementError {
    /// `from` is not before `to`.
    #[error("the period is empty: `from` must be before `to`")]
    EmptyPeriod,
    /// The period holds more than `max` entries: ask for a shorter one.
    #[error("the period holds more than {max} transactions: ask for a shorter one")]
    TooLarge {
        /// The most entries a statement holds ([`STATEMENT_ENTRIES_MAX`]).
        max: usize,
    },
    /// There is no such account.
    #[error("account not found")]
    AccountNotFound,
    /// The storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Billing {
    /// The account's statement for a period (see [`StatementQuery`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use billing_core::ports::{MockPaymentGateway, PaymentGateway, Store};
    /// # use billing_core::service::{Billing, Gateways};
    /// # use billing_core::topup::TopUpPolicy;
    /// # use billing_testkit::{InMemoryStore, ManualClock, SequentialIds};
    /// use billing_core::Decimal;
    /// use billing_core::money::Credits;
    /// use billing_core::service::StatementQuery;
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(async {
    /// # let mut sandbox = MockPaymentGateway::new();
    /// # sandbox.expect_name().return_const("sandbox".to_owned());
    /// # let sandbox: Arc<dyn PaymentGateway> = Arc::new(sandbox);
    /// # let billing = Billing::new(
    /// #     Arc::new(InMemoryStore::new()) as Arc<dyn Store>,
    /// #     Gateways::new(vec![sandbox], "sandbox").expect("the default gateway is enabled"),
    /// #     Arc::new(ManualClock::new()),
    /// #     Arc::new(SequentialIds::new()),
    /// #     TopUpPolicy::default(),
    /// # );
    /// let account = billing.create_account("Ada", "ada@example.com").await.expect("account");
    /// billing.grant(&account.id, Decimal::new(10, 0), "Welcome", None).await.expect("granted");
    ///
    /// // The default query covers the whole ledger.
    /// let statement = billing
    ///     .statement(&account.id, &StatementQuery::default())
    ///     .await
    ///     .expect("statement");
    /// assert_eq!(statement.opening_balance, Credits::ZERO);
    /// assert_eq!(statement.entries.len(), 1);
    /// assert_eq!(statement.closing_balance, Credits::new(Decimal::new(10, 0)).expect("credits"));
    /// # });
    /// ```
    pub async fn statement(
        &self,
        account_id: &AccountId,
        query: &StatementQuery,
    ) -> Result<Statement, StatementError> {
        statement_of(self.store.as_ref(), account_id, query).await
    }
}

/// [`Billing::statement`] on a store alone: for a program that reads (an admin command, a
/// report) without payment gateways or a `Billing`.
pub async fn statement_of(
    store: &dyn Store,
    account_id: &AccountId,
    query: &StatementQuery,
) -> Result<Statement, StatementError> {
    if let (Some(from), Some(to)) = (query.from, query.to)
        && from >= to
    {
        return Err(StatementError::EmptyPeriod);
    }
    let account = store
        .account(account_id)
        .await?
        .ok_or(StatementError::AccountNotFound)?;
    // The period is cut in ledger order, at anchors: it ends with the last entry created
    // before `to` (the newest entry when there is no `to`, read before the rows, so that a
    // posting written meanwhile is in neither the rows nor the balances) and starts after
    // the last entry created before `from`. Consecutive periods chain exactly (one's closing
    // balance is the next one's opening), every entry is in exactly one of them, and
    // opening + Σ amounts = closing, however the entries' clocks interleave.
    // `start` first: entries only ever follow it (an account's postings commit in ledger
    // order under its wallet's lock), so the `end` read after it is never older than it,
    // whatever commits in between.
    let start = match query.from {
        Some(from) => last_before(store, account_id, Some(from)).await?,
        None => None,
    };
    let end = last_before(store, account_id, query.to).await?;
    let balance =
        |entry: &Option<LedgerEntry>| entry.as_ref().map_or(Credits::ZERO, |e| e.balance_after);
    let (opening_balance, closing_balance) = (balance(&start), balance(&end));
    let mut entries = Vec::new();
    if let Some(end) = end
        && start.as_ref().is_none_or(|s| s.id != end.id)
    {
        let after = start.map(|s| s.id);
        let mut before = Some(end.id.clone());
        if query.kind.is_none_or(|k| k == end.kind) {
            entries.push(end);
        }
        loop {
            let page = store
                .entries(
                    account_id,
                    &EntryQuery {
                        kind: query.kind,
                        before,
                        after: after.clone(),
                        limit: STATEMENT_PAGE,
                        ..EntryQuery::default()
                    },
                )
                .await?;
            let last_page = page.len() < STATEMENT_PAGE as usize;
            before = page.last().map(|e| e.id.clone());
            entries.extend(page);
            if entries.len() > STATEMENT_ENTRIES_MAX {
                return Err(StatementError::TooLarge {
                    max: STATEMENT_ENTRIES_MAX,
                });
            }
            if last_page {
                break;
            }
        }
    }
    entries.reverse();
    Ok(Statement {
        account,
        opening_balance,
        closing_balance,
        entries,
    })
}

/// The last entry (in ledger order) created before `to`; the last entry of all when `None`.
async fn last_before(
    store: &dyn Store,
    account_id: &AccountId,
    to: Option<Timestamp>,
) -> Result<Option<LedgerEntry>, StoreError> {
    let mut last = store
        .entries(
            account_id,
            &EntryQuery {
                to,
                limit: 1,
                ..EntryQuery::default()
            },
        )
        .await?;
    Ok(last.pop())
}
