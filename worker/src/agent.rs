//! Starting a worker: obtain an identity (stored, re-enrolled or freshly enrolled),
//! build the shared [`Runtime`], then run the WorkerService server (on a listener, or
//! on the connections the worker dials out to its control planes), the heartbeat loop,
//! the renewal loop and the metrics endpoint as tracked tasks that stop with the
//! shutdown token. Start-up only: what the tasks share lives in `runtime`, the clock in
//! `clock`, the control-plane clients in `control_planes`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use berth_pki::{
    ReloadableIdentity, SpiffeId, dialout_client_config, mesh_client_config, worker_server_config,
};
use berth_proto::v1 as pb;
use berth_proto::v1::worker_service_server::WorkerServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::now_secs;
use crate::control_planes::ControlPlanes;
use crate::fencing::Fences;
use crate::identity::StoredIdentity;
use crate::metrics::WorkerMetrics;
use crate::provider::Provider;
use crate::provider::docker::DockerProvider;
use crate::provider::mock::MockProvider;
use crate::runtime::{DrainState, Runtime};
use crate::service::WorkerGrpc;
use crate::sessions::{SessionLimits, Sessions};
use crate::{WorkerConfig, WorkerError, dialout, drain, enroll, heartbeat, metrics, renewal};

/// How long open calls may take to finish once the worker shuts down.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How long the provider's own tasks may take to end after the server has stopped.
const PROVIDER_GRACE: Duration = Duration::from_secs(10);

/// Dial-out connections waiting for the server to pick them up.
const DIALED_BACKLOG: usize = 16;

/// Lease fences, kept in the data dir so adopted sandboxes keep theirs.
const FENCES_FILE: &str = "fences.json";

/// A stored certificate this close to expiry is treated as lapsed.
const EXPIRY_MARGIN_SECS: i64 = 60;

/// A started worker. Cancel the shutdown token given to [`start`] to stop it, then
/// [`RunningWorker::wait`].
#[derive(Debug)]
pub struct RunningWorker {
    pub worker_id: String,
    /// Where the worker service listens; `None`: the worker dials out.
    pub listen_addr: Option<SocketAddr>,
    pub spiffe_id: SpiffeId,
    /// Where `/metrics` is served, when it is.
    pub metrics_addr: Option<SocketAddr>,
    runtime: Arc<Runtime>,
    tasks: TaskTracker,
}

impl RunningWorker {
    /// Drains the worker itself (what SIGTERM does): heartbeats say draining so the
    /// control plane sends nothing new; running sandboxes may finish until `deadline`,
    /// then what is left is destroyed; a last heartbeat reports the empty inventory.
    /// Returns how many sandboxes the deadline destroyed.
    pub async fn drain(&self, deadline: Duration) -> usize {
        self.drain_or_stop(deadline, &CancellationToken::new())
            .await
    }

    /// [`RunningWorker::drain`], cut short when `stop` is cancelled (a second signal);
    /// then it returns 0 at once.
    pub async fn drain_or_stop(&self, deadline: Duration, stop: &CancellationToken) -> usize {
        drain::drain_self(&self.runtime, deadline, stop).await
    }

    /// Waits until every task of the worker has stopped, then (bounded) for the
    /// provider's own tasks.
    pub async fn wait(self) {
        self.tasks.close();
        self.tasks.wait().await;
        let runtime = Arc::clone(&self.runtime);
        let provider = async move {
            // sessions' commands end first: their pumps are provider work
            runtime.sessions.shutdown().await;
            runtime.provider.shutdown().await;
        };
        if tokio::time::timeout(PROVIDER_GRACE, provider)
            .await
            .is_err()
        {
            tracing::warn!(worker_id = %self.worker_id, grace = ?PROVIDER_GRACE, "provider tasks still running; leaving them");
        }
    }
}

