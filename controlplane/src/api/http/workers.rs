//! `GET /api/v1/workers` and `GET /api/v1/workers/{id}`.

use axum::Json;
use axum::extract::State;

use super::{AdminScope, Authorized, JsonBody, Path, ReadScope};
use crate::api::ApiState;
use crate::error::ApiError;
use crate::fleet::WorkerView;

pub async fn list(
    _caller: Authorized<ReadScope>,
    State(state): State<ApiState>,
) -> Result<Json<Vec<WorkerView>>, ApiError> {
    Ok(Json(state.fleet.list_workers().await?))
}

pub async fn get(
    _caller: Authorized<ReadScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<WorkerView>, ApiError> {
    Ok(Json(state.fleet.get_worker(&id).await?))
}

/// `POST /api/v1/workers/{id}/revoke` (admin).
pub async fn revoke(
    _caller: Authorized<AdminScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let revoked = state.fleet.revoke_worker(&id).await?;
    Ok(Json(serde_json::json!({
        "status": "revoked",
        "worker_id": revoked.worker_id,
        "lost_sandboxes": revoked.lost_sandboxes,
        "closed_connections": revoked.closed_connections,
    })))
}

/// `POST /api/v1/workers/{id}/cordon` (admin): no new sandboxes, nothing stopped.
pub async fn cordon(
    _caller: Authorized<AdminScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<WorkerView>, ApiError> {
    Ok(Json(state.fleet.set_cordoned(&id, true).await?))
}

/// `POST /api/v1/workers/{id}/uncordon` (admin).
pub async fn uncordon(
    _caller: Authorized<AdminScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<WorkerView>, ApiError> {
    Ok(Json(state.fleet.set_cordoned(&id, false).await?))
}

#[derive(Debug, Default, serde::Deserialize)]
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
pub async fn undrain(
    _caller: Authorized<AdminScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<WorkerView>, ApiError> {
    Ok(Json(state.fleet.undrain(&id).await?))
}
