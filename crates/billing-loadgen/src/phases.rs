//! Where the ledger writers' time went during a run, from the service's own `/metrics`
//! (`billing_ledger_posting_phase_seconds` by phase, `billing_ledger_batch_postings`), read
//! before and after: per posting, the time each phase of its transaction took (reading the
//! wallets' state under their locks, deciding, writing, committing), and the postings per
//! batch. Unlike the CPU figures, these are wall-clock times: a phase that waited for the
//! database (or for a core) counts its wait. For the run at half the peak, the tail (from
//! the histograms' buckets): the debits the server itself took over 10 ms on, how many
//! batches took over 2.5, 5, 10, 50 and 250 ms and the writer-seconds they took in all, and
//! how many transactions had a phase over 10 ms, by phase, so that a p99 over 10 ms shows
//! whether the server's handling, the writers' queues or a slow phase explain it.

use std::collections::BTreeMap;

use reqwest::{Client, StatusCode};

/// The phases in the order they are printed.
pub const PHASES: [&str; 4] = ["read", "decide", "write", "commit"];

const PHASE_SUM: &str = "billing_ledger_posting_phase_seconds_sum";
const BATCH_SUM: &str = "billing_ledger_batch_postings_sum";
const BATCH_COUNT: &str = "billing_ledger_batch_postings_count";
const PHASE_BUCKET: &str = "billing_ledger_posting_phase_seconds_bucket";
const PHASE_COUNT: &str = "billing_ledger_posting_phase_seconds_count";
const BATCH_SECONDS_BUCKET: &str = "billing_ledger_batch_seconds_bucket";
const BATCH_SECONDS_COUNT: &str = "billing_ledger_batch_seconds_count";
const BATCH_SECONDS_SUM: &str = "billing_ledger_batch_seconds_sum";
const REQUEST_BUCKET: &str = "billing_http_request_duration_seconds_bucket";
const REQUEST_COUNT: &str = "billing_http_request_duration_seconds_count";
/// The debits' series: the server's own time for each, from its middleware to its answer.
const USAGE_ROUTE: &str = "/v1/usage";
/// The bucket bound a phase's tail is counted above: the p99 target.
const SLOW_LE: &str = "0.01";
/// The bounds a batch's tail is counted above (buckets of `billing_ledger_batch_seconds`):
/// a caller waits for the batch in progress and then for its own, so batches well under
/// 10 ms can add up to a request over it.
/// The longer bounds show a stall (a batch of 200 ms delays every request due meanwhile).
const BATCH_LES: [(&str, &str); 5] = [
    ("0.0025", "2.5"),
    ("0.005", "5"),
    ("0.01", "10"),
    ("0.05", "50"),
    ("0.25", "250"),
];

/// The counters read from one scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    /// Seconds spent in each phase so far, by phase.
    phase_seconds: BTreeMap<String, f64>,
    /// Postings the writers' batches held so far, and the batches.
    batch_postings: f64,
    batches: f64,
    /// Samples of each phase so far, and those within 10 ms.
    phase_samples: BTreeMap<String, (f64, f64)>,
    /// Batches timed so far, and the seconds they took.
    timed_batches: f64,
    batch_seconds: f64,
    /// Those within each of `BATCH_LES`' bounds.
    batches_within: BTreeMap<String, f64>,
    /// Debit requests the server answered so far, and those within 10 ms of its own time.
    debits: (f64, f64),
}

/// Whether a request series' labels are the debits' (`POST /v1/usage`).
fn is_debit(labels: &str) -> bool {
    label(labels, "route") == Some(USAGE_ROUTE) && label(labels, "method") == Some("POST")
}

/// The value of `name="…"` in a series' labels (`{a="x",b="y"}`; the values here hold no
/// quotes or commas).
fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    let inner = labels.strip_prefix('{')?.strip_suffix('}')?;
    inner.split(',').find_map(|pair| {
        pair.strip_prefix(name)?
            .strip_prefix("=\"")?
            .strip_suffix('"')
    })
}

