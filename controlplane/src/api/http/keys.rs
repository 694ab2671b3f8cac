//! `/api/v1/keys` (admin scope): create an API key (answered in full once), list
//! keys, look at one, revoke one. No answer ever carries a key's hash, and only the
//! create answer carries the key itself (the audit record names the key's id).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::schemas::ErrorBody;
use super::{Authorized, JsonBody, Path, TeamAdminScope};
use crate::api::{ApiState, AuditSlot};
use crate::api_keys::{KeyView, NewKey, manage};
use crate::error::ApiError;
use crate::sandboxes::rfc3339;

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyBody {
    /// A name to recognise it by (the key's id when empty).
    #[serde(default)]
    pub name: Option<String>,
    /// Any of read, write, exec, admin (admin allows everything).
    pub scopes: Vec<String>,
    /// How long it is valid, e.g. "30d", "720h"; never expires when absent.
    #[serde(default)]
    pub expires: Option<String>,
    /// The team it is bound to; absent: the creator's (a cluster admin's: none, a
    /// cluster key that sees every team).
    #[serde(default)]
    pub team: Option<String>,
    /// The user of that team it acts as.
    #[serde(default)]
    pub user: Option<String>,
}

/// A key as listed (times RFC 3339; never its secret or hash).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiKeyView {
    pub id: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
    /// `null`: a cluster key.
    pub team: Option<String>,
    pub user: Option<String>,
    /// cluster-admin, cluster, team-admin or member.
    pub role: String,
}

impl From<KeyView> for ApiKeyView {
    fn from(view: KeyView) -> Self {
        Self {
            team: view.team,
            user: view.user,
            role: view.role.as_str().to_owned(),
            id: view.id,
            name: view.name,
            scopes: view.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
            created_at: rfc3339(view.created_at),
            expires_at: view.expires_at.map(rfc3339),
            last_used_at: view.last_used_at.map(rfc3339),
            revoked_at: view.revoked_at.map(rfc3339),
        }
    }
}

/// A key just made: `key` is shown this once and cannot be read again.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedKeyView {
    pub id: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub team: Option<String>,
    pub user: Option<String>,
    pub role: String,
    /// The key in full (`berth_<id>_<secret>`).
    pub key: String,
}

/// Creates an API key (admin scope); the key is in the answer, once.
#[utoipa::path(post, path = "/api/v1/keys", tag = "keys", security(("api_key" = []), ("bearer" = [])),
    request_body = CreateKeyBody, responses(
    (status = 201, description = "The key (shown once)", body = CreatedKeyView),
    (status = 400, description = "An unknown scope, no scopes, a bad expiry or name", body = ErrorBody),
    (status = 403, description = "A team admin minting for another team", body = ErrorBody),
    (status = 404, description = "An unknown team or user", body = ErrorBody),
))]
pub async fn create(
    Authorized { caller, .. }: Authorized<TeamAdminScope>,
    State(state): State<ApiState>,
    audit: AuditSlot,
    JsonBody(body): JsonBody<CreateKeyBody>,
) -> Result<(StatusCode, Json<CreatedKeyView>), ApiError> {
    let request = NewKey::parse(body.name.as_deref(), &body.scopes, body.expires.as_deref())?
        .for_owner(body.team.as_deref(), body.user.as_deref());
    let created = manage::create(&state.store, &caller, request).await?;
    let view = ApiKeyView::from(created.view);
    // the key is a secret: the record names its id and what it may do
    audit.detail(format!(
        "key={} scopes={} expires_at={} team={} user={}",
        view.id,
        view.scopes.join(","),
        view.expires_at.as_deref().unwrap_or("never"),
        view.team.as_deref().unwrap_or("-"),
        view.user.as_deref().unwrap_or("-"),
    ));
    Ok((
        StatusCode::CREATED,
        Json(CreatedKeyView {
            id: view.id,
            name: view.name,
            scopes: view.scopes,
            created_at: view.created_at,
            expires_at: view.expires_at,
            team: view.team,
            user: view.user,
            role: view.role,
            key: created.key,
        }),
    ))
}

/// Every API key, revoked and expired ones included, oldest first (admin scope).
#[utoipa::path(get, path = "/api/v1/keys", tag = "keys", security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "Keys", body = Vec<ApiKeyView>)))]
pub async fn list(
    Authorized { caller, .. }: Authorized<TeamAdminScope>,
    State(state): State<ApiState>,
) -> Result<Json<Vec<ApiKeyView>>, ApiError> {
    let keys = manage::list(&state.store, &caller).await?;
    Ok(Json(keys.into_iter().map(ApiKeyView::from).collect()))
}

/// One API key (admin scope).
#[utoipa::path(get, path = "/api/v1/keys/{id}", tag = "keys", security(("api_key" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "Key id")), responses(
    (status = 200, description = "The key", body = ApiKeyView),
    (status = 404, description = "No such key", body = ErrorBody),
))]
pub async fn get(
    Authorized { caller, .. }: Authorized<TeamAdminScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<ApiKeyView>, ApiError> {
    Ok(Json(manage::get(&state.store, &caller, &id).await?.into()))
}

/// Revokes an API key (admin scope): refused at once on this control plane, within
/// the key cache window (5 s) on the others. Revoking a revoked key answers it
/// unchanged; the last usable admin key cannot be revoked (409).
#[utoipa::path(delete, path = "/api/v1/keys/{id}", tag = "keys", security(("api_key" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "Key id")), responses(
    (status = 200, description = "The key, revoked", body = ApiKeyView),
    (status = 404, description = "No such key", body = ErrorBody),
    (status = 409, description = "It is the last usable admin key", body = ErrorBody),
))]
pub async fn revoke(
    Authorized { caller, .. }: Authorized<TeamAdminScope>,
    State(state): State<ApiState>,
    audit: AuditSlot,
    Path(id): Path<String>,
) -> Result<Json<ApiKeyView>, ApiError> {
    audit.detail(format!("key={id}"));
    let view = manage::revoke(&state.store, &state.api_keys, &caller, &id).await?;
    Ok(Json(view.into()))
}
