//! `GET /api/v1/audit` (records, oldest first) and `GET /api/v1/audit/verify` (walks
//! the hash chain); admin scope.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::schemas::ErrorBody;
use super::{AdminScope, Authorized, Query};
use crate::api::ApiState;
use crate::audit::Verification;
use crate::clock::now_ms;
use crate::error::ApiError;
use crate::sandboxes::rfc3339_millis;
use crate::store::AuditRow;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Unix milliseconds, or a duration back from now ("1h").
    #[serde(default)]
    pub since: Option<String>,
    /// At most this many records (1-100000, default 1000).
    #[serde(default)]
    pub limit: Option<i64>,
}

/// One record of the audit log's hash chain.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditRecord {
    pub seq: i64,
    /// RFC 3339 with milliseconds.
    pub time: String,
    pub actor: String,
    pub operation: String,
    pub worker_id: String,
    pub sandbox_id: String,
    pub detail: String,
    pub outcome: String,
    pub request_id: String,
    /// The team and user the call acted for (empty: none, e.g. a cluster key naming
    /// no team).
    pub team: String,
    pub user: String,
    pub hash: String,
}

impl From<AuditRow> for AuditRecord {
    fn from(row: AuditRow) -> Self {
        Self {
            time: rfc3339_millis(row.at_ms),
            seq: row.seq,
            actor: row.actor,
            operation: row.operation,
            worker_id: row.worker_id,
            sandbox_id: row.sandbox_id,
            detail: row.detail,
            outcome: row.outcome,
            request_id: row.request_id,
            team: row.team_id,
            user: row.user_id,
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

/// Audit records, oldest first (admin scope).
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", security(("api_key" = []), ("bearer" = [])), params(AuditQuery), responses(
    (status = 200, description = "Records", body = Vec<AuditRecord>),
    (status = 400, description = "A bad since or limit", body = ErrorBody),
))]
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

/// Walks the audit log's hash chain (admin scope).
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit", security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "The verdict", body = Verification)))]
pub async fn verify(
    _caller: Authorized<AdminScope>,
    State(state): State<ApiState>,
) -> Result<Json<Verification>, ApiError> {
    Ok(Json(state.audit.verify().await?))
}
