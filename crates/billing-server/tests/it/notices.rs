//! Low-balance alerts, notifications and signed events, end to end: a real SMTP server
//! (Debian's `python3-aiosmtpd`, writing a Maildir) and a local HTTP receiver that checks
//! every signature; a server killed with `kill -9` between a debit's commit and its email.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{ADMIN_KEY, Backend, Customer, TestApp, dec, now_secs, spawn};

const EVENTS_SECRET: &str = "whsec_events_e2e";

/// A real SMTP server on 127.0.0.1 writing each message to a Maildir.
pub struct Smtp {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The Python that has aiosmtpd (Debian's, installed by `.ci/run`), or `None` (announced)
/// when there is none and `BILLING_REQUIRE_SMTP` is not set.
fn smtp_python(test: &str) -> Option<&'static str> {
    for python in ["/usr/bin/python3", "python3"] {
        let ok = Command::new(python)
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(python);
        }
    }
    assert!(
        std::env::var("BILLING_REQUIRE_SMTP").is_err(),
        "BILLING_REQUIRE_SMTP is set but no python3 has aiosmtpd (apt-get install python3-aiosmtpd)"
    );
    eprintln!(
        "SKIPPED: SMTP test `{test}` did not run: no python3 with aiosmtpd (apt-get install python3-aiosmtpd)"
    );
    None
}

impl Smtp {
    pub fn start(test: &str) -> Option<Smtp> {
        let python = smtp_python(test)?;
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("billing-smtp-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut child = Command::new(python)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("aiosmtpd");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(Smtp { child, port, dir });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("aiosmtpd did not listen on {port}");
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message received so far, as text.
    pub fn messages(&self) -> Vec<String> {
        let mut all = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(self.dir.join(sub)) else {
                continue;
            };
            for entry in entries.flatten() {
                if let Ok(text) = std::fs::read_to_string(entry.path()) {
                    all.push(text);
                }
            }
        }
        all
    }
}

/// One request the receiver saw: its `Billing-Signature` header, body, and the answer given.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub signature: String,
    pub body: String,
    pub answered: u16,
}

/// A local event receiver: answers 500 to its first `fail_first` requests, then 200.
pub struct Receiver {
    pub url: String,
    pub seen: Arc<Mutex<Vec<Delivery>>>,
    handle: actix_web::dev::ServerHandle,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

impl Receiver {
    pub fn start(fail_first: usize) -> Receiver {
        let seen: Arc<Mutex<Vec<Delivery>>> = Arc::default();
        let state = seen.clone();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/events", listener.local_addr().expect("addr"));
        let server = HttpServer::new(move || {
            let state = state.clone();
            App::new().route(
                "/events",
                web::post().to(move |req: HttpRequest, body: web::Bytes| {
                    let state = state.clone();
                    async move {
                        let mut seen = state.lock().expect("lock");
                        let answered = if seen.len() < fail_first { 500 } else { 200 };
                        seen.push(Delivery {
                            signature: req
                                .headers()
                                .get("Billing-Signature")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned(),
                            body: String::from_utf8_lossy(&body).into_owned(),
                            answered,
                        });
                        HttpResponse::build(
                            actix_web::http::StatusCode::from_u16(answered).expect("status"),
                        )
                        .finish()
                    }
                }),
            )
        })
        .workers(1)
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Receiver { url, seen, handle }
    }

    /// The events accepted (answered 200), each checked: the signature verifies against the
    /// body with the shared secret and a fresh timestamp.
    pub fn accepted(&self) -> Vec<Value> {
        let seen = self.seen.lock().expect("lock").clone();
        seen.iter()
            .filter(|d| d.answered == 200)
            .map(|d| {
                assert!(
                    billing_notify::verify(
                        EVENTS_SECRET.as_bytes(),
                        &d.signature,
                        &d.body,
                        now_secs(),
                        300
                    ),
                    "signature {} does not verify",
                    d.signature
                );
                serde_json::from_str(&d.body).expect("event json")
            })
            .collect()
    }

