//! `/api/v1/templates`: a team's templates, in StacyVM's shapes (its SDK's
//! `templates.list/get/save/delete` and `spawn_template`).
//!
//! - `POST /api/v1/templates` saves the document in the body (JSON, or YAML with a
//!   YAML content type): new (201), a new version (200), or unchanged (200).
//! - `PUT /api/v1/templates/{name}` saves it under the URL's name.
//! - `GET /api/v1/templates[/{name}]`, `DELETE /api/v1/templates/{name}`.
//! - `POST /api/v1/templates/{name}/spawn` creates a sandbox from it; an optional body
//!   (a create request) overrides what it may.
//! - `POST /api/v1/templates/{name}/prebuild` builds its image on the workers now.
//!
//! Reading takes the read scope; saving, deleting and spawning the write scope.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde_json::Value;

use super::schemas::{ErrorBody, StatusBody};
use super::{Authorized, Path, ReadScope, WriteScope};
use crate::api::{ApiState, AuditSlot};
use crate::error::ApiError;
use crate::sandboxes::{CreateRequest, PrebuildEvent, SandboxView};
use crate::templates::{self, Saved, TemplateSpec, TemplateView};

/// The body as a document: YAML when the content type says so, else JSON.
fn document(headers: &HeaderMap, body: &Bytes) -> Result<Value, ApiError> {
    let yaml = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("yaml"));
    if yaml {
        serde_yaml_ng::from_slice(body)
            .map_err(|err| ApiError::bad_request(format!("the body is not YAML: {err}")))
    } else {
        serde_json::from_slice(body)
            .map_err(|err| ApiError::bad_request(format!("the body is not JSON: {err}")))
    }
}

async fn save_document(
    state: &ApiState,
    access: &crate::teams::Access,
    audit: &AuditSlot,
    document: Value,
    name: Option<&str>,
) -> Result<(StatusCode, Json<TemplateView>), ApiError> {
    let (saved, view) = templates::save(
        &state.store,
        state.sandboxes.settings(),
        access,
        document,
        name,
    )
    .await?;
    let how = match saved {
        Saved::Created => "created",
        Saved::Updated => "updated",
        Saved::Unchanged => "unchanged",
    };
    audit.detail(format!(
        "template={} version={} {how}",
        view.spec.name, view.version
    ));
    let status = if saved == Saved::Created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)))
}

/// Saves a template (write scope): made, a new version, or unchanged.
#[utoipa::path(post, path = "/api/v1/templates", tag = "templates", security(("api_key" = []), ("bearer" = [])),
    request_body(content = TemplateSpec, content_type = "application/json"), responses(
    (status = 201, description = "Made (version 1)", body = TemplateView),
    (status = 200, description = "Saved: a new version, or the same content again", body = TemplateView),
    (status = 400, description = "Not a template", body = ErrorBody),
))]
pub async fn save(
    Authorized { access, .. }: Authorized<WriteScope>,
    State(state): State<ApiState>,
    audit: AuditSlot,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<TemplateView>), ApiError> {
    let document = document(&headers, &body)?;
    save_document(&state, &access, &audit, document, None).await
}

/// Saves a template under the URL's name (write scope).
#[utoipa::path(put, path = "/api/v1/templates/{name}", tag = "templates", security(("api_key" = []), ("bearer" = [])),
    params(("name" = String, Path, description = "Template name")),
    request_body(content = TemplateSpec, content_type = "application/json"), responses(
    (status = 201, description = "Made (version 1)", body = TemplateView),
    (status = 200, description = "Saved: a new version, or the same content again", body = TemplateView),
    (status = 400, description = "Not a template", body = ErrorBody),
))]
pub async fn put(
    Authorized { access, .. }: Authorized<WriteScope>,
    State(state): State<ApiState>,
    Path(name): Path<String>,
    audit: AuditSlot,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<TemplateView>), ApiError> {
    let document = document(&headers, &body)?;
    save_document(&state, &access, &audit, document, Some(&name)).await
}

/// The team's templates, by name (read scope).
#[utoipa::path(get, path = "/api/v1/templates", tag = "templates", security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "Templates", body = Vec<TemplateView>)))]
pub async fn list(
    Authorized { access, .. }: Authorized<ReadScope>,
    State(state): State<ApiState>,
) -> Result<Json<Vec<TemplateView>>, ApiError> {
    Ok(Json(templates::list(&state.store, &access).await?))
}

