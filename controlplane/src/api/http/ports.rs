//! `/sandboxes/{id}/ports…`: reaching TCP ports inside a sandbox (exec scope).
//!
//! - `GET …/ports/{port}/ws`: a byte stream to the port over a WebSocket, what
//!   `berth sandbox port-forward` opens for each local connection. Binary frames carry
//!   bytes both ways; a text frame `{"type":"eof"}` is a half-close (either way); the
//!   server ends with a close frame, after `{"type":"error","code","message"}` when
//!   the connection broke. A sandbox that does not exist is a 404, a port nothing
//!   listens on a 502, both before the upgrade.
//! - `POST …/ports/{port}/link`: a signed preview link to the port (`{"ttl":"1h"}`,
//!   default 1h, at most 7 days); its first use sets a cookie for that preview host.
//! - `GET …/ports`: the sandbox's preview base and its public ports;
//!   `PUT …/ports/{port}` with `{"public": true|false}` makes a port reachable through
//!   its preview URL without a key or link, or private again.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::http::StatusCode;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::exec_ws::{MAX_FRAME, PING_EVERY, upgrade_required};
use super::schemas::ErrorBody;
use super::{Authorized, ExecScope, JsonBody, Path};
use crate::api::preview::DEFAULT_LINK_TTL;
use crate::api::{ApiState, AuditSlot};
use crate::clock::now_secs;
use crate::error::ApiError;
use crate::sandboxes::{PortIo, check_port, parse_timeout, rfc3339};

/// Bytes read from the port for one frame.
const CHUNK: usize = 32 * 1024;

/// Opens a byte stream to a port inside the sandbox over a WebSocket (exec scope); see
/// the module's page for the frames.
#[utoipa::path(get, path = "/api/v1/sandboxes/{id}/ports/{port}/ws", tag = "ports", security(("api_key" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id"), ("port" = u32, Path, description = "TCP port inside the sandbox")), responses(
    (status = 101, description = "Upgraded: bytes to and from the port follow"),
    (status = 400, description = "Not a WebSocket upgrade, or not a port", body = ErrorBody),
    (status = 404, description = "No such sandbox", body = ErrorBody),
    (status = 502, description = "Nothing accepts connections on the port", body = ErrorBody),
))]
pub async fn tunnel(
    Authorized { access, caller, .. }: Authorized<ExecScope>,
    State(state): State<ApiState>,
    Path((id, port)): Path<(String, u32)>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    audit: AuditSlot,
) -> Result<Response, ApiError> {
    audit.sandbox(&id);
    audit.detail(format!("port {port}"));
    // a sandbox the caller cannot see is a 404 before anything else, as on every route
    state.sandboxes.get(&access, &id).await?;
    let upgrade = upgrade.map_err(upgrade_required)?;
    let connection = state.sandboxes.open_port(&access, &id, port).await?;
    tracing::info!(sandbox_id = %id, port, key_id = %caller.key_id, worker_id = %connection.worker_id, "port tunnel opened");
    Ok(upgrade
        .max_frame_size(MAX_FRAME)
        .max_message_size(MAX_FRAME)
        .on_upgrade(move |socket| async move {
            let shutdown = state.shutdown.clone();
            tokio::select! {
                () = relay(socket, connection.io) => {}
                () = shutdown.cancelled() => {}
            }
        }))
}

/// How one direction of a tunnel ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ended {
    /// A half-close: the other direction goes on.
    Closed,
    /// The client closed or went away.
    Left,
    /// The port's connection broke (the message says how).
    Broken(String),
}

