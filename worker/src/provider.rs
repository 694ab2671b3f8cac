//! The `Provider` trait: what a sandbox backend (mock, docker) must do, in domain types
//! only. Errors are `ProviderError`, which the worker service maps to gRPC statuses in
//! one place; implementers never touch gRPC.
//!
//! Streams are bounded channels: a slow reader holds the producer back instead of
//! growing memory, and a dropped receiver tells the producer to stop (the command is
//! cleaned up when a client disconnects). A whole exec collects at most the bytes its
//! caller allows ([`output`]).

pub mod docker;
pub mod glob;
pub mod mock;
pub mod output;
pub mod paths;
pub mod port;
pub mod process;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::stream::BoxStream;
use tokio::sync::mpsc;

pub use process::{Process, ProcessInput, ProcessSpec, Signal, TermSize};

/// What to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSpec {
    pub sandbox_id: String,
    pub image: String,
    pub vcpus: u32,
    pub memory_mb: u64,
    pub env: BTreeMap<String, String>,
    pub metadata: BTreeMap<String, String>,
    /// Whether the sandbox may reach addresses outside its own network (the
    /// internet, the LAN); the host itself is out of reach either way.
    pub internet: bool,
    /// Companion containers on the sandbox's network, reachable by name.
    pub services: Vec<ServiceSpec>,
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

/// An image to build from a base: packages installed, then a script run as root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageBuild {
    pub base: String,
    pub packages: Vec<String>,
    pub on_create: String,
}

/// The repository built images are tagged in; the tag is the build's content hash.
pub const BUILT_REPOSITORY: &str = "berth/built";

impl ImageBuild {
    /// `berth/built:<hash>`: the same build gets the same tag on every worker, and any
    /// change to the base, the packages or the script gets another.
    pub fn tag(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        for part in [&self.base, &self.packages.join("\n"), &self.on_create] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        format!("{BUILT_REPOSITORY}:{}", &hex::encode(hash.finalize())[..24])
    }
}

/// What a build answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    /// The tag a spawn names.
    pub image: String,
    /// False when the image was there already.
    pub built: bool,
    pub build_ms: u64,
}

/// What a load of pushed images answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedImages {
    /// `name:tag` of each image the archive held (the id of an untagged one).
    pub images: Vec<String>,
    /// The archive's size.
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxState {
    Running,
    /// Exists but is not running (e.g. a container stopped from outside).
    Stopped,
    Error,
}

impl SandboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::Error => "error",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxInfo {
    pub sandbox_id: String,
    /// The provider's own handle (container id, ...).
    pub vm_id: String,
    pub state: SandboxState,
    /// How long a spawn spent starting the sandbox's companion services (a spawn's
    /// answer only; 0 elsewhere).
    pub services_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecMode {
    /// `command` runs through a shell with each arg appended single-quoted.
    Shell,
    /// `[command, ...args]` runs directly.
    Argv,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecSpec {
    pub command: String,
    pub args: Vec<String>,
    pub mode: ExecMode,
    pub env: BTreeMap<String, String>,
    /// `None`: `/workspace`.
    pub workdir: Option<String>,
    /// Bounds the whole command; callers pass a positive value (zero fails at once).
    pub timeout: Duration,
}

impl ExecSpec {
    /// The shell line of shell mode: the command, then each arg single-quoted
    /// (StacyVM's rule), so args are never re-split or expanded.
    pub fn shell_line(&self) -> String {
        berth_proto::shell::shell_line(&self.command, &self.args)
    }

    /// The command as a line for logs and listings: the shell line, or the argv
    /// joined by spaces.
    pub fn command_line(&self) -> String {
        match self.mode {
            ExecMode::Shell => self.shell_line(),
            ExecMode::Argv => std::iter::once(&self.command)
                .chain(&self.args)
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

/// One event of a running command. A stream carries output events and then exactly
/// one `Exit` or `Failed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit { code: i32, duration: Duration },
    Failed(ProviderError),
}

/// A finished command, collected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecResult {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub duration: Duration,
    /// The command printed more than the limit; the rest was read and dropped.
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Unix milliseconds.
    pub time_ms: i64,
    pub line: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// Absolute, normalized.
    pub path: String,
    pub size: u64,
    /// Permission bits (e.g. 0o644).
    pub mode: u32,
    pub is_dir: bool,
    /// Unix seconds.
    pub mod_time: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderHealth {
    pub healthy: bool,
    pub message: String,
}

/// Chunks of a file, in order.
pub type ByteStream = BoxStream<'static, Result<Vec<u8>, ProviderError>>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("sandbox {0:?} not found")]
    SandboxNotFound(String),
    #[error("sandbox {0:?} already exists")]
    SandboxExists(String),
    #[error("{0}: no such file or directory")]
    FileNotFound(String),
    #[error("{0}: is a directory")]
    IsADirectory(String),
    #[error("{0}: not a directory")]
    NotADirectory(String),
    #[error("{0}: directory not empty")]
    DirectoryNotEmpty(String),
    #[error("{0}: already exists")]
    FileExists(String),
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },
    #[error("{0}")]
    InvalidArgument(String),
    /// The image is not on the worker's engine and cannot be pulled: the caller's to
    /// fix (build or load it there, or ask for another), not a reason to retry.
    #[error(
        "image {image:?} is not on worker {worker_id}'s docker engine and cannot be pulled \
         ({reason}): build or load it there (docker build / docker load; \
         smoke/docker-test-image.sh builds berth-test-busybox:latest), or choose another \
         with --image or berth serve --default-image"
    )]
    ImageUnavailable {
        image: String,
        worker_id: String,
        reason: String,
    },
    /// Nothing inside the sandbox accepted a connection on the port.
    #[error("nothing in sandbox {sandbox_id:?} accepts connections on port {port}: {reason}")]
    PortClosed {
        sandbox_id: String,
        port: u16,
        reason: String,
    },
    /// An image build's script or package install failed (the message quotes the end
    /// of what it printed): the template's to fix, not a reason to retry.
    #[error("{0}")]
    BuildFailed(String),
    /// Stopped (`berth sandbox stop`): it takes commands again once started.
    #[error("sandbox {0:?} is stopped; start it with `berth sandbox start {0}`")]
    Stopped(String),
    #[error("command timed out after {0:?}")]
    Timeout(Duration),
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

/// A sandbox backend. All methods may be called concurrently, for the same sandbox
/// too; `destroy` is idempotent.
#[async_trait::async_trait]
pub trait Provider: Send + Sync + std::fmt::Debug + 'static {
    /// `mock`, `docker`, ...
    fn name(&self) -> &'static str;