/// Starts a worker that serves on `listener`, or, given none, dials out to each of its
/// control planes and serves on those connections.
pub async fn start(
    config: WorkerConfig,
    listener: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<RunningWorker, WorkerError> {
    config.validate()?;
    let listen_addr = listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()
        .map_err(|err| WorkerError::io("listener", err))?;
    // no address: the control plane calls over the connections this worker opens
    let advertise = match (&config.advertise, listen_addr) {
        (Some(advertise), Some(_)) => advertise.clone(),
        (_, Some(listen_addr)) => listen_addr.to_string(),
        (_, None) => String::new(),
    };
    let info = worker_info(&config, advertise);
    let stored = obtain_identity(&config, info.clone()).await?;
    let spiffe_id = SpiffeId::worker(&stored.trust_domain, &stored.worker_id);
    let ca_der = stored.ca_der()?;
    let identity = Arc::new(ReloadableIdentity::from_pem(
        &stored.cert_pem,
        &stored.key_pem,
    )?);

    let client_tls = Arc::new(mesh_client_config(
        &ca_der,
        SpiffeId::control_plane(&stored.trust_domain),
        Some(identity.clone()),
    )?);
    let control_planes = ControlPlanes::connect(&config.control_plane, client_tls)?;
    let provider = make_provider(&config, &stored.worker_id).await?;
    let fences = if provider.sandboxes_outlive_the_worker() {
        Fences::open(&config.data_dir.join(FENCES_FILE))?
    } else {
        Fences::default()
    };
    let runtime = Arc::new(Runtime {
        worker_id: stored.worker_id.clone(),
        identity,
        info,
        provider,
        sessions: Arc::new(Sessions::new(SessionLimits {
            grace: config.session_grace,
            buffer_bytes: config.session_buffer_bytes,
            max_sessions: config.max_sessions,
        })),
        fences,
        metrics: WorkerMetrics::new(),
        control_planes,
        drain: DrainState::default(),
        renewals: tokio::sync::watch::Sender::new(0),
        config,
    });

    let tasks = TaskTracker::new();
    match listener {
        Some(listener) => {
            let server_tls = Arc::new(worker_server_config(
                &ca_der,
                &stored.trust_domain,
                runtime.identity.clone(),
            )?);
            // only control planes with certificates call a worker: the default limits
            let incoming = berth_pki::transport::tls_incoming(
                listener,
                server_tls,
                shutdown.clone(),
                berth_pki::transport::ConnectionLimits::default(),
            );
            tasks.spawn(serve(runtime.clone(), incoming, shutdown.clone()));
        }
        None => {
            let tls = Arc::new(dialout_client_config(
                &ca_der,
                SpiffeId::control_plane(&stored.trust_domain),
                runtime.identity.clone(),
            )?);
            let (connections, incoming) = tokio::sync::mpsc::channel(DIALED_BACKLOG);
            for url in &runtime.config.control_plane {
                tasks.spawn(dialout::run(
                    runtime.clone(),
                    url.clone(),
                    tls.clone(),
                    connections.clone(),
                    shutdown.clone(),
                ));
            }
            let incoming = tokio_stream::wrappers::ReceiverStream::new(incoming);
            tasks.spawn(serve(runtime.clone(), incoming, shutdown.clone()));
        }
    }
    tasks.spawn(heartbeat::run(runtime.clone(), shutdown.clone()));
    let mut metrics_addr = None;
    if let Some(addr) = runtime.config.metrics_listen {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|err| WorkerError::io(format!("metrics listener {addr}"), err))?;
        metrics_addr = listener.local_addr().ok();
        tasks.spawn(metrics::serve(listener, runtime.clone(), shutdown.clone()));
    }
    tasks.spawn(renewal::run(runtime.clone(), shutdown.clone()));
    match listen_addr {
        Some(listen_addr) => {
            tracing::info!(worker_id = %runtime.worker_id, %listen_addr, advertise = %runtime.info.advertise_addr, "worker started");
        }
        None => {
            tracing::info!(worker_id = %runtime.worker_id, control_planes = ?runtime.config.control_plane, "worker started; dialing out to its control planes");
        }
    }
    Ok(RunningWorker {
        worker_id: runtime.worker_id.clone(),
        listen_addr,
        spiffe_id,
        metrics_addr,
        runtime,
        tasks,
    })
}

