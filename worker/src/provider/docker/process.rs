//! Interactive commands (`Provider::start_process`): an engine exec attached with
//! stdin and, if asked, a terminal, started and pumped like any command (`exec`: the
//! marker in its environment, a bounded event channel, the timeout, a dropped receiver
//! killing it) plus a feeder for its [`ProcessInput`]s, in the same task:
//!
//! - `Stdin` bytes are written to the engine's connection (and flushed). Writes wait
//!   while the command does not read (the engine's pipe is full), and the input queued
//!   behind them waits too: the session's input channel is bounded, so nothing grows.
//! - `Eof`, or dropping the input sender, closes stdin: without a terminal the
//!   connection's write half is shut down, the engine closes the command's stdin and
//!   it reads end-of-file. With a terminal that would not do: the engine stops sending
//!   output when a terminal's input ends, and the terminal stays open (the command
//!   would wait forever, unseen). There the terminal's end-of-file character (Ctrl-D)
//!   is typed instead and the connection stays open: a command reading lines reads
//!   end-of-file (after a partial line, that line first).
//! - `Resize` resizes the exec's terminal. The engine can only resize a started exec,
//!   so the initial size is set right after the start (retried briefly while the
//!   engine says the exec is not running yet); engines from API 1.42 also take it at
//!   creation and start (`ConsoleSize`).
//! - `Signal` runs the signaller (`scripts::SIGNAL`) for the command's marker: every
//!   process of the command gets it. Ctrl-C in a terminal needs none of this: byte
//!   0x03 on stdin reaches the terminal's foreground process group.
//!
//! With a terminal the engine sends the output raw; all of it is stdout, read on a
//! connection of our own (`hijack`), not through bollard's reader.

use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::exec::ResizeExecOptions;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::engine::{message_of, status_of};
use super::exec::{
    self, Attach, Command, EXEC_BUFFER, EngineInput, OUTPUT_CAPACITY, Pump, Started, exec_error,
};
use super::hijack::{self, Endpoint};
use crate::provider::process::INPUT_BUFFER;
use crate::provider::{Process, ProcessInput, ProviderError, TermSize};

/// The terminal type a command with a terminal gets unless its caller set `TERM`.
const TERM: &str = "xterm-256color";
/// A terminal's end-of-file character (Ctrl-D, `stty eof`'s default).
const VEOF: u8 = 0x04;
/// How long the initial resize is retried while the engine has not started the exec.
const INITIAL_RESIZE_WAIT: Duration = Duration::from_secs(2);

/// Starts `command` attached as `attach` says; see the module docs.
pub async fn start(
    endpoint: &Endpoint,
    docker: &Docker,
    container: &str,
    sandbox_id: &str,
    mut command: Command,
    attach: Attach,
    tasks: &TaskTracker,
) -> Result<Process, ProviderError> {
    if attach.tty.is_some() && !command.env.iter().any(|(key, _)| key == "TERM") {
        command.env.push(("TERM".to_owned(), TERM.to_owned()));
    }
    let created = exec::create(docker, container, sandbox_id, &command, attach).await?;
    let started = match attach.tty {
        None => exec::start(docker, sandbox_id, created).await?,
        Some(size) => {
            let started_at = Instant::now();
            let (output, input) = hijack::start_tty(
                endpoint,
                docker,
                &created.exec_id,
                [size.rows, size.cols],
                OUTPUT_CAPACITY,
            )
            .await
            .map_err(|err| exec_error(sandbox_id, err))?;
            Started {
                exec_id: created.exec_id,
                marker: created.marker,
                started_at,
                output,
                input,
            }
        }
    };
    let feeder = Feeder {
        docker: docker.clone(),
        container: container.to_owned(),
        sandbox_id: sandbox_id.to_owned(),
        exec_id: started.exec_id.clone(),
        marker: started.marker.clone(),
        tty: attach.tty,
    };
    let (events_tx, events) = mpsc::channel(EXEC_BUFFER);
    let (input, input_rx) = mpsc::channel(INPUT_BUFFER);
    let (pump, output, stdin) = Pump::new(
        docker,
        container,
        sandbox_id,
        started,
        command.timeout,
        attach.tty.is_some(),
        events_tx,
    );
    let stdin = Stdin {
        sandbox_id: sandbox_id.to_owned(),
        open: attach.stdin.then_some(stdin),
        tty: attach.tty.is_some(),
    };
    // the feeder never ends by itself: the command's end (or kill) ends both; once
    // the exec is started nothing is awaited before this, so a caller that goes away
    // cannot leave the command running unseen
    let task = async move {
        tokio::select! {
            () = pump.run(output) => {}
            () = feeder.run(stdin, input_rx) => {}
        }
    };
    // in the caller's span, so what the task logs names the call's sandbox
    tasks.spawn(task.in_current_span());
    Ok(Process { events, input })
}