/// Reads the figures out of Prometheus's text format (the lines this module needs).
pub fn parse(text: &str) -> Scrape {
    let mut scrape = Scrape::default();
    for line in text.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        if let Some(labels) = series.strip_prefix(PHASE_SUM) {
            if let Some(phase) = labels
                .strip_prefix("{phase=\"")
                .and_then(|rest| rest.strip_suffix("\"}"))
            {
                *scrape.phase_seconds.entry(phase.to_owned()).or_default() += value;
            }
        } else if series == BATCH_SUM {
            scrape.batch_postings = value;
        } else if series == BATCH_COUNT {
            scrape.batches = value;
        } else if let Some(labels) = series.strip_prefix(PHASE_BUCKET) {
            if let Some(phase) = label(labels, "phase")
                && label(labels, "le") == Some(SLOW_LE)
            {
                scrape.phase_samples.entry(phase.to_owned()).or_default().1 += value;
            }
        } else if let Some(labels) = series.strip_prefix(PHASE_COUNT) {
            if let Some(phase) = label(labels, "phase") {
                scrape.phase_samples.entry(phase.to_owned()).or_default().0 += value;
            }
        } else if let Some(labels) = series.strip_prefix(BATCH_SECONDS_BUCKET) {
            if let Some(le) = label(labels, "le") {
                *scrape.batches_within.entry(le.to_owned()).or_default() += value;
            }
        } else if series == BATCH_SECONDS_COUNT {
            scrape.timed_batches += value;
        } else if series == BATCH_SECONDS_SUM {
            scrape.batch_seconds += value;
        } else if let Some(labels) = series.strip_prefix(REQUEST_BUCKET)
            && is_debit(labels)
            && label(labels, "le") == Some(SLOW_LE)
        {
            scrape.debits.1 += value;
        } else if let Some(labels) = series.strip_prefix(REQUEST_COUNT)
            && is_debit(labels)
        {
            scrape.debits.0 += value;
        }
    }
    scrape
}

