// `include!`d by `sqlite.rs` and `postgres.rs` (each gives `Conn` and `audit_snapshot`, which
// runs `audit_load` inside one read-only snapshot of its backend).

/// Every fact the audit reads: wallets, entries, idempotency claims, top-ups and holds.
fn audit_load(
    conn: &mut Conn,
) -> Result<billing_core::audit::AuditInput, diesel::result::Error> {
    use billing_core::audit::{AuditInput, ClaimFacts, EntryFacts, TopUpFacts, WalletFacts};
    use crate::schema::{accounts, holds, idempotency_keys, ledger_entries, topups};
    let wallets = accounts::table
        .select((accounts::id, accounts::balance, accounts::ledger_head))
        .load::<(String, i64, Option<String>)>(conn)?
        .into_iter()
        .map(|(account_id, balance, head)| WalletFacts {
            account_id,
            balance,
            head,
        })
        .collect();
    let entries = ledger_entries::table
        .order(ledger_entries::seq.asc())
        .select(AuditEntryRow::as_select())
        .load::<AuditEntryRow>(conn)?
        .into_iter()
        .map(EntryFacts::from)
        .collect();
    let claims = idempotency_keys::table
        .select((
            idempotency_keys::scope,
            idempotency_keys::key,
            idempotency_keys::result_ref,
        ))
        .load::<(String, String, String)>(conn)?
        .into_iter()
        .map(|(scope, key, result_ref)| ClaimFacts {
            scope,
            key,
            result_ref,
        })
        .collect();
    let topups = topups::table
        .select((
            topups::id,
            topups::account_id,
            topups::status,
            topups::credits,
            topups::bonus,
        ))
        .load::<(String, String, String, i64, i64)>(conn)?
        .into_iter()
        .map(|(id, account_id, status, credits, bonus)| TopUpFacts {
            id,
            account_id,
            status,
            credits,
            bonus,
        })
        .collect();
    let holds = holds::table
        .select((holds::id, holds::account_id))
        .load::<(String, String)>(conn)?;
    Ok(AuditInput {
        wallets,
        entries,
        claims,
        topups,
        holds,
    })
}

/// The creation time (microseconds) of the last entry appended, if any: one read down the
/// primary key, not a scan of every entry's time.
pub(crate) fn newest_entry_micros(conn: &mut Conn) -> Result<Option<i64>, StoreError> {
    use crate::schema::ledger_entries;
    ledger_entries::table
        .order(ledger_entries::seq.desc())
        .select(ledger_entries::created_at)
        .first::<i64>(conn)
        .optional()
        .map_err(db_err)
}

/// Whether the wallets from before the hash chain have been chained. After that, start-up
/// never chains a wallet again (an erased chain is the audit's finding).
pub(crate) fn chain_backfilled(conn: &mut Conn) -> Result<bool, diesel::result::Error> {
    use crate::schema::ledger_chain_backfill;
    ledger_chain_backfill::table
        .count()
        .get_result::<i64>(conn)
        .map(|n| n > 0)
}

/// Entries hashed by the backfill, written per statement.
const BACKFILL_ROWS_PER_WRITE: usize = 5_000;

/// Chains the wallets written before the hash chain existed (no head, and no entry with a
/// hash), in append order, sets their heads, and records that it is done: it runs once per
/// database, at start-up under the migrations' lock, and each wallet is chained under its
/// row lock (a writer of an older build that chains never interleaves). A wallet whose
/// chain exists, or any wallet once this has run, is never rewritten here: a hash erased
/// later is the audit's finding, not repaired. Answers how many entries it chained.
pub(crate) fn chain_existing(conn: &mut Conn) -> Result<usize, diesel::result::Error> {
    use crate::schema::{accounts, ledger_chain_backfill, ledger_entries};
    if chain_backfilled(conn)? {
        return Ok(0);
    }
    let unchained: Vec<String> = ledger_entries::table
        .filter(ledger_entries::hash.is_null())
        .select(ledger_entries::account_id)
        .distinct()
        .load(conn)?;
    let mut hashed: Vec<(i64, String)> = Vec::new();
    let mut chained = 0;
    for account in unchained {
        if lock_account(conn, &billing_core::ids::AccountId::new(account.as_str()))?.is_none() {
            continue;
        }
        let head: Option<String> = accounts::table
            .find(&account)
            .select(accounts::ledger_head)
            .exactly_one(conn)?;
        if head.is_some() {
            continue;
        }
        let rows: Vec<billing_core::audit::EntryFacts> = ledger_entries::table
            .filter(ledger_entries::account_id.eq(&account))
            .order(ledger_entries::seq.asc())
            .select(AuditEntryRow::as_select())
            .load::<AuditEntryRow>(conn)?
            .into_iter()
            .map(billing_core::audit::EntryFacts::from)
            .collect();
        if rows.iter().any(|r| r.hash.is_some()) {
            continue;
        }
        let mut head: Option<String> = None;
        for row in rows {
            let hash = billing_core::audit::entry_hash(head.as_deref(), &row.chain_fields());
            hashed.push((row.seq, hash.clone()));
            head = Some(hash);
        }
        if hashed.len() >= BACKFILL_ROWS_PER_WRITE {
            chained += hashed.len();
            set_hashes(conn, &std::mem::take(&mut hashed))?;
        }
        diesel::update(accounts::table.find(&account))
            .set(accounts::ledger_head.eq(head))
            .execute(conn)?;
    }
    chained += hashed.len();
    set_hashes(conn, &hashed)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    diesel::insert_into(ledger_chain_backfill::table)
        .values((
            ledger_chain_backfill::id.eq(1),
            ledger_chain_backfill::finished_at.eq(now),
        ))
        .execute(conn)?;
    Ok(chained)
}