    /// Whether its sandboxes can outlive the worker process (containers do; the
    /// mock's die with it). Only then are lease fences kept on disk, so an adopted
    /// sandbox keeps its fence across a restart; otherwise an fsync'd file write per
    /// spawn and destroy would guard nothing.
    fn sandboxes_outlive_the_worker(&self) -> bool {
        true
    }

    async fn health(&self) -> ProviderHealth;

    /// The memory (MiB) its sandboxes share, as the provider knows it once `health`
    /// has run; 0: not counted (the mock's sandboxes take none). The worker reports it
    /// unless `capacity.memory_mb` says otherwise, and the control plane places by it.
    fn total_memory_mb(&self) -> u64 {
        0
    }

    /// Called once when the worker stops, after its server has: stops taking background
    /// work and returns when what is in flight (command pumps, log followers) has
    /// ended. Those end when their receivers drop, which the stopped server has done;
    /// the worker bounds the wait all the same.
    async fn shutdown(&self) {}

    async fn spawn(&self, spec: SandboxSpec) -> Result<SandboxInfo, ProviderError>;

    /// Builds `build` into an image tagged [`ImageBuild::tag`], or answers at once
    /// when it is there already; concurrent builds of one tag run once.
    async fn build_image(&self, build: &ImageBuild) -> Result<BuiltImage, ProviderError>;

    /// Loads the images of a `docker save` archive (`berth images push`); an archive
    /// that ends with an error loads nothing.
    async fn load_images(&self, archive: ByteStream) -> Result<LoadedImages, ProviderError>;

    /// Removes the sandbox and everything it holds; `Ok` if it is already gone.
    async fn destroy(&self, sandbox_id: &str) -> Result<(), ProviderError>;

    /// Stops a sandbox: its processes end, its filesystem stays. Idempotent.
    async fn stop(&self, sandbox_id: &str) -> Result<(), ProviderError>;

    /// Starts a stopped sandbox again (its filesystem as it was). Idempotent.
    async fn start(&self, sandbox_id: &str) -> Result<(), ProviderError>;

    async fn status(&self, sandbox_id: &str) -> Result<SandboxInfo, ProviderError>;

    /// The sandboxes this provider holds for this worker.
    async fn list(&self) -> Result<Vec<SandboxInfo>, ProviderError>;

    /// Starts a command; output arrives as it is produced, then one `Exit` or `Failed`.
    /// Dropping the receiver stops the command.
    async fn exec_stream(
        &self,
        sandbox_id: &str,
        spec: ExecSpec,
    ) -> Result<mpsc::Receiver<ExecEvent>, ProviderError>;

    /// Starts an interactive command (stdin, a terminal, resizes, signals) for a
    /// session; see [`process`].
    async fn start_process(
        &self,
        sandbox_id: &str,
        spec: ProcessSpec,
    ) -> Result<Process, ProviderError>;

