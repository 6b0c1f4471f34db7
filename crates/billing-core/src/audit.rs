//! The audit of the books: recomputes every wallet from its ledger and checks what points
//! into it. Pure: an adapter reads the facts (in one snapshot) and hands them here.
//!
//! Facts are raw rows (amounts in ledger units, kinds and statuses as stored), so that a
//! tampered row is reported, not refused on conversion.
//!
//! Each wallet's entries form a hash chain: an entry stores
//! `hash = SHA-256(previous entry's hash ‖ canonical encoding of the entry)` ([`entry_hash`]),
//! written in the transaction that appends it, and the wallet row keeps the last one (its
//! head). An entry edited, deleted or moved breaks the chain at that place.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fmt::Write as _;

use sha2::{Digest, Sha256};

/// What an entry's hash covers: every stored field but the append order (which the chain
/// itself records).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainFields<'a> {
    /// The entry's id (`txn_…`).
    pub id: &'a str,
    /// The account whose wallet the entry is in.
    pub account_id: &'a str,
    /// The kind as stored (`topup`, `usage`, `refund`, `bonus`, `adjustment`).
    pub kind: &'a str,
    /// Signed amount in ledger units (10^-9 credits): positive credits the wallet, negative debits
    /// it.
    pub amount: i64,
    /// The wallet's balance right after this entry, in ledger units.
    pub balance_after: i64,
    /// The entry's description, as stored.
    pub description: &'a str,
    /// What the entry answers (a top-up id, a usage request id, refunded entry ids), if anything.
    pub reference: Option<&'a str>,
    /// When the entry was written, in microseconds since the Unix epoch.
    pub created_at: i64,
    /// For priced usage: the model it was charged for.
    pub usage_model: Option<&'a str>,
    /// Input and output tokens, then the prices per million they were charged at.
    pub usage: [Option<i64>; 4],
}

/// The hash of an entry that follows `previous` (`None`: the wallet's first entry), lower-case
/// hex. The encoding is unambiguous: every text is length-prefixed, an absent value is `-`.
pub fn entry_hash(previous: Option<&str>, e: &ChainFields<'_>) -> String {
    let mut canonical = String::with_capacity(256);
    canonical.push_str("billing-ledger-entry-v1\n");
    canonical.push_str(previous.unwrap_or(""));
    canonical.push('\n');
    let text = |out: &mut String, value: Option<&str>| match value {
        Some(v) => {
            let _ = writeln!(out, "{}:{v}", v.len());
        }
        None => out.push_str("-\n"),
    };
    let number = |out: &mut String, value: Option<i64>| match value {
        Some(v) => {
            let _ = writeln!(out, "{v}");
        }
        None => out.push_str("-\n"),
    };
    text(&mut canonical, Some(e.id));
    text(&mut canonical, Some(e.account_id));
    text(&mut canonical, Some(e.kind));
    number(&mut canonical, Some(e.amount));
    number(&mut canonical, Some(e.balance_after));
    text(&mut canonical, Some(e.description));
    text(&mut canonical, e.reference);
    number(&mut canonical, Some(e.created_at));
    text(&mut canonical, e.usage_model);
    for value in e.usage {
        number(&mut canonical, value);
    }
    let digest = Sha256::digest(canonical.as_bytes());
    // By table, not `write!` per byte: every entry a batch writes is hashed on the writer.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(64);
    for byte in digest.iter() {
        hex.push(char::from(DIGITS[usize::from(byte >> 4)]));
        hex.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    hex
}

/// A wallet's stored balance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletFacts {
    /// The account that owns the wallet.
    pub account_id: String,
    /// The stored balance, in ledger units (10^-9 credits).
    pub balance: i64,
    /// The hash of the wallet's last entry, as the wallet row keeps it.
    pub head: Option<String>,
}

/// A ledger row, in ledger units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryFacts {
    /// The append order.
    pub seq: i64,
    /// The entry's id.
    pub id: String,
    /// The account whose wallet the entry is in.
    pub account_id: String,
    /// The kind as stored (`topup`, `usage`, …), not parsed.
    pub kind: String,
    /// Signed amount in ledger units: positive credits the wallet, negative debits it.
    pub amount: i64,
    /// The stored balance after this entry, in ledger units (checked against the running sum).
    pub balance_after: i64,
    /// What the entry answers; for `topup` and `bonus` entries, the top-up's id.
    pub reference: Option<String>,
    /// The stored description.
    pub description: String,
    /// When the entry was written, in microseconds since the Unix epoch.
    pub created_at: i64,
    /// For priced usage: the model it was charged for.
    pub usage_model: Option<String>,
    /// Input and output tokens, then the prices per million they were charged at (ledger units).
    pub usage: [Option<i64>; 4],
    /// The stored hash of the chain.
    pub hash: Option<String>,
}

