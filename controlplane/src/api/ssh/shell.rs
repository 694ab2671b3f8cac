//! A session channel: collects `pty-req` and `env`, then runs what the client asks
//! for. `shell` and `exec` become an interactive session on the worker (a terminal
//! when the client asked for one, stdout and stderr apart otherwise); stdin, resizes
//! and signals go to it, its output and exit status come back. `sftp` hands the
//! channel to the SFTP server. A command that cannot start is told on stderr, with
//! exit status 255 (what OpenSSH's client uses for its own failures).

use std::collections::BTreeMap;

use axum::body::Bytes;
use futures::StreamExt;
use russh::server::Msg;
use russh::{Channel, ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Sig};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Context, sftp};
use crate::api::audit::{SessionAudit, SessionEnd};
use crate::sandboxes::{
    OutputStream, SessionEvent, SessionInput, SessionOpen, SessionStart, SessionStream,
    TerminalSize,
};

/// The one subsystem served.
pub(super) const SFTP: &str = "sftp";
/// What `shell` runs (what `berth sandbox shell` runs).
const SHELL: &str = "sh";
/// The exit status of a command that could not run, as OpenSSH's client has it.
const FAILED: u32 = 255;
/// Variables a client may set, at most.
const MAX_ENV: usize = 64;
/// A variable's value, at most (bytes).
const MAX_ENV_VALUE: usize = 4096;
/// A command line, at most (bytes).
const MAX_COMMAND: usize = 64 * 1024;

/// Whether `name` may be set by `env`: a shell identifier that does not reach into
/// how the command is found or loaded.
pub(super) fn env_name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    let starts_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    starts_ok
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 128
        && !matches!(name, "PATH" | "HOME" | "SHELL" | "USER" | "LOGNAME")
        && !name.starts_with("LD_")
}

/// What the client asked of the channel before it said what to run.
#[derive(Debug, Default)]
struct Request {
    tty: Option<TerminalSize>,
    term: String,
    env: BTreeMap<String, String>,
}

/// Serves one session channel to its end.
pub(super) async fn serve(
    context: Context,
    mut channel: Channel<Msg>,
    shutdown: CancellationToken,
) {
    let mut request = Request::default();
    let command = loop {
        let Some(message) = channel.wait().await else {
            return;
        };
        match message {
            ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                ..
            } => {
                request.tty = Some(TerminalSize {
                    cols: col_width,
                    rows: row_height,
                });
                request.term = term;
            }
            ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            } if env_name_ok(&variable_name)
                && variable_value.len() <= MAX_ENV_VALUE
                && request.env.len() < MAX_ENV =>
            {
                request.env.insert(variable_name, variable_value);
            }
            ChannelMsg::RequestShell { .. } => break None,
            ChannelMsg::Exec { command, .. } => break Some(command),
            ChannelMsg::RequestSubsystem { name, .. } if name == SFTP => {
                return sftp::serve(context, channel).await;
            }
            ChannelMsg::Eof | ChannelMsg::Close => return,
            // an unknown subsystem was refused; the client may ask again
            _ => {}
        }
    };
    let login = &context.login;
    // a login shell is the sandbox's own (its template's `shell`), else `sh`
    let shell = match &command {
        Some(_) => String::new(),
        None => context
            .state
            .sandboxes
            .get(&login.access, &login.sandbox_id)
            .await
            .map(|sandbox| sandbox.shell)
            .unwrap_or_default(),
    };
    let start = match start_of(command, request, &shell) {
        Ok(start) => start,
        Err(message) => return fail(&channel.split().1, &message).await,
    };
    let opened = SessionAudit::open_as(
        &context.state,
        login.actor.clone(),
        &login.access,
        &login.sandbox_id,
        &context.connection_id,
        SessionOpen::Start(start),
    )
    .await;
    let (read, write) = channel.split();
    let (session, audit) = match opened {
        Ok(opened) => opened,
        Err(err) => return fail(&write, &err.message).await,
    };
    let end = tokio::select! {
        end = relay(read, &write, session) => end,
        () = shutdown.cancelled() => {
            let _ = write
                .extended_data_bytes(1, Bytes::from_static(
                    b"\r\nberth: the control plane is shutting down\r\n",
                ))
                .await;
            let _ = write.exit_status(FAILED).await;
            SessionEnd::Failed { code: "UNAVAILABLE" }
        }
    };
    audit.ended(end).await;
    let _ = write.eof().await;
    let _ = write.close().await;
}

