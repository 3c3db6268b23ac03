//! Keyed token buckets for login attempts (per account, per address). Sans-IO: every call takes
//! `now`, so tests drive time by hand. The map is bounded: when full, buckets that have refilled
//! (and so hold no information) are dropped first, then the least recently used.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// A limit: `burst` attempts at once, refilled at `per_minute`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// Attempts allowed back to back.
    pub burst: u32,
    /// Attempts regained per minute.
    pub per_minute: u32,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets keyed by `K`.
#[derive(Debug)]
pub struct RateLimiter<K> {
    limit: Limit,
    capacity: usize,
    buckets: HashMap<K, Bucket>,
}

impl<K: Eq + Hash + Clone> RateLimiter<K> {
    /// Buckets for at most `capacity` keys.
    pub fn new(limit: Limit, capacity: usize) -> Self {
        Self {
            limit,
            capacity: capacity.max(1),
            buckets: HashMap::new(),
        }
    }

    fn refill_per_sec(&self) -> f64 {
        f64::from(self.limit.per_minute) / 60.0
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        (bucket.tokens + elapsed * self.refill_per_sec()).min(f64::from(self.limit.burst))
    }

    /// Takes one attempt for `key`: `Ok` if allowed, else how long until the next one is.
    pub fn check(&mut self, key: &K, now: Instant) -> Result<(), Duration> {
        let full = f64::from(self.limit.burst);
        let tokens = match self.buckets.get(key) {
            Some(bucket) => self.refilled(*bucket, now),
            None => full,
        };
        if tokens >= 1.0 {
            if !self.buckets.contains_key(key) && self.buckets.len() >= self.capacity {
                self.evict(now);
            }
            self.buckets.insert(
                key.clone(),
                Bucket {
                    tokens: tokens - 1.0,
                    updated: now,
                },
            );
            return Ok(());
        }
        let rate = self.refill_per_sec();
        if rate <= 0.0 {
            return Err(Duration::from_secs(3600));
        }
        Err(Duration::from_secs_f64((1.0 - tokens) / rate))
    }

    fn evict(&mut self, now: Instant) {
        let full = f64::from(self.limit.burst);
        let before = self.buckets.len();
        let refill = self.refill_per_sec();
        self.buckets.retain(|_, bucket| {
            let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
            bucket.tokens + elapsed * refill < full
        });
        if self.buckets.len() == before {
            if let Some(oldest) = self
                .buckets
                .iter()
                .min_by_key(|(_, bucket)| bucket.updated)
                .map(|(key, _)| key.clone())
            {
                self.buckets.remove(&oldest);
            }
        }
    }

    /// Keys currently tracked.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Limit = Limit {
        burst: 3,
        per_minute: 60,
    };

    #[test]
    fn a_burst_passes_then_waits_for_the_refill() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(LIMIT, 10);
        for _ in 0..3 {
            assert!(limiter.check(&"alice", start).is_ok());
        }
        let wait = limiter.check(&"alice", start).unwrap_err();
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(limiter.check(&"bob", start).is_ok(), "keys are independent");
        assert!(limiter
            .check(&"alice", start + Duration::from_secs(1))
            .is_ok());
        assert!(limiter
            .check(&"alice", start + Duration::from_secs(1))
            .is_err());
    }

    #[test]
    fn the_map_stays_bounded_and_keeps_busy_keys() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(LIMIT, 4);
        for _ in 0..3 {
            limiter.check(&0, start).unwrap();
        }
        for key in 1..100 {
            let _ = limiter.check(&key, start + Duration::from_millis(key));
            assert!(limiter.len() <= 4);
        }
        // key 0 is the least recently used, so it may have gone; a fresh bucket is full.
        assert!(limiter.len() <= 4 && !limiter.is_empty());
    }
}
