//! The worker mesh port (7443): the `berth.v1.ControlPlane` gRPC service over TLS.
//! `Enroll` is the only call allowed without a client certificate; every other call
//! acts for the worker named by the verified certificate, and only for that worker.
//! Dial-out workers' connections arrive here too and are taken aside (`dialout`).

mod admission;
mod convert;
mod dialout;
mod peer;
mod service;

use std::sync::Arc;
use std::time::Duration;

use berth_proto::v1::control_plane_server::ControlPlaneServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use service::MeshService;

use crate::config::LimitsConfig;
use crate::fleet::Fleet;

/// Serves the mesh on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    fleet: Fleet,
    limits: LimitsConfig,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let connections = fleet.authority().connections().clone();
    let incoming = berth_pki::transport::tls_incoming_tracked(
        listener,
        tls,
        shutdown.clone(),
        connections,
        limits.mesh_connections(),
    );
    let service = MeshService::new(fleet.clone(), &limits);
    let incoming = dialout::split(
        incoming,
        dialout::DialoutAcceptor {
            workers: fleet.workers().clone(),
            admission: service.admission(),
            metrics: fleet.metrics().clone(),
            shutdown: shutdown.clone(),
        },
    );
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .timeout(Duration::from_secs(30))
        .add_service(ControlPlaneServer::new(service))
        .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned());
    berth_pki::transport::serve_with_grace(server, shutdown, SHUTDOWN_GRACE)
        .await
        .unwrap_or(Ok(()))
}

/// How long open worker calls may take to finish once the control plane shuts down.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
