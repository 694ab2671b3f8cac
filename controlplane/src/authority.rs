//! The control plane as certificate authority and token issuer: the CA, token key and
//! secrets key in the data dir, the control plane's own (rotating) serving certificate, the set of
//! revoked certificates the mesh refuses at the handshake, and the rustls configs built
//! from them.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use berth_pki::sealing::SealingKey;
use berth_pki::transport::Connections;
use berth_pki::{
    CertificateAuthority, PkiError, ReloadableIdentity, RevocationCheck, SpiffeId, TokenSigner,
};

/// Serials of certificates the mesh refuses at the handshake.
#[derive(Debug, Default)]
pub struct RevocationSet {
    serials: RwLock<HashSet<String>>,
}

impl RevocationSet {
    pub fn revoke_serials(&self, serials: impl IntoIterator<Item = String>) {
        let mut set = self.serials.write().unwrap_or_else(|e| e.into_inner());
        set.extend(serials);
    }

    /// Adds `serials`; returns those that were not refused yet.
    pub fn revoke_new(&self, serials: impl IntoIterator<Item = String>) -> Vec<String> {
        let mut set = self.serials.write().unwrap_or_else(|e| e.into_inner());
        serials
            .into_iter()
            .filter(|serial| set.insert(serial.clone()))
            .collect()
    }
}

impl RevocationCheck for RevocationSet {
    fn is_revoked(&self, serial_hex: &str, _peer: &SpiffeId) -> bool {
        let set = self.serials.read().unwrap_or_else(|e| e.into_inner());
        set.contains(serial_hex)
    }
}

#[derive(Debug)]
pub struct Authority {
    ca: CertificateAuthority,
    tokens: TokenSigner,
    sealing: Arc<SealingKey>,
    serving: Arc<ReloadableIdentity>,
    revocations: Arc<RevocationSet>,
    /// Live mesh connections by client-certificate serial, to close on revocation.
    connections: Connections,
    serving_dns_names: Vec<String>,
    serving_ips: Vec<IpAddr>,
    serving_ttl: Duration,
}

impl Authority {
    /// Loads the CA, token key and secrets key from `dir` (creating them on first start) and issues
    /// a fresh serving certificate.
    pub fn load_or_create(
        dir: &Path,
        trust_domain: &str,
        serving_dns_names: Vec<String>,
        serving_ips: Vec<IpAddr>,
        serving_ttl: Duration,
    ) -> Result<Self, PkiError> {
        let ca = CertificateAuthority::load_or_create(dir, trust_domain)?;
        let issuer = SpiffeId::control_plane(trust_domain).to_string();
        let tokens = TokenSigner::load_or_create(dir, &issuer)?;
        let sealing = Arc::new(SealingKey::load_or_create(dir)?);
        let (chain, key) = issue_serving(&ca, &serving_dns_names, &serving_ips, serving_ttl)?;
        let serving = ReloadableIdentity::from_pem(&chain, &key)?;
        Ok(Self {
            ca,
            tokens,
            sealing,
            serving: Arc::new(serving),
            revocations: Arc::new(RevocationSet::default()),
            connections: Connections::default(),
            serving_dns_names,
            serving_ips,
            serving_ttl,
        })
    }

    pub fn trust_domain(&self) -> &str {
        self.ca.trust_domain()
    }

    pub fn ca(&self) -> &CertificateAuthority {
        &self.ca
    }

    pub fn tokens(&self) -> &TokenSigner {
        &self.tokens
    }

    /// The key team secrets are sealed with (`secrets.key`).
    pub fn sealing_key(&self) -> &Arc<SealingKey> {
        &self.sealing
    }

    pub fn revocations(&self) -> &RevocationSet {
        &self.revocations
    }

    /// The serving certificate new handshakes get now (DER).
    pub fn serving_certificate_der(&self) -> Vec<u8> {
        self.serving.current_leaf_der()
    }

    pub fn connections(&self) -> &Connections {
        &self.connections
    }

    /// Refuses `serials` at every handshake from now on and closes the mesh connections
    /// they opened; returns how many were closed.
    pub fn revoke(&self, serials: &[String]) -> usize {
        self.revocations.revoke_serials(serials.iter().cloned());
        self.connections.close(serials)
    }

    /// Takes up revocations another replica recorded: serials not refused here yet
    /// are refused from now on and their open mesh connections closed; returns how
    /// many serials were new.
    pub fn adopt_revocations(&self, serials: Vec<String>) -> usize {
        let new = self.revocations.revoke_new(serials);
        if !new.is_empty() {
            self.connections.close(&new);
        }
        new.len()
    }

    pub fn serving_ttl(&self) -> Duration {
        self.serving_ttl
    }

    /// Issues a new serving certificate; new handshakes use it at once, established
    /// connections carry on.
    pub fn rotate_serving_certificate(&self) -> Result<(), PkiError> {
        let (chain, key) = issue_serving(
            &self.ca,
            &self.serving_dns_names,
            &self.serving_ips,
            self.serving_ttl,
        )?;
        self.serving.replace(&chain, &key)
    }

    /// The mesh port: client certificates optional (Enroll), verified when presented.
    pub fn mesh_server_config(&self) -> Result<rustls::ServerConfig, PkiError> {
        berth_pki::mesh_server_config(
            self.ca.cert_der(),
            self.trust_domain(),
            self.serving.clone(),
            self.revocations.clone(),
        )
    }

    /// The public API when it is not on loopback.
    pub fn api_server_config(&self) -> Result<rustls::ServerConfig, PkiError> {
        berth_pki::api_server_config(self.serving.clone())
    }

    /// Dialing a worker: it must prove `spiffe://<td>/worker/<worker_id>`.
    pub fn worker_client_config(&self, worker_id: &str) -> Result<rustls::ClientConfig, PkiError> {
        berth_pki::mesh_client_config(
            self.ca.cert_der(),
            SpiffeId::worker(self.trust_domain(), worker_id),
            Some(self.serving.clone()),
        )
    }
}

/// A fresh serving certificate as (chain PEM, key PEM).
fn issue_serving(
    ca: &CertificateAuthority,
    dns_names: &[String],
    ips: &[IpAddr],
    ttl: Duration,
) -> Result<(String, String), PkiError> {
    let issued = ca.issue_control_plane(dns_names, ips, ttl)?;
    Ok((
        chain_pem(&issued.cert.cert_pem, ca.cert_pem()),
        issued.key_pem,
    ))
}

/// The serving chain: our leaf, then the CA, so a new worker can find the CA it pinned.
fn chain_pem(leaf_pem: &str, ca_pem: &str) -> String {
    format!("{}\n{}", leaf_pem.trim_end(), ca_pem)
}
