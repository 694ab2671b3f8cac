//! Durations and times as clients send them: exec timeouts (`parse_timeout`, a string
//! or a JSON number), sandbox ttls (`parse_ttl`), token ttls and drain deadlines
//! (`parse_optional_duration`), the audit log's `since`, and the RFC 3339 times the
//! API answers with (`rfc3339`, fed with times a worker reports).
//!
//! Checks: nothing panics; a timeout is positive when given; a seconds value gives
//! exactly those seconds; ttls stay within 1s..=max and round-trip through their
//! printed form; an RFC 3339 time parses back to the same instant.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use berth_controlplane::fuzzing::{
    parse_optional_duration, parse_timeout, parse_ttl, rfc3339, since_ms,
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// 9999-12-31T23:59:59Z, the last second RFC 3339 can write.
const LAST_RFC3339_SECOND: i64 = 253_402_300_799;

fn check_timeout(value: &Value) {
    let Ok(timeout) = parse_timeout(Some(value)) else {
        return;
    };
    if let Some(timeout) = timeout {
        assert!(!timeout.is_zero());
    }
    let secs = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    if let Some(secs) = secs {
        let expected = Duration::try_from_secs_f64(secs)
            .ok()
            .filter(|d| !d.is_zero());
        assert_eq!(timeout, expected, "{value}");
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() >= 8 {
        let bits = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
        if let Some(number) = serde_json::Number::from_f64(f64::from_bits(bits)) {
            check_timeout(&Value::Number(number));
        }
        check_timeout(&Value::Number(bits.into()));
        let secs = i64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
        let text = rfc3339(secs);
        let parsed = humantime::parse_rfc3339(&text).expect("rfc3339 output parses");
        let expected = secs.clamp(0, LAST_RFC3339_SECOND) as u64;
        assert_eq!(
            parsed,
            UNIX_EPOCH + Duration::from_secs(expected),
            "{secs} -> {text}"
        );
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_timeout(&Value::String(text.to_owned()));

    if let Ok(ttl) = parse_ttl(text, MAX_TTL) {
        assert!(ttl >= Duration::from_secs(1) && ttl <= MAX_TTL);
        let printed = humantime::format_duration(ttl).to_string();
        assert_eq!(parse_ttl(&printed, MAX_TTL).ok(), Some(ttl), "{printed}");
    }
    if let Ok(Some(duration)) = parse_optional_duration(Some(text)) {
        let printed = humantime::format_duration(duration).to_string();
        assert_eq!(
            parse_optional_duration(Some(&printed)).ok(),
            Some(Some(duration))
        );
    }
    let _ = since_ms(Some(text));
});
