//! The ports: what the core needs from the outside world, each with its contract.
//!
//! Every storage port is checked against every adapter (in-memory, SQLite, PostgreSQL) by the
//! contract suite in `billing-testkit`. Atomicity lives here: each method that changes money
//! is one call that the adapter performs in one transaction with the wallet (or top-up) row
//! locked, applying the core's pure decision function ([`crate::ledger::plan_posting`],
//! [`crate::ledger::check_refund`], [`crate::topup::decide_transition`]) to the locked state.

use async_trait::async_trait;

use crate::autotopup::{AutoTopUpSettings, AutoTopUpState, SavedMethod};
use crate::controls::{MonthSpend, SpendingLimit};
use crate::holds::{Hold, HoldAction, HoldRuleError};
use crate::ids::{AccountId, ApiKeyId, EntryId, HoldId, PackId, TopUpId};
use crate::ledger::{EntryKind, LedgerEntry, NewEntry, PostingRuleError, RefundRuleError};
use crate::money::{Credits, Money};
use crate::notices::{Channel, Email, LowBalanceAlert, Notice};
use crate::pricing::Rate;
use crate::time::Timestamp;
use crate::topup::{Pack, TopUp, TopUpStatus};

/// A failure of the storage itself (not a refusal by the rules).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or the transaction could not complete; retrying may
    /// succeed. Nothing was written.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Stored data does not satisfy the domain's invariants.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A row that must be unique already exists.
    #[error("duplicate: {0}")]
    Duplicate(String),
}

/// The current time. MUST be UTC and MUST NOT go backwards within a process.
pub trait Clock: Send + Sync {
    /// The current instant, in UTC.
    fn now(&self) -> Timestamp;
}

/// New identifiers. MUST return `"{prefix}_{random}"` with at least 96 bits of randomness, so
/// that ids are unguessable and unique across processes without coordination. The random
/// part MAY start with the creation time (the server's generator does, so that ids sort by
/// creation and an index of them grows at its end); nothing may rely on that order.
pub trait IdGenerator: Send + Sync {
    /// A fresh id `{prefix}_{random}` (`new_id("acct")` gives `acct_…`), never returned before.
    fn new_id(&self, prefix: &str) -> String;
}

/// An account and its wallet's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Its id (`acct_…`), unique, chosen at creation.
    pub id: AccountId,
    /// The holder's name, used in the customer's emails; not empty, no white space at either
    /// end.
    pub name: String,
    /// Where the customer's emails go; also given to the gateway at checkout.
    pub email: String,
    /// When the account was created (the service clock's time).
    pub created_at: Timestamp,
}

/// A wallet's balance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wallet {
    /// The account that owns the wallet (exactly one wallet per account).
    pub account_id: AccountId,
    /// In the wallet unit: the sum of every entry's amount, never negative. Active holds are not
    /// subtracted (see [`crate::service::Billing::available`]).
    pub balance: Credits,
}

/// Accounts and their wallets.
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Creates the account and its wallet at balance zero. MUST return
    /// `StoreError::Duplicate` if the id exists.
    async fn insert_account(&self, account: &Account) -> Result<(), StoreError>;

    /// The account with this id; `None` when there is none.
    async fn account(&self, id: &AccountId) -> Result<Option<Account>, StoreError>;

    /// The wallet's balance as of the last committed posting.
    async fn wallet(&self, id: &AccountId) -> Result<Option<Wallet>, StoreError>;

    /// Every account id, oldest first, at most `limit` after `after` (for audits and loadgen).
    async fn account_ids(
        &self,
        after: Option<&AccountId>,
        limit: u32,
    ) -> Result<Vec<AccountId>, StoreError>;
}

/// A claim on an idempotency key, stored in the same transaction as the effect it guards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyClaim {
    /// Namespace of the key: the account and the operation (`acct_1:usage`).
    pub scope: String,
    /// The caller's key: 1 to [`IDEMPOTENCY_KEY_LENGTH_MAX`] bytes of printable ASCII, unique
    /// within `scope`.
    pub key: String,
    /// A canonical rendering of the request; the same key with another fingerprint is a
    /// conflict.
    pub fingerprint: String,
}

/// Limit on an idempotency key, in bytes.
pub const IDEMPOTENCY_KEY_LENGTH_MAX: usize = 255;

/// Entries to append to one wallet, atomically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posting {
    /// The wallet the entries are appended to.
    pub account_id: AccountId,
    /// The entries to append, in order. Empty only to replay a claimed key: otherwise refused
    /// ([`PostingRuleError::Empty`]).
    pub entries: Vec<NewEntry>,
    /// The idempotency key this posting claims, if any: a repeat replays or conflicts.
    pub idempotency: Option<IdempotencyClaim>,
    /// For a refund: the usage entries it answers.
    pub refund_of: Vec<EntryId>,
    /// The posting's instant: the entries' `created_at`, and when holds and the month's spend
    /// are counted.
    pub now: Timestamp,
}

