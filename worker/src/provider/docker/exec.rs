//! Running a command in a sandbox's container: an engine exec without a TTY, so
//! stdout and stderr stay apart, pumped into a bounded channel (a slow reader stops
//! the pump, the engine's pipe fills and the command blocks: memory stays bounded),
//! raced against the timeout and the receiver going away, then the exit code from
//! `inspect_exec`.
//!
//! Every command carries `BERTH_EXEC_ID=<random>` in its environment. On a timeout or
//! a dropped receiver a second exec (`scripts::KILL`) SIGKILLs every process with that
//! marker, so the command dies inside the container, children included, not just the
//! attach.

use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::engine::{engine_error, message_of, status_of};
use super::scripts;
use crate::provider::{ExecEvent, ProviderError};

/// Capacity of an exec event channel.
const EXEC_BUFFER: usize = 16;
/// Most output a provider-internal command (file helpers) may produce.
const MAX_HELPER_OUTPUT: usize = 64 * 1024 * 1024;
/// How long the killer may take.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest chunk read from the engine at once.
const OUTPUT_CAPACITY: usize = 64 * 1024;

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

/// Starts `command`; events arrive on the receiver as the command produces them.
pub async fn stream(
    docker: &Docker,
    container: &str,
    sandbox_id: &str,
    command: Command,
    tasks: &TaskTracker,
) -> Result<mpsc::Receiver<ExecEvent>, ProviderError> {
    let marker = uuid::Uuid::new_v4().simple().to_string();
    let mut env: Vec<String> = command
        .env
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    env.push(format!("{}={marker}", scripts::EXEC_MARKER));
    let options = CreateExecOptions {
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        attach_stdin: Some(false),
        tty: Some(false),
        env: Some(env),
        cmd: Some(command.argv.clone()),
        working_dir: Some(command.workdir.clone()),
        ..Default::default()
    };
    let created = docker
        .create_exec(container, options)
        .await
        .map_err(|err| exec_error(sandbox_id, err))?;
    let start = StartExecOptions {
        detach: false,
        tty: false,
        output_capacity: Some(OUTPUT_CAPACITY),
    };
    let started_at = Instant::now();
    let output = match docker
        .start_exec(&created.id, Some(start))
        .await
        .map_err(|err| exec_error(sandbox_id, err))?
    {
        StartExecResults::Attached { output, .. } => output,
        StartExecResults::Detached => {
            return Err(ProviderError::Internal(
                "the engine detached an attached exec".into(),
            ));
        }
    };
    let (tx, rx) = mpsc::channel(EXEC_BUFFER);
    let pump = Pump {
        docker: docker.clone(),
        container: container.to_owned(),
        sandbox_id: sandbox_id.to_owned(),
        exec_id: created.id,
        marker,
        timeout: command.timeout,
        started_at,
        tx,
    };
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

fn exec_error(sandbox_id: &str, err: bollard::errors::Error) -> ProviderError {
    match status_of(&err) {
        Some(404) => ProviderError::SandboxNotFound(sandbox_id.to_owned()),
        Some(409) => ProviderError::Unavailable(format!(
            "sandbox {sandbox_id:?} is not running: {}",
            message_of(&err)
        )),
        _ => engine_error("exec", err),
    }
}

type EngineOutput = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>,
>;

/// The task behind one exec's channel.
struct Pump {
    docker: Docker,
    container: String,
    sandbox_id: String,
    exec_id: String,
    marker: String,
    timeout: Duration,
    started_at: Instant,
    tx: mpsc::Sender<ExecEvent>,
}

/// Why a pump stopped before the command's end.
enum Stop {
    TimedOut,
    ReceiverGone,
    Broken(String),
}

impl Pump {
    async fn run(self, output: EngineOutput) {
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
        let killed = tokio::time::timeout(
            KILL_TIMEOUT,
            kill(&self.docker, &self.container, &self.marker),
        )
        .await;
        match killed {
            Ok(Ok(())) => tracing::debug!(sandbox_id = %self.sandbox_id, "command killed"),
            Ok(Err(err)) => {
                tracing::debug!(sandbox_id = %self.sandbox_id, error = %err, "cannot kill a command")
            }
            Err(_) => tracing::warn!(sandbox_id = %self.sandbox_id, "killing a command timed out"),
        }
    }
}

/// Runs the killer for `marker` and waits for it to finish.
async fn kill(
    docker: &Docker,
    container: &str,
    marker: &str,
) -> Result<(), bollard::errors::Error> {
    let options = CreateExecOptions {
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        cmd: Some(vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            scripts::KILL.to_owned(),
            "berth-kill".to_owned(),
            marker.to_owned(),
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
