//! `Sandboxes.Session`, `ListSessions`, `KillSession`: interactive sessions for
//! generated clients (exec scope, like exec).
//!
//! A session call reads the client's `open`, opens the session on the lease holder
//! and answers once the worker said `started` (a refusal is the call's status). A task
//! then relays the stream both ways until it ends: client messages to the worker and
//! the worker's events to the client, each direction through a bounded buffer and
//! neither waiting on the other, so a client that reads output slowly can still send
//! Ctrl-C. A client that ends its half of the stream is still sent output (stdin is
//! closed with `eof`); a client that cancels the call is detached and the command runs
//! on. The task ends with the call, or with the control plane's shutdown (the client
//! is told `UNAVAILABLE` and attaches again elsewhere); shutdown waits for it.

use std::time::Duration;

use berth_proto::v1 as pb;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Status, Streaming};

use super::caller;
use super::sandboxes::ResponseStream;
use crate::api::audit::{SessionAudit, SessionEnd};
use crate::api::observe::note_sandbox;
use crate::api::{ApiState, AuditSlot};
use crate::api_keys::Scope;
use crate::error::{ApiError, ErrorCode};
use crate::sandboxes::{
    SHUTTING_DOWN, SessionAttach, SessionEvent, SessionInfo, SessionInput, SessionOpen,
    SessionStart, SessionStream, TerminalSize, parse_timeout,
};

/// Events waiting for a client that reads slowly.
const EVENT_BUFFER: usize = 16;
/// How long the last message to a client may wait for room at shutdown.
const LAST_WORD: Duration = Duration::from_secs(1);

pub async fn session(
    state: &ApiState,
    request: Request<Streaming<pb::SessionRequest>>,
) -> Result<ResponseStream<pb::SessionEvent>, Status> {
    use pb::session_request::Message;
    let granted = caller(state, &request, Scope::Exec).await?;
    let request_id = request
        .metadata()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut incoming = request.into_inner();
    let first = incoming
        .message()
        .await?
        .ok_or_else(|| ApiError::bad_request("the stream ended before its open message"))?;
    let Some(Message::Open(open)) = first.message else {
        return Err(ApiError::bad_request("the first message must be open").into());
    };
    let (sandbox_id, open) = session_open(open)?;
    note_sandbox(&sandbox_id);
    let (session, audit) =
        SessionAudit::open(state, &granted, &sandbox_id, &request_id, open).await?;
    let (events_tx, events_rx) = mpsc::channel(EVENT_BUFFER);
    let shutdown = state.shutdown.clone();
    state.tasks.spawn(async move {
        let end = relay(session, incoming, &events_tx, &shutdown).await;
        // the record is queued before the client sees the stream end
        audit.ended(end).await;
        drop(events_tx);
    });
    let events = futures::stream::unfold(events_rx, |mut events_rx| async move {
        let event = events_rx.recv().await?;
        Some((event, events_rx))
    });
    Ok(Box::pin(events))
}

pub async fn list_sessions(
    state: &ApiState,
    request: Request<pb::ListSessionsRequest>,
) -> Result<pb::ListSessionsResponse, Status> {
    let access = caller(state, &request, Scope::Exec).await?.access;
    let body = request.into_inner();
    note_sandbox(&body.sandbox_id);
    let sessions = state
        .sandboxes
        .list_sessions(&access, &body.sandbox_id)
        .await
        .map_err(ApiError::from)?;
    Ok(pb::ListSessionsResponse {
        sessions: sessions.into_iter().map(session_info_message).collect(),
    })
}

pub async fn kill_session(
    state: &ApiState,
    request: Request<pb::KillSessionRequest>,
) -> Result<pb::SessionInfo, Status> {
    let access = caller(state, &request, Scope::Exec).await?.access;
    let audit = request.extensions().get::<AuditSlot>().cloned();
    let body = request.into_inner();
    note_sandbox(&body.sandbox_id);
    if let Some(slot) = &audit {
        slot.sandbox(&body.sandbox_id);
        slot.detail(kill_detail(&body.session_id, &body.signal));
    }
    let info = state
        .sandboxes
        .kill_session(&access, &body.sandbox_id, &body.session_id, &body.signal)
        .await
        .map_err(ApiError::from)?;
    Ok(session_info_message(info))
}

/// What a kill's audit record says: the session and the signal.
pub fn kill_detail(session_id: &str, signal: &str) -> String {
    let signal = match signal.trim() {
        "" => crate::sandboxes::DEFAULT_KILL_SIGNAL,
        signal => signal,
    };
    format!("{session_id}: {signal}")
}

