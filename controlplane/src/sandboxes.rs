//! Sandboxes end to end on the control plane: validated requests, scheduling onto a
//! worker with a fenced lease, and every later call routed to the lease holder with
//! the lease's generation. The HTTP and gRPC edges call into here.

mod calls;
mod lifecycle;
mod model;
mod scheduler;

use std::sync::Arc;
use std::time::Duration;

pub use calls::{ExecCall, ExecOutcome};
pub use model::{CreateSandbox, FileInfoView, SandboxView, rfc3339};

use crate::config::SandboxesConfig;
use crate::error::{ApiError, ErrorCode};
use crate::router::{Routes, WorkerChannels};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("sandbox {0:?} not found")]
    NotFound(String),
    #[error("sandbox {0:?} is destroyed")]
    Destroyed(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NoCapacity(String),
    #[error("{0}")]
    Unavailable(String),
    /// An error the worker answered with, already mapped.
    #[error("{0}")]
    Remote(ApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<SandboxError> for ApiError {
    fn from(err: SandboxError) -> Self {
        let message = err.to_string();
        match err {
            SandboxError::NotFound(_) | SandboxError::Destroyed(_) => ApiError::not_found(message),
            SandboxError::BadRequest(_) => ApiError::bad_request(message),
            SandboxError::Conflict(_) => ApiError::new(ErrorCode::Conflict, message),
            SandboxError::NoCapacity(_) => ApiError::new(ErrorCode::ResourceLimit, message),
            SandboxError::Unavailable(_) => ApiError::new(ErrorCode::Unavailable, message),
            SandboxError::Remote(err) => err,
            SandboxError::Store(err) => err.into(),
        }
    }
}

/// Limits and defaults for sandboxes, and how fresh a worker's heartbeat must be.
#[derive(Debug, Clone, Default)]
pub struct SandboxSettings {
    pub limits: SandboxesConfig,
    /// A worker whose last heartbeat is older than this takes no sandboxes and
    /// answers no routed calls.
    pub heartbeat_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct Sandboxes {
    store: Store,
    channels: Arc<WorkerChannels>,
    settings: SandboxSettings,
}

impl Sandboxes {
    pub fn new(store: Store, channels: Arc<WorkerChannels>, settings: SandboxSettings) -> Self {
        Self {
            store,
            channels,
            settings,
        }
    }

    pub fn settings(&self) -> &SandboxSettings {
        &self.settings
    }

    fn routes(&self) -> &Routes {
        self.channels.routes()
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