/// The result of a posting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    /// The entries as written, with their ids and `balance_after` (on a replay, the first
    /// request's).
    pub entries: Vec<LedgerEntry>,
    /// `true` when the idempotency key had been used with the same request: `entries` are
    /// the first result and nothing new was written.
    pub replayed: bool,
}

/// Why a posting did not happen. In every case nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostError {
    /// There is no wallet for `posting.account_id`.
    #[error("account not found")]
    AccountNotFound,
    /// The ledger's rules refused it: insufficient available balance, a wrong sign, the spending
    /// limit, an empty posting or an overflow.
    #[error(transparent)]
    Rule(#[from] PostingRuleError),
    /// A refund names entries that are not this account's usage, or gives back more than is
    /// still refundable on them.
    #[error(transparent)]
    Refund(#[from] RefundRuleError),
    /// The key was already claimed in its scope by a request with another fingerprint.
    #[error("idempotency key already used with a different request")]
    IdempotencyConflict,
    /// The storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Which entries to list, newest first. `EntryQuery::default()` is every entry, one at a
/// time: set `limit`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryQuery {
    /// Only entries of this type.
    pub kind: Option<EntryKind>,
    /// Only entries older than this one (cursor pagination).
    pub before: Option<EntryId>,
    /// Only entries newer than this one (ledger order; with `before`, a range of it).
    pub after: Option<EntryId>,
    /// Only entries created at or after this instant.
    pub from: Option<Timestamp>,
    /// Only entries created before this instant.
    pub to: Option<Timestamp>,
    /// At most this many.
    pub limit: u32,
}

/// The ledger.
#[async_trait]
pub trait LedgerStore: Send + Sync {
    /// Appends `posting.entries` to the wallet in one transaction with the wallet row locked.
    ///
    /// The adapter MUST, atomically:
    /// - if `idempotency` is set and the key was claimed before in its scope: return the first
    ///   result with `replayed = true` when the fingerprint matches, or
    ///   `PostError::IdempotencyConflict` when it does not, writing nothing;
    /// - return `PostError::AccountNotFound` when there is no such wallet;
    /// - for a refund (`refund_of` non-empty): load those entries and the refunds already
    ///   linked to them and apply [`crate::ledger::check_refund`] to the positive total of
    ///   the posting;
    /// - apply [`crate::ledger::plan_posting`] to the locked balance, less the sum of the
    ///   wallet's holds active at `posting.now` (the available balance), and write its entries,
    ///   the new balance, the idempotency claim and the refund links, or nothing at all.
    ///
    /// Concurrent postings on one wallet MUST serialize: a balance never goes below zero
    /// and `balance == sum(amounts)` holds after every commit.
    async fn post(&self, posting: Posting) -> Result<Posted, PostError>;

    /// Posts `postings` in order, each answered as if it had been posted alone right after
    /// the ones before it (one refused posting never fails the others, and a key used twice
    /// in the batch replays or conflicts with its first use). An adapter SHOULD write them in
    /// one transaction (group commit: wallets locked in sorted order, one balance update per
    /// wallet); if that transaction fails it MUST retry them one by one, so that nothing is
    /// partly written. The default posts them one by one.
    async fn post_batch(&self, postings: Vec<Posting>) -> Vec<Result<Posted, PostError>> {
        let mut answers = Vec::with_capacity(postings.len());
        for posting in postings {
            answers.push(self.post(posting).await);
        }
        answers
    }

    /// Entries of one account, newest first. An unknown `before` cursor gives an empty page.
    async fn entries(
        &self,
        account_id: &AccountId,
        query: &EntryQuery,
    ) -> Result<Vec<LedgerEntry>, StoreError>;

    /// One entry of one account; `None` when it does not exist or belongs to another
    /// account.
    async fn entry(
        &self,
        account_id: &AccountId,
        id: &EntryId,
    ) -> Result<Option<LedgerEntry>, StoreError>;

    /// Every entry of one account, oldest first (audits; tests).
    async fn history(&self, account_id: &AccountId) -> Result<Vec<LedgerEntry>, StoreError>;
}

/// Result of inserting something under an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted<T> {
    /// Inserted now (the key, if any, had not been claimed).
    New(T),
    /// The key had been used with the same request: the first result.
    Replayed(T),
}

