//! API keys resolved from memory: a request does no key query while its key's record is
//! younger than the cache's time to live.
//!
//! Staleness is bounded by the time to live (1 s by default, `BILLING_KEY_CACHE_MS`): a key
//! revoked by another process (or the CLI) stops working there within it, and at once in the
//! process that revoked it ([`KeyCache::forget`]). Expiry is exact: the cached record's
//! `expires_at` is checked on every request. Unknown keys are never cached, so a new key works
//! at once everywhere (guessing is bounded by the failed-authentication limiter instead).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use billing_core::ids::ApiKeyId;
use billing_core::ports::ApiKeyRecord;

/// Records kept at most; past it, expired records are dropped, then all of them.
const KEY_CACHE_ENTRIES_MAX: usize = 10_000;

/// Key records by hash, each kept for at most the time to live.
/// Taken before a store read, given back with its result to [`KeyCache::put`].
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    generation: u64,
    read_at: Instant,
}

pub struct KeyCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (ApiKeyRecord, Instant)>>,
    /// Bumped by every [`KeyCache::forget`]: a record read from the store before a
    /// revocation here is not cached after it.
    generation: AtomicU64,
}

impl KeyCache {
    /// A cache whose records live `ttl` (zero: no caching).
    pub fn new(ttl: Duration) -> KeyCache {
        KeyCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
        }
    }

    /// The record stored under `hash`, if fetched less than the time to live ago.
    pub fn get(&self, hash: &str) -> Option<ApiKeyRecord> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(hash) {
            Some((record, fetched)) if fetched.elapsed() < self.ttl => Some(record.clone()),
            _ => None,
        }
    }

    /// The ticket to pass to [`KeyCache::put`], taken before reading the store: the
    /// generation and the instant the read began (a record is as old as its read, however
    /// long the read waited).
    pub fn generation(&self) -> Ticket {
        Ticket {
            generation: self.generation.load(Ordering::SeqCst),
            read_at: Instant::now(),
        }
    }

    /// Remembers a record read from the store, unless a key was forgotten since
    /// `generation` was taken (the record may predate its revocation).
    pub fn put(&self, record: &ApiKeyRecord, ticket: Ticket) {
        if self.ttl.is_zero() || ticket.read_at.elapsed() >= self.ttl {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if self.generation.load(Ordering::SeqCst) != ticket.generation {
            return;
        }
        if entries.len() >= KEY_CACHE_ENTRIES_MAX && !entries.contains_key(&record.hash) {
            let ttl = self.ttl;
            entries.retain(|_, (_, fetched)| fetched.elapsed() < ttl);
            if entries.len() >= KEY_CACHE_ENTRIES_MAX {
                entries.clear();
            }
        }
        entries.insert(record.hash.clone(), (record.clone(), ticket.read_at));
    }

    /// Forgets a key (it was just revoked here): its next use reads the store.
    pub fn forget(&self, id: &ApiKeyId) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        entries.retain(|_, (record, _)| &record.id != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use billing_core::ports::KeyScope;
    use billing_core::time::Timestamp;

    fn record(id: &str, hash: &str) -> ApiKeyRecord {
        ApiKeyRecord {
            id: ApiKeyId::new(id),
            account_id: None,
            scope: KeyScope::Platform,
            prefix: "bk_x".to_owned(),
            hash: hash.to_owned(),
            created_at: Timestamp::from_micros(0),
            revoked_at: None,
            expires_at: None,
            last_used_at: None,
            requests_per_minute_max: None,
        }
    }

    #[test]
    fn records_live_for_the_ttl_and_revocation_here_forgets_at_once() {
        let cache = KeyCache::new(Duration::from_millis(50));
        let generation = cache.generation();
        cache.put(&record("key_1", "h1"), generation);
        cache.put(&record("key_2", "h2"), generation);
        assert_eq!(cache.get("h1").map(|r| r.id), Some(ApiKeyId::new("key_1")));
        cache.forget(&ApiKeyId::new("key_1"));
        assert!(cache.get("h1").is_none());
        assert!(cache.get("h2").is_some());
        // A record read before that revocation is not cached after it.
        cache.put(&record("key_1", "h1"), generation);
        assert!(
            cache.get("h1").is_none(),
            "stale read cached after a revocation"
        );
        std::thread::sleep(Duration::from_millis(60));
        assert!(
            cache.get("h2").is_none(),
            "a record older than the TTL is not served"
        );
        // A record is as old as its read: one whose read took longer than the TTL (a wait
        // on the pool) is not cached at all.
        let slow_read = cache.generation();
        std::thread::sleep(Duration::from_millis(60));
        cache.put(&record("key_3", "h3"), slow_read);
        assert!(cache.get("h3").is_none(), "a slow read was cached");
    }

    #[test]
    fn a_zero_ttl_caches_nothing_and_the_cache_stays_bounded() {
        let off = KeyCache::new(Duration::ZERO);
        off.put(&record("key_1", "h1"), off.generation());
        assert!(off.get("h1").is_none());
        let cache = KeyCache::new(Duration::from_secs(60));
        for i in 0..KEY_CACHE_ENTRIES_MAX + 5 {
            cache.put(
                &record(&format!("key_{i}"), &format!("h{i}")),
                cache.generation(),
            );
        }
        let len = cache.entries.lock().map(|e| e.len()).unwrap_or(0);
        assert!(len <= KEY_CACHE_ENTRIES_MAX, "{len} entries");
        assert!(
            cache
                .get(&format!("h{}", KEY_CACHE_ENTRIES_MAX + 4))
                .is_some()
        );
    }
}
