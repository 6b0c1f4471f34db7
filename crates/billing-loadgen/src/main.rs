//! `billing-loadgen`: creates accounts, funds them, drives `POST /v1/usage` with C concurrent
//! connections for T seconds (uniform over many wallets, or all on one hot wallet), prints
//! debits/s and latency percentiles, then checks that every balance equals its ledger sum and
//! that the ledger holds exactly the debits that succeeded.
//!
//! Against a running service: `--url http://127.0.0.1:8080 --admin-key bk_admin_…`.
//! Or it starts the real server in-process on a fresh database: `--backend sqlite` or
//! `--backend postgres://postgres@127.0.0.1:5432/postgres`.
//!
//! `--compare` also measures, in the same run: the p99 at half the peak rate, and the
//! database alone doing one debit per transaction (pgbench's script, or SQLite's loop), and
//! prints the ratio. `--table` runs the README's four workloads that way.

mod baseline;
mod client;
mod cpu;
mod inproc;
mod phases;

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use billing_core::Decimal;
use clap::{Parser, ValueEnum};
use client::{Load, Tally, percentile};
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
    /// The running service's `BILLING_METRICS_TOKEN`, to show where its ledger writers'
    /// time went (read from its `/metrics`).
    #[arg(long)]
    metrics_token: Option<String>,
    /// Start the server in-process instead: `sqlite` or a `postgres://` URL of a server on
    /// which a fresh database is created.
    #[arg(long)]
    backend: Option<String>,
    #[arg(long, value_enum, default_value = "uniform")]
    mode: Mode,
    /// Concurrent connections.
    #[arg(long, short = 'c', default_value_t = 32)]
    concurrency: usize,
    /// Seconds of each measurement.
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
    /// Requests a second in all (paced over the connections); default: as fast as answers
    /// come.
    #[arg(long)]
    rate: Option<f64>,
    /// Also measure the p99 at half the peak and the database alone (needs --backend).
    #[arg(long)]
    compare: bool,
    /// Measure the HTTP layer alone instead: every request is refused as invalid (400)
    /// before the store is asked.
    #[arg(long)]
    probe: bool,
    /// Run the four workloads of the README's table with --compare: PostgreSQL (this
    /// server, `postgres://…/postgres`) 1,000 wallets and one hot wallet, SQLite 200 and one.
    #[arg(long)]
    table: Option<String>,
}

const ADMIN_KEY: &str = "bk_admin_loadgen_0123456789abcdef0123456789abcdef";
/// The in-process server's `BILLING_METRICS_TOKEN`: its `/metrics` show where the ledger
/// writers' time went.
const METRICS_TOKEN: &str = "loadgen-metrics-0123456789abcdef";

