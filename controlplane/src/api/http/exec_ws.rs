//! `GET /sandboxes/{id}/exec/ws`: an interactive session over a WebSocket, in
//! StacyVM's protocol (exec scope; the key in `X-API-Key` or `Authorization: Bearer`
//! on the upgrade request, like every other route).
//!
//! The client's first frame is the request, a text frame of JSON: a new command
//! (`command, args, mode, env, workdir, timeout, tty, cols, rows, background, stdin`)
//! or an attach (`session_id, offset, takeover`). The server answers text frames:
//! `{"type":"started","session_id","offset","tty"}`; output as
//! `{"stream":"stdout"|"stderr","data","offset"}` (`data_b64` instead of `data` when
//! the chunk is not valid UTF-8: a chunk may end inside a character, and its bytes are
//! never altered); `{"type":"gap","bytes","offset"}`;
//! `{"type":"exit","exit_code","signal"?,"duration_ms"}`;
//! `{"type":"detached","reason"}`; then `{"type":"done"}` and a close frame. After the
//! request the client sends `{"type":"stdin","data"|"data_b64"}` (or binary frames:
//! stdin bytes), `{"type":"resize","cols","rows"}`, `{"type":"signal","signal"}`,
//! `{"type":"eof"}` and `{"type":"detach"}`.
//!
//! Errors are `{"type":"error","code","message","fatal"}` with the HTTP API's codes
//! (`NOT_FOUND`, `BAD_REQUEST`, `CONFLICT`, ...): a fatal one (a bad request frame, a
//! refused open, a broken stream) is followed by the close frame; a client frame the
//! session cannot take is answered with a non-fatal one and the session goes on. A
//! client that closes the socket or goes away is detached; the command runs on. When
//! the control plane shuts down, attached clients get a fatal `UNAVAILABLE` and attach
//! again elsewhere.
//!
//! Frames and messages are capped at [`MAX_FRAME`]; client input waits in a bounded
//! channel, and reading the client and writing to it run side by side, so a client
//! that reads output slowly can still send Ctrl-C. A ping goes out after
//! [`PING_EVERY`] without a frame.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::http::HeaderMap;
use axum::response::Response;
use base64::Engine;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::exec::argv_mode;
use super::schemas::ErrorBody;
use super::{Authorized, ExecScope, Path};
use crate::api::ApiState;
use crate::api::audit::{SessionAudit, SessionEnd};
use crate::api::auth::Granted;
use crate::error::{ApiError, ErrorCode};
use crate::sandboxes::{
    SHUTTING_DOWN, SessionAttach, SessionEvent, SessionInput, SessionOpen, SessionStart,
    SessionStream, TerminalSize, parse_timeout,
};

/// The largest frame or message either side may send.
pub const MAX_FRAME: usize = 1 << 20;
/// A ping goes out after this long without a frame.
pub const PING_EVERY: Duration = Duration::from_secs(20);
/// How long the request frame may take to come.
const REQUEST_WAIT: Duration = Duration::from_secs(30);
/// How long closing the socket may take.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// Complaints about client frames waiting to be written; more are dropped.
const PROBLEM_BUFFER: usize = 8;

/// Opens an interactive session over a WebSocket (exec scope); see the module's page
/// for the protocol. An unknown sandbox is a 404 before the upgrade; without an
/// upgrade (a plain GET) the answer is 400.
#[utoipa::path(get, path = "/api/v1/sandboxes/{id}/exec/ws", tag = "sessions", security(("api_key" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id")), responses(
    (status = 101, description = "Upgraded: the session's frames follow (the request first, from the client)"),
    (status = 400, description = "Not a WebSocket upgrade", body = ErrorBody),
    (status = 404, description = "No such sandbox", body = ErrorBody),
))]
pub async fn exec_ws(
    Authorized { caller, access, .. }: Authorized<ExecScope>,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    // a sandbox the caller cannot see is a 404 before anything else, as on every route
    state.sandboxes.get(&access, &id).await?;
    let upgrade = upgrade.map_err(upgrade_required)?;
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let granted = Granted { caller, access };
    Ok(upgrade
        .max_frame_size(MAX_FRAME)
        .max_message_size(MAX_FRAME)
        .on_upgrade(move |socket| async move {
            // tracked, so shutdown waits for the session's last audit record
            let tasks = state.tasks.clone();
            tasks.spawn(serve(socket, state, granted, id, request_id));
        }))
}

