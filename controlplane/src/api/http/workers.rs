//! `GET /api/v1/workers` and `GET /api/v1/workers/{id}`.

use axum::Json;
use axum::extract::State;

use super::schemas::{ErrorBody, RevokedBody};
use super::{AdminScope, Authorized, JsonBody, Path, ReadScope};
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
