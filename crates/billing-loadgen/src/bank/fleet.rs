//! The server processes and the faults done to them and to their database.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use diesel::{Connection, PgConnection, RunQueryDsl};

use crate::ops::Outcomes;

pub const ADMIN_KEY: &str = "bk_admin_bank_0123456789abcdef0123456789abcdef01";
const SANDBOX_SECRET: &str = "bank-sandbox-secret";

struct Process {
    child: Option<Child>,
    /// `None` while the process is down.
    base: Option<String>,
}

/// The server processes, each restartable in place (a restart listens on a new port).
pub struct Fleet {
    server: PathBuf,
    database_url: String,
    logs: PathBuf,
    processes: Vec<Mutex<Process>>,
}

impl Fleet {
    /// Starts `n` processes at once on `database_url` (they race to migrate it).
    pub fn start(server: PathBuf, database_url: &str, n: usize) -> Result<Fleet, String> {
        let logs = std::env::temp_dir().join(format!("billing-bank-logs-{}", std::process::id()));
        std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
        let fleet = Fleet {
            server,
            database_url: database_url.to_owned(),
            logs,
            processes: (0..n)
                .map(|_| {
                    Mutex::new(Process {
                        child: None,
                        base: None,
                    })
                })
                .collect(),
        };
        let started: Vec<_> = (0..n).map(|i| fleet.spawn(i)).collect::<Result<_, _>>()?;
        for (i, child) in started.into_iter().enumerate() {
            fleet.attach(i, child)?;
        }
        println!(
            "bank: processes started, their logs in {}",
            fleet.logs.display()
        );
        Ok(fleet)
    }

