//! The control plane's private certificate authority: creating it (in memory or in a
//! data dir, key file 0600), loading it back, and its fingerprint. Issuing certificates
//! lives in `ca/issue.rs`.
//!
//! The CA's subject CN is `berth ca <trust-domain>`. When a CA is loaded whose CN has
//! that shape but names another trust domain, loading fails: pointing a control plane at
//! another deployment's data dir is a configuration mistake. A CA whose CN has another
//! shape (e.g. one an operator brought) is accepted as is.

mod issue;

use std::fmt;
use std::path::Path;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::error::{PkiError, lowercase};
use crate::files;
use crate::identity::validate_trust_domain;

pub use issue::{IssuedCert, IssuedIdentity};

/// File name of the CA certificate inside the CA directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key inside the CA directory.
pub const CA_KEY_FILE: &str = "ca.key";

const CA_CN_PREFIX: &str = "berth ca ";
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
/// How far back `not_before` is set, so peers with slightly slow clocks accept new certs.
pub(crate) const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// A CA certificate together with its signing key.
pub struct CertificateAuthority {
    trust_domain: String,
    cert_pem: String,
    cert_der: Vec<u8>,
    not_after: i64,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.trust_domain)
            .field("fingerprint", &self.fingerprint())
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// A fresh in-memory CA: ECDSA P-256, valid 10 years, path length 0.
    pub fn generate(trust_domain: &str) -> Result<Self, PkiError> {
        let (cert_pem, key_pem) = generate_pems(trust_domain)?;
        Self::from_pem(&cert_pem, &key_pem, trust_domain)
    }

    /// Loads `dir/ca.pem` + `dir/ca.key`, or creates both (dir 0700, key 0600) when
    /// neither exists. Exactly one of them existing is an error, never an overwrite.
    pub fn load_or_create(dir: &Path, trust_domain: &str) -> Result<Self, PkiError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        if files::pair_state(&cert_path, &key_path)? {
            let cert_pem = files::read_string(&cert_path)?;
            let key_pem = files::read_string(&key_path)?;
            return Self::from_pem(&cert_pem, &key_pem, trust_domain);
        }
        let (cert_pem, key_pem) = generate_pems(trust_domain)?;
        let ca = Self::from_pem(&cert_pem, &key_pem, trust_domain)?;
        files::ensure_private_dir(dir)?;
        files::write_new_file(&key_path, key_pem.as_bytes(), files::PRIVATE_FILE_MODE)?;
        files::write_new_file(&cert_path, cert_pem.as_bytes(), files::PUBLIC_FILE_MODE)?;
        tracing::info!(
            trust_domain,
            fingerprint = %ca.fingerprint(),
            dir = %dir.display(),
            "created certificate authority"
        );
        Ok(ca)
    }

    /// Builds a CA from its PEM certificate and PKCS#8 PEM key. The certificate must be a
    /// CA certificate and the key must match it.
    pub fn from_pem(cert_pem: &str, key_pem: &str, trust_domain: &str) -> Result<Self, PkiError> {
        validate_trust_domain(trust_domain)?;
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| PkiError::Pem(format!("ca certificate: {}", lowercase(e))))?;
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| PkiError::Key(format!("ca key: {}", lowercase(e))))?;

        let (_, parsed) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| PkiError::Certificate(format!("cannot parse ca certificate: {e}")))?;
        if !parsed.is_ca() {
            return Err(PkiError::Certificate(
                "the ca certificate is not a ca (basic constraints)".into(),
            ));
        }
        for cn in parsed.subject().iter_common_name() {
            if let Ok(cn) = cn.as_str()
                && let Some(domain) = cn.strip_prefix(CA_CN_PREFIX)
                && domain != trust_domain
            {
                return Err(PkiError::Identity(format!(
                    "the ca belongs to trust domain {domain:?}, not {trust_domain:?}"
                )));
            }
        }
        if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(PkiError::Key(
                "the ca key does not match the ca certificate".into(),
            ));
        }
        let not_after = parsed.validity().not_after.timestamp();

        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|e| PkiError::Certificate(lowercase(e)))?;
        Ok(Self {
            trust_domain: trust_domain.to_owned(),
            cert_pem: cert_pem.to_owned(),
            cert_der: cert_der.to_vec(),
            not_after,
            issuer,
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// Lowercase hex SHA-256 of the CA certificate DER; what join tokens pin.
    pub fn fingerprint(&self) -> String {
        ca_fingerprint(&self.cert_der)
    }

    /// Unix seconds.
    pub fn not_after(&self) -> i64 {
        self.not_after
    }
}

/// Lowercase hex SHA-256 of a certificate's DER.
pub fn ca_fingerprint(cert_der: &[u8]) -> String {
    hex::encode(Sha256::digest(cert_der))
}

/// A new self-signed CA certificate and its key, both PEM.
fn generate_pems(trust_domain: &str) -> Result<(String, String), PkiError> {
    validate_trust_domain(trust_domain)?;
    let key =
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| PkiError::Key(lowercase(e)))?;
    let now = OffsetDateTime::now_utc();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, format!("{CA_CN_PREFIX}{trust_domain}"));
    name.push(DnType::OrganizationName, "berth");
    // a random unit keeps two CAs of the same trust domain apart by name, so a
    // certificate from the other one fails as "unknown issuer"
    name.push(
        DnType::OrganizationalUnitName,
        format!("ca-{}", hex::encode(rand::random::<[u8; 4]>())),
    );
    let mut params = CertificateParams::default();
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.serial_number = Some(issue::random_serial());
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + CA_VALIDITY;
    let cert = params
        .self_signed(&key)
        .map_err(|e| PkiError::Certificate(lowercase(e)))?;
    Ok((cert.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::cert_info;

    #[test]
    fn generated_ca_is_a_ca() {
        let ca = CertificateAuthority::generate("berth.local").unwrap();
        let info = cert_info(ca.cert_der()).unwrap();
        assert!(info.is_ca);
        assert_eq!(info.spiffe_id, None);
        assert_eq!(info.not_after, ca.not_after());
        let ten_years = 10 * 365 * 24 * 3600;
        assert!((info.not_after - info.not_before - ten_years - 300).abs() < 5);
        assert_eq!(ca.fingerprint().len(), 64);
        assert_eq!(ca.fingerprint(), ca_fingerprint(ca.cert_der()));
        assert_eq!(ca.trust_domain(), "berth.local");
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(!format!("{ca:?}").contains("PRIVATE"));
    }

    #[test]
    fn load_or_create_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("data/ca");
        let created = CertificateAuthority::load_or_create(&ca_dir, "berth.local").unwrap();
        let loaded = CertificateAuthority::load_or_create(&ca_dir, "berth.local").unwrap();
        assert_eq!(created.fingerprint(), loaded.fingerprint());
        assert_eq!(created.cert_pem(), loaded.cert_pem());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&ca_dir.join(CA_KEY_FILE)), 0o600);
            assert_eq!(mode(&ca_dir), 0o700);
        }
        // another trust domain may not adopt this CA
        let err = CertificateAuthority::load_or_create(&ca_dir, "other.local").unwrap_err();
        assert!(matches!(err, PkiError::Identity(_)), "{err}");
    }

    #[test]
    fn load_refuses_half_a_ca() {
        let dir = tempfile::tempdir().unwrap();
        CertificateAuthority::load_or_create(dir.path(), "berth.local").unwrap();
        std::fs::remove_file(dir.path().join(CA_CERT_FILE)).unwrap();
        let err = CertificateAuthority::load_or_create(dir.path(), "berth.local").unwrap_err();
        assert!(matches!(err, PkiError::Io { .. }), "{err}");
    }

    #[test]
    fn from_pem_refuses_mismatched_or_broken_input() {
        let (cert_a, key_a) = generate_pems("berth.local").unwrap();
        let (_, key_b) = generate_pems("berth.local").unwrap();
        CertificateAuthority::from_pem(&cert_a, &key_a, "berth.local").unwrap();
        assert!(matches!(
            CertificateAuthority::from_pem(&cert_a, &key_b, "berth.local"),
            Err(PkiError::Key(_))
        ));
        assert!(matches!(
            CertificateAuthority::from_pem("nope", &key_a, "berth.local"),
            Err(PkiError::Pem(_))
        ));
        assert!(matches!(
            CertificateAuthority::from_pem(&cert_a, "nope", "berth.local"),
            Err(PkiError::Key(_))
        ));
        assert!(matches!(
            CertificateAuthority::from_pem(&cert_a, &key_a, "Bad Domain"),
            Err(PkiError::Identity(_))
        ));
        assert!(CertificateAuthority::generate("").is_err());
    }

    #[test]
    fn from_pem_refuses_a_leaf() {
        let ca = CertificateAuthority::generate("berth.local").unwrap();
        let leaf = ca
            .issue_control_plane(&[], &[], Duration::from_secs(3600))
            .unwrap();
        let err = CertificateAuthority::from_pem(&leaf.cert.cert_pem, &leaf.key_pem, "berth.local")
            .unwrap_err();
        assert!(matches!(err, PkiError::Certificate(_)), "{err}");
    }
}
