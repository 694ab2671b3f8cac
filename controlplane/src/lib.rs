//! `berth serve`: the control plane. It is the fleet's certificate authority and token
//! issuer ([`authority`]), keeps its state in the [`store`], serves workers on the mesh
//! port ([`mesh`]) and operators and clients on the public API port ([`api`]); the
//! fleet logic both call into lives in [`fleet`]. [`server`] wires it together.

pub mod api;
pub mod api_keys;
pub mod audit;
pub mod authority;
mod clock;
pub mod cluster;
pub mod config;
pub mod error;
pub mod fleet;
#[doc(hidden)]
pub mod fuzzing;
pub mod mesh;
pub mod metrics;
pub mod sandboxes;
pub mod secrets;
pub mod server;
pub mod ssh_access;
pub mod store;
pub mod teams;
pub mod templates;
pub mod workers;

pub use config::ControlPlaneConfig;
pub use server::{Listeners, RunningControlPlane, start};

/// The version the control plane reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
