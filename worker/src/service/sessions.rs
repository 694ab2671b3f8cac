//! `WorkerService.Session`, `ListSessions` and `KillSession`: the mesh's side of
//! interactive sessions (`crate::sessions`). One stream carries one attached client:
//! its first message opens a new session or attaches to one, then client input goes
//! to the command while the session's output, gap reports and end come back.
//!
//! Input and output move independently (a command that is not reading its stdin does
//! not stop its output reaching the client, and the other way round), each bounded.
//! A client that goes away detaches; one that ends its request stream only stops
//! sending (stdin is closed only by an explicit `eof`: a lost connection must not end
//! a shell another client may come back to).

use std::time::Duration;

use berth_proto::v1 as pb;
use pb::session_event::Event as Out;
use pb::session_request::Message as In;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};

use super::{ResponseStream, WorkerGrpc, duration_ms, status};
use crate::clock;
use crate::provider::{
    ExecMode, ExecSpec, ProcessInput, ProcessSpec, ProviderError, Signal, TermSize,
};
use crate::sessions::{Attachment, End, Event, SessionError, SessionInput, Start, Summary};

/// Longest a session's command may run when the caller names no timeout.
const SESSION_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// Events waiting for the client.
const EVENT_BUFFER: usize = 16;
/// How often an idle stream carries a keepalive.
const KEEPALIVE: Duration = Duration::from_secs(15);

