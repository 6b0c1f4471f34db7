//! The real server on port 0 against a fresh database (a SQLite file, or a PostgreSQL
//! database when `BILLING_TEST_POSTGRES_URL` is set), driven over real HTTP.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use billing_http::sandbox::SandboxGateway;
use billing_server::{Config, start};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

pub const ADMIN_KEY: &str = "bk_admin_e2e_0123456789abcdef0123456789abcdef";
pub const SANDBOX_SECRET: &str = "sandbox-e2e-secret";

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestApp {
    pub base: String,
    pub client: Client,
    /// The in-process server; `None` for a server in another process.
    pub handle: Option<actix_web::dev::ServerHandle>,
    /// The database, audited when the test is done with the server (take it to skip that,
    /// in a test that breaks the books or the database on purpose).
    pub database: Option<String>,
    /// `/metrics` on `BILLING_METRICS_LISTEN`, when the server has one.
    pub metrics_url: Option<String>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Stops the server's workers; the test runtime ends right after.
        if let Some(handle) = &self.handle {
            drop(handle.stop(false));
        }
        // Every end-to-end test ends with the audit of its books (one snapshot; writes
        // still in flight are either in it whole or not at all).
        if let Some(url) = self.database.take()
            && !std::thread::panicking()
        {
            let findings = std::thread::spawn(move || audit_database(&url))
                .join()
                .expect("the audit ran");
            assert!(findings.is_empty(), "the audit found: {findings:#?}");
        }
    }
}

