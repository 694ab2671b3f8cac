//! The fleet registry: enrollment, heartbeats, certificate renewal, join tokens and the
//! operator's view of workers. Both the mesh (workers) and the public API (operators)
//! call into here; neither holds fleet logic of its own.

mod enrollment;
mod heartbeats;
mod images;
mod join_tokens;
pub mod labels;
mod providers;
mod workers;

use std::sync::Arc;
use std::time::Duration;

pub use enrollment::{
    CheckedEnrollment, Credential, EnrollmentGrant, EnrollmentRequest, WorkerDescription,
};
pub use heartbeats::{HeartbeatAck, HeartbeatReport};
pub use images::{MAX_ARCHIVE_BYTES, PushEvent};
pub use join_tokens::{IssuedJoinToken, JoinTokenRequest};
pub use providers::{PROVIDER_TEST_TIMEOUT, ProviderSummary};
pub use workers::{DrainView, ProviderStatus, WorkerStatus, WorkerView};

use crate::authority::Authority;
use crate::error::{ApiError, ErrorCode};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};
use crate::workers::Workers;

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(transparent)]
    Token(#[from] berth_pki::TokenError),
    #[error(transparent)]
    Store(StoreError),
    #[error("certificate authority: {0}")]
    Pki(#[from] berth_pki::PkiError),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("worker {0:?} not found")]
    WorkerNotFound(String),
}

impl From<StoreError> for FleetError {
    /// A worker the store does not know is the caller's "not found", everywhere.
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::UnknownWorker(id) => Self::WorkerNotFound(id),
            other => Self::Store(other),
        }
    }
}

impl From<FleetError> for ApiError {
    fn from(err: FleetError) -> Self {
        match err {
            FleetError::Token(err) => err.into(),
            FleetError::Store(err) => err.into(),
            FleetError::Pki(err) => ApiError::internal(&err),
            FleetError::BadRequest(message) => ApiError::bad_request(message),
            FleetError::Forbidden(message) => ApiError::new(ErrorCode::Forbidden, message),
            FleetError::WorkerNotFound(id) => {
                ApiError::not_found(format!("worker {id:?} not found"))
            }
        }
    }
}

/// What `revoke_worker` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WorkerRevoked {
    pub worker_id: String,
    pub lost_sandboxes: Vec<String>,
    pub closed_connections: usize,
}

/// What `remove_worker` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WorkerRemoved {
    pub worker_id: String,
    pub lost_sandboxes: Vec<String>,
}

/// Intervals and lifetimes the fleet works with.
#[derive(Debug, Clone)]
pub struct FleetSettings {
    pub heartbeat_interval: Duration,
    /// After this long without a heartbeat a worker is unhealthy.
    pub heartbeat_grace: Duration,
    /// How long a sandbox lease lasts from the heartbeat that renewed it (the
    /// disconnect policy; `ControlPlaneConfig::lease_duration`).
    pub lease_duration: Duration,
    pub worker_cert_ttl: Duration,
    pub worker_token_ttl: Duration,
    pub join_default_ttl: Duration,
    pub join_max_ttl: Duration,
    /// Clock skew tolerated on token times.
    pub token_leeway: Duration,
    /// A sandbox still being created this long after it was placed has a spawn nobody
    /// will confirm (its control plane died mid-spawn): its worker's heartbeat resolves
    /// it (`fleet/heartbeats.rs`).
    pub spawn_confirm_within: Duration,
}

#[derive(Debug, Clone)]
pub struct Fleet {
    store: Store,
    authority: Arc<Authority>,
    settings: FleetSettings,
    metrics: Metrics,
    workers: Arc<Workers>,
}

impl Fleet {
    pub fn new(
        store: Store,
        authority: Arc<Authority>,
        settings: FleetSettings,
        metrics: Metrics,
        workers: Arc<Workers>,
    ) -> Self {
        Self {
            store,
            authority,
            settings,
            metrics,
            workers,
        }
    }

    /// Revokes a worker at once: its certificates are refused at every handshake, its
    /// open mesh connections and our channels to it are closed, its worker token no
    /// longer re-enrolls, and its sandboxes are marked lost.
    pub async fn revoke_worker(&self, worker_id: &str) -> Result<WorkerRevoked, FleetError> {
        let revocation = self
            .store
            .revoke_worker(worker_id, crate::clock::now_secs())
            .await?;
        let closed_connections = self.authority.revoke(&revocation.serials);
        self.workers.forget(worker_id);
        tracing::warn!(
            %worker_id,
            certificates = revocation.serials.len(),
            closed_connections,
            lost_sandboxes = revocation.lost_sandboxes.len(),
            "worker revoked"
        );
        Ok(WorkerRevoked {
            worker_id: worker_id.to_owned(),
            lost_sandboxes: revocation.lost_sandboxes,
            closed_connections,
        })
    }

    /// Forgets a retired worker: its credentials are refused as a revocation's are,
    /// then its record is removed. Refused while it holds sandboxes unless `force`,
    /// which marks them lost.
    pub async fn remove_worker(
        &self,
        worker_id: &str,
        force: bool,
    ) -> Result<WorkerRemoved, FleetError> {
        let removal = self
            .store
            .remove_worker(worker_id, force, crate::clock::now_secs())
            .await?;
        let closed_connections = self.authority.revoke(&removal.serials);
        self.workers.forget(worker_id);
        tracing::warn!(
            %worker_id,
            certificates = removal.serials.len(),
            closed_connections,
            lost_sandboxes = removal.lost_sandboxes.len(),
            force,
            "worker removed"
        );
        Ok(WorkerRemoved {
            worker_id: worker_id.to_owned(),
            lost_sandboxes: removal.lost_sandboxes,
        })
    }

    /// Refuses, on this replica too, every certificate the store says is revoked
    /// (another replica may have revoked a worker); returns how many were new here.
    pub async fn sync_revocations(&self) -> Result<usize, FleetError> {
        let serials = self.store.revoked_serials().await?;
        Ok(self.authority.adopt_revocations(serials))
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn authority(&self) -> &Arc<Authority> {
        &self.authority
    }

    /// The clients of the fleet's workers (and the connections dial-out workers opened).
    pub fn workers(&self) -> &Arc<Workers> {
        &self.workers
    }

    pub fn settings(&self) -> &FleetSettings {
        &self.settings
    }
}

fn duration_ms(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}
