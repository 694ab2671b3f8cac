//! Docker for tests: the locally built test image (no registry), a visible skip when
//! no engine answers (a failure instead with `BERTH_REQUIRE_DOCKER=1`, as CI sets),
//! unique worker ids so parallel tests never reconcile each other's containers, a
//! guard that removes every container and network of the given workers when a test
//! ends (even by a panic), and a cuttable proxy in front of the engine's socket.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;

use berth_worker::DockerConfig;
use berth_worker::provider::Provider;
use berth_worker::provider::docker::{DockerProvider, PullPolicy};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::OnceCell;
use tokio::task::JoinSet;

/// The image the tests and the smoke run use; `smoke/docker-test-image.sh` builds it.
pub const TEST_IMAGE: &str = "berth-test-busybox:latest";

static READY: OnceCell<Result<(), String>> = OnceCell::const_new();

/// A docker config for tests, or `None` after printing why the test is skipped.
/// With `BERTH_REQUIRE_DOCKER=1` a missing engine fails the test instead.
pub async fn docker_or_skip(test: &str) -> Option<DockerConfig> {
    crate::init();
    let ready = READY.get_or_init(prepare).await;
    match ready {
        Ok(()) => Some(test_config()),
        Err(reason) => {
            if std::env::var("BERTH_REQUIRE_DOCKER").as_deref() == Ok("1") {
                panic!("{test}: BERTH_REQUIRE_DOCKER=1 but {reason}");
            }
            eprintln!("SKIPPED {test}: no docker engine: {reason}");
            None
        }
    }
}

/// The config docker tests run with: the test image, never pulled.
pub fn test_config() -> DockerConfig {
    DockerConfig {
        default_image: TEST_IMAGE.to_owned(),
        pull_policy: PullPolicy::Never,
        memory_mb: 128,
        ..Default::default()
    }
}

async fn prepare() -> Result<(), String> {
    let health = DockerProvider::new(test_config(), "berth-test-probe")
        .health()
        .await;
    if !health.healthy {
        return Err(health.message);
    }
    let script = workspace_root().join("smoke/docker-test-image.sh");
    let built = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .arg(&script)
            .env("BERTH_TEST_IMAGE", TEST_IMAGE)
            .output()
    })
    .await
    .map_err(|err| format!("image build task: {err}"))?
    .map_err(|err| format!("cannot run docker-test-image.sh: {err}"))?;
    if !built.status.success() {
        return Err(format!(
            "docker-test-image.sh failed: {}",
            String::from_utf8_lossy(&built.stderr)
        ));
    }
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// `prefix-<random>`: a worker id no other test process uses.
pub fn unique_worker_id(prefix: &str) -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &random[..10])
}

/// Removes every sandbox of its workers from the engine when dropped.
pub struct DockerCleanup {
    config: DockerConfig,
    worker_ids: Mutex<Vec<String>>,
}

impl DockerCleanup {
    pub fn new(config: &DockerConfig, worker_ids: &[&str]) -> Self {
        Self {
            config: config.clone(),
            worker_ids: Mutex::new(worker_ids.iter().map(|id| (*id).to_owned()).collect()),
        }
    }

    pub fn add(&self, worker_id: &str) {
        self.worker_ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(worker_id.to_owned());
    }

    /// Removes everything now; returns how many sandboxes were left.
    pub async fn run(&self) -> usize {
        let ids = self
            .worker_ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        remove_all(&self.config, &ids).await
    }
}

async fn remove_all(config: &DockerConfig, worker_ids: &[String]) -> usize {
    let mut left = 0;
    for worker_id in worker_ids {
        let provider = DockerProvider::new(config.clone(), worker_id.clone());
        for sandbox in provider.list().await.unwrap_or_default() {
            left += 1;
            let _ = provider.destroy(&sandbox.sandbox_id).await;
        }
        provider.prepare().await;
    }
    left
}

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        let ids = std::mem::take(&mut *self.worker_ids.lock().unwrap_or_else(|e| e.into_inner()));
        if ids.is_empty() {
            return;
        }
        let config = self.config.clone();
        // a runtime of its own: drop may run inside (or after) the test's runtime
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            runtime.block_on(remove_all(&config, &ids));
        })
        .join();
    }
}

/// A unix-socket proxy to the engine's socket that a test can cut (refusing new
/// connections and dropping open ones) and restore, to play an engine going away.
pub struct EngineProxy {
    pub socket: PathBuf,
    upstream: PathBuf,
    _dir: tempfile::TempDir,
    serving: Mutex<Option<JoinSet<()>>>,
}

impl EngineProxy {
    pub async fn start(upstream: &str) -> Arc<Self> {
        let dir = tempfile::tempdir().expect("proxy dir");
        let proxy = Arc::new(Self {
            socket: dir.path().join("docker.sock"),
            upstream: PathBuf::from(upstream.trim_start_matches("unix://")),
            _dir: dir,
            serving: Mutex::new(None),
        });
        proxy.restore();
        proxy
    }

    /// The `docker.host` value that goes through the proxy.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Stops accepting and drops every open connection.
    pub fn cut(&self) {
        let serving = self
            .serving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        drop(serving);
        let _ = std::fs::remove_file(&self.socket);
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.cut();
        let listener = UnixListener::bind(&self.socket).expect("bind proxy socket");
        let upstream = self.upstream.clone();
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                connections.spawn(async move {
                    if let Ok(mut engine) = UnixStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                    }
                });
            }
        });
        *self.serving.lock().unwrap_or_else(|e| e.into_inner()) = Some(tasks);
    }
}

impl Drop for EngineProxy {
    fn drop(&mut self) {
        self.cut();
    }
}