    fn spawn(&self, i: usize) -> Result<Child, String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("process-{i}.log")))
            .map_err(|e| e.to_string())?;
        Command::new(&self.server)
            .env("BILLING_LISTEN", "127.0.0.1:0")
            .env("BILLING_DATABASE_URL", &self.database_url)
            .env("BILLING_ADMIN_KEY", ADMIN_KEY)
            .env("BILLING_SANDBOX_SECRET", SANDBOX_SECRET)
            .env("BILLING_WORKERS", "2")
            .env("BILLING_DB_MAX_CONNECTIONS", "8")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.server.display()))
    }

    /// Waits for the child's "listening on" line and makes it the process `i`.
    fn attach(&self, i: usize, mut child: Child) -> Result<(), String> {
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let base = BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .find_map(|l| billing_server::listening_base(&l));
            let _ = tx.send(base);
        });
        let base = rx
            .recv_timeout(Duration::from_secs(120))
            .ok()
            .flatten()
            .ok_or_else(|| {
                let _ = child.kill();
                format!(
                    "process {i} did not start: see {}",
                    self.logs.join(format!("process-{i}.log")).display()
                )
            })?;
        let mut slot = self.processes[i].lock().map_err(|_| "poisoned")?;
        slot.child = Some(child);
        slot.base = Some(base);
        Ok(())
    }

    /// The base URL of a live process, avoiding `avoid` when another is up.
    pub fn pick(&self, avoid: Option<&str>) -> Option<String> {
        let live: Vec<String> = self
            .processes
            .iter()
            .filter_map(|p| p.lock().ok().and_then(|p| p.base.clone()))
            .collect();
        let others: Vec<&String> = live.iter().filter(|b| Some(b.as_str()) != avoid).collect();
        if !others.is_empty() {
            return Some(others[rand::random_range(0..others.len())].clone());
        }
        live.first().cloned()
    }

    pub fn bases(&self) -> Vec<String> {
        self.processes
            .iter()
            .filter_map(|p| p.lock().ok().and_then(|p| p.base.clone()))
            .collect()
    }

    /// `kill -9` of process `i`, then a restart; answers how long it was down.
    pub fn kill_and_restart(&self, i: usize) -> Result<Duration, String> {
        {
            let mut slot = self.processes[i].lock().map_err(|_| "poisoned")?;
            slot.base = None;
            if let Some(mut child) = slot.child.take() {
                child.kill().map_err(|e| e.to_string())?;
                let _ = child.wait();
            }
        }
        let down = Instant::now();
        let child = self.spawn(i)?;
        self.attach(i, child)?;
        Ok(down.elapsed())
    }

    pub fn stop_all(&self) {
        for p in &self.processes {
            if let Ok(mut slot) = p.lock() {
                slot.base = None;
                if let Some(mut child) = slot.child.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.processes.len()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop_all();
    }
}

pub struct FaultPlan {
    pub kills: usize,
    pub terminate_every: Duration,
    pub stop_postgres: Duration,
}

/// Runs the plan's faults until `deadline`; answers what was done and measured.
pub async fn faults(
    fleet: std::sync::Arc<Fleet>,
    http: reqwest::Client,
    database_url: String,
    plan: FaultPlan,
    outcomes: std::sync::Arc<Outcomes>,
    started: Instant,
    deadline: Instant,
) -> String {
    let span = deadline.saturating_duration_since(started);
    // Kills at random moments between 10% and 80% of the run, in order.
    let mut kill_at: Vec<Duration> = (0..plan.kills)
        .map(|_| span.mul_f64(0.1 + 0.7 * rand::random::<f64>()))
        .collect();
    kill_at.sort();
    // Early enough that the load outlasts the outage and PostgreSQL's crash recovery (which
    // syncs every file of every database on the server) with time to show writes recovering.
    let stop_at = span.mul_f64(0.25);
    let mut stopped = plan.stop_postgres.is_zero();
    let (mut kills, mut terminated, mut rounds) = (0, 0, 0);
    let mut restart_times = Vec::new();
    let mut outage = String::new();
    let mut next_terminate = started + plan.terminate_every;
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let elapsed = now - started;
        if kills < kill_at.len() && elapsed >= kill_at[kills] {
            let victim = rand::random_range(0..fleet.len());
            let f = fleet.clone();
            match tokio::task::spawn_blocking(move || f.kill_and_restart(victim)).await {
                Ok(Ok(down)) => restart_times.push(down),
                Ok(Err(e)) => outcomes.violation(format!("restart after kill -9 failed: {e}")),
                Err(e) => outcomes.violation(format!("restart task failed: {e}")),
            }
            kills += 1;
            println!("bank: kill -9 #{kills} of process {victim} at {elapsed:.1?}");
            continue;
        }
        if !plan.terminate_every.is_zero() && now >= next_terminate {
            next_terminate = now + plan.terminate_every;
            let url = database_url.clone();
            if let Ok(Ok(n)) = tokio::task::spawn_blocking(move || terminate_all(&url)).await {
                terminated += n;
                rounds += 1;
            }
        }
        if !stopped && elapsed >= stop_at {
            stopped = true;
            outage = stop_postgres(&fleet, &http, plan.stop_postgres, &outcomes).await;
            continue;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut said = format!("{kills} kill -9 survived");
    if !restart_times.is_empty() {
        let worst = restart_times.iter().max().copied().unwrap_or_default();
        said.push_str(&format!(" (restart took at most {worst:.1?})"));
    }
    if rounds > 0 {
        said.push_str(&format!(
            "; {rounds} rounds of pg_terminate_backend ({terminated} connections cut)"
        ));
    }
    if !outage.is_empty() {
        said.push_str("; ");
        said.push_str(&outage);
    }
    said
}

/// Cuts every other connection to this database; answers how many.
fn terminate_all(url: &str) -> Result<usize, String> {
    #[derive(diesel::QueryableByName)]
    struct Cut {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = PgConnection::establish(url).map_err(|e| e.to_string())?;
    let cut: Vec<Cut> = diesel::sql_query(
        "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .load(&mut conn)
    .map_err(|e| e.to_string())?;
    Ok(cut.first().map_or(0, |c| c.n as usize))
}

fn pg_ctl(action: &str) -> Result<(), String> {
    let version = std::fs::read_dir("/etc/postgresql")
        .map_err(|e| format!("no /etc/postgresql: {e}"))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .ok_or("no PostgreSQL cluster in /etc/postgresql")?;
    let mut command = Command::new("pg_ctlcluster");
    command.args(["--skip-systemctl-redirect", &version, "main", action]);
    if action == "stop" {
        // A crash, not a shutdown: no checkpoint, and the log's unflushed buffers are lost,
        // so a write acknowledged before its commit reached the disk would be missing and
        // the conservation check fail.
        command.args(["-m", "immediate"]);
    }
    let status = command.status().map_err(|e| e.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("pg_ctlcluster {action} failed: {status}"))
    }
}

/// Stops PostgreSQL for `outage`, checks that `/readyz` says so, starts it again and
/// measures how long until every process is ready and a write is acknowledged.
async fn stop_postgres(
    fleet: &Fleet,
    http: &reqwest::Client,
    outage: Duration,
    outcomes: &Outcomes,
) -> String {
    // The audit may fail from the moment the shutdown begins.
    outcomes.set_outage(true);
    if let Err(e) = tokio::task::spawn_blocking(|| pg_ctl("stop"))
        .await
        .unwrap_or_else(|e| Err(e.to_string()))
    {
        outcomes.violation(format!("cannot stop PostgreSQL: {e}"));
        return String::new();
    }
    println!("bank: PostgreSQL crashed (immediate stop), down for {outage:?}");
    tokio::time::sleep(outage / 2).await;
    for base in fleet.bases() {
        let status = http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .map_err(|e| e.to_string());
        if status != Ok(503) {
            outcomes.violation(format!(
                "/readyz of {base} during the outage answered {status:?}, not 503"
            ));
        }
    }
    tokio::time::sleep(outage - outage / 2).await;
    if let Err(e) = tokio::task::spawn_blocking(|| pg_ctl("start"))
        .await
        .unwrap_or_else(|e| Err(e.to_string()))
    {
        outcomes.violation(format!("cannot start PostgreSQL again: {e}"));
        return String::new();
    }
    let back = Instant::now();
    let acked_before = outcomes.acknowledged_now();
    let (mut ready_after, mut write_after) = (None, None);
    while back.elapsed() < Duration::from_secs(60)
        && (ready_after.is_none() || write_after.is_none())
    {
        if write_after.is_none() && outcomes.acknowledged_now() > acked_before {
            write_after = Some(back.elapsed());
        }
        if ready_after.is_none() {
            let mut all = true;
            for base in fleet.bases() {
                let ok = http
                    .get(format!("{base}/readyz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                all &= ok;
            }
            if all {
                ready_after = Some(back.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    outcomes.set_outage(false);
    match (ready_after, write_after) {
        (Some(r), Some(w)) => format!(
            "PostgreSQL crashed, down {outage:?}: every /readyz 200 again {r:.2?} after it was back, \
             the first write acknowledged after {w:.2?}"
        ),
        _ => {
            outcomes.violation(format!(
                "no recovery within 60 s of PostgreSQL's restart (ready: {ready_after:?}, \
                 write: {write_after:?})"
            ));
            String::new()
        }
    }
}
