//! Join and worker tokens: the unverified peek a new worker does, and the control
//! plane's verification. Input is either a raw token, or (first byte 1) a header, a
//! claims object and a signature separated by newlines, base64url-encoded into a token
//! here so the fuzzer reaches the JSON inside quickly.
//!
//! Checks: nothing panics; a peeked join token satisfies the claim rules; a token
//! that verifies is one the key signed (its claims equal the peeked ones, its window
//! holds `now`); a token never verifies as both kinds.
#![no_main]

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use berth_pki::{JOIN_AUDIENCE, TokenSigner, WORKER_TOKEN_AUDIENCE, peek_join_claims};
use libfuzzer_sys::fuzz_target;

/// A fixed Ed25519 key, so the committed seed tokens (signed with it) verify and the
/// fuzzer starts from tokens that pass the signature check.
const KEY_PEM: &str = include_str!("../keys/token-ed25519.pem");
const CA_SHA256: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// A fixed "now" (2026-01-01), so the result does not depend on the day of the run.
const NOW: i64 = 1_767_225_600;
const LEEWAY: u64 = 60;

fn signer() -> &'static TokenSigner {
    static SIGNER: OnceLock<TokenSigner> = OnceLock::new();
    SIGNER.get_or_init(|| TokenSigner::from_pem(KEY_PEM, "berth-cp").expect("the fuzz key"))
}

fn token_of(data: &[u8]) -> Option<String> {
    match data.split_first() {
        Some((1, rest)) => {
            let mut parts = rest.splitn(3, |b| *b == b'\n');
            let header = parts.next().unwrap_or_default();
            let claims = parts.next().unwrap_or_default();
            let signature = parts.next().unwrap_or_default();
            Some(format!(
                "{}.{}.{}",
                URL_SAFE_NO_PAD.encode(header),
                URL_SAFE_NO_PAD.encode(claims),
                URL_SAFE_NO_PAD.encode(signature)
            ))
        }
        _ => std::str::from_utf8(data).ok().map(str::to_owned),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(token) = token_of(data) else { return };
    let signer = signer();

    let peeked = peek_join_claims(&token);
    if let Ok(claims) = &peeked {
        assert_eq!(claims.aud, JOIN_AUDIENCE);
        assert!(claims.uses >= 1);
        assert_eq!(claims.ca_sha256.len(), 64);
        assert!(claims.ca_sha256.chars().all(|c| c.is_ascii_hexdigit()));
        if let Some(worker_id) = &claims.worker_id {
            assert!(berth_pki::validate_worker_id(worker_id).is_ok());
        }
    }

    let join = signer.verify_join_token(&token, CA_SHA256, NOW, LEEWAY);
    if let Ok(claims) = &join {
        assert_eq!(
            peeked.as_ref().ok(),
            Some(claims),
            "verified but peeks otherwise"
        );
        assert_eq!(claims.iss, "berth-cp");
        let leeway = LEEWAY as i64;
        assert!(claims.nbf - leeway <= NOW && NOW < claims.exp + leeway);
        assert!(claims.ca_sha256.eq_ignore_ascii_case(CA_SHA256));
    }

    let worker = signer.verify_worker_token(&token, NOW, LEEWAY);
    if let Ok(claims) = &worker {
        assert_eq!(claims.aud, WORKER_TOKEN_AUDIENCE);
        assert_eq!(claims.iss, "berth-cp");
        assert!(berth_pki::validate_worker_id(&claims.sub).is_ok());
        let leeway = LEEWAY as i64;
        assert!(claims.iat - leeway <= NOW && NOW < claims.exp + leeway);
        assert!(peeked.is_err(), "a worker token peeks as a join token");
    }
    assert!(
        join.is_err() || worker.is_err(),
        "one token verified as both kinds"
    );
});
