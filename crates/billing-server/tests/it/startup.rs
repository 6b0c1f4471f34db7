//! Processes started together on one fresh database (a rolling deploy, an autoscaler): all
//! of them start; the migrations and a new `BILLING_ADMIN_KEY` are applied once.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};

use reqwest::StatusCode;

use crate::helpers::{Backend, TestApp};

const PROCESSES: usize = 3;
const ROUNDS: usize = 10;

/// Waits for the process to print its address (`Ok`), or to exit (`Err` with its stderr).
fn started(child: &mut Child) -> Result<String, String> {
    let stdout = child.stdout.take().expect("stdout");
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| e.to_string())?;
        if let Some(url) = billing_server::listening_base(&line) {
            return Ok(url);
        }
    }
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    Err(stderr)
}

fn database(backend: Backend, round: usize) -> Option<String> {
    match backend {
        Backend::Sqlite => {
            let dir = std::env::temp_dir().join(format!(
                "billing-e2e-{}-startup-{round}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            Some(dir.join("billing.db").to_str().expect("utf-8").to_owned())
        }
        Backend::Postgres => {
            let admin = std::env::var("BILLING_TEST_POSTGRES_URL").ok()?;
            Some(
                billing_store::create_postgres_database(&admin, &format!("it_startup_{round}"))
                    .expect("fresh database"),
            )
        }
    }
}

pub async fn processes_start_together(backend: Backend) {
    if matches!(backend, Backend::Postgres) && std::env::var("BILLING_TEST_POSTGRES_URL").is_err() {
        assert!(
            std::env::var("BILLING_REQUIRE_POSTGRES").is_err(),
            "BILLING_REQUIRE_POSTGRES is set but BILLING_TEST_POSTGRES_URL is not"
        );
        eprintln!(
            "SKIPPED: PostgreSQL start-up race test did not run: set BILLING_TEST_POSTGRES_URL"
        );
        return;
    }
    for round in 0..ROUNDS {
        let url = database(backend, round).expect("database");
        // A key new to the database every round: each process checks, then inserts it.
        let admin_key = format!("bk_admin_startup_race_{round}_0123456789abcdef0123456789");
        let mut children: Vec<Child> = (0..PROCESSES)
            .map(|_| {
                Command::new(env!("CARGO_BIN_EXE_billing-server"))
                    .env("BILLING_LISTEN", "127.0.0.1:0")
                    .env("BILLING_DATABASE_URL", &url)
                    .env("BILLING_ADMIN_KEY", &admin_key)
                    .env("BILLING_WORKERS", "1")
                    .env("BILLING_DB_MAX_CONNECTIONS", "2")
                    .env("RUST_LOG", "warn")
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn")
            })
            .collect();
        let outcomes: Vec<Result<String, String>> = children.iter_mut().map(started).collect();
        for child in &mut children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let mut bases = Vec::new();
        for (i, outcome) in outcomes.into_iter().enumerate() {
            match outcome {
                Ok(base) => bases.push(base),
                Err(stderr) => panic!("round {round}: process {i} did not start:\n{stderr}"),
            }
        }
        assert_eq!(bases.len(), PROCESSES);
        // One admin key, whichever process inserted it: it works, and is listed once.
        let listed = {
            let child = Command::new(env!("CARGO_BIN_EXE_billing-server"))
                .env("BILLING_LISTEN", "127.0.0.1:0")
                .env("BILLING_DATABASE_URL", &url)
                .env("BILLING_ADMIN_KEY", &admin_key)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn();
            let mut child = child.expect("spawn");
            let base = started(&mut child).expect("a later start");
            let app = TestApp::at(base, None);
            let (status, keys) = app.get("/v1/admin/api-keys?limit=100", &admin_key).await;
            let _ = child.kill();
            let _ = child.wait();
            assert_eq!(status, StatusCode::OK, "{keys}");
            keys["api_keys"].as_array().expect("keys").len()
        };
        assert_eq!(listed, 1, "round {round}");
    }
}

/// `/readyz` answers 200 while the database serves every migration this build has, and 503
/// (with `/healthz`) once the database is gone (PostgreSQL: dropped under the server).
pub async fn readiness_follows_the_database(backend: Backend) {
    let Some(mut app) = crate::helpers::spawn(backend, "readiness", &[]).await else {
        return;
    };
    let (status, body) = app
        .call(reqwest::Method::GET, "/readyz", None, None, &[])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        serde_json::json!({"status": "ready", "storage": "ok"})
    );
    let Backend::Postgres = backend else {
        return;
    };
    // The database is dropped below: nothing is left to audit.
    app.database = None;
    let admin = std::env::var("BILLING_TEST_POSTGRES_URL").expect("admin url");
    let dropped = Command::new("psql")
        .arg(&admin)
        .arg("-qtAc")
        .arg(format!(
            "DROP DATABASE it_e2e_readiness_{} WITH (FORCE)",
            std::process::id()
        ))
        .status()
        .expect("psql");
    assert!(dropped.success());
    let (status, body) = app
        .call(reqwest::Method::GET, "/readyz", None, None, &[])
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "not_ready");
    let (status, _) = app
        .call(reqwest::Method::GET, "/healthz", None, None, &[])
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

/// A clock far behind the newest ledger entry refuses to start (its entries would be dated
/// before ones already written); within the tolerance it starts.
pub async fn a_clock_far_behind_the_ledger_refuses_to_start(backend: Backend) {
    let Some(url) = crate::helpers::database_url(backend, "clock") else {
        return;
    };
    let mut app = crate::helpers::spawn_on(&url, &[]).await;
    let ada = app.customer("ada").await;
    app.grant(&ada.account_id, "5").await;
    // Dating the entry ahead breaks its hash on purpose: no audit of these books.
    app.database = None;
    drop(app);
    let launch = || {
        Command::new(env!("CARGO_BIN_EXE_billing-server"))
            .env("BILLING_DATABASE_URL", &url)
            .env("BILLING_LISTEN", "127.0.0.1:0")
            .env("BILLING_ADMIN_KEY", crate::helpers::ADMIN_KEY)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    // Two minutes ahead: within the tolerance, it starts.
    billing_store::execute_sql(
        &url,
        "UPDATE ledger_entries SET created_at = created_at + 120000000",
    )
    .expect("date ahead");
    let mut child = launch();
    let result = started(&mut child);
    let _ = child.kill();
    let _ = child.wait();
    assert!(result.is_ok(), "{result:?}");
    // An hour ahead: refused, with the reason.
    billing_store::execute_sql(
        &url,
        "UPDATE ledger_entries SET created_at = created_at + 3600000000",
    )
    .expect("date ahead");
    let mut child = launch();
    let result = started(&mut child);
    let status = child.wait().expect("exit");
    let stderr = result.expect_err("a server with a clock an hour behind started");
    assert!(!status.success());
    assert!(
        stderr.contains("behind the newest ledger entry"),
        "{stderr}"
    );
}
