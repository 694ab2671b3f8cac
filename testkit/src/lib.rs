//! In-process Berth fleets for integration tests: a control plane and workers on
//! port-0 loopback listeners with real mTLS, real enrollment and a real store (SQLite
//! in a temp dir, or a fresh database on a throwaway Postgres, see [`postgres`]), plus
//! raw mesh clients for poking at the edges and an `eventually` poller in place of
//! sleeps. Kept in its own crate because it is costly to compile.
//!
//! Most tests start a [`TestFleet`] (control plane, workers, admin [`Api`] client);
//! tests about enrollment and replicas assemble [`TestControlPlane`]s and
//! [`TestWorker`]s themselves. [`spec`], [`shell`] and [`sample`] are the small
//! request and metrics helpers the test files share; [`docker`] holds what docker
//! tests need, [`tmux`] a terminal to drive and [`ssh`] the OpenSSH client.
//!
//! `BERTH_TEST_DATABASE=postgres` gives every [`TestControlPlane`] of a test process a
//! Postgres store; [`rerun_on_postgres`] runs a whole test binary again that way.

pub mod docker;
pub mod postgres;
pub mod python;
pub mod ssh;
pub mod tmux;

mod api;
mod control_plane;
mod database;
mod fleet;
mod grpc;
mod metrics;
mod poll;
mod sessions;
mod specs;
mod worker;

use std::sync::Once;

pub use api::{Api, id_of};
pub use control_plane::TestControlPlane;
pub use database::{TestDatabase, rerun_on_postgres};
pub use fleet::{FleetBuilder, TestFleet};
pub use grpc::{api_channel, keyed};
pub use metrics::sample;
pub use poll::eventually;
pub use sessions::GrpcSession;
pub use specs::{shell, spec};
pub use worker::TestWorker;

/// Installs the crypto provider and a test log subscriber (`RUST_LOG`, default warn).
pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        berth_pki::install_crypto_provider();
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}