/// Why a top-up could not be inserted. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InsertTopUpError {
    /// The key was already claimed by a different top-up request.
    #[error("idempotency key already used with a different request")]
    IdempotencyConflict,
    /// The storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a store did with a requested top-up transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransitionOutcome {
    /// The transition happened; for completion, `entries` were credited.
    Applied {
        /// The top-up in its new state.
        topup: TopUp,
        /// The entries credited on completion (`topup`, then `bonus` if any); empty otherwise.
        entries: Vec<LedgerEntry>,
    },
    /// Already in the target state; nothing written.
    AlreadyDone(TopUp),
    /// Not allowed from the current state; nothing written.
    Refused(TopUp),
}

/// A page of top-ups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopUpPage {
    /// This page's top-ups, newest first.
    pub topups: Vec<TopUp>,
    /// How many top-ups the filter lets through, over all pages.
    pub total: u64,
}

/// Top-ups and their lifecycle.
#[async_trait]
pub trait TopUpStore: Send + Sync {
    /// Inserts a pending top-up. With `idempotency`, same contract as [`LedgerStore::post`]:
    /// a replay returns the first top-up, another request under the key is a conflict.
    async fn insert_topup(
        &self,
        topup: &TopUp,
        idempotency: Option<&IdempotencyClaim>,
    ) -> Result<Inserted<TopUp>, InsertTopUpError>;

    /// Records the gateway's payment reference and checkout URL, once: a top-up that has a
    /// reference keeps it (a racing notification may have recorded it first). MUST return
    /// `StoreError::Duplicate` if another top-up of the same gateway has this reference.
    async fn set_checkout(
        &self,
        id: &TopUpId,
        payment_ref: &str,
        checkout_url: &str,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// The top-up with this id; `None` when there is none.
    async fn topup(&self, id: &TopUpId) -> Result<Option<TopUp>, StoreError>;

    /// The top-up of `gateway` with this payment reference (unique per gateway); `None` when
    /// there is none.
    async fn topup_by_payment_ref(
        &self,
        gateway: &str,
        payment_ref: &str,
    ) -> Result<Option<TopUp>, StoreError>;

    /// Moves the top-up to `target` with its row locked, as
    /// [`crate::topup::decide_transition`] decides. On completion the adapter MUST post
    /// `entries` to the wallet in the same transaction (rules of [`LedgerStore::post`]), so
    /// that however many callers race, the wallet is credited exactly once. Returns `None`
    /// when there is no such top-up.
    async fn transition_topup(
        &self,
        id: &TopUpId,
        target: TopUpStatus,
        entries: Vec<NewEntry>,
        failure_reason: Option<String>,
        now: Timestamp,
    ) -> Result<Option<TransitionOutcome>, StoreError>;

    /// One page of an account's top-ups (only those in `status`, when given), newest first;
    /// `page` starts at 1; `total` counts the top-ups the filter lets through.
    async fn topup_page(
        &self,
        account_id: &AccountId,
        status: Option<TopUpStatus>,
        page: u32,
        per_page: u32,
    ) -> Result<TopUpPage, StoreError>;

    /// Pending top-ups created before `created_before`, least recently checked first
    /// (by `updated_at`), for reconciliation.
    async fn pending_topups(
        &self,
        created_before: Timestamp,
        limit: u32,
    ) -> Result<Vec<TopUp>, StoreError>;

    /// Records that a pending top-up was just checked (sets `updated_at`), so that
    /// [`TopUpStore::pending_topups`] answers the others first next time: top-ups that stay
    /// pending (an amount mismatch, a gateway that cannot tell) MUST NOT starve the rest.
    /// No effect on a settled top-up.
    async fn touch_pending_topup(&self, id: &TopUpId, now: Timestamp) -> Result<(), StoreError>;
}

/// Top-up packs.
#[async_trait]
pub trait PackStore: Send + Sync {
    /// Inserts the pack or replaces the one with its id.
    async fn upsert_pack(&self, pack: &Pack) -> Result<(), StoreError>;

    /// The pack with this id, active or not; `None` when there is none.
    async fn pack(&self, id: &PackId) -> Result<Option<Pack>, StoreError>;

    /// Packs by ascending price, then id; inactive ones only when asked.
    async fn packs(&self, include_inactive: bool) -> Result<Vec<Pack>, StoreError>;
}

/// Who an API key speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyScope {
    /// One account's own wallet.
    Customer,
    /// Usage debits for any account (the platform selling the API).
    Platform,
    /// Everything.
    Admin,
}

impl KeyScope {
    /// The stored name: `customer`, `platform` or `admin` (read back by [`KeyScope::parse`]).
    pub fn as_str(self) -> &'static str {
        match self {
            KeyScope::Customer => "customer",
            KeyScope::Platform => "platform",
            KeyScope::Admin => "admin",
        }
    }

    /// The scope named exactly `s` (lower case, as [`KeyScope::as_str`] writes it); `None`
    /// for any other text.
    pub fn parse(s: &str) -> Option<KeyScope> {
        match s {
            "customer" => Some(KeyScope::Customer),
            "platform" => Some(KeyScope::Platform),
            "admin" => Some(KeyScope::Admin),
            _ => None,
        }
    }
}

