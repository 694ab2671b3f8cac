//! SPIFFE-style identities: the `spiffe://<trust-domain>/controlplane` and
//! `spiffe://<trust-domain>/worker/<id>` URIs carried as URI SANs, the rules for worker
//! ids and trust domains, and reading those identities (and serial, validity) back out of
//! DER certificates.

use std::fmt;

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

use crate::error::PkiError;

/// The trust domain used when the operator does not choose one.
pub const DEFAULT_TRUST_DOMAIN: &str = "berth.local";

const SCHEME: &str = "spiffe://";
const CONTROL_PLANE_PATH: &str = "controlplane";
const WORKER_PREFIX: &str = "worker/";

/// What a holder of an identity is allowed to be in the mesh.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Role {
    ControlPlane,
    Worker(String),
}

/// A parsed `spiffe://` identity of this system.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    pub trust_domain: String,
    pub role: Role,
}

impl SpiffeId {
    pub fn control_plane(trust_domain: &str) -> Self {
        Self {
            trust_domain: trust_domain.to_owned(),
            role: Role::ControlPlane,
        }
    }

    pub fn worker(trust_domain: &str, worker_id: &str) -> Self {
        Self {
            trust_domain: trust_domain.to_owned(),
            role: Role::Worker(worker_id.to_owned()),
        }
    }

    /// Parses `spiffe://<td>/controlplane` or `spiffe://<td>/worker/<id>`; anything else
    /// (other paths, query strings, bad trust domain or worker id) is an error.
    pub fn parse(uri: &str) -> Result<Self, PkiError> {
        let rest = uri
            .strip_prefix(SCHEME)
            .ok_or_else(|| PkiError::Identity(format!("{uri:?} is not a spiffe:// uri")))?;
        let (trust_domain, path) = rest
            .split_once('/')
            .ok_or_else(|| PkiError::Identity(format!("{uri:?} has no path")))?;
        validate_trust_domain(trust_domain)?;
        let role = if path == CONTROL_PLANE_PATH {
            Role::ControlPlane
        } else if let Some(worker_id) = path.strip_prefix(WORKER_PREFIX) {
            validate_worker_id(worker_id)?;
            Role::Worker(worker_id.to_owned())
        } else {
            return Err(PkiError::Identity(format!(
                "{uri:?} names neither the control plane nor a worker"
            )));
        };
        Ok(Self {
            trust_domain: trust_domain.to_owned(),
            role,
        })
    }

    /// The worker id, when this is a worker identity.
    pub fn worker_id(&self) -> Option<&str> {
        match &self.role {
            Role::Worker(id) => Some(id),
            Role::ControlPlane => None,
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.role {
            Role::ControlPlane => write!(f, "{SCHEME}{}/{CONTROL_PLANE_PATH}", self.trust_domain),
            Role::Worker(id) => write!(f, "{SCHEME}{}/{WORKER_PREFIX}{id}", self.trust_domain),
        }
    }
}

/// A worker id is 1..=63 characters: `[a-z0-9]` first, then `[a-z0-9._-]`.
pub fn validate_worker_id(id: &str) -> Result<(), PkiError> {
    if id.is_empty() || id.len() > 63 {
        return Err(PkiError::Identity(format!(
            "worker id {id:?} must be 1 to 63 characters long"
        )));
    }
    let mut chars = id.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if !first_ok || !rest_ok {
        return Err(PkiError::Identity(format!(
            "worker id {id:?} must start with [a-z0-9] and contain only [a-z0-9._-]"
        )));
    }
    Ok(())
}

/// A trust domain is a lowercase DNS-like name: dot-separated labels of `[a-z0-9-]`,
/// each 1..=63 long and not starting or ending with `-`, 253 characters at most.
pub fn validate_trust_domain(td: &str) -> Result<(), PkiError> {
    let bad = |why: &str| PkiError::Identity(format!("trust domain {td:?} {why}"));
    if td.is_empty() || td.len() > 253 {
        return Err(bad("must be 1 to 253 characters long"));
    }
    for label in td.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(bad("has an empty or over-long label"));
        }
        if !label
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(bad(
                "may contain only lowercase letters, digits, '-' and '.'",
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("has a label starting or ending with '-'"));
        }
    }
    Ok(())
}

/// What the rest of the system needs to know about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// lowercase hex of the serial number, without leading zero bytes
    pub serial_hex: String,
    /// unix seconds
    pub not_before: i64,
    /// unix seconds
    pub not_after: i64,
    /// the certificate's single `spiffe://` URI SAN, if it has one
    pub spiffe_id: Option<SpiffeId>,
    pub is_ca: bool,
}

/// Parses a DER certificate. More than one `spiffe://` URI SAN is an error: an identity
/// must be unambiguous.
pub fn cert_info(der: &[u8]) -> Result<CertInfo, PkiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| PkiError::Certificate(format!("cannot parse certificate: {e}")))?;
    let sans = cert
        .subject_alternative_name()
        .map_err(|e| PkiError::Certificate(format!("bad subject alternative names: {e}")))?;
    let mut spiffe_uris = Vec::new();
    if let Some(sans) = sans {
        for name in &sans.value.general_names {
            if let GeneralName::URI(uri) = name
                && uri.starts_with(SCHEME)
            {
                spiffe_uris.push(*uri);
            }
        }
    }
    let spiffe_id = match spiffe_uris.as_slice() {
        [] => None,
        [uri] => Some(SpiffeId::parse(uri)?),
        _ => {
            return Err(PkiError::Identity(format!(
                "certificate carries {} spiffe uris, expected one",
                spiffe_uris.len()
            )));
        }
    };
    Ok(CertInfo {
        serial_hex: serial_hex(cert.raw_serial()),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        spiffe_id,
        is_ca: cert.is_ca(),
    })
}

