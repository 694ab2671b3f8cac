//! Interactive sessions on one worker: `WorkerService.Session` (one bidirectional
//! stream per attached client), `ListSessions` and `KillSession`.
//!
//! A session stream is opened with one `open` message and is not handed to the caller
//! before the worker answered `started`: a refusal (no such session, a stale lease, an
//! offset past the end) comes back as the call's error, before any client input was
//! taken, so a refused route can be tried again on the lease in the store. Client input
//! then goes through a bounded channel; the request stream stays open as long as the
//! events are read (stdin is closed with `eof`, never by ending the stream), and
//! dropping the events cancels the call: the worker detaches this client and the
//! command runs on.

use berth_proto::ErrorCode;
use berth_proto::v1 as pb;
use futures::stream::BoxStream;
use futures::{StreamExt, stream};
use tokio::sync::mpsc;

use super::{CALL_TIMEOUT, WorkerClient, timed};
use crate::workers::RemoteError;
use crate::workers::model::{
    OutputStream, SessionEvent, SessionInfo, SessionInput, SessionOpen, SessionStarted,
    TerminalSize,
};

/// Client messages waiting for the worker to take them: a client typing faster than
/// the worker reads waits rather than queueing without bound.
const SESSION_INPUT_BUFFER: usize = 16;

/// A session's events after `started`; the last is terminal
/// ([`SessionEvent::is_terminal`]), except after a background start, which has none.
pub type SessionEvents = BoxStream<'static, SessionEvent>;

/// An open session stream on a worker.
pub struct SessionStream {
    pub worker_id: String,
    pub started: SessionStarted,
    /// Where the client's messages go (bounded). Dropping it does not end the stream.
    pub input: mpsc::Sender<SessionInput>,
    pub events: SessionEvents,
}

impl std::fmt::Debug for SessionStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStream")
            .field("worker_id", &self.worker_id)
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

impl WorkerClient {
    /// Opens a session stream: a new command (fenced by `generation`) or an attach.
    /// No deadline: the stream lives until the command ends, the client detaches or
    /// the events are dropped.
    pub async fn session(
        &self,
        sandbox_id: &str,
        generation: u64,
        open: SessionOpen,
    ) -> Result<SessionStream, RemoteError> {
        use pb::session_event::Event;
        use pb::session_request::Message;
        let background = matches!(&open, SessionOpen::Start(start) if start.background);
        let open = pb::SessionRequest {
            message: Some(Message::Open(open_message(sandbox_id, generation, open))),
        };
        let (input, inputs) = mpsc::channel(SESSION_INPUT_BUFFER);
        let inputs = stream::unfold(inputs, |mut inputs| async move {
            let input = inputs.recv().await?;
            Some((input_message(input), inputs))
        });
        let outgoing = stream::iter([open]).chain(inputs);
        let mut events = self
            .inner
            .clone()
            .session(tonic::Request::new(outgoing))
            .await
            .map_err(|status| self.error(&status))?
            .into_inner();
        let started = loop {
            match events.next().await {
                Some(Ok(pb::SessionEvent {
                    event: Some(Event::Started(started)),
                })) => break started,
                Some(Ok(pb::SessionEvent {
                    event: Some(Event::Keepalive(_)) | None,
                })) => continue,
                Some(Ok(other)) => {
                    return Err(RemoteError::internal(
                        &self.worker_id,
                        &format!("the worker answered a session's open with {other:?}"),
                    ));
                }
                Some(Err(status)) => return Err(self.error(&status)),
                None => {
                    return Err(RemoteError::new(
                        &self.worker_id,
                        ErrorCode::Unavailable,
                        "the worker ended the session's stream before it started",
                    ));
                }
            }
        };
        let started = SessionStarted {
            session_id: started.session_id,
            offset: started.offset,
            tty: started.tty,
        };
        let events = session_events(self.worker_id.clone(), events, input.clone(), background);
        Ok(SessionStream {
            worker_id: self.worker_id.clone(),
            started,
            input,
            events,
        })
    }

