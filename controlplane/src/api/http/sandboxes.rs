//! `/api/v1/sandboxes`: create, list, get, destroy, extend, prune and admission, in
//! StacyVM's shapes.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;

use super::schemas::{Admission, ErrorBody, Pruned, StatusBody};
use super::{Authorized, JsonBody, Path, Query, ReadScope, WriteScope};
use crate::api::{ApiState, AuditSlot};
use crate::error::ApiError;
use crate::sandboxes::{CreateRequest, CreateSandbox, PruneSelection, SandboxError, SandboxView};

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

/// Creates a sandbox on a worker that can hold it (write scope).
#[utoipa::path(post, path = "/api/v1/sandboxes", tag = "sandboxes", security(("api_key" = []), ("bearer" = [])),
    params(("X-User-Id" = Option<String>, Header, description = "The owner when the body names none")), request_body = CreateRequest, responses(
    (status = 201, description = "Created", body = SandboxView),
    (status = 400, description = "A bad body", body = ErrorBody),
    (status = 429, description = "No worker has room for it", body = ErrorBody),
    (status = 503, description = "No worker offers the provider", body = ErrorBody),
))]
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

/// Whether a create would be admitted now, without creating anything (read scope).
#[utoipa::path(post, path = "/api/v1/sandboxes/admission", tag = "sandboxes", security(("api_key" = []), ("bearer" = [])),
    params(("X-User-Id" = Option<String>, Header, description = "The owner when the body names none")), request_body = CreateRequest, responses(
    (status = 200, description = "The decision", body = Admission),
    (status = 400, description = "A body that is not a create request", body = ErrorBody),
))]
pub async fn admission(
    _caller: Authorized<ReadScope>,
    State(state): State<ApiState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CreateRequest>,
) -> Result<Json<Admission>, ApiError> {
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
    Ok(Json(Admission {
        allowed: decision.0,
        queueable: decision.1,
        reason: decision.2,
        active_sandboxes: active,
        max_sandboxes: state.sandboxes.total_capacity().await?,
        max_ttl,
    }))
}

/// Every sandbox not yet destroyed (read scope).
#[utoipa::path(get, path = "/api/v1/sandboxes", tag = "sandboxes", security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "Sandboxes", body = Vec<SandboxView>)))]
pub async fn list(
    _caller: Authorized<ReadScope>,
    State(state): State<ApiState>,
) -> Result<Json<Vec<SandboxView>>, ApiError> {
    Ok(Json(state.sandboxes.list().await?))
}

/// One sandbox (read scope).
#[utoipa::path(get, path = "/api/v1/sandboxes/{id}", tag = "sandboxes", security(("api_key" = []), ("bearer" = [])), params(("id" = String, Path, description = "Sandbox id")), responses(
    (status = 200, description = "The sandbox", body = SandboxView),
    (status = 404, description = "No such sandbox", body = ErrorBody),
))]
pub async fn get(
    _caller: Authorized<ReadScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<SandboxView>, ApiError> {
    Ok(Json(state.sandboxes.get(&id).await?))
}

/// Destroys a sandbox (write scope).
#[utoipa::path(delete, path = "/api/v1/sandboxes/{id}", tag = "sandboxes", security(("api_key" = []), ("bearer" = [])), params(("id" = String, Path, description = "Sandbox id")), responses(
    (status = 200, description = "`{\"status\":\"destroyed\"}`", body = StatusBody),
    (status = 404, description = "No such sandbox", body = ErrorBody),
))]
pub async fn destroy(
    _caller: Authorized<WriteScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<StatusBody>, ApiError> {
    state.sandboxes.destroy(&id).await?;
    Ok(Json(StatusBody::new("destroyed")))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ExtendBody {
    /// A Go-style duration added to the expiry, default `30m`.
    #[serde(default)]
    pub ttl: Option<String>,
}

/// Pushes a sandbox's expiry back (write scope).
#[utoipa::path(post, path = "/api/v1/sandboxes/{id}/extend", tag = "sandboxes", security(("api_key" = []), ("bearer" = [])), params(("id" = String, Path, description = "Sandbox id")),
    request_body = ExtendBody, responses(
    (status = 200, description = "The sandbox", body = SandboxView),
    (status = 400, description = "A bad body or ttl", body = ErrorBody),
    (status = 404, description = "No such sandbox", body = ErrorBody),
))]
pub async fn extend(
    _caller: Authorized<WriteScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ExtendBody>,
) -> Result<Json<SandboxView>, ApiError> {
    let ttl = body.ttl.unwrap_or_else(|| "30m".to_owned());
    Ok(Json(state.sandboxes.extend(&id, &ttl).await?))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PruneQuery {
    /// A comma list of `expired` (TTL ran out), `lost` and `error`; default all three.
    #[serde(default)]
    pub state: Option<String>,
}

/// Destroys expired sandboxes, and those lost or failed, now (write scope).
#[utoipa::path(delete, path = "/api/v1/sandboxes", tag = "sandboxes", security(("api_key" = []), ("bearer" = [])),
    params(PruneQuery), responses(
    (status = 200, description = "How many were pruned", body = Pruned),
    (status = 400, description = "A state other than expired, lost or error", body = ErrorBody),
))]
pub async fn prune(
    _caller: Authorized<WriteScope>,
    State(state): State<ApiState>,
    Query(query): Query<PruneQuery>,
) -> Result<Json<Pruned>, ApiError> {
    let selection = PruneSelection::parse(query.state.as_deref())?;
    let pruned = state.sandboxes.prune(selection).await?;
    Ok(Json(Pruned { pruned }))
}
