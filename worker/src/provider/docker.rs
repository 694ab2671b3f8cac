//! The docker provider: each sandbox is a container on the local Docker engine,
//! reached through bollard with the API version negotiated down to the engine's.
//!
//! Every container and network carries `berth.managed=true`, `berth.sandbox=<id>` and
//! `berth.worker=<worker id>`; the provider only ever finds, lists or removes what is
//! labelled with its own worker id, so workers sharing an engine never touch each
//! other's sandboxes. `list()` reports every labelled container, running or not, and
//! the heartbeat's reconciliation does the rest: leased ones are adopted (they are
//! renewed and stay usable across a worker restart), the others destroyed. Networks
//! are reconciled in the same pass: `list()` also removes the per-sandbox networks of
//! this worker that no container and no spawn in flight uses (a spawn cut off
//! half-way, a container removed from outside), so none outlives its sandbox and takes
//! an address pool for nothing.
//!
//! One module per job: `config` (the `docker:` section), `engine` (connection,
//! health, error mapping), `inventory` (names, labels, states, listing), `spawn`
//! (image, network, container; destroy), `exec` (commands and their killer),
//! `process` (interactive commands: stdin, a terminal, resizes, signals) and `hijack`
//! (a terminal exec's own connection), `ports` (connections to a container's ports), `files`
//! and `archive` (the archive API and file helpers), `logs` (the console) and
//! `scripts` (the `sh` run inside sandboxes).

pub(crate) mod archive;
mod build;
mod config;
mod engine;
mod exec;
pub(crate) mod files;
mod firewall;
mod hijack;
mod images;
mod inventory;
pub(crate) mod logs;
mod ports;
mod process;
mod run_args;
mod scripts;
mod services;
mod spawn;
mod subnets;
mod workspace_watch;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use bollard::Docker;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

pub use config::{DEFAULT_HOST, DEFAULT_SUBNET_POOL, DockerConfig, NetworkMode, PullPolicy};
pub use firewall::CHAIN as FIREWALL_CHAIN;
pub use inventory::{LABEL_MANAGED, LABEL_SANDBOX, LABEL_WORKER};
pub use subnets::Ipv4Net;

use super::paths::{WORKSPACE, normalize_in};
use super::{
    BuiltImage, ByteStream, ExecEvent, ExecMode, ExecSpec, FileInfo, ImageBuild, LoadedImages,
    LogLine, Process, ProcessSpec, Provider, ProviderError, ProviderHealth, SandboxInfo,
    SandboxSpec,
};
use engine::Engine;
use exec::{Attach, Command};
use files::Files;
use firewall::HostFirewall;
use spawn::Spawn;

/// How long a stop lets the container's processes end on SIGTERM before SIGKILL.
const STOP_GRACE_SECS: i32 = 5;

/// A provider backed by a Docker engine; see the module docs.
pub struct DockerProvider {
    config: DockerConfig,
    worker_id: String,
    engine: Engine,
    tasks: TaskTracker,
    /// Sandboxes with a spawn in flight, whose networks the inventory pass leaves be.
    spawning: Spawning,
    /// Held while a spawn picks its network's subnet and creates the network, so this
    /// worker's spawns never pick the same one.
    subnet_lock: tokio::sync::Mutex<()>,
    /// Keeps per-sandbox networks away from the host's own services.
    firewall: HostFirewall,
    /// Stops sandboxes whose `/workspace` grew past the limit.
    workspace_watch: workspace_watch::WorkspaceWatch,
    /// Image builds in flight, one per tag.
    builds: build::Builds,
}

/// Sandbox ids with a spawn in flight (counted: two spawns of one id may overlap).
#[derive(Debug, Default, Clone)]
struct Spawning(Arc<Mutex<HashMap<String, usize>>>);

impl Spawning {
    /// Notes a spawn of `sandbox_id` until the guard drops (the spawn returned, or its
    /// caller went away mid-spawn).
    fn begin(&self, sandbox_id: &str) -> SpawningGuard {
        *self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(sandbox_id.to_owned())
            .or_default() += 1;
        SpawningGuard {
            spawning: self.clone(),
            sandbox_id: sandbox_id.to_owned(),
        }
    }

