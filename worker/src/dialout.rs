//! Dialing out: a worker started without `listen` opens a connection to each control
//! plane it knows and serves `WorkerService` on it (the HTTP/2 roles reversed; see
//! `berth_pki::transport::dialout`), so its machine accepts no inbound connection at
//! all. One loop per control plane keeps a connection open: when it ends the loop
//! dials again after a jittered, growing pause (so a control plane restart with a
//! whole fleet behind it is not met by every worker in the same instant), and after a
//! certificate renewal it opens a new connection with the new certificate while the
//! old one finishes what is on it.
//!
//! Every replica in the list gets a connection, so whichever replica a call arrives at
//! has the worker at hand, and losing a replica loses nothing: the others already hold
//! a connection.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_pki::transport::{DialOptions, DialedConnection, dial_out};
use rand::Rng;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::ControlPlaneLabels;
use crate::runtime::Runtime;

/// The first pause before dialing again; it doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(5);
/// A connection that stayed up this long resets the pause to [`FIRST_RETRY`].
const STEADY: Duration = Duration::from_secs(10);

/// Where each new connection goes: the worker's gRPC server.
pub(crate) type Incoming = mpsc::Sender<Result<DialedConnection, io::Error>>;

/// Keeps a dial-out connection to the control plane at `url` until `shutdown`.
pub(crate) async fn run(
    runtime: Arc<Runtime>,
    url: String,
    tls: Arc<rustls::ClientConfig>,
    incoming: Incoming,
    shutdown: CancellationToken,
) {
    let labels = ControlPlaneLabels::of(&url);
    let metrics = &runtime.metrics;
    let mut backoff = Backoff::default();
    let mut connected_before = false;
    loop {
        // a renewal from here on is one this connection's certificate may predate
        let mut renewals = runtime.renewals.subscribe();
        let dialed = tokio::select! {
            () = shutdown.cancelled() => return,
            dialed = dial_out(&url, tls.clone(), DialOptions::default()) => dialed,
        };
        let (connection, ended) = match dialed {
            Ok(dialed) => dialed,
            Err(err) => {
                metrics.dialout_failures.get_or_create(&labels).inc();
                let pause = backoff.next_pause();
                tracing::warn!(worker_id = %runtime.worker_id, control_plane = %url, error = %err, retry_in = ?pause, "cannot dial out");
                if sleep_or_stop(pause, &shutdown).await {
                    return;
                }
                continue;
            }
        };
        if connected_before {
            metrics.dialout_reconnects.get_or_create(&labels).inc();
        }
        connected_before = true;
        let open = metrics.dialout_connections.get_or_create(&labels).clone();
        open.inc();
        tokio::spawn({
            let ended = ended.clone();
            async move {
                ended.cancelled().await;
                open.dec();
            }
        });
        if incoming.send(Ok(connection)).await.is_err() {
            return; // the server has stopped
        }
        tracing::info!(worker_id = %runtime.worker_id, control_plane = %url, "connected (dial-out)");
        let up_since = Instant::now();
        let renewed = tokio::select! {
            () = shutdown.cancelled() => return,
            () = ended.cancelled() => false,
            changed = renewals.changed() => changed.is_ok(),
        };
        if renewed {
            tracing::info!(worker_id = %runtime.worker_id, control_plane = %url, "certificate renewed: opening a new connection with it");
            continue;
        }
        if up_since.elapsed() >= STEADY {
            backoff = Backoff::default();
        }
        let pause = backoff.next_pause();
        tracing::warn!(worker_id = %runtime.worker_id, control_plane = %url, retry_in = ?pause, "dial-out connection lost; dialing again");
        if sleep_or_stop(pause, &shutdown).await {
            return;
        }
    }
}

/// Sleeps `pause`; true when `shutdown` came first.
async fn sleep_or_stop(pause: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => true,
        () = tokio::time::sleep(pause) => false,
    }
}

/// Growing pauses between attempts, each drawn between half and all of the current
/// step, so workers that lost their connection together do not come back together.
#[derive(Debug)]
struct Backoff {
    step: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { step: FIRST_RETRY }
    }
}

impl Backoff {
    fn next_pause(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(MAX_RETRY);
        let half = step / 2;
        half + half.mul_f64(rand::rng().random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_to_the_cap_and_are_spread() {
        let mut backoff = Backoff::default();
        let mut steps = Vec::new();
        for _ in 0..10 {
            let step = backoff.step;
            let pause = backoff.next_pause();
            assert!(
                pause >= step / 2 && pause <= step,
                "{pause:?} for step {step:?}"
            );
            steps.push(step);
        }
        assert_eq!(steps[0], FIRST_RETRY);
        assert_eq!(steps[1], FIRST_RETRY * 2);
        assert_eq!(*steps.last().unwrap(), MAX_RETRY);
        let spread: std::collections::HashSet<Duration> =
            (0..20).map(|_| Backoff::default().next_pause()).collect();
        assert!(spread.len() > 1, "pauses are jittered");
    }
}