impl EntryFacts {
    /// The fields its hash covers.
    pub fn chain_fields(&self) -> ChainFields<'_> {
        ChainFields {
            id: &self.id,
            account_id: &self.account_id,
            kind: &self.kind,
            amount: self.amount,
            balance_after: self.balance_after,
            description: &self.description,
            reference: self.reference.as_deref(),
            created_at: self.created_at,
            usage_model: self.usage_model.as_deref(),
            usage: self.usage,
        }
    }
}

/// An idempotency claim: `scope` is `{account}:{operation}`, `result_ref` the comma-separated
/// ids of what the first request wrote (entries, a top-up or a hold).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimFacts {
    /// `{account}:{operation}`: the claim's account is the part before the first `:`.
    pub scope: String,
    /// The idempotency key the client sent.
    pub key: String,
    /// Comma-separated ids of what the first request wrote.
    pub result_ref: String,
}

/// A top-up's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopUpFacts {
    /// The top-up's id, which its `topup` and `bonus` entries reference.
    pub id: String,
    /// The account it credits.
    pub account_id: String,
    /// The status as stored (`pending`, `completed`, `failed`): only a completed top-up may have
    /// entries.
    pub status: String,
    /// Credits bought, in ledger units: the amount of its one `topup` entry once completed.
    pub credits: i64,
    /// Bonus credits, in ledger units: the amount of its `bonus` entry once completed (none when
    /// zero).
    pub bonus: i64,
}

/// What the audit reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditInput {
    /// Every wallet row.
    pub wallets: Vec<WalletFacts>,
    /// Every ledger row, in any order (the audit sorts them by `seq`).
    pub entries: Vec<EntryFacts>,
    /// Every idempotency claim.
    pub claims: Vec<ClaimFacts>,
    /// Every top-up row.
    pub topups: Vec<TopUpFacts>,
    /// Holds: `(id, account)`.
    pub holds: Vec<(String, String)>,
}

