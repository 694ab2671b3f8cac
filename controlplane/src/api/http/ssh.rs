//! The SSH gateway's credentials over HTTP.
//!
//! - `POST /api/v1/sandboxes/{id}/ssh-token` (`{"ttl":"5m"}`, default 5 minutes, at
//!   most a day): a one-time SSH token for the sandbox, shown once; it is the SSH
//!   user name (`ssh -p 2222 TOKEN@host`).
//! - `GET /api/v1/ssh-keys` (`?removed=true` for removed ones too),
//!   `POST /api/v1/ssh-keys` (`{"public_key","name"}`) and
//!   `DELETE /api/v1/ssh-keys/{id}`: public keys registered to the caller's team (and
//!   user), which log in to that owner's sandboxes as `SANDBOX_ID@host`.
//!
//! Tokens and keys reach commands in sandboxes, so making them takes the exec scope;
//! listing keys takes read.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::schemas::ErrorBody;
use super::{Authorized, ExecScope, JsonBody, Path, Query, ReadScope};
use crate::api::{ApiState, AuditSlot};
use crate::error::ApiError;
use crate::sandboxes::parse_timeout;
use crate::ssh_access::{self, SshKeyView};

/// `POST /api/v1/sandboxes/{id}/ssh-token`'s body (optional).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SshTokenRequest {
    /// How long the token may wait for its login: "5m", "30s" or seconds; default 5m,
    /// at most 24h.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub ttl: Option<serde_json::Value>,
}

/// A one-time SSH token, shown once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SshTokenView {
    /// The SSH user name and the credential: `ssh -p PORT TOKEN@HOST`.
    pub token: String,
    pub sandbox_id: String,
    /// RFC 3339; the token opens one login before then.
    pub expires_at: String,
    /// The gateway's address (`host:port`); empty when the gateway is off.
    pub ssh_address: String,
    /// The command that logs in with it (empty when the gateway is off).
    pub ssh_command: String,
    /// The gateway's host key fingerprint, to check on the first connection.
    pub host_key_fingerprint: String,
    /// The gateway's host key (`ssh-ed25519 AAAA…`), for a `known_hosts` entry.
    pub host_key: String,
}

/// A one-time SSH token for the sandbox (exec scope).
#[utoipa::path(post, path = "/api/v1/sandboxes/{id}/ssh-token", tag = "ssh", security(("api_key" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id")),
    request_body(content = Option<SshTokenRequest>, content_type = "application/json"), responses(
    (status = 201, description = "The token (shown once)", body = SshTokenView),
    (status = 400, description = "A bad ttl", body = ErrorBody),
    (status = 404, description = "No such sandbox", body = ErrorBody),
))]
pub async fn token(
    Authorized { caller, access, .. }: Authorized<ExecScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    audit: AuditSlot,
    body: Bytes,
) -> Result<(StatusCode, Json<SshTokenView>), ApiError> {
    audit.sandbox(&id);
    let request: SshTokenRequest = if body.iter().all(u8::is_ascii_whitespace) {
        SshTokenRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|err| {
            ApiError::bad_request(format!("the body is not an SSH token request: {err}"))
        })?
    };
    let ttl = parse_timeout(request.ttl.as_ref())?;
    let issued =
        ssh_access::issue_token(&state.store, &state.sandboxes, &caller, &access, &id, ttl).await?;
    audit.detail(format!("expires {}", issued.expires_at));
    let (ssh_address, ssh_command, host_key_fingerprint, host_key) = match &state.ssh {
        Some(gateway) => {
            let address = gateway.address;
            let host = if address.ip().is_unspecified() {
                "HOST".to_owned()
            } else {
                address.ip().to_string()
            };
            (
                format!("{host}:{}", address.port()),
                format!("ssh -p {} {}@{host}", address.port(), issued.token),
                gateway.fingerprint.clone(),
                gateway.public_key.clone(),
            )
        }
        None => Default::default(),
    };
    Ok((
        StatusCode::CREATED,
        Json(SshTokenView {
            token: issued.token,
            sandbox_id: issued.sandbox_id,
            expires_at: issued.expires_at,
            ssh_address,
            ssh_command,
            host_key_fingerprint,
            host_key,
        }),
    ))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct KeysQuery {
    /// List removed keys too.
    #[serde(default)]
    pub removed: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SshKeyList {
    pub keys: Vec<SshKeyView>,
}

/// The SSH keys the caller's team (and user) registered (read scope).
#[utoipa::path(get, path = "/api/v1/ssh-keys", tag = "ssh", security(("api_key" = []), ("bearer" = [])),
    params(KeysQuery), responses(
    (status = 200, description = "Newest first", body = SshKeyList),
))]
pub async fn list(
    Authorized { access, .. }: Authorized<ReadScope>,
    State(state): State<ApiState>,
    Query(query): Query<KeysQuery>,
) -> Result<Json<SshKeyList>, ApiError> {
    let keys = ssh_access::list_keys(&state.store, &access, query.removed).await?;
    Ok(Json(SshKeyList { keys }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddKeyBody {
    /// One line of a `.pub` file: "ssh-ed25519 AAAA… comment" (ed25519 or ECDSA).
    pub public_key: String,
    /// A name to recognise it by (default: the key's comment).
    #[serde(default)]
    pub name: Option<String>,
}

/// Registers a public key to the caller's team and user (exec scope): it logs in as
/// `SANDBOX_ID@host` to their sandboxes.
#[utoipa::path(post, path = "/api/v1/ssh-keys", tag = "ssh", security(("api_key" = []), ("bearer" = [])),
    request_body = AddKeyBody, responses(
    (status = 201, description = "The key", body = SshKeyView),
    (status = 400, description = "Not an OpenSSH public key, or an RSA key", body = ErrorBody),
    (status = 409, description = "Registered already", body = ErrorBody),
))]
pub async fn add(
    Authorized { caller, access, .. }: Authorized<ExecScope>,
    State(state): State<ApiState>,
    audit: AuditSlot,
    JsonBody(body): JsonBody<AddKeyBody>,
) -> Result<(StatusCode, Json<SshKeyView>), ApiError> {
    let key = ssh_access::register_key(
        &state.store,
        &caller,
        &access,
        body.name.as_deref().unwrap_or_default(),
        &body.public_key,
    )
    .await?;
    audit.detail(format!("{} {}", key.id, key.fingerprint));
    Ok((StatusCode::CREATED, Json(key)))
}

/// Removes a key (exec scope): logins with it are refused from then on.
#[utoipa::path(delete, path = "/api/v1/ssh-keys/{id}", tag = "ssh", security(("api_key" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "SSH key id")), responses(
    (status = 200, description = "The removed key", body = SshKeyView),
    (status = 404, description = "No such key", body = ErrorBody),
))]
pub async fn remove(
    Authorized { access, .. }: Authorized<ExecScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    audit: AuditSlot,
) -> Result<Json<SshKeyView>, ApiError> {
    let key = ssh_access::remove_key(&state.store, &access, &id).await?;
    audit.detail(format!("{} {}", key.id, key.fingerprint));
    Ok(Json(key))
}
