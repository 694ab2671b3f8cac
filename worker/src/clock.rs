//! The wall clock, as the integers the worker reports and stamps with: unix seconds
//! and unix milliseconds. Zero if the clock is before 1970; saturates far in the
//! future.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix seconds now.
pub(crate) fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        })
}

/// Unix milliseconds now.
pub(crate) fn now_ms() -> i64 {
    unix_ms(SystemTime::now())
}

/// `time` in unix milliseconds.
pub(crate) fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |elapsed| {
        i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_milliseconds_tell_the_same_time() {
        let secs = now_secs();
        let ms = now_ms();
        assert!(secs > 1_600_000_000);
        assert!((ms / 1000 - secs).abs() <= 1);
    }
}
