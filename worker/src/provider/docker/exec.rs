//! Running a command in a sandbox's container: an engine exec without a TTY, so
//! stdout and stderr stay apart, pumped into a bounded channel (a slow reader stops
//! the pump, the engine's pipe fills and the command blocks: memory stays bounded),
//! raced against the timeout and the receiver going away, then the exit code from
//! `inspect_exec`.
//!
//! Every command carries `BERTH_EXEC_ID=<random>` in its environment. On a timeout or
//! a dropped receiver a second exec (`scripts::SIGNAL`) SIGKILLs every process with
//! that marker, so the command dies inside the container, children included, not just
//! the attach.
//!
//! The interactive processes of `process` start and pump their execs with the same
//! pieces ([`create`], [`Pump`], [`signal`]); a terminal's exec is started on a
//! connection of its own (`hijack`).

use std::pin::Pin;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use futures::StreamExt;
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::engine::{engine_error, status_of};
use super::scripts;
use crate::provider::{ExecEvent, ProviderError, Signal, TermSize};

/// Capacity of an exec event channel.
pub const EXEC_BUFFER: usize = 16;
/// Most output a provider-internal command (file helpers) may produce.
const MAX_HELPER_OUTPUT: usize = 64 * 1024 * 1024;
/// How long signalling (or killing) a command may take.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest chunk read from the engine at once.
pub const OUTPUT_CAPACITY: usize = 64 * 1024;

/// What to run.
#[derive(Debug, Clone)]
pub struct Command {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub workdir: String,
    pub timeout: Duration,
}

/// A command's collected outcome.
#[derive(Debug, Clone, Default)]
pub struct Output {
    pub code: i64,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_owned()
    }
}

/// How a command is attached: a terminal of this size or none, stdin open or not.
#[derive(Debug, Clone, Copy, Default)]
pub struct Attach {
    pub tty: Option<TermSize>,
    pub stdin: bool,
}

/// The engine's write half of an attached exec: the command's stdin.
pub type EngineInput = Pin<Box<dyn AsyncWrite + Send>>;

/// A created exec, not started yet.
pub struct Created {
    pub exec_id: String,
    /// The value of [`scripts::EXEC_MARKER`] in the command's environment.
    pub marker: String,
}

/// A started exec, attached.
pub struct Started {
    pub exec_id: String,
    pub marker: String,
    pub started_at: Instant,
    pub output: EngineOutput,
    pub input: EngineInput,
}

/// Creates `command`, to be attached as `attach` says, with the marker in its
/// environment.
pub async fn create(
    docker: &Docker,
    container: &str,
    sandbox_id: &str,
    command: &Command,
    attach: Attach,
) -> Result<Created, ProviderError> {
    let marker = uuid::Uuid::new_v4().simple().to_string();
    let mut env: Vec<String> = command
        .env
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    env.push(format!("{}={marker}", scripts::EXEC_MARKER));
    let options = ExecConfig {
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        attach_stdin: Some(attach.stdin),
        tty: Some(attach.tty.is_some()),
        // [rows, cols]; engines before API 1.42 ignore it (the caller resizes)
        console_size: attach
            .tty
            .map(|size| vec![usize::from(size.rows), usize::from(size.cols)]),
        env: Some(env),
        cmd: Some(command.argv.clone()),
        working_dir: Some(command.workdir.clone()),
        ..Default::default()
    };
    let created = docker
        .create_exec(container, options)
        .await
        .map_err(|err| exec_error(sandbox_id, err))?;
    Ok(Created {
        exec_id: created.id,
        marker,
    })
}

/// Starts an exec created without a terminal, attached through the engine's framed
/// stream (stdout and stderr apart).
pub async fn start(
    docker: &Docker,
    sandbox_id: &str,
    created: Created,
) -> Result<Started, ProviderError> {
    let start = StartExecOptions {
        detach: false,
        tty: false,
        output_capacity: Some(OUTPUT_CAPACITY),
    };
    let started_at = Instant::now();
    match docker
        .start_exec(&created.exec_id, Some(start))
        .await
        .map_err(|err| exec_error(sandbox_id, err))?
    {
        StartExecResults::Attached { output, input } => Ok(Started {
            exec_id: created.exec_id,
            marker: created.marker,
            started_at,
            output,
            input,
        }),
        StartExecResults::Detached => Err(ProviderError::Internal(
            "the engine detached an attached exec".into(),
        )),
    }
}