/// A stored API key: never the secret, only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// Its public id (`key_…`), by which it is listed and revoked; not secret.
    pub id: ApiKeyId,
    /// The account a customer key belongs to; `None` for platform and admin keys not tied to
    /// an account.
    pub account_id: Option<AccountId>,
    /// What the key may do, and on which accounts (see [`ApiKeyRecord::acts_on`]).
    pub scope: KeyScope,
    /// The readable start of the key (`bk_live_ab12`), for listing.
    pub prefix: String,
    /// SHA-256 of the whole key, hex.
    pub hash: String,
    /// When it was issued; keys are listed newest first by it.
    pub created_at: Timestamp,
    /// When it was revoked; a revoked key is refused ([`KeyRefusal::Revoked`]).
    pub revoked_at: Option<Timestamp>,
    /// After this instant the key is refused like a revoked one.
    pub expires_at: Option<Timestamp>,
    /// The start of the minute the key was last used in (kept to the minute).
    pub last_used_at: Option<Timestamp>,
    /// Most requests a minute this key may make; `None`: no limit of its own.
    pub requests_per_minute_max: Option<u32>,
}

/// Why a stored key may not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyRefusal {
    /// The key has been revoked (`revoked_at` is set).
    #[error("this API key was revoked")]
    Revoked,
    /// The key's `expires_at` is at or before the instant of use.
    #[error("this API key expired")]
    Expired,
}

impl ApiKeyRecord {
    /// Whether the key may authenticate a request at `now`: neither revoked nor expired.
    pub fn usable_at(&self, now: Timestamp) -> Result<(), KeyRefusal> {
        if self.revoked_at.is_some() {
            return Err(KeyRefusal::Revoked);
        }
        if self.expires_at.is_some_and(|at| now >= at) {
            return Err(KeyRefusal::Expired);
        }
        Ok(())
    }

    /// The tenancy rule: whether this key may act on `account`'s wallet. An admin key and a
    /// service key (a platform key with no account) act on every account; a customer key and
    /// a platform key issued under an account act on that account only.
    pub fn acts_on(&self, account: &AccountId) -> bool {
        match (self.scope, &self.account_id) {
            (KeyScope::Admin, _) | (KeyScope::Platform, None) => true,
            (KeyScope::Platform | KeyScope::Customer, Some(own)) => own == account,
            (KeyScope::Customer, None) => false,
        }
    }
}

/// Which keys to list: newest first, optionally one account's, after a cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyQuery {
    /// Only this account's keys; `None`: every key.
    pub account_id: Option<AccountId>,
    /// Keys older than this one (by `created_at`, then id).
    pub after: Option<ApiKeyId>,
    /// At most this many (the store fetches one more to tell `has_more`).
    pub limit: u32,
}

/// A page of keys, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPage {
    /// At most `query.limit` keys, newest first.
    pub keys: Vec<ApiKeyRecord>,
    /// More keys follow: ask again with the last one's id as `after`.
    pub has_more: bool,
}

/// API keys.
#[async_trait]
pub trait ApiKeyStore: Send + Sync {
    /// MUST return `StoreError::Duplicate` if the hash or id exists.
    async fn insert_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError>;

    /// The key whose hash is `hash`, revoked or not.
    async fn key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>, StoreError>;

    /// The key with this id, revoked or not; `None` when there is none.
    async fn key(&self, id: &ApiKeyId) -> Result<Option<ApiKeyRecord>, StoreError>;

    /// Marks the key revoked (idempotent). Returns `false` if there is no such key.
    async fn revoke_key(&self, id: &ApiKeyId, now: Timestamp) -> Result<bool, StoreError>;

    /// Whether any unrevoked admin key exists.
    async fn has_admin_key(&self) -> Result<bool, StoreError>;

    /// Keys newest first (`created_at` descending, then id descending), filtered and paged by
    /// `query`. MUST return `None` when `query.after` names no key (of that account, when
    /// one is given).
    async fn list_keys(&self, query: &KeyQuery) -> Result<Option<KeyPage>, StoreError>;

    /// Records that the key was used in the minute starting at `minute`. MUST NOT move
    /// `last_used_at` backwards (a late write of an older minute changes nothing); a key
    /// that does not exist is not an error.
    async fn touch_key(&self, id: &ApiKeyId, minute: Timestamp) -> Result<(), StoreError>;

    /// Stores a new dashboard session. MUST return `StoreError::Duplicate` if its hash
    /// exists.
    async fn insert_session(&self, session: &SessionRecord) -> Result<(), StoreError>;

