//! Sandboxes end to end on the control plane: validated requests, scheduling onto a
//! worker with a fenced lease, and every later call routed to the lease holder with
//! the lease's generation (exec, files, logs, interactive sessions). The HTTP and
//! gRPC edges call into here.

mod activity;
mod calls;
pub mod constraints;
mod create;
mod events;
mod lifecycle;
mod on_start;
pub mod phases;
mod ports;
mod power;
mod prebuild;
mod quota;
mod request;
mod scheduler;
mod sessions;
mod view;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;

pub use calls::ExecCall;
pub use events::{Follow, SandboxEvent};
pub use ports::check_port;
pub use prebuild::PrebuildEvent;
pub use quota::TeamStanding;
pub use request::{CreateRequest, CreateSandbox, Launch, PruneSelection, parse_timeout, parse_ttl};
pub use sessions::{DEFAULT_KILL_SIGNAL, SHUTTING_DOWN};
pub use view::{FileInfoView, SandboxView, rfc3339, rfc3339_millis};

pub use crate::workers::model::{
    ExecEvent, ExecOutcome, FileInfo, LogLine, OutputStream, SessionAttach, SessionEvent,
    SessionInfo, SessionInput, SessionOpen, SessionStart, SessionStarted, TerminalSize,
};
pub use crate::workers::{
    ExecEvents, FileChunks, LogLines, PortConnection, PortIo, SessionEvents, SessionStream,
};

use crate::config::SandboxesConfig;
use crate::store::{Store, StoreError};
use crate::workers::{RemoteError, Routes, Workers};

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("sandbox {0:?} not found")]
    NotFound(String),
    #[error("sandbox {0:?} is destroyed")]
    Destroyed(String),
    #[error("session {0:?} not found")]
    SessionNotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NoCapacity(String),
    /// The caller's team is at one of its quotas (the message names it).
    #[error("{0}")]
    OverQuota(String),
    #[error("team {0:?} not found")]
    UnknownTeam(String),
    /// The call reaches beyond what its key may act for.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Unavailable(String),
    /// The worker refused the call, or could not be reached.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A create that recorded its sandbox (now in state `error`) and then failed.
    #[error("{cause}")]
    CreateFailed {
        sandbox_id: String,
        cause: Box<SandboxError>,
    },
}

/// Limits and defaults for sandboxes, and how fresh a worker's heartbeat must be.
#[derive(Debug, Clone, Default)]
pub struct SandboxSettings {
    pub limits: SandboxesConfig,
    /// A worker whose last heartbeat is older than this takes no sandboxes and
    /// answers no routed calls.
    pub heartbeat_grace: Duration,
    /// How long a lease lasts from its last renewal (`ControlPlaneConfig::lease_duration`).
    pub lease_duration: Duration,
    /// What sandboxes show as `preview_domain` (`ControlPlaneConfig::preview_domain`).
    pub preview_domain: String,
}

#[derive(Debug, Clone)]
pub struct Sandboxes {
    store: Store,
    workers: Arc<Workers>,
    settings: SandboxSettings,
    /// When each sandbox was last used (for `auto_stop`).
    activity: activity::Activity,
    /// Creates and destroys run here, so they finish even when their caller goes away
    /// and shutdown waits for them.
    tasks: TaskTracker,
}

impl Sandboxes {
    pub fn new(
        store: Store,
        workers: Arc<Workers>,
        settings: SandboxSettings,
        tasks: TaskTracker,
    ) -> Self {
        Self {
            activity: activity::Activity::new(store.clone(), settings.limits.activity_interval),
            store,
            workers,
            settings,
            tasks,
        }
    }

    pub fn settings(&self) -> &SandboxSettings {
        &self.settings
    }

    fn routes(&self) -> &Routes {
        self.workers.routes()
    }

    /// The worker that holds (or, for a sandbox that just ended, held) `sandbox_id`:
    /// from the routes of recent calls, else from the store; empty when none.
    pub async fn worker_of(&self, sandbox_id: &str) -> Result<String, SandboxError> {
        if let Some(worker_id) = self.routes().worker_of(sandbox_id) {
            return Ok(worker_id);
        }
        Ok(self
            .store
            .get_sandbox(sandbox_id)
            .await?
            .and_then(|row| row.worker_id)
            .unwrap_or_default())
    }
}

fn grace_ms(settings: &SandboxSettings) -> i64 {
    i64::try_from(settings.heartbeat_grace.as_millis()).unwrap_or(i64::MAX)
}

fn lease_ms(settings: &SandboxSettings) -> i64 {
    i64::try_from(settings.lease_duration.as_millis()).unwrap_or(i64::MAX)
}