    fn snapshot(&self) -> HashSet<String> {
        let ids = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        ids.keys().cloned().collect()
    }
}

struct SpawningGuard {
    spawning: Spawning,
    sandbox_id: String,
}

impl Drop for SpawningGuard {
    fn drop(&mut self) {
        let mut ids = self
            .spawning
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = ids.get_mut(&self.sandbox_id) {
            *count -= 1;
            if *count == 0 {
                ids.remove(&self.sandbox_id);
            }
        }
    }
}

impl fmt::Debug for DockerProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerProvider")
            .field("host", &self.config.host)
            .field("worker_id", &self.worker_id)
            .finish()
    }
}

impl DockerProvider {
    /// A provider for `worker_id`'s sandboxes. Connects on first use, so a worker
    /// starts (unhealthy) while its engine is down.
    pub fn new(config: DockerConfig, worker_id: impl Into<String>) -> Self {
        // only per-sandbox networks come from the pool the rules cover; `none` has no
        // network and a named one is the operator's to fence
        let firewall = HostFirewall::new(
            config.subnet_pool,
            config.host_firewall && config.network == NetworkMode::PerSandbox,
            config.host_firewall_check_interval,
        );
        let workspace_watch = workspace_watch::WorkspaceWatch::new(
            config.workspace_max_mb,
            config.workspace_check_interval,
        );
        Self {
            firewall,
            workspace_watch,
            engine: Engine::new(&config),
            config,
            worker_id: worker_id.into(),
            tasks: TaskTracker::new(),
            spawning: Spawning::default(),
            subnet_lock: tokio::sync::Mutex::new(()),
            builds: build::Builds::default(),
        }
    }

    /// Start-up housekeeping: installs the host firewall, connects and removes
    /// sandbox networks of this worker that no container uses (a spawn that died
    /// half-way). Failures are logged; the provider reports itself unhealthy until
    /// the engine answers and the firewall is in place.
    pub async fn prepare(&self) {
        // logged by the firewall itself; spawns retry it
        let _ = self.firewall.ensure().await;
        let docker = match self.engine.client().await {
            Ok(docker) => docker,
            Err(err) => {
                tracing::warn!(worker_id = %self.worker_id, error = %err, "docker engine not reachable at start");
                return;
            }
        };
        match inventory::sweep_networks(&docker, &self.worker_id).await {
            Ok(0) => {}
            Ok(removed) => {
                tracing::info!(worker_id = %self.worker_id, removed, "removed stray sandbox networks")
            }
            Err(err) => {
                tracing::warn!(worker_id = %self.worker_id, error = %err, "cannot sweep sandbox networks")
            }
        }
        match build::sweep_build_containers(&docker, &self.worker_id).await {
            Ok(0) => {}
            Ok(removed) => {
                tracing::info!(worker_id = %self.worker_id, removed, "removed the containers of image builds cut off")
            }
            Err(err) => {
                tracing::warn!(worker_id = %self.worker_id, error = %err, "cannot sweep image build containers")
            }
        }
    }

    async fn docker(&self) -> Result<Docker, ProviderError> {
        self.engine.client().await
    }

    fn spawner<'a>(&'a self, docker: &'a Docker) -> Spawn<'a> {
        Spawn {
            docker,
            config: &self.config,
            worker_id: &self.worker_id,
            subnet_lock: &self.subnet_lock,
        }
    }

    /// The docker client and the container of a sandbox of this worker.
    async fn target(&self, sandbox_id: &str) -> Result<(Docker, String), ProviderError> {
        let docker = self.docker().await?;
        let container = inventory::resolve(&docker, &self.worker_id, sandbox_id).await?;
        let id = container
            .id
            .ok_or_else(|| ProviderError::Internal("a container without an id".into()))?;
        Ok((docker, id))
    }

