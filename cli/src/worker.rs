//! `berth worker`: config file, then `BERTH_*` variables and flags, then enroll (or
//! reuse the stored identity) and run until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use berth_worker::WorkerConfig;
use clap::Args;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// YAML config file.
    #[arg(long, env = "BERTH_CONFIG")]
    config: Option<PathBuf>,
    /// Mesh URL of a control plane (repeatable; comma-separated in the variable).
    #[arg(
        long = "control-plane",
        env = "BERTH_CONTROL_PLANE",
        value_delimiter = ','
    )]
    control_plane: Vec<String>,
    /// Join token for the first enrollment.
    #[arg(long, env = "BERTH_JOIN_TOKEN", hide_env_values = true)]
    join_token: Option<String>,
    /// File holding the join token.
    #[arg(long, env = "BERTH_JOIN_TOKEN_FILE", conflicts_with = "join_token")]
    join_token_file: Option<PathBuf>,
    /// Requested worker id.
    #[arg(long, env = "BERTH_WORKER_ID")]
    id: Option<String>,
    /// Listen for the control plane at ADDR (inbound mode). Without it the worker
    /// listens nowhere: it dials out to every control plane and is called over those
    /// connections (no inbound port, no firewall change).
    #[arg(long, env = "BERTH_WORKER_LISTEN")]
    listen: Option<SocketAddr>,
    /// host:port the control plane dials (with --listen; default: the listen address).
    #[arg(long, env = "BERTH_ADVERTISE")]
    advertise: Option<String>,
    /// Worker data directory (key, certificate, CA, worker token).
    #[arg(long, env = "BERTH_WORKER_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Sandbox provider: mock or docker (settings in the config's `docker:` section).
    #[arg(long, env = "BERTH_PROVIDER", value_parser = ["mock", "docker"])]
    provider: Option<String>,
    /// Docker engine address (unix:///var/run/docker.sock, tcp://host:2375).
    #[arg(long, env = "BERTH_DOCKER_HOST")]
    docker_host: Option<String>,
    /// Image for sandboxes that name none (docker provider).
    #[arg(long, env = "BERTH_DOCKER_DEFAULT_IMAGE")]
    docker_default_image: Option<String>,
    /// Heartbeat interval until the control plane says otherwise.
    #[arg(long, env = "BERTH_HEARTBEAT_INTERVAL", value_parser = humantime::parse_duration)]
    heartbeat_interval: Option<Duration>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, env = "BERTH_WORKER_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// On SIGTERM, how long sandboxes may run before the self-drain destroys them.
    #[arg(long, env = "BERTH_WORKER_DRAIN_DEADLINE", value_parser = humantime::parse_duration)]
    drain_deadline: Option<Duration>,
    /// How long a session's command runs on after its last client detached (0: killed
    /// at once).
    #[arg(long, env = "BERTH_SESSION_GRACE", value_parser = humantime::parse_duration)]
    session_grace: Option<Duration>,
}

impl WorkerArgs {
    fn into_config(self) -> anyhow::Result<WorkerConfig> {
        let mut config = match &self.config {
            Some(path) => WorkerConfig::from_file(path)?,
            None => WorkerConfig::default(),
        };
        if !self.control_plane.is_empty() {
            config.control_plane = self.control_plane;
        }
        if let Some(value) = self.join_token {
            config.join_token = Some(value);
            config.join_token_file = None;
        }
        if let Some(value) = self.join_token_file {
            config.join_token_file = Some(value);
        }
        if let Some(value) = self.id {
            config.id = Some(value);
        }
        if let Some(value) = self.listen {
            config.listen = Some(value);
        }
        if let Some(value) = self.advertise {
            config.advertise = Some(value);
        }
        if let Some(value) = self.data_dir {
            config.data_dir = value;
        }
        if let Some(value) = self.provider {
            config.provider = value;
        }
        if let Some(value) = self.docker_host {
            config.docker.host = value;
        }
        if let Some(value) = self.docker_default_image {
            config.docker.default_image = value;
        }
        if let Some(value) = self.heartbeat_interval {
            config.heartbeat_interval = value;
        }
        if let Some(value) = self.metrics_listen {
            config.metrics_listen = Some(value);
        }
        if let Some(value) = self.drain_deadline {
            config.drain_deadline = value;
        }
        if let Some(value) = self.session_grace {
            config.session_grace = value;
        }
        config.validate()?;
        Ok(config)
    }
}

pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let config = args.into_config()?;
    let listener = match config.listen {
        Some(listen) => Some(
            TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?,
        ),
        None => None,
    };
    let control_planes = config.control_plane.join(", ");
    let shutdown = CancellationToken::new();
    let drain_deadline = config.drain_deadline;
    let running = berth_worker::start(config, listener, shutdown.clone()).await?;
    match running.listen_addr {
        Some(listen_addr) => println!(
            "berth worker {:?} ({}) serving on {listen_addr}",
            running.worker_id, running.spiffe_id
        ),
        None => println!(
            "berth worker {:?} ({}) dialing out to {control_planes}",
            running.worker_id, running.spiffe_id
        ),
    }
    let mut signals = Signals::watch()?;
    if signals.next().await == Signal::Terminate {
        // SIGTERM: drain first (no new work, running sandboxes get until the
        // deadline), then stop; SIGINT stops at once, and so does a second signal
        // during the drain (with the control plane down it can take long)
        let stop = CancellationToken::new();
        let drain = running.drain_or_stop(drain_deadline, &stop);
        tokio::pin!(drain);
        tokio::select! {
            _ = &mut drain => {}
            second = signals.next() => {
                tracing::warn!(signal = ?second, "second signal: stopping without finishing the drain");
                stop.cancel();
                drain.await;
            }
        }
    }
    tracing::info!("shutting down");
    shutdown.cancel();
    running.wait().await;
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
enum Signal {
    Terminate,
    Interrupt,
}

/// SIGTERM and SIGINT, watched from start-up on so none is missed between two waits.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn watch() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("cannot watch SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot watch SIGINT")?,
        })
    }

    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Terminate,
            _ = self.int.recv() => Signal::Interrupt,
        }
    }
}