/// What a WebSocket route answers a request that is no upgrade (a plain GET).
pub fn upgrade_required(rejection: WebSocketUpgradeRejection) -> ApiError {
    ApiError::bad_request(format!(
        "this path takes a WebSocket upgrade (GET with `Connection: upgrade` and \
         `Upgrade: websocket`): {}",
        rejection.body_text()
    ))
}

/// One upgraded connection: the request, the session, the close.
async fn serve(
    mut socket: WebSocket,
    state: ApiState,
    granted: Granted,
    sandbox_id: String,
    request_id: String,
) {
    let request = tokio::select! {
        request = tokio::time::timeout(REQUEST_WAIT, request_frame(&mut socket)) => request,
        () = state.shutdown.cancelled() => {
            let err = ApiError::new(ErrorCode::Unavailable, "the control plane is shutting down");
            return fail(socket, err).await;
        }
    };
    let (open, attach_size) = match request {
        Ok(Ok(Some(opening))) => opening,
        // the client left before asking anything
        Ok(Ok(None)) => return,
        Ok(Err(err)) => return fail(socket, err).await,
        Err(_) => {
            let err = ApiError::bad_request(format!(
                "no request frame within {}s",
                REQUEST_WAIT.as_secs()
            ));
            return fail(socket, err).await;
        }
    };
    let (session, audit) =
        match SessionAudit::open(&state, &granted, &sandbox_id, &request_id, open).await {
            Ok(opened) => opened,
            Err(err) => return fail(socket, err).await,
        };
    // the terminal takes the size of the client that attached
    if let Some(size) = attach_size.filter(|_| session.started.tty) {
        let _ = session.input.send(SessionInput::Resize(size)).await;
    }
    let (mut sink, mut source) = socket.split();
    let end = tokio::select! {
        end = relay(&mut sink, &mut source, session) => end,
        () = state.shutdown.cancelled() => SessionEnd::Failed {
            code: ErrorCode::Unavailable.as_str(),
        },
    };
    if matches!(end, SessionEnd::Failed { .. }) && state.shutdown.is_cancelled() {
        let refusal = ApiError::new(ErrorCode::Unavailable, SHUTTING_DOWN);
        let _ =
            tokio::time::timeout(CLOSE_WAIT, send(&mut sink, &error_frame(&refusal, true))).await;
    }
    // the record is queued before the client sees the end
    audit.ended(end.clone()).await;
    if !matches!(end, SessionEnd::Left { .. }) {
        let _ = send(&mut sink, &json!({"type": "done"})).await;
    }
    close(&mut sink).await;
}

/// The client's request: the first text frame. `Ok(None)`: the client left first.
async fn request_frame(socket: &mut WebSocket) -> Result<Option<Opening>, ApiError> {
    loop {
        match socket.recv().await {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(None),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Binary(_))) => {
                return Err(ApiError::bad_request(
                    "the first frame must be the request, as JSON in a text frame",
                ));
            }
            Some(Ok(Message::Text(text))) => return parse_request(text.as_str()).map(Some),
        }
    }
}

/// The request frame.
#[derive(Debug, Deserialize)]
struct Request {
    #[serde(default)]
    command: String,
    #[serde(default)]
    args: Vec<String>,
    /// `shell` (default) or `argv`.
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    workdir: Option<String>,
    /// A Go-style duration ("30s") or seconds.
    #[serde(default)]
    timeout: Option<Value>,
    #[serde(default)]
    tty: bool,
    #[serde(default)]
    cols: u32,
    #[serde(default)]
    rows: u32,
    #[serde(default)]
    background: bool,
    #[serde(default)]
    session_id: Option<String>,
    #[serde(default)]
    offset: u64,
    #[serde(default)]
    takeover: bool,
    /// Whether the command's stdin is open (default true).
    #[serde(default)]
    stdin: Option<bool>,
}

/// The request: the open, and for an attach the client's terminal size (`cols`,
/// `rows`), sent on as a resize once a terminal session is attached.
type Opening = (SessionOpen, Option<TerminalSize>);

