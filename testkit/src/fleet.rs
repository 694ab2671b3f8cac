//! [`TestFleet`]: the set-up most integration tests share, built once. A control plane
//! (on the store `BERTH_TEST_DATABASE` names), `N` workers enrolled with fresh join
//! tokens, each in a data dir of its own, and an admin [`Api`] client; started by a
//! [`FleetBuilder`] whose options are what the tests vary: the provider (mock, or
//! docker with unique worker ids and a guard removing their containers), worker ids
//! and capacity, the heartbeat interval and grace, and any other setting of the
//! control plane or the workers. `start` returns once every worker is online.
//!
//! The fleet also stops, restarts and adds workers, and restarts the control plane on
//! its data, so tests about those events keep their set-up here too.

use std::path::PathBuf;
use std::time::Duration;

use tempfile::TempDir;

use berth_controlplane::ControlPlaneConfig;
use berth_worker::{DockerConfig, WorkerConfig};

use crate::docker::{DockerCleanup, unique_worker_id};
use crate::{Api, TestControlPlane, TestWorker, eventually};

/// How long starting a fleet may wait for its workers to come online.
const ONLINE_WAIT: Duration = Duration::from_secs(20);

type ControlPlaneAdjust = Box<dyn FnOnce(&mut ControlPlaneConfig) + Send>;
type WorkerAdjust = Box<dyn Fn(&mut WorkerConfig) + Send + Sync>;

/// The options of a [`TestFleet`]; see [`TestFleet::builder`].
pub struct FleetBuilder {
    workers: usize,
    worker_ids: Vec<String>,
    settings: WorkerSettings,
    control_plane: Vec<ControlPlaneAdjust>,
}

/// What every worker of a fleet is started with.
#[derive(Default)]
struct WorkerSettings {
    docker: Option<DockerConfig>,
    max_sandboxes: Option<u32>,
    heartbeat_interval: Option<Duration>,
    adjust: Option<WorkerAdjust>,
}

impl FleetBuilder {
    /// How many workers start with the fleet (default 1).
    pub fn workers(mut self, count: usize) -> Self {
        self.workers = count;
        self
    }

    /// The ids of the first workers (the count grows to cover them); the others are
    /// `w<index>` (made unique per test process with docker).
    pub fn worker_ids(mut self, ids: &[&str]) -> Self {
        self.worker_ids = ids.iter().map(|id| (*id).to_owned()).collect();
        self.workers = self.workers.max(ids.len());
        self
    }

    /// Workers run the docker provider with `config` (`None`: the mock); the control
    /// plane then leaves the image to the workers' config.
    pub fn docker(mut self, config: impl Into<Option<DockerConfig>>) -> Self {
        self.settings.docker = config.into();
        self
    }

    /// Most sandboxes each worker holds.
    pub fn max_sandboxes(mut self, max: u32) -> Self {
        self.settings.max_sandboxes = Some(max);
        self
    }

    /// The heartbeat interval of the control plane and of every worker.
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.settings.heartbeat_interval = Some(interval);
        self.control_plane(move |config| config.heartbeat_interval = interval)
    }

    /// Heartbeats a worker may miss before it counts as unhealthy (the grace).
    pub fn missed_heartbeats(self, missed: u32) -> Self {
        self.control_plane(move |config| config.missed_heartbeats = missed)
    }

    /// How often the control plane's reaper runs.
    pub fn reap_interval(self, interval: Duration) -> Self {
        self.control_plane(move |config| config.sandboxes.reap_interval = interval)
    }

    /// Any other change to the control plane's config (applied in order).
    pub fn control_plane(
        mut self,
        adjust: impl FnOnce(&mut ControlPlaneConfig) + Send + 'static,
    ) -> Self {
        self.control_plane.push(Box::new(adjust));
        self
    }

    /// Any other change to every worker's config, applied last.
    pub fn worker(mut self, adjust: impl Fn(&mut WorkerConfig) + Send + Sync + 'static) -> Self {
        self.settings.adjust = Some(Box::new(adjust));
        self
    }

    /// Starts the control plane and the workers; returns once all are online.
    pub async fn start(self) -> TestFleet {
        let docker = self.settings.docker.is_some();
        let adjusts = self.control_plane;
        let cp = TestControlPlane::start_with(|config| {
            if docker {
                // with docker workers the image comes from the worker's config
                config.sandboxes.default_image = String::new();
            }
            for adjust in adjusts {
                adjust(config);
            }
        })
        .await;
        let cleanup = self
            .settings
            .docker
            .as_ref()
            .map(|config| DockerCleanup::new(config, &[]));
        let mut fleet = TestFleet {
            api: Api::new(&cp),
            cp,
            workers: Vec::new(),
            configs: Vec::new(),
            settings: self.settings,
            dir: tempfile::tempdir().expect("temp dir"),
            cleanup,
        };
        for index in 0..self.workers {
            let id = self.worker_ids.get(index).cloned();
            fleet
                .add_worker(move |config| {
                    if let Some(id) = id {
                        config.id = Some(id);
                    }
                })
                .await;
        }
        if self.workers > 0 {
            fleet.wait_online().await;
        }
        fleet
    }
}

/// A control plane, its workers and an admin API client; see the module docs.
pub struct TestFleet {
    pub cp: TestControlPlane,
    /// The admin client of the current control plane (replaced by a restart).
    pub api: Api,
    /// Each worker by index; `None` while stopped.
    workers: Vec<Option<TestWorker>>,
    /// The config each worker was first started with.
    configs: Vec<WorkerConfig>,
    settings: WorkerSettings,
    dir: TempDir,
    /// Removes the docker workers' containers when dropped.
    cleanup: Option<DockerCleanup>,
}