    /// The session whose token hashes to `hash`, ended or not.
    async fn session_by_hash(&self, hash: &str) -> Result<Option<SessionRecord>, StoreError>;

    /// Ends the session (idempotent: the first end time stays); no such session is not an
    /// error.
    async fn end_session(&self, hash: &str, now: Timestamp) -> Result<(), StoreError>;
}

/// A customer's dashboard session: never its token, only the token's SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// SHA-256 of the session token, hex.
    pub hash: String,
    /// The account the customer signed in to.
    pub account_id: AccountId,
    /// The customer key it was signed in with: the session ends with that key.
    pub key_id: ApiKeyId,
    /// When the customer signed in.
    pub created_at: Timestamp,
    /// From this instant the session is refused, ended or not.
    pub expires_at: Timestamp,
    /// When its customer signed out.
    pub ended_at: Option<Timestamp>,
}

/// The result of a hold operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldOutcome {
    /// The hold after the operation (on a replay: the hold as it is now).
    pub hold: Hold,
    /// The usage entry a capture wrote.
    pub entry: Option<LedgerEntry>,
    /// `true` when the idempotency key had been used with the same request: the first
    /// result, nothing new written.
    pub replayed: bool,
}

/// Why a hold operation did not happen. In every case nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HoldError {
    /// There is no wallet for the account.
    #[error("account not found")]
    AccountNotFound,
    /// The account has no hold with this id.
    #[error("hold not found")]
    HoldNotFound,
    /// The hold rules refused it: not active, a capture above the hold, insufficient available
    /// balance, or the spending limit.
    #[error(transparent)]
    Rule(#[from] HoldRuleError),
    /// The key was already claimed in its scope by a request with another fingerprint.
    #[error("idempotency key already used with a different request")]
    IdempotencyConflict,
    /// The storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Authorization holds.
#[async_trait]
pub trait HoldStore: Send + Sync {
    /// Places `hold` (new, active) in one transaction with its wallet locked. The adapter
    /// MUST, atomically: replay or refuse a claimed idempotency key as
    /// [`LedgerStore::post`] does (the replay answers the hold first placed); answer
    /// `AccountNotFound` for no wallet; apply [`crate::holds::check_new_hold`] to the locked
    /// balance and the sum of the wallet's holds active at `now`; write the hold and the
    /// claim, or nothing.
    async fn place_hold(
        &self,
        hold: &Hold,
        idempotency: Option<&IdempotencyClaim>,
        now: Timestamp,
    ) -> Result<HoldOutcome, HoldError>;

    /// Applies `action` to the hold `id` of `account_id` in one transaction with the wallet
    /// locked: replay or refuse a claimed key first (a replay answers the hold as it is and
    /// the entry its capture wrote); `HoldNotFound` when the account has no such hold;
    /// then [`crate::holds::decide_hold`] with the locked balance and the sum of active
    /// holds at `now`; write the hold, its entries (with the balance) and the claim, or
    /// nothing.
    async fn change_hold(
        &self,
        account_id: &AccountId,
        id: &HoldId,
        action: &HoldAction,
        idempotency: Option<&IdempotencyClaim>,
        now: Timestamp,
    ) -> Result<HoldOutcome, HoldError>;

    /// One hold, stored status (see [`Hold::status_at`]).
    async fn hold(&self, id: &HoldId) -> Result<Option<Hold>, StoreError>;

    /// The sum of the account's holds active at `now`.
    async fn reserved(&self, account_id: &AccountId, now: Timestamp)
    -> Result<Credits, StoreError>;

    /// Writes `expired` on up to `limit` active holds whose expiry is at or before `now`;
    /// answers how many.
    async fn expire_holds(&self, now: Timestamp, limit: u32) -> Result<u32, StoreError>;
}

/// Wallet controls.
#[async_trait]
pub trait ControlsStore: Send + Sync {
    /// The account's spending limit and the spend of the month it last recorded (see
    /// [`MonthSpend::at`]); the defaults (disabled, nothing spent) when never set. `None`
    /// when there is no such account.
    ///
    /// Every posting, hold and capture MUST apply [`crate::controls::apply_spending`] (and,
    /// for a hold or an extend's increase, [`crate::controls::check_spending`]) under the
    /// wallet's lock and record the spend it answers in the same transaction.
    async fn spending(
        &self,
        account_id: &AccountId,
    ) -> Result<Option<(SpendingLimit, MonthSpend)>, StoreError>;

    /// Replaces the account's spending limit. Returns `false` if there is no such account.
    /// A new limit may be told again this month (`spending_limit.reached`).
    async fn set_spending_limit(
        &self,
        account_id: &AccountId,
        limit: &SpendingLimit,
    ) -> Result<bool, StoreError>;

    /// The account's low-balance alert (disabled, no threshold, when never set); `None` when
    /// there is no such account.
    async fn low_balance_alert(
        &self,
        account_id: &AccountId,
    ) -> Result<Option<LowBalanceAlert>, StoreError>;

    /// Replaces the account's low-balance alert. Returns `false` if there is no such account.
    async fn set_low_balance_alert(
        &self,
        account_id: &AccountId,
        alert: &LowBalanceAlert,
    ) -> Result<bool, StoreError>;

    /// The account's auto top-up settings and state ([`AutoTopUpSettings::off`] and a new
    /// state when never set); `None` when there is no such account.
    ///
    /// Every posting and capture MUST apply [`crate::autotopup::decide_auto_topup`] under
    /// the wallet's lock: on `Start`, insert its top-up, record the state and write an
    /// [`crate::notices::Topic::AutoTopUpCharge`] outbox item, in the debit's transaction.
    /// Every transition of an auto top-up MUST apply [`crate::autotopup::after_auto_topup`]
    /// in its transaction.
    async fn auto_topup(
        &self,
        account_id: &AccountId,
    ) -> Result<Option<(AutoTopUpSettings, AutoTopUpState)>, StoreError>;

    /// Replaces the settings; a customer's change clears `disabled_reason` and the failure
    /// count (the state's charges and pending top-up stay). `false` for no account.
    async fn set_auto_topup(
        &self,
        account_id: &AccountId,
        settings: &AutoTopUpSettings,
    ) -> Result<bool, StoreError>;

    /// The saved payment method, if any.
    async fn payment_method(
        &self,
        account_id: &AccountId,
    ) -> Result<Option<SavedMethod>, StoreError>;

    /// Saves (replaces) the account's payment method. `false` for no account.
    async fn save_payment_method(
        &self,
        account_id: &AccountId,
        method: &SavedMethod,
    ) -> Result<bool, StoreError>;

    /// Removes the saved method and turns auto top-up off (`disabled_reason:
    /// payment_method_removed`), atomically. `false` when none was saved.
    async fn delete_payment_method(&self, account_id: &AccountId) -> Result<bool, StoreError>;
}

/// A notice waiting to go out on one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    /// The notice to deliver; its `id` is the same on every attempt.
    pub notice: Notice,
    /// How it goes out: an email, an event to the platform, or an auto top-up charge.
    pub channel: Channel,
    /// Attempts made before this one.
    pub attempts: u32,
    /// Until when this claim holds the item; after it another worker may take it.
    pub lease_until: Timestamp,
}

