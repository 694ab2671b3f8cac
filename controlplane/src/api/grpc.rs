//! The public gRPC services (`berth.v1.Admin`, `berth.v1.Sandboxes`) on the API port,
//! with the standard health service and server reflection beside them.

mod admin;
pub mod health;
mod ports;
mod reflection;
mod sandboxes;
mod sessions;

use berth_proto::v1::admin_server::AdminServer;
use berth_proto::v1::sandboxes_server::SandboxesServer;
use tonic::service::Routes;

use super::auth::{Granted, authorize};
use super::{ApiState, AuditSlot};
use crate::api_keys::Scope;
use crate::error::ApiError;

pub fn routes(state: ApiState) -> Routes {
    let health = health::service(&state.health);
    Routes::new(AdminServer::new(admin::AdminService::new(state.clone())))
        .add_service(SandboxesServer::new(sandboxes::SandboxesService::new(
            state,
        )))
        .add_service(health)
        .add_service(reflection::v1())
        .add_service(reflection::v1alpha())
}

/// Checks the API key in a gRPC request's metadata, and what the call may touch
/// (`x-tenant-id`, `x-user-id` metadata, as the HTTP headers).
async fn caller<T>(
    state: &ApiState,
    request: &tonic::Request<T>,
    scope: Scope,
) -> Result<Granted, ApiError> {
    let metadata = request.metadata();
    let header = |name: &str| metadata.get(name).and_then(|v| v.to_str().ok());
    let slot = request.extensions().get::<AuditSlot>();
    authorize(state, header, scope, slot).await
}
