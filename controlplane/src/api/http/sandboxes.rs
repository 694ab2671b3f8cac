//! `/api/v1/sandboxes`: create, list, get, destroy, extend, prune and admission, in
//! StacyVM's shapes; and stop, start and the event stream.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::schemas::{Admission, ErrorBody, Pruned, StatusBody};
use super::{Authorized, JsonBody, Path, Query, ReadScope, WriteScope};
use crate::api::{ApiState, AuditSlot};
use crate::error::ApiError;
use crate::sandboxes::{
    CreateRequest, Follow, PruneSelection, SandboxError, SandboxEvent, SandboxView,
};
use crate::teams::Access;
use crate::templates;

/// Creates a sandbox on a worker that can hold it (write scope). The answer comes
/// once it is running; with `Prefer: respond-async`, as soon as it is placed (202,
/// state `creating`), its phases then followed on `GET /api/v1/sandboxes/{id}/events`.
#[utoipa::path(post, path = "/api/v1/sandboxes", tag = "sandboxes", security(("api_key" = []), ("bearer" = [])),
    params(("X-User-Id" = Option<String>, Header, description = "The owner when the body names none"),
        ("X-Tenant-Id" = Option<String>, Header, description = "The team to create in (a cluster key; a team key may only name its own)"),
        ("Prefer" = Option<String>, Header, description = "`respond-async`: answer once placed (202), not once running")), request_body = CreateRequest, responses(
    (status = 201, description = "Created", body = SandboxView),
    (status = 202, description = "Placed; creating in the background (Prefer: respond-async)", body = SandboxView),
    (status = 400, description = "A bad body", body = ErrorBody),
    (status = 403, description = "X-Tenant-ID or owner_id beyond what the key may act for", body = ErrorBody),
    (status = 404, description = "X-Tenant-ID names no team", body = ErrorBody),
    (status = 429, description = "No worker has room for it, or the team is at a quota", body = ErrorBody),
    (status = 503, description = "No worker offers the provider", body = ErrorBody),
))]
pub async fn create(
    Authorized { access, .. }: Authorized<WriteScope>,
    State(state): State<ApiState>,
    audit: AuditSlot,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CreateRequest>,
) -> Result<(StatusCode, Json<SandboxView>), ApiError> {
    let request = templates::create_request(
        &state.store,
        &state.secrets,
        state.sandboxes.settings(),
        &access,
        body,
    )
    .await?;
    audit.detail(if request.template.is_empty() {
        format!("image={} provider={}", request.image, request.provider)
    } else {
        format!(
            "image={} provider={} template={} version={}",
            request.image, request.provider, request.template, request.launch.template_version
        )
    });
    if prefers_async(&headers) {
        let sandbox = state.sandboxes.create_in_background(request).await?;
        audit.sandbox(&sandbox.id);
        return Ok((StatusCode::ACCEPTED, Json(sandbox)));
    }
    let sandbox = state.sandboxes.create(request).await?;
    audit.sandbox(&sandbox.id);
    Ok((StatusCode::CREATED, Json(sandbox)))
}

/// Whether a `Prefer` header (RFC 7240) asks for `respond-async`.
fn prefers_async(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|preference| {
            preference
                .split(';')
                .next()
                .is_some_and(|token| token.trim().eq_ignore_ascii_case("respond-async"))
        })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// true: follow until the sandbox is destroyed (stops and starts too); false:
    /// what happened so far, then the end; absent: follow until its create has
    /// settled (running and ready, or failed).
    #[serde(default)]
    pub follow: Option<bool>,
}

