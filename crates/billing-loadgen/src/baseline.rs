//! The database alone, one debit per transaction: what the service is compared with.
//!
//! PostgreSQL: `pgbench -n -M prepared -c 32 -j 2` running
//! `BEGIN; UPDATE wallets SET balance = balance - 1 WHERE id = :id AND balance >= 1;
//! INSERT INTO ledger …; COMMIT;`. SQLite: the same two statements in a `BEGIN IMMEDIATE`
//! transaction, in a loop on one connection (SQLite has one writer), WAL and
//! `synchronous = NORMAL` as the service uses.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;

diesel::table! {
    bench_wallets (id) {
        id -> BigInt,
        balance -> BigInt,
    }
}

diesel::table! {
    bench_ledger (id) {
        id -> BigInt,
        wallet_id -> BigInt,
        amount -> BigInt,
        created_at -> BigInt,
    }
}

const FUNDS: i64 = 1_000_000_000_000;

/// Debits a second of pgbench's one-debit script against `url` (tables made there).
pub fn pgbench(url: &str, wallets: usize, connections: usize, seconds: u64) -> Result<f64, String> {
    let mut conn = PgConnection::establish(url).map_err(|e| e.to_string())?;
    conn.batch_execute(&format!(
        "DROP TABLE IF EXISTS bench_ledger; DROP TABLE IF EXISTS bench_wallets;
         CREATE TABLE bench_wallets (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL);
         CREATE TABLE bench_ledger (id BIGSERIAL PRIMARY KEY, wallet_id BIGINT NOT NULL,
             amount BIGINT NOT NULL, created_at TIMESTAMPTZ NOT NULL);
         INSERT INTO bench_wallets SELECT g, {FUNDS} FROM generate_series(1, {wallets}) g;"
    ))
    .map_err(|e| e.to_string())?;
    conn.batch_execute("VACUUM ANALYZE bench_wallets")
        .map_err(|e| e.to_string())?;
    let script_path =
        std::env::temp_dir().join(format!("billing-pgbench-{}.sql", std::process::id()));
    let pick = if wallets <= 1 {
        "\\set id 1".to_owned()
    } else {
        format!("\\set id random(1, {wallets})")
    };
    let mut script = std::fs::File::create(&script_path).map_err(|e| e.to_string())?;
    write!(
        script,
        "{pick}\nBEGIN;\nUPDATE bench_wallets SET balance = balance - 1 WHERE id = :id AND balance >= 1;\n\
         INSERT INTO bench_ledger (wallet_id, amount, created_at) VALUES (:id, -1, now());\nCOMMIT;\n"
    )
    .map_err(|e| e.to_string())?;
    drop(script);
    if let Err(e) = checkpoint(url) {
        eprintln!("warning: no checkpoint before pgbench's run ({e})");
    }
    let output = Command::new("pgbench")
        .args(["-n", "-M", "prepared", "-j", "2"])
        .arg("-c")
        .arg(connections.to_string())
        .arg("-T")
        .arg(seconds.to_string())
        .arg("-f")
        .arg(&script_path)
        .arg(url)
        .output()
        .map_err(|e| {
            format!("cannot run pgbench (Debian: postgresql-contrib / postgresql client): {e}")
        })?;
    let _ = std::fs::remove_file(&script_path);
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "pgbench failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("tps = ")
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        })
        .ok_or_else(|| format!("no tps in pgbench's output: {stdout}"))
}

