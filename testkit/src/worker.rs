//! [`TestWorker`]: a worker running in this process, on a port-0 loopback listener
//! or dialing out (its config without `listen`), with its own drain and a stop that
//! waits for it to finish.

use std::path::PathBuf;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use berth_worker::{RunningWorker, WorkerConfig, WorkerError};

use crate::init;

/// A worker running in this process.
pub struct TestWorker {
    pub worker_id: String,
    /// Where it listens; `None`: it dials out.
    pub listen: Option<std::net::SocketAddr>,
    pub metrics_addr: Option<std::net::SocketAddr>,
    pub data_dir: PathBuf,
    shutdown: CancellationToken,
    running: RunningWorker,
}

impl TestWorker {
    pub async fn start(config: WorkerConfig) -> Result<Self, WorkerError> {
        init();
        let data_dir = config.data_dir.clone();
        let listener = match config.listen {
            Some(listen) => Some(
                TcpListener::bind(listen)
                    .await
                    .expect("bind worker listener"),
            ),
            None => None,
        };
        let shutdown = CancellationToken::new();
        let running = berth_worker::start(config, listener, shutdown.clone()).await?;
        Ok(Self {
            worker_id: running.worker_id.clone(),
            listen: running.listen_addr,
            metrics_addr: running.metrics_addr,
            data_dir,
            shutdown,
            running,
        })
    }

    /// Where it listens; panics for a worker that dials out.
    pub fn listen_addr(&self) -> std::net::SocketAddr {
        self.listen
            .expect("this worker dials out and listens nowhere")
    }

    /// The worker's own drain (what SIGTERM starts); returns how many sandboxes the
    /// deadline destroyed.
    pub async fn drain(&self, deadline: Duration) -> usize {
        self.running.drain(deadline).await
    }

    /// The worker's own drain, cut short when `stop` is cancelled (what a second
    /// SIGINT/SIGTERM does).
    pub async fn drain_or_stop(&self, deadline: Duration, stop: &CancellationToken) -> usize {
        self.running.drain_or_stop(deadline, stop).await
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.running.wait().await;
    }
}