fn parse_request(text: &str) -> Result<Opening, ApiError> {
    let request: Request = serde_json::from_str(text)
        .map_err(|err| ApiError::bad_request(format!("the request frame is not valid: {err}")))?;
    if let Some(session_id) = request.session_id.filter(|id| !id.is_empty()) {
        if !request.command.is_empty() {
            return Err(ApiError::bad_request(
                "give a command to start or a session_id to attach to, not both",
            ));
        }
        let size = (request.cols > 0 && request.rows > 0).then_some(TerminalSize {
            cols: request.cols,
            rows: request.rows,
        });
        let attach = SessionOpen::Attach(SessionAttach {
            session_id,
            offset: request.offset,
            takeover: request.takeover,
        });
        return Ok((attach, size));
    }
    let start = SessionOpen::Start(SessionStart {
        argv: argv_mode(request.mode.as_deref())?,
        command: request.command,
        args: request.args,
        env: request.env,
        workdir: request.workdir.unwrap_or_default(),
        timeout: parse_timeout(request.timeout.as_ref())?,
        tty: request.tty.then_some(TerminalSize {
            cols: request.cols,
            rows: request.rows,
        }),
        background: request.background,
        stdin: request.stdin.unwrap_or(true),
    });
    Ok((start, None))
}

/// A client frame after the request.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientFrame {
    Stdin {
        #[serde(default)]
        data: Option<String>,
        #[serde(default)]
        data_b64: Option<String>,
    },
    Resize {
        cols: u32,
        rows: u32,
    },
    Signal {
        signal: String,
    },
    Eof,
    Detach,
}

fn client_input(message: Message) -> Result<Option<SessionInput>, ApiError> {
    let text = match message {
        Message::Binary(data) => return Ok(Some(SessionInput::Stdin(data.to_vec()))),
        Message::Text(text) => text,
        _ => return Ok(None),
    };
    let frame: ClientFrame = serde_json::from_str(text.as_str()).map_err(|err| {
        ApiError::bad_request(format!(
            "not a client frame ({err}); expected type stdin, resize, signal, eof or detach"
        ))
    })?;
    let input = match frame {
        ClientFrame::Stdin {
            data_b64: Some(encoded),
            ..
        } => {
            let data = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map_err(|err| ApiError::bad_request(format!("data_b64 is not base64: {err}")))?;
            SessionInput::Stdin(data)
        }
        ClientFrame::Stdin { data, .. } => SessionInput::Stdin(data.unwrap_or_default().into()),
        ClientFrame::Resize { cols, rows } => SessionInput::Resize(TerminalSize { cols, rows }),
        ClientFrame::Signal { signal } => SessionInput::Signal(signal),
        ClientFrame::Eof => SessionInput::Eof,
        ClientFrame::Detach => SessionInput::Detach,
    };
    Ok(Some(input))
}

type Sink = SplitSink<WebSocket, Message>;
type Source = SplitStream<WebSocket>;

/// Relays a session both ways until it ends; answers how it ended.
async fn relay(sink: &mut Sink, source: &mut Source, session: SessionStream) -> SessionEnd {
    let SessionStream {
        started,
        input,
        events,
        ..
    } = session;
    let (problems_tx, problems_rx) = mpsc::channel(PROBLEM_BUFFER);
    let started = json!({
        "type": "started",
        "session_id": started.session_id,
        "offset": started.offset,
        "tty": started.tty,
    });
    if send(sink, &started).await.is_err() {
        return left("the client went away");
    }
    tokio::select! {
        end = client_to_worker(source, input, problems_tx) => end,
        end = worker_to_client(sink, events, problems_rx) => end,
    }
}

/// Client frames to the worker, until the client leaves. A frame the session cannot
/// take is answered (through `problems`) and skipped.
async fn client_to_worker(
    source: &mut Source,
    input: mpsc::Sender<SessionInput>,
    problems: mpsc::Sender<ApiError>,
) -> SessionEnd {
    loop {
        let message = match source.next().await {
            None | Some(Err(_)) => return left("the client went away"),
            Some(Ok(Message::Close(_))) => return left("the client closed the socket"),
            Some(Ok(message)) => message,
        };
        match client_input(message) {
            Ok(Some(message)) => {
                if input.send(message).await.is_err() {
                    // the worker's half is over; the events say how, and end the relay
                    return std::future::pending().await;
                }
            }
            Ok(None) => {}
            // a client flooding bad frames does not get every complaint
            Err(problem) => {
                let _ = problems.try_send(problem);
            }
        }
    }
}