/// The service's `/metrics` now, or `None` when it does not answer them (off, or another
/// token).
pub async fn scrape(client: &Client, base: &str, token: Option<&str>) -> Option<Scrape> {
    let mut request = client.get(format!("{base}/metrics"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.ok()?;
    if response.status() != StatusCode::OK {
        return None;
    }
    Some(parse(&response.text().await.ok()?))
}

/// A run's writer time per posting, by phase, and its postings per batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// Microseconds per posting, in `PHASES` order.
    pub per_posting_us: Vec<(&'static str, f64)>,
    /// Mean postings per batch.
    pub batch_mean: f64,
}

impl Split {
    /// The split between two scrapes; `None` when no batch was committed between them.
    pub fn between(before: &Scrape, after: &Scrape) -> Option<Split> {
        let postings = after.batch_postings - before.batch_postings;
        let batches = after.batches - before.batches;
        if postings <= 0.0 || batches <= 0.0 {
            return None;
        }
        let seconds = |phase: &str, scrape: &Scrape| -> f64 {
            scrape.phase_seconds.get(phase).copied().unwrap_or(0.0)
        };
        Some(Split {
            per_posting_us: PHASES
                .iter()
                .map(|&phase| {
                    let spent = seconds(phase, after) - seconds(phase, before);
                    (phase, spent.max(0.0) * 1e6 / postings)
                })
                .collect(),
            batch_mean: postings / batches,
        })
    }

    /// `read 1.0, decide 2.0, … (all 10.0); 16.0 postings a batch`.
    pub fn line(&self) -> String {
        format!(
            "{} (all {:.1}); {:.1} postings a batch",
            by_phase(&self.per_posting_us, 1),
            self.total_us(),
            self.batch_mean
        )
    }

    /// The phases' sum, per posting.
    pub fn total_us(&self) -> f64 {
        self.per_posting_us.iter().map(|(_, us)| us).sum()
    }
}

/// A run's tail in the service: debit requests the server itself took over 10 ms on,
/// batches over 2.5, 5, 10, 50 and 250 ms, and transactions with a phase over 10 ms, by phase. What
/// the client saw beyond these was outside the server's handling (sockets, scheduling, the
/// client).
#[derive(Debug, Clone, PartialEq)]
pub struct Tail {
    /// Debit requests the server answered in the run, and those it took over 10 ms on.
    pub debits: (f64, f64),
    /// Batches timed in the run, and the seconds they took (all writers together: over the
    /// run's length, how busy the writers were; near 1 per writer, postings queue).
    pub batches: f64,
    pub batch_seconds: f64,
    /// Those that took over each bound, in ms (waits for a connection and the writer lock
    /// included).
    pub slow_batches: Vec<(&'static str, f64)>,
    /// Transactions with the phase over 10 ms, in `PHASES` order.
    pub slow_phases: Vec<(&'static str, f64)>,
}

impl Tail {
    /// The tail between two scrapes; `None` when no batch was timed between them.
    pub fn between(before: &Scrape, after: &Scrape) -> Option<Tail> {
        let batches = after.timed_batches - before.timed_batches;
        if batches <= 0.0 {
            return None;
        }
        // Samples over a bound in a scrape (its count less those within), and how many more
        // there were in `after` than in `before`.
        let over = |(count, within): (f64, f64)| (count - within).max(0.0);
        let grew = |figure: &dyn Fn(&Scrape) -> f64| (figure(after) - figure(before)).max(0.0);
        Some(Tail {
            debits: (after.debits.0 - before.debits.0, grew(&|s| over(s.debits))),
            batches,
            batch_seconds: grew(&|s| s.batch_seconds),
            slow_batches: BATCH_LES
                .iter()
                .map(|&(le, ms)| {
                    let within = |s: &Scrape| s.batches_within.get(le).copied().unwrap_or_default();
                    (ms, grew(&|s| over((s.timed_batches, within(s)))))
                })
                .collect(),
            slow_phases: PHASES
                .iter()
                .map(|&p| {
                    let samples = |s: &Scrape| s.phase_samples.get(p).copied().unwrap_or_default();
                    (p, grew(&|s| over(samples(s))))
                })
                .collect(),
        })
    }

    /// `the server over 10 ms on 12 of 9000 debits; 1000 batches (2.5 writer-seconds in a
    /// 10-s run), 40 over 2.5, 9 over 5, 2 over 10, 0 over 50, 0 over 250 ms; transactions
    /// with a phase over 10 ms: read 0, decide 0, write 1, commit 1`: `seconds` is the run's
    /// length (writer-seconds near it, for each writer, mean postings queue behind batches).
    pub fn line(&self, seconds: f64) -> String {
        let batches: Vec<String> = self
            .slow_batches
            .iter()
            .map(|(ms, n)| format!("{n:.0} over {ms}"))
            .collect();
        format!(
            "the server over 10 ms on {:.0} of {:.0} debits; {:.0} batches ({:.1} writer-seconds \
             in a {seconds:.0}-s run), {} ms; transactions with a phase over 10 ms: {}",
            self.debits.1,
            self.debits.0,
            self.batches,
            self.batch_seconds,
            batches.join(", "),
            by_phase(&self.slow_phases, 0)
        )
    }
}

/// `read 1.0, decide 2.0, …`: each phase's figure with `decimals` decimals.
fn by_phase(figures: &[(&str, f64)], decimals: usize) -> String {
    figures
        .iter()
        .map(|(phase, figure)| format!("{phase} {figure:.decimals$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "\
# TYPE billing_ledger_posting_phase_seconds histogram
billing_ledger_posting_phase_seconds_bucket{phase=\"read\",le=\"0.00001\"} 0
billing_ledger_posting_phase_seconds_sum{phase=\"read\"} 0.5
billing_ledger_posting_phase_seconds_count{phase=\"read\"} 100
billing_ledger_posting_phase_seconds_sum{phase=\"decide\"} 0.1
billing_ledger_posting_phase_seconds_sum{phase=\"write\"} 1
billing_ledger_posting_phase_seconds_sum{phase=\"commit\"} 0.25
billing_ledger_batch_postings_sum 1000
billing_ledger_batch_postings_count 100
billing_ledger_batch_seconds_sum 3
";

    const AFTER: &str = "\
billing_ledger_posting_phase_seconds_sum{phase=\"read\"} 0.7
billing_ledger_posting_phase_seconds_sum{phase=\"decide\"} 0.15
billing_ledger_posting_phase_seconds_sum{phase=\"write\"} 1.4
billing_ledger_posting_phase_seconds_sum{phase=\"commit\"} 0.35
billing_ledger_batch_postings_sum 11000
billing_ledger_batch_postings_count 725
";

    #[test]
    fn the_split_is_each_phase_over_the_postings_between_two_scrapes() {
        let split = Split::between(&parse(BEFORE), &parse(AFTER)).expect("a split");
        let us: Vec<(&str, i64)> = split
            .per_posting_us
            .iter()
            .map(|(p, us)| (*p, (us * 1000.0).round() as i64))
            .collect();
        // 10,000 postings: 0.2 s of read is 20 µs each; 0.05 s of decide 5 µs; …
        assert_eq!(
            us,
            vec![
                ("read", 20_000),
                ("decide", 5_000),
                ("write", 40_000),
                ("commit", 10_000)
            ]
        );
        assert_eq!(split.batch_mean, 16.0);
        assert_eq!(
            split.line(),
            "read 20.0, decide 5.0, write 40.0, commit 10.0 (all 75.0); 16.0 postings a batch"
        );
    }

    const TAIL_BEFORE: &str = "\
billing_ledger_posting_phase_seconds_bucket{phase=\"commit\",le=\"0.005\"} 90
billing_ledger_posting_phase_seconds_bucket{phase=\"commit\",le=\"0.01\"} 95
billing_ledger_posting_phase_seconds_count{phase=\"commit\"} 100
billing_ledger_posting_phase_seconds_bucket{phase=\"read\",le=\"0.01\"} 100
billing_ledger_posting_phase_seconds_count{phase=\"read\"} 100
billing_ledger_batch_seconds_bucket{le=\"0.0025\"} 80
billing_ledger_batch_seconds_bucket{le=\"0.005\"} 90
billing_ledger_batch_seconds_bucket{le=\"0.01\"} 96
billing_ledger_batch_seconds_bucket{le=\"0.025\"} 100
billing_ledger_batch_seconds_bucket{le=\"0.05\"} 100
billing_ledger_batch_seconds_bucket{le=\"0.25\"} 100
billing_ledger_batch_seconds_count 100
billing_ledger_batch_seconds_sum 0.5
billing_http_request_duration_seconds_bucket{method=\"POST\",route=\"/v1/usage\",le=\"0.01\"} 1000
billing_http_request_duration_seconds_count{method=\"POST\",route=\"/v1/usage\"} 1001
billing_http_request_duration_seconds_bucket{method=\"GET\",route=\"/v1/usage\",le=\"0.01\"} 5
billing_http_request_duration_seconds_count{method=\"GET\",route=\"/v1/usage\"} 50
";

    const TAIL_AFTER: &str = "\
billing_ledger_posting_phase_seconds_bucket{phase=\"commit\",le=\"0.01\"} 1092
billing_ledger_posting_phase_seconds_count{phase=\"commit\"} 1100
billing_ledger_posting_phase_seconds_bucket{phase=\"read\",le=\"0.01\"} 1099
billing_ledger_posting_phase_seconds_count{phase=\"read\"} 1100
billing_ledger_batch_seconds_bucket{le=\"0.0025\"} 1000
billing_ledger_batch_seconds_bucket{le=\"0.005\"} 1070
billing_ledger_batch_seconds_bucket{le=\"0.01\"} 1090
billing_ledger_batch_seconds_bucket{le=\"0.05\"} 1098
billing_ledger_batch_seconds_bucket{le=\"0.25\"} 1100
billing_ledger_batch_seconds_count 1100
billing_ledger_batch_seconds_sum 3.25
billing_http_request_duration_seconds_bucket{method=\"POST\",route=\"/v1/usage\",le=\"0.01\"} 10990
billing_http_request_duration_seconds_count{method=\"POST\",route=\"/v1/usage\"} 11001
";

    #[test]
    fn the_tail_is_what_went_over_10_ms_between_two_scrapes() {
        let tail = Tail::between(&parse(TAIL_BEFORE), &parse(TAIL_AFTER)).expect("a tail");
        // Batches over 2.5 ms: 20 before, 100 after; over 5: 10 and 30; over 10: 4 and 10.
        // Commits over 10 ms: 5 before, 8 after; reads 0 and 1.
        assert_eq!(
            tail,
            Tail {
                // 10,000 debits, 1 over 10 ms before and 11 after.
                debits: (10_000.0, 10.0),
                batches: 1000.0,
                batch_seconds: 2.75,
                slow_batches: vec![
                    ("2.5", 80.0),
                    ("5", 20.0),
                    ("10", 6.0),
                    ("50", 2.0),
                    ("250", 0.0)
                ],
                slow_phases: vec![
                    ("read", 1.0),
                    ("decide", 0.0),
                    ("write", 0.0),
                    ("commit", 3.0)
                ],
            }
        );
        assert_eq!(
            tail.line(10.0),
            "the server over 10 ms on 10 of 10000 debits; 1000 batches (2.8 writer-seconds in a \
             10-s run), 80 over 2.5, 20 over 5, 6 over 10, 2 over 50, 0 over 250 ms; transactions with a phase over 10 ms: read \
             1, decide 0, write 0, commit 3"
        );
        assert_eq!(Tail::between(&parse(TAIL_AFTER), &parse(TAIL_AFTER)), None);
    }

    #[test]
    fn a_label_is_found_by_its_whole_name() {
        let labels = "{role=\"x\",le=\"0.01\",route=\"/v1/usage\"}";
        assert_eq!(label(labels, "le"), Some("0.01"));
        assert_eq!(label(labels, "route"), Some("/v1/usage"));
        assert_eq!(label(labels, "e"), None);
        assert_eq!(label("{role=\"x\"}", "le"), None);
    }

    #[test]
    fn no_batch_between_two_scrapes_is_no_split() {
        let before = parse(BEFORE);
        assert_eq!(Split::between(&before, &before), None);
        assert_eq!(Split::between(&parse(AFTER), &before), None);
        assert_eq!(
            parse("garbage\nbilling_ledger_batch_postings_sum x\n"),
            Scrape::default()
        );
    }
}
