//! Auditing at the edge: a middleware that, for every mutating HTTP or gRPC call,
//! hands the handler an `AuditSlot` to note who called (the API key id) and what was
//! asked (a command line, a path), and after the response appends one record with the
//! outcome to the audit log. Reads are not recorded, except a read refused because
//! its key expired or was revoked (401 naming the key: whoever still holds such a key
//! is worth knowing about); a key nobody knows is not recorded, so junk cannot fill
//! the log; nor is a call refused because its key is over its rate limit (the key
//! could send those as fast as it likes). While the log is behind (records
//! of answered calls the store refused, `audit.rs`), mutating calls are refused before
//! they run (507 on a full disk, else 503); the refusals themselves are not recorded.
//! Session streams make records of their own as they go ([`session`]).

mod session;

use std::sync::{Arc, Mutex};

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, Response, StatusCode};
use axum::middleware::Next;

use super::ApiState;
use super::auth::presented_key;
use crate::audit::AuditEntry;
use crate::error::{ApiError, ErrorCode};

pub use session::{SessionAudit, SessionEnd};

/// What a handler notes for the audit record of its call.
#[derive(Debug, Clone, Default)]
pub struct AuditSlot(Arc<Mutex<Noted>>);

#[derive(Debug, Default)]
struct Noted {
    actor: Option<String>,
    team_id: String,
    user_id: String,
    sandbox_id: Option<String>,
    detail: Option<String>,
    /// The call is not recorded.
    left_out: bool,
}

impl AuditSlot {
    fn with<R>(&self, f: impl FnOnce(&mut Noted) -> R) -> R {
        let mut noted = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut noted)
    }

    pub fn actor(&self, key_id: &str) {
        self.with(|n| n.actor = Some(format!("key:{key_id}")));
    }

    /// The team and user the caller acts for (empty: none).
    pub fn acting(&self, team_id: &str, user_id: &str) {
        self.with(|n| {
            n.team_id = team_id.to_owned();
            n.user_id = user_id.to_owned();
        });
    }

    pub fn sandbox(&self, sandbox_id: &str) {
        self.with(|n| n.sandbox_id = Some(sandbox_id.to_owned()));
    }

    /// What was asked; never a secret or a body.
    pub fn detail(&self, detail: impl Into<String>) {
        self.with(|n| n.detail = Some(detail.into()));
    }

    /// Leaves this call out of the log: a refusal its caller may repeat at will (a key
    /// over its rate limit), which would otherwise fill the log at the caller's pace.
    pub fn leave_out(&self) {
        self.with(|n| n.left_out = true);
    }
}

/// Handlers take the slot of their call (a detached one outside the middleware).
impl<S: Send + Sync> FromRequestParts<S> for AuditSlot {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<AuditSlot>()
            .cloned()
            .unwrap_or_default())
    }
}

/// gRPC calls that change something. (`Sandboxes/Session` is not among them: a session
/// stream makes records of its own as it goes, see [`session`].)
const MUTATING_GRPC: &[&str] = &[
    "/berth.v1.Sandboxes/Create",
    "/berth.v1.Sandboxes/Destroy",
    "/berth.v1.Sandboxes/Extend",
    "/berth.v1.Sandboxes/Exec",
    "/berth.v1.Sandboxes/ExecStream",
    "/berth.v1.Sandboxes/WriteFile",
    "/berth.v1.Sandboxes/DeleteFile",
    "/berth.v1.Sandboxes/MoveFile",
    "/berth.v1.Sandboxes/Chmod",
    "/berth.v1.Sandboxes/KillSession",
    // not a change, but a way into the sandbox, like a session
    "/berth.v1.Sandboxes/OpenPort",
    "/berth.v1.Admin/CreateJoinToken",
    "/berth.v1.Admin/CreateApiKey",
    "/berth.v1.Admin/RevokeApiKey",
];

/// The WebSocket route `berth sandbox port-forward` opens a tunnel on.
const PORT_TUNNEL: &str = "/api/v1/sandboxes/{id}/ports/{port}/ws";

/// The record's operation name, or `None` for a call that changes nothing (a port
/// tunnel, a way in, is recorded all the same).
fn operation(method: &Method, path: &str, template: Option<&str>) -> Option<String> {
    if path.starts_with("/berth.v1.") {
        return MUTATING_GRPC
            .contains(&path)
            .then(|| format!("grpc {path}"));
    }
    let template = template?;
    // a port tunnel changes nothing either, but is a way into the sandbox
    if *method == Method::GET && template == PORT_TUNNEL {
        return Some(format!("{method} {template}"));
    }
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    // questions asked with POST, which change nothing
    if matches!(
        template,
        "/api/v1/sandboxes/admission" | "/api/v1/providers/test"
    ) {
        return None;
    }
    Some(format!("{method} {template}"))
}

/// The `{id}` of a `/api/v1/sandboxes/{id}…` path.
fn sandbox_in_path(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/api/v1/sandboxes/")?;
    let id = rest.split('/').next()?;
    (!id.is_empty() && id != "admission").then(|| id.to_owned())
}

