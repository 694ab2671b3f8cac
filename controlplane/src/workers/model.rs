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
    /// Environment variables of every process in the sandbox.
    pub env: BTreeMap<String, String>,
    /// Team secrets, as environment variables too (over `env`).
    pub secrets: SecretEnv,
    /// Companion containers on the sandbox's network, reachable by name.
    pub services: Vec<ServiceSpec>,
    /// Whether the sandbox may reach addresses outside its own network.
    pub internet: bool,
}

/// A companion container of a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub name: String,
    pub image: String,
    pub env: BTreeMap<String, String>,
    /// Empty: the image's own command.
    pub command: Vec<String>,
    pub ports: Vec<u16>,
}

/// Secret values on their way into a sandbox's environment. Its `Debug` shows the
/// names only, so no log of a request that carries it can show a value.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretEnv(pub BTreeMap<String, String>);

impl std::fmt::Debug for SecretEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// What a worker says of a sandbox it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spawned {
    /// The provider's own handle (container id, ...).
    pub vm_id: String,
    /// How long of the spawn went to starting companion services (0: none).
    pub services_ms: u64,
}

/// An image a worker builds from a base image: packages installed, then a script run,
/// the result committed under a tag named by the content hash of all three, so a build
/// happens once per worker and every later spawn reuses it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageBuild {
    pub base: String,
    pub packages: Vec<String>,
    pub on_create: String,
}

/// What a worker's load of pushed images answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedImages {
    /// `name:tag` of each image loaded (the id of an untagged one).
    pub images: Vec<String>,
    pub bytes: u64,
}

/// What a worker's build answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    /// The tag a spawn names (`berth/built:<hash>`).
    pub image: String,
    /// False when the worker had it already (reused).
    pub built: bool,
    /// How long the build took (0 when reused).
    pub build_ms: u64,
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

/// How an interactive session is opened: a new command, or an attach to a running
/// (or finished, not yet collected) one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionOpen {
    Start(SessionStart),
    Attach(SessionAttach),
}

/// A new session's command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStart {
    pub command: String,
    pub args: Vec<String>,
    /// `argv` (run as is) rather than a shell line.
    pub argv: bool,
    pub env: BTreeMap<String, String>,
    /// Empty: the provider's default.
    pub workdir: String,
    /// `None`: no limit but the worker's own.
    pub timeout: Option<Duration>,
    /// A terminal of this size (stdout and stderr merge), or none.
    pub tty: Option<TerminalSize>,
    /// Answer `started` and leave the command running with no client attached.
    pub background: bool,
    /// Whether the command's stdin is open (closed: it reads end-of-file at once).
    pub stdin: bool,
}

impl SessionStart {
    /// The command as the audit log shows it (see [`command_line`]).
    pub fn describe(&self) -> String {
        command_line(&self.command, &self.args, self.argv)
    }
}

/// A command as the audit log shows it: the shell line, or argv as JSON.
pub fn command_line(command: &str, args: &[String], argv: bool) -> String {
    if argv {
        let argv: Vec<&str> = std::iter::once(command)
            .chain(args.iter().map(String::as_str))
            .collect();
        return serde_json::to_string(&argv).unwrap_or_default();
    }
    berth_proto::shell::shell_line(command, args)
}

/// An attach to a session by id, its output resumed from `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionAttach {
    pub session_id: String,
    pub offset: u64,
    /// Detach whoever is attached now instead of being refused.
    pub takeover: bool,
}

/// A terminal's size in characters; 0 takes the worker's default (80x24).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TerminalSize {
    pub cols: u32,
    pub rows: u32,
}

/// What an attached client sends a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionInput {
    Stdin(Vec<u8>),
    Resize(TerminalSize),
    /// A signal by name or number (`SIGINT`, `INT`, `2`); the worker checks it.
    Signal(String),
    /// Close the command's stdin.
    Eof,
    /// Leave the command running and end this stream.
    Detach,
}

/// A session's answer to its open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStarted {
    pub session_id: String,
    /// Where output resumes (later than asked when the buffer had moved on).
    pub offset: u64,
    pub tty: bool,
}

/// Which stream an output chunk came from (a terminal's output is stdout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

impl OutputStream {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// One event of a session after `started`. The stream ends after `Exit`, `Detached`
/// or `Failed`, or right after `started` for a session started in the background.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    Output {
        stream: OutputStream,
        data: Vec<u8>,
        /// The offset of the chunk's first byte in the session's output.
        offset: u64,
    },
    /// `bytes` of output asked for had already left the session's buffer.
    Gap { bytes: u64, offset: u64 },
    Exit {
        exit_code: i32,
        /// The signal that ended the command, when one did (`SIGINT`, ...).
        signal: Option<String>,
        duration_ms: u64,
    },
    /// Nothing happened for a while; the stream is alive.
    Keepalive,
    /// This client is attached no more (`detach`, `takeover`, `killed`).
    Detached { reason: String },
    /// A client message the session could not take; the session goes on.
    Problem { code: ErrorCode, message: String },
    /// The stream broke (the worker failed or went away); the session may live on.
    Failed { code: ErrorCode, message: String },
}

impl SessionEvent {
    /// Whether this event ends the stream.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::Exit { .. } | Self::Detached { .. } | Self::Failed { .. }
        )
    }
}

/// A session as the worker lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub session_id: String,
    pub sandbox_id: String,
    /// The command line as started.
    pub command: String,
    pub tty: bool,
    /// `running` or `exited`.
    pub state: String,
    pub exit_code: i32,
    /// The signal that ended it, or empty.
    pub signal: String,
    /// Unix milliseconds; `ended_at_ms` 0 while it runs.
    pub started_at_ms: i64,
    pub ended_at_ms: i64,
    /// Clients attached now.
    pub attached: u32,
    /// The output's end offset, and where the buffer starts now.
    pub output_offset: u64,
    pub buffer_start: u64,
    pub background: bool,
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
