//! `/health`, `/live`, `/ready`, `/providers`: no key needed.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;

use super::schemas::{ErrorBody, HealthBody, ProviderSummary, ReadyBody, StatusBody};
use crate::api::ApiState;
use crate::error::{ApiError, ErrorCode};
use crate::fleet::WorkerStatus;

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
    let workers = state.fleet.list_workers().await?;
    let online = workers
        .iter()
        .filter(|w| w.status == WorkerStatus::Online && w.capabilities.iter().any(|p| p.healthy))
        .count();
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

/// Providers offered by online workers, with how many workers offer each healthily.
#[utoipa::path(get, path = "/api/v1/providers", tag = "health",
    responses((status = 200, description = "Providers", body = Vec<ProviderSummary>)))]
pub async fn providers(
    State(state): State<ApiState>,
) -> Result<Json<Vec<ProviderSummary>>, ApiError> {
    let workers = state.fleet.list_workers().await?;
    let mut providers: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for worker in workers.iter().filter(|w| w.status == WorkerStatus::Online) {
        for provider in &worker.capabilities {
            let entry = providers.entry(provider.name.clone()).or_default();
            entry.0 += 1;
            if provider.healthy {
                entry.1 += 1;
            }
        }
    }
    let list = providers
        .into_iter()
        .map(|(name, (workers, healthy))| ProviderSummary {
            name,
            healthy: healthy > 0,
            workers,
            healthy_workers: healthy,
        })
        .collect();
    Ok(Json(list))
}