struct Target {
    base: String,
    admin_key: String,
    /// The bearer token of its `/metrics`, if known.
    metrics_token: Option<String>,
    server: Option<actix_web::dev::ServerHandle>,
    /// The in-process server's end (`Running::wait`): awaited after the stop, so that its
    /// ledger writers have closed their connections before the process exits.
    stopped: std::sync::Mutex<Option<tokio::task::JoinHandle<std::io::Result<()>>>>,
    /// The database the in-process server uses.
    database_url: Option<String>,
    /// The in-process server's configuration (for the run without HTTP).
    config: Option<billing_server::Config>,
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
    let mut env: HashMap<String, String> = [
        ("BILLING_LISTEN", "127.0.0.1:0"),
        ("BILLING_DATABASE_URL", database_url.as_str()),
        ("BILLING_ADMIN_KEY", ADMIN_KEY),
        ("BILLING_DB_MAX_CONNECTIONS", "16"),
        ("BILLING_METRICS_TOKEN", METRICS_TOKEN),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    // The server's own tuning passes through (BILLING_LEDGER_*, BILLING_WORKERS, …).
    for (k, v) in std::env::vars() {
        if k.starts_with("BILLING_") && !env.contains_key(&k) {
            env.insert(k, v);
        }
    }
    let config = billing_server::Config::from_env(&env).map_err(|e| e.to_string())?;
    let running = billing_server::start(config.clone())
        .await
        .map_err(|e| e.to_string())?;
    let base = running.base_url.clone();
    let handle = running.handle();
    let stopped = tokio::spawn(running.wait());
    Ok(Target {
        base,
        admin_key: ADMIN_KEY.to_owned(),
        metrics_token: Some(METRICS_TOKEN.to_owned()),
        server: Some(handle),
        stopped: std::sync::Mutex::new(Some(stopped)),
        database_url: Some(database_url),
        config: Some(config),
    })
}

async fn send(
    client: &Client,
    method: reqwest::Method,
    url: String,
    key: &str,
    body: Option<Value>,
) -> Result<(StatusCode, Value), String> {
    let mut request = client.request(method, url).bearer_auth(key).header(
        "Idempotency-Key",
        format!("setup-{}", rand::random::<u64>()),
    );
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

async fn create_account(
    client: &Client,
    target: &Target,
    i: usize,
    fund: &str,
) -> Result<Account, String> {
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
    Ok(Account {
        id,
        key: key["key"].as_str().ok_or("no key")?.to_owned(),
    })
}

/// Creates and funds `count` accounts (16 at a time) and a service key.
async fn setup(
    client: &Client,
    target: &Arc<Target>,
    count: usize,
    fund: &str,
) -> Result<(Vec<Account>, String), String> {
    let mut accounts = Vec::with_capacity(count);
    let indices: Vec<usize> = (0..count).collect();
    for group in indices.chunks(16) {
        let tasks: Vec<_> = group
            .iter()
            .map(|&i| {
                let (client, target, fund) = (client.clone(), target.clone(), fund.to_owned());
                tokio::spawn(async move { create_account(&client, &target, i, &fund).await })
            })
            .collect();
        for task in tasks {
            accounts.push(task.await.map_err(|e| e.to_string())??);
        }
    }
    let (status, service) = send(
        client,
        reqwest::Method::POST,
        format!("{}/v1/admin/api-keys", target.base),
        &target.admin_key,
        Some(json!({"scope": "platform"})),
    )
    .await?;
    if status != StatusCode::CREATED {
        return Err(format!("service key: {status} {service}"));
    }
    Ok((
        accounts,
        service["key"].as_str().ok_or("no key")?.to_owned(),
    ))
}

/// Checks one account: balance = sum of the ledger, and the number of usage entries equals
/// the debits that succeeded.
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

/// On PostgreSQL (a server this process started), a checkpoint now, before a measured run
/// (see `baseline::checkpoint`); answers the count of checkpoints made so far.
async fn checkpoint(target: &Target) -> Result<Option<i64>, String> {
    let Some(url) = target.database_url.clone() else {
        return Ok(None);
    };
    if !billing_store::is_postgres_url(&url) {
        return Ok(None);
    }
    // Best effort: a role that may not checkpoint still gets its figures, with a warning.
    match tokio::task::spawn_blocking(move || baseline::checkpoint(&url))
        .await
        .map_err(|e| e.to_string())?
    {
        Ok(made) => Ok(Some(made)),
        Err(e) => {
            eprintln!("warning: no checkpoint before this run ({e})");
            Ok(None)
        }
    }
}

/// Says how many checkpoints PostgreSQL made during the run that began at `made`, when it
/// made any: they stall every commit, so they explain a p99 far above the others.
async fn report_checkpoints(target: &Target, made: Option<i64>) -> Result<i64, String> {
    let (Some(before), Some(url)) = (made, target.database_url.clone()) else {
        return Ok(0);
    };
    let Ok(now) = tokio::task::spawn_blocking(move || baseline::checkpoints(&url))
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(0);
    };
    let during = now - before;
    if during > 0 {
        println!("  PostgreSQL made {during} checkpoint(s) during this run");
    }
    Ok(during)
}

fn report(label: &str, tally: &Tally, elapsed: f64) -> f64 {
    if tally.probed > 0 {
        println!(
            "{label}: {} requests refused before the store (400) in {elapsed:.1} s ({:.0}/s)",
            tally.probed,
            tally.probed as f64 / elapsed
        );
    }
    let ok = tally.ok();
    let rate = ok as f64 / elapsed;
    println!(
        "{label}: {ok} debits in {elapsed:.1} s ({rate:.0} debits/s), {} refused (402), {} unavailable (503), {} errors",
        tally.refused, tally.unavailable, tally.errors
    );
    println!(
        "  latency ms: p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        percentile(&tally.latencies_us, 50.0),
        percentile(&tally.latencies_us, 99.0),
        percentile(&tally.latencies_us, 99.9),
        percentile(&tally.latencies_us, 100.0),
    );
    rate
}

/// One workload's figures.
struct Row {
    backend: String,
    workload: String,
    peak: f64,
    p99_peak: f64,
    p99_half: Option<f64>,
    /// PostgreSQL checkpoints made during the half-peak run.
    half_checkpoints: i64,
    alone: Option<f64>,
    /// SQLite: the same loop in Rust (diesel), for context.
    alone_rust: Option<f64>,
    /// Where the peak run's CPU went.
    cost: Option<cpu::Cost>,
    /// Where the peak run's ledger writers' time went (the service's `/metrics`).
    phases: Option<phases::Split>,
    /// Requests a second the HTTP layer answers when the store is never asked.
    http_alone: Option<f64>,
    /// SQLite: the engine alone running the service's own statements.
    engine: Option<Compared>,
    /// The accounts the run debited.
    accounts: Vec<String>,
    /// The service without HTTP (`inproc`).
    without_http: Option<inproc::Alone>,
}

/// SQLite's engine alone: the reference loop's WAL pages a debit, and the service's own
/// statements run in batches of the service's size.
struct Compared {
    loop_pages: f64,
    batch: usize,
    statements: baseline::Engine,
}

struct Scenario {
    backend: String,
    mode: Mode,
    accounts: usize,
}

impl Scenario {
    /// The wallets its debits go to.
    fn wallets(&self) -> usize {
        match self.mode {
            Mode::Hot => 1,
            Mode::Uniform => self.accounts.max(1),
        }
    }
}

async fn scenario(args: &Args, scenario: &Scenario) -> Result<Row, String> {
    let target = match (&args.url, scenario.backend.as_str()) {
        (Some(url), "") => Target {
            base: url.trim_end_matches('/').to_owned(),
            admin_key: args.admin_key.clone().ok_or("--url needs --admin-key")?,
            metrics_token: args.metrics_token.clone(),
            server: None,
            stopped: std::sync::Mutex::new(None),
            database_url: None,
            config: None,
        },
        (None, backend) if !backend.is_empty() => start_server(backend).await?,
        _ => return Err("give exactly one of --url and --backend".into()),
    };
    let target = Arc::new(target);
    let measured = measure(args, scenario, &target).await;
    // Stopped whatever the run's outcome, so that its ledger writers have closed their
    // connections before the process exits.
    stop(&target).await;
    let mut row = measured?;
    if args.compare {
        let database = target
            .database_url
            .clone()
            .ok_or("--compare needs --backend")?;
        let config = target.config.as_ref().ok_or("--compare needs --backend")?;
        let amount = billing_core::money::parse_decimal(&args.amount).map_err(|e| e.to_string())?;
        // As before each HTTP run: what the runs before it left in the log is not its work.
        let made = checkpoint(&target).await?;
        let alone = inproc::run(
            config,
            &row.accounts,
            scenario.mode == Mode::Hot,
            amount,
            args.concurrency,
            args.duration,
        )
        .await?;
        println!(
            "the service without HTTP ({} tasks calling record_usage in process): {:.0} debits/s",
            args.concurrency, alone.rate
        );
        print_where_it_went(alone.cost.as_ref(), alone.phases.as_ref());
        report_checkpoints(&target, made).await?;
        if alone.refused > 0 {
            return Err(format!(
                "{} debits refused in the run without HTTP",
                alone.refused
            ));
        }
        row.without_http = Some(alone);
        let wallets = scenario.wallets();
        let (seconds, connections) = (args.duration, args.concurrency);
        let batch = row
            .phases
            .as_ref()
            .map_or(1, |p| p.batch_mean.round().max(1.0) as usize);
        let rates = tokio::task::spawn_blocking(move || {
            if billing_store::is_postgres_url(&database) {
                baseline::pgbench(&database, wallets, connections, seconds).map(|r| (r, None))
            } else {
                let dir = std::path::Path::new(&database)
                    .parent()
                    .ok_or("no directory")?
                    .to_owned();
                let python = baseline::python_sqlite_loop(&dir, wallets, seconds)?;
                let rust = baseline::sqlite_loop(&dir, wallets, seconds)?;
                let statements =
                    baseline::python_service_statements(&database, wallets, batch, seconds)?;
                Ok::<_, String>((python.rate, Some((python, rust, statements))))
            }
        })
        .await
        .map_err(|e| e.to_string())??;
        println!(
            "database alone, one debit per transaction: {:.0} debits/s",
            rates.0
        );
        if let Some((python, rust, statements)) = rates.1 {
            println!("  (the same loop in Rust through diesel: {rust:.0} debits/s)");
            println!(
                "  WAL pages a debit: {:.2} (the loop), {:.2} (the service's statements)",
                python.pages, statements.pages
            );
            println!(
                "Python's sqlite3 (SQLite {}) running the service's own statements, batches of \
                 {batch}: {:.0} debits/s",
                statements.sqlite, statements.rate
            );
            row.alone_rust = Some(rust);
            row.engine = Some(Compared {
                loop_pages: python.pages,
                batch,
                statements,
            });
        }
        row.alone = Some(rates.0);
    }
    Ok(row)
}

/// Stops the in-process server, if there is one, and waits for its end (`Running::wait`).
async fn stop(target: &Target) {
    if let Some(server) = &target.server {
        server.stop(true).await;
        let stopped = target.stopped.lock().ok().and_then(|mut s| s.take());
        if let Some(stopped) = stopped
            && let Ok(Err(e)) = stopped.await
        {
            eprintln!("the in-process server stopped with an error: {e}");
        }
    }
}

/// Runs `scenario`'s workloads against `target` and checks its ledgers: the row without the
/// database-alone figures.
async fn measure(args: &Args, scenario: &Scenario, target: &Arc<Target>) -> Result<Row, String> {
    let target = target.clone();
    let amount = billing_core::money::parse_decimal(&args.amount).map_err(|e| e.to_string())?;
    let fund = billing_core::money::parse_decimal(&args.fund).map_err(|e| e.to_string())?;
    let accounts_wanted = scenario.wallets();
    let client = Client::builder()
        .pool_max_idle_per_host(32)
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| e.to_string())?;
    let workload = match scenario.mode {
        Mode::Hot => "one hot wallet".to_owned(),
        Mode::Uniform => format!("{accounts_wanted} wallets, uniform"),
    };
    println!(
        "== {} · {workload} · {} connections",
        backend_name(&scenario.backend),
        args.concurrency
    );
    println!(
        "setting up {accounts_wanted} account(s) on {} …",
        target.base
    );
    let (accounts, service_key) = setup(&client, &target, accounts_wanted, &args.fund).await?;
    let address = target
        .base
        .strip_prefix("http://")
        .ok_or("only http:// targets")?
        .to_owned();
    let ids = Arc::new(accounts.iter().map(|a| a.id.clone()).collect::<Vec<_>>());
    let load = |rate: Option<f64>, prefix: &str| Load {
        address: address.clone(),
        platform_key: service_key.clone(),
        account_ids: ids.clone(),
        hot: scenario.mode == Mode::Hot,
        amount: args.amount.clone(),
        deadline: Instant::now() + Duration::from_secs(args.duration),
        sequence: Arc::new(AtomicU64::new(0)),
        rate: rate.map(|r| r / args.concurrency as f64),
        key_prefix: format!("{prefix}-{}", rand::random::<u32>()),
        probe: args.probe,
    };
    let made = checkpoint(&target).await?;
    let token = target.metrics_token.as_deref();
    let phases_before = phases::scrape(&client, &target.base, token).await;
    let before = cpu::sample();
    let (peak_tally, elapsed) = client::run(&load(args.rate, "peak"), args.concurrency).await?;
    let cost = cpu::Cost::between(&before, &cpu::sample(), peak_tally.ok());
    let phases_after = phases::scrape(&client, &target.base, token).await;
    let split = phases_before
        .zip(phases_after)
        .and_then(|(before, after)| phases::Split::between(&before, &after));
    let peak = report("peak", &peak_tally, elapsed);
    print_where_it_went(cost.as_ref(), split.as_ref());
    report_checkpoints(&target, made).await?;
    let mut total = peak_tally;
    let p99_peak = percentile(&total.latencies_us, 99.0);
    let mut p99_half = None;
    let mut half_checkpoints = 0;
    let mut http_alone = None;
    if args.compare {
        let made = checkpoint(&target).await?;
        let tail_before = phases::scrape(&client, &target.base, token).await;
        let (half, elapsed) =
            client::run(&load(Some(peak / 2.0), "half"), args.concurrency).await?;
        report("at half the peak rate", &half, elapsed);
        let tail_after = phases::scrape(&client, &target.base, token).await;
        if let Some(tail) = tail_before
            .zip(tail_after)
            .and_then(|(before, after)| phases::Tail::between(&before, &after))
        {
            println!("  the service's tail: {}", tail.line(elapsed));
        }
        half_checkpoints = report_checkpoints(&target, made).await?;
        p99_half = Some(percentile(&half.latencies_us, 99.0));
        total.merge(half);
        let probe = Load {
            probe: true,
            ..load(args.rate, "probe")
        };
        let (probed, elapsed) = client::run(&probe, args.concurrency).await?;
        let rate = probed.probed as f64 / elapsed;
        println!(
            "the HTTP layer alone (the same request refused as invalid, 400, before the store): \
             {rate:.0} requests/s, p99 {:.2} ms",
            percentile(&probed.latencies_us, 99.0)
        );
        if probed.errors > 0 {
            return Err(format!("{} errors in the HTTP-alone run", probed.errors));
        }
        http_alone = Some(rate);
    }
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
    Ok(Row {
        backend: backend_name(&scenario.backend).to_owned(),
        workload,
        peak,
        p99_peak,
        p99_half,
        half_checkpoints,
        alone: None,
        alone_rust: None,
        cost,
        phases: split,
        http_alone,
        engine: None,
        accounts: accounts.iter().map(|a| a.id.clone()).collect(),
        without_http: None,
    })
}