/// What became of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboxOutcome {
    /// Delivered: the item is done.
    Delivered,
    /// Failed; try again at `at`.
    Retry {
        /// When the item is due again.
        at: Timestamp,
        /// Why this attempt failed.
        error: String,
    },
    /// Failed for the last time (the retry window is over).
    GaveUp {
        /// Why the last attempt failed.
        error: String,
    },
}

/// The outbox: notices written in the same transaction as their cause (every posting,
/// capture and top-up transition MUST write the notices [`crate::notices::debit_notices`]
/// decides, one item per [`Channel::for_topic`], under the wallet's lock), delivered after
/// the commit by a worker, at least once.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Claims up to `limit` items due at `now`, oldest first: each is due again only at
    /// `lease_until`, so another worker (another process) does not take it meanwhile.
    async fn claim_outbox(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<OutboxItem>, StoreError>;

    /// Records an attempt's outcome on a claimed item, only if the claim still holds it
    /// (pending, and not taken again since): answers `false` when it no longer did, so a
    /// late outcome never reopens or overwrites another worker's.
    async fn finish_outbox(
        &self,
        item: &OutboxItem,
        outcome: &OutboxOutcome,
        now: Timestamp,
    ) -> Result<bool, StoreError>;

    /// How many items wait, and when the oldest was written.
    async fn outbox_depth(&self) -> Result<(u64, Option<Timestamp>), StoreError>;
}

/// A delivery that did not happen (an SMTP or HTTP failure); it will be retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DeliveryError(pub String);

/// Sends email to customers.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait Notifier: Send + Sync {
    /// Sends `email`, whose `Message-ID` is derived from `email.notice_id` (the same on
    /// every retry).
    async fn send(&self, email: &Email) -> Result<(), DeliveryError>;
}

/// Delivers events to the platform that sells the API.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait EventSink: Send + Sync {
    /// Delivers `notice` as an event (the same `id` on every retry); `Ok` when the
    /// receiver accepted it or when no receiver is configured.
    async fn deliver(&self, notice: &Notice) -> Result<(), DeliveryError>;
}

