//! How much the mesh admits, and from whom. Three budgets:
//!
//! - **per source address** for enrollment: every anonymous caller is held to its own
//!   small bucket first, so one noisy host (a sandbox reaching the mesh port, a
//!   misconfigured fleet) slows only itself;
//! - **shared enrollment budget**, spent only by requests whose credential passed the
//!   cheap checks (a join token that verifies), so junk never drains it;
//! - **shared heartbeat budget**, spent only by callers with a verified worker
//!   certificate, so anonymous callers never share a bucket with enrolled workers.
//!
//! Over a budget the caller is told to retry shortly; workers back off and do.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::LimitsConfig;
use crate::error::{ApiError, ErrorCode};

/// Sources remembered before idle ones are forgotten.
const SOURCES_KEPT: usize = 10_000;
/// How often (in checks) idle sources are looked for anyway.
const SWEEP_EVERY: u64 = 1024;

#[derive(Debug)]
pub struct Admission {
    enroll_per_source: DefaultKeyedRateLimiter<IpAddr>,
    enrollments: DefaultDirectRateLimiter,
    heartbeats: DefaultDirectRateLimiter,
    source_checks: AtomicU64,
}

fn quota(per_second: u32, burst: u32) -> Quota {
    let per_second = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(per_second).allow_burst(burst)
}

/// Told to a caller over a limit; workers back off and retry.
fn slow_down(what: &str) -> ApiError {
    ApiError::new(
        ErrorCode::ResourceLimit,
        format!("too many {what} right now; retry shortly"),
    )
}

/// The key of a source: its IPv4 address, or the /64 of an IPv6 one (one host holds
/// a whole /64).
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

impl Admission {
    pub fn new(limits: &LimitsConfig) -> Self {
        Self {
            enroll_per_source: RateLimiter::keyed(quota(
                limits.enrollments_per_source_per_second,
                limits.enrollment_source_burst,
            )),
            enrollments: RateLimiter::direct(quota(
                limits.enrollments_per_second,
                limits.enrollment_burst,
            )),
            heartbeats: RateLimiter::direct(quota(
                limits.heartbeats_per_second,
                limits.heartbeat_burst,
            )),
            source_checks: AtomicU64::new(0),
        }
    }

    /// An enrollment attempt from `source` (unknown: the shared budget decides alone).
    pub fn enrollment_from(&self, source: Option<IpAddr>) -> Result<(), ApiError> {
        let Some(source) = source else {
            return Ok(());
        };
        let checks = self.source_checks.fetch_add(1, Ordering::Relaxed);
        if checks.is_multiple_of(SWEEP_EVERY) || self.enroll_per_source.len() > SOURCES_KEPT {
            self.enroll_per_source.retain_recent();
            self.enroll_per_source.shrink_to_fit();
        }
        self.enroll_per_source
            .check_key(&source_key(source))
            .map_err(|_| slow_down("enrollments from this address"))
    }

    /// Spends the shared enrollment budget on a request that passed the cheap checks.
    pub fn enrollment(&self) -> Result<(), ApiError> {
        self.enrollments
            .check()
            .map_err(|_| slow_down("enrollments"))
    }

    /// Spends the shared heartbeat budget on an authenticated worker's heartbeat.
    pub fn heartbeat(&self) -> Result<(), ApiError> {
        self.heartbeats.check().map_err(|_| slow_down("heartbeats"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_source: u32, shared: u32) -> LimitsConfig {
        LimitsConfig {
            enrollments_per_source_per_second: 1,
            enrollment_source_burst: per_source,
            enrollments_per_second: 1,
            enrollment_burst: shared,
            ..LimitsConfig::default()
        }
    }

    #[test]
    fn one_noisy_source_is_held_to_its_own_bucket() {
        let admission = Admission::new(&limits(2, 100));
        let noisy: IpAddr = "10.1.2.3".parse().unwrap();
        assert!(admission.enrollment_from(Some(noisy)).is_ok());
        assert!(admission.enrollment_from(Some(noisy)).is_ok());
        let refused = admission.enrollment_from(Some(noisy)).unwrap_err();
        assert_eq!(refused.code, ErrorCode::ResourceLimit);
        let other: IpAddr = "10.1.2.4".parse().unwrap();
        assert!(admission.enrollment_from(Some(other)).is_ok());
    }

    #[test]
    fn the_shared_budgets_are_apart() {
        let admission = Admission::new(&limits(100, 1));
        assert!(admission.enrollment().is_ok());
        assert!(admission.enrollment().is_err());
        assert!(
            admission.heartbeat().is_ok(),
            "heartbeats have their own budget"
        );
    }

    #[test]
    fn an_ipv6_host_is_one_source() {
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::ffff:1".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(source_key(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
    }
}
