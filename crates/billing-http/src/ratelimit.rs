//! In-process rate limits (per process: several processes each keep their own).
//!
//! A [`RateLimiter`] keeps, per key (a client address, an API key id), the generic cell rate
//! algorithm's one number: the theoretical arrival time (TAT) of the next request. A limit
//! of `n` a minute lets a burst of `n` through and then one every `60 s / n`. Memory is
//! bounded: at `entries_max` keys, the ones whose allowance has fully refilled are dropped,
//! and if none has, new keys are not tracked (logged) rather than growing without bound.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Time since the limiter's creation, so that the arithmetic is on plain durations.
type Nanos = u128;

/// Per-key request limits.
pub struct RateLimiter<K> {
    epoch: Instant,
    entries_max: usize,
    tats: Mutex<Table<K>>,
}

struct Table<K> {
    tats: HashMap<K, Nanos>,
    /// When the table, full, was last cleared of refilled entries: at most once a second,
    /// so that a full table costs no scan per request.
    pruned_at: Option<Nanos>,
}

const SECOND: Nanos = 1_000_000_000;

/// A refusal: retry after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after: Duration,
}

impl Limited {
    /// Whole seconds to wait, at least 1 (the `Retry-After` header's unit).
    pub fn retry_after_secs(self) -> u64 {
        self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0)
    }
}