/// A run's CPU per debit by role and its writers' time per debit by phase, where known.
fn print_where_it_went(cost: Option<&cpu::Cost>, split: Option<&phases::Split>) {
    if let Some(cost) = cost {
        println!("  CPU µs per debit: {}", cost.line());
    }
    if let Some(split) = split {
        println!(
            "  ledger writers' time per debit (µs, wall clock): {}",
            split.line()
        );
    }
}

fn backend_name(backend: &str) -> &'static str {
    if backend.is_empty() {
        "service"
    } else if billing_store::is_postgres_url(backend) {
        "PostgreSQL"
    } else {
        "SQLite"
    }
}

fn print_table(rows: &[Row], connections: usize) {
    println!();
    println!(
        "| backend | workload | service over HTTP ({connections} connections) | p99 at half the peak | database alone, 1 debit/txn | ratio | service without HTTP | its ratio |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for row in rows {
        let half = match (row.p99_half, row.half_checkpoints) {
            (None, _) => "-".to_owned(),
            (Some(p), 0) => format!("{p:.1} ms"),
            (Some(p), n) => format!("{p:.1} ms ({n} checkpoint(s) during it)"),
        };
        let ratio = |rate: f64| {
            row.alone
                .map_or("-".to_owned(), |a| format!("{:.2}×", rate / a))
        };
        let mut alone = match row.alone {
            Some(a) if row.backend == "SQLite" => format!("Python sqlite3 {a:.0}/s"),
            Some(a) => format!("pgbench {a:.0}/s"),
            None => "-".to_owned(),
        };
        if let Some(rust) = row.alone_rust {
            alone.push_str(&format!(
                " (Rust loop {rust:.0}/s: {:.2}×)",
                row.peak / rust
            ));
        }
        let rate = row.without_http.as_ref().map(|a| a.rate);
        let without = rate.map_or("-".to_owned(), |r| format!("{r:.0}/s"));
        let without_ratio = rate.map_or("-".to_owned(), ratio);
        println!(
            "| {} | {} | {:.0}/s, p99 {:.1} ms | {half} | {alone} | {} | {without} | {without_ratio} |",
            row.backend,
            row.workload,
            row.peak,
            row.p99_peak,
            ratio(row.peak)
        );
    }
    print_costs(rows);
    print_phases(rows);
    print_engine(rows);
}