/// Makes PostgreSQL write a checkpoint now and answers how many it has made so far: a
/// measurement that starts right after one has the next timed checkpoint (every
/// `checkpoint_timeout`, 5 minutes by default) minutes away, so that its sync phase, which
/// stalls every commit behind the disk's flush for tens of milliseconds, does not fall at
/// random into one run and not another. Both the service's runs and pgbench's start so.
pub fn checkpoint(url: &str) -> Result<i64, String> {
    let mut conn = PgConnection::establish(url).map_err(|e| e.to_string())?;
    let before = checkpoints_on(&mut conn)?;
    conn.batch_execute("CHECKPOINT")
        .map_err(|e| e.to_string())?;
    // The checkpointer reports its count a moment after `CHECKPOINT` returns: wait for it,
    // or the run would count this checkpoint as one of its own.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let made = checkpoints_on(&mut conn)?;
        if made > before {
            return Ok(made);
        }
        if Instant::now() > deadline {
            // It was made, whatever the count says yet.
            return Ok(before + 1);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How many checkpoints PostgreSQL has made since its statistics were reset.
pub fn checkpoints(url: &str) -> Result<i64, String> {
    let mut conn = PgConnection::establish(url).map_err(|e| e.to_string())?;
    checkpoints_on(&mut conn)
}

fn checkpoints_on(conn: &mut PgConnection) -> Result<i64, String> {
    #[derive(QueryableByName)]
    struct Made {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        made: i64,
    }
    #[derive(QueryableByName)]
    struct Version {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        version: i32,
    }
    // PostgreSQL 17 moved the counts to pg_stat_checkpointer. Chosen by the server's version,
    // not by trying the new view first: a failed query is an ERROR line in the server's log.
    let version = diesel::sql_query("SELECT current_setting('server_version_num')::int AS version")
        .get_result::<Version>(conn)
        .map_err(|e| e.to_string())?
        .version;
    diesel::sql_query(if version >= 170_000 {
        "SELECT num_timed + num_requested AS made FROM pg_stat_checkpointer"
    } else {
        "SELECT checkpoints_timed + checkpoints_req AS made FROM pg_stat_bgwriter"
    })
    .get_result::<Made>(conn)
    .map(|m| m.made)
    .map_err(|e| e.to_string())
}

/// Debits a second of the one-debit loop on a SQLite file in `dir`.
pub fn sqlite_loop(dir: &std::path::Path, wallets: usize, seconds: u64) -> Result<f64, String> {
    let path = dir.join("baseline.db");
    let _ = std::fs::remove_file(&path);
    let path = path.to_str().ok_or("temp path is not UTF-8")?.to_owned();
    let mut conn = SqliteConnection::establish(&path).map_err(|e| e.to_string())?;
    conn.batch_execute(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
         CREATE TABLE bench_wallets (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);
         CREATE TABLE bench_ledger (id INTEGER PRIMARY KEY, wallet_id INTEGER NOT NULL,
             amount INTEGER NOT NULL, created_at INTEGER NOT NULL);",
    )
    .map_err(|e| e.to_string())?;
    let rows: Vec<_> = (1..=wallets.max(1) as i64)
        .map(|id| (bench_wallets::id.eq(id), bench_wallets::balance.eq(FUNDS)))
        .collect();
    for chunk in rows.chunks(500) {
        diesel::insert_into(bench_wallets::table)
            .values(chunk)
            .execute(&mut conn)
            .map_err(|e| e.to_string())?;
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut done = 0u64;
    while Instant::now() < deadline {
        let id = if wallets <= 1 {
            1
        } else {
            rand::random_range(1..=wallets as i64)
        };
        conn.immediate_transaction(|c| {
            diesel::update(
                bench_wallets::table
                    .filter(bench_wallets::id.eq(id))
                    .filter(bench_wallets::balance.ge(1)),
            )
            .set(bench_wallets::balance.eq(bench_wallets::balance - 1))
            .execute(c)?;
            diesel::insert_into(bench_ledger::table)
                .values((
                    bench_ledger::wallet_id.eq(id),
                    bench_ledger::amount.eq(-1),
                    bench_ledger::created_at.eq(started.elapsed().as_micros() as i64),
                ))
                .execute(c)
        })
        .map_err(|e| e.to_string())?;
        done += 1;
    }
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

/// The issue's reference loop for SQLite: the same two statements per `BEGIN IMMEDIATE`
/// through Python's `sqlite3` module (statement cache and all), on a file in `dir`. Answers
/// debits a second and the WAL's pages a debit: a passive checkpoint every 500 debits (about
/// 1,000 pages, where SQLite's automatic one would run, and timed as that one would be)
/// counts the log's frames.
pub fn python_sqlite_loop(
    dir: &std::path::Path,
    wallets: usize,
    seconds: u64,
) -> Result<Engine, String> {
    let path = dir.join("baseline-python.db");
    let _ = std::fs::remove_file(&path);
    let script = r#"
import random, sqlite3, sys, time
path, wallets, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
db = sqlite3.connect(path, isolation_level=None)
db.execute("PRAGMA journal_mode = WAL")
db.execute("PRAGMA synchronous = NORMAL")
db.execute("PRAGMA wal_autocheckpoint = 0")
db.execute("CREATE TABLE wallets (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)")
db.execute("CREATE TABLE ledger (id INTEGER PRIMARY KEY, wallet_id INTEGER NOT NULL, amount INTEGER NOT NULL, created_at REAL NOT NULL)")
db.executemany("INSERT INTO wallets VALUES (?, ?)", [(i, 10**12) for i in range(1, wallets + 1)])
checkpoint(db, path)
done, frames, start = 0, 0, time.monotonic()
end = start + seconds
while time.monotonic() < end:
    w = 1 if wallets <= 1 else random.randint(1, wallets)
    db.execute("BEGIN IMMEDIATE")
    db.execute("UPDATE wallets SET balance = balance - 1 WHERE id = ? AND balance >= 1", (w,))
    db.execute("INSERT INTO ledger (wallet_id, amount, created_at) VALUES (?, -1, ?)", (w, time.time()))
    db.execute("COMMIT")
    done += 1
    if done % 500 == 0:
        frames += checkpoint(db, path)
elapsed = time.monotonic() - start
if done % 500:
    frames += checkpoint(db, path)
print(done / elapsed, frames / max(done, 1), sqlite3.sqlite_version)
"#;
    let path = path.to_str().ok_or("temp path is not UTF-8")?;
    python(
        script,
        &[path, &wallets.max(1).to_string(), &seconds.to_string()],
    )
}

/// The SQLite engine alone running the service's own statements for a debit, in batches of
/// `batch` (the service's own at its peak), on the service's database file at `path` after
/// the service has stopped: its schema, its wallets, its ledger (`service_statements.py`).
pub fn python_service_statements(
    path: &str,
    wallets: usize,
    batch: usize,
    seconds: u64,
) -> Result<Engine, String> {
    python(
        include_str!("service_statements.py"),
        &[
            path,
            &wallets.max(1).to_string(),
            &batch.max(1).to_string(),
            &seconds.to_string(),
        ],
    )
}

/// What a Python loop on SQLite did: debits a second, the WAL pages each wrote, and the
/// version of Python's SQLite.
#[derive(Clone, Debug)]
pub struct Engine {
    pub rate: f64,
    pub pages: f64,
    pub sqlite: String,
}

/// What every Python script here starts with: `checkpoint(db, path)`, a passive checkpoint
/// of the whole log that answers how many frames it held, and ends the script when another
/// connection kept it from completing (the frame counts would be wrong).
const PYTHON_PRELUDE: &str = r#"
import sys
def checkpoint(db, path):
    busy, log, done = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    if busy != 0 or log != done:
        sys.exit("another connection is using %s: checkpoint %r" % (path, (busy, log, done)))
    return log
"#;

/// Runs a Python `script` (after [`PYTHON_PRELUDE`]) with `args`; parses its answer, "rate
/// pages version".
fn python(script: &str, args: &[&str]) -> Result<Engine, String> {
    let output = Command::new("python3")
        .arg("-c")
        .arg(format!("{PYTHON_PRELUDE}{script}"))
        .args(args)
        .output()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "python3 failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    parse_engine(&String::from_utf8_lossy(&output.stdout))
}

fn parse_engine(answer: &str) -> Result<Engine, String> {
    let mut words = answer.split_whitespace();
    let mut number = || words.next().and_then(|w| w.parse::<f64>().ok());
    match (number(), number()) {
        (Some(rate), Some(pages)) if rate.is_finite() && pages.is_finite() => {
            match (words.next(), words.next()) {
                (Some(sqlite), None) => Ok(Engine {
                    rate,
                    pages,
                    sqlite: sqlite.to_owned(),
                }),
                _ => Err(format!("python3's answer: {answer:?}")),
            }
        }
        _ => Err(format!("python3's answer: {answer:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_engine;

    #[test]
    fn an_engine_answer_is_a_rate_and_pages() {
        let engine = parse_engine("20554.3 2.01 3.40.1\n").expect("parsed");
        assert_eq!((engine.rate, engine.pages), (20554.3, 2.01));
        assert_eq!(engine.sqlite, "3.40.1");
        for bad in [
            "",
            "20554.3",
            "20554.3 2.01",
            "20554.3 x 3.40.1",
            "1 2 3 4",
            "NaN 1 3",
        ] {
            assert!(parse_engine(bad).is_err(), "{bad:?}");
        }
    }
}
