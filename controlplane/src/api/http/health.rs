//! `/health`, `/live`, `/ready`, `/providers`: no key needed.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::api::ApiState;
use crate::error::{ApiError, ErrorCode};
use crate::fleet::WorkerStatus;

pub async fn health(State(state): State<ApiState>) -> Json<Value> {
    Json(json!({"status": "ok", "version": &*state.version}))
}

pub async fn live() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the store answers and at least one online worker offers a healthy provider.
pub async fn ready(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(json!({"status": "ready", "workers_online": online})))
}

/// Providers offered by online workers, with how many workers offer each healthily.
pub async fn providers(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
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
    let list: Vec<Value> = providers
        .into_iter()
        .map(|(name, (workers, healthy))| {
            json!({"name": name, "healthy": healthy > 0, "workers": workers, "healthy_workers": healthy})
        })
        .collect();
    Ok(Json(Value::Array(list)))
}
