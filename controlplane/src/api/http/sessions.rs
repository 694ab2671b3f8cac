//! `/sandboxes/{id}/sessions…`: a sandbox's interactive sessions (exec scope, like
//! exec): list them, look at one, kill one. Sessions are opened on the exec WebSocket
//! (`exec_ws.rs`) or the gRPC `Sandboxes.Session` call.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::schemas::ErrorBody;
use super::{Authorized, ExecScope, Path, Query};
use crate::api::{ApiState, AuditSlot};
use crate::error::ApiError;
use crate::sandboxes::{DEFAULT_KILL_SIGNAL, SessionInfo};

/// A session, with the fields of the gRPC `SessionInfo`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionView {
    pub session_id: String,
    pub sandbox_id: String,
    /// The command line as started.
    pub command: String,
    pub tty: bool,
    /// `running` or `exited`.
    pub state: String,
    /// Meaningful once `exited`.
    pub exit_code: i32,
    /// The signal that ended the command (`SIGKILL`, ...), or empty.
    pub signal: String,
    /// Unix milliseconds.
    pub started_at_ms: i64,
    /// Unix milliseconds; 0 while it runs.
    pub ended_at_ms: i64,
    /// Clients attached now.
    pub attached: u32,
    /// The offset the output has reached.
    pub output_offset: u64,
    /// The earliest offset still buffered (attach from here to miss nothing kept).
    pub buffer_start: u64,
    /// Started in the background.
    pub background: bool,
}

impl From<SessionInfo> for SessionView {
    fn from(info: SessionInfo) -> Self {
        Self {
            session_id: info.session_id,
            sandbox_id: info.sandbox_id,
            command: info.command,
            tty: info.tty,
            state: info.state,
            exit_code: info.exit_code,
            signal: info.signal,
            started_at_ms: info.started_at_ms,
            ended_at_ms: info.ended_at_ms,
            attached: info.attached,
            output_offset: info.output_offset,
            buffer_start: info.buffer_start,
            background: info.background,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionList {
    pub sessions: Vec<SessionView>,
}

/// A sandbox's sessions, running and exited but not yet collected (exec scope).
#[utoipa::path(get, path = "/api/v1/sandboxes/{id}/sessions", tag = "sessions", security(("api_key" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id")), responses(
    (status = 200, description = "The sessions", body = SessionList),
    (status = 404, description = "No such sandbox", body = ErrorBody),
    (status = 409, description = "The sandbox is not running", body = ErrorBody),
))]
pub async fn list(
    Authorized { access, .. }: Authorized<ExecScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<SessionList>, ApiError> {
    let sessions = state.sandboxes.list_sessions(&access, &id).await?;
    Ok(Json(SessionList {
        sessions: sessions.into_iter().map(SessionView::from).collect(),
    }))
}

/// One session of a sandbox (exec scope).
#[utoipa::path(get, path = "/api/v1/sandboxes/{id}/sessions/{session_id}", tag = "sessions", security(("api_key" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id"), ("session_id" = String, Path, description = "Session id")), responses(
    (status = 200, description = "The session", body = SessionView),
    (status = 404, description = "No such sandbox or session", body = ErrorBody),
    (status = 409, description = "The sandbox is not running", body = ErrorBody),
))]
pub async fn get(
    Authorized { access, .. }: Authorized<ExecScope>,
    State(state): State<ApiState>,
    Path((id, session_id)): Path<(String, String)>,
) -> Result<Json<SessionView>, ApiError> {
    let session = state
        .sandboxes
        .get_session(&access, &id, &session_id)
        .await?;
    Ok(Json(session.into()))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KillQuery {
    /// The signal to send: `SIGTERM`, `TERM` or `15` (default `SIGKILL`).
    #[serde(default)]
    pub signal: Option<String>,
}

/// Sends a signal (default SIGKILL) to a session's command; answers the session as it
/// is after (exec scope).
#[utoipa::path(delete, path = "/api/v1/sandboxes/{id}/sessions/{session_id}", tag = "sessions", security(("api_key" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id"), ("session_id" = String, Path, description = "Session id"), KillQuery), responses(
    (status = 200, description = "Signalled", body = SessionView),
    (status = 400, description = "An unknown signal", body = ErrorBody),
    (status = 404, description = "No such sandbox or session", body = ErrorBody),
    (status = 409, description = "The sandbox is not running", body = ErrorBody),
))]
pub async fn kill(
    Authorized { access, .. }: Authorized<ExecScope>,
    State(state): State<ApiState>,
    Path((id, session_id)): Path<(String, String)>,
    Query(query): Query<KillQuery>,
    audit: AuditSlot,
) -> Result<Json<SessionView>, ApiError> {
    let signal = query
        .signal
        .filter(|signal| !signal.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_KILL_SIGNAL.to_owned());
    audit.detail(format!("{session_id}: {signal}"));
    let session = state
        .sandboxes
        .kill_session(&access, &id, &session_id, &signal)
        .await?;
    Ok(Json(session.into()))
}