/// The sandbox's events as NDJSON: each startup phase as it starts and ends
/// (`{"type":"phase","phase":"building image","status":"started"|"succeeded"|"failed",…}`)
/// and each change of state (`{"type":"state","state":"running",…}`); what happened
/// so far first, then (by default) what follows until the create has settled (read
/// scope).
#[utoipa::path(get, path = "/api/v1/sandboxes/{id}/events", tag = "sandboxes", security(("api_key" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id"), EventsQuery), responses(
    (status = 200, description = "Events, one JSON object a line", content((SandboxEvent = "application/x-ndjson"))),
    (status = 400, description = "A bad query", body = ErrorBody),
    (status = 404, description = "No such sandbox", body = ErrorBody),
))]
pub async fn events(
    Authorized { access, .. }: Authorized<ReadScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(query): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    let events = state
        .sandboxes
        .events(
            &access,
            &id,
            match query.follow {
                None => Follow::Create,
                Some(true) => Follow::Destroyed,
                Some(false) => Follow::No,
            },
        )
        .await?;
    Ok(super::ndjson::response(events))
}

/// Whether a create would be admitted now, without creating anything (read scope).
#[utoipa::path(post, path = "/api/v1/sandboxes/admission", tag = "sandboxes", security(("api_key" = []), ("bearer" = [])),
    params(("X-User-Id" = Option<String>, Header, description = "The owner when the body names none")), request_body = CreateRequest, responses(
    (status = 200, description = "The decision", body = Admission),
    (status = 400, description = "A body that is not a create request", body = ErrorBody),
))]
pub async fn admission(
    Authorized { access, .. }: Authorized<ReadScope>,
    State(state): State<ApiState>,
    JsonBody(body): JsonBody<CreateRequest>,
) -> Result<Json<Admission>, ApiError> {
    let team = access.creating_team().to_owned();
    let standing = state.sandboxes.standing(&team).await?;
    let active = state.sandboxes.list(&Access::team(&team)).await?;
    let owner = access
        .bound_user()
        .map(str::to_owned)
        .or_else(|| body.owner_id.clone().filter(|o| !o.is_empty()))
        .or_else(|| access.user().map(str::to_owned));
    let active_owner = owner.as_ref().map_or(0, |owner| {
        active.iter().filter(|s| s.owner_id == *owner).count()
    });
    let limits = &state.sandboxes.settings().limits;
    let max_ttl = standing
        .quota
        .max_ttl
        .map_or(limits.max_ttl, |ttl| ttl.min(limits.max_ttl));
    let request = templates::create_request(
        &state.store,
        &state.secrets,
        state.sandboxes.settings(),
        &access,
        body,
    )
    .await;
    let decision = match request {
        Err(err) => (false, false, err.to_string()),
        Ok(request) => match state.sandboxes.admission(&request).await {
            Ok(()) => (true, false, String::new()),
            Err(err @ SandboxError::NoCapacity(_)) => (false, true, err.to_string()),
            Err(err) => (false, false, err.to_string()),
        },
    };
    let capacity = state.sandboxes.total_capacity().await?;
    Ok(Json(Admission {
        allowed: decision.0,
        queueable: decision.1,
        reason: decision.2,
        active_sandboxes: usize::try_from(standing.usage.sandboxes).unwrap_or(0),
        max_sandboxes: standing
            .quota
            .max_sandboxes
            .map_or(capacity, |max| max.min(capacity)),
        active_owner_sandboxes: active_owner,
        max_owner_sandboxes: 0,
        max_ttl: humantime::format_duration(max_ttl).to_string(),
    }))
}

/// Every sandbox not yet destroyed (read scope).
#[utoipa::path(get, path = "/api/v1/sandboxes", tag = "sandboxes", security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "Sandboxes", body = Vec<SandboxView>)))]
pub async fn list(
    Authorized { access, .. }: Authorized<ReadScope>,
    State(state): State<ApiState>,
) -> Result<Json<Vec<SandboxView>>, ApiError> {
    Ok(Json(state.sandboxes.list(&access).await?))
}

