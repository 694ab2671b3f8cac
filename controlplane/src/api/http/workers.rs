//! `/api/v1/workers`: list, get, remove, and the lifecycle calls (revoke, cordon,
//! drain and their undoing).

use axum::Json;
use axum::extract::State;

use super::schemas::{ErrorBody, RemovedWorker, RevokedBody};
use super::{AdminScope, Authorized, JsonBody, Path, Query, ReadScope};
use crate::api::ApiState;
use crate::error::ApiError;
use crate::fleet::WorkerView;

/// Every enrolled worker (read scope).
#[utoipa::path(get, path = "/api/v1/workers", tag = "workers", security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "Workers", body = Vec<WorkerView>)))]
pub async fn list(
    _caller: Authorized<ReadScope>,
    State(state): State<ApiState>,
) -> Result<Json<Vec<WorkerView>>, ApiError> {
    Ok(Json(state.fleet.list_workers().await?))
}

/// One worker (read scope).
#[utoipa::path(get, path = "/api/v1/workers/{id}", tag = "workers", security(("api_key" = []), ("bearer" = [])), params(("id" = String, Path, description = "Worker id")), responses(
    (status = 200, description = "The worker", body = WorkerView),
    (status = 404, description = "No such worker", body = ErrorBody),
))]
pub async fn get(
    _caller: Authorized<ReadScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<WorkerView>, ApiError> {
    Ok(Json(state.fleet.get_worker(&id).await?))
}

#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RemoveQuery {
    /// Remove it even while it holds sandboxes, which become lost.
    #[serde(default)]
    pub force: bool,
}

/// `DELETE /api/v1/workers/{id}` (admin): forgets a retired worker. Its credentials are
/// refused (as `revoke` does) and its record removed; while it holds sandboxes only
/// with `force=true`, which marks them lost.
#[utoipa::path(delete, path = "/api/v1/workers/{id}", tag = "workers", security(("api_key" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "Worker id"), RemoveQuery), responses(
    (status = 200, description = "Removed", body = RemovedWorker),
    (status = 404, description = "No such worker", body = ErrorBody),
    (status = 409, description = "It holds sandboxes and force was not given", body = ErrorBody),
))]
pub async fn remove(
    _caller: Authorized<AdminScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(query): Query<RemoveQuery>,
) -> Result<Json<RemovedWorker>, ApiError> {
    let removed = state.fleet.remove_worker(&id, query.force).await?;
    Ok(Json(RemovedWorker {
        removed: removed.worker_id,
        lost_sandboxes: removed.lost_sandboxes,
    }))
}

/// `POST /api/v1/workers/{id}/revoke` (admin): its credentials are refused from now on.
#[utoipa::path(post, path = "/api/v1/workers/{id}/revoke", tag = "workers", security(("api_key" = []), ("bearer" = [])), params(("id" = String, Path, description = "Worker id")), responses(
    (status = 200, description = "Revoked", body = RevokedBody),
    (status = 404, description = "No such worker", body = ErrorBody),
))]
pub async fn revoke(
    _caller: Authorized<AdminScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<RevokedBody>, ApiError> {
    let revoked = state.fleet.revoke_worker(&id).await?;
    Ok(Json(RevokedBody {
        status: "revoked",
        worker_id: revoked.worker_id,
        lost_sandboxes: revoked.lost_sandboxes,
        closed_connections: revoked.closed_connections,
    }))
}

/// `POST /api/v1/workers/{id}/cordon` (admin): no new sandboxes, nothing stopped.
#[utoipa::path(post, path = "/api/v1/workers/{id}/cordon", tag = "workers", security(("api_key" = []), ("bearer" = [])), params(("id" = String, Path, description = "Worker id")), responses(
    (status = 200, description = "The worker", body = WorkerView),
    (status = 404, description = "No such worker", body = ErrorBody),
))]
pub async fn cordon(
    _caller: Authorized<AdminScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<WorkerView>, ApiError> {
    Ok(Json(state.fleet.set_cordoned(&id, true).await?))
}

/// `POST /api/v1/workers/{id}/uncordon` (admin).
#[utoipa::path(post, path = "/api/v1/workers/{id}/uncordon", tag = "workers", security(("api_key" = []), ("bearer" = [])), params(("id" = String, Path, description = "Worker id")), responses(
    (status = 200, description = "The worker", body = WorkerView),
    (status = 404, description = "No such worker", body = ErrorBody),
))]
pub async fn uncordon(
    _caller: Authorized<AdminScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<WorkerView>, ApiError> {
    Ok(Json(state.fleet.set_cordoned(&id, false).await?))
}

#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DrainBody {
    /// e.g. "10m": what is left then is destroyed; none waits until it is gone.
    #[serde(default)]
    pub deadline: Option<String>,
    /// Destroy what is left at once.
    #[serde(default)]
    pub force: bool,
}

/// `POST /api/v1/workers/{id}/drain` (admin).
#[utoipa::path(post, path = "/api/v1/workers/{id}/drain", tag = "workers", security(("api_key" = []), ("bearer" = [])), params(("id" = String, Path, description = "Worker id")),
    request_body = DrainBody, responses(
    (status = 200, description = "The worker, draining", body = WorkerView),
    (status = 400, description = "A bad body or deadline", body = ErrorBody),
    (status = 404, description = "No such worker", body = ErrorBody),
))]
pub async fn drain(
    _caller: Authorized<AdminScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<DrainBody>,
) -> Result<Json<WorkerView>, ApiError> {
    let deadline = super::parse_optional_duration(body.deadline.as_deref())?;
    Ok(Json(state.fleet.drain(&id, deadline, body.force).await?))
}

/// `POST /api/v1/workers/{id}/undrain` (admin).
#[utoipa::path(post, path = "/api/v1/workers/{id}/undrain", tag = "workers", security(("api_key" = []), ("bearer" = [])), params(("id" = String, Path, description = "Worker id")), responses(
    (status = 200, description = "The worker", body = WorkerView),
    (status = 404, description = "No such worker", body = ErrorBody),
))]
pub async fn undrain(
    _caller: Authorized<AdminScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<WorkerView>, ApiError> {
    Ok(Json(state.fleet.undrain(&id).await?))
}