    async fn with_files<T, F>(&self, sandbox_id: &str, call: F) -> Result<T, ProviderError>
    where
        F: for<'a> FnOnce(Files<'a>) -> futures::future::BoxFuture<'a, Result<T, ProviderError>>,
    {
        let (docker, container) = self.target(sandbox_id).await?;
        let files = Files {
            docker: &docker,
            container: &container,
            sandbox_id,
            tasks: &self.tasks,
            chown_to_user: !self.config.user.is_empty(),
            spool_dir: self.config.spool_dir.as_deref(),
            max_upload: self.config.max_upload_mb << 20,
        };
        call(files).await
    }

    /// What `spec` runs as an engine exec, checked (command, environment, working
    /// directory), with the docker client and the sandbox's container.
    async fn command(
        &self,
        sandbox_id: &str,
        spec: ExecSpec,
    ) -> Result<(Docker, String, Command), ProviderError> {
        if spec.command.is_empty() {
            return Err(ProviderError::InvalidArgument("empty command".into()));
        }
        check_env(&spec.env)?;
        let cwd = normalize_in(spec.workdir.as_deref().unwrap_or(WORKSPACE), WORKSPACE)?;
        let (docker, container) = self.target(sandbox_id).await?;
        if cwd != WORKSPACE {
            let files = Files {
                docker: &docker,
                container: &container,
                sandbox_id,
                tasks: &self.tasks,
                chown_to_user: false,
                spool_dir: None,
                max_upload: 0,
            };
            files.require_dir(&cwd).await?;
        }
        let command = Command {
            argv: argv(&spec),
            env: spec.env.into_iter().collect(),
            workdir: cwd,
            timeout: spec.timeout,
        };
        Ok((docker, container, command))
    }
}

/// The engine's argv for `spec`: always through `/bin/sh`.
fn argv(spec: &ExecSpec) -> Vec<String> {
    match spec.mode {
        ExecMode::Shell => vec!["/bin/sh".to_owned(), "-c".to_owned(), spec.shell_line()],
        // through `exec "$@"`: no shell syntax is interpreted, and a missing
        // program is exit 127 with a message, as in shell mode
        ExecMode::Argv => {
            let mut argv = vec![
                "/bin/sh".to_owned(),
                "-c".to_owned(),
                "exec \"$@\"".to_owned(),
                "sh".to_owned(),
                spec.command.clone(),
            ];
            argv.extend(spec.args.iter().cloned());
            argv
        }
    }
}

impl Drop for DockerProvider {
    fn drop(&mut self) {
        self.tasks.close();
    }
}

