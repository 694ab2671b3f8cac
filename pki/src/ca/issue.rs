//! Issuing leaf certificates from the CA: the control plane's own serving/client
//! certificate and workers' certificates from their CSRs. Every field of an issued
//! certificate is decided here; from a CSR only the public key is kept.

use std::net::IpAddr;
use std::time::Duration;

use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData,
    SanType, SerialNumber, string::Ia5String,
};
use time::OffsetDateTime;

use super::{CLOCK_SKEW, CertificateAuthority};
use crate::error::{PkiError, lowercase};
use crate::identity::{SpiffeId, cert_info, validate_worker_id};

const CONTROL_PLANE_CN: &str = "berth control plane";

/// A certificate the CA signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    pub serial_hex: String,
    /// unix seconds
    pub not_before: i64,
    /// unix seconds
    pub not_after: i64,
}

/// A certificate plus the private key that was generated for it.
#[derive(Clone)]
pub struct IssuedIdentity {
    pub cert: IssuedCert,
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedIdentity")
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// The control plane's own certificate: URI SAN `spiffe://<td>/controlplane` plus the
    /// given DNS names and IPs (tonic/rustls server-name checks look only at those), EKU
    /// serverAuth + clientAuth, on a fresh P-256 key.
    pub fn issue_control_plane(
        &self,
        dns_names: &[String],
        ips: &[IpAddr],
        ttl: Duration,
    ) -> Result<IssuedIdentity, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| PkiError::Key(lowercase(e)))?;
        let id = SpiffeId::control_plane(self.trust_domain());
        let mut sans = vec![uri_san(&id)?];
        for name in dns_names {
            let dns = Ia5String::try_from(name.as_str())
                .map_err(|e| PkiError::Certificate(format!("dns name {name:?}: {e}")))?;
            sans.push(SanType::DnsName(dns));
        }
        sans.extend(ips.iter().copied().map(SanType::IpAddress));
        let params = leaf_params(CONTROL_PLANE_CN, sans, ttl)?;
        let cert = self.sign(&params, &key)?;
        Ok(IssuedIdentity {
            cert,
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a worker's CSR (PEM). The CSR's self-signature is verified (rcgen's
    /// `from_pem` does so with its x509-parser feature); then only its public key is
    /// used: subject, SAN, CA flag, usages, serial and validity are all ours.
    pub fn sign_worker_csr(
        &self,
        csr_pem: &str,
        worker_id: &str,
        ttl: Duration,
    ) -> Result<IssuedCert, PkiError> {
        validate_worker_id(worker_id)?;
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| match e {
            rcgen::Error::InvalidCertificationRequestSignature => {
                PkiError::Csr("the request's signature does not verify".into())
            }
            other => PkiError::Csr(lowercase(other)),
        })?;
        let id = SpiffeId::worker(self.trust_domain(), worker_id);
        let params = leaf_params(worker_id, vec![uri_san(&id)?], ttl)?;
        self.sign(&params, &csr.public_key)
    }

    fn sign(
        &self,
        params: &CertificateParams,
        public_key: &impl PublicKeyData,
    ) -> Result<IssuedCert, PkiError> {
        let cert = params
            .signed_by(public_key, &self.issuer)
            .map_err(|e| PkiError::Certificate(lowercase(e)))?;
        let cert_der = cert.der().to_vec();
        // read the values back from what was encoded, so they match the certificate exactly
        let info = cert_info(&cert_der)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            cert_der,
            serial_hex: info.serial_hex,
            not_before: info.not_before,
            not_after: info.not_after,
        })
    }
}

