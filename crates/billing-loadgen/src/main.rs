//! `billing-loadgen`: creates accounts, funds them, drives `POST /v1/usage` with C concurrent
//! connections for T seconds (uniform over many wallets, or all on one hot wallet), prints
//! debits/s and latency percentiles, then checks that every balance equals its ledger sum and
//! that the ledger holds exactly the debits that succeeded.
//!
//! Against a running service: `--url http://127.0.0.1:8080 --admin-key bk_admin_…`.
//! Or it starts the real server in-process on a fresh database: `--backend sqlite` or
//! `--backend postgres://postgres@127.0.0.1:5432/postgres`.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use billing_core::Decimal;
use clap::{Parser, ValueEnum};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Debits spread uniformly over every account.
    Uniform,
    /// Every debit on one account.
    Hot,
}

#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// A running service's base URL (needs --admin-key).
    #[arg(long)]
    url: Option<String>,
    #[arg(long)]
    admin_key: Option<String>,
    /// Start the server in-process instead: `sqlite` or a `postgres://` URL of a server on
    /// which a fresh database is created.
    #[arg(long)]
    backend: Option<String>,
    #[arg(long, value_enum, default_value = "uniform")]
    mode: Mode,
    /// Concurrent connections.
    #[arg(long, short = 'c', default_value_t = 32)]
    concurrency: usize,
    /// Seconds of load.
    #[arg(long, short = 't', default_value_t = 10)]
    duration: u64,
    /// Accounts (uniform mode).
    #[arg(long, default_value_t = 100)]
    accounts: usize,
    /// Amount of each debit.
    #[arg(long, default_value = "0.000150")]
    amount: String,
    /// Credits granted to each account first.
    #[arg(long, default_value = "1000000")]
    fund: String,
}

const ADMIN_KEY: &str = "bk_admin_loadgen_0123456789abcdef0123456789abcdef";

struct Target {
    base: String,
    admin_key: String,
    _server: Option<actix_web::dev::ServerHandle>,
}