/// Starts `command`; events arrive on the receiver as the command produces them.
pub async fn stream(
    docker: &Docker,
    container: &str,
    sandbox_id: &str,
    command: Command,
    tasks: &TaskTracker,
) -> Result<mpsc::Receiver<ExecEvent>, ProviderError> {
    let created = create(docker, container, sandbox_id, &command, Attach::default()).await?;
    let started = start(docker, sandbox_id, created).await?;
    let (tx, rx) = mpsc::channel(EXEC_BUFFER);
    let (pump, output, _input) = Pump::new(
        docker,
        container,
        sandbox_id,
        started,
        command.timeout,
        false,
        tx,
    );
    // in the caller's span, so what the pump logs names the call's sandbox
    tasks.spawn(pump.run(output).in_current_span());
    Ok(rx)
}

/// Runs a provider-internal command to completion and collects its output.
pub async fn run(
    docker: &Docker,
    container: &str,
    sandbox_id: &str,
    command: Command,
    tasks: &TaskTracker,
) -> Result<Output, ProviderError> {
    let mut events = stream(docker, container, sandbox_id, command, tasks).await?;
    let mut output = Output::default();
    while let Some(event) = events.recv().await {
        match event {
            ExecEvent::Stdout(data) => output.stdout.extend_from_slice(&data),
            ExecEvent::Stderr(data) => output.stderr.extend_from_slice(&data),
            ExecEvent::Exit { code, .. } => {
                output.code = i64::from(code);
                return Ok(output);
            }
            ExecEvent::Failed(err) => return Err(err),
        }
        if output.stdout.len() + output.stderr.len() > MAX_HELPER_OUTPUT {
            return Err(ProviderError::Internal(format!(
                "a helper command printed more than {MAX_HELPER_OUTPUT} bytes"
            )));
        }
    }
    Err(ProviderError::Internal(
        "a helper command ended without an exit status".into(),
    ))
}

pub fn exec_error(sandbox_id: &str, err: bollard::errors::Error) -> ProviderError {
    match status_of(&err) {
        Some(404) => ProviderError::SandboxNotFound(sandbox_id.to_owned()),
        // the container is not running: stopped (by `berth sandbox stop`, or its
        // process ended); `start` brings it back
        Some(409) => ProviderError::Stopped(sandbox_id.to_owned()),
        _ => engine_error("exec", err),
    }
}

/// The engine's read half of an attached exec: the command's output.
pub type EngineOutput =
    Pin<Box<dyn futures::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;

/// The task behind one exec's channel.
pub struct Pump {
    docker: Docker,
    container: String,
    sandbox_id: String,
    exec_id: String,
    marker: String,
    timeout: Duration,
    started_at: Instant,
    /// Output comes from a terminal: all of it is stdout.
    tty: bool,
    tx: mpsc::Sender<ExecEvent>,
}

/// Why a pump stopped before the command's end.
enum Stop {
    TimedOut,
    ReceiverGone,
    Broken(String),
}

impl Pump {
    /// The pump for `started`, and the output and input it leaves to the caller.
    pub fn new(
        docker: &Docker,
        container: &str,
        sandbox_id: &str,
        started: Started,
        timeout: Duration,
        tty: bool,
        tx: mpsc::Sender<ExecEvent>,
    ) -> (Self, EngineOutput, EngineInput) {
        let pump = Self {
            docker: docker.clone(),
            container: container.to_owned(),
            sandbox_id: sandbox_id.to_owned(),
            exec_id: started.exec_id,
            marker: started.marker,
            timeout,
            started_at: started.started_at,
            tty,
            tx,
        };
        (pump, started.output, started.input)
    }

    /// Forwards the output, then the exit status; on a timeout or a dropped receiver
    /// kills the command instead.
    pub async fn run(self, output: EngineOutput) {
        let deadline = tokio::time::Instant::from_std(self.started_at) + self.timeout;
        match self.pump(output, deadline).await {
            Ok(()) => {}
            Err(stop) => {
                self.kill().await;
                match stop {
                    Stop::TimedOut => {
                        let _ = self
                            .tx
                            .send(ExecEvent::Failed(ProviderError::Timeout(self.timeout)))
                            .await;
                    }
                    Stop::ReceiverGone => {}
                    Stop::Broken(reason) => {
                        let _ = self
                            .tx
                            .send(ExecEvent::Failed(ProviderError::Unavailable(reason)))
                            .await;
                    }
                }
                return;
            }
        }
        let event = match self.exit_code(deadline).await {
            Ok(code) => ExecEvent::Exit {
                code,
                duration: self.started_at.elapsed(),
            },
            Err(Stop::TimedOut) => {
                self.kill().await;
                ExecEvent::Failed(ProviderError::Timeout(self.timeout))
            }
            Err(Stop::ReceiverGone) => {
                self.kill().await;
                return;
            }
            Err(Stop::Broken(reason)) => ExecEvent::Failed(self.ended_badly(reason).await),
        };
        let _ = self.tx.send(event).await;
    }

