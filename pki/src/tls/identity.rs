//! [`ReloadableIdentity`]: the certificate chain and key a TLS endpoint presents, held
//! behind a lock so a renewed certificate takes effect on the next handshake without
//! restarting listeners or rebuilding configs.

use std::sync::{Arc, PoisonError, RwLock};

use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::provider;
use crate::error::{PkiError, lowercase};

/// The identity a TLS endpoint presents; swappable at runtime (certificate rotation
/// without restart). Used both as a server certificate resolver and as a client
/// certificate resolver.
#[derive(Debug)]
pub struct ReloadableIdentity {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadableIdentity {
    /// `cert_chain_pem` is the leaf first, then any intermediates/the CA;
    /// `key_pem` is the leaf's private key (PKCS#8, SEC1 or PKCS#1 PEM).
    pub fn from_pem(cert_chain_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        Ok(Self {
            current: RwLock::new(Arc::new(load(cert_chain_pem, key_pem)?)),
        })
    }

    /// Swaps in a new chain and key. Nothing changes if they do not parse or match.
    pub fn replace(&self, cert_chain_pem: &str, key_pem: &str) -> Result<(), PkiError> {
        let next = Arc::new(load(cert_chain_pem, key_pem)?);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = next;
        Ok(())
    }

    /// DER of the leaf certificate presented right now.
    pub fn current_leaf_der(&self) -> Vec<u8> {
        self.current()
            .cert
            .first()
            .map(|c| c.to_vec())
            .unwrap_or_default()
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ResolvesServerCert for ReloadableIdentity {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for ReloadableIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn load(cert_chain_pem: &str, key_pem: &str) -> Result<CertifiedKey, PkiError> {
    let chain = CertificateDer::pem_slice_iter(cert_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Pem(format!("certificate chain: {}", lowercase(e))))?;
    if chain.is_empty() {
        return Err(PkiError::Pem(
            "certificate chain holds no certificate".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| PkiError::Pem(format!("private key: {}", lowercase(e))))?;
    CertifiedKey::from_der(chain, key, &provider())
        .map_err(|e| PkiError::Key(format!("certificate and key: {}", lowercase(e))))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ca::CertificateAuthority;

    #[test]
    fn replace_swaps_the_leaf_and_keeps_it_on_error() {
        let ca = CertificateAuthority::generate("berth.local").unwrap();
        let a = ca
            .issue_control_plane(&[], &[], Duration::from_secs(60))
            .unwrap();
        let b = ca
            .issue_control_plane(&[], &[], Duration::from_secs(60))
            .unwrap();
        let chain_a = format!("{}{}", a.cert.cert_pem, ca.cert_pem());
        let identity = ReloadableIdentity::from_pem(&chain_a, &a.key_pem).unwrap();
        assert_eq!(identity.current_leaf_der(), a.cert.cert_der);
        assert_eq!(identity.current().cert.len(), 2);

        identity.replace(&b.cert.cert_pem, &b.key_pem).unwrap();
        assert_eq!(identity.current_leaf_der(), b.cert.cert_der);

        // mismatched key, empty chain, junk: refused, current identity kept
        assert!(matches!(
            identity.replace(&a.cert.cert_pem, &b.key_pem),
            Err(PkiError::Key(_))
        ));
        assert!(matches!(
            identity.replace("", &b.key_pem),
            Err(PkiError::Pem(_))
        ));
        assert!(identity.replace(&b.cert.cert_pem, "junk").is_err());
        assert_eq!(identity.current_leaf_der(), b.cert.cert_der);
    }
}
