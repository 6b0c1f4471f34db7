//! The proofs: the audit while the load runs, conservation at the end, SQLite's integrity.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use billing_core::Decimal;
use serde_json::Value;

use crate::Report;
use crate::fleet::Fleet;
use crate::ops::{Ledger, Ledgers, Outcomes, Wallet, decimal};

pub struct Checks {
    pub audits: u64,
    pub skipped: u64,
    pub violations: Vec<String>,
}

/// Audits the whole database in one snapshot every 100 ms until `deadline`. An audit that
/// cannot connect or read is skipped while the database is stopped on purpose, and once
/// otherwise (a cut connection); two in a row outside an outage are a violation.
pub async fn checker(database_url: String, outcomes: Arc<Outcomes>, deadline: Instant) -> Checks {
    let mut checks = Checks {
        audits: 0,
        skipped: 0,
        violations: Vec::new(),
    };
    let mut failed_in_a_row = 0;
    while Instant::now() < deadline {
        let next = Instant::now() + Duration::from_millis(100);
        let url = database_url.clone();
        match tokio::task::spawn_blocking(move || billing_store::audit_database(&url)).await {
            Ok(Ok(findings)) => {
                failed_in_a_row = 0;
                checks.audits += 1;
                if !findings.is_empty() && checks.violations.len() < 50 {
                    for finding in findings {
                        checks
                            .violations
                            .push(format!("audit during the load: {finding}"));
                    }
                }
            }
            Ok(Err(e)) if !outcomes.in_outage() => {
                checks.skipped += 1;
                failed_in_a_row += 1;
                if failed_in_a_row >= 2 {
                    checks.violations.push(format!(
                        "the audit failed twice in a row outside an outage: {e}"
                    ));
                    failed_in_a_row = 0;
                }
            }
            _ => checks.skipped += 1,
        }
        tokio::time::sleep_until(next.into()).await;
    }
    checks
}

/// Every transaction of `wallet`, paging with `starting_after`.
async fn transactions(
    http: &reqwest::Client,
    fleet: &Fleet,
    wallet: &Wallet,
) -> Result<Vec<Value>, String> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let base = fleet.pick(None).ok_or("no process is up")?;
        let path = match &cursor {
            Some(c) => format!("{base}/v1/wallet/transactions?limit=100&starting_after={c}"),
            None => format!("{base}/v1/wallet/transactions?limit=100"),
        };
        let body: Value = http
            .get(path)
            .bearer_auth(&wallet.customer_key)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let page = body["transactions"]
            .as_array()
            .ok_or_else(|| format!("not a page: {body}"))?
            .clone();
        cursor = page
            .last()
            .and_then(|t| t["id"].as_str())
            .map(str::to_owned);
        all.extend(page);
        if body["has_more"] != Value::Bool(true) {
            return Ok(all);
        }
    }
}

/// The final status of a top-up: `completed` ones must be in the ledger, others not.
async fn top_up_status(
    http: &reqwest::Client,
    fleet: &Fleet,
    wallet: &Wallet,
    id: &str,
) -> Option<String> {
    let base = fleet.pick(None)?;
    let body: Value = http
        .get(format!("{base}/v1/wallet/top-ups/{id}"))
        .bearer_auth(&wallet.customer_key)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    body["status"].as_str().map(str::to_owned)
}

/// The wallet's top-ups that are completed now, with their credits and bonus.
async fn completed_top_ups(
    http: &reqwest::Client,
    fleet: &Fleet,
    wallet: &Wallet,
    acked: &Ledger,
) -> Vec<(String, (Decimal, Decimal))> {
    let mut completed = Vec::new();
    for (id, credits) in &acked.topups {
        if top_up_status(http, fleet, wallet, id).await.as_deref() == Some("completed") {
            completed.push((id.clone(), *credits));
        }
    }
    completed
}

fn sum(items: &[(String, Decimal)]) -> Decimal {
    items.iter().map(|(_, a)| *a).sum()
}