async fn relay(socket: WebSocket, io: PortIo) {
    let (mut sink, mut source) = socket.split();
    let (mut reader, mut writer) = tokio::io::split(io);
    let (frames, mut outgoing) = tokio::sync::mpsc::channel::<Message>(8);
    let upstream = async {
        while let Some(frame) = source.next().await {
            match frame {
                Ok(Message::Binary(data)) => {
                    if let Err(err) = writer.write_all(&data).await {
                        return Ended::Broken(err.to_string());
                    }
                }
                Ok(Message::Text(text)) if is_eof(text.as_str()) => {
                    let _ = writer.shutdown().await;
                    return Ended::Closed;
                }
                // other text frames, pings and pongs: nothing to do
                Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_)) => {}
                Ok(Message::Close(_)) | Err(_) => return Ended::Left,
            }
        }
        Ended::Left
    };
    let frames_out = frames.clone();
    let downstream = async move {
        let mut buffer = vec![0u8; CHUNK];
        loop {
            match reader.read(&mut buffer).await {
                Ok(0) => {
                    let eof = Message::Text(json!({"type": "eof"}).to_string().into());
                    let _ = frames_out.send(eof).await;
                    return Ended::Closed;
                }
                Ok(n) => {
                    let frame = Message::Binary(Bytes::copy_from_slice(&buffer[..n]));
                    if frames_out.send(frame).await.is_err() {
                        return Ended::Left;
                    }
                }
                Err(err) => return Ended::Broken(err.to_string()),
            }
        }
    };
    // one writer of the socket: the port's bytes and pings, in order
    let writing = async move {
        loop {
            let frame = match tokio::time::timeout(PING_EVERY, outgoing.recv()).await {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                Err(_) => Message::Ping(Bytes::new()),
            };
            if sink.send(frame).await.is_err() {
                return;
            }
        }
    };
    tokio::pin!(upstream, downstream, writing);
    let (mut up, mut down) = (None, None);
    let end = loop {
        tokio::select! {
            ended = &mut upstream, if up.is_none() => up = Some(ended),
            ended = &mut downstream, if down.is_none() => down = Some(ended),
            () = &mut writing => break None,
        }
        match (&up, &down) {
            (Some(Ended::Left), _) | (_, Some(Ended::Left)) => break None,
            (Some(Ended::Broken(why)), _) | (_, Some(Ended::Broken(why))) => {
                break Some(why.clone());
            }
            (Some(Ended::Closed), Some(Ended::Closed)) => break Some(String::new()),
            _ => {}
        }
    };
    let Some(why) = end else { return };
    let mut last = Vec::new();
    if !why.is_empty() {
        let error = json!({"type": "error", "code": "BAD_GATEWAY", "message": format!("the connection to the port broke: {why}")});
        last.push(Message::Text(error.to_string().into()));
    }
    let code = if why.is_empty() {
        close_code::NORMAL
    } else {
        close_code::ERROR
    };
    last.push(Message::Close(Some(CloseFrame {
        code,
        reason: "".into(),
    })));
    for frame in last {
        if frames.send(frame).await.is_err() {
            return;
        }
    }
    drop(frames);
    // let the writer flush what is queued, the close frame last
    let _ = tokio::time::timeout(Duration::from_secs(5), &mut writing).await;
}

fn is_eof(text: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(text).is_ok_and(|value| value["type"] == "eof")
}

/// `POST …/link`'s optional body.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct LinkRequest {
    /// How long the link works: a Go-style duration ("30m", "1h") or seconds; default
    /// 1h, at most 7 days.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub ttl: Option<serde_json::Value>,
}

/// A signed preview link.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PreviewLinkView {
    /// Open this: the preview URL with the link's token, which the first use trades
    /// for a cookie scoped to that host.
    pub url: String,
    pub sandbox_id: String,
    pub port: u16,
    /// RFC 3339.
    pub expires_at: String,
}

