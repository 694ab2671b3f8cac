//! The mock's network: `serve --port P [--dir DIR]` starts a builtin server on port
//! `P` of the sandbox, and a port stream (`open_port`) is an in-memory pipe to it. It
//! speaks HTTP/1.1 and HTTP/2 (prior knowledge), and:
//!
//! - a WebSocket upgrade on any path echoes every message back (text as text, binary
//!   as binary) and answers a close;
//! - with `--dir`, GET and HEAD serve the sandbox's files under DIR (`index.html` for
//!   a directory, 404 for what is missing), with a content type by extension;
//! - without it, GET and HEAD answer one line naming the method, the path, the `Host`
//!   and the port; any other method streams the request's body back as the answer.
//!
//! A server runs in the background like a daemon (the mock shell has no `&`):
//! `serve` returns once it listens; `serve --stop --port P` stops it, as does
//! destroying the sandbox (which also ends its open connections). A port can be
//! served once; a second `serve` on it fails with "address already in use".

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Body;
use axum::extract::FromRequest;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderValue, Method, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;

use super::Sandbox;
use super::exec::{Ctx, Stop};
use crate::provider::paths::normalize_in;
use crate::provider::port::PortConnection;
use crate::provider::{ProviderError, port};

/// Bytes in flight in each direction of a connection's pipe.
const PIPE_BUFFER: usize = 64 * 1024;

/// The servers listening in one sandbox, by port.
#[derive(Debug, Default)]
pub struct Listeners {
    ports: Mutex<BTreeMap<u16, Listener>>,
}

/// What a server on a port serves.
#[derive(Debug, Clone)]
struct Listener {
    /// Serve files under this directory; `None`: the echo answers.
    dir: Option<String>,
}

impl Listeners {
    fn get(&self, port: u16) -> Option<Listener> {
        self.ports
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&port)
            .cloned()
    }

    /// Whether `port` was free (and is now taken).
    fn listen(&self, port: u16, listener: Listener) -> bool {
        let mut ports = self.ports.lock().unwrap_or_else(PoisonError::into_inner);
        if ports.contains_key(&port) {
            return false;
        }
        ports.insert(port, listener);
        true
    }

    /// Every server ends (the sandbox stopped).
    pub(super) fn clear(&self) {
        self.ports
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    fn stop(&self, port: u16) -> bool {
        self.ports
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&port)
            .is_some()
    }
}

/// The `serve` builtin.
pub async fn serve(ctx: &mut Ctx, args: &[String]) -> Result<i32, Stop> {
    let mut port = None;
    let mut dir = None;
    let mut stop = false;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" | "-p" => port = args.next().cloned(),
            "--dir" | "-d" => dir = args.next().cloned(),
            "--stop" => stop = true,
            other => {
                ctx.err(format!("serve: unexpected argument '{other}'\n{USAGE}\n"))
                    .await?;
                return Ok(2);
            }
        }
    }
    let Some(port) = port
        .and_then(|port| port.parse::<u32>().ok())
        .and_then(|port| port::parse_port(port).ok())
    else {
        ctx.err(format!("serve: --port takes a port, 1-65535\n{USAGE}\n"))
            .await?;
        return Ok(2);
    };
    let listeners = &ctx.sandbox.listeners;
    if stop {
        if listeners.stop(port) {
            ctx.sandbox
                .console
                .append(format!("serve: stopped port {port}"));
            ctx.out(format!("stopped serving port {port}\n")).await?;
            return Ok(0);
        }
        ctx.err(format!("serve: nothing is served on port {port}\n"))
            .await?;
        return Ok(1);
    }
    let dir = match dir {
        Some(dir) => match normalize_in(&dir, &ctx.cwd) {
            Ok(dir) if ctx.sandbox.fs().is_dir(&dir) => Some(dir),
            Ok(dir) => {
                ctx.err(format!("serve: {dir}: not a directory\n")).await?;
                return Ok(1);
            }
            Err(err) => {
                ctx.err(format!("serve: {err}\n")).await?;
                return Ok(1);
            }
        },
        None => None,
    };
    let what = match &dir {
        Some(dir) => format!("the files under {dir}"),
        None => "echo answers".to_owned(),
    };
    if !listeners.listen(port, Listener { dir }) {
        ctx.err(format!(
            "serve: port {port}: bind: address already in use\n"
        ))
        .await?;
        return Ok(1);
    }
    ctx.sandbox
        .console
        .append(format!("serve: listening on port {port}"));
    ctx.out(format!(
        "serving HTTP on port {port} ({what}); `serve --stop --port {port}` stops it\n"
    ))
    .await?;
    Ok(0)
}

