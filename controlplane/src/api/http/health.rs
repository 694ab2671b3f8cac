//! `/health`, `/live`, `/ready`: no key needed.

use axum::Json;
use axum::extract::State;

use super::schemas::{ErrorBody, HealthBody, ReadyBody, StatusBody};
use crate::api::ApiState;
use crate::error::{ApiError, ErrorCode};

/// The control plane answers, and its version.
#[utoipa::path(get, path = "/api/v1/health", tag = "health",
    responses((status = 200, description = "Up", body = HealthBody)))]
pub async fn health(State(state): State<ApiState>) -> Json<HealthBody> {
    Json(HealthBody {
        status: "ok",
        version: state.version.to_string(),
    })
}

/// The process is alive.
#[utoipa::path(get, path = "/api/v1/live", tag = "health",
    responses((status = 200, description = "Alive", body = StatusBody)))]
pub async fn live() -> Json<StatusBody> {
    Json(StatusBody::new("ok"))
}

/// Ready when the store answers and at least one online worker offers a healthy provider.
#[utoipa::path(get, path = "/api/v1/ready", tag = "health", responses(
    (status = 200, description = "Ready", body = ReadyBody),
    (status = 503, description = "No online worker with a healthy provider", body = ErrorBody),
))]
pub async fn ready(State(state): State<ApiState>) -> Result<Json<ReadyBody>, ApiError> {
    state.store.ping().await?;
    let online = state.fleet.ready_workers().await?;
    if online == 0 {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            "no online worker with a healthy provider",
        ));
    }
    Ok(Json(ReadyBody {
        status: "ready",
        workers_online: online,
    }))
}
