//! Worker CSRs as the control plane signs them at enrollment and renewal, and DER
//! certificates as it reads them (peer certificates, issued certificates).
//!
//! Input: first byte 0: the rest is the CSR's PEM text as sent; otherwise the rest is
//! DER, wrapped here in a `CERTIFICATE REQUEST` PEM block (so the fuzzer works on the
//! ASN.1, not on base64), and also parsed as a certificate.
//!
//! Checks: nothing panics; a signed CSR yields a leaf certificate (not a CA) whose only
//! identity is the worker's, whatever the CSR asked for; a certificate's SPIFFE id
//! round-trips through its text form.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use berth_pki::{CertificateAuthority, SpiffeId, cert_info};
use libfuzzer_sys::fuzz_target;

fn ca() -> &'static CertificateAuthority {
    static CA: OnceLock<CertificateAuthority> = OnceLock::new();
    CA.get_or_init(|| CertificateAuthority::generate("berth.local").expect("a CA"))
}

fn pem(der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut text = String::from("-----BEGIN CERTIFICATE REQUEST-----\n");
    for line in body.as_bytes().chunks(64) {
        text.push_str(std::str::from_utf8(line).expect("base64 is ascii"));
        text.push('\n');
    }
    text.push_str("-----END CERTIFICATE REQUEST-----\n");
    text
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let csr_pem = if mode == 0 {
        match std::str::from_utf8(rest) {
            Ok(text) => text.to_owned(),
            Err(_) => return,
        }
    } else {
        if let Ok(info) = cert_info(rest) {
            if let Some(id) = &info.spiffe_id {
                assert_eq!(SpiffeId::parse(&id.to_string()).ok().as_ref(), Some(id));
            }
        }
        pem(rest)
    };
    let ca = ca();
    if let Ok(issued) = ca.sign_worker_csr(&csr_pem, "worker-1", Duration::from_secs(3600)) {
        let info = cert_info(&issued.cert_der).expect("we parse what we issue");
        assert!(!info.is_ca, "a worker certificate must not be a CA");
        assert_eq!(
            info.spiffe_id,
            Some(SpiffeId::worker("berth.local", "worker-1"))
        );
        assert!(info.not_after > info.not_before);
        assert_eq!(info.serial_hex, issued.serial_hex);
    }
});