/// The rate card.
#[async_trait]
pub trait RateStore: Send + Sync {
    /// Creates or replaces the rate of `rate.model`.
    async fn upsert_rate(&self, rate: &Rate, now: Timestamp) -> Result<(), StoreError>;

    /// Removes a model's rate. Returns `false` if there was none.
    async fn delete_rate(&self, model: &str) -> Result<bool, StoreError>;

    /// The rate of `model`; `None` when the rate card has none.
    async fn rate(&self, model: &str) -> Result<Option<Rate>, StoreError>;

    /// Every rate, by model name.
    async fn rates(&self) -> Result<Vec<Rate>, StoreError>;
}

/// Deduplication of gateway notifications.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Records that `event_id` from `gateway` was processed. Returns `true` the first time and
    /// `false` for every later call with the same pair, however they race.
    async fn record_event(
        &self,
        gateway: &str,
        event_id: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Whether `record_event` was called for this pair.
    async fn event_seen(&self, gateway: &str, event_id: &str) -> Result<bool, StoreError>;
}

/// Whether the store can serve: the database answers and has every migration this build
/// expects (a load balancer's readiness check).
#[async_trait]
pub trait Readiness: Send + Sync {
    /// `Ok(())` when the database answers and every expected migration is applied; an error
    /// says what is wrong.
    async fn ready(&self) -> Result<(), StoreError>;
}

/// Everything the core stores.
pub trait Store:
    AccountStore
    + LedgerStore
    + TopUpStore
    + PackStore
    + ApiKeyStore
    + EventStore
    + RateStore
    + HoldStore
    + ControlsStore
    + OutboxStore
    + Readiness
{
}

impl<T> Store for T where
    T: AccountStore
        + LedgerStore
        + TopUpStore
        + PackStore
        + ApiKeyStore
        + EventStore
        + RateStore
        + HoldStore
        + ControlsStore
        + OutboxStore
        + Readiness
{
}

/// What the core asks a gateway to charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutRequest {
    /// The top-up being paid; checkouts are idempotent per this id.
    pub topup_id: TopUpId,
    /// The account the credits go to.
    pub account_id: AccountId,
    /// What to charge: the top-up's price in the top-up currency, exact to its minor unit.
    pub price: Money,
    /// What is being bought, for the line item (`Pro Pack`, `Credit top-up`).
    pub description: String,
    /// The customer's email, when the gateway wants one.
    pub customer_email: String,
    /// The customer agreed to save the payment method for later off-session charges (auto
    /// top-up). Gateways that cannot save one ignore it.
    pub save_payment_method: bool,
}

