//! `/api/v1/providers`: what the online workers offer (no key, like `/health`), one
//! provider by name, and a live test of each (read scope: it calls every worker).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;

use super::schemas::ErrorBody;
use super::{Authorized, Path, ReadScope};
use crate::api::ApiState;
use crate::error::ApiError;
use crate::fleet::ProviderSummary;

/// Providers offered by online workers, with how many workers offer each healthily.
#[utoipa::path(get, path = "/api/v1/providers", tag = "health",
    responses((status = 200, description = "Providers", body = Vec<ProviderSummary>)))]
pub async fn list(State(state): State<ApiState>) -> Result<Json<Vec<ProviderSummary>>, ApiError> {
    Ok(Json(state.fleet.providers().await?))
}

/// One provider as `GET /api/v1/providers` shows it.
#[utoipa::path(get, path = "/api/v1/providers/{name}", tag = "health",
    params(("name" = String, Path, description = "Provider name, e.g. `docker`")), responses(
    (status = 200, description = "The provider", body = ProviderSummary),
    (status = 404, description = "No online worker offers it", body = ErrorBody),
))]
pub async fn get(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<ProviderSummary>, ApiError> {
    match state.fleet.provider(&name).await? {
        Some(provider) => Ok(Json(provider)),
        None => Err(ApiError::not_found(format!(
            "provider {name:?} not found: no online worker offers it"
        ))),
    }
}

/// Asks every online worker now (not its last heartbeat) how its providers are:
/// `{"docker": true, "mock": true}`, true when at least one worker's is healthy
/// (read scope).
#[utoipa::path(post, path = "/api/v1/providers/test", tag = "health", security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "Each provider's live health", body = BTreeMap<String, bool>)))]
pub async fn test(
    _caller: Authorized<ReadScope>,
    State(state): State<ApiState>,
) -> Result<Json<BTreeMap<String, bool>>, ApiError> {
    Ok(Json(state.fleet.test_providers().await?))
}