/// The client's open as the sandbox id and a domain open. `generation` is the
/// control plane's to fill and is ignored; `timeout` (a Go-style duration) wins over
/// `timeout_ms`.
fn session_open(open: pb::SessionOpen) -> Result<(String, SessionOpen), ApiError> {
    if !open.session_id.is_empty() {
        if !open.command.is_empty() {
            return Err(ApiError::bad_request(
                "give a command to start or a session_id to attach to, not both",
            ));
        }
        let attach = SessionAttach {
            session_id: open.session_id,
            offset: open.offset,
            takeover: open.takeover,
        };
        return Ok((open.sandbox_id, SessionOpen::Attach(attach)));
    }
    let timeout = match parse_timeout(Some(&serde_json::Value::String(open.timeout)))? {
        Some(timeout) => Some(timeout),
        None if open.timeout_ms > 0 => Some(std::time::Duration::from_millis(open.timeout_ms)),
        None => None,
    };
    let size = open.size.unwrap_or_default();
    let start = SessionStart {
        command: open.command,
        args: open.args,
        argv: open.mode == pb::ExecMode::Argv as i32,
        env: open.env.into_iter().collect(),
        workdir: open.workdir,
        timeout,
        tty: open.tty.then_some(TerminalSize {
            cols: size.cols,
            rows: size.rows,
        }),
        background: open.background,
        stdin: !open.no_stdin,
    };
    Ok((open.sandbox_id, SessionOpen::Start(start)))
}

/// A client message after the open; `Ok(None)` for an empty one.
fn session_input(request: pb::SessionRequest) -> Result<Option<SessionInput>, ApiError> {
    use pb::session_request::Message;
    let input = match request.message {
        None => return Ok(None),
        Some(Message::Open(_)) => {
            return Err(ApiError::bad_request(
                "open may only be the stream's first message",
            ));
        }
        Some(Message::Stdin(data)) => SessionInput::Stdin(data),
        Some(Message::Resize(size)) => SessionInput::Resize(TerminalSize {
            cols: size.cols,
            rows: size.rows,
        }),
        Some(Message::Signal(signal)) => SessionInput::Signal(signal),
        Some(Message::Eof(_)) => SessionInput::Eof,
        Some(Message::Detach(_)) => SessionInput::Detach,
    };
    Ok(Some(input))
}

/// Relays a session both ways until it ends; answers how it ended.
async fn relay(
    session: SessionStream,
    mut incoming: Streaming<pb::SessionRequest>,
    events_tx: &mpsc::Sender<Result<pb::SessionEvent, Status>>,
    shutdown: &CancellationToken,
) -> SessionEnd {
    let SessionStream {
        started,
        input,
        mut events,
        ..
    } = session;
    let started = pb::session_event::Event::Started(pb::SessionStarted {
        session_id: started.session_id,
        offset: started.offset,
        tty: started.tty,
    });
    // a message or an event taken and waiting for room on its way
    let mut to_worker: Option<SessionInput> = None;
    let mut to_client = Some((
        Ok(pb::SessionEvent {
            event: Some(started),
        }),
        None,
    ));
    let mut client_sends = true;
    let mut events_done = false;
    loop {
        // every event is delivered and none ended the stream: a background start
        if events_done && to_client.is_none() {
            return SessionEnd::Background;
        }
        tokio::select! {
            permit = input.reserve(), if to_worker.is_some() => {
                match (permit, to_worker.take()) {
                    (Ok(permit), Some(message)) => permit.send(message),
                    // the worker's half is over; its events say how
                    _ => client_sends = false,
                }
            }
            message = incoming.message(), if client_sends && to_worker.is_none() => {
                match message {
                    Ok(Some(message)) => match session_input(message) {
                        Ok(input) => to_worker = input,
                        Err(err) => {
                            let reason = format!("protocol error: {}", err.message);
                            let _ = events_tx.send(Err(err.into())).await;
                            return SessionEnd::Left { reason };
                        }
                    },
                    // the client is done sending; output still goes to it
                    Ok(None) => client_sends = false,
                    Err(_) => return left("the client went away"),
                }
            }
            permit = events_tx.reserve(), if to_client.is_some() => {
                let Ok(permit) = permit else {
                    return left("the client went away");
                };
                if let Some((event, end)) = to_client.take() {
                    permit.send(event);
                    if let Some(end) = end {
                        return end;
                    }
                }
            }
            event = events.next(), if to_client.is_none() && !events_done => {
                match event {
                    Some(event) => to_client = Some(client_event(event)),
                    None => events_done = true,
                }
            }
            () = events_tx.closed(), if to_client.is_none() => {
                return left("the client went away");
            }
            () = shutdown.cancelled() => {
                let refusal = ApiError::new(ErrorCode::Unavailable, SHUTTING_DOWN);
                // a client that reads nothing does not hold the shutdown up
                let _ = tokio::time::timeout(LAST_WORD, events_tx.send(Err(refusal.into()))).await;
                return SessionEnd::Failed {
                    code: ErrorCode::Unavailable.as_str(),
                };
            }
        }
    }
}