/// The session a `shell` (`command` none: `shell`, "" for `sh`) or `exec` asks for.
fn start_of(
    command: Option<Vec<u8>>,
    request: Request,
    shell: &str,
) -> Result<SessionStart, String> {
    let Request { tty, term, mut env } = request;
    if tty.is_some() && !term.is_empty() {
        env.insert("TERM".into(), term);
    }
    let line = match command {
        None => String::new(),
        Some(bytes) if bytes.len() > MAX_COMMAND => {
            return Err(format!("the command is longer than {MAX_COMMAND} bytes"));
        }
        Some(bytes) => {
            String::from_utf8(bytes).map_err(|_| "the command is not UTF-8".to_owned())?
        }
    };
    // no command (a `shell`, or an empty `exec`) is the shell
    let command = match line.trim() {
        "" if shell.is_empty() => SHELL.to_owned(),
        "" => shell.to_owned(),
        line => line.to_owned(),
    };
    Ok(SessionStart {
        command,
        args: Vec::new(),
        argv: false,
        env,
        workdir: String::new(),
        timeout: None,
        tty,
        background: false,
        stdin: true,
    })
}

/// Tells the client why nothing runs, and ends the channel.
async fn fail(write: &ChannelWriteHalf<Msg>, message: &str) {
    let line = format!("berth: {message}\r\n");
    let _ = write.extended_data_bytes(1, Bytes::from(line)).await;
    let _ = write.exit_status(FAILED).await;
    let _ = write.eof().await;
    let _ = write.close().await;
}

/// Client input to the session and the session's events to the client, until the
/// command ends or the client goes.
async fn relay(
    read: ChannelReadHalf,
    write: &ChannelWriteHalf<Msg>,
    session: SessionStream,
) -> SessionEnd {
    let tty = session.started.tty;
    let SessionStream { input, events, .. } = session;
    // the client's half runs on its own: a client writing while its output waits
    // on its window must not stall the connection
    let (gone_tx, mut gone_rx) = mpsc::channel::<SessionEnd>(1);
    let client = tokio::spawn(client_to_session(read, input, tty, gone_tx));
    let end = tokio::select! {
        end = session_to_client(write, events) => end,
        Some(end) = gone_rx.recv() => end,
    };
    client.abort();
    end
}

/// The channel's messages as session input. The client closing the channel before
/// the command ended hangs it up, as sshd does.
async fn client_to_session(
    mut read: ChannelReadHalf,
    input: mpsc::Sender<SessionInput>,
    tty: bool,
    gone: mpsc::Sender<SessionEnd>,
) {
    loop {
        let message = match read.wait().await {
            None | Some(ChannelMsg::Close) => {
                let _ = input.send(SessionInput::Signal("SIGHUP".into())).await;
                let _ = input.send(SessionInput::Detach).await;
                let _ = gone
                    .send(SessionEnd::Left {
                        reason: "the SSH client closed the channel".into(),
                    })
                    .await;
                return;
            }
            Some(message) => message,
        };
        let to_send = match message {
            ChannelMsg::Data { data } => Some(SessionInput::Stdin(data.to_vec())),
            ChannelMsg::Eof => Some(SessionInput::Eof),
            ChannelMsg::WindowChange {
                col_width,
                row_height,
                ..
            } if tty => Some(SessionInput::Resize(TerminalSize {
                cols: col_width,
                rows: row_height,
            })),
            ChannelMsg::Signal { signal } => Some(SessionInput::Signal(signal_name(&signal))),
            _ => None,
        };
        if let Some(to_send) = to_send
            && input.send(to_send).await.is_err()
        {
            // the session's half is over; its events say how
            return;
        }
    }
}