/// Where a gateway sends the customer back after a checkout:
/// `{public_url}/checkout/return/{gateway}?topup={topup_id}`, the page the HTTP shell serves.
/// That page trusts nothing in its query but the top-up id, whose status it then asks the
/// gateway for.
pub fn checkout_return_url(public_url: &str, gateway: &str, topup_id: &TopUpId) -> String {
    format!(
        "{}/checkout/return/{gateway}?topup={}",
        public_url.trim_end_matches('/'),
        encode_query_value(topup_id.as_str())
    )
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A checkout the customer completes at `checkout_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    /// The gateway's id for this payment (checkout session id, invoice id).
    pub payment_ref: String,
    /// The gateway's payment page, where the customer is sent to pay.
    pub checkout_url: String,
}

/// A notification as received, before any verification.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Notification {
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    /// The raw body, byte for byte as received (signatures are over it).
    pub body: Vec<u8>,
}

impl Notification {
    /// The value of the first header named `name` (case-insensitive); `None` when absent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A notification whose signature checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedNotification {
    /// The gateway's id for the event, for deduplication.
    pub event_id: String,
    /// The payment it is about, if any: the top-up id the gateway echoes back, and/or the
    /// gateway's payment reference.
    pub topup_id: Option<TopUpId>,
    /// The gateway's payment reference, matched against [`TopUp::payment_ref`].
    pub payment_ref: Option<String>,
}

/// A payment's status, fetched from the gateway server to server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentStatus {
    /// Paid in full: `amount` is what the gateway says it collected.
    Paid {
        /// The amount and currency collected; completing needs exactly the top-up's price.
        amount: Money,
    },
    /// Will not be paid (declined, expired, cancelled).
    Failed {
        /// The gateway's reason, recorded as the top-up's `failure_reason`.
        reason: String,
    },
    /// Not decided yet, or unknown: leave the top-up pending.
    Pending,
}

/// Gateway failures, translated from each gateway's own errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// The payment was declined (the gateway's reason): retrying the same charge will not help.
    #[error("payment declined: {0}")]
    Declined(String),
    /// The gateway rejected the request itself (bad parameters, an operation it does not
    /// support): retrying will not help.
    #[error("gateway refused the request: {0}")]
    InvalidRequest(String),
    /// Timeouts, 5xx, connection errors: the outcome is unknown; retry later.
    #[error("gateway temporarily unavailable: {0}")]
    Transient(String),
    /// The notification's signature is missing, wrong or outside the replay window.
    #[error("notification signature rejected: {0}")]
    BadSignature(String),
    /// The notification is signed but not one this service acts on, or malformed.
    #[error("notification not understood: {0}")]
    Malformed(String),
}

/// A payment gateway.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait PaymentGateway: Send + Sync {
    /// The name in `/webhooks/{name}` and in configuration.
    fn name(&self) -> &str;

    /// Creates a checkout for the top-up. MUST be idempotent per `topup_id` (a retry returns
    /// the same checkout or an equivalent one, never a second charge).
    async fn create_checkout(&self, request: &CheckoutRequest) -> Result<Checkout, GatewayError>;

    /// Whether a checkout can save the customer's payment method for off-session charges.
    fn saves_payment_methods(&self) -> bool {
        false
    }

    /// The payment method a completed checkout saved for off-session charges (the customer
    /// asked with `save_payment_method`), if the gateway can save one.
    async fn saved_method(&self, _topup: &TopUp) -> Result<Option<SavedMethod>, GatewayError> {
        Ok(None)
    }

    /// Charges `method` for `topup` without the customer. MUST be idempotent per top-up id
    /// (a retry after a crash never charges twice). Answers the payment's reference; its
    /// outcome arrives as a checkout's does (a notification, then a status check). A decline
    /// is [`GatewayError::Declined`].
    async fn charge_saved(
        &self,
        _method: &SavedMethod,
        topup: &TopUp,
    ) -> Result<String, GatewayError> {
        Err(GatewayError::InvalidRequest(format!(
            "{} cannot charge a saved payment method (top-up {})",
            self.name(),
            topup.id
        )))
    }

    /// Verifies a notification's signature (constant-time, within the gateway's replay
    /// window) before reading anything else from it. MUST return `BadSignature` for anything
    /// not signed by the gateway.
    async fn verify_notification(
        &self,
        notification: &Notification,
        now: Timestamp,
    ) -> Result<VerifiedNotification, GatewayError>;

    /// Asks the gateway for the payment's status, server to server. MUST return `Pending`
    /// (or an error) whenever the outcome is not certain: never guess `Paid` or `Failed`.
    async fn payment_status(&self, topup: &TopUp) -> Result<PaymentStatus, GatewayError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_urls_encode_the_top_up_id() {
        assert_eq!(
            checkout_return_url(
                "https://b.example/",
                "stripe",
                &TopUpId::new("topup_AZ09-._~")
            ),
            "https://b.example/checkout/return/stripe?topup=topup_AZ09-._~"
        );
        assert_eq!(
            checkout_return_url("http://h", "sandbox", &TopUpId::new("a b&c=d/é")),
            "http://h/checkout/return/sandbox?topup=a%20b%26c%3Dd%2F%C3%A9"
        );
    }

    fn key(scope: KeyScope, account: Option<&str>) -> ApiKeyRecord {
        ApiKeyRecord {
            id: ApiKeyId::new("key_1"),
            account_id: account.map(AccountId::new),
            scope,
            prefix: "bk_".into(),
            hash: "0".repeat(64),
            created_at: Timestamp::from_secs(100),
            revoked_at: None,
            expires_at: None,
            last_used_at: None,
            requests_per_minute_max: None,
        }
    }

    #[test]
    fn keys_act_on_their_own_account_only_unless_admin_or_service() {
        let (a, b) = (AccountId::new("acct_a"), AccountId::new("acct_b"));
        let table = [
            (key(KeyScope::Admin, None), true, true),
            (key(KeyScope::Platform, None), true, true),
            (key(KeyScope::Platform, Some("acct_a")), true, false),
            (key(KeyScope::Customer, Some("acct_a")), true, false),
            (key(KeyScope::Customer, None), false, false),
        ];
        for (key, on_a, on_b) in table {
            assert_eq!(key.acts_on(&a), on_a, "{key:?} on a");
            assert_eq!(key.acts_on(&b), on_b, "{key:?} on b");
        }
    }

    #[test]
    fn revoked_and_expired_keys_are_unusable() {
        let now = Timestamp::from_secs(1000);
        let mut k = key(KeyScope::Customer, Some("acct_a"));
        assert_eq!(k.usable_at(now), Ok(()));
        k.expires_at = Some(now.plus_secs(1));
        assert_eq!(k.usable_at(now), Ok(()));
        assert_eq!(k.usable_at(now.plus_secs(1)), Err(KeyRefusal::Expired));
        k.revoked_at = Some(now);
        assert_eq!(k.usable_at(now), Err(KeyRefusal::Revoked));
    }
}