fn left(reason: &str) -> SessionEnd {
    SessionEnd::Left {
        reason: reason.to_owned(),
    }
}

type ClientEvent = (Result<pb::SessionEvent, Status>, Option<SessionEnd>);

/// A session event as the client's message, and how the stream ends if it is the last.
fn client_event(event: SessionEvent) -> ClientEvent {
    use pb::session_event::Event;
    let message = |event| Ok(pb::SessionEvent { event: Some(event) });
    match event {
        SessionEvent::Output {
            stream,
            data,
            offset,
        } => (
            message(Event::Output(pb::SessionOutput {
                stream: stream.as_str().to_owned(),
                data,
                offset,
            })),
            None,
        ),
        SessionEvent::Gap { bytes, offset } => {
            (message(Event::Gap(pb::SessionGap { bytes, offset })), None)
        }
        SessionEvent::Exit {
            exit_code,
            signal,
            duration_ms,
        } => (
            message(Event::Exit(pb::SessionExit {
                exit_code,
                signal: signal.clone().unwrap_or_default(),
                duration_ms,
            })),
            Some(SessionEnd::Exit { exit_code, signal }),
        ),
        SessionEvent::Keepalive => (message(Event::Keepalive(pb::SessionKeepalive {})), None),
        SessionEvent::Detached { reason } => (
            message(Event::Detached(pb::SessionDetached {
                reason: reason.clone(),
            })),
            Some(SessionEnd::Detached { reason }),
        ),
        SessionEvent::Problem {
            code,
            message: text,
        } => (
            message(Event::Error(pb::SessionProblem {
                code: code.as_str().to_owned(),
                message: text,
            })),
            None,
        ),
        SessionEvent::Failed { code, message } => (
            Err(ApiError::new(code, message).into()),
            Some(SessionEnd::Failed {
                code: code.as_str(),
            }),
        ),
    }
}

pub fn session_info_message(info: SessionInfo) -> pb::SessionInfo {
    pb::SessionInfo {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_with_a_session_id_attaches() {
        let open = pb::SessionOpen {
            sandbox_id: "sbx-1".into(),
            session_id: "ses-1".into(),
            offset: 5,
            generation: 99,
            ..Default::default()
        };
        let (sandbox_id, open) = session_open(open).unwrap();
        assert_eq!(sandbox_id, "sbx-1");
        assert_eq!(
            open,
            SessionOpen::Attach(SessionAttach {
                session_id: "ses-1".into(),
                offset: 5,
                takeover: false
            })
        );
        let both = pb::SessionOpen {
            session_id: "ses-1".into(),
            command: "ls".into(),
            ..Default::default()
        };
        assert!(session_open(both).is_err());
    }

    #[test]
    fn a_new_command_takes_its_timeout_as_a_duration() {
        let open = pb::SessionOpen {
            command: "sleep 5".into(),
            timeout: "90s".into(),
            tty: true,
            no_stdin: true,
            ..Default::default()
        };
        let (_, SessionOpen::Start(start)) = session_open(open).unwrap() else {
            panic!("not a start");
        };
        assert_eq!(start.timeout, Some(std::time::Duration::from_secs(90)));
        assert_eq!(start.tty, Some(TerminalSize::default()));
        assert!(!start.stdin);
        let bad = pb::SessionOpen {
            command: "x".into(),
            timeout: "soon".into(),
            ..Default::default()
        };
        assert_eq!(
            session_open(bad).unwrap_err().code,
            crate::error::ErrorCode::BadRequest
        );
    }

    #[test]
    fn a_second_open_is_a_protocol_error() {
        use pb::session_request::Message;
        let open = pb::SessionRequest {
            message: Some(Message::Open(pb::SessionOpen::default())),
        };
        assert!(session_input(open).is_err());
        let empty = pb::SessionRequest { message: None };
        assert_eq!(session_input(empty).unwrap(), None);
    }
}
