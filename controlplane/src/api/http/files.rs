//! `/sandboxes/{id}/files…`: StacyVM's file calls, plus `PUT /files?path=&mode=` which
//! streams a raw body of any size (the JSON write carries text, so it is capped).
//! Reads stream the file back as `application/octet-stream`; nothing is buffered whole.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::Value;

use super::schemas::{ErrorBody, StatusBody, Written};
use super::{Authorized, JsonBody, Path, Query, ReadScope, WriteScope};
use crate::api::{ApiState, AuditSlot};
use crate::error::ApiError;
use crate::sandboxes::FileInfoView;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PathQuery {
    /// The file or directory in the sandbox.
    #[serde(default)]
    pub path: Option<String>,
    /// Delete a directory with what it holds.
    #[serde(default)]
    pub recursive: Option<bool>,
    /// The new file's mode, an octal string like `0644` (upload).
    #[serde(default)]
    pub mode: Option<String>,
}

pub fn required(path: Option<String>) -> Result<String, ApiError> {
    path.filter(|p| !p.is_empty())
        .ok_or_else(|| ApiError::bad_request("the path parameter is required"))
}

/// `"0644"`, `"644"`, `"0o755"` (octal strings) or a number of permission bits.
pub fn parse_mode(value: Option<&Value>) -> Result<u32, ApiError> {
    let bad = || ApiError::bad_request("mode must be an octal string like \"0644\"");
    let mode = match value {
        None | Some(Value::Null) => return Ok(0o644),
        Some(Value::String(text)) => {
            let digits = text.trim().trim_start_matches("0o");
            if digits.is_empty() {
                return Ok(0o644);
            }
            u32::from_str_radix(digits, 8).map_err(|_| bad())?
        }
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(bad)?,
        Some(_) => return Err(bad()),
    };
    if mode > 0o7777 {
        return Err(bad());
    }
    Ok(mode)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct WriteBody {
    pub path: String,
    #[serde(default)]
    pub content: String,
    /// An octal string like `"0644"` or a number of permission bits.
    #[serde(default)]
    #[schema(schema_with = super::schemas::string_or_number, required = false)]
    pub mode: Option<Value>,
    /// `base64` for binary content (a Berth addition); default text.
    #[serde(default)]
    pub encoding: Option<String>,
}

/// Writes a file from JSON (text, or base64 with `encoding`), at most 64 MiB (write scope).
#[utoipa::path(post, path = "/api/v1/sandboxes/{id}/files", tag = "files", security(("api_key" = []), ("bearer" = [])), params(("id" = String, Path, description = "Sandbox id")),
    request_body = WriteBody, responses(
    (status = 200, description = "Written", body = Written),
    (status = 400, description = "A bad body, path, mode or encoding", body = ErrorBody),
    (status = 404, description = "No such sandbox", body = ErrorBody),
))]
pub async fn write_json(
    Authorized { access, .. }: Authorized<WriteScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    audit: AuditSlot,
    JsonBody(body): JsonBody<WriteBody>,
) -> Result<Json<Written>, ApiError> {
    let path = required(Some(body.path))?;
    let mode = parse_mode(body.mode.as_ref())?;
    audit.detail(path.clone());
    let data = decode_content(body.encoding.as_deref(), body.content)?;
    let chunks = data
        .chunks(64 * 1024)
        .map(|chunk| Ok(chunk.to_vec()))
        .collect::<Vec<_>>();
    let size = state
        .sandboxes
        .write_file(&access, &id, &path, mode, futures::stream::iter(chunks))
        .await?;
    Ok(Json(Written {
        status: "written",
        size,
    }))
}

/// The bytes a JSON write carries: its `content` as text, or decoded from base64.
pub fn decode_content(encoding: Option<&str>, content: String) -> Result<Vec<u8>, ApiError> {
    match encoding {
        None | Some("") | Some("utf-8") | Some("text") => Ok(content.into_bytes()),
        Some("base64") => base64::engine::general_purpose::STANDARD
            .decode(content.trim())
            .map_err(|err| ApiError::bad_request(format!("content is not valid base64: {err}"))),
        Some(other) => Err(ApiError::bad_request(format!(
            "encoding {other:?}: expected text or base64"
        ))),
    }
}

