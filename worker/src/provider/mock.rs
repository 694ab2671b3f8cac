//! The mock provider: sandboxes that live entirely in this process, with an in-memory
//! filesystem, a small shell with builtin commands, and a console log. No host
//! processes or files, so thousands of sandboxes are cheap; for tests, load and scale
//! work.
//!
//! Each sandbox sits behind its own locks (a `std` mutex for its filesystem, one for
//! its console ring), never held across an `.await`. Every command and log follower
//! runs on a tracked task that ends when its receiver is dropped, its sandbox is
//! destroyed, or the provider is dropped.

mod commands;
mod console;
mod exec;
mod fs;
mod generate;
mod interactive;
mod serve;
pub(crate) mod shell;
mod terminal;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::paths::{WORKSPACE, normalize_in};
use super::{
    BuiltImage, ByteStream, ExecEvent, ExecMode, ExecSpec, FileInfo, ImageBuild, LoadedImages,
    LogLine, Process, ProcessSpec, Provider, ProviderError, ProviderHealth, SandboxInfo,
    SandboxSpec, SandboxState, process,
};
use console::Console;
use fs::MemFs;
use terminal::Io;

/// Size of the chunks `read_file` streams.
const READ_CHUNK: usize = 64 * 1024;
/// Capacity of an exec event channel.
const EXEC_BUFFER: usize = 16;

/// An in-process provider; see the module docs.
pub struct MockProvider {
    sandboxes: RwLock<HashMap<String, Arc<Sandbox>>>,
    tasks: TaskTracker,
    /// Cancelled when the provider is dropped; every sandbox's token is a child.
    shutdown: CancellationToken,
    /// Commands whose task has not ended yet.
    running: Arc<AtomicUsize>,
    /// Built images by tag: the filesystem a build's `on_create` left, which a
    /// sandbox of that image starts with.
    images: Mutex<HashMap<String, MemFs>>,
    /// Held by a build, so concurrent builds of one tag run once.
    building: tokio::sync::Mutex<()>,
}

/// One sandbox's state.
struct Sandbox {
    id: String,
    spec: SandboxSpec,
    fs: Mutex<MemFs>,
    console: Console,
    /// Servers started with `serve`.
    listeners: serve::Listeners,
    /// Cancelled by `destroy`: ends its commands and log followers.
    destroyed: CancellationToken,
    /// Cancelled by `stop` (and by `destroy`, as its child): ends its commands and
    /// servers; `start` puts a fresh one in.
    run: Mutex<CancellationToken>,
    stopped: std::sync::atomic::AtomicBool,
}

impl Sandbox {
    fn fs(&self) -> MutexGuard<'_, MemFs> {
        self.fs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn info(&self) -> SandboxInfo {
        SandboxInfo {
            sandbox_id: self.id.clone(),
            vm_id: format!("mock-{}", self.id),
            state: if self.is_stopped() {
                SandboxState::Stopped
            } else {
                SandboxState::Running
            },
            services_ms: 0,
        }
    }

    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// What ends the commands and servers running now.
    fn run_token(&self) -> CancellationToken {
        self.run
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Refuses what needs the sandbox running.
    fn check_running(&self) -> Result<(), ProviderError> {
        if self.is_stopped() {
            return Err(ProviderError::Stopped(self.id.clone()));
        }
        Ok(())
    }
}

impl MockProvider {
    pub fn new() -> Self {
        Self {
            sandboxes: RwLock::default(),
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            running: Arc::default(),
            images: Mutex::default(),
            building: tokio::sync::Mutex::new(()),
        }
    }

    /// Forgets a built image (as if removed from an engine): the next build of its
    /// tag runs again.
    pub fn remove_image(&self, image: &str) -> bool {
        self.images
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(image)
            .is_some()
    }

    fn built(&self, image: &str) -> Option<MemFs> {
        self.images
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(image)
            .cloned()
    }

    fn sandbox(&self, sandbox_id: &str) -> Result<Arc<Sandbox>, ProviderError> {
        let sandboxes = self
            .sandboxes
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        sandboxes
            .get(sandbox_id)
            .cloned()
            .ok_or_else(|| ProviderError::SandboxNotFound(sandbox_id.to_owned()))
    }

