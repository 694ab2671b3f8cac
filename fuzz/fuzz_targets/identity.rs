//! SPIFFE ids (read from every mesh peer's certificate), worker ids and trust domains.
//!
//! Checks: nothing panics; a parsed id prints back as the same text; what parses holds
//! valid parts; ids built from valid parts parse back to themselves.
#![no_main]

use berth_pki::{Role, SpiffeId, validate_trust_domain, validate_worker_id};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = SpiffeId::parse(text) {
        assert_eq!(id.to_string(), text, "a spiffe id does not print back");
        assert!(validate_trust_domain(&id.trust_domain).is_ok());
        if let Role::Worker(worker) = &id.role {
            assert!(validate_worker_id(worker).is_ok());
        }
    }
    // the text as both parts: a trust domain and a worker id, split at the first '/'
    let (td, worker) = text.split_once('/').unwrap_or((text, text));
    if validate_trust_domain(td).is_ok() && validate_worker_id(worker).is_ok() {
        assert!(worker.len() <= 63 && td.len() <= 253);
        for id in [SpiffeId::worker(td, worker), SpiffeId::control_plane(td)] {
            assert_eq!(SpiffeId::parse(&id.to_string()).ok(), Some(id));
        }
    }
});
