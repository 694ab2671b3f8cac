//! [`TestControlPlane`]: a control plane in process with the test defaults (port-0
//! loopback listeners, a fast heartbeat, data in a temp dir), on the store
//! `BERTH_TEST_DATABASE` names; replicas of it, restarts on its data, join tokens and
//! worker configs pointed at it, and raw mesh clients for poking at its edges.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use berth_controlplane::fleet::{Fleet, JoinTokenRequest};
use berth_controlplane::{ControlPlaneConfig, Listeners, RunningControlPlane};
use berth_pki::transport::{DialOptions, mesh_channel};
use berth_pki::{ReloadableIdentity, SpiffeId};
use berth_proto::v1::control_plane_client::ControlPlaneClient;
use berth_proto::v1::worker_service_client::WorkerServiceClient;
use berth_worker::WorkerConfig;

use crate::database::{TestDatabase, postgres_database};
use crate::{TestWorker, init, postgres};

/// A control plane with a fast heartbeat, on loopback port-0 listeners.
pub struct TestControlPlane {
    pub dir: TempDir,
    pub config: ControlPlaneConfig,
    pub api_addr: std::net::SocketAddr,
    pub mesh_addr: std::net::SocketAddr,
    pub admin_key: String,
    /// The admin key, when this start made the cluster's first one.
    pub first_admin_key: Option<String>,
    pub fleet: Fleet,
    shutdown: CancellationToken,
    running: RunningControlPlane,
}

impl TestControlPlane {
    /// The listener that serves previews only (`preview_listen`), when configured.
    pub fn preview_addr(&self) -> Option<std::net::SocketAddr> {
        self.running.preview_addr
    }

    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts with the test defaults adjusted by `adjust`; on Postgres when
    /// `BERTH_TEST_DATABASE=postgres`.
    pub async fn start_with(adjust: impl FnOnce(&mut ControlPlaneConfig)) -> Self {
        let database_url = match TestDatabase::from_env() {
            TestDatabase::Sqlite => String::new(),
            TestDatabase::Postgres => postgres_database().await,
        };
        Self::start_on(database_url, adjust).await
    }

    /// Starts on a fresh database of the throwaway Postgres, or returns `None` (after
    /// printing `SKIPPED …`) when Postgres is not installed.
    pub async fn start_on_postgres(
        test: &str,
        adjust: impl FnOnce(&mut ControlPlaneConfig),
    ) -> Option<Self> {
        let url = postgres::fresh_database(test).await?;
        Some(Self::start_on(url, adjust).await)
    }

    /// Another replica of this control plane: its own data dir and ports, the same
    /// database, and copies of this one's CA, token key and admin key (the way an
    /// operator provisions a replica). `adjust` may change its config further.
    pub async fn start_replica(&self, adjust: impl FnOnce(&mut ControlPlaneConfig)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().join("control-plane");
        std::fs::create_dir_all(&data_dir).expect("replica data dir");
        let keys_dir = self.config.keys_dir();
        for file in berth_controlplane::cluster::SHARED_KEY_FILES {
            std::fs::copy(keys_dir.join(file), data_dir.join(file)).expect("copy a key file");
        }
        std::fs::copy(
            self.config.data_dir.join("admin.key"),
            data_dir.join("admin.key"),
        )
        .expect("copy admin.key");
        let mut config = self.config.clone();
        config.data_dir = data_dir;
        config.keys_dir = None;
        config.listen = "127.0.0.1:0".parse().expect("addr");
        config.mesh_listen = "127.0.0.1:0".parse().expect("addr");
        if config.ssh_listen.is_some() {
            config.ssh_listen = Some("127.0.0.1:0".parse().expect("addr"));
        }
        adjust(&mut config);
        init();
        Self::launch(dir, config).await
    }

    /// Starts on `database_url` (empty: SQLite in the data dir).
    async fn start_on(database_url: String, adjust: impl FnOnce(&mut ControlPlaneConfig)) -> Self {
        Self::try_start_on(&database_url, adjust)
            .await
            .expect("start control plane")
    }

