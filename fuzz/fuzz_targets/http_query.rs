//! The query strings of the HTTP routes (`?path=&recursive=&mode=`, `?pattern=`,
//! `?lines=&follow=`, `?since=&limit=`), through the extractor the handlers use and
//! then what each handler does with the values.
//!
//! Input: first byte picks the route and whether the rest is a raw query string (as a
//! client sends it) or a value, percent-encoded here into its parameter.
//!
//! Checks: nothing panics; every refusal is a 400; a percent-encoded value comes back
//! exactly as it was encoded; modes stay within 0o7777.
#![no_main]

use berth_controlplane::error::{ApiError, ErrorCode};
use berth_controlplane::fuzzing::{
    AuditQuery, GlobQuery, LogsQuery, PathQuery, parse_mode, query, required, since_ms,
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn refused<T>(result: Result<T, ApiError>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(err) => {
            assert_eq!(err.code, ErrorCode::BadRequest, "{err}");
            None
        }
    }
}

/// Every byte but the unreserved ones as `%XX`.
fn encode(value: &[u8]) -> String {
    let mut out = String::new();
    for &byte in value {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn handle_path(q: PathQuery) {
    if let Some(mode) = refused(parse_mode(q.mode.map(Value::String).as_ref())) {
        assert!(mode <= 0o7777);
    }
    let _ = refused(required(q.path));
}

fn handle_audit(q: AuditQuery) {
    let _ = refused(since_ms(q.since.as_deref()));
    let limit = q.limit.unwrap_or(1000).clamp(1, 100_000);
    assert!((1..=100_000).contains(&limit));
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    if selector & 0x80 == 0 {
        // a raw query string
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        match selector % 4 {
            0 => {
                if let Some(q) = refused(query::<PathQuery>(text)) {
                    handle_path(q);
                }
            }
            1 => {
                let _ = refused(query::<GlobQuery>(text));
            }
            2 => {
                if let Some(q) = refused(query::<LogsQuery>(text)) {
                    assert!(q.lines.unwrap_or(100).min(10_000) <= 10_000);
                }
            }
            _ => {
                if let Some(q) = refused(query::<AuditQuery>(text)) {
                    handle_audit(q);
                }
            }
        }
        return;
    }
    // one value, percent-encoded into its parameter: it must come back whole
    let Ok(value) = std::str::from_utf8(rest) else {
        return;
    };
    let encoded = encode(rest);
    match selector % 4 {
        0 => {
            let q = refused(query::<PathQuery>(&format!(
                "path={encoded}&recursive=true"
            )))
            .expect("an encoded path is a valid query");
            assert_eq!(q.path.as_deref(), Some(value));
            assert_eq!(q.recursive, Some(true));
            handle_path(q);
        }
        1 => {
            let q = refused(query::<GlobQuery>(&format!("pattern={encoded}")))
                .expect("an encoded pattern is a valid query");
            assert_eq!(q.pattern.as_deref(), Some(value));
        }
        2 => {
            let q = refused(query::<PathQuery>(&format!("path=%2Fa&mode={encoded}")))
                .expect("an encoded mode is a valid query");
            assert_eq!(q.mode.as_deref(), Some(value));
            handle_path(q);
        }
        _ => {
            let q = refused(query::<AuditQuery>(&format!("since={encoded}")))
                .expect("an encoded since is a valid query");
            assert_eq!(q.since.as_deref(), Some(value));
            handle_audit(q);
        }
    }
});