async fn start_server(backend: &str) -> Result<Target, String> {
    let database_url = if backend == "sqlite" {
        let dir = std::env::temp_dir().join(format!("billing-loadgen-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("billing.db")
            .to_str()
            .ok_or("temp path is not UTF-8")?
            .to_owned()
    } else {
        billing_store::create_postgres_database(backend, "loadgen").map_err(|e| e.to_string())?
    };
    let env: HashMap<String, String> = [
        ("BILLING_LISTEN", "127.0.0.1:0"),
        ("BILLING_DATABASE_URL", database_url.as_str()),
        ("BILLING_ADMIN_KEY", ADMIN_KEY),
        ("BILLING_DB_MAX_CONNECTIONS", "16"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let config = billing_server::Config::from_env(&env).map_err(|e| e.to_string())?;
    let running = billing_server::start(config)
        .await
        .map_err(|e| e.to_string())?;
    let base = running.base_url.clone();
    let handle = running.handle();
    tokio::spawn(running.wait());
    Ok(Target {
        base,
        admin_key: ADMIN_KEY.to_owned(),
        _server: Some(handle),
    })
}

async fn send(
    client: &Client,
    method: reqwest::Method,
    url: String,
    key: &str,
    body: Option<Value>,
) -> Result<(StatusCode, Value), String> {
    let mut request = client.request(method, url).bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    Ok((status, body))
}

struct Account {
    id: String,
    key: String,
}

async fn setup(
    client: &Client,
    target: &Target,
    count: usize,
    fund: &str,
) -> Result<(Vec<Account>, String), String> {
    let mut accounts = Vec::with_capacity(count);
    for i in 0..count {
        let (status, account) = send(
            client,
            reqwest::Method::POST,
            format!("{}/v1/admin/accounts", target.base),
            &target.admin_key,
            Some(json!({"name": format!("load {i}"), "email": format!("load{i}@example.com")})),
        )
        .await?;
        if status != StatusCode::CREATED {
            return Err(format!("create account: {status} {account}"));
        }
        let id = account["id"].as_str().ok_or("no account id")?.to_owned();
        let (status, key) = send(
            client,
            reqwest::Method::POST,
            format!("{}/v1/admin/accounts/{id}/api-keys", target.base),
            &target.admin_key,
            Some(json!({"scope": "customer"})),
        )
        .await?;
        if status != StatusCode::CREATED {
            return Err(format!("issue key: {status} {key}"));
        }
        let (status, grant) = send(
            client,
            reqwest::Method::POST,
            format!("{}/v1/admin/accounts/{id}/grants", target.base),
            &target.admin_key,
            Some(json!({"amount": fund, "description": "load test funds"})),
        )
        .await?;
        if status != StatusCode::CREATED {
            return Err(format!("grant: {status} {grant}"));
        }
        accounts.push(Account {
            id,
            key: key["key"].as_str().ok_or("no key")?.to_owned(),
        });
    }
    let first = accounts.first().ok_or("no accounts")?;
    let (status, platform) = send(
        client,
        reqwest::Method::POST,
        format!("{}/v1/admin/accounts/{}/api-keys", target.base, first.id),
        &target.admin_key,
        Some(json!({"scope": "platform"})),
    )
    .await?;
    if status != StatusCode::CREATED {
        return Err(format!("platform key: {status} {platform}"));
    }
    Ok((
        accounts,
        platform["key"].as_str().ok_or("no key")?.to_owned(),
    ))
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    ok_per_account: HashMap<usize, u64>,
    refused: u64,
    errors: u64,
}

/// What every connection of the load shares.
#[derive(Clone)]
struct Load {
    client: Client,
    base: String,
    platform: String,
    account_ids: Arc<Vec<String>>,
    mode: Mode,
    amount: String,
    deadline: Instant,
    sequence: Arc<AtomicU64>,
}

/// One connection: debits until the deadline.
async fn drive(load: Load) -> Tally {
    let Load {
        client,
        base,
        platform,
        account_ids,
        mode,
        amount,
        deadline,
        sequence,
    } = load;
    let mut tally = Tally::default();
    let url = format!("{base}/v1/usage");
    while Instant::now() < deadline {
        let index = match mode {
            Mode::Hot => 0,
            Mode::Uniform => rand::random_range(0..account_ids.len()),
        };
        let n = sequence.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let response = client
            .post(&url)
            .bearer_auth(&platform)
            .header("Idempotency-Key", format!("load-{n}"))
            .header("content-type", "application/json")
            .body(format!(
                r#"{{"account_id":"{}","amount":{amount},"description":"API usage - load"}}"#,
                account_ids[index]
            ))
            .send()
            .await;
        let elapsed = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
        match response {
            Ok(r) if r.status() == StatusCode::CREATED => {
                let _ = r.bytes().await;
                tally.latencies_us.push(elapsed);
                *tally.ok_per_account.entry(index).or_default() += 1;
            }
            Ok(r) if r.status() == StatusCode::PAYMENT_REQUIRED => {
                let _ = r.bytes().await;
                tally.latencies_us.push(elapsed);
                tally.refused += 1;
            }
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                if tally.errors < 3 {
                    eprintln!("unexpected {status}: {body}");
                }
                tally.errors += 1;
            }
            Err(e) => {
                if tally.errors < 3 {
                    eprintln!("request failed: {e}");
                }
                tally.errors += 1;
            }
        }
    }
    tally
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    f64::from(sorted[rank.clamp(1, sorted.len()) - 1]) / 1000.0
}

/// Checks one account: balance = sum of the ledger, and the number of usage entries equals
/// the debits that succeeded. Returns the balance.
async fn verify(
    client: &Client,
    base: &str,
    account: &Account,
    expected_debits: u64,
    fund: Decimal,
    amount: Decimal,
) -> Result<(), String> {
    let (_, balance) = send(
        client,
        reqwest::Method::GET,
        format!("{base}/v1/wallet/balance"),
        &account.key,
        None,
    )
    .await?;
    let balance = Decimal::from_str_exact(&balance["balance"].to_string())
        .map_err(|e| format!("balance: {e}"))?;
    let mut sum = Decimal::ZERO;
    let mut usage = 0u64;
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{base}/v1/wallet/transactions?limit=100&starting_after={c}"),
            None => format!("{base}/v1/wallet/transactions?limit=100"),
        };
        let (status, page) = send(client, reqwest::Method::GET, url, &account.key, None).await?;
        if status != StatusCode::OK {
            return Err(format!("transactions: {status} {page}"));
        }
        let transactions = page["transactions"].as_array().ok_or("no transactions")?;
        for t in transactions {
            sum += Decimal::from_str_exact(&t["amount"].to_string())
                .map_err(|e| format!("amount: {e}"))?;
            if t["type"] == "usage" {
                usage += 1;
            }
        }
        cursor = transactions
            .last()
            .and_then(|t| t["id"].as_str())
            .map(str::to_owned);
        if page["has_more"] != json!(true) {
            break;
        }
    }
    let expected = fund - amount * Decimal::from(expected_debits);
    if balance != sum || usage != expected_debits || balance != expected {
        return Err(format!(
            "account {}: balance {balance}, ledger sum {sum}, expected {expected}; \
             {usage} usage entries for {expected_debits} successful debits",
            account.id
        ));
    }
    Ok(())
}

async fn run(args: Args) -> Result<(), String> {
    let target = match (&args.url, &args.backend) {
        (Some(url), None) => Target {
            base: url.trim_end_matches('/').to_owned(),
            admin_key: args.admin_key.clone().ok_or("--url needs --admin-key")?,
            _server: None,
        },
        (None, Some(backend)) => start_server(backend).await?,
        _ => return Err("give exactly one of --url and --backend".into()),
    };
    let amount = billing_core::money::parse_decimal(&args.amount).map_err(|e| e.to_string())?;
    let fund = billing_core::money::parse_decimal(&args.fund).map_err(|e| e.to_string())?;
    let accounts_wanted = match args.mode {
        Mode::Hot => 1,
        Mode::Uniform => args.accounts.max(1),
    };
    let client = Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    println!(
        "setting up {accounts_wanted} account(s) on {} …",
        target.base
    );
    let (accounts, platform) = setup(&client, &target, accounts_wanted, &args.fund).await?;
    let ids = Arc::new(accounts.iter().map(|a| a.id.clone()).collect::<Vec<_>>());
    let sequence = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    let load = Load {
        client: client.clone(),
        base: target.base.clone(),
        platform,
        account_ids: ids,
        mode: args.mode,
        amount: args.amount.clone(),
        deadline,
        sequence,
    };
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        workers.push(tokio::spawn(drive(load.clone())));
    }
    let mut total = Tally::default();
    for worker in workers {
        let tally = worker.await.map_err(|e| e.to_string())?;
        total.latencies_us.extend(tally.latencies_us);
        for (account, n) in tally.ok_per_account {
            *total.ok_per_account.entry(account).or_default() += n;
        }
        total.refused += tally.refused;
        total.errors += tally.errors;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ok: u64 = total.ok_per_account.values().sum();
    total.latencies_us.sort_unstable();
    println!(
        "mode {:?}, {} connections, {:.1} s: {ok} debits ({:.0} debits/s), {} refused (402), {} errors",
        args.mode,
        args.concurrency,
        elapsed,
        ok as f64 / elapsed,
        total.refused,
        total.errors
    );
    println!(
        "latency ms: p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        percentile(&total.latencies_us, 50.0),
        percentile(&total.latencies_us, 99.0),
        percentile(&total.latencies_us, 99.9),
        percentile(&total.latencies_us, 100.0),
    );
    let mut failures = 0;
    for (index, account) in accounts.iter().enumerate() {
        let expected = total.ok_per_account.get(&index).copied().unwrap_or(0);
        if let Err(e) = verify(&client, &target.base, account, expected, fund, amount).await {
            eprintln!("INCONSISTENT: {e}");
            failures += 1;
        }
    }
    if failures > 0 || total.errors > 0 {
        return Err(format!(
            "{failures} inconsistent account(s), {} request errors",
            total.errors
        ));
    }
    println!(
        "consistency: OK ({} accounts: balance = ledger sum = funds - successful debits)",
        accounts.len()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("billing-loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}
