//! Statements: every entry of a period, oldest first, with the balances around it.

use super::Billing;
use crate::ids::AccountId;
use crate::ledger::{EntryKind, LedgerEntry};
use crate::money::Credits;
use crate::ports::{Account, EntryQuery, StoreError};
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
    /// Entries created at or after this instant; from the first entry when `None`.
    pub from: Option<Timestamp>,
    /// Entries created before this instant; up to now when `None`.
    pub to: Option<Timestamp>,
}

/// An account's entries over a period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The account the statement is for, as it is now.
    pub account: Account,
    /// The balance just before the period: the last earlier entry's `balance_after`, zero
    /// when there is none.
    pub opening_balance: Credits,
    /// The balance at the period's end: its last entry's `balance_after` (of any type).
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
        if let (Some(from), Some(to)) = (query.from, query.to)
            && from >= to
        {
            return Err(StatementError::EmptyPeriod);
        }
        let account = self
            .store
            .account(account_id)
            .await?
            .ok_or(StatementError::AccountNotFound)?;
        let mut entries = Vec::new();
        let mut before = None;
        loop {
            let page = self
                .store
                .entries(
                    account_id,
                    &EntryQuery {
                        kind: query.kind,
                        before,
                        from: query.from,
                        to: query.to,
                        limit: STATEMENT_PAGE,
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
        entries.reverse();
        let opening_balance = match query.from {
            Some(from) => self.balance_before(account_id, Some(from)).await?,
            None => Credits::ZERO,
        };
        let closing_balance = self.balance_before(account_id, query.to).await?;
        Ok(Statement {
            account,
            opening_balance,
            closing_balance,
            entries,
        })
    }

    /// The balance after the last entry created before `to` (the last entry of all when
    /// `None`); zero when there is none.
    async fn balance_before(
        &self,
        account_id: &AccountId,
        to: Option<Timestamp>,
    ) -> Result<Credits, StoreError> {
        let last = self
            .store
            .entries(
                account_id,
                &EntryQuery {
                    to,
                    limit: 1,
                    ..EntryQuery::default()
                },
            )
            .await?;
        Ok(last.first().map_or(Credits::ZERO, |e| e.balance_after))
    }
}
