//! Connections the load runs use, one per simulated client: the public API over HTTP
//! and gRPC, and a worker's own `WorkerService` dialed directly with the control plane's
//! identity, minted from the CA in the control plane's data dir (the bench runs on the
//! machine that holds it, as the operator would).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use berth_pki::transport::{DialOptions, mesh_channel};
use berth_pki::{CertificateAuthority, DEFAULT_TRUST_DOMAIN, ReloadableIdentity, SpiffeId};
use berth_proto::v1::sandboxes_client::SandboxesClient;
use berth_proto::v1::worker_service_client::WorkerServiceClient;
use tonic::transport::{Channel, Endpoint};

/// The largest message the bench accepts (as the control plane's router).
const MAX_MESSAGE: usize = 64 << 20;

/// An HTTP/1.1 client with its own connection pool (one connection in use at a time).
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1)
        .build()?)
}

/// A gRPC client of the public API on its own HTTP/2 connection.
pub fn grpc_client(api_base_url: &str) -> anyhow::Result<SandboxesClient<Channel>> {
    let channel = Endpoint::from_shared(api_base_url.to_owned())?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy();
    Ok(SandboxesClient::new(channel).max_decoding_message_size(MAX_MESSAGE))
}

/// Attaches the API key to a gRPC request.
pub fn with_key<T>(message: T, key: &str) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-api-key", key.parse().context("api key is not ascii")?);
    Ok(request)
}

/// The control plane's identity, to call workers directly as it does.
pub struct ControlPlaneIdentity {
    ca_der: Vec<u8>,
    trust_domain: String,
    identity: Arc<ReloadableIdentity>,
}

impl ControlPlaneIdentity {
    /// Issues a fresh control-plane certificate from the CA in `data_dir`.
    pub fn mint(data_dir: &Path) -> anyhow::Result<Self> {
        let cert_pem = std::fs::read_to_string(data_dir.join("ca.pem"))
            .context("cannot read the control plane's ca.pem")?;
        let key_pem = std::fs::read_to_string(data_dir.join("ca.key"))
            .context("cannot read the control plane's ca.key")?;
        let ca = CertificateAuthority::from_pem(&cert_pem, &key_pem, DEFAULT_TRUST_DOMAIN)?;
        let issued = ca.issue_control_plane(&[], &[], Duration::from_secs(6 * 3600))?;
        let chain = format!("{}\n{}", issued.cert.cert_pem.trim_end(), ca.cert_pem());
        Ok(Self {
            ca_der: ca.cert_der().to_vec(),
            trust_domain: ca.trust_domain().to_owned(),
            identity: Arc::new(ReloadableIdentity::from_pem(&chain, &issued.key_pem)?),
        })
    }

    /// A client of worker `worker_id` at `address`, on its own mTLS connection.
    pub fn worker_client(
        &self,
        worker_id: &str,
        address: &str,
    ) -> anyhow::Result<WorkerServiceClient<Channel>> {
        let tls = berth_pki::mesh_client_config(
            &self.ca_der,
            SpiffeId::worker(&self.trust_domain, worker_id),
            Some(self.identity.clone()),
        )?;
        let channel = mesh_channel(address, Arc::new(tls), DialOptions::default())?;
        Ok(WorkerServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE))
    }
}