/// One thing wrong with the books.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The wallet's balance is not the sum of its entries.
    BalanceIsNotTheSum {
        /// The wallet's account.
        account: String,
        /// The stored balance, in ledger units.
        balance: i64,
        /// The sum of the wallet's entry amounts, in ledger units.
        sum: i64,
    },
    /// An entry's `balance_after` is not the running sum of the wallet's entries up to it
    /// (an entry before it was edited, deleted or moved, or this one was).
    RunningSumBroken {
        /// The wallet's account.
        account: String,
        /// The entry whose `balance_after` is wrong.
        entry: String,
        /// The running sum up to it, in ledger units (after an earlier break, counted from the
        /// `balance_after` that entry stated).
        expected: i64,
        /// Its stored `balance_after`, in ledger units.
        found: i64,
    },
    /// An entry took the wallet below zero.
    NegativeBalance {
        /// The wallet's account.
        account: String,
        /// The entry that left the balance below zero.
        entry: String,
        /// Its stored `balance_after` (negative), in ledger units.
        balance_after: i64,
    },
    /// An entry of an account that has no wallet.
    EntryWithoutWallet {
        /// The account the entry names.
        account: String,
        /// The entry's id.
        entry: String,
    },
    /// An idempotency claim names something that does not exist.
    ClaimPointsAtNothing {
        /// The claim's scope (`{account}:{operation}`).
        scope: String,
        /// The claim's idempotency key.
        key: String,
        /// The id in its `result_ref` that is no entry, top-up or hold.
        target: String,
    },
    /// An idempotency claim names another account's entry, top-up or hold.
    ClaimPointsAtAnotherAccount {
        /// The claim's scope (`{account}:{operation}`).
        scope: String,
        /// The claim's idempotency key.
        key: String,
        /// The id in its `result_ref`.
        target: String,
        /// The account `target` belongs to (not the scope's).
        owner: String,
    },
    /// A top-up's `topup`/`bonus` entries are not exactly what its status and amounts say.
    TopUpEntriesWrong {
        /// The top-up's id.
        topup: String,
        /// What is wrong with its entries, in words.
        problem: String,
    },
    /// An entry's stored hash is not the hash of its fields after the entry before it: the
    /// entry was edited, or one before it was deleted or moved.
    ChainBroken {
        /// The wallet's account.
        account: String,
        /// The entry that does not follow the one before it.
        entry: String,
    },
    /// The wallet's head is not the hash of its last entry (its last entries were deleted,
    /// or the head was rewritten).
    HeadMismatch {
        /// The wallet's account.
        account: String,
    },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::BalanceIsNotTheSum {
                account,
                balance,
                sum,
            } => write!(
                f,
                "wallet {account}: balance {balance} units, but its entries sum to {sum}"
            ),
            Finding::RunningSumBroken {
                account,
                entry,
                expected,
                found,
            } => write!(
                f,
                "wallet {account}: entry {entry} says balance_after {found} units, the running sum is {expected} (an entry was edited, deleted or reordered)"
            ),
            Finding::NegativeBalance {
                account,
                entry,
                balance_after,
            } => write!(
                f,
                "wallet {account}: entry {entry} leaves the balance at {balance_after} units (below zero)"
            ),
            Finding::EntryWithoutWallet { account, entry } => {
                write!(f, "entry {entry} belongs to {account}, which has no wallet")
            }
            Finding::ClaimPointsAtNothing { scope, key, target } => write!(
                f,
                "idempotency key {key:?} ({scope}) points at {target}, which does not exist"
            ),
            Finding::ClaimPointsAtAnotherAccount {
                scope,
                key,
                target,
                owner,
            } => write!(
                f,
                "idempotency key {key:?} ({scope}) points at {target}, which belongs to {owner}"
            ),
            Finding::TopUpEntriesWrong { topup, problem } => write!(f, "top-up {topup}: {problem}"),
            Finding::ChainBroken { account, entry } => write!(
                f,
                "wallet {account}: entry {entry} does not follow the hash chain (edited, or an entry before it was deleted or moved)"
            ),
            Finding::HeadMismatch { account } => write!(
                f,
                "wallet {account}: the chain's head is not its last entry's hash (its last entries were deleted or the head rewritten)"
            ),
        }
    }
}

/// Every finding, wallets in id order, entries in append order.
pub fn audit(input: &AuditInput) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut entries: Vec<&EntryFacts> = input.entries.iter().collect();
    entries.sort_by_key(|e| e.seq);
    let mut by_account: BTreeMap<&str, Vec<&EntryFacts>> = BTreeMap::new();
    for e in &entries {
        by_account.entry(e.account_id.as_str()).or_default().push(e);
    }
    let wallets: BTreeMap<&str, i64> = input
        .wallets
        .iter()
        .map(|w| (w.account_id.as_str(), w.balance))
        .collect();
    let heads: BTreeMap<&str, Option<&str>> = input
        .wallets
        .iter()
        .map(|w| (w.account_id.as_str(), w.head.as_deref()))
        .collect();
    for (account, balance) in &wallets {
        findings.extend(chain_findings(
            account,
            heads.get(account).copied().flatten(),
            by_account
                .get(account)
                .map(Vec::as_slice)
                .unwrap_or_default(),
        ));
        let mut running: i64 = 0;
        for e in by_account
            .get(account)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            running = running.saturating_add(e.amount);
            if e.balance_after != running {
                findings.push(Finding::RunningSumBroken {
                    account: (*account).to_owned(),
                    entry: e.id.clone(),
                    expected: running,
                    found: e.balance_after,
                });
                // Later entries are judged against what this one says, so one tampered row
                // is one finding, not one per row after it.
                running = e.balance_after;
            }
            if e.balance_after < 0 {
                findings.push(Finding::NegativeBalance {
                    account: (*account).to_owned(),
                    entry: e.id.clone(),
                    balance_after: e.balance_after,
                });
            }
        }
        let sum = by_account.get(account).map_or(0, |es| {
            es.iter().fold(0i64, |s, e| s.saturating_add(e.amount))
        });
        if sum != *balance {
            findings.push(Finding::BalanceIsNotTheSum {
                account: (*account).to_owned(),
                balance: *balance,
                sum,
            });
        }
    }
    for (account, es) in &by_account {
        if !wallets.contains_key(account) {
            for e in es {
                findings.push(Finding::EntryWithoutWallet {
                    account: (*account).to_owned(),
                    entry: e.id.clone(),
                });
            }
        }
    }
    // Whose is each id a claim may name.
    let mut owner: HashMap<&str, &str> = HashMap::new();
    for e in &entries {
        owner.insert(e.id.as_str(), e.account_id.as_str());
    }
    for t in &input.topups {
        owner.insert(t.id.as_str(), t.account_id.as_str());
    }
    for (id, account) in &input.holds {
        owner.insert(id.as_str(), account.as_str());
    }
    for c in &input.claims {
        let account = c.scope.split(':').next().unwrap_or_default();
        for target in c.result_ref.split(',').filter(|t| !t.is_empty()) {
            match owner.get(target) {
                None => findings.push(Finding::ClaimPointsAtNothing {
                    scope: c.scope.clone(),
                    key: c.key.clone(),
                    target: target.to_owned(),
                }),
                Some(o) if *o != account => findings.push(Finding::ClaimPointsAtAnotherAccount {
                    scope: c.scope.clone(),
                    key: c.key.clone(),
                    target: target.to_owned(),
                    owner: (*o).to_owned(),
                }),
                Some(_) => {}
            }
        }
    }
    findings.extend(topup_findings(&input.topups, &entries));
    findings
}

