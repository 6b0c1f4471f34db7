//! `billing-bank`: the bank workload. Starts several real `billing-server` processes on one
//! database, drives them with concurrent clients doing every money-moving operation (usage
//! debits, holds then captures or releases, admin grants and refunds, sandbox top-ups), and
//! proves the books under fault:
//!
//! - a checker audits the database in one snapshot every 100 ms while the load runs
//!   (`billing_store::audit_database`: balance = Σ ledger, running sums, never negative,
//!   idempotency claims, completed top-ups, hash chains);
//! - a client whose request fails (connection cut, `503`, a killed process) retries with the
//!   same `Idempotency-Key` on another process until it gets an answer; some successes are
//!   replayed on another process and must answer the same transaction;
//! - at the end, **conservation**: every wallet's ledger, kind by kind, holds exactly the
//!   operations that were acknowledged (none lost, none doubled), then the audit again.
//!
//! Faults, each optional: `--kills N` (`kill -9` of a random process at random moments, then
//! a restart), `--terminate-every-ms` (`pg_terminate_backend` of every connection to the
//! database), `--stop-postgres-secs` (the PostgreSQL cluster crashed, `-m immediate`, then
//! started: requests during the outage must answer `503`, never `500`, never hang; the
//! recovery time is measured). Any violation makes the exit status 1.
//!
//! ```sh
//! cargo build --release -p billing-server -p billing-loadgen
//! target/release/billing-bank --postgres postgres://postgres@127.0.0.1:5432/postgres \
//!     --processes 3 --clients 32 --seconds 60 --kills 5
//! ```

mod checks;
mod fleet;
mod ops;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

use crate::fleet::Fleet;
use crate::ops::{Ledgers, Outcomes};

#[derive(Debug, Parser)]
#[command(
    about = "The bank workload: several server processes, every money operation, faults, and a proof of the books"
)]
pub struct Args {
    /// Run on PostgreSQL: a server URL on which a fresh database is created.
    #[arg(long)]
    postgres: Option<String>,
    /// Run on a fresh SQLite file instead (several processes may share it).
    #[arg(long)]
    sqlite: bool,
    /// The `billing-server` binary (default: beside this one).
    #[arg(long)]
    server: Option<String>,
    #[arg(long, default_value_t = 3)]
    processes: usize,
    #[arg(long, default_value_t = 32)]
    clients: usize,
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    #[arg(long, default_value_t = 16)]
    wallets: usize,
    /// `kill -9` a random process this many times (at random moments) and restart it.
    #[arg(long, default_value_t = 0)]
    kills: usize,
    /// Terminate every PostgreSQL connection to the database this often (0: never).
    #[arg(long, default_value_t = 0)]
    terminate_every_ms: u64,
    /// Crash the PostgreSQL cluster (`pg_ctlcluster stop -m immediate`: nothing unflushed
    /// survives) once, mid-run, and start it again this long after.
    #[arg(long, default_value_t = 0)]
    stop_postgres_secs: u64,
    /// Prove the checks can fail: halfway through, add 1 unit to one ledger entry's amount
    /// behind the service's back. The run must then end with violations.
    #[arg(long)]
    tamper: bool,
}

/// Everything a run counts; any `violations` fails it.
#[derive(Default)]
pub struct Report {
    pub violations: Vec<String>,
}

