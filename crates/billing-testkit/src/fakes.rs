//! Deterministic `Clock` and `IdGenerator` for tests.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use billing_core::ports::{Clock, IdGenerator};
use billing_core::time::Timestamp;

/// A clock that stands still until told to move.
#[derive(Debug)]
pub struct ManualClock {
    micros: AtomicI64,
}

impl ManualClock {
    /// Starts at 2026-01-15T10:30:00Z.
    pub fn new() -> ManualClock {
        ManualClock::at(Timestamp::from_secs(1_768_473_000))
    }

    /// A clock standing at `t`.
    pub fn at(t: Timestamp) -> ManualClock {
        ManualClock {
            micros: AtomicI64::new(t.as_micros()),
        }
    }

    /// Moves the clock `secs` seconds forward (backward when negative).
    pub fn advance_secs(&self, secs: i64) {
        self.micros.fetch_add(secs * 1_000_000, Ordering::SeqCst);
    }
}

impl Default for ManualClock {
    fn default() -> ManualClock {
        ManualClock::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_micros(self.micros.load(Ordering::SeqCst))
    }
}

/// Sequential ids (`txn_000001`, …). Predictable, so for tests only: the real generator's
/// ids are random.
#[derive(Debug, Default)]
pub struct SequentialIds {
    next: AtomicU64,
}

impl SequentialIds {
    /// Starts at 1: the first id is `{prefix}_000001`. One counter serves every prefix.
    pub fn new() -> SequentialIds {
        SequentialIds::default()
    }
}

impl IdGenerator for SequentialIds {
    fn new_id(&self, prefix: &str) -> String {
        let n = self.next.fetch_add(1, Ordering::SeqCst) + 1;
        format!("{prefix}_{n:06}")
    }
}
