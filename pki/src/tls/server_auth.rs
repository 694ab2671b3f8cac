//! Client-side verification of server certificates. Two verifiers: one for established
//! members of the mesh (chain to our CA + an exact SPIFFE id), and one for a new worker's
//! first contact, which knows only the CA's SHA-256 from its join token.
//!
//! Host names are deliberately not checked: in this mesh the identity of a peer is its
//! `spiffe://` URI signed by our CA. Workers are dialed at whatever address they
//! advertise (often a bare IP, possibly behind NAT) and the control plane may be reached
//! under names its certificate does not list; a DNS/IP SAN would prove nothing our CA's
//! signature on the SPIFFE URI does not already prove.

use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

use super::identity_error;
use crate::identity::{Role, SpiffeId, peer_spiffe_id};

/// Accepts a server whose chain verifies to our CA and whose SPIFFE id is `expected`.
#[derive(Debug)]
pub(crate) struct SpiffeServerVerifier {
    pub(crate) roots: Arc<RootCertStore>,
    pub(crate) expected: SpiffeId,
    pub(crate) algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        let id = peer_spiffe_id(std::slice::from_ref(end_entity))
            .map_err(|e| identity_error(e.to_string()))?;
        if id != self.expected {
            return Err(identity_error(format!(
                "server presented identity {id}, expected {}",
                self.expected
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The CA certificate a bootstrap handshake found under the pinned fingerprint; empty
/// until a handshake succeeded.
#[derive(Debug, Default, Clone)]
pub struct PinnedCa {
    found: Arc<Mutex<Option<Vec<u8>>>>,
}

impl PinnedCa {
    /// DER of the pinned CA certificate, once a handshake verified against it.
    pub fn get(&self) -> Option<Vec<u8>> {
        self.found
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, der: Vec<u8>) {
        *self.found.lock().unwrap_or_else(PoisonError::into_inner) = Some(der);
    }
}

/// First contact of a new worker: the server must present, after its leaf, a CA
/// certificate whose SHA-256 is the pin; the leaf must verify against that CA and be
/// a control plane identity.
#[derive(Debug)]
pub(crate) struct PinnedCaVerifier {
    pub(crate) pin: [u8; 32],
    pub(crate) pinned: PinnedCa,
    pub(crate) algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|cert| Sha256::digest(cert.as_ref())[..] == self.pin[..])
            .ok_or_else(|| {
                identity_error(
                    "server did not present the ca certificate pinned by the join token".into(),
                )
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        let id = peer_spiffe_id(std::slice::from_ref(end_entity))
            .map_err(|e| identity_error(e.to_string()))?;
        if id.role != Role::ControlPlane {
            return Err(identity_error(format!(
                "server presented identity {id}, expected a control plane"
            )));
        }
        self.pinned.set(ca.to_vec());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