impl Report {
    pub fn violation(&mut self, what: String) {
        if self.violations.len() < 200 {
            eprintln!("VIOLATION: {what}");
        }
        self.violations.push(what);
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(report) if report.violations.is_empty() => {
            println!("bank: 0 violations");
            ExitCode::SUCCESS
        }
        Ok(report) => {
            println!("bank: {} violation(s)", report.violations.len());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("billing-bank: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<Report, String> {
    let database_url = match (&args.postgres, args.sqlite) {
        (Some(admin), false) => billing_store::create_postgres_database(admin, "bank")
            .map_err(|e| format!("cannot create the database: {e}"))?,
        (None, true) => {
            let dir = std::env::temp_dir().join(format!("billing-bank-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            dir.join("billing.db")
                .to_str()
                .ok_or("temp path is not UTF-8")?
                .to_owned()
        }
        _ => return Err("give exactly one of --postgres URL or --sqlite".into()),
    };
    let server = match &args.server {
        Some(s) => s.into(),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("billing-server"),
    };
    println!(
        "bank: {} process(es) of {} on {database_url}, {} clients, {} s, {} wallets",
        args.processes,
        server.display(),
        args.clients,
        args.seconds,
        args.wallets
    );
    let fleet = Arc::new(Fleet::start(server, &database_url, args.processes)?);
    let http = reqwest::Client::builder()
        .timeout(ops::REQUEST_TIMEOUT)
        .pool_max_idle_per_host(64)
        .build()
        .map_err(|e| e.to_string())?;
    let (wallets, opening) = ops::setup(&http, &fleet, args.wallets).await?;
    let wallets = Arc::new(wallets);
    let outcomes = Arc::new(Outcomes::default());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);

    let checker = tokio::spawn(checks::checker(
        database_url.clone(),
        outcomes.clone(),
        deadline,
    ));
    let faults = tokio::spawn(fleet::faults(
        fleet.clone(),
        http.clone(),
        database_url.clone(),
        fleet::FaultPlan {
            kills: args.kills,
            terminate_every: Duration::from_millis(args.terminate_every_ms),
            stop_postgres: Duration::from_secs(args.stop_postgres_secs),
        },
        outcomes.clone(),
        started,
        deadline,
    ));
    if args.tamper {
        let url = database_url.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until((started + (deadline - started) / 2).into()).await;
            let done = tokio::task::spawn_blocking(move || {
                billing_store::execute_sql(
                    &url,
                    "UPDATE ledger_entries SET amount = amount + 1 \
                     WHERE seq = (SELECT max(seq) FROM ledger_entries)",
                )
            })
            .await;
            match done {
                Ok(Ok(1)) => println!("bank: tampered with one ledger entry"),
                other => {
                    eprintln!("billing-bank: the tamper did not change one row: {other:?}");
                    std::process::exit(3);
                }
            }
        });
    }
    let clients: Vec<_> = (0..args.clients)
        .map(|n| {
            tokio::spawn(ops::client(
                n,
                http.clone(),
                fleet.clone(),
                wallets.clone(),
                outcomes.clone(),
                deadline,
            ))
        })
        .collect();
    let mut tallies = vec![opening];
    for client in clients {
        tallies.push(client.await.map_err(|e| e.to_string())?);
    }
    let fault_report = faults.await.map_err(|e| e.to_string())?;
    let checks = checker.await.map_err(|e| e.to_string())?;
    let elapsed = started.elapsed();

    let mut report = Report::default();
    for v in outcomes.take_violations() {
        report.violation(v);
    }
    for v in checks.violations {
        report.violation(v);
    }
    let ledgers = Ledgers::merge(tallies, wallets.len());
    checks::conservation(&http, &fleet, &wallets, &ledgers, &mut report).await;
    match billing_store::audit_database(&database_url) {
        Ok(findings) => {
            for finding in findings {
                report.violation(format!("final audit: {finding}"));
            }
        }
        Err(e) => report.violation(format!("final audit could not run: {e}")),
    }
    if args.sqlite {
        checks::sqlite_integrity(&database_url, &mut report);
    }
    fleet.stop_all();
    println!(
        "bank: {:.1} s; acknowledged {} ({}), refused {}, replays checked {}; \
         answered 503 {} times, 500 {} times, connection failures {}; \
         {} audits during the load ({} skipped while the database was away); {}",
        elapsed.as_secs_f64(),
        ledgers.acknowledged(),
        ledgers.breakdown(),
        outcomes.refused(),
        outcomes.replays(),
        outcomes.unavailable(),
        outcomes.server_errors(),
        outcomes.connection_failures(),
        checks.audits,
        checks.skipped,
        fault_report,
    );
    Ok(report)
}