/// One sandbox (read scope).
#[utoipa::path(get, path = "/api/v1/sandboxes/{id}", tag = "sandboxes", security(("api_key" = []), ("bearer" = [])), params(("id" = String, Path, description = "Sandbox id")), responses(
    (status = 200, description = "The sandbox", body = SandboxView),
    (status = 404, description = "No such sandbox", body = ErrorBody),
))]
pub async fn get(
    Authorized { access, .. }: Authorized<ReadScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<SandboxView>, ApiError> {
    Ok(Json(state.sandboxes.get(&access, &id).await?))
}

/// Destroys a sandbox (write scope).
#[utoipa::path(delete, path = "/api/v1/sandboxes/{id}", tag = "sandboxes", security(("api_key" = []), ("bearer" = [])), params(("id" = String, Path, description = "Sandbox id")), responses(
    (status = 200, description = "`{\"status\":\"destroyed\"}`", body = StatusBody),
    (status = 404, description = "No such sandbox", body = ErrorBody),
))]
pub async fn destroy(
    Authorized { access, .. }: Authorized<WriteScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<StatusBody>, ApiError> {
    state.sandboxes.destroy(&access, &id).await?;
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
    Authorized { access, .. }: Authorized<WriteScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ExtendBody>,
) -> Result<Json<SandboxView>, ApiError> {
    let ttl = body.ttl.unwrap_or_else(|| "30m".to_owned());
    Ok(Json(state.sandboxes.extend(&access, &id, &ttl).await?))
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
    Authorized { access, .. }: Authorized<WriteScope>,
    State(state): State<ApiState>,
    Query(query): Query<PruneQuery>,
) -> Result<Json<Pruned>, ApiError> {
    let selection = PruneSelection::parse(query.state.as_deref())?;
    let pruned = state.sandboxes.prune(&access, selection).await?;
    Ok(Json(Pruned { pruned }))
}

/// Stops a sandbox: its processes end, its filesystem, lease and slot stay; commands,
/// files and ports answer 409 until it is started (write scope).
#[utoipa::path(post, path = "/api/v1/sandboxes/{id}/stop", tag = "sandboxes", security(("api_key" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id")), responses(
    (status = 200, description = "The sandbox, stopped", body = SandboxView),
    (status = 404, description = "No such sandbox", body = ErrorBody),
    (status = 409, description = "Neither running nor stopped (creating, failed, lost)", body = ErrorBody),
))]
pub async fn stop(
    Authorized { access, .. }: Authorized<WriteScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    audit: AuditSlot,
) -> Result<Json<SandboxView>, ApiError> {
    audit.sandbox(&id);
    Ok(Json(state.sandboxes.stop(&access, &id).await?))
}

/// Starts a stopped sandbox again and runs its template's `on_start` (write scope).
#[utoipa::path(post, path = "/api/v1/sandboxes/{id}/start", tag = "sandboxes", security(("api_key" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id")), responses(
    (status = 200, description = "The sandbox, running", body = SandboxView),
    (status = 400, description = "Its on_start failed (it stays stopped)", body = ErrorBody),
    (status = 404, description = "No such sandbox", body = ErrorBody),
    (status = 409, description = "Neither running nor stopped (creating, failed, lost)", body = ErrorBody),
))]
pub async fn start(
    Authorized { access, .. }: Authorized<WriteScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    audit: AuditSlot,
) -> Result<Json<SandboxView>, ApiError> {
    audit.sandbox(&id);
    let sandbox = state.sandboxes.get(&access, &id).await?;
    let on_start =
        templates::on_start_of(&state.store, &sandbox.tenant_id, &sandbox.template).await?;
    Ok(Json(state.sandboxes.start(&access, &id, &on_start).await?))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderMap;

    #[test]
    fn respond_async_is_read_from_any_prefer_header() {
        let prefer = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append("prefer", value.parse().unwrap());
            }
            super::prefers_async(&headers)
        };
        assert!(prefer(&["respond-async"]));
        assert!(prefer(&["return=minimal, Respond-Async; wait=10"]));
        assert!(prefer(&["return=minimal", "respond-async"]));
        assert!(!prefer(&[]));
        assert!(!prefer(&["return=representation"]));
        assert!(!prefer(&["respond-asynchronously"]));
    }
}
