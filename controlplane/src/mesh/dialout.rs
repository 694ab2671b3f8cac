//! Dial-out workers on the mesh port. A connection whose handshake agreed on
//! `berth-dialout/1` is not served here: it was opened by a worker that cannot be
//! dialed, and it becomes the channel this control plane calls that worker over
//! (`workers::Dialed`). Every other connection goes on to the `ControlPlane` server.
//!
//! Each accepted dial-out connection spends the heartbeat budget (only workers with a
//! verified certificate get this far), so a control plane restart with a whole fleet
//! reconnecting at once is admitted at the pace heartbeats are; a worker turned away
//! backs off and dials again. The connection is closed when its certificate expires,
//! when the worker is revoked (by serial, like every mesh connection) and at shutdown.
//! While it is open, a health check over it every [`PROBE_EVERY`] measures the round
//! trip (hyper's own HTTP/2 PINGs keep the connection alive and detect a dead peer,
//! but do not report their timing).

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_pki::Role;
use berth_pki::transport::{DialOptions, TlsConnection, channel_over};
use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use super::admission::Admission;
use crate::clock::now_secs;
use crate::metrics::Metrics;
use crate::workers::Workers;

/// How often the round trip over a dial-out connection is measured.
pub const PROBE_EVERY: Duration = Duration::from_secs(10);
/// A probe not answered by then counts as lost (the keepalives decide about the link).
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What taking a dial-out connection needs.
#[derive(Debug, Clone)]
pub(super) struct DialoutAcceptor {
    pub workers: Arc<Workers>,
    pub admission: Arc<Admission>,
    pub metrics: Metrics,
    pub shutdown: CancellationToken,
}

/// `incoming` without its dial-out connections, which `acceptor` takes.
pub(super) fn split<S>(
    incoming: S,
    acceptor: DialoutAcceptor,
) -> impl Stream<Item = Result<TlsConnection, io::Error>> + Send + 'static
where
    S: Stream<Item = Result<TlsConnection, io::Error>> + Send + 'static,
{
    incoming.filter_map(move |connection| {
        let kept = match connection {
            Ok(connection) if connection.is_dialout() => {
                acceptor.accept(connection);
                None
            }
            other => Some(other),
        };
        std::future::ready(kept)
    })
}

impl DialoutAcceptor {
    fn accept(&self, connection: TlsConnection) {
        let peer = connection.peer().clone();
        let worker_id = match peer.spiffe_id.as_ref().map(|id| &id.role) {
            Some(Role::Worker(id)) => id.clone(),
            _ => {
                // the handshake lets only worker certificates (or none) through
                tracing::debug!(remote = %peer.remote_addr, "dial-out connection without a worker certificate refused");
                return;
            }
        };
        if self.admission.heartbeat().is_err() {
            self.metrics.dialout_turned_away.inc();
            tracing::debug!(%worker_id, "dial-out connection turned away: too many at once");
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let closer = connection.closer();
            let (channel, ended) = match channel_over(connection, DialOptions::default()).await {
                Ok(opened) => opened,
                Err(err) => {
                    tracing::warn!(%worker_id, error = %err, "dial-out connection not taken");
                    return;
                }
            };
            // a worker certificate always has an expiry; without one, nothing is held
            let expires_in = peer
                .not_after
                .and_then(|not_after| u64::try_from(not_after.saturating_sub(now_secs())).ok())
                .map_or(Duration::ZERO, Duration::from_secs);
            this.hold(&worker_id, channel, closer, ended, expires_in)
                .await;
        });
    }

    /// Keeps the worker reachable over `channel` until its connection ends, then
    /// forgets it.
    async fn hold(
        &self,
        worker_id: &str,
        channel: Channel,
        closer: CancellationToken,
        ended: CancellationToken,
        expires_in: Duration,
    ) {
        let dialed = self.workers.dialed();
        let registered = dialed.insert(worker_id, channel.clone(), closer.clone());
        let connections = self.metrics.dialout_connections(worker_id);
        connections.inc();
        if registered.reconnect {
            self.metrics.dialout_reconnects(worker_id).inc();
        }
        tracing::info!(%worker_id, reconnect = registered.reconnect, "dial-out worker connected");
        let expiry = tokio::time::sleep(expires_in);
        tokio::pin!(expiry);
        // the probes hold a handle on the channel only while it is the worker's newest:
        // a replaced connection closes once its last call is done
        let probing = async move {
            let mut ticks = tokio::time::interval(PROBE_EVERY);
            loop {
                ticks.tick().await;
                if !dialed.is_current(worker_id, registered.generation) {
                    return;
                }
                if let Some(rtt) = probe(&channel).await {
                    self.metrics.observe_dialout_rtt(worker_id, rtt);
                }
            }
        };
        tokio::pin!(probing);
        let mut probing_done = false;
        let reason = loop {
            tokio::select! {
                () = ended.cancelled() => {
                    break "the connection ended (closed by the worker, unanswered keepalives, or the worker revoked)";
                }
                () = self.shutdown.cancelled() => {
                    closer.cancel();
                    break "this control plane is shutting down";
                }
                () = &mut expiry => {
                    closer.cancel();
                    break "its certificate expired";
                }
                () = &mut probing, if !probing_done => probing_done = true,
            }
        };
        dialed.remove(worker_id, registered.generation);
        connections.dec();
        tracing::info!(%worker_id, reason, "dial-out worker disconnected");
    }
}

/// The round trip of one health check over `channel`; `None` when it got no answer.
async fn probe(channel: &Channel) -> Option<Duration> {
    let started = Instant::now();
    let mut client = HealthClient::new(channel.clone());
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    request.set_timeout(PROBE_TIMEOUT);
    match client.check(request).await {
        Ok(_) => Some(started.elapsed()),
        // any answer from the worker is a round trip; a transport failure is none
        Err(status) if status.code() == tonic::Code::Unimplemented => Some(started.elapsed()),
        Err(_) => None,
    }
}