/// `billing-server audit`'s findings on the database `url` (which it only reads).
pub fn audit_database(url: &str) -> Vec<String> {
    billing_store::audit_database(url)
        .expect("audit")
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// A database URL for a fresh database, or `None` (announced) when PostgreSQL is not set up.
pub fn database_url(backend: Backend, name: &str) -> Option<String> {
    match backend {
        Backend::Sqlite => {
            let dir =
                std::env::temp_dir().join(format!("billing-e2e-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            Some(
                dir.join("billing.db")
                    .to_str()
                    .expect("utf-8 path")
                    .to_owned(),
            )
        }
        Backend::Postgres => {
            let Ok(admin_url) = std::env::var("BILLING_TEST_POSTGRES_URL") else {
                assert!(
                    std::env::var("BILLING_REQUIRE_POSTGRES").is_err(),
                    "BILLING_REQUIRE_POSTGRES is set but BILLING_TEST_POSTGRES_URL is not"
                );
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "SKIPPED: PostgreSQL end-to-end test `{name}` did not run: set BILLING_TEST_POSTGRES_URL"
                );
                return None;
            };
            Some(
                billing_store::create_postgres_database(&admin_url, &format!("it_e2e_{name}"))
                    .expect("fresh PostgreSQL database"),
            )
        }
    }
}

/// Starts the service with `extra` environment on top of the test defaults.
pub async fn spawn(backend: Backend, name: &str, extra: &[(&str, &str)]) -> Option<TestApp> {
    let url = database_url(backend, name)?;
    Some(spawn_on(&url, extra).await)
}

/// Starts the service on an existing database (several servers may share one).
pub async fn spawn_on(url: &str, extra: &[(&str, &str)]) -> TestApp {
    let mut env: HashMap<String, String> = [
        ("BILLING_LISTEN", "127.0.0.1:0"),
        ("BILLING_DATABASE_URL", url),
        ("BILLING_ADMIN_KEY", ADMIN_KEY),
        ("BILLING_SANDBOX_SECRET", SANDBOX_SECRET),
        ("BILLING_RECONCILE_INTERVAL_SECS", "3600"),
        ("BILLING_WORKERS", "2"),
        ("BILLING_DB_MAX_CONNECTIONS", "8"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (k, v) in extra {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    let config = Config::from_env(&env).expect("config");
    let running = start(config).await.expect("start");
    let base = running.base_url.clone();
    let handle = running.handle();
    let metrics_url = running.metrics_url.clone();
    tokio::spawn(running.wait());
    let mut app = TestApp::at(base, Some(handle));
    app.database = Some(url.to_owned());
    app.metrics_url = metrics_url;
    app
}

/// A customer of a [`TestApp`].
#[derive(Debug, Clone)]
pub struct Customer {
    pub account_id: String,
    pub key: String,
}

impl TestApp {
    /// A client of server processes on `url`, whose books are audited when it is dropped
    /// (as for [`spawn`]'s).
    pub fn audited(base: String, url: &str) -> TestApp {
        let mut app = TestApp::at(base, None);
        app.database = Some(url.to_owned());
        app
    }

    pub fn at(base: String, handle: Option<actix_web::dev::ServerHandle>) -> TestApp {
        TestApp {
            base,
            client: Client::builder()
                .timeout(Duration::from_secs(60))
                .pool_max_idle_per_host(64)
                .build()
                .expect("client"),
            handle,
            database: None,
            metrics_url: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request; answers the status and the JSON body (`Null` when not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method, self.url(path));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str, key: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(key), None, &[]).await
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(key), Some(body), &[])
            .await
    }

    pub async fn customer(&self, name: &str) -> Customer {
        let (status, account) = self
            .post(
                "/v1/admin/accounts",
                ADMIN_KEY,
                json!({"name": name, "email": format!("{name}@example.com")}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{account}");
        let account_id = account["id"].as_str().expect("id").to_owned();
        let (status, key) = self
            .post(
                &format!("/v1/admin/accounts/{account_id}/api-keys"),
                ADMIN_KEY,
                json!({"scope": "customer"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{key}");
        Customer {
            account_id,
            key: key["key"].as_str().expect("key").to_owned(),
        }
    }

    pub async fn platform_key(&self, account_id: &str) -> String {
        let (status, key) = self
            .post(
                &format!("/v1/admin/accounts/{account_id}/api-keys"),
                ADMIN_KEY,
                json!({"scope": "platform"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{key}");
        key["key"].as_str().expect("key").to_owned()
    }

    /// A usage debit of `amount` on `account` with a fresh idempotency key; its status.
    pub async fn usage(&self, platform: &str, account: &str, amount: &str) -> StatusCode {
        let key = format!("use-{}", rand_suffix());
        self.call(
            Method::POST,
            "/v1/usage",
            Some(platform),
            Some(json!({"account_id": account, "amount": amount})),
            &[("Idempotency-Key", &key)],
        )
        .await
        .0
    }

    pub async fn grant(&self, account_id: &str, amount: &str) {
        let key = format!("grant-{}", rand_suffix());
        let (status, body) = self
            .call(
                Method::POST,
                &format!("/v1/admin/accounts/{account_id}/grants"),
                Some(ADMIN_KEY),
                Some(json!({"amount": amount, "description": "test funds"})),
                &[("Idempotency-Key", &key)],
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    /// The balance as the JSON number's exact text (`"25.50"`).
    pub async fn balance(&self, customer: &Customer) -> String {
        let (status, body) = self.get("/v1/wallet/balance", &customer.key).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["balance"].to_string()
    }

    /// Every transaction, newest first, paging with `starting_after`.
    pub async fn all_transactions(&self, customer: &Customer) -> Vec<Value> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/wallet/transactions?limit=100&starting_after={c}"),
                None => "/v1/wallet/transactions?limit=100".to_owned(),
            };
            let (status, body) = self.get(&path, &customer.key).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let page = body["transactions"].as_array().expect("array").clone();
            cursor = page
                .last()
                .map(|t| t["id"].as_str().expect("id").to_owned());
            all.extend(page);
            if !body["has_more"].as_bool().expect("has_more") {
                return all;
            }
        }
    }

    /// Starts a top-up; answers its JSON.
    pub async fn top_up(&self, customer: &Customer, body: Value) -> Value {
        let (status, topup) = self.post("/v1/wallet/top-up", &customer.key, body).await;
        assert_eq!(status, StatusCode::OK, "{topup}");
        topup
    }

    /// Visits the sandbox checkout page and presses `outcome` (`paid` or `failed`).
    pub async fn press(&self, checkout_url: &str, outcome: &str) -> String {
        let page = self
            .client
            .get(checkout_url)
            .send()
            .await
            .expect("checkout page");
        assert_eq!(page.status(), StatusCode::OK);
        let html = page.text().await.expect("html");
        assert!(html.contains("value=\"paid\"") && html.contains("value=\"failed\""));
        let response = self
            .client
            .post(checkout_url)
            .form(&[("outcome", outcome)])
            .send()
            .await
            .expect("press");
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.expect("html")
    }

    /// A sandbox notification for `topup`, signed at `timestamp` with `secret`.
    pub fn sandbox_event(&self, topup: &Value, secret: &str, timestamp: i64) -> (Vec<u8>, String) {
        let payment_ref = topup["checkout_url"]
            .as_str()
            .and_then(|u| u.rsplit('/').next())
            .expect("payment ref")
            .to_owned();
        let body = serde_json::to_vec(&json!({
            "id": format!("evt_test_{payment_ref}"),
            "type": "payment.succeeded",
            "payment_ref": payment_ref,
            "topup_id": topup["id"],
            "created": timestamp,
        }))
        .expect("json");
        let signer = SandboxGateway::new("http://unused", secret.as_bytes().to_vec());
        let signature = signer.signature(&body, timestamp);
        (body, signature)
    }

    pub async fn deliver(&self, body: Vec<u8>, signature: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .post(self.url("/webhooks/sandbox"))
            .header("content-type", "application/json")
            .header("sandbox-signature", signature)
            .body(body)
            .send()
            .await
            .expect("deliver");
        let status = response.status();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

/// A fresh suffix for idempotency keys.
pub fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn now_secs() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs(),
    )
    .expect("fits")
}

/// The sum of transaction amounts, exactly, via the decimal parser of the core.
pub fn ledger_sum(transactions: &[Value]) -> billing_core::Decimal {
    transactions
        .iter()
        .map(|t| billing_core::Decimal::from_str_exact(&t["amount"].to_string()).expect("decimal"))
        .sum()
}

pub fn dec(s: &str) -> billing_core::Decimal {
    billing_core::Decimal::from_str_exact(s).expect("decimal")
}

/// Asks `probe` every 100 ms, for up to 10 s, until it answers `want`; returns the last
/// answer (for the caller's assertion). For what a background worker settles.
pub async fn eventually<T, F>(want: &T, mut probe: impl FnMut() -> F) -> T
where
    T: PartialEq,
    F: std::future::Future<Output = T>,
{
    let mut last = probe().await;
    for _ in 0..100 {
        if &last == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = probe().await;
    }
    last
}

/// A server process that is killed (and reaped) when dropped, a failed test's included: one
/// left running holds its database connections, and the tests after it cannot connect.
pub struct Launched(pub std::process::Child);

impl std::ops::Deref for Launched {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Launched {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `command` (the server binary, stdout piped) and waits for its "listening" line;
/// answers the process and its base URL. A child that never says it is listening is killed
/// by the panic that reports it.
pub fn spawn_listening(command: &mut std::process::Command) -> (Launched, String) {
    use std::io::{BufRead, BufReader};
    let mut child = Launched(
        command
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn"),
    );
    let stdout = child.stdout.take().expect("stdout");
    let base = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| billing_server::listening_base(&l))
        .expect("listening");
    (child, base)
}

/// Starts the server binary as a child process on `url` (several may share one database);
/// answers the child and its base URL. Each keeps a small pool (4 connections, the ledger
/// writers' own on top): tests that start several run beside others on one PostgreSQL,
/// whose connection slots they share.
pub fn launch(url: &str) -> (Launched, String) {
    spawn_listening(
        std::process::Command::new(env!("CARGO_BIN_EXE_billing-server"))
            .env("BILLING_LISTEN", "127.0.0.1:0")
            .env("BILLING_DATABASE_URL", url)
            .env("BILLING_ADMIN_KEY", ADMIN_KEY)
            .env("BILLING_SANDBOX_SECRET", SANDBOX_SECRET)
            .env("BILLING_OUTBOX_INTERVAL_MS", "50")
            .env("BILLING_WORKERS", "2")
            .env("BILLING_DB_MAX_CONNECTIONS", "4")
            .env("RUST_LOG", "warn")
            .stderr(std::process::Stdio::null()),
    )
}
