//! One warning per incident: when the database drops the pool's connections, r2d2 reports
//! every failed attempt, hundreds a second per process. `QuietErrors` logs the first at
//! once and then at most one line per window, with how many errors it stands for.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one report per this long.
const REPORT_WINDOW: Duration = Duration::from_secs(30);

/// Counts errors; says when to report and how many the report stands for.
#[derive(Debug, Default)]
struct Throttle {
    last_report: Option<Instant>,
    unreported: u64,
}

impl Throttle {
    fn note(&mut self, now: Instant) -> Option<u64> {
        self.unreported += 1;
        let due = self
            .last_report
            .is_none_or(|last| now.duration_since(last) >= REPORT_WINDOW);
        if !due {
            return None;
        }
        self.last_report = Some(now);
        Some(std::mem::take(&mut self.unreported))
    }
}

/// The pools' error handler.
#[derive(Debug, Default)]
pub(crate) struct QuietErrors {
    throttle: Mutex<Throttle>,
}

impl<E: std::fmt::Display> diesel::r2d2::HandleError<E> for QuietErrors {
    fn handle_error(&self, error: E) {
        let report = self
            .throttle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .note(Instant::now());
        if let Some(errors) = report {
            tracing::warn!(
                errors,
                error = %error,
                "database connections are failing (one line per {}s; `errors` counts them)",
                REPORT_WINDOW.as_secs()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_report_per_window_with_a_count() {
        let mut throttle = Throttle::default();
        let start = Instant::now();
        assert_eq!(throttle.note(start), Some(1));
        let reports: Vec<u64> = (1..=500)
            .filter_map(|i| throttle.note(start + Duration::from_millis(i)))
            .collect();
        assert!(reports.is_empty(), "{reports:?}");
        assert_eq!(throttle.note(start + REPORT_WINDOW), Some(501));
        assert_eq!(throttle.note(start + REPORT_WINDOW * 3), Some(1));
    }
}
