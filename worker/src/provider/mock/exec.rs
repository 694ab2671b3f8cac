//! Running one command in a mock sandbox: the task behind `exec_stream`. It owns the
//! command's context (cwd, environment, where stdout and stderr go), runs a shell line
//! or an argv, races it against the timeout, the receiver going away and the sandbox's
//! destruction, sends the final event and writes the console line.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::mpsc;

use super::Sandbox;
use super::commands::{self, Flow};
use super::shell::{self, Command, Fd, Target, Word};
use super::terminal::{Io, Signals};
use crate::provider::paths::normalize_in;
use crate::provider::{ExecEvent, ExecMode, ExecSpec, ProviderError};

/// Longest command text written to the console log.
const LOG_COMMAND_CHARS: usize = 200;

/// The receiver is gone: stop producing.
#[derive(Debug)]
pub struct Stop;

/// Where a descriptor's bytes go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    Stdout,
    Stderr,
    /// Appended to this sandbox file (already truncated for `>`).
    File(String),
    /// `/dev/null`.
    Null,
}

/// The state a command runs with.
pub struct Ctx {
    pub sandbox: Arc<Sandbox>,
    pub env: BTreeMap<String, String>,
    pub cwd: String,
    pub last_status: i32,
    /// Stdin, terminal and signals (none for a plain exec).
    pub io: Io,
    /// `exit` ran: the line (and an interactive shell) ends.
    pub exited: bool,
    tx: mpsc::Sender<ExecEvent>,
    stdout: Sink,
    stderr: Sink,
}

impl Ctx {
    /// Sends bytes to wherever `fd` points now.
    pub async fn write(&mut self, fd: Fd, data: Vec<u8>) -> Result<(), Stop> {
        if data.is_empty() {
            return Ok(());
        }
        let sink = match fd {
            Fd::Stdout => &self.stdout,
            Fd::Stderr => &self.stderr,
        };
        match sink {
            Sink::Stdout => self
                .tx
                .send(ExecEvent::Stdout(data))
                .await
                .map_err(|_| Stop),
            Sink::Stderr => self
                .tx
                .send(ExecEvent::Stderr(data))
                .await
                .map_err(|_| Stop),
            Sink::Null => Ok(()),
            Sink::File(path) => {
                // Like a write to an unlinked file, a vanished target loses the bytes.
                let _ = self.sandbox.fs().append(path, &data);
                // Writing to a file never waits on a reader: let others run.
                tokio::task::yield_now().await;
                Ok(())
            }
        }
    }

    /// Points stdout and stderr back at the command's own (after an interrupted
    /// command left its redirections in place).
    pub fn reset_sinks(&mut self) {
        self.stdout = Sink::Stdout;
        self.stderr = Sink::Stderr;
    }

    pub async fn out(&mut self, text: impl Into<Vec<u8>>) -> Result<(), Stop> {
        self.write(Fd::Stdout, text.into()).await
    }

    pub async fn err(&mut self, text: impl Into<Vec<u8>>) -> Result<(), Stop> {
        self.write(Fd::Stderr, text.into()).await
    }

    /// A path as the command names it, made absolute from the cwd.
    pub fn resolve(&self, path: &str) -> Result<String, ProviderError> {
        normalize_in(path, &self.cwd)
    }
}

/// Runs `spec` and reports on `tx`; see the module docs.
pub async fn run(
    sandbox: Arc<Sandbox>,
    spec: ExecSpec,
    cwd: String,
    env: BTreeMap<String, String>,
    io: Io,
    tx: mpsc::Sender<ExecEvent>,
) {
    let started = Instant::now();
    let signals = io.signals.clone();
    let mut raised = signals.subscribe_from_start();
    // ended by a stop as well as a destroy
    let destroyed = sandbox.run_token();
    let console_sandbox = Arc::clone(&sandbox);
    let mut ctx = Ctx {
        sandbox,
        env,
        cwd,
        last_status: 0,
        io,
        exited: false,
        tx: tx.clone(),
        stdout: Sink::Stdout,
        stderr: Sink::Stderr,
    };
    let label = spec.command_line();
    let work = async {
        match spec.mode {
            ExecMode::Shell => run_line(&mut ctx, &label).await,
            ExecMode::Argv => Ok(commands::run(&mut ctx, &spec.command, &spec.args)
                .await?
                .code()),
        }
    };
    // Dropping `work` when another branch wins interrupts it wherever it waits.
    let (event, outcome) = tokio::select! {
        result = work => match result {
            Ok(code) => {
                let duration = started.elapsed();
                (Some(ExecEvent::Exit { code, duration }), format!("exit {code}"))
            }
            Err(Stop) => (None, "cancelled: the receiver went away".to_owned()),
        },
        () = tokio::time::sleep(spec.timeout) => {
            let event = ExecEvent::Failed(ProviderError::Timeout(spec.timeout));
            (Some(event), "timed out".to_owned())
        }
        () = tx.closed() => (None, "cancelled: the receiver went away".to_owned()),
        signal = Signals::next_fatal(&signals, &mut raised) => {
            let code = signal.exit_code();
            let duration = started.elapsed();
            (Some(ExecEvent::Exit { code, duration }), format!("killed by {signal}"))
        }
        () = destroyed.cancelled() => {
            let err = ProviderError::SandboxNotFound(console_sandbox.id.clone());
            (Some(ExecEvent::Failed(err)), "failed: sandbox destroyed".to_owned())
        }
    };
    console_sandbox
        .console
        .append(format!("exec: {} -> {outcome}", shorten(&label)));
    if let Some(event) = event {
        let _ = tx.send(event).await;
    }
}