const USAGE: &str = "usage: serve --port PORT [--dir DIR] | serve --stop --port PORT";

/// A connection to `port` of `sandbox`: the client's end of a pipe whose other end a
/// task serves until the client hangs up or the sandbox is destroyed.
pub fn connect(sandbox: &Arc<Sandbox>, port: u16) -> Result<PortConnection, ProviderError> {
    if sandbox.listeners.get(port).is_none() {
        return Err(ProviderError::PortClosed {
            sandbox_id: sandbox.id.clone(),
            port,
            reason: "connection refused (start a server with `serve --port PORT`)".into(),
        });
    }
    let (client, server) = tokio::io::duplex(PIPE_BUFFER);
    let sandbox = Arc::clone(sandbox);
    tokio::spawn(async move {
        let destroyed = sandbox.run_token();
        let service = tower::service_fn(move |request: Request<hyper::body::Incoming>| {
            let sandbox = Arc::clone(&sandbox);
            async move {
                Ok::<_, std::convert::Infallible>(
                    answer(&sandbox, port, request.map(Body::new)).await,
                )
            }
        });
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        // a client that half-closes after its request (as a port stream's `eof` does)
        // still gets its answer
        builder.http1().half_close(true);
        let connection = builder.serve_connection_with_upgrades(
            TokioIo::new(server),
            TowerToHyperService::new(service),
        );
        tokio::select! {
            result = connection => {
                if let Err(err) = result {
                    tracing::debug!(port, error = %err, "mock serve connection ended");
                }
            }
            () = destroyed.cancelled() => {}
        }
    });
    Ok(Box::new(client))
}

/// One request's answer.
async fn answer(sandbox: &Arc<Sandbox>, port: u16, request: Request<Body>) -> Response<Body> {
    // the server may have been stopped since the connection was made
    let Some(listener) = sandbox.listeners.get(port) else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "the server was stopped\n");
    };
    if is_websocket(&request) {
        return match WebSocketUpgrade::from_request(request, &()).await {
            Ok(upgrade) => upgrade.on_upgrade(echo).into_response(),
            Err(rejection) => rejection.into_response(),
        };
    }
    let method = request.method().clone();
    if method != Method::GET && method != Method::HEAD {
        let mut response = Response::new(request.into_body());
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        return response;
    }
    match listener.dir {
        Some(dir) => file(sandbox, &dir, request.uri().path()),
        None => {
            let host = request
                .headers()
                .get(header::HOST)
                .and_then(|host| host.to_str().ok())
                .or_else(|| request.uri().host())
                .unwrap_or_default();
            let line = format!(
                "berth mock serve: {method} {} host={host} port={port} sandbox={}\n",
                request.uri().path(),
                sandbox.id
            );
            text(StatusCode::OK, &line)
        }
    }
}

fn is_websocket(request: &Request<Body>) -> bool {
    request
        .headers()
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"))
}

/// Sends every message back as it came.
async fn echo(mut socket: WebSocket) {
    while let Some(Ok(message)) = socket.recv().await {
        let reply = match message {
            Message::Text(_) | Message::Binary(_) => message,
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        if socket.send(reply).await.is_err() {
            break;
        }
    }
}

fn file(sandbox: &Sandbox, dir: &str, path: &str) -> Response<Body> {
    let relative = path.trim_start_matches('/');
    let Ok(mut path) = normalize_in(if relative.is_empty() { "." } else { relative }, dir) else {
        return text(StatusCode::BAD_REQUEST, "bad path\n");
    };
    if path != dir && !path.starts_with(&format!("{}/", dir.trim_end_matches('/'))) {
        return text(StatusCode::NOT_FOUND, "404 not found\n");
    }
    let fs = sandbox.fs();
    if fs.is_dir(&path) {
        path = format!("{}/index.html", path.trim_end_matches('/'));
    }
    match fs.read(&path) {
        Ok(data) => {
            let mut response = Response::new(Body::from(data.as_ref().clone()));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(&path)),
            );
            response
        }
        Err(_) => text(StatusCode::NOT_FOUND, "404 not found\n"),
    }
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("css") => "text/css",
        Some("js") => "text/javascript",
        Some("json") => "application/json",
        Some("txt") => "text/plain; charset=utf-8",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut response = Response::new(Body::from(body.to_owned()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
