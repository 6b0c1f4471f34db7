//! The load itself: `POST /v1/usage` over plain HTTP/1.1 keep-alive connections, written
//! and parsed by hand so that the client costs the server's two cores as little as possible
//! (a general-purpose client spends more on each request than the service does).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What every connection of a load shares.
#[derive(Clone)]
pub struct Load {
    /// `host:port`.
    pub address: String,
    pub platform_key: String,
    pub account_ids: Arc<Vec<String>>,
    /// All debits on the first account.
    pub hot: bool,
    pub amount: String,
    pub deadline: Instant,
    pub sequence: Arc<AtomicU64>,
    /// Requests a second for this connection; `None`: as fast as answers come.
    pub rate: Option<f64>,
    /// Idempotency keys are `{prefix}-{n}`.
    pub key_prefix: String,
    /// The HTTP layer alone: every request is refused as invalid (`400`) before the store is
    /// asked, and those answers are what is counted.
    pub probe: bool,
}

/// One connection's results.
#[derive(Default)]
pub struct Tally {
    pub latencies_us: Vec<u32>,
    pub ok_per_account: HashMap<usize, u64>,
    pub refused: u64,
    pub unavailable: u64,
    pub errors: u64,
    /// `400` answers of a probe load.
    pub probed: u64,
}

impl Tally {
    pub fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        for (account, n) in other.ok_per_account {
            *self.ok_per_account.entry(account).or_default() += n;
        }
        self.refused += other.refused;
        self.unavailable += other.unavailable;
        self.errors += other.errors;
        self.probed += other.probed;
    }

    pub fn ok(&self) -> u64 {
        self.ok_per_account.values().sum()
    }
}

/// Reads one response: its status code (the body is read and dropped).
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<u16, String> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..header_end]).map_err(|e| e.to_string())?;
    let status: u16 = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line: {head}"))?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .ok_or("no content-length")?;
    while buf.len() < header_end + length {
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed in the body".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(status)
}

/// One connection: debits until the deadline (paced when the load has a rate). Latency is
/// measured from when a paced request was due, so that a stall is not hidden.
pub async fn drive(load: Load) -> Tally {
    let mut tally = Tally::default();
    let mut stream = match TcpStream::connect(&load.address).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("connect: {e}");
            tally.errors += 1;
            return tally;
        }
    };
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(8192);
    let interval = load.rate.map(|r| Duration::from_secs_f64(1.0 / r));
    // Each connection starts at a random phase of its interval, so that paced connections
    // do not send in synchronized bursts.
    let started =
        Instant::now() + interval.map_or(Duration::ZERO, |i| i.mul_f64(rand::random::<f64>()));
    let mut sent = 0u32;
    while Instant::now() < load.deadline {
        let due = match interval {
            Some(every) => {
                let due = started + every * sent;
                let now = Instant::now();
                if due > now {
                    tokio::time::sleep(due - now).await;
                }
                due
            }
            None => Instant::now(),
        };
        sent += 1;
        let index = if load.hot {
            0
        } else {
            rand::random_range(0..load.account_ids.len())
        };
        let n = load.sequence.fetch_add(1, Ordering::Relaxed);
        // A probe's amount is negative: the service refuses it (400, `Credits::positive` in
        // `record_usage`) after authentication and parsing, before any store call.
        let amount = if load.probe {
            "-1"
        } else {
            load.amount.as_str()
        };
        let body = format!(
            r#"{{"account_id":"{}","amount":{amount},"description":"API usage - load"}}"#,
            load.account_ids[index]
        );
        let request = format!(
            "POST /v1/usage HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
             Idempotency-Key: {}-{n}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            load.address,
            load.platform_key,
            load.key_prefix,
            body.len()
        );
        if let Err(e) = stream.write_all(request.as_bytes()).await {
            if tally.errors < 3 {
                eprintln!("send: {e}");
            }
            tally.errors += 1;
            break;
        }
        let status = read_response(&mut stream, &mut buf).await;
        let elapsed = u32::try_from(due.elapsed().as_micros()).unwrap_or(u32::MAX);
        match status {
            Ok(201) => {
                tally.latencies_us.push(elapsed);
                *tally.ok_per_account.entry(index).or_default() += 1;
            }
            Ok(402) => {
                tally.latencies_us.push(elapsed);
                tally.refused += 1;
            }
            Ok(503) => tally.unavailable += 1,
            Ok(400) if load.probe => {
                tally.latencies_us.push(elapsed);
                tally.probed += 1;
            }
            Ok(other) => {
                if tally.errors < 3 {
                    eprintln!(
                        "unexpected {other}: {}",
                        String::from_utf8_lossy(&buf[..buf.len().min(400)])
                    );
                }
                tally.errors += 1;
            }
            Err(e) => {
                if tally.errors < 3 {
                    eprintln!("response: {e}");
                }
                tally.errors += 1;
                break;
            }
        }
    }
    tally
}

/// Runs `connections` connections until the deadline; answers the merged tally and the
/// seconds it took.
pub async fn run(load: &Load, connections: usize) -> Result<(Tally, f64), String> {
    let started = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(drive(load.clone())))
        .collect();
    let mut total = Tally::default();
    for worker in workers {
        total.merge(worker.await.map_err(|e| e.to_string())?);
    }
    total.latencies_us.sort_unstable();
    Ok((total, started.elapsed().as_secs_f64()))
}

/// The `p`th percentile (nearest rank) of sorted microseconds, in milliseconds.
pub fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    f64::from(sorted[rank.clamp(1, sorted.len()) - 1]) / 1000.0
}
