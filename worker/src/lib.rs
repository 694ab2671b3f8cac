//! `berth worker`: the agent on each machine. It enrolls with a join token (checking
//! the control plane's CA against the token's pin before trusting it), keeps its
//! identity in its data dir, heartbeats, renews its certificate at about two thirds of
//! its life, and serves `berth.v1.WorkerService` over mTLS to the control plane only.

mod agent;
mod clock;
mod config;
mod control_planes;
mod dialout;
mod drain;
mod enroll;
mod error;
pub mod fencing;
#[doc(hidden)]
pub mod fuzzing;
mod heartbeat;
mod identity;
pub mod metrics;
pub mod provider;
mod renewal;
mod runtime;
pub mod service;
pub mod sessions;

pub use agent::{RunningWorker, start};
pub use config::{CapacityConfig, WorkerConfig};
pub use error::WorkerError;
pub use identity::StoredIdentity;
pub use provider::docker::DockerConfig;

/// The version workers report in heartbeats.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
