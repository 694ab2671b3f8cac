//! `/api/v1/sandboxes`: create, list, get, destroy, extend, prune and admission, in
//! StacyVM's shapes.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Authorized, JsonBody, Path, ReadScope, WriteScope};
use crate::api::{ApiState, AuditSlot};
use crate::error::ApiError;
use crate::sandboxes::{CreateRequest, CreateSandbox, SandboxError, SandboxView};

/// The create body with the owner taken from `X-User-Id` when the body names none,
/// checked against the sandbox settings.
fn validate_create(
    mut body: CreateRequest,
    state: &ApiState,
    headers: &HeaderMap,
) -> Result<CreateSandbox, SandboxError> {
    if body.owner_id.is_none() {
        body.owner_id = headers
            .get("x-user-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
    }
    body.validate(state.sandboxes.settings())
}

pub async fn create(
    _caller: Authorized<WriteScope>,
    State(state): State<ApiState>,
    headers: HeaderMap,
    audit: AuditSlot,
    JsonBody(body): JsonBody<CreateRequest>,
) -> Result<(StatusCode, Json<SandboxView>), ApiError> {
    let request = validate_create(body, &state, &headers)?;
    audit.detail(format!(
        "image={} provider={}",
        request.image, request.provider
    ));
    let sandbox = state.sandboxes.create(request).await?;
    audit.sandbox(&sandbox.id);
    Ok((StatusCode::CREATED, Json(sandbox)))
}

/// Whether a create would be admitted now, without creating anything.
pub async fn admission(
    _caller: Authorized<ReadScope>,
    State(state): State<ApiState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CreateRequest>,
) -> Result<Json<Value>, ApiError> {
    let active = state.sandboxes.list().await?.len();
    let max_ttl = humantime::format_duration(state.sandboxes.settings().limits.max_ttl).to_string();
    let decision = match validate_create(body, &state, &headers) {
        Err(err) => (false, false, err.to_string()),
        Ok(request) => match state.sandboxes.admission(&request).await {
            Ok(()) => (true, false, String::new()),
            Err(err @ SandboxError::NoCapacity(_)) => (false, true, err.to_string()),
            Err(err) => (false, false, err.to_string()),
        },
    };
    Ok(Json(json!({
        "allowed": decision.0,
        "queueable": decision.1,
        "reason": decision.2,
        "active_sandboxes": active,
        "max_sandboxes": state.sandboxes.total_capacity().await?,
        "max_ttl": max_ttl,
    })))
}

pub async fn list(
    _caller: Authorized<ReadScope>,
    State(state): State<ApiState>,
) -> Result<Json<Vec<SandboxView>>, ApiError> {
    Ok(Json(state.sandboxes.list().await?))
}

pub async fn get(
    _caller: Authorized<ReadScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<SandboxView>, ApiError> {
    Ok(Json(state.sandboxes.get(&id).await?))
}

pub async fn destroy(
    _caller: Authorized<WriteScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state.sandboxes.destroy(&id).await?;
    Ok(Json(json!({"status": "destroyed"})))
}

#[derive(Debug, Deserialize)]
pub struct ExtendBody {
    #[serde(default)]
    pub ttl: Option<String>,
}

pub async fn extend(
    _caller: Authorized<WriteScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ExtendBody>,
) -> Result<Json<SandboxView>, ApiError> {
    let ttl = body.ttl.unwrap_or_else(|| "30m".to_owned());
    Ok(Json(state.sandboxes.extend(&id, &ttl).await?))
}

pub async fn prune(
    _caller: Authorized<WriteScope>,
    State(state): State<ApiState>,
) -> Result<Json<Value>, ApiError> {
    let pruned = state.sandboxes.prune_expired().await?;
    Ok(Json(json!({"pruned": pruned})))
}