const MINUTE: Nanos = 60_000_000_000;

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    pub fn new(entries_max: usize) -> RateLimiter<K> {
        RateLimiter {
            epoch: Instant::now(),
            entries_max,
            tats: Mutex::new(Table {
                tats: HashMap::new(),
                pruned_at: None,
            }),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table<K>> {
        self.tats.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> Nanos {
        self.epoch.elapsed().as_nanos()
    }

    /// For a key that has used some of its allowance within the last minute: uses one more
    /// now (`Ok(true)`, to be given back with [`RateLimiter::release`] if it was not needed)
    /// or answers how long to wait. For any other key: nothing (`Ok(false)`).
    pub fn reserve_if_in_use(&self, key: &K, per_minute: u32) -> Result<bool, Limited> {
        let now = self.now();
        let in_use = self.table().tats.get(key).is_some_and(|tat| *tat > now);
        if !in_use {
            return Ok(false);
        }
        self.acquire_at(key, per_minute, now).map(|()| true)
    }

    /// Uses one request of `key`'s allowance of `per_minute`, or answers how long to wait
    /// (and uses nothing).
    pub fn acquire(&self, key: &K, per_minute: u32) -> Result<(), Limited> {
        self.acquire_at(key, per_minute, self.now())
    }

    fn acquire_at(&self, key: &K, per_minute: u32, now: Nanos) -> Result<(), Limited> {
        let mut table = self.table();
        let tat = table.tats.get(key).copied().unwrap_or(now);
        let next = decide(tat, now, per_minute)?;
        if !table.tats.contains_key(key) && table.tats.len() >= self.entries_max {
            if table.pruned_at.is_none_or(|at| now >= at + SECOND) {
                table.tats.retain(|_, tat| *tat > now);
                table.pruned_at = Some(now);
            }
            if table.tats.len() >= self.entries_max {
                tracing::warn!(
                    entries = table.tats.len(),
                    "rate limiter full: a new client is not tracked"
                );
                return Ok(());
            }
        }
        table.tats.insert(key.clone(), next);
        Ok(())
    }

    /// Gives back one request of `key`'s allowance taken by [`RateLimiter::acquire`].
    pub fn release(&self, key: &K, per_minute: u32) {
        self.release_at(key, per_minute, self.now());
    }

    fn release_at(&self, key: &K, per_minute: u32, now: Nanos) {
        let interval = MINUTE / Nanos::from(per_minute.max(1));
        let mut table = self.table();
        if let Some(tat) = table.tats.get_mut(key) {
            *tat = tat.saturating_sub(interval).max(now);
            if *tat <= now {
                table.tats.remove(key);
            }
        }
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.table().tats.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// GCRA: with an emission interval `t = 1 min / n` and a burst of `n`, a request at `now` is
/// allowed if the TAT after it, `max(tat, now) + t`, is at most `now + 1 min`. Answers that
/// new TAT, or how long until the request would be allowed.
fn decide(tat: Nanos, now: Nanos, per_minute: u32) -> Result<Nanos, Limited> {
    let per_minute = Nanos::from(per_minute.max(1));
    let interval = MINUTE / per_minute;
    let next = tat.max(now) + interval;
    let horizon = now + interval * per_minute;
    if next <= horizon {
        Ok(next)
    } else {
        let wait = u64::try_from(next - horizon).unwrap_or(u64::MAX);
        Err(Limited {
            retry_after: Duration::from_nanos(wait),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Nanos = 1_000_000_000;

    #[test]
    fn a_burst_of_n_then_one_per_interval() {
        let limiter = RateLimiter::new(100);
        let start = 10 * SEC;
        for i in 0..20 {
            assert_eq!(limiter.acquire_at(&"ip", 20, start), Ok(()), "request {i}");
        }
        let refused = limiter.acquire_at(&"ip", 20, start).expect_err("21st");
        assert_eq!(refused.retry_after, Duration::from_secs(3));
        assert_eq!(refused.retry_after_secs(), 3);
        // Another key is not affected.
        assert_eq!(limiter.acquire_at(&"other", 20, start), Ok(()));
        // One interval later, one more request; not two.
        assert_eq!(limiter.acquire_at(&"ip", 20, start + 3 * SEC), Ok(()));
        assert!(limiter.acquire_at(&"ip", 20, start + 3 * SEC).is_err());
        // A full minute later, the whole burst again.
        let later = start + 63 * SEC;
        for _ in 0..20 {
            assert_eq!(limiter.acquire_at(&"ip", 20, later), Ok(()));
        }
        assert!(limiter.acquire_at(&"ip", 20, later).is_err());
    }

    #[test]
    fn a_refusal_uses_nothing() {
        let limiter = RateLimiter::new(100);
        assert_eq!(limiter.acquire_at(&1, 1, 0), Ok(()));
        for _ in 0..100 {
            assert!(limiter.acquire_at(&1, 1, SEC).is_err());
        }
        assert_eq!(limiter.acquire_at(&1, 1, 60 * SEC), Ok(()));
    }

    #[test]
    fn a_release_gives_back_what_an_acquire_took() {
        let limiter = RateLimiter::new(100);
        for _ in 0..1000 {
            assert_eq!(limiter.acquire_at(&"ok", 2, SEC), Ok(()));
            limiter.release_at(&"ok", 2, SEC);
        }
        assert!(limiter.is_empty());
        assert_eq!(limiter.acquire_at(&"ok", 2, SEC), Ok(()));
        assert_eq!(limiter.acquire_at(&"ok", 2, SEC), Ok(()));
        assert!(limiter.acquire_at(&"ok", 2, SEC).is_err());
        limiter.release_at(&"ok", 2, SEC);
        assert_eq!(limiter.acquire_at(&"ok", 2, SEC), Ok(()));
    }

    #[test]
    fn only_keys_in_use_reserve() {
        let limiter = RateLimiter::new(100);
        assert_eq!(limiter.reserve_if_in_use(&"fresh", 2), Ok(false));
        assert!(limiter.is_empty());
        assert_eq!(limiter.acquire(&"used", 2), Ok(()));
        assert_eq!(limiter.reserve_if_in_use(&"used", 2), Ok(true));
        assert!(limiter.reserve_if_in_use(&"used", 2).is_err());
        limiter.release(&"used", 2);
        assert_eq!(limiter.reserve_if_in_use(&"used", 2), Ok(true));
    }

    #[test]
    fn retry_after_rounds_up_to_a_second() {
        let limited = Limited {
            retry_after: Duration::from_millis(1),
        };
        assert_eq!(limited.retry_after_secs(), 1);
    }

    #[test]
    fn memory_stays_bounded() {
        let limiter = RateLimiter::new(10);
        for ip in 0..10 {
            assert_eq!(limiter.acquire_at(&ip, 5, 0), Ok(()));
        }
        // Full, and nobody's allowance has refilled: the 11th is not tracked.
        assert_eq!(limiter.acquire_at(&10, 5, SEC), Ok(()));
        assert_eq!(limiter.len(), 10);
        // After a minute every allowance has refilled; the old entries make room.
        assert_eq!(limiter.acquire_at(&11, 5, 61 * SEC), Ok(()));
        assert_eq!(limiter.len(), 1);
    }
}
