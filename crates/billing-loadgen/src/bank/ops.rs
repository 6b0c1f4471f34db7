//! The clients: every money-moving operation, retried with its key until it is answered,
//! and a record of what was acknowledged.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use billing_core::Decimal;
use reqwest::Method;
use serde_json::{Value, json};

use crate::fleet::{ADMIN_KEY, Fleet};

/// Past this a request counts as hung (the server's own waits are shorter).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// A `503` must come at most this long after its request (`BILLING_DB_ACQUIRE_TIMEOUT_MS`,
/// 5 s, and a margin).
const UNAVAILABLE_WITHIN: Duration = Duration::from_secs(7);
/// A client retries one operation (with its key) this long before giving up on it.
const GIVE_UP_AFTER: Duration = Duration::from_secs(180);

/// One wallet of the workload and its keys.
pub struct Wallet {
    pub id: String,
    pub customer_key: String,
    pub platform_key: String,
}

/// What was acknowledged on one wallet: `(transaction id, amount)` per kind.
#[derive(Default, Clone)]
pub struct Ledger {
    pub debits: Vec<(String, Decimal)>,
    pub captures: Vec<(String, Decimal)>,
    pub grants: Vec<(String, Decimal)>,
    pub refunds: Vec<(String, Decimal)>,
    /// `(top-up id, (credits, bonus) if it completes)`: its final status is read at the end.
    pub topups: Vec<(String, (Decimal, Decimal))>,
}

/// Every wallet's acknowledged operations.
pub struct Ledgers(pub Vec<Ledger>);

impl Ledgers {
    pub fn merge(parts: Vec<Vec<Ledger>>, wallets: usize) -> Ledgers {
        let mut all = vec![Ledger::default(); wallets];
        for part in parts {
            for (i, l) in part.into_iter().enumerate() {
                all[i].debits.extend(l.debits);
                all[i].captures.extend(l.captures);
                all[i].grants.extend(l.grants);
                all[i].refunds.extend(l.refunds);
                all[i].topups.extend(l.topups);
            }
        }
        Ledgers(all)
    }

    fn count(&self, f: impl Fn(&Ledger) -> usize) -> usize {
        self.0.iter().map(f).sum()
    }

    pub fn acknowledged(&self) -> usize {
        self.count(|l| {
            l.debits.len() + l.captures.len() + l.grants.len() + l.refunds.len() + l.topups.len()
        })
    }

    pub fn breakdown(&self) -> String {
        format!(
            "{} debits, {} captures, {} grants, {} refunds, {} top-ups started",
            self.count(|l| l.debits.len()),
            self.count(|l| l.captures.len()),
            self.count(|l| l.grants.len()),
            self.count(|l| l.refunds.len()),
            self.count(|l| l.topups.len()),
        )
    }
}

/// Counters every client shares.
#[derive(Default)]
pub struct Outcomes {
    acknowledged: AtomicU64,
    refused: AtomicU64,
    replays: AtomicU64,
    unavailable: AtomicU64,
    server_errors: AtomicU64,
    connection_failures: AtomicU64,
    outage: AtomicBool,
    violations: Mutex<Vec<String>>,
}

impl Outcomes {
    pub fn violation(&self, what: String) {
        eprintln!("VIOLATION: {what}");
        if let Ok(mut v) = self.violations.lock() {
            v.push(what);
        }
    }
    pub fn take_violations(&self) -> Vec<String> {
        self.violations
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
    pub fn set_outage(&self, on: bool) {
        self.outage.store(on, Ordering::SeqCst);
    }
    pub fn in_outage(&self) -> bool {
        self.outage.load(Ordering::SeqCst)
    }
    pub fn acknowledged_now(&self) -> u64 {
        self.acknowledged.load(Ordering::SeqCst)
    }
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
    pub fn replays(&self) -> u64 {
        self.replays.load(Ordering::Relaxed)
    }
    pub fn unavailable(&self) -> u64 {
        self.unavailable.load(Ordering::Relaxed)
    }
    pub fn server_errors(&self) -> u64 {
        self.server_errors.load(Ordering::Relaxed)
    }
    pub fn connection_failures(&self) -> u64 {
        self.connection_failures.load(Ordering::Relaxed)
    }
}

/// An operation's final answer.
enum Answer {
    /// 2xx: the body and the process that answered.
    Done(Value, String),
    /// A definitive refusal (4xx): nothing was written.
    Refused,
    /// Not answered within [`GIVE_UP_AFTER`].
    GaveUp,
}

struct Request<'a> {
    method: Method,
    path: String,
    key: &'a str,
    body: Option<Value>,
    idempotency: Option<String>,
}