/// SQLite: what the engine alone does with the service's own statements, and the WAL pages
/// each debit writes there and in the reference loop.
fn print_engine(rows: &[Row]) {
    if rows.iter().all(|r| r.engine.is_none()) {
        return;
    }
    println!();
    println!(
        "SQLite alone, driven by Python's sqlite3 on one connection (Python's cost per \
         statement included, its checkpoints not timed): the service's own statements for a \
         debit, in batches of the service's size at its peak, on the file the service wrote, \
         beside the reference loop:"
    );
    println!();
    println!(
        "| workload | reference loop | its WAL pages a debit | the service's statements | their WAL pages a debit | service over HTTP | Python's SQLite |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for row in rows {
        let (Some(engine), Some(alone)) = (&row.engine, row.alone) else {
            continue;
        };
        println!(
            "| {} | {alone:.0}/s | {:.2} | {:.0}/s (batches of {}) | {:.2} | {:.0}/s | {} |",
            row.workload,
            engine.loop_pages,
            engine.statements.rate,
            engine.batch,
            engine.statements.pages,
            row.peak,
            engine.statements.sqlite
        );
    }
}

/// Where the peak's ledger-writer time went, per debit, by phase of its transaction.
fn print_phases(rows: &[Row]) {
    if rows.iter().all(|r| r.phases.is_none()) {
        return;
    }
    println!();
    println!(
        "Ledger writers' time per debit at the peak, by phase of its transaction (µs, wall \
         clock, from the service's /metrics: read = the wallets locked and their state read, \
         decide = billing-core's rules and the rows, write, commit):"
    );
    println!();
    println!(
        "| backend | workload | {} | all | postings a batch |",
        phases::PHASES.join(" | ")
    );
    println!("|{}", " --- |".repeat(phases::PHASES.len() + 4));
    for row in rows {
        let without = row.without_http.as_ref().and_then(|a| a.phases.as_ref());
        let runs = [(row.phases.as_ref(), ""), (without, " (without HTTP)")];
        for (split, label) in runs {
            let Some(split) = split else { continue };
            println!(
                "| {} | {}{label} | {} | {:.1} | {:.1} |",
                row.backend,
                row.workload,
                cells(&split.per_posting_us),
                split.total_us(),
                split.batch_mean
            );
        }
    }
}

