//! How the client commands end: the exit codes (0 ok, 1 error, 2 usage from clap, an
//! exec's own code, 124 when an exec timed out) and a closed stdout.
//!
//! A closed stdout (`berth audit list | head -1`): Rust ignores SIGPIPE, so a write to
//! a closed pipe returns `BrokenPipe`, which `println!` would turn into a panic (exit
//! 101). Restoring SIGPIPE's default action would need `unsafe` (`libc::signal`), which
//! the workspace forbids, so the client commands instead print through `outln!`/`out!`
//! (see `output.rs`), which return the error; `main` finds `BrokenPipe` in the error's
//! chain and ends quietly with 141 (128 + SIGPIPE), the status a shell reports for a
//! Unix tool that SIGPIPE ended.

/// The exit status of an exec that ran out of its time, as timeout(1) uses it.
pub const TIMEOUT: i32 = 124;
/// The exit status after stdout was closed under us: what a shell reports for a process
/// that SIGPIPE ended.
pub const BROKEN_PIPE: i32 = 141;

/// A command's own exit status (an exec's), with an optional message for stderr.
#[derive(Debug)]
pub struct Exit {
    pub code: i32,
    pub message: Option<String>,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.message {
            Some(message) => f.write_str(message),
            None => write!(f, "exit status {}", self.code),
        }
    }
}

impl std::error::Error for Exit {}

/// Whether `err` comes from writing to a closed stdout. A connection's broken pipe
/// (the control plane closed an upload it refused) comes wrapped in the HTTP client's
/// error, and is an error like any other.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    if err.chain().any(|cause| cause.is::<reqwest::Error>()) {
        return false;
    }
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Prints what `result` needs on stderr and returns the process's exit status.
pub fn status(result: anyhow::Result<()>) -> i32 {
    use std::io::Write;
    let flushed = std::io::stdout().flush();
    let err = match (result, flushed) {
        (Ok(()), Ok(())) => return 0,
        (Err(err), _) => err,
        (Ok(()), Err(err)) => anyhow::Error::new(err),
    };
    if is_broken_pipe(&err) {
        return BROKEN_PIPE;
    }
    if let Some(exit) = err.downcast_ref::<Exit>() {
        if let Some(message) = &exit.message {
            eprintln!("error: {message}");
        }
        return exit.code;
    }
    eprintln!("error: {err:#}");
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(status(Ok(())), 0);
        assert_eq!(status(Err(anyhow::anyhow!("no"))), 1);
        let pipe = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        let err = anyhow::Error::new(pipe).context("printing");
        assert_eq!(status(Err(err)), BROKEN_PIPE);
        let exit = Exit {
            code: TIMEOUT,
            message: Some("timed out".into()),
        };
        assert_eq!(status(Err(exit.into())), TIMEOUT);
    }
}