/// Sends `request` to a live process, and again (same key) to another one until it is
/// answered: a cut connection, a `503` or a killed process is retried, a `500` or a hang
/// is also a violation.
async fn send(
    http: &reqwest::Client,
    fleet: &Fleet,
    outcomes: &Outcomes,
    request: &Request<'_>,
    avoid: Option<&str>,
) -> Answer {
    let started = Instant::now();
    let mut last = avoid.map(str::to_owned);
    while started.elapsed() < GIVE_UP_AFTER {
        let Some(base) = fleet.pick(last.as_deref()) else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        last = Some(base.clone());
        let mut builder = http
            .request(request.method.clone(), format!("{base}{}", request.path))
            .bearer_auth(request.key);
        if let Some(key) = &request.idempotency {
            builder = builder.header("Idempotency-Key", key);
        }
        if let Some(body) = &request.body {
            builder = builder.json(body);
        }
        let sent = Instant::now();
        let response = match builder.send().await {
            Ok(r) => r,
            Err(e) => {
                outcomes.connection_failures.fetch_add(1, Ordering::Relaxed);
                if e.is_timeout() {
                    outcomes.violation(format!(
                        "{} {} hung: no answer in {:?}",
                        request.method,
                        request.path,
                        sent.elapsed()
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let status = response.status().as_u16();
        let has_retry_after = response.headers().contains_key("retry-after");
        let text = match response.text().await {
            Ok(t) => t,
            Err(_) => {
                outcomes.connection_failures.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        match status {
            200..=299 => {
                outcomes.acknowledged.fetch_add(1, Ordering::SeqCst);
                return Answer::Done(body, base);
            }
            503 => {
                outcomes.unavailable.fetch_add(1, Ordering::Relaxed);
                if !has_retry_after {
                    outcomes.violation(format!(
                        "{} {} answered 503 without Retry-After: {text}",
                        request.method, request.path
                    ));
                }
                if sent.elapsed() > UNAVAILABLE_WITHIN {
                    outcomes.violation(format!(
                        "{} {} answered 503 only after {:?} (the acquire timeout is 5 s)",
                        request.method,
                        request.path,
                        sent.elapsed()
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100 + rand::random_range(0..200))).await;
            }
            500..=599 => {
                outcomes.server_errors.fetch_add(1, Ordering::Relaxed);
                outcomes.violation(format!(
                    "{} {} answered {status}: {text}",
                    request.method, request.path
                ));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            409 if body["error"]["code"] == "idempotency_conflict" => {
                outcomes.violation(format!(
                    "{} {} with its own key answered idempotency_conflict: {text}",
                    request.method, request.path
                ));
                return Answer::Refused;
            }
            _ => {
                outcomes.refused.fetch_add(1, Ordering::Relaxed);
                return Answer::Refused;
            }
        }
    }
    outcomes.violation(format!(
        "{} {} (key {:?}) not answered in {GIVE_UP_AFTER:?}",
        request.method, request.path, request.idempotency
    ));
    Answer::GaveUp
}

pub fn decimal(v: &Value) -> Option<Decimal> {
    v.to_string().trim_matches('"').parse().ok()
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap_or_default().to_owned()
}

/// Creates the wallets (an account, a customer key, a platform key, 1,000 credits each).
pub async fn setup(
    http: &reqwest::Client,
    fleet: &Fleet,
    n: usize,
) -> Result<(Vec<Wallet>, Vec<Ledger>), String> {
    let outcomes = Outcomes::default();
    let mut wallets = Vec::new();
    let mut ledgers = vec![Ledger::default(); n];
    for (i, ledger) in ledgers.iter_mut().enumerate() {
        let created = |path: String, body: Value, key: Option<String>| Request {
            method: Method::POST,
            path,
            key: ADMIN_KEY,
            body: Some(body),
            idempotency: key,
        };
        let account = match send(
            http,
            fleet,
            &outcomes,
            &created(
                "/v1/admin/accounts".into(),
                json!({"name": format!("Bank {i}"), "email": format!("bank{i}@example.com")}),
                None,
            ),
            None,
        )
        .await
        {
            Answer::Done(body, _) => id(&body),
            _ => return Err(format!("cannot create account {i}")),
        };
        let mut keys = Vec::new();
        for scope in ["customer", "platform"] {
            match send(
                http,
                fleet,
                &outcomes,
                &created(
                    format!("/v1/admin/accounts/{account}/api-keys"),
                    json!({"scope": scope}),
                    None,
                ),
                None,
            )
            .await
            {
                Answer::Done(body, _) => keys.push(body["key"].as_str().unwrap_or("").to_owned()),
                _ => return Err(format!("cannot issue a {scope} key")),
            }
        }
        let fund = Decimal::new(1000, 0);
        match send(
            http,
            fleet,
            &outcomes,
            &created(
                format!("/v1/admin/accounts/{account}/grants"),
                json!({"amount": fund.to_string(), "description": "opening funds"}),
                Some(format!("open-{account}")),
            ),
            None,
        )
        .await
        {
            Answer::Done(body, _) => ledger.grants.push((id(&body), fund)),
            _ => return Err("cannot fund a wallet".into()),
        }
        wallets.push(Wallet {
            id: account,
            platform_key: keys.pop().unwrap_or_default(),
            customer_key: keys.pop().unwrap_or_default(),
        });
    }
    let problems = outcomes.take_violations();
    if !problems.is_empty() {
        return Err(format!("setup: {problems:?}"));
    }
    Ok((wallets, ledgers))
}

/// A random amount in (0, `max`] with `places` decimals.
fn amount(max_units: i64, places: u32) -> Decimal {
    Decimal::new(rand::random_range(1..=max_units), places)
}

/// `d` in millionths, truncated (amounts here have 6 decimals).
fn micro_units(d: Decimal) -> i64 {
    (d * Decimal::new(1_000_000, 0))
        .trunc()
        .to_string()
        .parse()
        .unwrap_or(1)
}

/// One client: random operations on random wallets until `deadline`.
pub async fn client(
    n: usize,
    http: reqwest::Client,
    fleet: std::sync::Arc<Fleet>,
    wallets: std::sync::Arc<Vec<Wallet>>,
    outcomes: std::sync::Arc<Outcomes>,
    deadline: Instant,
) -> Vec<Ledger> {
    let mut ledgers = vec![Ledger::default(); wallets.len()];
    let mut seq = 0u64;
    while Instant::now() < deadline {
        let w = rand::random_range(0..wallets.len());
        let wallet = &wallets[w];
        seq += 1;
        let key = format!("bank-{}-{n}-{seq}", std::process::id());
        let roll = rand::random_range(0..100);
        let ledger = &mut ledgers[w];
        let op = Op {
            http: &http,
            fleet: &fleet,
            outcomes: &outcomes,
            wallet,
            key: &key,
        };
        match roll {
            0..55 => op.debit(ledger).await,
            55..72 => op.hold(ledger).await,
            72..82 => op.grant(ledger).await,
            82..94 => op.refund(ledger).await,
            _ => op.top_up(ledger).await,
        }
    }
    ledgers
}

struct Op<'a> {
    http: &'a reqwest::Client,
    fleet: &'a Fleet,
    outcomes: &'a Outcomes,
    wallet: &'a Wallet,
    key: &'a str,
}

impl Op<'_> {
    async fn send(&self, request: &Request<'_>, avoid: Option<&str>) -> Answer {
        send(self.http, self.fleet, self.outcomes, request, avoid).await
    }

    /// Sends a money-moving request; on success, sometimes replays it on another process
    /// and checks that the same transaction comes back.
    async fn money(&self, request: Request<'_>, txn: impl Fn(&Value) -> String) -> Option<Value> {
        let (body, base) = match self.send(&request, None).await {
            Answer::Done(body, base) => (body, base),
            Answer::Refused | Answer::GaveUp => return None,
        };
        if rand::random_range(0..10) == 0 {
            self.outcomes.replays.fetch_add(1, Ordering::Relaxed);
            if let Answer::Done(again, _) = self.send(&request, Some(&base)).await {
                if txn(&again) != txn(&body) {
                    self.outcomes.violation(format!(
                        "{} replayed with key {:?} answered {again}, first {body}",
                        request.path, request.idempotency
                    ));
                }
            } else {
                self.outcomes.violation(format!(
                    "{} replayed with key {:?} was not answered as the first time",
                    request.path, request.idempotency
                ));
            }
        }
        Some(body)
    }

    async fn debit(&self, ledger: &mut Ledger) {
        let amount = amount(2_000_000, 6);
        let request = Request {
            method: Method::POST,
            path: "/v1/usage".into(),
            key: &self.wallet.platform_key,
            body: Some(
                json!({"account_id": self.wallet.id, "amount": amount.to_string(), "description": "bank debit"}),
            ),
            idempotency: Some(self.key.to_owned()),
        };
        if let Some(body) = self.money(request, id).await {
            ledger.debits.push((id(&body), amount));
        }
    }

    async fn grant(&self, ledger: &mut Ledger) {
        let amount = amount(500, 2);
        let request = Request {
            method: Method::POST,
            path: format!("/v1/admin/accounts/{}/grants", self.wallet.id),
            key: ADMIN_KEY,
            body: Some(json!({"amount": amount.to_string(), "description": "bank grant"})),
            idempotency: Some(self.key.to_owned()),
        };
        if let Some(body) = self.money(request, id).await {
            ledger.grants.push((id(&body), amount));
        }
    }

    async fn refund(&self, ledger: &mut Ledger) {
        if ledger.debits.is_empty() {
            return self.debit(ledger).await;
        }
        let (txn, debited) = ledger.debits[rand::random_range(0..ledger.debits.len())].clone();
        // Up to 60% of the debit: two refunds of one debit may add up past it (422).
        let most = (debited * Decimal::new(6, 1)).round_dp(6);
        let units = micro_units(most).max(1);
        let amount = amount(units, 6);
        let request = Request {
            method: Method::POST,
            path: format!("/v1/admin/accounts/{}/refunds", self.wallet.id),
            key: ADMIN_KEY,
            body: Some(
                json!({"transaction_ids": [txn], "amount": amount.to_string(), "description": "bank refund"}),
            ),
            idempotency: Some(self.key.to_owned()),
        };
        if let Some(body) = self.money(request, id).await {
            ledger.refunds.push((id(&body), amount));
        }
    }

    async fn hold(&self, ledger: &mut Ledger) {
        let held = amount(3_000_000, 6);
        let request = Request {
            method: Method::POST,
            path: "/v1/holds".into(),
            key: &self.wallet.platform_key,
            body: Some(
                json!({"account_id": self.wallet.id, "amount": held.to_string(), "expires_in_seconds": 600}),
            ),
            idempotency: Some(format!("{}-hold", self.key)),
        };
        let Some(hold) = self.money(request, id).await else {
            return;
        };
        let hold_id = id(&hold);
        if rand::random_range(0..5) == 0 {
            let release = Request {
                method: Method::POST,
                path: format!("/v1/holds/{hold_id}/release"),
                key: &self.wallet.platform_key,
                body: None,
                idempotency: Some(format!("{}-release", self.key)),
            };
            let _ = self.money(release, |v| v["status"].to_string()).await;
            return;
        }
        let units = micro_units(held);
        let captured = Decimal::new(rand::random_range(0..=units), 6);
        let capture = Request {
            method: Method::POST,
            path: format!("/v1/holds/{hold_id}/capture"),
            key: &self.wallet.platform_key,
            body: Some(json!({"amount": captured.to_string()})),
            idempotency: Some(format!("{}-capture", self.key)),
        };
        if let Some(body) = self
            .money(capture, |v| v["transaction"]["id"].to_string())
            .await
            && !body["transaction"].is_null()
        {
            ledger.captures.push((id(&body["transaction"]), captured));
        }
    }

    async fn top_up(&self, ledger: &mut Ledger) {
        let price = amount(30, 0) + Decimal::new(4, 0);
        let request = Request {
            method: Method::POST,
            path: "/v1/wallet/top-up".into(),
            key: &self.wallet.customer_key,
            body: Some(json!({"amount": price.to_string()})),
            idempotency: None,
        };
        let Answer::Done(topup, _) = self.send(&request, None).await else {
            return;
        };
        let credits = decimal(&topup["credits"]).unwrap_or_default();
        let bonus = decimal(&topup["bonus"]).unwrap_or_default();
        ledger.topups.push((id(&topup), (credits, bonus)));
        // The sandbox's checkout lives in the process that created it; if that process
        // was killed meanwhile, the top-up stays pending (and is not counted).
        if let Some(url) = topup["checkout_url"].as_str() {
            let _ = self
                .http
                .post(url)
                .form(&[("outcome", "paid")])
                .send()
                .await;
        }
    }
}