/// The identity of a TLS peer, read from the leaf (first) certificate of its chain.
pub fn peer_spiffe_id(certs: &[CertificateDer<'_>]) -> Result<SpiffeId, PkiError> {
    let leaf = certs
        .first()
        .ok_or_else(|| PkiError::Identity("peer presented no certificate".into()))?;
    cert_info(leaf)?
        .spiffe_id
        .ok_or_else(|| PkiError::Identity("peer certificate has no spiffe uri".into()))
}

/// Hex of a DER integer's magnitude bytes, leading zero bytes removed (one kept for 0).
pub(crate) fn serial_hex(raw: &[u8]) -> String {
    let start = raw
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(raw.len().saturating_sub(1));
    hex::encode(&raw[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_both_roles() {
        let cp = SpiffeId::control_plane("berth.local");
        assert_eq!(cp.to_string(), "spiffe://berth.local/controlplane");
        assert_eq!(SpiffeId::parse(&cp.to_string()).unwrap(), cp);
        assert_eq!(cp.worker_id(), None);

        let w = SpiffeId::worker("example.org", "node-1.a_b");
        assert_eq!(w.to_string(), "spiffe://example.org/worker/node-1.a_b");
        assert_eq!(SpiffeId::parse(&w.to_string()).unwrap(), w);
        assert_eq!(w.worker_id(), Some("node-1.a_b"));
    }

    #[test]
    fn parse_refuses_other_uris() {
        for uri in [
            "https://berth.local/controlplane",
            "spiffe://berth.local",
            "spiffe://berth.local/",
            "spiffe://berth.local/controlplane/x",
            "spiffe://berth.local/worker/",
            "spiffe://berth.local/worker/a/b",
            "spiffe://berth.local/worker/UPPER",
            "spiffe://Berth.local/controlplane",
            "spiffe:///controlplane",
            "spiffe://berth.local/admin",
        ] {
            assert!(SpiffeId::parse(uri).is_err(), "{uri} should be refused");
        }
    }

    #[test]
    fn worker_id_rules() {
        for ok in ["a", "0", "node-1", "a.b_c-d", &"x".repeat(63)] {
            validate_worker_id(ok).unwrap();
        }
        for bad in [
            "",
            "-a",
            ".a",
            "_a",
            "A",
            "a b",
            "a/b",
            "é",
            &"x".repeat(64),
        ] {
            assert!(
                validate_worker_id(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn trust_domain_rules() {
        for ok in ["berth.local", "a", "a-b.example.org", "x1"] {
            validate_trust_domain(ok).unwrap();
        }
        for bad in [
            "",
            "Berth.local",
            "a..b",
            ".a",
            "a.",
            "-a.b",
            "a-.b",
            "a_b",
            "a/b",
        ] {
            assert!(
                validate_trust_domain(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn serial_hex_strips_leading_zeros() {
        assert_eq!(serial_hex(&[0, 0x80, 1]), "8001");
        assert_eq!(serial_hex(&[0x7f]), "7f");
        assert_eq!(serial_hex(&[0]), "00");
    }

    fn self_signed_with_uris(uris: &[&str]) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        for uri in uris {
            params.subject_alt_names.push(rcgen::SanType::URI(
                rcgen::string::Ia5String::try_from(*uri).unwrap(),
            ));
        }
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn cert_info_reads_the_single_spiffe_uri() {
        let der = self_signed_with_uris(&["https://example.org", "spiffe://berth.local/worker/w1"]);
        let info = cert_info(&der).unwrap();
        assert_eq!(info.spiffe_id, Some(SpiffeId::worker("berth.local", "w1")));
        assert!(!info.is_ca);
        assert!(info.not_before < info.not_after);
        let certs = [CertificateDer::from(der)];
        assert_eq!(
            peer_spiffe_id(&certs).unwrap(),
            SpiffeId::worker("berth.local", "w1")
        );

        let none = self_signed_with_uris(&["https://example.org"]);
        assert_eq!(cert_info(&none).unwrap().spiffe_id, None);
        assert!(peer_spiffe_id(&[CertificateDer::from(none)]).is_err());

        let two = self_signed_with_uris(&[
            "spiffe://berth.local/worker/w1",
            "spiffe://berth.local/controlplane",
        ]);
        assert!(matches!(cert_info(&two), Err(PkiError::Identity(_))));

        let bad = self_signed_with_uris(&["spiffe://berth.local/admin"]);
        assert!(matches!(cert_info(&bad), Err(PkiError::Identity(_))));
    }

    #[test]
    fn cert_info_and_peer_id_fail_cleanly() {
        assert!(matches!(cert_info(b"junk"), Err(PkiError::Certificate(_))));
        assert!(matches!(peer_spiffe_id(&[]), Err(PkiError::Identity(_))));
    }
}