impl WorkerGrpc {
    pub(super) async fn open_session(
        &self,
        mut incoming: Streaming<pb::SessionRequest>,
    ) -> Result<ResponseStream<pb::SessionEvent>, Status> {
        let open = match incoming.message().await? {
            Some(pb::SessionRequest {
                message: Some(In::Open(open)),
            }) => open,
            _ => return Err(status::bad_request("the first message must be `open`")),
        };
        tracing::Span::current().record("sandbox_id", tracing::field::display(&open.sandbox_id));
        self.admit(&open.sandbox_id, open.generation).await?;
        let runtime = &self.runtime;
        let (attachment, offset) = if open.session_id.is_empty() {
            let start = session_start(&open)?;
            let background = start.background;
            let started = runtime
                .sessions
                .start(runtime.provider.as_ref(), start)
                .await;
            self.count(&runtime.metrics.sessions_started, &started);
            let session = started.map_err(status::from_session)?;
            tracing::info!(session_id = %session.id, tty = session.tty, background, "session started");
            if background {
                let started = event(Out::Started(pb::SessionStarted {
                    session_id: session.id.clone(),
                    offset: 0,
                    tty: session.tty,
                }));
                return Ok(Box::pin(tokio_stream::once(Ok(started))));
            }
            (session.attach(0, false).await, 0)
        } else {
            let session = runtime
                .sessions
                .get(&open.sandbox_id, &open.session_id)
                .map_err(status::from_session)?;
            (
                session.attach(open.offset, open.takeover).await,
                open.offset,
            )
        };
        let attachment = attachment.map_err(status::from_session)?;
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        let started = event(Out::Started(pb::SessionStarted {
            session_id: attachment.session().id.clone(),
            offset,
            tty: attachment.session().tty,
        }));
        // room for it: the channel is new
        let _ = tx.try_send(Ok(started));
        let detach = CancellationToken::new();
        let (problems_tx, problems) = mpsc::channel(4);
        tokio::spawn(forward_input(
            incoming,
            attachment.input(),
            detach.clone(),
            problems_tx,
        ));
        tokio::spawn(forward_output(attachment, tx, detach, problems));
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    pub(super) fn sessions_of(&self, sandbox_id: &str) -> pb::ListSessionsResponse {
        pb::ListSessionsResponse {
            sessions: self
                .runtime
                .sessions
                .list(sandbox_id)
                .into_iter()
                .map(session_info)
                .collect(),
        }
    }

    pub(super) async fn signal_session(
        &self,
        request: pb::KillSessionRequest,
    ) -> Result<pb::SessionInfo, Status> {
        self.admit(&request.sandbox_id, request.generation).await?;
        let signal = if request.signal.is_empty() {
            Signal::KILL
        } else {
            Signal::parse(&request.signal).map_err(status::bad_request)?
        };
        let summary = self
            .runtime
            .sessions
            .kill(&request.sandbox_id, &request.session_id, signal)
            .await
            .map_err(status::from_session)?;
        tracing::info!(session_id = %request.session_id, %signal, "session signalled");
        Ok(session_info(summary))
    }
}

fn event(out: Out) -> pb::SessionEvent {
    pb::SessionEvent { event: Some(out) }
}

fn session_start(open: &pb::SessionOpen) -> Result<Start, Status> {
    if open.command.is_empty() {
        return Err(status::bad_request(
            "command is empty (give a command, or a session_id to attach to)",
        ));
    }
    let mode = match pb::ExecMode::try_from(open.mode) {
        Ok(pb::ExecMode::Argv) => ExecMode::Argv,
        _ => ExecMode::Shell,
    };
    let exec = ExecSpec {
        command: open.command.clone(),
        args: open.args.clone(),
        mode,
        env: open.env.clone().into_iter().collect(),
        workdir: Some(open.workdir.clone()).filter(|w| !w.is_empty()),
        timeout: match open.timeout_ms {
            0 => SESSION_TIMEOUT,
            ms => Duration::from_millis(ms).min(SESSION_TIMEOUT),
        },
    };
    let command = exec.command_line();
    let size = open.size.unwrap_or_default();
    Ok(Start {
        sandbox_id: open.sandbox_id.clone(),
        spec: ProcessSpec {
            exec,
            tty: open.tty.then(|| TermSize::or_default(size.cols, size.rows)),
            stdin: !open.no_stdin,
        },
        background: open.background,
        command,
    })
}

/// Client messages to the command, until the client stops sending or detaches.
async fn forward_input(
    mut incoming: Streaming<pb::SessionRequest>,
    input: SessionInput,
    detach: CancellationToken,
    problems: mpsc::Sender<pb::SessionProblem>,
) {
    loop {
        let message = tokio::select! {
            message = incoming.message() => message,
            () = detach.cancelled() => return,
        };
        let message = match message {
            Ok(Some(pb::SessionRequest {
                message: Some(message),
            })) => message,
            Ok(Some(_)) => continue,
            // the client stopped sending, or went away (then the output side sees it)
            Ok(None) | Err(_) => return,
        };
        let sent = match message {
            In::Stdin(data) => input.send(ProcessInput::Stdin(data)).await,
            In::Resize(size) => {
                input
                    .send(ProcessInput::Resize(TermSize::or_default(
                        size.cols, size.rows,
                    )))
                    .await
            }
            In::Signal(name) => match Signal::parse(&name) {
                Ok(signal) => input.send(ProcessInput::Signal(signal)).await,
                Err(message) => Err(SessionError::Provider(ProviderError::InvalidArgument(
                    message,
                ))),
            },
            In::Eof(_) => input.send(ProcessInput::Eof).await,
            In::Detach(_) => {
                detach.cancel();
                return;
            }
            In::Open(_) => Err(SessionError::Provider(ProviderError::InvalidArgument(
                "the session is already open".into(),
            ))),
        };
        match sent {
            Ok(()) => {}
            Err(SessionError::NotAttached) => return,
            Err(err) => {
                let status = status::from_session(err);
                let code = berth_proto::ErrorCode::of_status(&status)
                    .unwrap_or(berth_proto::ErrorCode::BadRequest);
                let problem = pb::SessionProblem {
                    code: code.as_str().to_owned(),
                    message: status.message().to_owned(),
                };
                if problems.send(problem).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The session's output to the client, until its end, a detach or the client going.
async fn forward_output(
    mut attachment: Attachment,
    tx: mpsc::Sender<Result<pb::SessionEvent, Status>>,
    detach: CancellationToken,
    mut problems: mpsc::Receiver<pb::SessionProblem>,
) {
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.reset();
    loop {
        let (next, last) = tokio::select! {
            biased;
            () = tx.closed() => break,
            () = detach.cancelled() => {
                (Out::Detached(pb::SessionDetached { reason: "detach".into() }), true)
            }
            Some(problem) = problems.recv() => (Out::Error(problem), false),
            found = attachment.next() => match found {
                Some(found) => {
                    let last = matches!(found, Event::End(_) | Event::Detached(_));
                    (session_event(found), last)
                }
                None => break,
            },
            _ = keepalive.tick() => (Out::Keepalive(pb::SessionKeepalive {}), false),
        };
        keepalive.reset();
        // an output piece taken from the session counts as sent: it goes out even when
        // a detach comes meanwhile (the detach follows it), or a client resuming from
        // its last offset would find those bytes gone
        let sent = tx.send(Ok(event(next))).await;
        if sent.is_err() || last {
            break;
        }
    }
    // dropping the attachment detaches; the command runs on for the grace period
    drop(attachment);
}

fn session_event(found: Event) -> Out {
    match found {
        Event::Output(piece) => Out::Output(pb::SessionOutput {
            stream: piece.stream.as_str().to_owned(),
            data: piece.data.to_vec(),
            offset: piece.offset,
        }),
        Event::Gap { bytes, offset } => Out::Gap(pb::SessionGap { bytes, offset }),
        Event::End(End::Exit {
            code,
            signal,
            duration,
        }) => Out::Exit(pb::SessionExit {
            exit_code: code,
            signal: signal.map(|signal| signal.name()).unwrap_or_default(),
            duration_ms: duration_ms(duration),
        }),
        Event::End(End::Failed(err)) => {
            let (_, code) = super::provider_codes(&err);
            Out::Error(pb::SessionProblem {
                code: code.as_str().to_owned(),
                message: err.to_string(),
            })
        }
        Event::Detached(reason) => Out::Detached(pb::SessionDetached {
            reason: reason.to_owned(),
        }),
    }
}

fn session_info(summary: Summary) -> pb::SessionInfo {
    let (state, exit_code, signal) = match &summary.end {
        None => ("running", 0, String::new()),
        Some(End::Exit { code, signal, .. }) => (
            "exited",
            *code,
            signal.map(|signal| signal.name()).unwrap_or_default(),
        ),
        Some(End::Failed(_)) => ("failed", -1, String::new()),
    };
    pb::SessionInfo {
        session_id: summary.session_id,
        sandbox_id: summary.sandbox_id,
        command: summary.command,
        tty: summary.tty,
        state: state.to_owned(),
        exit_code,
        signal,
        started_at_ms: clock::unix_ms(summary.started_at),
        ended_at_ms: summary.ended_at.map_or(0, clock::unix_ms),
        attached: summary.attached,
        output_offset: summary.output_offset,
        buffer_start: summary.buffer_start,
        background: summary.background,
    }
}