    pub async fn list_sessions(&self, sandbox_id: &str) -> Result<Vec<SessionInfo>, RemoteError> {
        let answer = self
            .read_only(|mut inner| async move {
                let request = pb::ListSessionsRequest {
                    sandbox_id: sandbox_id.to_owned(),
                };
                inner.list_sessions(timed(request, CALL_TIMEOUT)).await
            })
            .await?
            .into_inner();
        Ok(answer.sessions.into_iter().map(session_info).collect())
    }

    /// Sends `signal` (empty: the worker's default, SIGKILL) to a session's command;
    /// answers the session as it is after.
    pub async fn kill_session(
        &self,
        sandbox_id: &str,
        generation: u64,
        session_id: &str,
        signal: &str,
    ) -> Result<SessionInfo, RemoteError> {
        let request = pb::KillSessionRequest {
            sandbox_id: sandbox_id.to_owned(),
            session_id: session_id.to_owned(),
            signal: signal.to_owned(),
            generation,
        };
        let answer = self
            .inner
            .clone()
            .kill_session(timed(request, CALL_TIMEOUT))
            .await
            .map_err(|status| self.error(&status))?
            .into_inner();
        Ok(session_info(answer))
    }
}

fn open_message(sandbox_id: &str, generation: u64, open: SessionOpen) -> pb::SessionOpen {
    let mut message = pb::SessionOpen {
        sandbox_id: sandbox_id.to_owned(),
        generation,
        ..Default::default()
    };
    match open {
        SessionOpen::Start(start) => {
            let mode = if start.argv {
                pb::ExecMode::Argv
            } else {
                pb::ExecMode::Shell
            };
            message.command = start.command;
            message.args = start.args;
            message.mode = mode as i32;
            message.env = start.env.into_iter().collect();
            message.workdir = start.workdir;
            message.timeout_ms = start
                .timeout
                .map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
            message.tty = start.tty.is_some();
            message.size = start.tty.map(terminal_size);
            message.background = start.background;
            message.no_stdin = !start.stdin;
        }
        SessionOpen::Attach(attach) => {
            message.session_id = attach.session_id;
            message.offset = attach.offset;
            message.takeover = attach.takeover;
        }
    }
    message
}

fn terminal_size(size: TerminalSize) -> pb::TerminalSize {
    pb::TerminalSize {
        cols: size.cols,
        rows: size.rows,
    }
}

fn input_message(input: SessionInput) -> pb::SessionRequest {
    use pb::session_request::Message;
    let message = match input {
        SessionInput::Stdin(data) => Message::Stdin(data),
        SessionInput::Resize(size) => Message::Resize(terminal_size(size)),
        SessionInput::Signal(signal) => Message::Signal(signal),
        SessionInput::Eof => Message::Eof(pb::SessionEof {}),
        SessionInput::Detach => Message::Detach(pb::SessionDetach {}),
    };
    pb::SessionRequest {
        message: Some(message),
    }
}

/// The worker's events after `started` as domain events, ending after the first
/// terminal one; a broken call, or a stream the worker ended without a terminal event
/// (other than a background start's), becomes the terminal `Failed` (with the code and
/// message of a problem reported just before the end). `keep` holds the request stream
/// open while the events are read.
fn session_events(
    worker_id: String,
    events: tonic::Streaming<pb::SessionEvent>,
    keep: mpsc::Sender<SessionInput>,
    background: bool,
) -> SessionEvents {
    struct State {
        events: tonic::Streaming<pb::SessionEvent>,
        worker_id: String,
        /// The last event was a problem: a stream that ends right after it ended
        /// because of it (the worker reports a failed command that way).
        problem: Option<(ErrorCode, String)>,
        _keep: mpsc::Sender<SessionInput>,
    }
    let state = State {
        events,
        worker_id,
        problem: None,
        _keep: keep,
    };
    stream::unfold(Some(state), move |state| async move {
        let mut state = state?;
        loop {
            let event = match state.events.next().await {
                Some(Ok(pb::SessionEvent { event: Some(event) })) => match session_event(event) {
                    Some(event) => event,
                    None => continue,
                },
                Some(Ok(pb::SessionEvent { event: None })) => continue,
                Some(Err(status)) => {
                    let err = RemoteError::from_status(&state.worker_id, &status);
                    SessionEvent::Failed {
                        code: err.code,
                        message: err.message,
                    }
                }
                None if background => return None,
                None if state.problem.is_some() => {
                    let (code, message) = state.problem.take()?;
                    SessionEvent::Failed { code, message }
                }
                None => SessionEvent::Failed {
                    code: ErrorCode::Unavailable,
                    message: "the worker ended the session's stream without an exit or a \
                              detach; the session may still run: attach again"
                        .into(),
                },
            };
            state.problem = match &event {
                SessionEvent::Problem { code, message } => Some((*code, message.clone())),
                _ => None,
            };
            let rest = (!event.is_terminal()).then_some(state);
            return Some((event, rest));
        }
    })
    .boxed()
}

