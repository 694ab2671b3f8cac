//! `POST /api/v1/images/push`: a `docker save` archive in the body, loaded into the
//! engine of every ready docker worker (or of those `workers` names) as it streams
//! through; each worker's progress comes back as NDJSON (admin).

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;

use super::schemas::ErrorBody;
use super::{AdminScope, Authorized, Query};
use crate::api::{ApiState, AuditSlot};
use crate::error::ApiError;
use crate::fleet::PushEvent;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PushQuery {
    /// Worker ids, comma-separated; absent: every ready docker worker.
    #[serde(default)]
    pub workers: Option<String>,
    /// Only say which workers the push would go to (`{"workers": [...]}`), reading no
    /// body: a client checks this before it streams a large archive at a push that
    /// would be refused.
    #[serde(default)]
    pub dry_run: Option<bool>,
}

/// The workers a push would go to (`dry_run=true`).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct PushTargets {
    pub workers: Vec<String>,
}

/// Loads the images of a `docker save` archive (the body, `application/x-tar`, up to
/// 64 GiB) into the docker workers' engines, streamed through the mesh without being
/// stored (admin). NDJSON, a line per worker as its load starts (`loading`) and ends
/// (`loaded` with the images, or `failed` with why).
#[utoipa::path(post, path = "/api/v1/images/push", tag = "images", security(("api_key" = []), ("bearer" = [])),
    params(PushQuery), request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "The `docker save` archive (a tar; any content type is taken)"), responses(
    (status = 200, description = "Each worker's progress, a JSON object a line; with dry_run=true, the workers it would go to", content(
        (PushEvent = "application/x-ndjson"),
        (PushTargets = "application/json"),
    )),
    (status = 400, description = "No ready docker worker, or a named one that is not", body = ErrorBody),
    (status = 404, description = "A named worker that does not exist", body = ErrorBody),
))]
pub async fn push(
    _caller: Authorized<AdminScope>,
    State(state): State<ApiState>,
    Query(query): Query<PushQuery>,
    audit: AuditSlot,
    body: Body,
) -> Result<Response, ApiError> {
    let only: Vec<String> = query
        .workers
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .collect();
    if query.dry_run == Some(true) {
        let targets = state.fleet.push_targets(&only).await?;
        let workers = targets.into_iter().map(|(id, _)| id).collect();
        return Ok(axum::Json(PushTargets { workers }).into_response());
    }
    audit.detail(if only.is_empty() {
        "workers=all".to_owned()
    } else {
        format!("workers={}", only.join(","))
    });
    let archive = body
        .into_data_stream()
        .map(|chunk| chunk.map_err(|err| err.to_string()));
    let events = state.fleet.push_images(archive, &only).await?;
    Ok(super::ndjson::response(events))
}
