//! `serve --local-worker <provider>`: a worker in the control plane's process, enrolled
//! through the same mesh, TLS and join-token path as any other worker. It has no
//! privilege a remote worker lacks; it only saves an operator a second process.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::Context;
use berth_worker::{RunningWorker, StoredIdentity, WorkerConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::ControlPlaneConfig;
use crate::fleet::{Fleet, JoinTokenRequest};

const LOCAL_WORKER_ID: &str = "local";

pub async fn start(
    config: &ControlPlaneConfig,
    fleet: &Fleet,
    mesh_addr: SocketAddr,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningWorker> {
    let data_dir = config.data_dir.join("local-worker");
    let join_token = if StoredIdentity::load(&data_dir)?.is_some() {
        None
    } else {
        let issued = fleet
            .create_join_token(
                JoinTokenRequest {
                    worker_id: Some(LOCAL_WORKER_ID.to_owned()),
                    ttl: None,
                    uses: Some(1),
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
        listen: config.local_worker.listen,
        provider: config.local_worker.provider.clone(),
        docker: config.local_worker.docker.clone(),
        heartbeat_interval: config.heartbeat_interval,
        capacity: berth_worker::CapacityConfig {
            max_sandboxes: config.local_worker.max_sandboxes,
            ..Default::default()
        },
        ..Default::default()
    };
    let listener = TcpListener::bind(worker_config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", worker_config.listen))?;
    Ok(berth_worker::start(worker_config, listener, shutdown).await?)
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