/// Passes a process's input on to its exec.
struct Feeder {
    docker: Docker,
    container: String,
    sandbox_id: String,
    exec_id: String,
    marker: String,
    /// The terminal's initial size; `None`: no terminal.
    tty: Option<TermSize>,
}

impl Feeder {
    /// Sets the terminal's size, then handles input in order until the sender is
    /// dropped (which closes stdin); then waits for the command's end.
    async fn run(self, mut stdin: Stdin, mut input: mpsc::Receiver<ProcessInput>) {
        if let Some(size) = self.tty {
            self.initial_resize(size).await;
        }
        while let Some(message) = input.recv().await {
            match message {
                ProcessInput::Stdin(data) => stdin.write(&data).await,
                ProcessInput::Eof => stdin.close().await,
                // without a terminal there is nothing to resize
                ProcessInput::Resize(_) if self.tty.is_none() => {}
                ProcessInput::Resize(size) => {
                    if let Err(err) = self.resize(size).await {
                        tracing::debug!(sandbox_id = %self.sandbox_id, %size, error = %err, "cannot resize a terminal");
                    }
                }
                ProcessInput::Signal(signal) => {
                    exec::signal(
                        &self.docker,
                        &self.container,
                        &self.sandbox_id,
                        &self.marker,
                        signal,
                    )
                    .await;
                }
            }
        }
        stdin.close().await;
        std::future::pending().await
    }

    async fn resize(&self, size: TermSize) -> Result<(), bollard::errors::Error> {
        self.docker
            .resize_exec(
                &self.exec_id,
                ResizeExecOptions {
                    height: size.rows,
                    width: size.cols,
                },
            )
            .await
    }

    /// Sets the terminal's first size, retrying briefly while the engine has not
    /// started the exec; a failure leaves the engine's default size (logged).
    async fn initial_resize(&self, size: TermSize) {
        let deadline = tokio::time::Instant::now() + INITIAL_RESIZE_WAIT;
        let mut delay = Duration::from_millis(5);
        loop {
            let err = match self.resize(size).await {
                Ok(()) => return,
                Err(err) => err,
            };
            if self.ended().await {
                return;
            }
            let not_yet = status_of(&err) == Some(409) || message_of(&err).contains("not running");
            if !not_yet || tokio::time::Instant::now() + delay > deadline {
                tracing::warn!(sandbox_id = %self.sandbox_id, %size, error = %err, "cannot set the terminal's size");
                return;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(100));
        }
    }

    /// Whether the exec has already ended (a command too quick to resize).
    async fn ended(&self) -> bool {
        matches!(
            self.docker.inspect_exec(&self.exec_id).await,
            Ok(inspect) if inspect.running == Some(false) && inspect.exit_code.is_some()
        )
    }
}

/// A process's stdin: the write half of the engine's connection.
struct Stdin {
    sandbox_id: String,
    /// Open until `Eof` (or a write fails); `None` without stdin.
    open: Option<EngineInput>,
    /// A terminal is in between: end-of-file is typed, not a closed connection.
    tty: bool,
}

impl Stdin {
    async fn write(&mut self, data: &[u8]) {
        let Some(stdin) = self.open.as_mut() else {
            return;
        };
        let written = async {
            stdin.write_all(data).await?;
            stdin.flush().await
        }
        .await;
        if let Err(err) = written {
            // the command's end closes the connection; the pump reports that
            tracing::debug!(sandbox_id = %self.sandbox_id, error = %err, "cannot write to stdin");
            self.open = None;
        }
    }

    /// Closes stdin. Without a terminal the write half of the engine's connection is
    /// shut down: the engine closes the command's stdin and it reads end-of-file. With
    /// one, the engine would instead stop sending output (it detaches a terminal whose
    /// input ends) and the terminal would stay open: the terminal's end-of-file
    /// character (Ctrl-D) is typed instead, and the connection stays open.
    async fn close(&mut self) {
        if self.tty {
            self.write(&[VEOF]).await;
            self.open = None;
            return;
        }
        if let Some(mut stdin) = self.open.take()
            && let Err(err) = stdin.shutdown().await
        {
            tracing::debug!(sandbox_id = %self.sandbox_id, error = %err, "cannot close stdin");
        }
    }
}