/// Streams the request body into the file: no size cap (write scope).
#[utoipa::path(put, path = "/api/v1/sandboxes/{id}/files", tag = "files", security(("api_key" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id"), PathQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"), responses(
    (status = 200, description = "Written", body = Written),
    (status = 400, description = "No path, or a bad mode", body = ErrorBody),
    (status = 404, description = "No such sandbox", body = ErrorBody),
))]
pub async fn upload(
    Authorized { access, .. }: Authorized<WriteScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    audit: AuditSlot,
    Query(query): Query<PathQuery>,
    body: Body,
) -> Result<Json<Written>, ApiError> {
    let path = required(query.path)?;
    let mode = parse_mode(query.mode.map(Value::String).as_ref())?;
    audit.detail(path.clone());
    let data = body.into_data_stream().map(|chunk| {
        chunk
            .map(|bytes| bytes.to_vec())
            .map_err(|err| err.to_string())
    });
    let size = state
        .sandboxes
        .write_file(&access, &id, &path, mode, data)
        .await?;
    Ok(Json(Written {
        status: "written",
        size,
    }))
}

/// Reads a file, streamed back as bytes (read scope).
#[utoipa::path(get, path = "/api/v1/sandboxes/{id}/files", tag = "files", security(("api_key" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id"), PathQuery), responses(
    (status = 200, description = "The file's bytes", body = Vec<u8>,
        content_type = "application/octet-stream"),
    (status = 400, description = "No path", body = ErrorBody),
    (status = 404, description = "No such sandbox or file", body = ErrorBody),
))]
pub async fn read(
    Authorized { access, .. }: Authorized<ReadScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(query): Query<PathQuery>,
) -> Result<Response, ApiError> {
    let path = required(query.path)?;
    let chunks = state.sandboxes.read_file(&access, &id, &path).await?;
    // an error after the first byte can only abort the body, which the client sees
    let body = chunks.map(|chunk| chunk.map_err(|err| std::io::Error::other(err.to_string())));
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(body),
    )
        .into_response())
}

/// Deletes a file, or a directory with `recursive=true` (write scope).
#[utoipa::path(delete, path = "/api/v1/sandboxes/{id}/files", tag = "files", security(("api_key" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id"), PathQuery), responses(
    (status = 200, description = "`{\"status\":\"deleted\"}`", body = StatusBody),
    (status = 400, description = "No path", body = ErrorBody),
    (status = 404, description = "No such sandbox or file", body = ErrorBody),
))]
pub async fn delete(
    Authorized { access, .. }: Authorized<WriteScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    audit: AuditSlot,
    Query(query): Query<PathQuery>,
) -> Result<Json<StatusBody>, ApiError> {
    let path = required(query.path)?;
    audit.detail(path.clone());
    state
        .sandboxes
        .delete_file(&access, &id, &path, query.recursive.unwrap_or(false))
        .await?;
    Ok(Json(StatusBody::new("deleted")))
}

/// What a directory holds (read scope); `path` defaults to `/`.
#[utoipa::path(get, path = "/api/v1/sandboxes/{id}/files/list", tag = "files", security(("api_key" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id"), PathQuery), responses(
    (status = 200, description = "Entries", body = Vec<FileInfoView>),
    (status = 400, description = "A bad query", body = ErrorBody),
    (status = 404, description = "No such sandbox or directory", body = ErrorBody),
))]
pub async fn list(
    Authorized { access, .. }: Authorized<ReadScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(query): Query<PathQuery>,
) -> Result<Json<Vec<FileInfoView>>, ApiError> {
    let path = query
        .path
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/".to_owned());
    let files = state.sandboxes.list_files(&access, &id, &path).await?;
    Ok(Json(files.into_iter().map(FileInfoView::from).collect()))
}