/// A table row's cells of microseconds, one decimal each.
fn cells(values: &[(&str, f64)]) -> String {
    let cells: Vec<String> = values.iter().map(|(_, us)| format!("{us:.1}")).collect();
    cells.join(" | ")
}

/// Where the peak's CPU went, by role, per debit; and what the HTTP layer alone answers.
fn print_costs(rows: &[Row]) {
    if rows.iter().all(|r| r.cost.is_none()) {
        return;
    }
    println!();
    println!(
        "CPU µs per debit at the peak (from /proc; the machine's busy share includes time the \
         hypervisor took):"
    );
    println!();
    let roles: Vec<&str> = cpu::ROLES.to_vec();
    println!(
        "| backend | workload | {} | PostgreSQL | all | machine busy | HTTP alone (400 before the store) |",
        roles.join(" | ")
    );
    println!("|{}", " --- |".repeat(roles.len() + 6));
    for row in rows {
        let without = row.without_http.as_ref().and_then(|a| a.cost.as_ref());
        let runs = [
            (row.cost.as_ref(), "", row.http_alone),
            (without, " (without HTTP)", None),
        ];
        for (cost, label, http_alone) in runs {
            let Some(cost) = cost else { continue };
            let all: f64 =
                cost.per_debit_us.iter().map(|(_, us)| us).sum::<f64>() + cost.postgres_us;
            let postgres = if row.backend == "PostgreSQL" {
                format!("{:.1}", cost.postgres_us)
            } else {
                "-".to_owned()
            };
            let alone = http_alone.map_or("-".to_owned(), |r| format!("{r:.0}/s"));
            println!(
                "| {} | {}{label} | {} | {postgres} | {all:.1} | {:.0}% | {alone} |",
                row.backend,
                row.workload,
                cells(&cost.per_debit_us),
                cost.machine_busy * 100.0
            );
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let scenarios = match &args.table {
        Some(postgres) => vec![
            Scenario {
                backend: postgres.clone(),
                mode: Mode::Uniform,
                accounts: 1000,
            },
            Scenario {
                backend: postgres.clone(),
                mode: Mode::Hot,
                accounts: 1,
            },
            Scenario {
                backend: "sqlite".into(),
                mode: Mode::Uniform,
                accounts: 200,
            },
            Scenario {
                backend: "sqlite".into(),
                mode: Mode::Hot,
                accounts: 1,
            },
        ],
        None => vec![Scenario {
            backend: args.backend.clone().unwrap_or_default(),
            mode: args.mode,
            accounts: args.accounts,
        }],
    };
    let args = Args {
        compare: args.compare || args.table.is_some(),
        ..args
    };
    let mut rows = Vec::new();
    for s in &scenarios {
        rows.push(scenario(&args, s).await?);
    }
    print_table(&rows, args.concurrency);
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
