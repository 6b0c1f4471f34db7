// `include!`d by `sqlite.rs` and `postgres.rs` (each gives `Conn` and `audit_snapshot`, which
// runs `audit_load` inside one read-only snapshot of its backend).

/// Every fact the audit reads: wallets, entries, idempotency claims, top-ups and holds.
fn audit_load(
    conn: &mut Conn,
) -> Result<billing_core::audit::AuditInput, diesel::result::Error> {
    use billing_core::audit::{AuditInput, ClaimFacts, EntryFacts, TopUpFacts, WalletFacts};
    use crate::schema::{accounts, holds, idempotency_keys, ledger_entries, topups};
    let wallets = accounts::table
        .select((accounts::id, accounts::balance))
        .load::<(String, i64)>(conn)?
        .into_iter()
        .map(|(account_id, balance)| WalletFacts { account_id, balance })
        .collect();
    let entries = ledger_entries::table
        .order(ledger_entries::seq.asc())
        .select((
            ledger_entries::seq,
            ledger_entries::id,
            ledger_entries::account_id,
            ledger_entries::kind,
            ledger_entries::amount,
            ledger_entries::balance_after,
            ledger_entries::reference,
        ))
        .load::<(i64, String, String, String, i64, i64, Option<String>)>(conn)?
        .into_iter()
        .map(
            |(seq, id, account_id, kind, amount, balance_after, reference)| EntryFacts {
                seq,
                id,
                account_id,
                kind,
                amount,
                balance_after,
                reference,
            },
        )
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
