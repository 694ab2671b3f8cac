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

/// What the worker's tasks share.
#[derive(Debug)]
pub(crate) struct Runtime {
    pub config: WorkerConfig,
    pub worker_id: String,
    pub identity: Arc<ReloadableIdentity>,
    pub info: pb::WorkerInfo,
    pub provider: Arc<dyn Provider>,
    pub fences: Fences,
    pub metrics: WorkerMetrics,
    pub control_planes: ControlPlanes,
    pub drain: DrainState,
}

/// Whether the worker drains itself (SIGTERM): its heartbeats then say draining, so
/// no new work comes, and at its deadline it destroys what is left.
#[derive(Debug, Default)]
pub(crate) struct DrainState {
    own: AtomicBool,
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
}
