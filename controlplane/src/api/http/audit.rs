//! `GET /api/v1/audit` (records, oldest first) and `GET /api/v1/audit/verify` (walks
//! the hash chain); admin scope.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::{AdminScope, Authorized, Query};
use crate::api::ApiState;
use crate::audit::Verification;
use crate::clock::now_ms;
use crate::error::ApiError;
use crate::sandboxes::rfc3339;
use crate::store::AuditRow;

#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    /// Unix milliseconds, or a duration back from now ("1h").
    #[serde(default)]
    pub since: Option<String>,
    #[serde(default)]
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct AuditRecord {
    pub seq: i64,
    pub time: String,
    pub at_ms: i64,
    pub actor: String,
    pub operation: String,
    pub worker_id: String,
    pub sandbox_id: String,
    pub detail: String,
    pub outcome: String,
    pub request_id: String,
    pub hash: String,
}

impl From<AuditRow> for AuditRecord {
    fn from(row: AuditRow) -> Self {
        Self {
            time: rfc3339(row.at_ms / 1000),
            seq: row.seq,
            at_ms: row.at_ms,
            actor: row.actor,
            operation: row.operation,
            worker_id: row.worker_id,
            sandbox_id: row.sandbox_id,
            detail: row.detail,
            outcome: row.outcome,
            request_id: row.request_id,
            hash: row.hash,
        }
    }
}

pub fn since_ms(since: Option<&str>) -> Result<i64, ApiError> {
    let Some(text) = since.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(0);
    };
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    let ago = humantime::parse_duration(text).map_err(|_| {
        ApiError::bad_request(format!(
            "since {text:?}: expected unix milliseconds or a duration like 1h"
        ))
    })?;
    Ok(now_ms() - i64::try_from(ago.as_millis()).unwrap_or(i64::MAX))
}

pub async fn list(
    _caller: Authorized<AdminScope>,
    State(state): State<ApiState>,
    Query(query): Query<AuditQuery>,
) -> Result<Json<Vec<AuditRecord>>, ApiError> {
    let since = since_ms(query.since.as_deref())?;
    let limit = query.limit.unwrap_or(1000).clamp(1, 100_000);
    let rows = state.audit.list(since, limit).await?;
    Ok(Json(rows.into_iter().map(AuditRecord::from).collect()))
}

pub async fn verify(
    _caller: Authorized<AdminScope>,
    State(state): State<ApiState>,
) -> Result<Json<Verification>, ApiError> {
    Ok(Json(state.audit.verify().await?))
}
