//! `billing-server audit` on real books: clean after real traffic, then each kind of
//! tampering done in SQL (an edited, a deleted, a reordered entry, a claim moved to another
//! account) named by the command, which exits non-zero.

use std::process::Command;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Backend, database_url, spawn_on};

/// Runs `billing-server audit`; its exit status and what it printed.
fn audit(url: &str) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_billing-server"))
        .arg("audit")
        .env("BILLING_DATABASE_URL", url)
        .env("RUST_LOG", "error")
        .output()
        .expect("billing-server audit runs");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

pub async fn audit_names_tampered_rows(backend: Backend) {
    let Some(url) = database_url(backend, "audit") else {
        return;
    };
    let mut app = spawn_on(&url, &[]).await;
    let ada = app.customer("ada").await;
    let bob = app.customer("bob").await;
    let topup = app.top_up(&ada, json!({"amount": "50.00"})).await;
    let checkout = topup["checkout_url"].as_str().expect("checkout").to_owned();
    app.press(&checkout, "paid").await;
    let platform = app.platform_key(&ada.account_id).await;
    for _ in 0..4 {
        assert!(
            app.usage(&platform, &ada.account_id, "1.25")
                .await
                .is_success()
        );
    }
    let bob_platform = app.platform_key(&bob.account_id).await;
    app.grant(&bob.account_id, "3").await;
    assert!(
        app.usage(&bob_platform, &bob.account_id, "1")
            .await
            .is_success()
    );
    assert_eq!(app.balance(&ada).await, "47.50");
    let (clean, report) = audit(&url);
    assert!(clean, "{report}");
    assert!(report.contains("the books are clean"), "{report}");
    // This test breaks the books on purpose.
    app.database = None;

    let postgres = billing_store::is_postgres_url(&url);
    // The database refuses an entry without its hash (an old build's write, or an erasure).
    let erase_ada = format!(
        "UPDATE ledger_entries SET hash = NULL WHERE account_id = '{a}'; \
         UPDATE accounts SET ledger_head = NULL WHERE id = '{a}'",
        a = ada.account_id
    );
    let refused = billing_store::execute_sql(&url, &erase_ada).expect_err("a hash is required");
    assert!(
        refused.to_string().contains(if postgres {
            "ledger_entries_hash_present"
        } else {
            "a ledger entry needs its hash"
        }),
        "{refused}"
    );

    // A database from before the hash chain (the guard's migration rolled back, ada's chain
    // erased): the audit, which only reads, refuses to judge it; the next start chains it
    // and it audits clean.
    let guard = if postgres {
        include_str!(
            "../../../../migrations/postgres/2026-12-03-000012_ledger_chain_guard/down.sql"
        )
    } else {
        include_str!("../../../../migrations/sqlite/2026-12-03-000012_ledger_chain_guard/down.sql")
    };
    billing_store::execute_sql(
        &url,
        &format!(
            "{guard}; DELETE FROM __diesel_schema_migrations WHERE version = '20261203000012'; \
             {erase_ada}"
        ),
    )
    .expect("roll the guard back and erase the chain");
    let (clean, report) = audit(&url);
    assert!(!clean, "{report}");
    assert!(report.contains("start the service on it once"), "{report}");
    assert!(!report.contains("FINDING"), "{report}");
    drop(spawn_on(&url, &[]).await);
    let (clean, report) = audit(&url);
    assert!(clean, "{report}");
    let entries = app.all_transactions(&ada).await;
    // Newest first: four usage entries, then the bonus and the top-up.
    let id = |i: usize| entries[i]["id"].as_str().expect("id").to_owned();
    let (newest, second, third, fourth) = (id(0), id(1), id(2), id(3));
    assert_eq!(entries.len(), 6);
    let sql = |statement: String| {
        billing_store::execute_sql(&url, &statement).expect("tamper");
    };

    // A description rewritten: every sum holds, the chain names the entry. An erased hash
    // is not re-chained at start-up (the wallet's chain exists): it is named too.
    sql(format!(
        "UPDATE ledger_entries SET description = 'free credits' WHERE id = '{third}'"
    ));
    let (ok, report) = audit(&url);
    assert!(!ok, "{report}");
    assert!(
        report.contains(&format!("entry {third} does not follow the hash chain")),
        "{report}"
    );
    assert!(!report.contains("says balance_after"), "{report}");
    // An erased hash (the guard dropped first, as one with the database's keys could):
    // named once, not re-chained by a restart, and the entries after it are not blamed.
    let unguard = if postgres {
        "ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_hash_present"
    } else {
        "DROP TRIGGER ledger_entries_hash_on_update"
    };
    sql(format!(
        "{unguard}; UPDATE ledger_entries SET hash = NULL WHERE id = '{second}'"
    ));
    let mut restarted = spawn_on(&url, &[]).await;
    restarted.database = None;
    drop(restarted);
    let (ok, report) = audit(&url);
    assert!(!ok);
    assert!(
        report.contains(&format!("entry {second} does not follow the hash chain")),
        "{report}"
    );
    assert_eq!(report.matches("FINDING").count(), 2, "{report}");
    assert!(!report.contains("the chain's head"), "{report}");

    // An edited amount: the running sum breaks at that entry.
    sql(format!(
        "UPDATE ledger_entries SET amount = amount + 1000 WHERE id = '{fourth}'"
    ));
    let (ok, report) = audit(&url);
    assert!(!ok, "{report}");
    assert!(
        report.contains(&format!("entry {fourth} says balance_after")),
        "{report}"
    );
    assert!(report.contains("entries sum to"), "{report}");
    sql(format!(
        "UPDATE ledger_entries SET amount = amount - 1000 WHERE id = '{fourth}'"
    ));

    // A deleted entry: the next one no longer follows.
    sql(format!("DELETE FROM ledger_entries WHERE id = '{third}'"));
    let (ok, report) = audit(&url);
    assert!(!ok);
    assert!(
        report.contains(&format!("entry {second} says balance_after")),
        "{report}"
    );

    // An entry moved in the append order (to the front of the ledger).
    sql(format!(
        "UPDATE ledger_entries SET seq = -1 WHERE id = '{newest}'"
    ));
    let (ok, report) = audit(&url);
    assert!(!ok);
    assert!(
        report.contains(&format!("entry {newest} says balance_after")),
        "{report}"
    );

    // A claim moved to another account's scope.
    let moved = billing_store::execute_sql(
        &url,
        &format!(
            "UPDATE idempotency_keys SET scope = '{}:usage' WHERE scope = '{}:usage'",
            bob.account_id, ada.account_id
        ),
    )
    .expect("move claims");
    assert!(moved > 0);
    let (ok, report) = audit(&url);
    assert!(!ok);
    assert!(
        report.contains(&format!("which belongs to {}", ada.account_id)),
        "{report}"
    );
    assert_eq!(
        app.get("/v1/wallet/balance", &bob.key).await.0,
        StatusCode::OK
    );
}