    pub fn of_type(&self, kind: &str) -> Vec<Value> {
        self.accepted()
            .into_iter()
            .filter(|e| e["type"] == kind)
            .collect()
    }
}

async fn put_alert(app: &TestApp, customer: &Customer, body: Value) -> (StatusCode, Value) {
    app.call(
        Method::PUT,
        "/v1/wallet/low-balance-alert",
        Some(&customer.key),
        Some(body),
        &[],
    )
    .await
}

/// Waits (up to 15 s) until `probe` reaches `want` items.
async fn wait_for<T>(want: usize, mut probe: impl FnMut() -> Vec<T>) -> Vec<T> {
    for _ in 0..150 {
        let got = probe();
        if got.len() >= want {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    probe()
}

fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
}

/// The alert: validated settings; racing debits across the threshold send exactly one
/// email and one `balance.low` event; back above the threshold re-arms it; events carry
/// valid signatures and stable ids.
pub async fn low_balance_alert_emails_once_per_crossing(backend: Backend) {
    let Some(smtp) = Smtp::start(&format!("alert-{backend:?}")) else {
        return;
    };
    let receiver = Receiver::start(0);
    let smtp_url = smtp.url();
    let Some(app) = spawn(
        backend,
        "low_balance_alert",
        &[
            ("BILLING_SMTP_URL", smtp_url.as_str()),
            ("BILLING_EMAIL_FROM", "Billing <billing@example.com>"),
            ("BILLING_EVENTS_URL", receiver.url.as_str()),
            ("BILLING_EVENTS_SECRET", EVENTS_SECRET),
            ("BILLING_OUTBOX_RETRY_BASE_SECS", "1"),
            ("BILLING_OUTBOX_INTERVAL_MS", "100"),
            ("BILLING_PUBLIC_URL", "https://billing.example"),
        ],
    )
    .await
    else {
        return;
    };
    let customer = app.customer("alerted").await;
    let platform = app.platform_key(&customer.account_id).await;

    // Settings: disabled with a null threshold before any PUT; every field validated.
    let (status, body) = app.get("/v1/wallet/low-balance-alert", &customer.key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"low_balance_alert": {"enabled": false, "threshold": null}})
    );
    for (bad, names) in [
        (
            json!({"low_balance_alert": {"enabled": true, "threshold": -1}}),
            "threshold",
        ),
        (
            json!({"low_balance_alert": {"enabled": true, "threshold": 0}}),
            "threshold",
        ),
        (
            json!({"low_balance_alert": {"enabled": true, "threshold": null}}),
            "threshold",
        ),
        (json!({"low_balance_alert": {"enabled": true}}), "threshold"),
        (json!({"low_balance_alert": {"threshold": 10}}), "enabled"),
        (
            json!({"low_balance_alert": {"enabled": true, "threshold": "1.0000000001"}}),
            "threshold",
        ),
        (
            json!({"low_balance_alert": {"enabled": "yes", "threshold": 10}}),
            "enabled: invalid type",
        ),
        (
            json!({"low_balance_alert": {"enabled": true, "threshold": true}}),
            "threshold: ",
        ),
        (
            json!({"low_balance_alert": {"enabled": true, "threshold": 10, "extra": 1}}),
            "extra",
        ),
        (
            json!({"enabled": true, "threshold": 10}),
            "low_balance_alert",
        ),
    ] {
        let (status, err) = put_alert(&app, &customer, bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad} -> {err}");
        let message = err["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(names), "{bad}: {message}");
    }
    let (status, body) = app.get("/v1/wallet/low-balance-alert", &customer.key).await;
    assert_eq!(
        (status, &body["low_balance_alert"]["enabled"]),
        (StatusCode::OK, &json!(false))
    );
    let (status, body) = put_alert(
        &app,
        &customer,
        json!({"low_balance_alert": {"enabled": true, "threshold": 10.00}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["low_balance_alert"]["threshold"].to_string(), "10.00");
    let (_, stored) = app.get("/v1/wallet/low-balance-alert", &customer.key).await;
    assert_eq!(stored, body, "GET shows what was stored");
    // The admin sees and sets the same.
    let (status, admin_view) = app
        .get(
            &format!(
                "/v1/admin/accounts/{}/low-balance-alert",
                customer.account_id
            ),
            ADMIN_KEY,
        )
        .await;
    assert_eq!((status, &admin_view), (StatusCode::OK, &stored));

    // 20 racing debits of 0.50 down to exactly 10 (at the threshold: no alert), then 20
    // racing debits of 1 across it and down to zero.
    app.grant(&customer.account_id, "20").await;
    let race = |amount: &'static str, n: usize| {
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let (base, platform, account) = (
                    app.base.clone(),
                    platform.clone(),
                    customer.account_id.clone(),
                );
                tokio::spawn(async move {
                    let app = TestApp::at(base, None);
                    app.usage(&platform, &account, amount).await
                })
            })
            .collect();
        async move {
            let mut ok = 0;
            for task in tasks {
                if task.await.expect("task") == StatusCode::CREATED {
                    ok += 1;
                }
            }
            ok
        }
    };
    assert_eq!(race("0.50", 20).await, 20);
    assert_eq!(app.balance(&customer).await, "10.00");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        smtp.messages().is_empty(),
        "at the threshold is not below it"
    );
    assert_eq!(race("1", 20).await, 10);
    assert_eq!(app.balance(&customer).await, "0.00");

    let emails = wait_for(1, || smtp.messages()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let emails_now = smtp.messages();
    assert_eq!(
        emails_now.len(),
        1,
        "one email per crossing: {emails_now:#?}"
    );
    let email = &emails[0];
    assert_eq!(header(email, "To"), Some("alerted@example.com"));
    assert!(
        header(email, "Subject").is_some_and(|s| s.contains("low")),
        "{email}"
    );
    let message_id = header(email, "Message-ID").expect("Message-ID");
    assert!(message_id.starts_with("<evt_") && message_id.ends_with("_balance_low@example.com>"));
    assert!(
        email.contains("https://billing.example/dashboard/billing"),
        "{email}"
    );

    // Events: every accepted one verifies.
    let low = wait_for(1, || receiver.of_type("balance.low")).await;
    assert_eq!(low.len(), 1);
    let depleted = wait_for(1, || receiver.of_type("balance.depleted")).await;
    assert_eq!(depleted.len(), 1);
    let event = &low[0];
    assert_eq!(event["data"]["account_id"], customer.account_id.as_str());
    assert_eq!(event["data"]["balance"].to_string(), "9");
    assert_eq!(event["data"]["threshold"].to_string(), "10");
    assert!(
        event["data"]["transaction_id"]
            .as_str()
            .is_some_and(|t| t.starts_with("txn_"))
    );
    assert_eq!(
        format!("<{}@example.com>", event["id"].as_str().expect("id")),
        message_id
    );

    // Back at or above the threshold re-arms the alert: one more email on the next crossing.
    app.grant(&customer.account_id, "15").await;
    assert_eq!(
        app.usage(&platform, &customer.account_id, "6").await,
        StatusCode::CREATED
    );
    let emails = wait_for(2, || smtp.messages()).await;
    assert_eq!(emails.len(), 2, "re-armed after the balance came back");
    assert_eq!(
        wait_for(2, || receiver.of_type("balance.low")).await.len(),
        2
    );

    // A top-up through the sandbox: `topup.completed`, with the credits it added.
    let topup = app
        .top_up(&customer, json!({"pack_id": "pack_starter"}))
        .await;
    // The public URL is the deployment's; this server answers on its bound address.
    let checkout = topup["checkout_url"]
        .as_str()
        .expect("url")
        .replace("https://billing.example", &app.base);
    app.press(&checkout, "paid").await;
    let completed = wait_for(1, || receiver.of_type("topup.completed")).await;
    assert_eq!(completed.len(), 1);
    assert_eq!(completed[0]["data"]["topup_id"], topup["id"]);
    assert_eq!(dec(&completed[0]["data"]["credits"].to_string()), dec("5"));
    let ids: std::collections::HashSet<String> = receiver
        .accepted()
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(
        ids.len(),
        receiver.accepted().len(),
        "each event accepted once"
    );
}