    /// Runs a command to completion and collects at most `max_output` bytes of its
    /// stdout and stderr together; the rest is read and dropped, so the command runs
    /// to its real end, and the result says it was truncated.
    async fn exec(
        &self,
        sandbox_id: &str,
        spec: ExecSpec,
        max_output: usize,
    ) -> Result<ExecResult, ProviderError> {
        let mut events = self.exec_stream(sandbox_id, spec).await?;
        let mut output = output::Capture::new(max_output);
        while let Some(event) = events.recv().await {
            match event {
                ExecEvent::Stdout(data) => output.stdout(&data),
                ExecEvent::Stderr(data) => output.stderr(&data),
                ExecEvent::Exit { code, duration } => {
                    let output = output.finish();
                    return Ok(ExecResult {
                        exit_code: code,
                        stdout: output.stdout,
                        stderr: output.stderr,
                        duration,
                        truncated: output.truncated,
                    });
                }
                ExecEvent::Failed(err) => return Err(err),
            }
        }
        Err(ProviderError::Internal(
            "the command ended without an exit status".into(),
        ))
    }

    /// The last `tail` console lines, then (with `follow`) new ones until the sandbox
    /// is destroyed or the receiver is dropped.
    async fn logs(
        &self,
        sandbox_id: &str,
        tail: usize,
        follow: bool,
    ) -> Result<mpsc::Receiver<LogLine>, ProviderError>;

    async fn read_file(&self, sandbox_id: &str, path: &str) -> Result<ByteStream, ProviderError>;

    /// Creates or replaces the file (parents must exist) with `mode`; returns its size.
    async fn write_file(
        &self,
        sandbox_id: &str,
        path: &str,
        mode: u32,
        data: ByteStream,
    ) -> Result<u64, ProviderError>;

    async fn list_files(
        &self,
        sandbox_id: &str,
        path: &str,
    ) -> Result<Vec<FileInfo>, ProviderError>;

    async fn stat(&self, sandbox_id: &str, path: &str) -> Result<FileInfo, ProviderError>;

    async fn delete_file(
        &self,
        sandbox_id: &str,
        path: &str,
        recursive: bool,
    ) -> Result<(), ProviderError>;

    async fn move_file(
        &self,
        sandbox_id: &str,
        old_path: &str,
        new_path: &str,
    ) -> Result<(), ProviderError>;

    async fn chmod(&self, sandbox_id: &str, path: &str, mode: u32) -> Result<(), ProviderError>;

    /// Absolute paths matching `pattern` (`*`, `?`, `**`; relative patterns are under
    /// `/workspace`), sorted.
    async fn glob(&self, sandbox_id: &str, pattern: &str) -> Result<Vec<String>, ProviderError>;

    /// A TCP connection to `port` inside the sandbox, made from the worker's side
    /// (see [`port`]); `PortClosed` when nothing accepts it.
    async fn open_port(
        &self,
        sandbox_id: &str,
        port: u16,
    ) -> Result<port::PortConnection, ProviderError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_is_tagged_by_its_whole_content_and_nothing_else() {
        let build = ImageBuild {
            base: "alpine:3".into(),
            packages: vec!["git".into(), "curl".into()],
            on_create: "make".into(),
        };
        let tag = build.tag();
        assert!(tag.starts_with("berth/built:"), "{tag}");
        assert_eq!(tag.len(), "berth/built:".len() + 24);
        assert_eq!(tag, build.clone().tag(), "the same content, the same tag");
        let changed = [
            ImageBuild {
                base: "alpine:4".into(),
                ..build.clone()
            },
            ImageBuild {
                packages: vec!["git".into()],
                ..build.clone()
            },
            ImageBuild {
                packages: vec!["curl".into(), "git".into()],
                ..build.clone()
            },
            ImageBuild {
                on_create: "make all".into(),
                ..build.clone()
            },
            // parts are length-prefixed: moving text between them is a change
            ImageBuild {
                packages: vec!["git".into(), "curlmake".into()],
                on_create: String::new(),
                ..build.clone()
            },
        ];
        for other in changed {
            assert_ne!(other.tag(), tag, "{other:?}");
        }
    }

    #[test]
    fn shell_lines_quote_every_arg() {
        let spec = ExecSpec {
            command: "echo".into(),
            args: vec!["a b".into(), "it's".into(), "$HOME".into()],
            mode: ExecMode::Shell,
            env: BTreeMap::new(),
            workdir: None,
            timeout: Duration::from_secs(1),
        };
        assert_eq!(spec.shell_line(), r"echo 'a b' 'it'\''s' '$HOME'");
    }
}