/// A signed, expiring preview link to a port of the sandbox (exec scope).
#[utoipa::path(post, path = "/api/v1/sandboxes/{id}/ports/{port}/link", tag = "ports", security(("api_key" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id"), ("port" = u32, Path, description = "TCP port inside the sandbox")),
    request_body(content = Option<LinkRequest>, content_type = "application/json"), responses(
    (status = 201, description = "The link", body = PreviewLinkView),
    (status = 400, description = "Not a port, a bad ttl, or previews are off", body = ErrorBody),
    (status = 404, description = "No such sandbox", body = ErrorBody),
))]
pub async fn link(
    Authorized { access, .. }: Authorized<ExecScope>,
    State(state): State<ApiState>,
    Path((id, port)): Path<(String, u32)>,
    audit: AuditSlot,
    body: Bytes,
) -> Result<(StatusCode, Json<PreviewLinkView>), ApiError> {
    audit.sandbox(&id);
    let port = check_port(port)?;
    let request: LinkRequest = if body.iter().all(u8::is_ascii_whitespace) {
        LinkRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|err| {
            ApiError::bad_request(format!("the body is not a link request: {err}"))
        })?
    };
    let ttl = parse_timeout(request.ttl.as_ref())?.unwrap_or(DEFAULT_LINK_TTL);
    state.sandboxes.get(&access, &id).await?;
    let link = state.previews.link(&id, port, ttl)?;
    audit.detail(format!("port {port}, expires {}", rfc3339(link.expires_at)));
    Ok((
        StatusCode::CREATED,
        Json(PreviewLinkView {
            url: link.url,
            sandbox_id: id,
            port,
            expires_at: rfc3339(link.expires_at),
        }),
    ))
}

/// A sandbox's preview base and public ports.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PortsView {
    pub sandbox_id: String,
    /// Empty: previews are off on this control plane.
    pub preview_domain: String,
    /// Ports reachable through their preview URL without a key or link.
    pub public: Vec<u16>,
    /// The ports its template serves previews on, with their URLs (empty when
    /// previews are off) and whether each is public.
    pub declared: Vec<PortView>,
}

/// The sandbox's preview domain, public ports, and the ports its template declares
/// with their preview URLs (exec scope).
#[utoipa::path(get, path = "/api/v1/sandboxes/{id}/ports", tag = "ports", security(("api_key" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id")), responses(
    (status = 200, description = "Its ports", body = PortsView),
    (status = 404, description = "No such sandbox", body = ErrorBody),
))]
pub async fn list(
    Authorized { access, .. }: Authorized<ExecScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<PortsView>, ApiError> {
    let sandbox = state.sandboxes.get(&access, &id).await?;
    let public = state.store.public_ports(&id).await?;
    let declared = sandbox
        .ports
        .iter()
        .map(|&port| PortView {
            sandbox_id: id.clone(),
            port,
            public: public.contains(&port),
            url: state.previews.url(&id, port).unwrap_or_default(),
        })
        .collect();
    Ok(Json(PortsView {
        sandbox_id: id,
        preview_domain: state.previews.domain().to_owned(),
        public,
        declared,
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PortSettings {
    /// Reachable through its preview URL by anyone (true) or only with a key or
    /// link (false, the default).
    pub public: bool,
}

/// One port's settings as they are now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PortView {
    pub sandbox_id: String,
    pub port: u16,
    pub public: bool,
    /// Its preview URL; empty when previews are off.
    pub url: String,
}

/// Makes a port public or private again (exec scope).
#[utoipa::path(put, path = "/api/v1/sandboxes/{id}/ports/{port}", tag = "ports", security(("api_key" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id"), ("port" = u32, Path, description = "TCP port inside the sandbox")),
    request_body = PortSettings, responses(
    (status = 200, description = "The port", body = PortView),
    (status = 400, description = "Not a port, or a bad body", body = ErrorBody),
    (status = 404, description = "No such sandbox", body = ErrorBody),
))]
pub async fn update(
    Authorized { access, .. }: Authorized<ExecScope>,
    State(state): State<ApiState>,
    Path((id, port)): Path<(String, u32)>,
    audit: AuditSlot,
    JsonBody(settings): JsonBody<PortSettings>,
) -> Result<Json<PortView>, ApiError> {
    audit.sandbox(&id);
    let port = check_port(port)?;
    state.sandboxes.get(&access, &id).await?;
    state
        .store
        .set_port_public(&id, port, settings.public, now_secs())
        .await?;
    audit.detail(format!(
        "port {port} {}",
        if settings.public { "public" } else { "private" }
    ));
    let url = state.previews.url(&id, port).unwrap_or_default();
    Ok(Json(PortView {
        sandbox_id: id,
        port,
        public: settings.public,
        url,
    }))
}
