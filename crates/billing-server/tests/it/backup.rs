//! Backups taken while debits are being written, then restored: `billing-server backup
//! <file>` on SQLite, and README's `pg_dump`/`pg_restore` recipe on PostgreSQL. The copy is
//! a consistent snapshot (the audit is clean, every balance is its ledger's sum), holds only
//! transactions the live database has, and serves as the database of a new server.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Backend, audit_database, dec, ledger_sum, spawn_on};

fn backup(url: &str, target: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_billing-server"))
        .args(["backup", target])
        .env("BILLING_DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("billing-server backup")
}

/// Runs a PostgreSQL client tool; one that is missing fails the test (the PostgreSQL suite
/// needs the client tools beside the server).
fn pg_tool(tool: &str, args: &[&str]) {
    let output = std::process::Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool} (PostgreSQL's client tools) could not run: {e}"));
    assert!(
        output.status.success(),
        "{tool}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

pub async fn backup_under_load_restores_exact_books(backend: Backend) {
    let Some(url) = crate::helpers::database_url(backend, "backup") else {
        return;
    };
    let app = spawn_on(&url, &[]).await;
    let ada = app.customer("ada").await;
    let platform = app.platform_key(&ada.account_id).await;
    app.grant(&ada.account_id, "100000").await;
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..8)
        .map(|n| {
            let (client, base, platform, account, stop) = (
                app.client.clone(),
                app.url(""),
                platform.clone(),
                ada.account_id.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let mut acknowledged = 0;
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let response = client
                        .post(format!("{base}/v1/usage"))
                        .bearer_auth(&platform)
                        .header("Idempotency-Key", format!("backup-{n}-{i}"))
                        .json(&json!({"account_id": account, "amount": "0.5"}))
                        .send()
                        .await
                        .expect("answered");
                    assert_eq!(response.status().as_u16(), 201);
                    acknowledged += 1;
                }
                acknowledged
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dir = match backend {
        Backend::Sqlite => std::path::Path::new(&url).parent().expect("dir").to_owned(),
        Backend::Postgres => {
            let dir = std::env::temp_dir().join(format!("billing-pgdump-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("dump dir");
            dir
        }
    };
    let file = dir.join("backup").to_str().expect("utf-8").to_owned();
    tokio::task::spawn_blocking({
        let (url, file) = (url.clone(), file.clone());
        move || match backend {
            Backend::Sqlite => {
                let taken = backup(&url, &file);
                assert!(
                    taken.status.success(),
                    "{}",
                    String::from_utf8_lossy(&taken.stderr)
                );
            }
            // README's recipe.
            Backend::Postgres => pg_tool("pg_dump", &["--format=custom", "--file", &file, &url]),
        }
    })
    .await
    .expect("backup task");
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    let mut acknowledged = 0;
    for task in load {
        acknowledged += task.await.expect("load");
    }
    let target = match backend {
        Backend::Sqlite => {
            // A backup never overwrites a file, and PostgreSQL is pg_dump's.
            let again = backup(&url, &file);
            assert!(!again.status.success());
            assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
            let postgres = backup("postgres://nobody@127.0.0.1:1/none", &format!("{file}.2"));
            assert!(String::from_utf8_lossy(&postgres.stderr).contains("pg_dump"));
            file.clone()
        }
        Backend::Postgres => {
            let admin = std::env::var("BILLING_TEST_POSTGRES_URL").expect("admin url");
            let restored = billing_store::create_postgres_database(&admin, "it_e2e_restored")
                .expect("an empty database");
            pg_tool(
                "pg_restore",
                &["--no-owner", &format!("--dbname={restored}"), &file],
            );
            restored
        }
    };

    let live: HashSet<String> = app
        .all_transactions(&ada)
        .await
        .iter()
        .filter_map(|t| t["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(live.len(), acknowledged + 1, "the grant and every debit");
    // Restore: the copy is a database of its own, with clean books.
    assert!(
        audit_database(&target).is_empty(),
        "the copy's books are clean"
    );
    let restored = spawn_on(&target, &[]).await;
    let transactions: Vec<Value> = restored.all_transactions(&ada).await;
    assert!(
        transactions.len() > 1 && transactions.len() < live.len(),
        "a snapshot taken mid-load: {} of {} transactions",
        transactions.len(),
        live.len()
    );
    for t in &transactions {
        assert!(live.contains(t["id"].as_str().expect("id")), "{t}");
    }
    assert_eq!(
        dec(&restored.balance(&ada).await),
        ledger_sum(&transactions)
    );
    eprintln!(
        "backup under load ({backend:?}): {} of {} transactions in the copy",
        transactions.len(),
        live.len()
    );
    if let Backend::Postgres = backend {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
