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

/// Chains the wallets written before the hash chain existed (no head, and no entry with a
/// hash), in append order, and sets their heads. A wallet whose chain exists is never
/// rewritten here: a hash erased later is the audit's finding, not repaired. Runs at
/// start-up, under the migrations' lock; answers how many entries it chained.
pub(crate) fn chain_existing(conn: &mut Conn) -> Result<usize, diesel::result::Error> {
    use crate::schema::{accounts, ledger_entries};
    let unchained: Vec<String> = ledger_entries::table
        .filter(ledger_entries::hash.is_null())
        .select(ledger_entries::account_id)
        .distinct()
        .load(conn)?;
    let mut chained = 0;
    for account in unchained {
        let head: Option<Option<String>> = accounts::table
            .find(&account)
            .select(accounts::ledger_head)
            .first(conn)
            .optional()?;
        if !matches!(head, Some(None)) {
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
            let hash = match row.hash.clone() {
                Some(hash) => hash,
                None => {
                    let hash =
                        billing_core::audit::entry_hash(head.as_deref(), &row.chain_fields());
                    diesel::update(ledger_entries::table.find(row.seq))
                        .set(ledger_entries::hash.eq(&hash))
                        .execute(conn)?;
                    chained += 1;
                    hash
                }
            };
            head = Some(hash);
        }
        diesel::update(accounts::table.find(&account))
            .set(accounts::ledger_head.eq(head))
            .execute(conn)?;
    }
    Ok(chained)
}
