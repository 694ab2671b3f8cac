//! What worker calls take and give back, as plain Rust values: the worker client
//! converts to and from the mesh's protobufs on the way out and on receipt, so the
//! sandbox logic and the API edges work with these only.

use std::collections::BTreeMap;
use std::time::Duration;

use berth_proto::ErrorCode;

/// A sandbox for a worker to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnSpec {
    pub sandbox_id: String,
    pub image: String,
    pub provider: String,
    pub vcpus: u32,
    pub memory_mb: u64,
    pub metadata: BTreeMap<String, String>,
    /// Whether the sandbox may reach addresses outside its own network.
    pub internet: bool,
}

/// What a worker says of a sandbox it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spawned {
    /// The provider's own handle (container id, ...).
    pub vm_id: String,
}

/// How one of a worker's providers says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderHealth {
    pub name: String,
    pub healthy: bool,
    /// Why not, when it is not.
    pub message: String,
}

/// A command for a worker to run in a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    pub sandbox_id: String,
    pub generation: u64,
    pub command: String,
    pub args: Vec<String>,
    /// `argv` (run as is) rather than a shell line.
    pub argv: bool,
    pub env: BTreeMap<String, String>,
    /// Empty: the provider's default.
    pub workdir: String,
    pub timeout: Duration,
    /// A whole exec collects at most this many bytes of stdout and stderr together
    /// (a streamed one ignores it).
    pub max_output: usize,
}

/// A finished command, collected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub duration_ms: u64,
    /// The command printed more than the limit; the rest was dropped.
    pub truncated: bool,
}

impl ExecOutcome {
    /// Keeps at most `max_output` bytes (stdout first), for a worker that answered
    /// with more than it was asked for (one that predates the limit).
    pub fn limit(mut self, max_output: usize) -> Self {
        if self.stdout.len() + self.stderr.len() > max_output {
            self.stdout.truncate(max_output);
            self.stderr.truncate(max_output - self.stdout.len());
            self.truncated = true;
        }
        self
    }
}

/// One event of a streamed command: output, then exactly one `Exit` or `Failed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit { exit_code: i32, duration_ms: u64 },
    Failed { code: ErrorCode, message: String },
}

impl ExecEvent {
    /// Whether this event ends the stream.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Exit { .. } | Self::Failed { .. })
    }
}

/// One console line of a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub line: String,
    /// Unix milliseconds.
    pub time_ms: i64,
}

/// A file or directory in a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    pub path: String,
    pub size: u64,
    /// Unix permission bits.
    pub mode: u32,
    pub is_dir: bool,
    /// Unix seconds.
    pub mod_time: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(stdout: &[u8], stderr: &[u8]) -> ExecOutcome {
        ExecOutcome {
            exit_code: 0,
            stdout: stdout.to_vec(),
            stderr: stderr.to_vec(),
            duration_ms: 1,
            truncated: false,
        }
    }

    #[test]
    fn an_answer_over_the_limit_is_cut_stdout_first() {
        let cut = outcome(b"abcdef", b"ghij").limit(8);
        assert_eq!(
            (&cut.stdout[..], &cut.stderr[..]),
            (&b"abcdef"[..], &b"gh"[..])
        );
        assert!(cut.truncated);
        let cut = outcome(b"abcdef", b"ghij").limit(4);
        assert_eq!((&cut.stdout[..], &cut.stderr[..]), (&b"abcd"[..], &b""[..]));
        assert!(cut.truncated);
        let whole = outcome(b"abcdef", b"ghij").limit(10);
        assert_eq!(whole, outcome(b"abcdef", b"ghij"));
    }
}