/// The chain of one wallet's entries (in append order) and its head. One tampered row is
/// one finding: after an entry that does not follow, the next is judged against both the
/// hash stored before it (the entry's fields were edited) and the hash recomputed for it
/// (its hash was erased or rewritten).
fn chain_findings(account: &str, head: Option<&str>, entries: &[&EntryFacts]) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut previous: Option<String> = None;
    let mut recomputed: Option<String> = None;
    for e in entries {
        let expected = entry_hash(previous.as_deref(), &e.chain_fields());
        let follows = e.hash.as_deref() == Some(expected.as_str())
            || recomputed.as_deref().is_some_and(|r| {
                e.hash.as_deref() == Some(entry_hash(Some(r), &e.chain_fields()).as_str())
            });
        if !follows {
            findings.push(Finding::ChainBroken {
                account: account.to_owned(),
                entry: e.id.clone(),
            });
        }
        (previous, recomputed) = match &e.hash {
            Some(stored) if !follows => (Some(stored.clone()), Some(expected)),
            Some(stored) => (Some(stored.clone()), None),
            None => (Some(expected), None),
        };
    }
    let head_follows =
        head == previous.as_deref() || recomputed.is_some() && head == recomputed.as_deref();
    if !head_follows {
        findings.push(Finding::HeadMismatch {
            account: account.to_owned(),
        });
    }
    findings
}