    /// The sandbox a command runs in, its working directory and environment.
    fn prepare(&self, sandbox_id: &str, spec: &ExecSpec) -> Result<Prepared, ProviderError> {
        let sandbox = self.sandbox(sandbox_id)?;
        sandbox.check_running()?;
        if spec.mode == ExecMode::Argv && spec.command.is_empty() {
            return Err(ProviderError::InvalidArgument("empty command".into()));
        }
        let cwd = normalize_in(spec.workdir.as_deref().unwrap_or(WORKSPACE), WORKSPACE)?;
        if !sandbox.fs().stat(&cwd)?.is_dir {
            return Err(ProviderError::NotADirectory(cwd));
        }
        let mut env = BTreeMap::from([
            ("HOME".to_owned(), WORKSPACE.to_owned()),
            ("PATH".to_owned(), "/usr/bin:/bin".to_owned()),
        ]);
        env.extend(sandbox.spec.env.clone());
        env.extend(spec.env.clone());
        env.insert("PWD".to_owned(), cwd.clone());
        Ok((sandbox, cwd, env))
    }

    /// Commands still running, for tests.
    #[cfg(test)]
    pub(crate) fn running_commands(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }
}

impl Default for MockProvider {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for MockProvider {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl fmt::Debug for MockProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sandboxes = self.sandboxes.read().map_or(0, |sandboxes| sandboxes.len());
        f.debug_struct("MockProvider")
            .field("sandboxes", &sandboxes)
            .field("running_commands", &self.running.load(Ordering::Relaxed))
            .finish()
    }
}

/// A command's sandbox, working directory and environment.
type Prepared = (Arc<Sandbox>, String, BTreeMap<String, String>);

/// Decrements the running-command count when a command's task ends, however it ends.
struct RunningGuard(Arc<AtomicUsize>);

impl RunningGuard {
    fn new(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(counter))
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl Provider for MockProvider {
    fn name(&self) -> &'static str {
        "mock"
    }

    fn sandboxes_outlive_the_worker(&self) -> bool {
        false
    }

    async fn health(&self) -> ProviderHealth {
        ProviderHealth {
            healthy: true,
            message: "mock provider: in-process sandboxes".into(),
        }
    }

