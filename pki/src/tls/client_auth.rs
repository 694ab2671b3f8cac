//! Server-side verification of client certificates: webpki chain validation to our CA
//! (rustls's `WebPkiClientVerifier`), then the SPIFFE identity the server expects, then
//! revocation. Used by the control plane's mesh port (workers, optional) and by workers'
//! servers (the control plane, required).

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::identity_error;
use crate::identity::{Role, SpiffeId, cert_info};

/// Checked during every handshake where a client certificate is presented, after the
/// chain and identity checks passed.
pub trait RevocationCheck: Send + Sync + fmt::Debug {
    fn is_revoked(&self, serial_hex: &str, peer: &SpiffeId) -> bool;
}

/// Revokes nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoRevocation;

impl RevocationCheck for NoRevocation {
    fn is_revoked(&self, _serial_hex: &str, _peer: &SpiffeId) -> bool {
        false
    }
}

/// Which client identities a server accepts.
#[derive(Debug)]
pub(crate) enum ClientPolicy {
    /// any worker of the trust domain that is not revoked (the control plane's mesh port)
    AnyWorker(Arc<dyn RevocationCheck>),
    /// only the control plane of the trust domain (a worker's server)
    ControlPlane,
}

/// Wraps a `WebPkiClientVerifier` (chain, expiry, clientAuth EKU) and adds the SPIFFE
/// identity and revocation checks.
#[derive(Debug)]
pub(crate) struct SpiffeClientVerifier {
    pub(crate) inner: Arc<dyn ClientCertVerifier>,
    pub(crate) trust_domain: String,
    pub(crate) policy: ClientPolicy,
}

impl SpiffeClientVerifier {
    fn check_identity(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let info = cert_info(end_entity).map_err(|e| identity_error(e.to_string()))?;
        let id = info
            .spiffe_id
            .ok_or_else(|| identity_error("client certificate has no spiffe uri".into()))?;
        if id.trust_domain != self.trust_domain {
            return Err(identity_error(format!(
                "client {id} is not of trust domain {}",
                self.trust_domain
            )));
        }
        match (&self.policy, &id.role) {
            (ClientPolicy::AnyWorker(revocation), Role::Worker(_)) => {
                if revocation.is_revoked(&info.serial_hex, &id) {
                    tracing::warn!(peer = %id, serial = %info.serial_hex, "refused revoked client certificate");
                    return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
                }
                Ok(())
            }
            (ClientPolicy::ControlPlane, Role::ControlPlane) => Ok(()),
            (ClientPolicy::AnyWorker(_), Role::ControlPlane) => {
                Err(identity_error(format!("client {id} is not a worker")))
            }
            (ClientPolicy::ControlPlane, Role::Worker(_)) => Err(identity_error(format!(
                "client {id} is not the control plane"
            ))),
        }
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        self.check_identity(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