impl TestFleet {
    /// A fleet with one mock worker, otherwise as [`FleetBuilder`]'s defaults.
    pub async fn start() -> Self {
        Self::builder().start().await
    }

    /// One mock worker, the test defaults of [`TestControlPlane`], until changed.
    pub fn builder() -> FleetBuilder {
        FleetBuilder {
            workers: 1,
            worker_ids: Vec::new(),
            settings: WorkerSettings::default(),
            control_plane: Vec::new(),
        }
    }

    /// Worker `index`; panics if it is stopped.
    pub fn worker(&self, index: usize) -> &TestWorker {
        self.workers[index]
            .as_ref()
            .unwrap_or_else(|| panic!("worker {index} is stopped"))
    }

    /// The data dir of worker `index` (its identity, fences and state).
    pub fn worker_dir(&self, index: usize) -> PathBuf {
        self.dir.path().join(format!("w{index}"))
    }

    /// Starts one more worker with a fresh join token (unless `adjust` sets one) and
    /// the fleet's settings, then `adjust`; returns its index without waiting for it
    /// to come online.
    pub async fn add_worker(&mut self, adjust: impl FnOnce(&mut WorkerConfig)) -> usize {
        let index = self.workers.len();
        let mut config = self.cp.worker_config(&self.worker_dir(index), None);
        let settings = &self.settings;
        config.id = Some(match &settings.docker {
            Some(docker) => {
                config.provider = "docker".into();
                config.docker = docker.clone();
                unique_worker_id(&format!("w{index}"))
            }
            None => format!("w{index}"),
        });
        if let Some(max) = settings.max_sandboxes {
            config.capacity.max_sandboxes = max;
        }
        if let Some(interval) = settings.heartbeat_interval {
            config.heartbeat_interval = interval;
        }
        if let Some(adjust) = &settings.adjust {
            adjust(&mut config);
        }
        adjust(&mut config);
        if config.join_token.is_none() {
            config.join_token = Some(self.cp.join_token(None).await);
        }
        if let (Some(cleanup), Some(id)) = (&self.cleanup, &config.id) {
            cleanup.add(id);
        }
        let worker = TestWorker::start(config.clone())
            .await
            .expect("worker starts");
        self.workers.push(Some(worker));
        self.configs.push(config);
        index
    }

    /// Starts one more worker, as [`Self::add_worker`], enrolled with a join token
    /// that puts it in `pool` with `labels`; returns its index without waiting for it
    /// to come online.
    pub async fn add_worker_in_pool(&mut self, pool: &str, labels: &[(&str, &str)]) -> usize {
        let token = self.cp.join_token_in_pool(pool, labels).await;
        self.add_worker(move |config| config.join_token = Some(token))
            .await
    }

    /// Stops worker `index` (it keeps its data dir).
    pub async fn stop_worker(&mut self, index: usize) {
        let worker = self.workers[index]
            .take()
            .unwrap_or_else(|| panic!("worker {index} is stopped already"));
        worker.stop().await;
    }

    /// Starts stopped worker `index` again on its data dir: its id and stored
    /// identity, no join token, pointed at the current control plane. Returns without
    /// waiting for it to come online.
    pub async fn restart_worker(&mut self, index: usize) {
        assert!(
            self.workers[index].is_none(),
            "worker {index} is still running"
        );
        let mut config = self.configs[index].clone();
        config.join_token = None;
        config.control_plane = vec![self.cp.mesh_url()];
        let worker = TestWorker::start(config)
            .await
            .expect("worker starts again");
        self.workers[index] = Some(worker);
    }

    /// Waits until `/ready` answers 200 with every running worker online.
    pub async fn wait_online(&self) {
        let count = self.workers.iter().flatten().count() as u64;
        eventually("the fleet's workers online", ONLINE_WAIT, || async {
            let (status, ready) = self.api.get("/ready").await;
            (status == 200 && ready["workers_online"].as_u64() == Some(count)).then_some(())
        })
        .await;
        // a dial-out worker heartbeats before its connection for calls is registered:
        // a sandbox placed on it in between is refused with "retry shortly"
        let dialed = self.cp.fleet.workers().dialed();
        for worker in self.workers.iter().flatten() {
            if worker.listen.is_none() {
                eventually("a dial-out worker's connection", ONLINE_WAIT, || async {
                    dialed.is_connected(&worker.worker_id).then_some(())
                })
                .await;
            }
        }
    }

    /// Stops the control plane and starts it again on its data (new ports unless
    /// pinned); the workers keep running.
    pub async fn restart_control_plane(self) -> Self {
        self.restart_control_plane_after(Duration::ZERO, |_| {})
            .await
    }

    /// Stops the control plane, waits `down_for`, and starts it again on its data
    /// with its config changed by `adjust`; the fleet's [`Api`] then talks to it.
    pub async fn restart_control_plane_after(
        self,
        down_for: Duration,
        adjust: impl FnOnce(&mut ControlPlaneConfig),
    ) -> Self {
        let Self {
            cp,
            api: _,
            workers,
            configs,
            settings,
            dir,
            cleanup,
        } = self;
        let (data, mut config) = cp.stop_keeping_data().await;
        tokio::time::sleep(down_for).await;
        adjust(&mut config);
        let cp = TestControlPlane::restart(data, config).await;
        Self {
            api: Api::new(&cp),
            cp,
            workers,
            configs,
            settings,
            dir,
            cleanup,
        }
    }

    /// Stops every running worker, then the control plane.
    pub async fn stop(self) {
        for worker in self.workers.into_iter().flatten() {
            worker.stop().await;
        }
        self.cp.stop().await;
    }
}
