//! Where the ledger writers' time went during a run, from the service's own `/metrics`
//! (`billing_ledger_posting_phase_seconds` by phase, `billing_ledger_batch_postings`), read
//! before and after: per posting, the time each phase of its transaction took (reading the
//! wallets' state under their locks, deciding, writing, committing), and the postings per
//! batch. Unlike the CPU figures, these are wall-clock times: a phase that waited for the
//! database (or for a core) counts its wait.

use std::collections::BTreeMap;

use reqwest::{Client, StatusCode};

/// The phases in the order they are printed.
pub const PHASES: [&str; 4] = ["read", "decide", "write", "commit"];

const PHASE_SUM: &str = "billing_ledger_posting_phase_seconds_sum";
const BATCH_SUM: &str = "billing_ledger_batch_postings_sum";
const BATCH_COUNT: &str = "billing_ledger_batch_postings_count";

/// The counters read from one scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    /// Seconds spent in each phase so far, by phase.
    phase_seconds: BTreeMap<String, f64>,
    /// Postings the writers' batches held so far, and the batches.
    batch_postings: f64,
    batches: f64,
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
        let parts: Vec<String> = self
            .per_posting_us
            .iter()
            .map(|(phase, us)| format!("{phase} {us:.1}"))
            .collect();
        format!(
            "{} (all {:.1}); {:.1} postings a batch",
            parts.join(", "),
            self.total_us(),
            self.batch_mean
        )
    }

    /// The phases' sum, per posting.
    pub fn total_us(&self) -> f64 {
        self.per_posting_us.iter().map(|(_, us)| us).sum()
    }
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