    /// A build runs `on_create` in a scratch sandbox of the base and keeps the
    /// filesystem it leaves; packages cannot be installed into memory and are refused.
    async fn build_image(&self, build: &ImageBuild) -> Result<BuiltImage, ProviderError> {
        if !build.packages.is_empty() {
            return Err(ProviderError::InvalidArgument(
                "the mock provider installs no packages; use the docker provider".into(),
            ));
        }
        let tag = build.tag();
        let _building = self.building.lock().await;
        if self.built(&tag).is_some() {
            return Ok(BuiltImage {
                image: tag,
                built: false,
                build_ms: 0,
            });
        }
        let began = std::time::Instant::now();
        let scratch = format!("build-{}", tag.rsplit(':').next().unwrap_or_default());
        self.spawn(SandboxSpec {
            sandbox_id: scratch.clone(),
            image: build.base.clone(),
            vcpus: 1,
            memory_mb: 0,
            env: BTreeMap::new(),
            metadata: BTreeMap::new(),
            internet: false,
            services: Vec::new(),
        })
        .await?;
        let ran = self
            .exec(
                &scratch,
                ExecSpec {
                    command: build.on_create.clone(),
                    args: Vec::new(),
                    mode: ExecMode::Shell,
                    env: BTreeMap::new(),
                    workdir: None,
                    timeout: std::time::Duration::from_secs(60),
                },
                64 << 10,
            )
            .await;
        let fs = self.sandbox(&scratch).map(|sandbox| sandbox.fs().clone());
        self.destroy(&scratch).await?;
        let ran = ran?;
        if ran.exit_code != 0 {
            return Err(ProviderError::BuildFailed(format!(
                "building the image failed: on_create exited with {}: {}",
                ran.exit_code,
                String::from_utf8_lossy(&ran.stderr).trim()
            )));
        }
        self.images
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(tag.clone(), fs?);
        Ok(BuiltImage {
            image: tag,
            built: true,
            build_ms: u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }

    async fn load_images(&self, _archive: ByteStream) -> Result<LoadedImages, ProviderError> {
        Err(ProviderError::InvalidArgument(
            "the mock provider has no image store; images are pushed to docker workers".into(),
        ))
    }

    async fn spawn(&self, spec: SandboxSpec) -> Result<SandboxInfo, ProviderError> {
        if spec.sandbox_id.is_empty() {
            return Err(ProviderError::InvalidArgument("empty sandbox id".into()));
        }
        if !spec.services.is_empty() {
            return Err(ProviderError::InvalidArgument(
                "the mock provider runs no companion services; use the docker provider".into(),
            ));
        }
        let mut sandboxes = self
            .sandboxes
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if sandboxes.contains_key(&spec.sandbox_id) {
            return Err(ProviderError::SandboxExists(spec.sandbox_id));
        }
        let fs = if spec.image.starts_with(super::BUILT_REPOSITORY) {
            self.built(&spec.image).ok_or_else(|| {
                ProviderError::InvalidArgument(format!(
                    "image {:?} is not built on this worker; the next create from its \
                     template builds it",
                    spec.image
                ))
            })?
        } else {
            MemFs::new()
        };
        let destroyed = self.shutdown.child_token();
        let sandbox = Sandbox {
            id: spec.sandbox_id.clone(),
            fs: Mutex::new(fs),
            console: Console::new(),
            listeners: serve::Listeners::default(),
            run: Mutex::new(destroyed.child_token()),
            destroyed,
            stopped: false.into(),
            spec,
        };
        sandbox.console.append(format!(
            "sandbox {} created (image {})",
            sandbox.id, sandbox.spec.image
        ));
        let info = sandbox.info();
        sandboxes.insert(sandbox.id.clone(), Arc::new(sandbox));
        tracing::debug!(sandbox_id = %info.sandbox_id, "mock sandbox created");
        Ok(info)
    }

    async fn destroy(&self, sandbox_id: &str) -> Result<(), ProviderError> {
        let removed = {
            let mut sandboxes = self
                .sandboxes
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            sandboxes.remove(sandbox_id)
        };
        if let Some(sandbox) = removed {
            sandbox.console.append("sandbox destroyed");
            sandbox.destroyed.cancel();
            tracing::debug!(sandbox_id, "mock sandbox destroyed");
        }
        Ok(())
    }

    async fn stop(&self, sandbox_id: &str) -> Result<(), ProviderError> {
        let sandbox = self.sandbox(sandbox_id)?;
        if !sandbox.stopped.swap(true, Ordering::SeqCst) {
            sandbox.run_token().cancel();
            sandbox.listeners.clear();
            sandbox.console.append("sandbox stopped");
            tracing::debug!(sandbox_id, "mock sandbox stopped");
        }
        Ok(())
    }

    async fn start(&self, sandbox_id: &str) -> Result<(), ProviderError> {
        let sandbox = self.sandbox(sandbox_id)?;
        if sandbox.is_stopped() {
            *sandbox.run.lock().unwrap_or_else(PoisonError::into_inner) =
                sandbox.destroyed.child_token();
            sandbox.stopped.store(false, Ordering::SeqCst);
            sandbox.console.append("sandbox started");
            tracing::debug!(sandbox_id, "mock sandbox started");
        }
        Ok(())
    }

    async fn status(&self, sandbox_id: &str) -> Result<SandboxInfo, ProviderError> {
        Ok(self.sandbox(sandbox_id)?.info())
    }

    async fn list(&self) -> Result<Vec<SandboxInfo>, ProviderError> {
        let sandboxes = self
            .sandboxes
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let mut infos: Vec<SandboxInfo> =
            sandboxes.values().map(|sandbox| sandbox.info()).collect();
        infos.sort_by(|a, b| a.sandbox_id.cmp(&b.sandbox_id));
        Ok(infos)
    }

    async fn start_process(
        &self,
        sandbox_id: &str,
        spec: ProcessSpec,
    ) -> Result<Process, ProviderError> {
        let (sandbox, cwd, env) = self.prepare(sandbox_id, &spec.exec)?;
        let (tx, rx) = mpsc::channel(EXEC_BUFFER);
        let (input_tx, input_rx) = mpsc::channel(process::INPUT_BUFFER);
        let (io, feed) = terminal::wire(Arc::clone(&sandbox), spec.tty, spec.stdin, input_rx);
        if let Some(size) = spec.tty {
            sandbox.console.append(format!("session: terminal {size}"));
        }
        // the feeder ends when the session drops its input sender
        self.tasks.spawn(feed);
        let guard = RunningGuard::new(&self.running);
        self.tasks.spawn(async move {
            exec::run(sandbox, spec.exec, cwd, env, io, tx).await;
            drop(guard);
        });
        Ok(Process {
            events: rx,
            input: input_tx,
        })
    }

    async fn exec_stream(
        &self,
        sandbox_id: &str,
        spec: ExecSpec,
    ) -> Result<mpsc::Receiver<ExecEvent>, ProviderError> {
        let (sandbox, cwd, env) = self.prepare(sandbox_id, &spec)?;
        let (tx, rx) = mpsc::channel(EXEC_BUFFER);
        let guard = RunningGuard::new(&self.running);
        self.tasks.spawn(async move {
            exec::run(sandbox, spec, cwd, env, Io::default(), tx).await;
            drop(guard);
        });
        Ok(rx)
    }

    async fn logs(
        &self,
        sandbox_id: &str,
        tail: usize,
        follow: bool,
    ) -> Result<mpsc::Receiver<LogLine>, ProviderError> {
        let sandbox = self.sandbox(sandbox_id)?;
        let ended = sandbox.destroyed.clone();
        Ok(sandbox.console.reader(tail, follow, ended, &self.tasks))
    }

    async fn read_file(&self, sandbox_id: &str, path: &str) -> Result<ByteStream, ProviderError> {
        let path = normalize_in(path, WORKSPACE)?;
        let data = self.sandbox(sandbox_id)?.fs().read(&path)?;
        let chunks = data.len().div_ceil(READ_CHUNK);
        let stream = futures::stream::iter((0..chunks).map(move |index| {
            let start = index * READ_CHUNK;
            let end = data.len().min(start + READ_CHUNK);
            Ok(data[start..end].to_vec())
        }));
        Ok(stream.boxed())
    }

    async fn write_file(
        &self,
        sandbox_id: &str,
        path: &str,
        mode: u32,
        mut data: ByteStream,
    ) -> Result<u64, ProviderError> {
        let path = normalize_in(path, WORKSPACE)?;
        let sandbox = self.sandbox(sandbox_id)?;
        // Fail before reading a large upload that could not be stored anyway.
        sandbox.fs().check_writable(&path)?;
        let mut content = Vec::new();
        while let Some(chunk) = data.next().await {
            content.extend_from_slice(&chunk?);
        }
        if sandbox.destroyed.is_cancelled() {
            return Err(ProviderError::SandboxNotFound(sandbox_id.to_owned()));
        }
        sandbox.fs().write(&path, content, mode)
    }

    async fn list_files(
        &self,
        sandbox_id: &str,
        path: &str,
    ) -> Result<Vec<FileInfo>, ProviderError> {
        let path = normalize_in(path, WORKSPACE)?;
        self.sandbox(sandbox_id)?.fs().list(&path)
    }

    async fn stat(&self, sandbox_id: &str, path: &str) -> Result<FileInfo, ProviderError> {
        let path = normalize_in(path, WORKSPACE)?;
        self.sandbox(sandbox_id)?.fs().stat(&path)
    }

    async fn delete_file(
        &self,
        sandbox_id: &str,
        path: &str,
        recursive: bool,
    ) -> Result<(), ProviderError> {
        let path = normalize_in(path, WORKSPACE)?;
        self.sandbox(sandbox_id)?.fs().delete(&path, recursive)
    }

    async fn move_file(
        &self,
        sandbox_id: &str,
        old_path: &str,
        new_path: &str,
    ) -> Result<(), ProviderError> {
        let old_path = normalize_in(old_path, WORKSPACE)?;
        let new_path = normalize_in(new_path, WORKSPACE)?;
        self.sandbox(sandbox_id)?.fs().rename(&old_path, &new_path)
    }

    async fn chmod(&self, sandbox_id: &str, path: &str, mode: u32) -> Result<(), ProviderError> {
        let path = normalize_in(path, WORKSPACE)?;
        self.sandbox(sandbox_id)?.fs().chmod(&path, mode)
    }

    async fn glob(&self, sandbox_id: &str, pattern: &str) -> Result<Vec<String>, ProviderError> {
        let pattern = normalize_in(pattern, WORKSPACE)?;
        Ok(self.sandbox(sandbox_id)?.fs().glob(&pattern))
    }

    async fn open_port(
        &self,
        sandbox_id: &str,
        port: u16,
    ) -> Result<super::port::PortConnection, ProviderError> {
        let sandbox = self.sandbox(sandbox_id)?;
        sandbox.check_running()?;
        serve::connect(&sandbox, port)
    }
}

#[cfg(test)]
mod tests;
