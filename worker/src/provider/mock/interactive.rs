//! The mock's builtins that read stdin or know the terminal: an interactive `sh`
//! (no `-c`: reads lines from stdin and runs each, `$ ` prompts on a terminal, SIGINT
//! interrupts the current line and the shell goes on), `read` and `stty`.

use super::commands::Flow;
use super::exec::{self, Ctx, Stop};
use super::terminal::Signals;
use crate::provider::Signal;

/// `sh` with no arguments: a shell reading its commands from stdin until end-of-file
/// or `exit`, with its own cwd and environment.
pub async fn shell(ctx: &mut Ctx) -> Result<Flow, Stop> {
    if ctx.io.stdin.is_none() {
        return Ok(Flow::Next(0));
    }
    let saved = (
        ctx.cwd.clone(),
        ctx.env.clone(),
        ctx.last_status,
        ctx.exited,
    );
    let code = repl(ctx).await;
    (ctx.cwd, ctx.env, ctx.last_status, ctx.exited) = saved;
    code.map(Flow::Next)
}

async fn repl(ctx: &mut Ctx) -> Result<i32, Stop> {
    let signals = ctx.io.signals.clone();
    let _shell = signals.shell();
    let mut raised = signals.subscribe();
    let prompt = ctx.io.terminal.is_some();
    let mut status = 0;
    loop {
        if prompt {
            ctx.out("$ ").await?;
        }
        let line = {
            let Some(stdin) = ctx.io.stdin.as_mut() else {
                return Ok(status);
            };
            tokio::select! {
                line = stdin.read_line() => Some(line),
                signal = Signals::next(&mut raised) => {
                    // only SIGINT reaches here alive: it clears the line
                    let _ = signal;
                    None
                }
            }
        };
        let line = match line {
            Some(Some(line)) => String::from_utf8_lossy(&line).into_owned(),
            Some(None) => return Ok(status),
            None => {
                ctx.out("\n").await?;
                status = Signal::INT.exit_code();
                continue;
            }
        };
        let ran = tokio::select! {
            code = exec::run_line(ctx, line.trim_end_matches(['\n', '\r'])) => Some(code),
            _ = interrupt(&mut raised) => None,
        };
        match ran {
            Some(code) => {
                status = code?;
                if ctx.exited {
                    return Ok(status);
                }
            }
            None => {
                // the line was interrupted wherever it waited
                ctx.reset_sinks();
                ctx.out("\n").await?;
                status = Signal::INT.exit_code();
            }
        }
        ctx.last_status = status;
    }
}

async fn interrupt(raised: &mut tokio::sync::watch::Receiver<Option<Signal>>) {
    while Signals::next(raised).await != Signal::INT {}
}

/// `read [-r] [NAME...]`: one line of stdin into the names (the last takes the rest;
/// none: `REPLY`); status 1 at end-of-file.
pub async fn read(ctx: &mut Ctx, args: &[String]) -> Result<i32, Stop> {
    let names: Vec<&String> = args.iter().filter(|arg| !arg.starts_with('-')).collect();
    let line = match ctx.io.stdin.as_mut() {
        Some(stdin) => stdin.read_line().await,
        None => None,
    };
    let Some(line) = line else {
        return Ok(1);
    };
    let text = String::from_utf8_lossy(&line);
    let text = text.trim_end_matches(['\n', '\r']);
    if names.is_empty() {
        ctx.env.insert("REPLY".to_owned(), text.to_owned());
        return Ok(0);
    }
    let mut rest = text.trim_start();
    for (index, name) in names.iter().enumerate() {
        let value = if index + 1 == names.len() {
            rest.trim_end().to_owned()
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let word = rest[..end].to_owned();
            rest = rest[end..].trim_start();
            word
        };
        ctx.env.insert((*name).clone(), value);
    }
    Ok(0)
}

/// `stty size` prints `ROWS COLS`; other settings are accepted and ignored. Without
/// a terminal, as a real one: "Not a tty".
pub async fn stty(ctx: &mut Ctx, args: &[String]) -> Result<i32, Stop> {
    let Some(size) = ctx.io.terminal_size() else {
        ctx.err("stty: standard input: Not a tty\n").await?;
        return Ok(1);
    };
    if args.first().map(String::as_str) == Some("size") {
        ctx.out(format!("{} {}\n", size.rows, size.cols)).await?;
    }
    Ok(0)
}