/// Conservation: every wallet's ledger holds exactly what was acknowledged, kind by kind
/// (none lost, none doubled, no other entry), and its balance is their sum.
pub async fn conservation(
    http: &reqwest::Client,
    fleet: &Fleet,
    wallets: &[Wallet],
    ledgers: &Ledgers,
    report: &mut Report,
) {
    for (wallet, acked) in wallets.iter().zip(&ledgers.0) {
        // A top-up may complete while the ledger is read (the reconciler): read the
        // statuses before and after the ledger, until they agree.
        let mut read = None;
        for _ in 0..5 {
            let before = completed_top_ups(http, fleet, wallet, acked).await;
            let entries = transactions(http, fleet, wallet).await;
            let after = completed_top_ups(http, fleet, wallet, acked).await;
            if before == after {
                read = Some((entries, after));
                break;
            }
        }
        let Some((entries, completed)) = read else {
            report.violation(format!("{}: top-ups kept completing", wallet.id));
            continue;
        };
        let entries = match entries {
            Ok(e) => e,
            Err(e) => {
                report.violation(format!("{}: cannot list transactions: {e}", wallet.id));
                continue;
            }
        };
        let mut by_kind: HashMap<String, (usize, Decimal)> = HashMap::new();
        let mut ids = HashSet::new();
        let mut total = Decimal::ZERO;
        for entry in &entries {
            let amount = decimal(&entry["amount"]).unwrap_or_default();
            let kind = entry["type"].as_str().unwrap_or("?").to_owned();
            let slot = by_kind.entry(kind).or_default();
            slot.0 += 1;
            slot.1 += amount;
            total += amount;
            ids.insert(entry["id"].as_str().unwrap_or_default().to_owned());
        }
        let credits: Vec<(String, Decimal)> = completed
            .iter()
            .map(|(id, (c, _))| (id.clone(), *c))
            .collect();
        let bonuses: Vec<(String, Decimal)> = completed
            .iter()
            .filter(|(_, (_, b))| !b.is_zero())
            .map(|(id, (_, b))| (id.clone(), *b))
            .collect();
        let want: [(&str, usize, Decimal); 4] = [
            (
                "usage",
                acked.debits.len() + acked.captures.len(),
                -(sum(&acked.debits) + sum(&acked.captures)),
            ),
            (
                "bonus",
                acked.grants.len() + bonuses.len(),
                sum(&acked.grants) + sum(&bonuses),
            ),
            ("refund", acked.refunds.len(), sum(&acked.refunds)),
            ("topup", credits.len(), sum(&credits)),
        ];
        for (kind, count, amount) in want {
            let got = by_kind.remove(kind).unwrap_or_default();
            if got != (count, amount) {
                report.violation(format!(
                    "{}: {kind} entries {} summing {} but {count} acknowledged summing {amount}",
                    wallet.id, got.0, got.1
                ));
            }
        }
        if !by_kind.is_empty() {
            report.violation(format!(
                "{}: entries nobody acknowledged: {by_kind:?}",
                wallet.id
            ));
        }
        for (id, _) in acked
            .debits
            .iter()
            .chain(&acked.captures)
            .chain(&acked.grants)
            .chain(&acked.refunds)
        {
            if !ids.contains(id) {
                report.violation(format!(
                    "{}: acknowledged transaction {id} is not in the ledger",
                    wallet.id
                ));
            }
        }
        if ids.len() != entries.len() {
            report.violation(format!("{}: a transaction id listed twice", wallet.id));
        }
        let balance = match fleet.pick(None) {
            Some(base) => http
                .get(format!("{base}/v1/wallet/balance"))
                .bearer_auth(&wallet.customer_key)
                .send()
                .await
                .ok()
                .map(|r| r.json::<Value>()),
            None => None,
        };
        let balance = match balance {
            Some(body) => body.await.ok().and_then(|b| decimal(&b["balance"])),
            None => None,
        };
        if balance != Some(total) {
            report.violation(format!(
                "{}: balance {balance:?} but its ledger sums to {total}",
                wallet.id
            ));
        }
    }
}

/// `PRAGMA integrity_check` of the SQLite file after the run (and its kills).
pub fn sqlite_integrity(path: &str, report: &mut Report) {
    use diesel::{Connection, RunQueryDsl, SqliteConnection};
    #[derive(diesel::QueryableByName)]
    struct Line {
        #[diesel(sql_type = diesel::sql_types::Text)]
        integrity_check: String,
    }
    let lines: Result<Vec<Line>, String> = SqliteConnection::establish(path)
        .map_err(|e| e.to_string())
        .and_then(|mut c| {
            diesel::sql_query("PRAGMA integrity_check")
                .load(&mut c)
                .map_err(|e| e.to_string())
        });
    match lines {
        Ok(lines) if lines.len() == 1 && lines[0].integrity_check == "ok" => {
            println!("bank: PRAGMA integrity_check: ok");
        }
        Ok(lines) => report.violation(format!(
            "PRAGMA integrity_check: {:?}",
            lines.iter().map(|l| &l.integrity_check).collect::<Vec<_>>()
        )),
        Err(e) => report.violation(format!("PRAGMA integrity_check could not run: {e}")),
    }
}
