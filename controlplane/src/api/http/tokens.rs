//! `POST /api/v1/tokens`: create a join token (admin scope).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;

use super::schemas::ErrorBody;
use super::{AdminScope, Authorized, JsonBody};
use crate::api::{ApiState, AuditSlot};
use crate::error::ApiError;
use crate::fleet::labels::Labels;
use crate::fleet::{IssuedJoinToken, JoinTokenRequest};

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenBody {
    #[serde(default)]
    pub worker_id: Option<String>,
    /// Go-style duration, e.g. "1h".
    #[serde(default)]
    pub ttl: Option<String>,
    #[serde(default)]
    pub uses: Option<u32>,
    /// The pool of the worker that enrolls with it (`[a-z0-9][a-z0-9-]{0,62}`);
    /// absent: `default`.
    #[serde(default)]
    pub pool: Option<String>,
    /// The labels of the worker that enrolls with it: at most 32; keys 1-63 of
    /// `[A-Za-z0-9._/-]`, values at most 63 of `[A-Za-z0-9._-]`.
    #[serde(default)]
    pub labels: Labels,
}

/// A join token a worker enrolls with (admin scope).
#[utoipa::path(post, path = "/api/v1/tokens", tag = "workers", security(("api_key" = []), ("bearer" = [])),
    request_body = CreateTokenBody, responses(
    (status = 201, description = "The token (shown once)", body = IssuedJoinToken),
    (status = 400, description = "A bad body, ttl, uses, pool or label", body = ErrorBody),
))]
pub async fn create(
    Authorized { caller, .. }: Authorized<AdminScope>,
    State(state): State<ApiState>,
    audit: AuditSlot,
    JsonBody(body): JsonBody<CreateTokenBody>,
) -> Result<(StatusCode, Json<IssuedJoinToken>), ApiError> {
    let request = JoinTokenRequest {
        worker_id: body.worker_id.filter(|id| !id.is_empty()),
        ttl: parse_optional_duration(body.ttl.as_deref())?,
        uses: body.uses,
        pool: body.pool.filter(|pool| !pool.is_empty()),
        labels: body.labels,
    };
    let issued = state
        .fleet
        .create_join_token(request, &caller.key_id)
        .await?;
    // the token itself is a secret: only its id goes in the record
    audit.detail(format!(
        "jti={} worker_id={} uses={} pool={}",
        issued.jti,
        issued.worker_id.as_deref().unwrap_or("any"),
        issued.uses,
        issued.pool
    ));
    Ok((StatusCode::CREATED, Json(issued)))
}

/// A Go-style duration ("30m", "1h30m"); empty means none.
pub fn parse_optional_duration(
    value: Option<&str>,
) -> Result<Option<std::time::Duration>, ApiError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(text) => humantime::parse_duration(text)
            .map(Some)
            .map_err(|err| ApiError::bad_request(format!("invalid duration {text:?}: {err}"))),
    }
}
