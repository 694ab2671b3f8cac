//! The worker side of enrollment: a fresh key pair that never leaves the worker and a
//! certificate signing request for it. The CSR carries only a common name; everything
//! else in the certificate is decided by the control plane.

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};

use crate::error::{PkiError, lowercase};

/// A private key (PKCS#8 PEM) and a CSR (PEM) signed by it.
#[derive(Clone)]
pub struct KeyAndCsr {
    pub key_pem: String,
    pub csr_pem: String,
}

impl std::fmt::Debug for KeyAndCsr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyAndCsr")
            .field("csr_pem", &self.csr_pem)
            .finish_non_exhaustive()
    }
}

/// A fresh ECDSA P-256 key and a CSR whose subject is `CN=<common_name>`.
pub fn generate_key_and_csr(common_name: &str) -> Result<KeyAndCsr, PkiError> {
    if common_name.is_empty() {
        return Err(PkiError::Csr("common name must not be empty".into()));
    }
    let key =
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| PkiError::Key(lowercase(e)))?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    let mut params = CertificateParams::default();
    params.distinguished_name = name;
    let csr_pem = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(|e| PkiError::Csr(lowercase(e)))?;
    Ok(KeyAndCsr {
        key_pem: key.serialize_pem(),
        csr_pem,
    })
}

#[cfg(test)]
mod tests {
    use rcgen::CertificateSigningRequestParams;

    use super::*;

    #[test]
    fn csr_is_self_signed_with_cn_only() {
        let out = generate_key_and_csr("worker-7").unwrap();
        assert!(out.key_pem.contains("PRIVATE KEY"));
        assert!(!format!("{out:?}").contains("PRIVATE KEY"));
        let parsed = CertificateSigningRequestParams::from_pem(&out.csr_pem).unwrap();
        assert!(parsed.params.subject_alt_names.is_empty());
        let cn = parsed
            .params
            .distinguished_name
            .get(&DnType::CommonName)
            .unwrap();
        assert_eq!(cn, &rcgen::DnValue::Utf8String("worker-7".into()));
        let key = KeyPair::from_pem(&out.key_pem).unwrap();
        assert_eq!(
            key.public_key_raw(),
            rcgen::PublicKeyData::der_bytes(&parsed.public_key)
        );
    }

    #[test]
    fn empty_common_name_is_refused() {
        assert!(matches!(generate_key_and_csr(""), Err(PkiError::Csr(_))));
    }

    #[test]
    fn keys_are_fresh() {
        let a = generate_key_and_csr("w").unwrap();
        let b = generate_key_and_csr("w").unwrap();
        assert_ne!(a.key_pem, b.key_pem);
    }
}