/// The worker's events to the client, with pings while idle; answers how the session
/// ended.
async fn worker_to_client(
    sink: &mut Sink,
    mut events: crate::sandboxes::SessionEvents,
    mut problems: mpsc::Receiver<ApiError>,
) -> SessionEnd {
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (frame, end) = tokio::select! {
            event = events.next() => match event {
                Some(event) => event_frame(event),
                None => return SessionEnd::Background,
            },
            Some(problem) = problems.recv() => (Some(error_frame(&problem, false)), None),
            _ = ping.tick() => {
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    return left("the client went away");
                }
                continue;
            }
        };
        if let Some(frame) = frame {
            if send(sink, &frame).await.is_err() {
                return left("the client went away");
            }
            ping.reset();
        }
        if let Some(end) = end {
            return end;
        }
    }
}

/// A session event as the client's frame (none for a keepalive: the socket has pings
/// of its own), and how the stream ends if it is the last.
fn event_frame(event: SessionEvent) -> (Option<Value>, Option<SessionEnd>) {
    match event {
        SessionEvent::Output {
            stream,
            data,
            offset,
        } => (Some(output_frame(stream.as_str(), data, offset)), None),
        SessionEvent::Gap { bytes, offset } => (
            Some(json!({"type": "gap", "bytes": bytes, "offset": offset})),
            None,
        ),
        SessionEvent::Exit {
            exit_code,
            signal,
            duration_ms,
        } => {
            let mut frame = json!({
                "type": "exit",
                "exit_code": exit_code,
                "duration_ms": duration_ms,
            });
            if let Some(signal) = &signal {
                frame["signal"] = json!(signal);
            }
            (Some(frame), Some(SessionEnd::Exit { exit_code, signal }))
        }
        SessionEvent::Keepalive => (None, None),
        SessionEvent::Detached { reason } => (
            Some(json!({"type": "detached", "reason": reason})),
            Some(SessionEnd::Detached { reason }),
        ),
        SessionEvent::Problem { code, message } => (
            Some(error_frame(&ApiError::new(code, message), false)),
            None,
        ),
        SessionEvent::Failed { code, message } => (
            Some(error_frame(&ApiError::new(code, message), true)),
            Some(SessionEnd::Failed {
                code: code.as_str(),
            }),
        ),
    }
}

/// An output frame: `data` when the chunk is valid UTF-8, else `data_b64`.
fn output_frame(stream: &str, data: Vec<u8>, offset: u64) -> Value {
    match String::from_utf8(data) {
        Ok(text) => json!({"stream": stream, "data": text, "offset": offset}),
        Err(err) => {
            let encoded = base64::engine::general_purpose::STANDARD.encode(err.as_bytes());
            json!({"stream": stream, "data_b64": encoded, "offset": offset})
        }
    }
}

#[derive(Serialize)]
struct ErrorFrame<'a> {
    r#type: &'static str,
    code: &'static str,
    message: &'a str,
    /// Followed by the close frame.
    fatal: bool,
}

fn error_frame(err: &ApiError, fatal: bool) -> Value {
    if err.code == ErrorCode::Internal {
        tracing::error!(error = %err.message, "session failed");
    }
    serde_json::to_value(ErrorFrame {
        r#type: "error",
        code: err.code.as_str(),
        message: &err.message,
        fatal,
    })
    .unwrap_or_default()
}

/// A fatal error before any session: the error frame, then the close.
async fn fail(socket: WebSocket, err: ApiError) {
    let (mut sink, _source) = socket.split();
    let _ = send(&mut sink, &error_frame(&err, true)).await;
    close(&mut sink).await;
}

async fn send(sink: &mut Sink, frame: &Value) -> Result<(), axum::Error> {
    sink.send(Message::Text(frame.to_string().into())).await
}

async fn close(sink: &mut Sink) {
    let frame = Message::Close(Some(CloseFrame {
        code: close_code::NORMAL,
        reason: Default::default(),
    }));
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        let _ = sink.send(frame).await;
        let _ = sink.close().await;
    })
    .await;
}

