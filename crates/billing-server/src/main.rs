//! `billing-server`: runs the service, or performs an admin task without HTTP.

use std::collections::HashMap;
use std::process::ExitCode;

use billing_core::ports::KeyScope;
use billing_server::{Config, StatementRequest, build, issue_key_for, start, write_statement};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Prepaid-credits billing service. Configured by environment variables (see README).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP service (the default).
    Serve,
    /// Create an account and print its id.
    CreateAccount {
        #[arg(long)]
        name: String,
        #[arg(long)]
        email: String,
    },
    /// Issue an API key and print it (shown once).
    IssueKey {
        /// customer, platform or admin.
        #[arg(long)]
        scope: String,
        /// The account (required for a customer key).
        #[arg(long)]
        account: Option<String>,
    },
    /// Audit the books: every wallet recomputed from its ledger (balance = sum of entries,
    /// running balances, never negative), every idempotency key and completed top-up
    /// checked. Prints each finding; exits non-zero if there is any. Safe while the service
    /// runs (one read-only snapshot).
    Audit,
    /// Back up a SQLite database to a new file (`VACUUM INTO`: one consistent snapshot,
    /// safe while the service runs). For PostgreSQL use `pg_dump` (README, "Backups").
    Backup {
        /// The file to write; it must not exist yet.
        file: String,
    },
    /// Write an account's statement as CSV (RFC 4180, exact decimals): every transaction of
    /// the period, oldest first. The opening and closing balances go to stderr.
    Statement {
        /// The account (`acct_…`).
        #[arg(long)]
        account: String,
        /// From this day (`2026-11-01`, UTC) or RFC 3339 instant, inclusive.
        #[arg(long)]
        from: Option<String>,
        /// To this day or instant, exclusive (`--from 2026-11-01 --to 2026-12-01` is
        /// November).
        #[arg(long)]
        to: Option<String>,
        /// Only this type: topup, usage, refund, bonus or adjustment.
        #[arg(long = "type")]
        kind: Option<String>,
        /// Write to this file (it must not exist yet) instead of stdout.
        #[arg(long)]
        output: Option<String>,
    },
}

fn init_logs() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,actix_server=warn"));
    let json = std::env::var("BILLING_LOG_FORMAT").is_ok_and(|f| f == "json");
    // Logs go to stderr: stdout carries what the commands print (ids, keys).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        // Colours only for a person at a terminal, never escape codes in a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let config = Config::from_env(&env).map_err(|e| e.to_string())?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let running = start(config).await.map_err(|e| e.to_string())?;
            if let Some(key) = &running.new_admin_key {
                println!(
                    "\nNo admin key existed, so one was created. It is shown this once:\n\n    {key}\n\n\
                     Keep it: only its hash is stored. Set BILLING_ADMIN_KEY to choose your own.\n"
                );
            }
            let base_url = running.base_url.clone();
            // Listening for SIGTERM before saying so: a stop right after start drains too.
            let serving = running.serve_until_shutdown();
            println!("{}{base_url}", billing_server::LISTENING_LINE);
            serving.await.map_err(|e| e.to_string())
        }
        Command::CreateAccount { name, email } => {
            let public = config
                .public_url
                .clone()
                .unwrap_or_else(|| format!("http://{}", config.listen));
            let parts = build(&config, &public).await.map_err(|e| e.to_string())?;
            let account = parts
                .billing
                .create_account(&name, &email)
                .await
                .map_err(|e| e.to_string())?;
            println!("{}", account.id);
            Ok(())
        }
        Command::Audit => {
            // Reads only: no migration, no chaining, no writer (a server may be running).
            let url = config.database_url.clone();
            let findings = tokio::task::spawn_blocking(move || billing_store::audit_database(&url))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("audit: {e}"))?;
            if findings.is_empty() {
                println!("audit: the books are clean");
                return Ok(());
            }
            for finding in &findings {
                println!("FINDING: {finding}");
            }
            Err(format!("audit: {} finding(s)", findings.len()))
        }
        Command::Backup { file } => {
            let url = config.database_url.clone();
            let target = file.clone();
            tokio::task::spawn_blocking(move || billing_store::backup_sqlite(&url, &target))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("backup: {e}"))?;
            println!("backup: {file}");
            Ok(())
        }
        Command::Statement {
            account,
            from,
            to,
            kind,
            output,
        } => {
            let request = StatementRequest {
                account,
                from,
                to,
                kind,
            };
            let written = write_statement(&config, &request, output.as_deref())
                .await
                .map_err(|e| format!("statement: {e}"))?;
            eprintln!("{written}");
            Ok(())
        }
        Command::IssueKey { scope, account } => {
            let scope = KeyScope::parse(&scope).ok_or_else(|| {
                format!("--scope must be customer, platform or admin, not {scope:?}")
            })?;
            let public = config
                .public_url
                .clone()
                .unwrap_or_else(|| format!("http://{}", config.listen));
            let parts = build(&config, &public).await.map_err(|e| e.to_string())?;
            let issued = issue_key_for(&parts, scope, account.as_deref())
                .await
                .map_err(|e| e.to_string())?;
            println!("{}", issued.secret);
            Ok(())
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    init_logs();
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("billing-server: {message}");
            ExitCode::FAILURE
        }
    }
}