fn outcome<B>(response: &Response<B>) -> String {
    let status = response.status();
    // 101: a WebSocket upgrade went through
    if !status.is_success() && status != StatusCode::SWITCHING_PROTOCOLS {
        let code = match status.as_u16() {
            400 => ErrorCode::BadRequest,
            401 => ErrorCode::Unauthorized,
            403 => ErrorCode::Forbidden,
            404 => ErrorCode::NotFound,
            408 => ErrorCode::Timeout,
            405 => ErrorCode::MethodNotAllowed,
            409 => ErrorCode::Conflict,
            429 => ErrorCode::ResourceLimit,
            502 => ErrorCode::BadGateway,
            503 => ErrorCode::Unavailable,
            507 => ErrorCode::InsufficientStorage,
            _ => ErrorCode::Internal,
        };
        return code.as_str().to_owned();
    }
    // a gRPC call that failed at once carries its status in the headers
    match response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
    {
        Some(code) if code != "0" => format!("grpc:{code}"),
        _ => "ok".to_owned(),
    }
}

/// A call refused as unauthenticated whose key the refusal named (`auth.rs` notes it
/// in the slot only for a key that exists: expired or revoked).
fn refused_naming_a_key(outcome: &str, slot: &AuditSlot) -> bool {
    let unauthenticated = outcome == ErrorCode::Unauthorized.as_str() || outcome == "grpc:16";
    unauthenticated && slot.with(|n| n.actor.is_some())
}

pub async fn record(
    State(state): State<ApiState>,
    mut request: Request,
    next: Next,
) -> axum::response::Response {
    let path = request.uri().path().to_owned();
    let template = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let mutating = operation(request.method(), &path, template.as_deref());
    let presents_key =
        presented_key(&|name: &str| request.headers().get(name).and_then(|v| v.to_str().ok()))
            .is_some();
    if mutating.is_none() && !presents_key {
        return next.run(request).await;
    }
    // nothing is done that could not be recorded
    if mutating.is_some()
        && let Err(err) = state.audit.writable()
    {
        let refusal = ApiError::from(err);
        if path.starts_with("/berth.v1.") {
            return tonic::Status::from(refusal).into_http();
        }
        return axum::response::IntoResponse::into_response(refusal);
    }
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let slot = AuditSlot::default();
    request.extensions_mut().insert(slot.clone());
    let method = request.method().clone();
    let response = next.run(request).await;
    if slot.with(|n| n.left_out) {
        return response;
    }
    let outcome = outcome(&response);
    let operation = match mutating {
        Some(operation) => operation,
        None if refused_naming_a_key(&outcome, &slot) => {
            if path.starts_with("/berth.v1.") {
                format!("grpc {path}")
            } else {
                format!("{method} {}", template.as_deref().unwrap_or(&path))
            }
        }
        None => return response,
    };
    let (actor, sandbox_id, detail, team_id, user_id) = slot.with(|n| {
        (
            n.actor.take().unwrap_or_else(|| "anonymous".to_owned()),
            n.sandbox_id.take().or_else(|| sandbox_in_path(&path)),
            n.detail.take().unwrap_or_default(),
            std::mem::take(&mut n.team_id),
            std::mem::take(&mut n.user_id),
        )
    });
    let worker_id = match &sandbox_id {
        Some(id) => state.sandboxes.worker_of(id).await.unwrap_or_default(),
        None => String::new(),
    };
    let entry = AuditEntry {
        actor,
        operation,
        worker_id,
        sandbox_id: sandbox_id.unwrap_or_default(),
        detail,
        outcome,
        request_id,
        team_id,
        user_id,
    };
    // the appender commits it with whatever else is queued; the caller does not wait
    if let Err(err) = state.audit.submit(entry).await {
        tracing::error!(error = %err, "cannot append to the audit log");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changes_are_operations() {
        let exec = "/api/v1/sandboxes/{id}/exec";
        assert_eq!(
            operation(&Method::POST, "/api/v1/sandboxes/s1/exec", Some(exec)).as_deref(),
            Some("POST /api/v1/sandboxes/{id}/exec")
        );
        assert_eq!(
            operation(&Method::GET, "/api/v1/sandboxes", Some("/api/v1/sandboxes")),
            None
        );
        assert_eq!(
            operation(
                &Method::POST,
                "/api/v1/sandboxes/admission",
                Some("/api/v1/sandboxes/admission")
            ),
            None
        );
        assert!(operation(&Method::POST, "/berth.v1.Sandboxes/Exec", None).is_some());
        assert!(operation(&Method::POST, "/berth.v1.Sandboxes/List", None).is_none());
        assert_eq!(
            operation(
                &Method::GET,
                "/api/v1/sandboxes/s1/ports/80/ws",
                Some(PORT_TUNNEL)
            )
            .as_deref(),
            Some("GET /api/v1/sandboxes/{id}/ports/{port}/ws")
        );
        assert!(
            operation(
                &Method::GET,
                "/api/v1/sandboxes/s1/ports",
                Some("/api/v1/sandboxes/{id}/ports")
            )
            .is_none()
        );
        assert_eq!(
            sandbox_in_path("/api/v1/sandboxes/s1/files"),
            Some("s1".into())
        );
        assert_eq!(sandbox_in_path("/api/v1/sandboxes"), None);
    }
}