/// The session's events to the client; answers how the session ended.
async fn session_to_client(
    write: &ChannelWriteHalf<Msg>,
    mut events: crate::sandboxes::SessionEvents,
) -> SessionEnd {
    let left = || SessionEnd::Left {
        reason: "the SSH client went away".into(),
    };
    while let Some(event) = events.next().await {
        match event {
            SessionEvent::Output { stream, data, .. } => {
                let sent = match stream {
                    OutputStream::Stdout => write.data_bytes(Bytes::from(data)).await,
                    OutputStream::Stderr => write.extended_data_bytes(1, Bytes::from(data)).await,
                };
                if sent.is_err() {
                    return left();
                }
            }
            SessionEvent::Gap { bytes, .. } => {
                let note = format!("\r\nberth: {bytes} bytes of output were lost\r\n");
                let _ = write.extended_data_bytes(1, Bytes::from(note)).await;
            }
            SessionEvent::Exit {
                exit_code, signal, ..
            } => {
                let status = u32::try_from(exit_code).unwrap_or(FAILED);
                let _ = write.exit_status(status).await;
                return SessionEnd::Exit { exit_code, signal };
            }
            SessionEvent::Keepalive => {}
            SessionEvent::Detached { reason } => {
                let note = format!("\r\nberth: detached ({reason})\r\n");
                let _ = write.extended_data_bytes(1, Bytes::from(note)).await;
                let _ = write.exit_status(FAILED).await;
                return SessionEnd::Detached { reason };
            }
            SessionEvent::Problem { message, .. } => {
                let note = format!("\r\nberth: {message}\r\n");
                let _ = write.extended_data_bytes(1, Bytes::from(note)).await;
            }
            SessionEvent::Failed { code, message } => {
                let note = format!("\r\nberth: {message}\r\n");
                let _ = write.extended_data_bytes(1, Bytes::from(note)).await;
                let _ = write.exit_status(FAILED).await;
                return SessionEnd::Failed {
                    code: code.as_str(),
                };
            }
        }
    }
    left()
}

/// A signal as the worker names it (`SIGINT`).
fn signal_name(signal: &Sig) -> String {
    match signal {
        Sig::ABRT => "SIGABRT".into(),
        Sig::ALRM => "SIGALRM".into(),
        Sig::FPE => "SIGFPE".into(),
        Sig::HUP => "SIGHUP".into(),
        Sig::ILL => "SIGILL".into(),
        Sig::INT => "SIGINT".into(),
        Sig::KILL => "SIGKILL".into(),
        Sig::PIPE => "SIGPIPE".into(),
        Sig::QUIT => "SIGQUIT".into(),
        Sig::SEGV => "SIGSEGV".into(),
        Sig::TERM => "SIGTERM".into(),
        Sig::USR1 => "SIGUSR1".into(),
        Sig::Custom(name) => format!("SIG{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_that_steer_the_command_are_refused() {
        assert!(env_name_ok("LANG"));
        assert!(env_name_ok("MY_VAR_2"));
        assert!(!env_name_ok("PATH"));
        assert!(!env_name_ok("LD_PRELOAD"));
        assert!(!env_name_ok("2X"));
        assert!(!env_name_ok("A-B"));
        assert!(!env_name_ok(""));
    }

    #[test]
    fn a_shell_runs_sh_with_the_terminal_type_and_an_exec_its_line() {
        let shell = start_of(
            None,
            Request {
                tty: Some(TerminalSize {
                    cols: 100,
                    rows: 30,
                }),
                term: "xterm-256color".into(),
                env: BTreeMap::new(),
            },
            "",
        )
        .unwrap();
        assert_eq!(shell.command, "sh");
        // a sandbox whose template names a shell gets it; an exec is its line
        let bash = start_of(None, Request::default(), "/bin/bash").unwrap();
        assert_eq!(bash.command, "/bin/bash");
        assert_eq!(shell.env["TERM"], "xterm-256color");
        assert_eq!(
            shell.tty,
            Some(TerminalSize {
                cols: 100,
                rows: 30
            })
        );
        let exec = start_of(Some(b"echo hi; exit 3".to_vec()), Request::default(), "").unwrap();
        assert_eq!(exec.command, "echo hi; exit 3");
        assert!(!exec.argv);
        assert!(exec.tty.is_none());
        assert!(exec.env.is_empty());
        assert!(start_of(Some(vec![0xff]), Request::default(), "").is_err());
    }
}
