//! The JSON bodies of the HTTP routes, through the extractor the handlers use and
//! then what each handler does with the body before touching any state.
//!
//! Input: first byte picks the route (250 and up: a template document), the rest is
//! the request body.
//!
//! Checks: nothing panics; every refusal is a 400 (a client's bad body is never a
//! server error); accepted bodies give values inside their documented bounds (modes
//! of at most 0o7777, ttls within the limits, positive timeouts, ...); base64 content
//! re-encodes to what was sent.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use berth_controlplane::config::SandboxesConfig;
use berth_controlplane::error::{ApiError, ErrorCode};
use berth_controlplane::fuzzing::{
    AddUserBody, ChmodBody, CreateRequest, CreateTeamBody, CreateTokenBody, DrainBody, ExecBody,
    ExecCall, ExtendBody, MoveBody, SandboxSettings, UpdateTeamBody, WriteBody, decode_content,
    json_body, parse_max_ttl, parse_mode, parse_optional_duration, parse_ttl, required,
    template_document,
};
use libfuzzer_sys::fuzz_target;

fn settings() -> &'static SandboxSettings {
    static SETTINGS: OnceLock<SandboxSettings> = OnceLock::new();
    SETTINGS.get_or_init(|| SandboxSettings {
        limits: SandboxesConfig::default(),
        heartbeat_grace: Duration::from_secs(30),
        lease_duration: Duration::from_secs(300),
        preview_domain: String::new(),
    })
}

/// A refusal must be the client's fault.
fn refused<T>(result: Result<T, ApiError>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(err) => {
            assert_eq!(err.code, ErrorCode::BadRequest, "{err}");
            None
        }
    }
}

fn check_mode(mode: Result<u32, ApiError>) {
    if let Some(mode) = refused(mode) {
        assert!(mode <= 0o7777, "mode {mode:o}");
    }
}

fn check_duration(text: Option<&str>) {
    if let Some(Some(duration)) = refused(parse_optional_duration(text)) {
        let again = humantime::format_duration(duration).to_string();
        assert_eq!(humantime::parse_duration(&again).ok(), Some(duration));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&route, body)) = data.split_first() else {
        return;
    };
    if route >= 250 {
        // a template document: what is taken is within its bounds, and reads back to
        // the same content (so to the same version)
        let Some(spec) = refused(template_document(body, settings())) else {
            return;
        };
        assert!(!spec.name.is_empty() && spec.name.len() <= 63);
        assert!(spec.env.len() <= 128 && spec.on_start.len() <= 64 << 10);
        let again = serde_json::to_vec(&spec).unwrap();
        let reread = template_document(&again, settings()).expect("a saved template reads back");
        assert_eq!(reread.content_hash(), spec.content_hash());
        return;
    }
    match route % 10 {
        0 => {
            let Some(body) = refused(json_body::<ExecBody>(body)) else {
                return;
            };
            let wants_argv = body.mode.as_deref() == Some("argv");
            let command = body.command.clone();
            if let Some(call) = refused(ExecCall::try_from(body)) {
                assert_eq!(call.argv, wants_argv);
                assert_eq!(call.command, command);
                assert!(call.timeout.is_none_or(|t| !t.is_zero()));
            }
        }
        1 => {
            let Some(body) = refused(json_body::<WriteBody>(body)) else {
                return;
            };
            if let Some(path) = refused(required(Some(body.path.clone()))) {
                assert!(!path.is_empty());
            }
            check_mode(parse_mode(body.mode.as_ref()));
            let base64 = body.encoding.as_deref() == Some("base64");
            let content = body.content.clone();
            if let Some(bytes) = refused(decode_content(body.encoding.as_deref(), body.content)) {
                if base64 {
                    let again = base64::engine::general_purpose::STANDARD.encode(&bytes);
                    assert_eq!(again, content.trim());
                } else {
                    assert_eq!(bytes, content.into_bytes());
                }
            }
        }
        2 => {
            let Some(body) = refused(json_body::<MoveBody>(body)) else {
                return;
            };
            let _ = refused(required(Some(body.old_path)));
            let _ = refused(required(Some(body.new_path)));
        }
        3 => {
            let Some(body) = refused(json_body::<ChmodBody>(body)) else {
                return;
            };
            check_mode(parse_mode(Some(&body.mode)));
        }
        4 => {
            let Some(body) = refused(json_body::<CreateRequest>(body)) else {
                return;
            };
            let limits = &settings().limits;
            let Ok(create) = body.validate(settings()) else {
                return;
            };
            assert!((16..=limits.max_memory_mb).contains(&create.memory_mb));
            assert!((1..=limits.max_vcpus).contains(&create.vcpus));
            assert!(create.ttl >= Duration::from_secs(1) && create.ttl <= limits.max_ttl);
            assert!(create.image.len() <= 256);
            assert!(!create.image.chars().any(char::is_whitespace));
            assert!(create.metadata.len() <= 64);
            assert!(create.owner_id.len() <= 128 && create.template.len() <= 128);
            // constraints are checked and bounded; pools never come from a body
            assert!(create.constraints.len() <= 32 && create.pools.is_empty());
        }
        5 => {
            let Some(body) = refused(json_body::<ExtendBody>(body)) else {
                return;
            };
            let ttl = body.ttl.unwrap_or_else(|| "30m".to_owned());
            let max = settings().limits.max_ttl;
            if let Ok(ttl) = parse_ttl(&ttl, max) {
                assert!(ttl >= Duration::from_secs(1) && ttl <= max);
            }
        }
        6 => {
            let Some(body) = refused(json_body::<CreateTokenBody>(body)) else {
                return;
            };
            check_duration(body.ttl.as_deref());
        }
        7..=9 => {
            // teams: the bodies of create, update and add-user; a max_ttl is a
            // duration or empty, and what parses keeps its value through a format
            let ttl = match route % 10 {
                7 => refused(json_body::<CreateTeamBody>(body)).and_then(|b| b.max_ttl),
                8 => refused(json_body::<UpdateTeamBody>(body)).and_then(|b| b.max_ttl),
                _ => {
                    let _ = refused(json_body::<AddUserBody>(body));
                    None
                }
            };
            if let Some(Some(ttl)) = ttl.as_deref().and_then(|t| refused(parse_max_ttl(t))) {
                let again = humantime::format_duration(ttl).to_string();
                assert_eq!(humantime::parse_duration(&again).ok(), Some(ttl));
            }
        }
        _ => {
            let Some(body) = refused(json_body::<DrainBody>(body)) else {
                return;
            };
            check_duration(body.deadline.as_deref());
        }
    }
});
