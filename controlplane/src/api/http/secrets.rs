//! `/api/v1/secrets`: the caller's team's secrets, write-only.
//!
//! - `GET /api/v1/secrets`: names and times, never values (read scope).
//! - `PUT /api/v1/secrets/{name}` with `{"value": "…"}`: sets it (201 made, 200
//!   replaced; write scope).
//! - `DELETE /api/v1/secrets/{name}` (write scope).
//!
//! A template names the secrets its sandboxes get as environment variables.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;

use super::schemas::{ErrorBody, StatusBody};
use super::{Authorized, JsonBody, Path, ReadScope, WriteScope};
use crate::api::{ApiState, AuditSlot};
use crate::error::ApiError;
use crate::secrets::SecretView;

/// `PUT /api/v1/secrets/{name}`'s body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSecretBody {
    /// The value (at most 64 KiB of UTF-8); never shown again.
    pub value: String,
}

// by hand: a derived Debug would print the value
impl std::fmt::Debug for SetSecretBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetSecretBody").finish_non_exhaustive()
    }
}

/// Sets a secret of the caller's team (write scope).
#[utoipa::path(put, path = "/api/v1/secrets/{name}", tag = "secrets", security(("api_key" = []), ("bearer" = [])),
    params(("name" = String, Path, description = "Secret name (an environment variable's)")),
    request_body = SetSecretBody, responses(
    (status = 201, description = "Made", body = SecretView),
    (status = 200, description = "Its value replaced", body = SecretView),
    (status = 400, description = "A bad name or value", body = ErrorBody),
))]
pub async fn set(
    Authorized { access, .. }: Authorized<WriteScope>,
    State(state): State<ApiState>,
    Path(name): Path<String>,
    audit: AuditSlot,
    JsonBody(body): JsonBody<SetSecretBody>,
) -> Result<(StatusCode, Json<SecretView>), ApiError> {
    let (created, view) = state.secrets.set(&access, &name, &body.value).await?;
    audit.detail(format!(
        "secret={} {}",
        view.name,
        if created { "created" } else { "replaced" }
    ));
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)))
}

/// The caller's team's secrets: names and times, never values (read scope).
#[utoipa::path(get, path = "/api/v1/secrets", tag = "secrets", security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "Secrets", body = Vec<SecretView>)))]
pub async fn list(
    Authorized { access, .. }: Authorized<ReadScope>,
    State(state): State<ApiState>,
) -> Result<Json<Vec<SecretView>>, ApiError> {
    Ok(Json(state.secrets.list(&access).await?))
}

/// Deletes a secret (write scope); sandboxes that have it keep it.
#[utoipa::path(delete, path = "/api/v1/secrets/{name}", tag = "secrets", security(("api_key" = []), ("bearer" = [])),
    params(("name" = String, Path, description = "Secret name")), responses(
    (status = 200, description = "`{\"status\":\"deleted\"}`", body = StatusBody),
    (status = 404, description = "No such secret in the team", body = ErrorBody),
))]
pub async fn delete(
    Authorized { access, .. }: Authorized<WriteScope>,
    State(state): State<ApiState>,
    Path(name): Path<String>,
    audit: AuditSlot,
) -> Result<Json<StatusBody>, ApiError> {
    audit.detail(format!("secret={name}"));
    state.secrets.delete(&access, &name).await?;
    Ok(Json(StatusBody::new("deleted")))
}