/// One worker event as a domain event; `None` for one that has no place after
/// `started` (a second `started`).
fn session_event(event: pb::session_event::Event) -> Option<SessionEvent> {
    use pb::session_event::Event;
    let event = match event {
        Event::Started(_) => return None,
        Event::Output(output) => SessionEvent::Output {
            stream: if output.stream == "stderr" {
                OutputStream::Stderr
            } else {
                OutputStream::Stdout
            },
            data: output.data,
            offset: output.offset,
        },
        Event::Gap(gap) => SessionEvent::Gap {
            bytes: gap.bytes,
            offset: gap.offset,
        },
        Event::Exit(exit) => SessionEvent::Exit {
            exit_code: exit.exit_code,
            signal: (!exit.signal.is_empty()).then_some(exit.signal),
            duration_ms: exit.duration_ms,
        },
        Event::Keepalive(_) => SessionEvent::Keepalive,
        Event::Detached(detached) => SessionEvent::Detached {
            reason: detached.reason,
        },
        Event::Error(problem) => SessionEvent::Problem {
            code: ErrorCode::from_name(&problem.code.to_ascii_uppercase())
                .unwrap_or(ErrorCode::BadRequest),
            message: problem.message,
        },
    };
    Some(event)
}

fn session_info(info: pb::SessionInfo) -> SessionInfo {
    SessionInfo {
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
    use std::collections::BTreeMap;

    use super::*;
    use crate::workers::model::{SessionAttach, SessionStart};

    #[test]
    fn an_open_says_start_or_attach_and_carries_the_generation() {
        let start = SessionOpen::Start(SessionStart {
            command: "bash".into(),
            args: vec![],
            argv: true,
            env: BTreeMap::from([("A".into(), "1".into())]),
            workdir: "/tmp".into(),
            timeout: Some(std::time::Duration::from_secs(90)),
            tty: Some(TerminalSize {
                cols: 120,
                rows: 40,
            }),
            background: false,
            stdin: false,
        });
        let message = open_message("sbx-1", 7, start);
        assert_eq!(message.generation, 7);
        assert_eq!(message.mode, pb::ExecMode::Argv as i32);
        assert_eq!(message.timeout_ms, 90_000);
        assert!(message.tty && message.no_stdin);
        assert_eq!(message.size.map(|s| (s.cols, s.rows)), Some((120, 40)));
        assert!(message.session_id.is_empty());

        let attach = SessionOpen::Attach(SessionAttach {
            session_id: "ses-1".into(),
            offset: 42,
            takeover: true,
        });
        let message = open_message("sbx-1", 7, attach);
        assert_eq!(
            (
                message.session_id.as_str(),
                message.offset,
                message.takeover
            ),
            ("ses-1", 42, true)
        );
        assert!(message.command.is_empty() && !message.tty);
    }

    #[test]
    fn worker_events_become_domain_events() {
        use pb::session_event::Event;
        let exit = session_event(Event::Exit(pb::SessionExit {
            exit_code: 130,
            signal: "SIGINT".into(),
            duration_ms: 5,
        }));
        assert_eq!(
            exit,
            Some(SessionEvent::Exit {
                exit_code: 130,
                signal: Some("SIGINT".into()),
                duration_ms: 5
            })
        );
        let problem = session_event(Event::Error(pb::SessionProblem {
            code: "conflict".into(),
            message: "stdin is closed".into(),
        }))
        .unwrap();
        assert!(matches!(
            problem,
            SessionEvent::Problem {
                code: ErrorCode::Conflict,
                ..
            }
        ));
        assert!(!problem.is_terminal());
        assert_eq!(
            session_event(Event::Started(pb::SessionStarted::default())),
            None
        );
    }
}
