//! `GET /api/v1/workers` and `GET /api/v1/workers/{id}`.

use axum::Json;
use axum::extract::{Path, State};

use super::{Authorized, ReadScope};
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