/// One file's size, mode and time (read scope).
#[utoipa::path(get, path = "/api/v1/sandboxes/{id}/files/stat", tag = "files", security(("api_key" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id"), PathQuery), responses(
    (status = 200, description = "The file", body = FileInfoView),
    (status = 400, description = "No path", body = ErrorBody),
    (status = 404, description = "No such sandbox or file", body = ErrorBody),
))]
pub async fn stat(
    Authorized { access, .. }: Authorized<ReadScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(query): Query<PathQuery>,
) -> Result<Json<FileInfoView>, ApiError> {
    let path = required(query.path)?;
    Ok(Json(
        state.sandboxes.stat_file(&access, &id, &path).await?.into(),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GlobQuery {
    /// A glob such as `/tmp/*.txt`; required.
    #[serde(default)]
    pub pattern: Option<String>,
}

/// Paths matching a glob (read scope).
#[utoipa::path(get, path = "/api/v1/sandboxes/{id}/files/glob", tag = "files", security(("api_key" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id"), GlobQuery), responses(
    (status = 200, description = "Matching paths", body = Vec<String>),
    (status = 400, description = "No pattern", body = ErrorBody),
    (status = 404, description = "No such sandbox", body = ErrorBody),
))]
pub async fn glob(
    Authorized { access, .. }: Authorized<ReadScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(query): Query<GlobQuery>,
) -> Result<Json<Vec<String>>, ApiError> {
    let pattern = query
        .pattern
        .filter(|p| !p.is_empty())
        .ok_or_else(|| ApiError::bad_request("the pattern parameter is required"))?;
    Ok(Json(state.sandboxes.glob(&access, &id, &pattern).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct MoveBody {
    pub old_path: String,
    pub new_path: String,
}

/// Moves (renames) a file (write scope).
#[utoipa::path(post, path = "/api/v1/sandboxes/{id}/files/move", tag = "files", security(("api_key" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id")), request_body = MoveBody, responses(
    (status = 200, description = "`{\"status\":\"moved\"}`", body = StatusBody),
    (status = 400, description = "A bad body or path", body = ErrorBody),
    (status = 404, description = "No such sandbox or file", body = ErrorBody),
))]
pub async fn move_file(
    Authorized { access, .. }: Authorized<WriteScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    audit: AuditSlot,
    JsonBody(body): JsonBody<MoveBody>,
) -> Result<Json<StatusBody>, ApiError> {
    let old_path = required(Some(body.old_path))?;
    let new_path = required(Some(body.new_path))?;
    audit.detail(format!("{old_path} -> {new_path}"));
    state
        .sandboxes
        .move_file(&access, &id, &old_path, &new_path)
        .await?;
    Ok(Json(StatusBody::new("moved")))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ChmodBody {
    pub path: String,
    /// An octal string like `"0755"` or a number of permission bits.
    #[schema(schema_with = super::schemas::string_or_number)]
    pub mode: Value,
}

/// Changes a file's mode (write scope).
#[utoipa::path(post, path = "/api/v1/sandboxes/{id}/files/chmod", tag = "files", security(("api_key" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id")), request_body = ChmodBody, responses(
    (status = 200, description = "`{\"status\":\"chmod applied\"}`", body = StatusBody),
    (status = 400, description = "A bad body, path or mode", body = ErrorBody),
    (status = 404, description = "No such sandbox or file", body = ErrorBody),
))]
pub async fn chmod(
    Authorized { access, .. }: Authorized<WriteScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    audit: AuditSlot,
    JsonBody(body): JsonBody<ChmodBody>,
) -> Result<Json<StatusBody>, ApiError> {
    let path = required(Some(body.path))?;
    let mode = parse_mode(Some(&body.mode))?;
    audit.detail(format!("{path} {mode:04o}"));
    state.sandboxes.chmod(&access, &id, &path, mode).await?;
    Ok(Json(StatusBody::new("chmod applied")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn modes_are_octal() {
        assert_eq!(parse_mode(Some(&json!("0644"))).unwrap(), 0o644);
        assert_eq!(parse_mode(Some(&json!("755"))).unwrap(), 0o755);
        assert_eq!(parse_mode(Some(&json!("0o700"))).unwrap(), 0o700);
        assert_eq!(parse_mode(None).unwrap(), 0o644);
        assert_eq!(parse_mode(Some(&json!(420))).unwrap(), 0o644);
        assert!(parse_mode(Some(&json!("999"))).is_err());
        assert!(parse_mode(Some(&json!("77777"))).is_err());
        assert!(parse_mode(Some(&json!(true))).is_err());
    }
}