/// Parameters shared by every leaf we issue: not a CA, digitalSignature, serverAuth +
/// clientAuth, random serial, valid from `now - CLOCK_SKEW` to `now + ttl`.
fn leaf_params(
    common_name: &str,
    sans: Vec<SanType>,
    ttl: Duration,
) -> Result<CertificateParams, PkiError> {
    if ttl.is_zero() {
        return Err(PkiError::Certificate(
            "certificate lifetime must be positive".into(),
        ));
    }
    let now = OffsetDateTime::now_utc();
    let not_after = time::Duration::try_from(ttl)
        .ok()
        .and_then(|ttl| now.checked_add(ttl))
        .ok_or_else(|| {
            PkiError::Certificate(format!("certificate lifetime {ttl:?} is too long"))
        })?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    let mut params = CertificateParams::default();
    params.distinguished_name = name;
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.serial_number = Some(random_serial());
    params.not_before = now - CLOCK_SKEW;
    params.not_after = not_after;
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn uri_san(id: &SpiffeId) -> Result<SanType, PkiError> {
    Ia5String::try_from(id.to_string())
        .map(SanType::URI)
        .map_err(|e| PkiError::Identity(format!("{id}: {e}")))
}

/// 16 random bytes, top bit clear (positive) and second bit set (no leading zero byte,
/// so the hex form is always 32 characters).
pub(crate) fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use rcgen::BasicConstraints;
    use rustls::RootCertStore;
    use rustls::client::verify_server_cert_signed_by_trust_anchor;
    use rustls::server::ParsedCertificate;
    use rustls_pki_types::{CertificateDer, UnixTime};
    use x509_parser::extensions::GeneralName;

    use super::*;
    use crate::csr::generate_key_and_csr;
    use crate::identity::Role;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn ca() -> CertificateAuthority {
        CertificateAuthority::generate("berth.local").unwrap()
    }

    /// Full webpki path validation of `leaf` against `ca`.
    fn chains_to(ca: &CertificateAuthority, leaf: &[u8]) -> Result<(), rustls::Error> {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(ca.cert_der().to_vec()))
            .unwrap();
        let leaf = CertificateDer::from(leaf.to_vec());
        let parsed = ParsedCertificate::try_from(&leaf)?;
        let algs = rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .all;
        verify_server_cert_signed_by_trust_anchor(&parsed, &roots, &[], UnixTime::now(), algs)
    }

    fn san_strings(der: &[u8]) -> Vec<String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
        let Some(sans) = cert.subject_alternative_name().unwrap() else {
            return Vec::new();
        };
        sans.value
            .general_names
            .iter()
            .map(|name| match name {
                GeneralName::URI(u) => format!("uri:{u}"),
                GeneralName::DNSName(d) => format!("dns:{d}"),
                GeneralName::IPAddress(ip) => format!("ip:{ip:?}"),
                other => format!("other:{other:?}"),
            })
            .collect()
    }

    #[test]
    fn worker_cert_is_a_plain_leaf_with_our_san() {
        let ca = ca();
        let req = generate_key_and_csr("worker-1").unwrap();
        let issued = ca.sign_worker_csr(&req.csr_pem, "worker-1", DAY).unwrap();
        chains_to(&ca, &issued.cert_der).unwrap();
        assert_eq!(
            san_strings(&issued.cert_der),
            vec!["uri:spiffe://berth.local/worker/worker-1"]
        );
        let info = cert_info(&issued.cert_der).unwrap();
        assert!(!info.is_ca);
        assert_eq!(info.serial_hex, issued.serial_hex);
        assert_eq!(issued.serial_hex.len(), 32);
        assert_eq!(
            info.spiffe_id.unwrap().role,
            Role::Worker("worker-1".into())
        );
        let now = OffsetDateTime::now_utc().unix_timestamp();
        assert!((issued.not_before - (now - 300)).abs() < 5);
        assert!((issued.not_after - (now + 86400)).abs() < 5);

        let (_, cert) = x509_parser::parse_x509_certificate(&issued.cert_der).unwrap();
        let cn: Vec<_> = cert.subject().iter_common_name().collect();
        assert_eq!(cn.len(), 1);
        assert_eq!(cn[0].as_str().unwrap(), "worker-1");
        let bc = cert.basic_constraints().unwrap().unwrap();
        assert!(!bc.value.ca);
        let eku = cert.extended_key_usage().unwrap().unwrap();
        assert!(eku.value.server_auth && eku.value.client_auth);
        let ku = cert.key_usage().unwrap().unwrap();
        assert!(ku.value.digital_signature() && !ku.value.key_cert_sign());
    }

    #[test]
    fn csr_asking_for_ca_rights_and_foreign_sans_gets_neither() {
        let ca = ca();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
        params.subject_alt_names.push(SanType::URI(
            Ia5String::try_from("spiffe://berth.local/controlplane").unwrap(),
        ));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "berth ca berth.local");
        let csr_pem = params.serialize_request(&key).unwrap().pem().unwrap();

        let issued = ca.sign_worker_csr(&csr_pem, "sneaky", DAY).unwrap();
        chains_to(&ca, &issued.cert_der).unwrap();
        assert_eq!(
            san_strings(&issued.cert_der),
            vec!["uri:spiffe://berth.local/worker/sneaky"]
        );
        let info = cert_info(&issued.cert_der).unwrap();
        assert!(!info.is_ca);
        let (_, cert) = x509_parser::parse_x509_certificate(&issued.cert_der).unwrap();
        assert!(!cert.key_usage().unwrap().unwrap().value.key_cert_sign());
        // the key is the requester's
        assert_eq!(
            cert.public_key().raw,
            key.subject_public_key_info().as_slice()
        );
    }

    #[test]
    fn tampered_csr_is_refused() {
        let ca = ca();
        let req = generate_key_and_csr("worker-1").unwrap();
        let mut der =
            rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(req.csr_pem.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec();
        let at = der
            .windows(8)
            .position(|w| w == b"worker-1")
            .expect("cn in csr");
        der[at + 7] = b'2';
        let tampered = pem_encode("CERTIFICATE REQUEST", &der);
        let err = ca.sign_worker_csr(&tampered, "worker-2", DAY).unwrap_err();
        assert!(err.to_string().contains("signature"), "{err}");

        let err = ca.sign_worker_csr("garbage", "worker-1", DAY).unwrap_err();
        assert!(matches!(err, PkiError::Csr(_)), "{err}");
    }

    #[test]
    fn invalid_worker_id_or_ttl_is_refused() {
        let ca = ca();
        let req = generate_key_and_csr("x").unwrap();
        for bad in ["", "Worker", "-x", "a/b", &"x".repeat(64)] {
            let err = ca.sign_worker_csr(&req.csr_pem, bad, DAY).unwrap_err();
            assert!(matches!(err, PkiError::Identity(_)), "{bad:?}: {err}");
        }
        let err = ca
            .sign_worker_csr(&req.csr_pem, "ok", Duration::ZERO)
            .unwrap_err();
        assert!(matches!(err, PkiError::Certificate(_)), "{err}");
        let err = ca
            .sign_worker_csr(&req.csr_pem, "ok", Duration::MAX)
            .unwrap_err();
        assert!(matches!(err, PkiError::Certificate(_)), "{err}");
    }

    #[test]
    fn control_plane_cert_has_uri_dns_and_ip_sans() {
        let ca = ca();
        let issued = ca
            .issue_control_plane(
                &["localhost".into(), "cp.example.org".into()],
                &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
                DAY,
            )
            .unwrap();
        chains_to(&ca, &issued.cert.cert_der).unwrap();
        assert_eq!(
            san_strings(&issued.cert.cert_der),
            vec![
                "uri:spiffe://berth.local/controlplane".to_string(),
                "dns:localhost".into(),
                "dns:cp.example.org".into(),
                "ip:[127, 0, 0, 1]".into(),
            ]
        );
        let info = cert_info(&issued.cert.cert_der).unwrap();
        assert_eq!(info.spiffe_id, Some(SpiffeId::control_plane("berth.local")));
        assert!(!info.is_ca);
        // the key is usable and matches
        let key = KeyPair::from_pem(&issued.key_pem).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&issued.cert.cert_der).unwrap();
        assert_eq!(
            cert.public_key().raw,
            key.subject_public_key_info().as_slice()
        );
        assert!(!format!("{issued:?}").contains("PRIVATE"));

        let err = ca
            .issue_control_plane(&["bad name é".into()], &[], DAY)
            .unwrap_err();
        assert!(matches!(err, PkiError::Certificate(_)), "{err}");
    }

    #[test]
    fn serials_are_unique_and_positive() {
        let a = random_serial().to_bytes();
        let b = random_serial().to_bytes();
        assert_ne!(a, b);
        assert_eq!(a.len(), 16);
        assert!(a[0] & 0x80 == 0 && a[0] != 0);
    }

    fn pem_encode(label: &str, der: &[u8]) -> String {
        use base64::Engine;
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        let mut out = format!("-----BEGIN {label}-----\n");
        for chunk in body.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(chunk).unwrap());
            out.push('\n');
        }
        out.push_str(&format!("-----END {label}-----\n"));
        out
    }

    use rustls_pki_types::pem::PemObject;
}