/// The spending limit tells once a month: `spending_limit.reached` as an event and an
/// email, for `block` when the spend reaches the limit. The receiver answers 500 twice: the
/// event arrives on the third try, signed afresh each time.
pub async fn spending_limit_reached_is_told_once(backend: Backend) {
    let Some(smtp) = Smtp::start(&format!("limit-{backend:?}")) else {
        return;
    };
    let receiver = Receiver::start(2);
    let smtp_url = smtp.url();
    let Some(app) = spawn(
        backend,
        "spending_limit_reached",
        &[
            ("BILLING_OUTBOX_RETRY_BASE_SECS", "1"),
            ("BILLING_SMTP_URL", smtp_url.as_str()),
            ("BILLING_EMAIL_FROM", "billing@example.com"),
            ("BILLING_EVENTS_URL", receiver.url.as_str()),
            ("BILLING_EVENTS_SECRET", EVENTS_SECRET),
            ("BILLING_OUTBOX_INTERVAL_MS", "100"),
        ],
    )
    .await
    else {
        return;
    };
    let customer = app.customer("limited").await;
    let platform = app.platform_key(&customer.account_id).await;
    app.grant(&customer.account_id, "100").await;
    let (status, body) = app
        .call(
            Method::PUT,
            "/v1/wallet/spending-limit",
            Some(&customer.key),
            Some(json!({"spending_limit": {"enabled": true, "monthly_limit": 10, "action": "block"}})),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        app.usage(&platform, &customer.account_id, "9").await,
        StatusCode::CREATED
    );
    assert_eq!(
        app.usage(&platform, &customer.account_id, "1").await,
        StatusCode::CREATED
    );
    assert_eq!(
        app.usage(&platform, &customer.account_id, "1").await,
        StatusCode::PAYMENT_REQUIRED
    );
    let reached = wait_for(1, || receiver.of_type("spending_limit.reached")).await;
    assert_eq!(reached.len(), 1);
    assert_eq!(reached[0]["data"]["limit"].to_string(), "10");
    assert_eq!(reached[0]["data"]["spent"].to_string(), "10");
    assert_eq!(reached[0]["data"]["action"], "block");
    let emails = wait_for(1, || smtp.messages()).await;
    assert_eq!(emails.len(), 1);
    assert!(header(&emails[0], "Subject").is_some_and(|s| s.contains("limit")));
    let attempts = receiver.seen.lock().expect("lock").clone();
    let answers: Vec<u16> = attempts.iter().map(|d| d.answered).collect();
    assert_eq!(answers, vec![500, 500, 200], "delivered on the third try");
    let ids: Vec<Value> = attempts
        .iter()
        .map(|d| serde_json::from_str::<Value>(&d.body).expect("json")["id"].clone())
        .collect();
    assert!(
        ids.iter().all(|id| id == &ids[0]),
        "a retry carries the same id: {ids:?}"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        receiver.of_type("spending_limit.reached").len(),
        1,
        "once a month"
    );
    assert_eq!(smtp.messages().len(), 1);
}