fn check_env(env: &std::collections::BTreeMap<String, String>) -> Result<(), ProviderError> {
    for (key, value) in env {
        if key.is_empty() || key.contains(['=', '\0']) || value.contains('\0') {
            return Err(ProviderError::InvalidArgument(format!(
                "environment variable {key:?} is not a valid name=value"
            )));
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl Provider for DockerProvider {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn total_memory_mb(&self) -> u64 {
        self.engine.memory_mb()
    }

    async fn health(&self) -> ProviderHealth {
        let health = self.engine.health().await;
        match self.firewall.failure() {
            Some(failure) if health.healthy => ProviderHealth {
                healthy: false,
                message: format!(
                    "the host firewall for sandbox networks is not in place: {failure}"
                ),
            },
            _ => health,
        }
    }

    async fn shutdown(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    async fn build_image(&self, build: &ImageBuild) -> Result<BuiltImage, ProviderError> {
        let docker = self.docker().await?;
        // no base: this worker's default image, named in the tag like any other
        let build = ImageBuild {
            base: if build.base.is_empty() {
                self.config.default_image.clone()
            } else {
                build.base.clone()
            },
            ..build.clone()
        };
        self.spawner(&docker)
            .build_image(&self.builds, &self.tasks, &build)
            .await
    }

    async fn load_images(&self, archive: ByteStream) -> Result<LoadedImages, ProviderError> {
        let docker = self.docker().await?;
        images::load(&docker, archive).await
    }

    async fn spawn(&self, spec: SandboxSpec) -> Result<SandboxInfo, ProviderError> {
        check_env(&spec.env)?;
        // the engine sets any limit it is given, even one past what its host has
        let total = self.engine.memory_mb();
        if total > 0 && spec.memory_mb > total {
            return Err(ProviderError::InvalidArgument(format!(
                "memory_mb {} is more than this worker's docker host has ({total} MiB)",
                spec.memory_mb
            )));
        }
        self.firewall.ensure().await.map_err(|err| {
            ProviderError::Unavailable(format!(
                "the host firewall for sandbox networks is not in place ({err}); fix it, or set docker.host_firewall: false to run sandboxes that can reach this host"
            ))
        })?;
        let docker = self.docker().await?;
        let _spawning = self.spawning.begin(&spec.sandbox_id);
        let info = self.spawner(&docker).spawn(&spec).await?;
        tracing::debug!(sandbox_id = %info.sandbox_id, container = %info.vm_id, "docker sandbox created");
        Ok(info)
    }

    async fn destroy(&self, sandbox_id: &str) -> Result<(), ProviderError> {
        let docker = self.docker().await?;
        self.spawner(&docker).destroy(sandbox_id).await
    }

    async fn stop(&self, sandbox_id: &str) -> Result<(), ProviderError> {
        let docker = self.docker().await?;
        let container = inventory::resolve(&docker, &self.worker_id, sandbox_id).await?;
        let id = container
            .id
            .unwrap_or_else(|| inventory::resource_name(sandbox_id));
        let options = bollard::query_parameters::StopContainerOptions {
            t: Some(STOP_GRACE_SECS),
            ..Default::default()
        };
        match docker.stop_container(&id, Some(options)).await {
            // 304: stopped already
            Ok(()) => {}
            Err(err) if engine::status_of(&err) == Some(304) => {}
            Err(err) => return Err(engine::engine_error("stop the sandbox's container", err)),
        }
        services::stop_all(&docker, &self.worker_id, sandbox_id, STOP_GRACE_SECS).await
    }

    async fn start(&self, sandbox_id: &str) -> Result<(), ProviderError> {
        let docker = self.docker().await?;
        let container = inventory::resolve(&docker, &self.worker_id, sandbox_id).await?;
        let id = container
            .id
            .unwrap_or_else(|| inventory::resource_name(sandbox_id));
        // its services first, as at the spawn
        services::start_all(&docker, &self.worker_id, sandbox_id).await?;
        match docker
            .start_container(
                &id,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
        {
            // 304: running already
            Ok(()) => Ok(()),
            Err(err) if engine::status_of(&err) == Some(304) => Ok(()),
            Err(err) => Err(engine::engine_error("start the sandbox's container", err)),
        }
    }

    async fn status(&self, sandbox_id: &str) -> Result<SandboxInfo, ProviderError> {
        let docker = self.docker().await?;
        let container = inventory::resolve(&docker, &self.worker_id, sandbox_id).await?;
        Ok(inventory::info_of(sandbox_id, &container))
    }

    /// Every container of this worker; on the way, removes the networks of this
    /// worker that no container and no spawn in flight uses (see
    /// [`inventory::SandboxNetworks`] for why in this order).
    async fn list(&self) -> Result<Vec<SandboxInfo>, ProviderError> {
        // the heartbeat's pass reconciles the firewall too (failures are logged and
        // show in the provider's health)
        let _ = self.firewall.ensure().await;
        let docker = self.docker().await?;
        let networks = inventory::SandboxNetworks::list(&docker, &self.worker_id).await;
        let spawning = self.spawning.snapshot();
        let held = inventory::list(&docker, &self.worker_id).await?;
        // before the networks: an orphaned service keeps its network in use
        services::remove_orphans(&docker, &self.worker_id, &held, &spawning).await;
        match networks {
            Ok(networks) => {
                networks.remove_strays(&docker, &held, &spawning).await;
            }
            Err(err) => {
                tracing::warn!(worker_id = %self.worker_id, error = %err, "cannot list sandbox networks")
            }
        }
        self.workspace_watch
            .maybe_check(&docker, &self.worker_id, &held, &self.tasks);
        Ok(held)
    }

    async fn start_process(
        &self,
        sandbox_id: &str,
        spec: ProcessSpec,
    ) -> Result<Process, ProviderError> {
        let (docker, container, command) = self.command(sandbox_id, spec.exec).await?;
        process::start(
            &self.engine.endpoint(),
            &docker,
            &container,
            sandbox_id,
            command,
            Attach {
                tty: spec.tty,
                stdin: spec.stdin,
            },
            &self.tasks,
        )
        .await
    }

    async fn exec_stream(
        &self,
        sandbox_id: &str,
        spec: ExecSpec,
    ) -> Result<mpsc::Receiver<ExecEvent>, ProviderError> {
        let (docker, container, command) = self.command(sandbox_id, spec).await?;
        exec::stream(&docker, &container, sandbox_id, command, &self.tasks).await
    }

    async fn logs(
        &self,
        sandbox_id: &str,
        tail: usize,
        follow: bool,
    ) -> Result<mpsc::Receiver<LogLine>, ProviderError> {
        let (docker, container) = self.target(sandbox_id).await?;
        Ok(logs::read(&docker, &container, tail, follow, &self.tasks))
    }

    async fn read_file(&self, sandbox_id: &str, path: &str) -> Result<ByteStream, ProviderError> {
        let path = normalize_in(path, WORKSPACE)?;
        self.with_files(sandbox_id, |files| {
            Box::pin(async move { files.read(&path).await })
        })
        .await
    }

    async fn write_file(
        &self,
        sandbox_id: &str,
        path: &str,
        mode: u32,
        data: ByteStream,
    ) -> Result<u64, ProviderError> {
        let path = normalize_in(path, WORKSPACE)?;
        self.with_files(sandbox_id, |files| {
            Box::pin(async move { files.write(&path, mode, data).await })
        })
        .await
    }

    async fn list_files(
        &self,
        sandbox_id: &str,
        path: &str,
    ) -> Result<Vec<FileInfo>, ProviderError> {
        let path = normalize_in(path, WORKSPACE)?;
        self.with_files(sandbox_id, |files| {
            Box::pin(async move { files.list(&path).await })
        })
        .await
    }

    async fn stat(&self, sandbox_id: &str, path: &str) -> Result<FileInfo, ProviderError> {
        let path = normalize_in(path, WORKSPACE)?;
        self.with_files(sandbox_id, |files| {
            Box::pin(async move { files.stat(&path).await })
        })
        .await
    }

    async fn delete_file(
        &self,
        sandbox_id: &str,
        path: &str,
        recursive: bool,
    ) -> Result<(), ProviderError> {
        let path = normalize_in(path, WORKSPACE)?;
        self.with_files(sandbox_id, |files| {
            Box::pin(async move { files.delete(&path, recursive).await })
        })
        .await
    }

    async fn move_file(
        &self,
        sandbox_id: &str,
        old_path: &str,
        new_path: &str,
    ) -> Result<(), ProviderError> {
        let old_path = normalize_in(old_path, WORKSPACE)?;
        let new_path = normalize_in(new_path, WORKSPACE)?;
        self.with_files(sandbox_id, |files| {
            Box::pin(async move { files.rename(&old_path, &new_path).await })
        })
        .await
    }

    async fn chmod(&self, sandbox_id: &str, path: &str, mode: u32) -> Result<(), ProviderError> {
        let path = normalize_in(path, WORKSPACE)?;
        self.with_files(sandbox_id, |files| {
            Box::pin(async move { files.chmod(&path, mode).await })
        })
        .await
    }

    async fn glob(&self, sandbox_id: &str, pattern: &str) -> Result<Vec<String>, ProviderError> {
        let pattern = normalize_in(pattern, WORKSPACE)?;
        self.with_files(sandbox_id, |files| {
            Box::pin(async move { files.glob(&pattern).await })
        })
        .await
    }

    async fn open_port(
        &self,
        sandbox_id: &str,
        port: u16,
    ) -> Result<super::port::PortConnection, ProviderError> {
        let docker = self.docker().await?;
        let container = inventory::resolve(&docker, &self.worker_id, sandbox_id).await?;
        ports::connect(&container, sandbox_id, port).await
    }
}
