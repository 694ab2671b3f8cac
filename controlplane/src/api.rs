//! The public API port (7423): HTTP/JSON under `/api/v1` (StacyVM-compatible) and the
//! `berth.v1.Sandboxes` / `berth.v1.Admin` gRPC services, on one listener. Plain HTTP
//! only on a loopback address; any other bind serves TLS with the control plane's
//! serving certificate. The gRPC health service and server reflection are served
//! there too, without a key.

mod audit;
mod auth;
mod grpc;
pub(crate) mod http;
mod observe;
pub mod preview;
mod rate_limit;
mod serve;
pub mod ssh;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api_keys::ApiKeyCache;
use crate::audit::AuditLog;
use crate::fleet::Fleet;
use crate::sandboxes::Sandboxes;
use crate::store::Store;
use crate::teams::Teams;

pub use audit::AuditSlot;
pub use grpc::health::{
    keep_updated as keep_grpc_health_updated, reporter as grpc_health_reporter,
};
pub use http::route_list;
pub use rate_limit::KeyRateLimits;
pub use serve::serve;

/// What every API handler can reach, shared: every middleware and extractor clones
/// the state, so a clone is one reference count, not one per field.
#[derive(Debug, Clone)]
pub struct ApiState(Arc<ApiParts>);

impl ApiState {
    pub fn new(parts: ApiParts) -> Self {
        Self(Arc::new(parts))
    }
}

impl std::ops::Deref for ApiState {
    type Target = ApiParts;

    fn deref(&self) -> &ApiParts {
        &self.0
    }
}

/// The parts of [`ApiState`].
#[derive(Debug)]
pub struct ApiParts {
    pub fleet: Fleet,
    pub sandboxes: Sandboxes,
    /// Team secrets, sealed with the cluster's secrets key.
    pub secrets: crate::secrets::Secrets,
    pub teams: Teams,
    pub audit: AuditLog,
    pub store: Store,
    /// Key rows recently read from the store (revoking a key must invalidate it here).
    pub api_keys: ApiKeyCache,
    /// Each key's calls a second (`api.key_rate_limit`); off unless configured.
    pub key_rate_limits: KeyRateLimits,
    pub version: Arc<str>,
    /// What `grpc.health.v1.Health` answers ([`keep_grpc_health_updated`] sets it).
    pub health: tonic_health::server::HealthReporter,
    /// The control plane's shutdown: session streams end when it fires (their clients
    /// attach again elsewhere), rather than holding the old process open.
    pub shutdown: CancellationToken,
    /// Where session relays run, so shutdown waits for their last audit records.
    pub tasks: TaskTracker,
    /// Preview URLs: the domain, and the signer of preview links.
    pub previews: preview::Previews,
    /// The SSH gateway, when it is on (`berth status` shows it).
    pub ssh: Option<ssh::SshGatewayInfo>,
}

/// The whole public API as one axum router: HTTP routes plus the gRPC services.
pub fn router(state: ApiState) -> axum::Router {
    // tonic's router brings a fallback of its own; ours replaces it after the merge.
    let grpc = grpc::routes(state.clone()).into_axum_router();
    http::router(state.clone())
        .merge(grpc)
        .fallback(http::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            audit::record,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            observe::observe,
        ))
        .layer(axum::middleware::from_fn(http::request_id))
        // a preview host's requests go to the sandbox, not to the API
        .layer(axum::middleware::from_fn_with_state(
            state,
            preview::route_by_host,
        ))
}