/// A completed top-up has exactly one `topup` entry of its credits and, with a bonus,
/// exactly one `bonus` entry of it, both on its account; any other top-up has none.
fn topup_findings(topups: &[TopUpFacts], entries: &[&EntryFacts]) -> Vec<Finding> {
    let mut credited: HashMap<&str, Vec<&EntryFacts>> = HashMap::new();
    for e in entries {
        if (e.kind == "topup" || e.kind == "bonus")
            && let Some(reference) = &e.reference
        {
            credited.entry(reference.as_str()).or_default().push(e);
        }
    }
    let mut findings = Vec::new();
    for t in topups {
        let mine = credited
            .get(t.id.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default();
        let wrong = |problem: String| Finding::TopUpEntriesWrong {
            topup: t.id.clone(),
            problem,
        };
        if let Some(e) = mine.iter().find(|e| e.account_id != t.account_id) {
            findings.push(wrong(format!(
                "entry {} credits {} instead of {}",
                e.id, e.account_id, t.account_id
            )));
        }
        let amounts = |kind: &str| -> Vec<i64> {
            mine.iter()
                .filter(|e| e.kind == kind)
                .map(|e| e.amount)
                .collect()
        };
        let (topup, bonus) = (amounts("topup"), amounts("bonus"));
        if t.status == "completed" {
            if topup != [t.credits] {
                findings.push(wrong(format!(
                    "completed with {} credits, but its topup entries are {topup:?}",
                    t.credits
                )));
            }
            let want: Vec<i64> = if t.bonus > 0 {
                vec![t.bonus]
            } else {
                Vec::new()
            };
            if bonus != want {
                findings.push(wrong(format!(
                    "completed with a bonus of {}, but its bonus entries are {bonus:?}",
                    t.bonus
                )));
            }
        } else if !mine.is_empty() {
            findings.push(wrong(format!(
                "{} but credited by {} entries",
                t.status,
                mine.len()
            )));
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: i64, account: &str, kind: &str, amount: i64, after: i64) -> EntryFacts {
        EntryFacts {
            seq,
            id: format!("e{seq}"),
            account_id: account.to_owned(),
            kind: kind.to_owned(),
            amount,
            balance_after: after,
            reference: None,
            description: format!("entry {seq}"),
            created_at: seq * 1_000_000,
            usage_model: None,
            usage: [None; 4],
            hash: None,
        }
    }

    /// Chains every wallet's entries (in seq order) and sets the heads, as the writers do.
    fn chain(books: &mut AuditInput) {
        books.entries.sort_by_key(|e| e.seq);
        let mut heads: HashMap<String, String> = HashMap::new();
        for e in &mut books.entries {
            let hash = entry_hash(
                heads.get(&e.account_id).map(String::as_str),
                &e.chain_fields(),
            );
            e.hash = Some(hash.clone());
            heads.insert(e.account_id.clone(), hash);
        }
        for w in &mut books.wallets {
            w.head = heads.get(&w.account_id).cloned();
        }
    }

    fn books() -> AuditInput {
        let mut topup = entry(1, "a", "topup", 500, 500);
        topup.reference = Some("top_1".into());
        let mut bonus = entry(2, "a", "bonus", 25, 525);
        bonus.reference = Some("top_1".into());
        let mut books = AuditInput {
            wallets: vec![
                WalletFacts {
                    account_id: "a".into(),
                    balance: 425,
                    head: None,
                },
                WalletFacts {
                    account_id: "b".into(),
                    balance: 0,
                    head: None,
                },
            ],
            entries: vec![topup, bonus, entry(3, "a", "usage", -100, 425)],
            claims: vec![ClaimFacts {
                scope: "a:usage".into(),
                key: "k1".into(),
                result_ref: "e3".into(),
            }],
            topups: vec![TopUpFacts {
                id: "top_1".into(),
                account_id: "a".into(),
                status: "completed".into(),
                credits: 500,
                bonus: 25,
            }],
            holds: vec![],
        };
        chain(&mut books);
        books
    }

    #[test]
    fn clean_books_have_no_findings() {
        assert_eq!(audit(&books()), vec![]);
    }

    #[test]
    fn the_chain_names_an_edit_that_keeps_the_sums() {
        // A description rewritten: every sum still holds, only the chain sees it.
        let mut edited = books();
        edited.entries[2].description = "refund".into();
        assert_eq!(
            audit(&edited),
            vec![Finding::ChainBroken {
                account: "a".into(),
                entry: "e3".into(),
            }]
        );
        // The last entry deleted with the balance made consistent: the head no longer
        // matches.
        let mut truncated = books();
        truncated.entries.pop();
        truncated.wallets[0].balance = 525;
        truncated.claims.clear();
        assert_eq!(
            audit(&truncated),
            vec![Finding::HeadMismatch {
                account: "a".into()
            }]
        );
    }

    #[test]
    fn an_erased_or_rewritten_hash_is_one_finding() {
        let broken = |entry: &str| {
            vec![Finding::ChainBroken {
                account: "a".into(),
                entry: entry.into(),
            }]
        };
        for tamper in [None, Some("0".repeat(64))] {
            // In the middle: the entry after it still follows its true hash.
            let mut books = books();
            books.entries[1].hash = tamper.clone();
            assert_eq!(audit(&books), broken("e2"), "{tamper:?}");
            // The last: the head is still its true hash.
            let mut books = self::books();
            books.entries[2].hash = tamper.clone();
            assert_eq!(audit(&books), broken("e3"), "{tamper:?}");
        }
    }

    #[test]
    fn findings_come_wallet_by_wallet_in_id_order() {
        let mut books = books();
        books.wallets.reverse();
        // b's head names no entry; a's second entry was edited.
        books.wallets[0].head = Some("0".repeat(64));
        books.entries[1].description = "edited".into();
        let accounts: Vec<String> = audit(&books)
            .iter()
            .map(|f| match f {
                Finding::ChainBroken { account, .. } | Finding::HeadMismatch { account } => {
                    account.clone()
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(accounts, vec!["a".to_owned(), "b".to_owned()]);
    }

    #[test]
    fn a_hash_is_the_sha256_of_the_documented_encoding() {
        // Computed outside this code (Python's hashlib over the encoding the module
        // documents): stored chains stay verifiable whatever this function's code becomes.
        let fields = ChainFields {
            id: "txn_1",
            account_id: "acc_1",
            kind: "usage",
            amount: -5,
            balance_after: 0,
            description: "call",
            reference: None,
            created_at: 1_700_000_000_000_000,
            usage_model: Some("gpt-x"),
            usage: [Some(10), Some(20), None, None],
        };
        assert_eq!(
            entry_hash(Some("prev"), &fields),
            "0cb489cef256ce9dbc02dba94770414b2b5d24e86cc53567024f26e8c8f491e2"
        );
    }

    #[test]
    fn hashes_are_stable_and_cover_every_field() {
        let e = entry(1, "a", "usage", -5, 0);
        let base = entry_hash(None, &e.chain_fields());
        assert_eq!(base.len(), 64);
        assert_eq!(base, entry_hash(None, &e.chain_fields()));
        assert_ne!(base, entry_hash(Some(&base), &e.chain_fields()));
        let mut other = e.clone();
        other.usage[3] = Some(0);
        assert_ne!(base, entry_hash(None, &other.chain_fields()));
        let mut other = e.clone();
        other.reference = Some(String::new());
        assert_ne!(
            base,
            entry_hash(None, &other.chain_fields()),
            "absent is not empty"
        );
    }

    #[test]
    fn an_edited_entry_is_named() {
        let mut books = books();
        books.entries[1].amount = 30;
        let findings = audit(&books);
        assert!(findings.contains(&Finding::RunningSumBroken {
            account: "a".into(),
            entry: "e2".into(),
            expected: 530,
            found: 525,
        }));
        assert!(findings.contains(&Finding::BalanceIsNotTheSum {
            account: "a".into(),
            balance: 425,
            sum: 430,
        }));
        assert!(
            findings
                .iter()
                .any(|f| matches!(f, Finding::TopUpEntriesWrong { .. }))
        );
    }

    #[test]
    fn a_deleted_or_reordered_entry_is_named() {
        let mut deleted = books();
        deleted.entries.remove(1);
        assert!(audit(&deleted).contains(&Finding::RunningSumBroken {
            account: "a".into(),
            entry: "e3".into(),
            expected: 400,
            found: 425,
        }));
        let mut reordered = books();
        reordered.entries[2].seq = 0;
        let findings = audit(&reordered);
        assert!(findings.contains(&Finding::RunningSumBroken {
            account: "a".into(),
            entry: "e3".into(),
            expected: -100,
            found: 425,
        }));
    }

    #[test]
    fn claims_and_topups_point_at_their_own_account() {
        let mut books = books();
        books.claims.push(ClaimFacts {
            scope: "b:usage".into(),
            key: "k2".into(),
            result_ref: "e3".into(),
        });
        books.claims.push(ClaimFacts {
            scope: "a:usage".into(),
            key: "k3".into(),
            result_ref: "e9".into(),
        });
        books.topups.push(TopUpFacts {
            id: "top_2".into(),
            account_id: "a".into(),
            status: "pending".into(),
            credits: 100,
            bonus: 0,
        });
        books.entries[1].reference = Some("top_2".into());
        let findings = audit(&books);
        let text: Vec<String> = findings.iter().map(ToString::to_string).collect();
        assert!(
            text.iter()
                .any(|t| t.contains("k2") && t.contains("belongs to a")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("e9") && t.contains("does not exist"))
        );
        assert!(
            text.iter()
                .any(|t| t.starts_with("top-up top_2: pending but credited"))
        );
        assert!(
            text.iter()
                .any(|t| t.starts_with("top-up top_1: completed with a bonus"))
        );
    }

    #[test]
    fn a_negative_balance_and_an_orphan_entry_are_named() {
        let mut books = books();
        books.entries.push(entry(4, "a", "usage", -500, -75));
        books.wallets[0].balance = -75;
        books.entries.push(entry(5, "ghost", "bonus", 5, 5));
        let findings = audit(&books);
        assert!(findings.contains(&Finding::NegativeBalance {
            account: "a".into(),
            entry: "e4".into(),
            balance_after: -75,
        }));
        assert!(findings.contains(&Finding::EntryWithoutWallet {
            account: "ghost".into(),
            entry: "e5".into(),
        }));
    }
}