/// One template (read scope).
#[utoipa::path(get, path = "/api/v1/templates/{name}", tag = "templates", security(("api_key" = []), ("bearer" = [])),
    params(("name" = String, Path, description = "Template name")), responses(
    (status = 200, description = "The template", body = TemplateView),
    (status = 404, description = "No such template in the team", body = ErrorBody),
))]
pub async fn get(
    Authorized { access, .. }: Authorized<ReadScope>,
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<TemplateView>, ApiError> {
    Ok(Json(templates::get(&state.store, &access, &name).await?))
}

/// Deletes a template (write scope); sandboxes made from it run on.
#[utoipa::path(delete, path = "/api/v1/templates/{name}", tag = "templates", security(("api_key" = []), ("bearer" = [])),
    params(("name" = String, Path, description = "Template name")), responses(
    (status = 200, description = "`{\"status\":\"deleted\"}`", body = StatusBody),
    (status = 404, description = "No such template in the team", body = ErrorBody),
))]
pub async fn delete(
    Authorized { access, .. }: Authorized<WriteScope>,
    State(state): State<ApiState>,
    Path(name): Path<String>,
    audit: AuditSlot,
) -> Result<Json<StatusBody>, ApiError> {
    audit.detail(format!("template={name}"));
    templates::delete(&state.store, &access, &name).await?;
    Ok(Json(StatusBody::new("deleted")))
}

/// What a prebuild builds on: every worker the team's creates could land on, or these.
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrebuildRequest {
    /// Worker ids; absent or empty: every one.
    #[serde(default)]
    pub workers: Vec<String>,
}

/// Builds the template's image (its `packages` and `on_create`) on the workers now,
/// so no create waits for it (write scope). NDJSON, a line per worker as its build
/// starts (`building`) and ends (`built`, `reused` or `failed`, with the image tag,
/// the time and the error).
#[utoipa::path(post, path = "/api/v1/templates/{name}/prebuild", tag = "templates", security(("api_key" = []), ("bearer" = [])),
    params(("name" = String, Path, description = "Template name")),
    request_body(content = Option<PrebuildRequest>, content_type = "application/json"), responses(
    (status = 200, description = "Each worker's progress, a JSON object a line", content((PrebuildEvent = "application/x-ndjson"))),
    (status = 400, description = "A bad body, or a template with nothing to build", body = ErrorBody),
    (status = 404, description = "No such template in the team", body = ErrorBody),
    (status = 429, description = "No worker to build on", body = ErrorBody),
))]
pub async fn prebuild(
    Authorized { access, .. }: Authorized<WriteScope>,
    State(state): State<ApiState>,
    Path(name): Path<String>,
    audit: AuditSlot,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: PrebuildRequest = if body.iter().all(u8::is_ascii_whitespace) {
        PrebuildRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|err| {
            ApiError::bad_request(format!("the body is not a prebuild request: {err}"))
        })?
    };
    audit.detail(format!("template={name}"));
    let events = templates::prebuild(
        &state.store,
        &state.sandboxes,
        &access,
        &name,
        &request.workers,
    )
    .await?;
    Ok(super::ndjson::response(events))
}

/// Creates a sandbox from a template (write scope); an optional create request in the
/// body overrides what a create may (its `template` is the URL's).
#[utoipa::path(post, path = "/api/v1/templates/{name}/spawn", tag = "templates", security(("api_key" = []), ("bearer" = [])),
    params(("name" = String, Path, description = "Template name")),
    request_body(content = Option<CreateRequest>, content_type = "application/json"), responses(
    (status = 201, description = "Created", body = SandboxView),
    (status = 400, description = "A bad body, or the template's on_start failed", body = ErrorBody),
    (status = 404, description = "No such template in the team", body = ErrorBody),
    (status = 429, description = "No worker has room for it, or the team is at a quota", body = ErrorBody),
    (status = 503, description = "No worker offers the provider", body = ErrorBody),
))]
pub async fn spawn(
    Authorized { access, .. }: Authorized<WriteScope>,
    State(state): State<ApiState>,
    Path(name): Path<String>,
    audit: AuditSlot,
    body: Bytes,
) -> Result<(StatusCode, Json<SandboxView>), ApiError> {
    let mut request: CreateRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CreateRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|err| {
            ApiError::bad_request(format!("the body is not a create request: {err}"))
        })?
    };
    // the URL names a resource: a missing one is 404 here, where a create's body
    // naming one is a bad request
    templates::get(&state.store, &access, &name).await?;
    request.template = Some(name);
    let request = templates::create_request(
        &state.store,
        &state.secrets,
        state.sandboxes.settings(),
        &access,
        request,
    )
    .await?;
    audit.detail(format!(
        "image={} provider={} template={} version={}",
        request.image, request.provider, request.template, request.launch.template_version
    ));
    let sandbox = state.sandboxes.create(request).await?;
    audit.sandbox(&sandbox.id);
    Ok((StatusCode::CREATED, Json(sandbox)))
}