    /// Forwards output until the engine closes the stream.
    async fn pump(
        &self,
        mut output: EngineOutput,
        deadline: tokio::time::Instant,
    ) -> Result<(), Stop> {
        loop {
            let item = tokio::select! {
                biased;
                () = tokio::time::sleep_until(deadline) => return Err(Stop::TimedOut),
                () = self.tx.closed() => return Err(Stop::ReceiverGone),
                item = output.next() => item,
            };
            let event = match item {
                None => return Ok(()),
                Some(Ok(LogOutput::StdOut { message })) => ExecEvent::Stdout(message.to_vec()),
                // a terminal's output comes raw, as `Console`
                Some(Ok(LogOutput::Console { message })) if self.tty => {
                    ExecEvent::Stdout(message.to_vec())
                }
                Some(Ok(LogOutput::StdErr { message } | LogOutput::Console { message })) => {
                    ExecEvent::Stderr(message.to_vec())
                }
                Some(Ok(LogOutput::StdIn { .. })) => continue,
                Some(Err(err)) => {
                    return Err(Stop::Broken(format!("the exec stream broke: {err}")));
                }
            };
            // waiting for room here is the backpressure: the engine's pipe fills behind
            tokio::select! {
                biased;
                () = tokio::time::sleep_until(deadline) => return Err(Stop::TimedOut),
                permit = self.tx.reserve() => match permit {
                    Ok(permit) => permit.send(event),
                    Err(_) => return Err(Stop::ReceiverGone),
                },
            }
        }
    }

    /// The exit code once the engine has recorded it.
    async fn exit_code(&self, deadline: tokio::time::Instant) -> Result<i32, Stop> {
        let mut delay = Duration::from_millis(5);
        loop {
            match self.docker.inspect_exec(&self.exec_id).await {
                Ok(inspect) if inspect.running != Some(true) => {
                    let code = inspect.exit_code.unwrap_or(-1);
                    return Ok(i32::try_from(code).unwrap_or(-1));
                }
                Ok(_) => {}
                Err(err) if status_of(&err) == Some(404) => {
                    return Err(Stop::Broken("the exec is gone".into()));
                }
                Err(err) => return Err(Stop::Broken(format!("inspect exec: {err}"))),
            }
            tokio::select! {
                biased;
                () = tokio::time::sleep_until(deadline) => return Err(Stop::TimedOut),
                () = self.tx.closed() => return Err(Stop::ReceiverGone),
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_millis(200));
        }
    }

    /// What to report when the exec's end could not be read: a sandbox destroyed
    /// meanwhile is not found; anything else is the engine's trouble.
    async fn ended_badly(&self, reason: String) -> ProviderError {
        match self.docker.inspect_container(&self.container, None).await {
            Err(err) if status_of(&err) == Some(404) => {
                ProviderError::SandboxNotFound(self.sandbox_id.clone())
            }
            _ => ProviderError::Unavailable(reason),
        }
    }

    /// Ends the command inside the container (best effort: a sandbox that is gone
    /// took its processes with it).
    async fn kill(&self) {
        signal(
            &self.docker,
            &self.container,
            &self.sandbox_id,
            &self.marker,
            Signal::KILL,
        )
        .await;
    }
}

/// Sends `signal` to every process of the command marked `marker` (SIGKILL ends them
/// all, children included); best effort, logged, bounded by [`KILL_TIMEOUT`].
pub async fn signal(
    docker: &Docker,
    container: &str,
    sandbox_id: &str,
    marker: &str,
    signal: Signal,
) {
    let sent = tokio::time::timeout(
        KILL_TIMEOUT,
        run_signaller(docker, container, marker, signal),
    )
    .await;
    match sent {
        Ok(Ok(())) => tracing::debug!(sandbox_id, %signal, "command signalled"),
        Ok(Err(err)) => {
            tracing::debug!(sandbox_id, %signal, error = %err, "cannot signal a command")
        }
        Err(_) => tracing::warn!(sandbox_id, %signal, "signalling a command timed out"),
    }
}

/// Runs [`scripts::SIGNAL`] for `marker` and waits for it to finish.
async fn run_signaller(
    docker: &Docker,
    container: &str,
    marker: &str,
    signal: Signal,
) -> Result<(), bollard::errors::Error> {
    let options = CreateExecOptions {
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        cmd: Some(vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            scripts::SIGNAL.to_owned(),
            "berth-signal".to_owned(),
            marker.to_owned(),
            signal.number().to_string(),
        ]),
        ..Default::default()
    };
    let created = docker.create_exec(container, options).await?;
    if let StartExecResults::Attached { mut output, .. } =
        docker.start_exec(&created.id, None).await?
    {
        while output.next().await.is_some() {}
    }
    Ok(())
}