    /// The test defaults: data in `dir`, port-0 loopback listeners, fast heartbeats.
    fn test_config(dir: &Path) -> ControlPlaneConfig {
        ControlPlaneConfig {
            data_dir: dir.join("control-plane"),
            listen: "127.0.0.1:0".parse().expect("addr"),
            mesh_listen: "127.0.0.1:0".parse().expect("addr"),
            ssh_listen: Some("127.0.0.1:0".parse().expect("addr")),
            heartbeat_interval: Duration::from_millis(200),
            // 2s of silence before a worker counts as unhealthy: fast, yet calm on a
            // loaded 2-core CI machine
            missed_heartbeats: 10,
            // a silent worker's sandboxes are lost after 2 × grace, as tests of lost
            // workers expect (the partition tests set their own)
            sandboxes: berth_controlplane::config::SandboxesConfig {
                disconnect: berth_controlplane::config::DisconnectConfig {
                    lost_after: Duration::ZERO,
                },
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Starts again on the data dir of a control plane stopped with
    /// [`TestControlPlane::stop_keeping_data`] (new ports, same CA, keys and store).
    pub async fn restart(dir: TempDir, config: ControlPlaneConfig) -> Self {
        init();
        Self::launch(dir, config).await
    }

    async fn launch(dir: TempDir, config: ControlPlaneConfig) -> Self {
        Self::try_launch(dir, config)
            .await
            .expect("start control plane")
    }

    /// Starts on `database_url` with the test defaults adjusted by `adjust`, handing
    /// back the error when the control plane refuses to start.
    pub async fn try_start_on(
        database_url: &str,
        adjust: impl FnOnce(&mut ControlPlaneConfig),
    ) -> anyhow::Result<Self> {
        init();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Self::test_config(dir.path());
        config.database.url = database_url.to_owned();
        adjust(&mut config);
        Self::try_launch(dir, config).await
    }

    async fn try_launch(dir: TempDir, config: ControlPlaneConfig) -> anyhow::Result<Self> {
        let listeners = Listeners::bind(&config).await?;
        let shutdown = CancellationToken::new();
        let running =
            berth_controlplane::start(config.clone(), listeners, shutdown.clone()).await?;
        let admin_key = match &running.first_admin_key {
            Some(key) => key.clone(),
            None => std::fs::read_to_string(&running.admin_key_path)
                .map(|key| key.trim().to_owned())
                .unwrap_or_default(),
        };
        Ok(Self {
            api_addr: running.api_addr,
            mesh_addr: running.mesh_addr,
            fleet: running.fleet.clone(),
            dir,
            config,
            admin_key,
            first_admin_key: running.first_admin_key.clone(),
            shutdown,
            running,
        })
    }

    /// Stops, handing back the data dir and config for [`TestControlPlane::restart`].
    pub async fn stop_keeping_data(self) -> (TempDir, ControlPlaneConfig) {
        self.shutdown.cancel();
        self.running.wait().await;
        (self.dir, self.config)
    }

    /// The control plane's sandbox operations, for tests that call them in process.
    pub fn sandboxes(&self) -> &berth_controlplane::sandboxes::Sandboxes {
        &self.running.sandboxes
    }

    pub fn mesh_url(&self) -> String {
        format!("https://{}", self.mesh_addr)
    }

    /// The SSH gateway's address (every test control plane has one, on port 0).
    pub fn ssh_addr(&self) -> std::net::SocketAddr {
        self.running
            .ssh
            .as_ref()
            .map(|ssh| ssh.address)
            .expect("this control plane has no SSH gateway")
    }

    pub fn api_url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    pub fn trust_domain(&self) -> &str {
        self.fleet.authority().trust_domain()
    }

    pub fn ca_fingerprint(&self) -> String {
        self.fleet.authority().ca().fingerprint()
    }

    pub fn ca_der(&self) -> Vec<u8> {
        self.fleet.authority().ca().cert_der().to_vec()
    }

    /// A one-use join token, optionally pinned to `worker_id`.
    pub async fn join_token(&self, worker_id: Option<&str>) -> String {
        self.fleet
            .create_join_token(
                JoinTokenRequest {
                    worker_id: worker_id.map(str::to_owned),
                    ..Default::default()
                },
                "test",
            )
            .await
            .expect("create join token")
            .token
    }

    /// A one-use join token whose worker joins `pool` with `labels`.
    pub async fn join_token_in_pool(&self, pool: &str, labels: &[(&str, &str)]) -> String {
        self.fleet
            .create_join_token(
                JoinTokenRequest {
                    pool: Some(pool.to_owned()),
                    labels: labels
                        .iter()
                        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                        .collect(),
                    ..Default::default()
                },
                "test",
            )
            .await
            .expect("create join token")
            .token
    }

    /// A worker config pointed at this control plane, listening on a port-0 address.
    pub fn worker_config(&self, data_dir: &Path, join_token: Option<String>) -> WorkerConfig {
        WorkerConfig {
            data_dir: data_dir.to_owned(),
            control_plane: vec![self.mesh_url()],
            join_token,
            listen: Some("127.0.0.1:0".parse().expect("addr")),
            heartbeat_interval: Duration::from_millis(200),
            ..Default::default()
        }
    }

    /// A raw mesh client that trusts this control plane but presents no certificate
    /// (what a worker has before enrollment).
    pub fn anonymous_mesh_client(&self) -> ControlPlaneClient<Channel> {
        let (tls, _) =
            berth_pki::bootstrap_client_config(&self.ca_fingerprint()).expect("bootstrap config");
        ControlPlaneClient::new(
            mesh_channel(&self.mesh_url(), Arc::new(tls), DialOptions::default())
                .expect("mesh channel"),
        )
    }

    /// A raw mesh client presenting `cert_pem`/`key_pem`.
    pub fn mesh_client_as(&self, cert_pem: &str, key_pem: &str) -> ControlPlaneClient<Channel> {
        let identity = Arc::new(ReloadableIdentity::from_pem(cert_pem, key_pem).expect("identity"));
        let tls = berth_pki::mesh_client_config(
            &self.ca_der(),
            SpiffeId::control_plane(self.trust_domain()),
            Some(identity),
        )
        .expect("client config");
        ControlPlaneClient::new(
            mesh_channel(&self.mesh_url(), Arc::new(tls), DialOptions::default())
                .expect("mesh channel"),
        )
    }

    /// A client of worker `worker_id`'s service using the control plane's own identity.
    pub fn worker_client(&self, worker: &TestWorker) -> WorkerServiceClient<Channel> {
        let tls = self
            .fleet
            .authority()
            .worker_client_config(&worker.worker_id)
            .expect("worker client config");
        WorkerServiceClient::new(
            mesh_channel(
                &worker.listen_addr().to_string(),
                Arc::new(tls),
                DialOptions::default(),
            )
            .expect("worker channel"),
        )
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.running.wait().await;
    }
}
