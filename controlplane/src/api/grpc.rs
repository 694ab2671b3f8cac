//! The public gRPC services (`berth.v1.Admin`, `berth.v1.Sandboxes`) on the API port.

mod admin;

use berth_proto::v1::admin_server::AdminServer;
use berth_proto::v1::sandboxes_server::{Sandboxes, SandboxesServer};
use tonic::service::Routes;

use super::ApiState;
use super::auth::{authorize, presented_key};
use crate::api_keys::{Caller, Scope};
use crate::error::ApiError;

pub fn routes(state: ApiState) -> Routes {
    Routes::new(AdminServer::new(admin::AdminService::new(state.clone())))
        .add_service(SandboxesServer::new(SandboxesService))
}

/// Checks the API key in a gRPC request's metadata.
async fn caller<T>(
    state: &ApiState,
    request: &tonic::Request<T>,
    scope: Scope,
) -> Result<Caller, ApiError> {
    let metadata = request.metadata();
    let key = presented_key(|name| metadata.get(name).and_then(|v| v.to_str().ok()));
    authorize(&state.store, key, scope).await
}

/// `berth.v1.Sandboxes`: every call answers UNIMPLEMENTED until sandboxes land
/// (the scheduler, leases and routing come with the sandboxes issue).
#[derive(Debug, Clone, Copy)]
pub struct SandboxesService;

impl Sandboxes for SandboxesService {}
