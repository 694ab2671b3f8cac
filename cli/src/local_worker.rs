//! `serve --local-worker <provider>`: a worker in the control plane's process, enrolled
//! through the same mesh, TLS and join-token path as any other worker. It has no
//! privilege a remote worker lacks; it only saves an operator a second process.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use berth_controlplane::fleet::{Fleet, JoinTokenRequest};
use berth_worker::{CapacityConfig, DockerConfig, RunningWorker, StoredIdentity, WorkerConfig};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The id the local worker asks for (and gets: its join token pins it).
pub const LOCAL_WORKER_ID: &str = "local";

/// The serve config's `local_worker` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalWorkerConfig {
    /// Provider of an in-process worker enrolled like any other; empty: none.
    pub provider: String,
    /// Where the local worker's WorkerService listens.
    pub listen: SocketAddr,
    pub max_sandboxes: u32,
    /// The docker provider's settings when `provider` is docker.
    pub docker: DockerConfig,
}

impl Default for LocalWorkerConfig {
    fn default() -> Self {
        Self {
            provider: String::new(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            max_sandboxes: 64,
            docker: DockerConfig::default(),
        }
    }
}

impl LocalWorkerConfig {
    /// Whether a local worker is asked for at all.
    pub fn enabled(&self) -> bool {
        !self.provider.is_empty()
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        match self.provider.as_str() {
            "" | "mock" => Ok(()),
            "docker" => self
                .docker
                .validate()
                .map_err(|err| anyhow::anyhow!("invalid config: local_worker.{err}")),
            other => anyhow::bail!(
                "invalid config: local_worker.provider {other:?}: expected mock or docker"
            ),
        }
    }
}

/// Starts the local worker: its identity lives in `<data_dir>/local-worker`; on its
/// first start it is enrolled with a single-use join token made through `fleet`.
pub async fn start(
    local: &LocalWorkerConfig,
    data_dir: &Path,
    heartbeat_interval: Duration,
    fleet: &Fleet,
    mesh_addr: SocketAddr,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningWorker> {
    let data_dir = data_dir.join("local-worker");
    let join_token = if StoredIdentity::load(&data_dir)?.is_some() {
        None
    } else {
        let issued = fleet
            .create_join_token(
                JoinTokenRequest {
                    worker_id: Some(LOCAL_WORKER_ID.to_owned()),
                    ttl: None,
                    uses: Some(1),
                    ..Default::default()
                },
                "local-worker",
            )
            .await?;
        Some(issued.token)
    };
    let worker_config = WorkerConfig {
        data_dir,
        control_plane: vec![format!("https://{}", reachable(mesh_addr))],
        join_token,
        id: Some(LOCAL_WORKER_ID.to_owned()),
        listen: Some(local.listen),
        provider: local.provider.clone(),
        docker: local.docker.clone(),
        heartbeat_interval,
        capacity: CapacityConfig {
            max_sandboxes: local.max_sandboxes,
            ..Default::default()
        },
        ..Default::default()
    };
    let listener = TcpListener::bind(local.listen)
        .await
        .with_context(|| format!("cannot listen on {}", local.listen))?;
    Ok(berth_worker::start(worker_config, Some(listener), shutdown).await?)
}

/// The mesh address as a local client dials it (an unspecified bind becomes loopback).
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_mesh_bind_is_dialled_on_loopback() {
        let any: SocketAddr = "0.0.0.0:7443".parse().unwrap();
        assert_eq!(reachable(any), "127.0.0.1:7443".parse().unwrap());
        let any6: SocketAddr = "[::]:7443".parse().unwrap();
        assert_eq!(reachable(any6), "[::1]:7443".parse().unwrap());
        let given: SocketAddr = "10.0.0.5:7443".parse().unwrap();
        assert_eq!(reachable(given), given);
    }
}
