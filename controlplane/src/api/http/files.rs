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
use serde_json::{Value, json};

use super::{Authorized, JsonBody, Path, Query, ReadScope, WriteScope};
use crate::api::{ApiState, AuditSlot};
use crate::error::ApiError;
use crate::sandboxes::FileInfoView;

#[derive(Debug, Deserialize)]
pub struct PathQuery {
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub recursive: Option<bool>,
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

#[derive(Debug, Deserialize)]
pub struct WriteBody {
    pub path: String,
    #[serde(default)]
    pub content: String,
    #[serde(default)]
    pub mode: Option<Value>,
    /// `base64` for binary content (a Berth addition); default text.
    #[serde(default)]
    pub encoding: Option<String>,
}

pub async fn write_json(
    _caller: Authorized<WriteScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    audit: AuditSlot,
    JsonBody(body): JsonBody<WriteBody>,
) -> Result<Json<Value>, ApiError> {
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
        .write_file(&id, &path, mode, futures::stream::iter(chunks))
        .await?;
    Ok(Json(json!({"status": "written", "size": size})))
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

/// Streams the request body into the file: no size cap.
pub async fn upload(
    _caller: Authorized<WriteScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    audit: AuditSlot,
    Query(query): Query<PathQuery>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let path = required(query.path)?;
    let mode = parse_mode(query.mode.map(Value::String).as_ref())?;
    audit.detail(path.clone());
    let data = body.into_data_stream().map(|chunk| {
        chunk
            .map(|bytes| bytes.to_vec())
            .map_err(|err| err.to_string())
    });
    let size = state.sandboxes.write_file(&id, &path, mode, data).await?;
    Ok(Json(json!({"status": "written", "size": size})))
}

pub async fn read(
    _caller: Authorized<ReadScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(query): Query<PathQuery>,
) -> Result<Response, ApiError> {
    let path = required(query.path)?;
    let chunks = state.sandboxes.read_file(&id, &path).await?;
    // an error after the first byte can only abort the body, which the client sees
    let body = chunks.map(|chunk| chunk.map_err(|err| std::io::Error::other(err.to_string())));
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(body),
    )
        .into_response())
}

pub async fn delete(
    _caller: Authorized<WriteScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    audit: AuditSlot,
    Query(query): Query<PathQuery>,
) -> Result<Json<Value>, ApiError> {
    let path = required(query.path)?;
    audit.detail(path.clone());
    state
        .sandboxes
        .delete_file(&id, &path, query.recursive.unwrap_or(false))
        .await?;
    Ok(Json(json!({"status": "deleted"})))
}

pub async fn list(
    _caller: Authorized<ReadScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(query): Query<PathQuery>,
) -> Result<Json<Vec<FileInfoView>>, ApiError> {
    let path = query
        .path
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/".to_owned());
    let files = state.sandboxes.list_files(&id, &path).await?;
    Ok(Json(files.into_iter().map(FileInfoView::from).collect()))
}

pub async fn stat(
    _caller: Authorized<ReadScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(query): Query<PathQuery>,
) -> Result<Json<FileInfoView>, ApiError> {
    let path = required(query.path)?;
    Ok(Json(state.sandboxes.stat_file(&id, &path).await?.into()))
}

#[derive(Debug, Deserialize)]
pub struct GlobQuery {
    #[serde(default)]
    pub pattern: Option<String>,
}

pub async fn glob(
    _caller: Authorized<ReadScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(query): Query<GlobQuery>,
) -> Result<Json<Vec<String>>, ApiError> {
    let pattern = query
        .pattern
        .filter(|p| !p.is_empty())
        .ok_or_else(|| ApiError::bad_request("the pattern parameter is required"))?;
    Ok(Json(state.sandboxes.glob(&id, &pattern).await?))
}

#[derive(Debug, Deserialize)]
pub struct MoveBody {
    pub old_path: String,
    pub new_path: String,
}

pub async fn move_file(
    _caller: Authorized<WriteScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    audit: AuditSlot,
    JsonBody(body): JsonBody<MoveBody>,
) -> Result<Json<Value>, ApiError> {
    let old_path = required(Some(body.old_path))?;
    let new_path = required(Some(body.new_path))?;
    audit.detail(format!("{old_path} -> {new_path}"));
    state.sandboxes.move_file(&id, &old_path, &new_path).await?;
    Ok(Json(json!({"status": "moved"})))
}

#[derive(Debug, Deserialize)]
pub struct ChmodBody {
    pub path: String,
    pub mode: Value,
}

pub async fn chmod(
    _caller: Authorized<WriteScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    audit: AuditSlot,
    JsonBody(body): JsonBody<ChmodBody>,
) -> Result<Json<Value>, ApiError> {
    let path = required(Some(body.path))?;
    let mode = parse_mode(Some(&body.mode))?;
    audit.detail(format!("{path} {mode:04o}"));
    state.sandboxes.chmod(&id, &path, mode).await?;
    Ok(Json(json!({"status": "chmod applied"})))
}

#[cfg(test)]
mod tests {
    use super::*;

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
