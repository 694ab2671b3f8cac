//! rustls configurations for every TLS endpoint of Berth: the control plane's mesh
//! port, workers' servers, mesh clients in both directions, a new worker's bootstrap
//! client, and the public API server. All of them use the ring provider explicitly
//! (so they work whether or not [`install_crypto_provider`] ran) and present a
//! [`ReloadableIdentity`], so certificate rotation needs no restart.
//!
//! Session resumption is disabled on mesh configs: a resumed session skips certificate
//! verification, which would let a revoked worker back in and would leave a bootstrap
//! client's [`PinnedCa`] empty. Handshakes on the mesh are rare (long-lived HTTP/2
//! channels), so full handshakes cost little.

mod client_auth;
mod identity;
mod server_auth;

use std::sync::{Arc, OnceLock};

use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{CertificateError, ClientConfig, OtherError, RootCertStore, ServerConfig};
use rustls_pki_types::CertificateDer;

use crate::error::{PkiError, lowercase};
use crate::identity::{SpiffeId, validate_trust_domain};
use client_auth::{ClientPolicy, SpiffeClientVerifier};
use server_auth::{PinnedCaVerifier, SpiffeServerVerifier};

pub use client_auth::{NoRevocation, RevocationCheck};
pub use identity::ReloadableIdentity;
pub use server_auth::PinnedCa;

const ALPN_H2: &[u8] = b"h2";
const ALPN_HTTP11: &[u8] = b"http/1.1";
/// ALPN of a worker's dial-out connection: the worker opened the TLS connection, but on
/// it the control plane is the HTTP/2 client and the worker serves `WorkerService`.
pub const DIALOUT_ALPN: &[u8] = b"berth-dialout/1";

/// Installs rustls's ring provider as the process default. Idempotent: a provider
/// already installed (by us or anyone) is left in place.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The control plane's mesh port: presents `identity`; client certificates are
/// optional (Enroll has none) but when presented they must chain to `ca_der`, be
/// unexpired, carry `spiffe://<trust_domain>/worker/<id>` and not be revoked.
pub fn mesh_server_config(
    ca_der: &[u8],
    trust_domain: &str,
    identity: Arc<ReloadableIdentity>,
    revocation: Arc<dyn RevocationCheck>,
) -> Result<ServerConfig, PkiError> {
    validate_trust_domain(trust_domain)?;
    let inner = WebPkiClientVerifier::builder_with_provider(root_store(ca_der)?, provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| PkiError::Tls(lowercase(e)))?;
    let verifier = SpiffeClientVerifier {
        inner,
        trust_domain: trust_domain.to_owned(),
        policy: ClientPolicy::AnyWorker(revocation),
    };
    let mut config = mesh_server(verifier, identity)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec(), DIALOUT_ALPN.to_vec()];
    Ok(config)
}

/// A worker's server: a client certificate is required, must chain to `ca_der` and
/// be exactly `spiffe://<trust_domain>/controlplane`.
pub fn worker_server_config(
    ca_der: &[u8],
    trust_domain: &str,
    identity: Arc<ReloadableIdentity>,
) -> Result<ServerConfig, PkiError> {
    validate_trust_domain(trust_domain)?;
    let inner = WebPkiClientVerifier::builder_with_provider(root_store(ca_der)?, provider())
        .build()
        .map_err(|e| PkiError::Tls(lowercase(e)))?;
    let verifier = SpiffeClientVerifier {
        inner,
        trust_domain: trust_domain.to_owned(),
        policy: ClientPolicy::ControlPlane,
    };
    mesh_server(verifier, identity)
}

/// Client side for both directions of the mesh: the server's chain must verify to
/// `ca_der` and its SPIFFE id must equal `expected_server`. The host name is not
/// checked (see `server_auth`): the SPIFFE id is the identity. Presents `identity`
/// when given.
pub fn mesh_client_config(
    ca_der: &[u8],
    expected_server: SpiffeId,
    identity: Option<Arc<ReloadableIdentity>>,
) -> Result<ClientConfig, PkiError> {
    let verifier = SpiffeServerVerifier {
        roots: root_store(ca_der)?,
        expected: expected_server,
        algorithms: provider().signature_verification_algorithms,
    };
    mesh_client(Arc::new(verifier), identity)
}

/// A dial-out worker's client config: [`mesh_client_config`] asking for
/// [`DIALOUT_ALPN`] instead of `h2`, so the control plane knows the roles are reversed.
pub fn dialout_client_config(
    ca_der: &[u8],
    expected_server: SpiffeId,
    identity: Arc<ReloadableIdentity>,
) -> Result<ClientConfig, PkiError> {
    let mut config = mesh_client_config(ca_der, expected_server, Some(identity))?;
    config.alpn_protocols = vec![DIALOUT_ALPN.to_vec()];
    Ok(config)
}

/// First contact of a new worker: trusts the server only if its chain contains a CA
/// certificate whose SHA-256 is `ca_sha256` (hex), the leaf verifies against that CA
/// and carries `spiffe://<any trust domain>/controlplane`. The CA found is recorded in
/// the returned [`PinnedCa`] so the caller can store it after enrollment.
pub fn bootstrap_client_config(ca_sha256: &str) -> Result<(ClientConfig, PinnedCa), PkiError> {
    let pin: [u8; 32] = hex::decode(ca_sha256)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| {
            PkiError::InvalidArgument("ca fingerprint must be 64 hex characters".into())
        })?;
    let pinned = PinnedCa::default();
    let verifier = PinnedCaVerifier {
        pin,
        pinned: pinned.clone(),
        algorithms: provider().signature_verification_algorithms,
    };
    Ok((mesh_client(Arc::new(verifier), None)?, pinned))
}

/// Plain TLS for the public API: presents `identity`, no client authentication;
/// ALPN `h2` and `http/1.1`.
pub fn api_server_config(identity: Arc<ReloadableIdentity>) -> Result<ServerConfig, PkiError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| PkiError::Tls(lowercase(e)))?
        .with_no_client_auth()
        .with_cert_resolver(identity);
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
    Ok(config)
}

fn mesh_server(
    verifier: SpiffeClientVerifier,
    identity: Arc<ReloadableIdentity>,
) -> Result<ServerConfig, PkiError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| PkiError::Tls(lowercase(e)))?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(identity);
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

fn mesh_client(
    verifier: Arc<dyn rustls::client::danger::ServerCertVerifier>,
    identity: Option<Arc<ReloadableIdentity>>,
) -> Result<ClientConfig, PkiError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| PkiError::Tls(lowercase(e)))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match identity {
        Some(identity) => builder.with_client_cert_resolver(identity),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.resumption = Resumption::disabled();
    Ok(config)
}

fn root_store(ca_der: &[u8]) -> Result<Arc<RootCertStore>, PkiError> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca_der.to_vec()))
        .map_err(|e| PkiError::Certificate(format!("ca certificate: {}", lowercase(e))))?;
    Ok(Arc::new(roots))
}

/// The ring provider, built once.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// A handshake failure caused by the peer's identity, with a readable reason.
pub(crate) fn identity_error(reason: String) -> rustls::Error {
    let source = PkiError::Identity(reason);
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(source))))
}

#[cfg(test)]
mod tests;
