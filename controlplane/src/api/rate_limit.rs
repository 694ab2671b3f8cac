//! Per-key rate limits on the public API (`api.key_rate_limit`, `api.key_rate_burst`):
//! one token bucket per API key id, spent by every authenticated HTTP and gRPC call
//! (`auth.rs` consults it once the key is known, before the scope check, so refused
//! calls cost a token too). Calls that need no key (health, live, ready, the OpenAPI
//! description) never reach it. Off (rate 0) by default.
//!
//! A bucket holds up to `burst` tokens and refills at `rate` tokens a second; a call
//! takes one. With none left the call is refused with the whole seconds until one is
//! back (at least 1), which the edges answer as `Retry-After` (HTTP 429) or
//! `retry-after` metadata (gRPC `RESOURCE_EXHAUSTED`).
//!
//! The map of buckets is bounded: a full bucket is the same as no bucket, so full ones
//! are dropped whenever the map is swept (every [`SWEEP_EVERY`] checks, and before a
//! new key would pass [`MAX_BUCKETS`]); if every bucket is in use at the cap, the one
//! idle longest is dropped, which can only let that key burst again early. Keys are
//! ids of keys that authenticated, never raw client input, but the cap holds anyway.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{ApiError, ErrorCode};

/// Buckets kept at most.
const MAX_BUCKETS: usize = 10_000;
/// Full buckets are dropped every this many checks.
const SWEEP_EVERY: u64 = 4096;

/// The per-key limits and their buckets.
#[derive(Debug)]
pub struct KeyRateLimits {
    /// `None`: no limit.
    limit: Option<Limit>,
    state: Mutex<Buckets>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Limit {
    /// Calls a second, as configured (for messages).
    per_second: u32,
    /// Tokens a second.
    rate: f64,
    /// Most tokens a bucket holds.
    burst: f64,
}

#[derive(Debug, Default)]
struct Buckets {
    by_key: HashMap<String, Bucket>,
    checks: u64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// A call refused because its key is over its rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverLimit {
    pub per_second: u32,
    /// Whole seconds until the key may call again, at least 1.
    pub retry_after_secs: u64,
}

impl Limit {
    /// The bucket's tokens at `now`, refilled since it was last spent from.
    fn refilled(&self, bucket: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        (bucket.tokens + elapsed * self.rate).min(self.burst)
    }
}

impl KeyRateLimits {
    /// `per_second` calls a second per key, bursts of `burst` (0: one second's worth);
    /// `per_second` 0 turns the limit off.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let limit = (per_second > 0).then(|| {
            let burst = if burst == 0 { per_second } else { burst };
            Limit {
                per_second,
                rate: f64::from(per_second),
                burst: f64::from(burst),
            }
        });
        Self {
            limit,
            state: Mutex::new(Buckets::default()),
        }
    }

    /// No limit.
    pub fn off() -> Self {
        Self::new(0, 0)
    }

    /// Spends one of `key_id`'s tokens, or refuses the call with when to retry.
    pub fn check(&self, key_id: &str) -> Result<(), ApiError> {
        self.check_at(key_id, Instant::now())
            .map_err(|over| over.into_error(key_id))
    }

    /// [`KeyRateLimits::check`] at `now`.
    fn check_at(&self, key_id: &str, now: Instant) -> Result<(), OverLimit> {
        let Some(limit) = self.limit else {
            return Ok(());
        };
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.checks = state.checks.wrapping_add(1);
        if state.checks.is_multiple_of(SWEEP_EVERY) {
            state.drop_full(&limit, now);
        }
        if !state.by_key.contains_key(key_id) && state.by_key.len() >= MAX_BUCKETS {
            state.make_room(&limit, now);
        }
        let bucket = state.by_key.entry(key_id.to_owned()).or_insert(Bucket {
            tokens: limit.burst,
            updated: now,
        });
        let tokens = limit.refilled(bucket, now);
        bucket.updated = now;
        if tokens >= 1.0 {
            bucket.tokens = tokens - 1.0;
            return Ok(());
        }
        bucket.tokens = tokens;
        let wait = (1.0 - tokens) / limit.rate;
        // whole seconds, rounded up, and never 0 (a client told 0 retries at once)
        let retry_after_secs = (wait.ceil() as u64).max(1);
        Err(OverLimit {
            per_second: limit.per_second,
            retry_after_secs,
        })
    }

    #[cfg(test)]
    fn buckets(&self) -> usize {
        self.state.lock().unwrap().by_key.len()
    }
}

impl Buckets {
    /// Drops the buckets that have refilled: they are no different from new ones.
    fn drop_full(&mut self, limit: &Limit, now: Instant) {
        self.by_key
            .retain(|_, bucket| limit.refilled(bucket, now) < limit.burst);
    }

    /// Makes room for one more bucket at the cap.
    fn make_room(&mut self, limit: &Limit, now: Instant) {
        self.drop_full(limit, now);
        if self.by_key.len() < MAX_BUCKETS {
            return;
        }
        let idle_longest = self
            .by_key
            .iter()
            .min_by_key(|(_, bucket)| bucket.updated)
            .map(|(key, _)| key.clone());
        if let Some(key) = idle_longest {
            self.by_key.remove(&key);
        }
    }
}