/// Runs a shell line: a syntax error is exit status 2, as in a real shell. Boxed
/// because `sh -c` makes this recursive.
pub fn run_line<'a>(ctx: &'a mut Ctx, line: &'a str) -> BoxFuture<'a, Result<i32, Stop>> {
    async move {
        let items = match shell::parse(line) {
            Ok(items) => items,
            Err(err) => {
                ctx.err(format!("sh: {err}\n")).await?;
                return Ok(2);
            }
        };
        let mut status = 0;
        for item in &items {
            let runs = match item.connector {
                shell::Connector::Always => true,
                shell::Connector::And => status == 0,
                shell::Connector::Or => status != 0,
            };
            if !runs {
                continue;
            }
            match run_command(ctx, &item.command).await? {
                Flow::Next(code) => status = code,
                Flow::Exit(code) => {
                    ctx.exited = true;
                    return Ok(code);
                }
            }
            ctx.last_status = status;
        }
        Ok(status)
    }
    .boxed()
}

/// One simple command: expand, redirect, run, restore the descriptors.
async fn run_command(ctx: &mut Ctx, command: &Command) -> Result<Flow, Stop> {
    let mut words = Vec::new();
    for word in &command.words {
        let value = expand(ctx, word);
        // No word splitting, but an unquoted word that expands to nothing disappears.
        if word.quoted || !value.is_empty() {
            words.push(value);
        }
    }
    let saved = (ctx.stdout.clone(), ctx.stderr.clone());
    let mut failure = None;
    for redirect in &command.redirects {
        let sink = match &redirect.target {
            Target::Dup(Fd::Stdout) => ctx.stdout.clone(),
            Target::Dup(Fd::Stderr) => ctx.stderr.clone(),
            Target::File { word, append } => match open(ctx, &expand(ctx, word), *append) {
                Ok(sink) => sink,
                Err(message) => {
                    failure = Some(message);
                    break;
                }
            },
        };
        match redirect.fd {
            Fd::Stdout => ctx.stdout = sink,
            Fd::Stderr => ctx.stderr = sink,
        }
    }
    let flow = match failure {
        Some(message) => {
            // Reported where stderr pointed before this command's redirections.
            (ctx.stdout, ctx.stderr) = saved.clone();
            ctx.err(message).await.map(|()| Flow::Next(1))
        }
        None => match words.split_first() {
            Some((name, args)) => commands::run(ctx, name, args).await,
            None => Ok(Flow::Next(0)),
        },
    };
    (ctx.stdout, ctx.stderr) = saved;
    flow
}

fn expand(ctx: &Ctx, word: &Word) -> String {
    word.expand(|name| match name {
        "?" => ctx.last_status.to_string(),
        _ => ctx.env.get(name).cloned().unwrap_or_default(),
    })
}

/// Opens a redirection target: truncated for `>`, created if missing; `/dev/null`
/// (there is no `/dev` otherwise) discards.
fn open(ctx: &Ctx, name: &str, append: bool) -> Result<Sink, String> {
    if name.is_empty() {
        return Err("sh: ambiguous redirect\n".into());
    }
    let path = ctx
        .resolve(name)
        .map_err(|err| format!("sh: {name}: {}\n", commands::describe(&err)))?;
    if path == "/dev/null" {
        return Ok(Sink::Null);
    }
    let mut fs = ctx.sandbox.fs();
    let opened = if append {
        fs.append(&path, &[])
    } else {
        fs.truncate(&path)
    };
    opened
        .map(|()| Sink::File(path))
        .map_err(|err| format!("sh: {name}: {}\n", commands::describe(&err)))
}

/// The first characters of a command, for the console log.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(LOG_COMMAND_CHARS) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}
