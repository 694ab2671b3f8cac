//! Berth's public-key infrastructure: the control plane's certificate authority and
//! CSR signing ([`ca`]), SPIFFE identities read from certificates ([`identity`]), the
//! worker's key and CSR ([`csr`]), join and worker tokens ([`token`]), and the rustls
//! configurations of every TLS endpoint ([`tls`]), and the mesh's wire: TLS listeners
//! and channels that carry the verified peer identity ([`transport`]).
//!
//! Everything a caller needs is re-exported at the crate root.

pub mod ca;
pub mod csr;
pub mod error;
mod files;
pub mod identity;
pub mod sealing;
pub mod tls;
pub mod token;
pub mod transport;

pub use ca::{CertificateAuthority, IssuedCert, IssuedIdentity, ca_fingerprint};
pub use csr::{KeyAndCsr, generate_key_and_csr};
pub use error::{PkiError, TokenError};
pub use identity::{
    CertInfo, DEFAULT_TRUST_DOMAIN, Role, SpiffeId, cert_info, peer_spiffe_id,
    validate_trust_domain, validate_worker_id,
};
pub use tls::{
    DIALOUT_ALPN, NoRevocation, PinnedCa, ReloadableIdentity, RevocationCheck, api_server_config,
    bootstrap_client_config, dialout_client_config, install_crypto_provider, mesh_client_config,
    mesh_server_config, worker_server_config,
};
pub use token::{
    JOIN_AUDIENCE, JoinClaims, JoinTokenSpec, PREVIEW_AUDIENCE, PreviewClaims, TokenSigner,
    WORKER_TOKEN_AUDIENCE, WorkerTokenClaims, peek_join_claims,
};