impl OverLimit {
    fn into_error(self, key_id: &str) -> ApiError {
        ApiError::new(
            ErrorCode::ResourceLimit,
            format!(
                "API key {key_id} is over its rate limit of {} requests/s; retry in {} s",
                self.per_second, self.retry_after_secs
            ),
        )
        .with_retry_after(Duration::from_secs(self.retry_after_secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: f64) -> Duration {
        Duration::from_secs_f64(n)
    }

    #[test]
    fn off_never_refuses() {
        let limits = KeyRateLimits::off();
        let now = Instant::now();
        for _ in 0..10_000 {
            assert!(limits.check_at("k", now).is_ok());
        }
        assert_eq!(limits.buckets(), 0, "no bucket is kept while off");
    }

    #[test]
    fn a_burst_is_allowed_then_the_rate() {
        let limits = KeyRateLimits::new(2, 5);
        let start = Instant::now();
        for call in 0..5 {
            assert!(limits.check_at("k", start).is_ok(), "call {call}");
        }
        let over = limits.check_at("k", start).unwrap_err();
        assert_eq!(
            over,
            OverLimit {
                per_second: 2,
                retry_after_secs: 1
            }
        );
        // 2 tokens a second: one back after 0.5 s, not before
        assert!(limits.check_at("k", start + secs(0.4)).is_err());
        assert!(limits.check_at("k", start + secs(0.5)).is_ok());
        assert!(limits.check_at("k", start + secs(0.5)).is_err());
        // a long pause refills to the burst and no further
        let later = start + secs(60.0);
        for call in 0..5 {
            assert!(limits.check_at("k", later).is_ok(), "call {call}");
        }
        assert!(limits.check_at("k", later).is_err());
    }

    #[test]
    fn keys_have_buckets_of_their_own() {
        let limits = KeyRateLimits::new(1, 1);
        let now = Instant::now();
        assert!(limits.check_at("a", now).is_ok());
        assert!(limits.check_at("a", now).is_err());
        assert!(limits.check_at("b", now).is_ok());
    }

    #[test]
    fn retry_after_is_whole_seconds_until_a_token_and_at_least_one() {
        // one token a second
        let limits = KeyRateLimits::new(1, 1);
        let start = Instant::now();
        assert!(limits.check_at("k", start).is_ok());
        assert_eq!(limits.check_at("k", start).unwrap_err().retry_after_secs, 1);
        assert_eq!(
            limits
                .check_at("k", start + secs(0.9))
                .unwrap_err()
                .retry_after_secs,
            1,
            "0.1 s left rounds up to 1, never down to 0"
        );

        let fast = KeyRateLimits::new(1000, 1);
        assert!(fast.check_at("k", start).is_ok());
        assert_eq!(fast.check_at("k", start).unwrap_err().retry_after_secs, 1);
    }

    #[test]
    fn the_burst_defaults_to_one_second_of_the_rate() {
        let limits = KeyRateLimits::new(3, 0);
        let now = Instant::now();
        for _ in 0..3 {
            assert!(limits.check_at("k", now).is_ok());
        }
        assert!(limits.check_at("k", now).is_err());
    }

    #[test]
    fn the_refusal_names_the_key_rate_and_wait() {
        let limits = KeyRateLimits::new(50, 1);
        assert!(limits.check("key-1").is_ok());
        let err = limits.check("key-1").unwrap_err();
        assert_eq!(err.code, ErrorCode::ResourceLimit);
        assert_eq!(
            err.message,
            "API key key-1 is over its rate limit of 50 requests/s; retry in 1 s"
        );
        assert_eq!(err.retry_after, Some(Duration::from_secs(1)));
    }

    #[test]
    fn the_buckets_are_bounded() {
        let limits = KeyRateLimits::new(1, 2);
        let start = Instant::now();
        // every bucket in use (one token spent), past the cap
        for n in 0..MAX_BUCKETS + 100 {
            assert!(limits.check_at(&format!("k{n}"), start).is_ok());
        }
        assert_eq!(limits.buckets(), MAX_BUCKETS);
        // once they have refilled they are dropped to make room
        let later = start + secs(10.0);
        assert!(limits.check_at("new", later).is_ok());
        assert_eq!(limits.buckets(), 1);
    }

    #[test]
    fn full_buckets_are_swept_away() {
        let limits = KeyRateLimits::new(10, 10);
        let start = Instant::now();
        for n in 0..100 {
            assert!(limits.check_at(&format!("k{n}"), start).is_ok());
        }
        let later = start + secs(5.0);
        // spent past its burst: refused or not, every check counts towards the sweep
        for _ in 0..SWEEP_EVERY {
            let _ = limits.check_at("busy", later);
        }
        assert!(
            limits.buckets() <= 1,
            "{} buckets after the sweep",
            limits.buckets()
        );
    }
}
