//! What a running worker's tasks share: its config and identity, the provider, the
//! lease fences, the metrics, the control-plane clients and whether it is draining.
//! Start-up (`agent`) builds one [`Runtime`]; the service, the heartbeat, the renewal
//! loop and the metrics endpoint each hold an `Arc` of it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use berth_pki::ReloadableIdentity;
use berth_proto::v1 as pb;

use crate::WorkerConfig;
use crate::control_planes::ControlPlanes;
use crate::fencing::Fences;
use crate::metrics::WorkerMetrics;
use crate::provider::Provider;
use crate::sessions::Sessions;

/// What the worker's tasks share.
#[derive(Debug)]
pub(crate) struct Runtime {
    pub config: WorkerConfig,
    pub worker_id: String,
    pub identity: Arc<ReloadableIdentity>,
    pub info: pb::WorkerInfo,
    pub provider: Arc<dyn Provider>,
    /// Interactive sessions, by id.
    pub sessions: Arc<Sessions>,
    pub fences: Fences,
    pub metrics: WorkerMetrics,
    pub control_planes: ControlPlanes,
    pub drain: DrainState,
    /// Bumped at each certificate renewal: dial-out connections are opened again with
    /// the new certificate (the control plane binds a connection to the certificate
    /// that opened it, and closes it when that one expires).
    pub renewals: tokio::sync::watch::Sender<u64>,
}

/// Whether the worker is draining, and on whose word.
///
/// A worker drains itself (SIGTERM): its heartbeats then say draining, so no new work
/// comes, and at its deadline it destroys what is left. Or the control plane asks it to
/// (`drain_requested` in its heartbeat answers): the control plane moves that drain
/// along itself, destroying at the deadline, and may cancel it, so the worker only
/// shows it, in its status and metrics, and destroys nothing on that account. A drain
/// of its own is never cancelled by the control plane.
///
/// Heartbeats report only the worker's own drain. The control plane places sandboxes
/// only on workers that report themselves ready; echoing its own drain back would keep
/// an undrained worker out of placement until the worker had heard of the undrain and
/// heartbeated again, while telling the control plane nothing it does not know.
#[derive(Debug, Default)]
pub(crate) struct DrainState {
    own: AtomicBool,
    requested: AtomicBool,
}

impl DrainState {
    /// The worker drains itself, for good.
    pub fn start_own(&self) {
        self.own.store(true, Ordering::SeqCst);
    }

    /// Whether the worker drains itself.
    pub fn is_own(&self) -> bool {
        self.own.load(Ordering::SeqCst)
    }

    /// Records what the control plane's latest heartbeat answer asked; returns whether
    /// that changed.
    pub fn set_requested(&self, requested: bool) -> bool {
        self.requested.swap(requested, Ordering::SeqCst) != requested
    }

    /// Whether the worker drains, on its own account or the control plane's.
    pub fn is_draining(&self) -> bool {
        self.is_own() || self.requested.load(Ordering::SeqCst)
    }

    /// The worker's state as its `Status` answer names it.
    pub fn status_name(&self) -> &'static str {
        if self.is_draining() {
            "draining"
        } else {
            "ready"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_requested_drain_can_be_cancelled_but_an_own_drain_stays() {
        let drain = DrainState::default();
        assert!(!drain.is_draining());
        assert!(drain.set_requested(true));
        assert!(!drain.set_requested(true), "no change");
        assert!(drain.is_draining() && !drain.is_own());
        assert_eq!(drain.status_name(), "draining");
        assert!(drain.set_requested(false));
        assert!(!drain.is_draining());
        assert_eq!(drain.status_name(), "ready");

        drain.start_own();
        drain.set_requested(true);
        drain.set_requested(false);
        assert!(drain.is_draining() && drain.is_own());
        assert_eq!(drain.status_name(), "draining");
    }
}