/// `kill -9` after a debit commits and before its email, event and auto top-up charge go
/// out: after a restart, exactly one email, one event and one charge.
pub async fn notices_survive_kill_9(backend: Backend) {
    let Some(smtp) = Smtp::start(&format!("kill-{backend:?}")) else {
        return;
    };
    let receiver = Receiver::start(0);
    let Some(url) = crate::helpers::database_url(backend, "notices_kill") else {
        return;
    };
    let smtp_url = smtp.url();
    let env: HashMap<&str, &str> = [
        ("BILLING_LISTEN", "127.0.0.1:0"),
        ("BILLING_DATABASE_URL", url.as_str()),
        ("BILLING_ADMIN_KEY", ADMIN_KEY),
        ("BILLING_SMTP_URL", smtp_url.as_str()),
        ("BILLING_EMAIL_FROM", "billing@example.com"),
        ("BILLING_EVENTS_URL", receiver.url.as_str()),
        ("BILLING_EVENTS_SECRET", EVENTS_SECRET),
        ("RUST_LOG", "warn"),
    ]
    .into_iter()
    .collect();
    let launch = |interval_ms: &str| {
        crate::helpers::spawn_listening(
            Command::new(env!("CARGO_BIN_EXE_billing-server"))
                .envs(&env)
                .env("BILLING_OUTBOX_INTERVAL_MS", interval_ms)
                .stderr(Stdio::null()),
        )
    };
    // First process: its outbox worker makes its first pass at start, then sleeps an hour.
    let (mut first, base) = launch("3600000");
    let app = TestApp::at(base, None);
    let customer = app.customer("killed").await;
    let platform = app.platform_key(&customer.account_id).await;
    let (status, body) = put_alert(
        &app,
        &customer,
        json!({"low_balance_alert": {"enabled": true, "threshold": 5}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.grant(&customer.account_id, "5").await;
    // A card saved at the sandbox checkout (5 credits), and auto top-up on it.
    let topup = app
        .top_up(
            &customer,
            json!({"pack_id": "pack_starter", "save_payment_method": true}),
        )
        .await;
    app.press(topup["checkout_url"].as_str().expect("url"), "paid")
        .await;
    let (status, body) = app
        .call(
            Method::PUT,
            "/v1/wallet/auto-top-up",
            Some(&customer.key),
            Some(json!({"auto_topup": {"enabled": true, "threshold": 5, "amount": 25}})),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The debit commits the alert's email and event and the auto top-up's charge.
    assert_eq!(
        app.usage(&platform, &customer.account_id, "6").await,
        StatusCode::CREATED
    );
    // SIGKILL: no shutdown, nothing flushed.
    first.kill().expect("kill -9");
    first.wait().expect("reaped");
    assert!(
        smtp.messages().is_empty() && receiver.accepted().is_empty(),
        "nothing went out before the kill"
    );

    let (mut second, base) = launch("100");
    let restarted = TestApp::audited(base, &url);
    let emails = wait_for(1, || smtp.messages()).await;
    let low = wait_for(1, || receiver.of_type("balance.low")).await;
    let mut balance = String::new();
    for _ in 0..150 {
        balance = restarted.balance(&customer).await;
        if balance == "29.00" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (emails_after, low_after) = (smtp.messages(), receiver.of_type("balance.low"));
    let (_, charges) = restarted.get("/sandbox/charges", ADMIN_KEY).await;
    let (_, history) = restarted
        .get("/api/billing/topup-history", &customer.key)
        .await;
    let _ = second.kill();
    let _ = second.wait();
    assert_eq!(balance, "29.00", "4 + the auto top-up's 25");
    assert_eq!(
        charges,
        json!({"paid": 1, "declined": 0}),
        "exactly one charge"
    );
    let autos = history["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter(|t| t["origin"] == "auto_topup")
        .count();
    assert_eq!(autos, 1);
    assert_eq!(
        (emails.len(), emails_after.len()),
        (1, 1),
        "exactly one email"
    );
    assert_eq!((low.len(), low_after.len()), (1, 1), "exactly one event");
    assert_eq!(low[0]["data"]["balance"].to_string(), "4");
}