fn left(reason: &str) -> SessionEnd {
    SessionEnd::Left {
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_frame_starts_or_attaches() {
        let (open, size) = parse_request(
            r#"{"command":"bash","mode":"argv","tty":true,"cols":100,"rows":30,
                "timeout":"2m","stdin":false,"env":{"A":"1"}}"#,
        )
        .unwrap();
        assert_eq!(size, None);
        let SessionOpen::Start(start) = open else {
            panic!("not a start");
        };
        assert!(start.argv && !start.stdin);
        assert_eq!(
            start.tty,
            Some(TerminalSize {
                cols: 100,
                rows: 30
            })
        );
        assert_eq!(start.timeout, Some(Duration::from_secs(120)));

        let (open, size) = parse_request(
            r#"{"session_id":"ses-1","offset":7,"takeover":true,"cols":90,"rows":20}"#,
        )
        .unwrap();
        assert_eq!(size, Some(TerminalSize { cols: 90, rows: 20 }));
        assert_eq!(
            open,
            SessionOpen::Attach(SessionAttach {
                session_id: "ses-1".into(),
                offset: 7,
                takeover: true
            })
        );
        let (SessionOpen::Start(start), _) = parse_request(r#"{"command":"cat"}"#).unwrap() else {
            panic!("not a start");
        };
        assert!(start.stdin && start.tty.is_none() && !start.argv);
    }

    #[test]
    fn a_bad_request_frame_is_a_bad_request() {
        for bad in [
            "not json",
            "[1,2]",
            r#"{"command":"ls","mode":"fish"}"#,
            r#"{"command":"ls","timeout":"soon"}"#,
            r#"{"command":"ls","session_id":"ses-1"}"#,
            r#"{"command":"ls","cols":-1}"#,
        ] {
            let err = parse_request(bad).unwrap_err();
            assert_eq!(err.code, ErrorCode::BadRequest, "{bad}");
        }
    }

    #[test]
    fn client_frames_become_input() {
        let text = |s: &str| Message::Text(s.to_owned().into());
        assert_eq!(
            client_input(text(r#"{"type":"stdin","data":"hi\n"}"#)).unwrap(),
            Some(SessionInput::Stdin(b"hi\n".to_vec()))
        );
        assert_eq!(
            client_input(text(r#"{"type":"stdin","data_b64":"/wA="}"#)).unwrap(),
            Some(SessionInput::Stdin(vec![0xff, 0]))
        );
        assert_eq!(
            client_input(Message::Binary(vec![1, 2].into())).unwrap(),
            Some(SessionInput::Stdin(vec![1, 2]))
        );
        assert_eq!(
            client_input(text(r#"{"type":"resize","cols":90,"rows":20}"#)).unwrap(),
            Some(SessionInput::Resize(TerminalSize { cols: 90, rows: 20 }))
        );
        assert_eq!(
            client_input(text(r#"{"type":"signal","signal":"SIGINT"}"#)).unwrap(),
            Some(SessionInput::Signal("SIGINT".into()))
        );
        assert_eq!(
            client_input(text(r#"{"type":"eof"}"#)).unwrap(),
            Some(SessionInput::Eof)
        );
        assert_eq!(
            client_input(text(r#"{"type":"detach"}"#)).unwrap(),
            Some(SessionInput::Detach)
        );
        assert!(client_input(text(r#"{"type":"launch"}"#)).is_err());
        assert!(client_input(text(r#"{"type":"stdin","data_b64":"%%"}"#)).is_err());
    }

    #[test]
    fn output_that_is_not_utf8_goes_as_base64() {
        let text = output_frame("stdout", "héllo".as_bytes().to_vec(), 3);
        assert_eq!(
            text,
            json!({"stream": "stdout", "data": "héllo", "offset": 3})
        );
        // a chunk ending inside a character keeps its bytes exactly
        let cut = output_frame("stderr", "é".as_bytes()[..1].to_vec(), 9);
        assert_eq!(
            cut,
            json!({"stream": "stderr", "data_b64": "ww==", "offset": 9})
        );
    }

    #[test]
    fn exit_frames_name_the_signal_only_when_there_is_one() {
        let (frame, end) = event_frame(SessionEvent::Exit {
            exit_code: 130,
            signal: Some("SIGINT".into()),
            duration_ms: 4,
        });
        assert_eq!(
            frame.unwrap(),
            json!({"type": "exit", "exit_code": 130, "signal": "SIGINT", "duration_ms": 4})
        );
        assert!(matches!(end, Some(SessionEnd::Exit { exit_code: 130, .. })));
        let (frame, _) = event_frame(SessionEvent::Exit {
            exit_code: 0,
            signal: None,
            duration_ms: 1,
        });
        assert!(frame.unwrap().get("signal").is_none());
        let (frame, end) = event_frame(SessionEvent::Failed {
            code: ErrorCode::Unavailable,
            message: "gone".into(),
        });
        assert_eq!(
            frame.unwrap(),
            json!({"type": "error", "code": "UNAVAILABLE", "message": "gone", "fatal": true})
        );
        assert!(end.is_some());
        assert_eq!(event_frame(SessionEvent::Keepalive), (None, None));
    }
}