/// Serves `WorkerService` (and the gRPC health check the control plane measures a
/// dial-out connection's round trip with) on `incoming` until `shutdown`, then gives
/// open calls [`SHUTDOWN_GRACE`] to finish.
async fn serve<I, IO, IE>(runtime: Arc<Runtime>, incoming: I, shutdown: CancellationToken)
where
    I: tokio_stream::Stream<Item = Result<IO, IE>> + Send + 'static,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    IO::ConnectInfo: Clone + Send + Sync + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (_health, health_service) = tonic_health::server::health_reporter();
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        // only the control plane gets past the handshake: streams it cancels for its
        // clients (and the frames still on their way) must not spend a budget that
        // closes the connection under every call on it
        .http2_max_local_error_reset_streams(berth_pki::transport::MESH_LOCAL_ERROR_RESETS)
        .add_service(health_service)
        .add_service(WorkerServiceServer::new(WorkerGrpc::new(runtime.clone())))
        .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned());
    let served = berth_pki::transport::serve_with_grace(server, shutdown, SHUTDOWN_GRACE).await;
    if let Some(Err(err)) = served {
        tracing::error!(worker_id = %runtime.worker_id, error = %err, "worker service stopped");
    }
}

/// The stored identity if it is still good; otherwise re-enrollment with the worker
/// token, or a first enrollment with the join token.
async fn obtain_identity(
    config: &WorkerConfig,
    info: pb::WorkerInfo,
) -> Result<StoredIdentity, WorkerError> {
    let dir = &config.data_dir;
    let Some(stored) = StoredIdentity::load(dir)? else {
        let token = config
            .join_token()?
            .ok_or_else(|| WorkerError::NoCredential(dir.clone()))?;
        let fresh = enroll::with_join_token(config, &token, info).await?;
        fresh.save(dir)?;
        tracing::info!(worker_id = %fresh.worker_id, "enrolled with the join token");
        return Ok(fresh);
    };
    if let Some(id) = &config.id
        && id != &stored.worker_id
    {
        return Err(WorkerError::Config(format!(
            "{} holds the identity of worker {:?}, not {id:?}",
            dir.display(),
            stored.worker_id
        )));
    }
    if stored.cert_not_after()? > now_secs() + EXPIRY_MARGIN_SECS {
        return Ok(stored);
    }
    tracing::info!(worker_id = %stored.worker_id, "certificate lapsed; re-enrolling with the worker token");
    let fresh = match enroll::with_worker_token(config, &stored, info.clone()).await {
        Ok(fresh) => fresh,
        Err(err) => {
            let Some(token) = config.join_token()? else {
                return Err(err);
            };
            tracing::warn!(error = %err, "re-enrollment refused; trying the join token");
            enroll::with_join_token(config, &token, info).await?
        }
    };
    fresh.save(dir)?;
    Ok(fresh)
}

/// The provider named in the config, for this worker's sandboxes.
async fn make_provider(
    config: &WorkerConfig,
    worker_id: &str,
) -> Result<Arc<dyn Provider>, WorkerError> {
    match config.provider.as_str() {
        "mock" => Ok(Arc::new(MockProvider::new())),
        "docker" => {
            let docker = crate::DockerConfig {
                spool_dir: Some(config.data_dir.join("spool")),
                ..config.docker.clone()
            };
            let provider = DockerProvider::new(docker, worker_id);
            provider.prepare().await;
            Ok(Arc::new(provider))
        }
        other => Err(WorkerError::Config(format!(
            "provider {other:?} is not available in this build"
        ))),
    }
}

fn worker_info(config: &WorkerConfig, advertise_addr: String) -> pb::WorkerInfo {
    let vcpus = if config.capacity.vcpus > 0 {
        config.capacity.vcpus
    } else {
        std::thread::available_parallelism()
            .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
            .unwrap_or(1)
    };
    pb::WorkerInfo {
        hostname: hostname(),
        advertise_addr,
        providers: vec![pb::ProviderHealth {
            name: config.provider.clone(),
            healthy: true,
            message: String::new(),
        }],
        capacity: Some(pb::Capacity {
            max_sandboxes: config.capacity.max_sandboxes,
            vcpus,
            memory_mb: config.capacity.memory_mb,
        }),
        version: crate::VERSION.to_owned(),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}
