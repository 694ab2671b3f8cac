//! `berth serve`: config file, then `BERTH_*` variables and flags (clap merges those
//! two, flags winning), then start the control plane (and the local worker, when one
//! is asked for) and run until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use berth_cli::local_worker;
use berth_cli::serve_config::ServeConfig;
use berth_controlplane::Listeners;
use clap::Args;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// YAML config file.
    #[arg(long, env = "BERTH_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (SQLite database, admin.key, and the CA and token key unless
    /// --keys-dir is given).
    #[arg(long, env = "BERTH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Directory of the CA and token key (ca.pem, ca.key, token.key, token.pub); every
    /// replica on one Postgres needs the same files (default: the data dir).
    #[arg(long, env = "BERTH_KEYS_DIR")]
    keys_dir: Option<PathBuf>,
    /// Public API address (default 127.0.0.1:7423).
    #[arg(long, env = "BERTH_LISTEN")]
    listen: Option<SocketAddr>,
    /// Worker mesh address (default 0.0.0.0:7443).
    #[arg(long, env = "BERTH_MESH_LISTEN")]
    mesh_listen: Option<SocketAddr>,
    /// Database URL: sqlite:… or postgres://user:password@host/db (default: SQLite
    /// file in the data dir).
    #[arg(long, env = "BERTH_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Start an in-process worker with this provider (e.g. mock).
    #[arg(long, env = "BERTH_LOCAL_WORKER")]
    local_worker: Option<String>,
    /// How often workers heartbeat (e.g. 5s).
    #[arg(long, env = "BERTH_HEARTBEAT_INTERVAL", value_parser = humantime::parse_duration)]
    heartbeat_interval: Option<Duration>,
    /// SPIFFE trust domain of the fleet (default berth.local).
    #[arg(long, env = "BERTH_TRUST_DOMAIN")]
    trust_domain: Option<String>,
    /// Image of a sandbox whose create names none (default alpine:latest), also the
    /// local docker worker's default.
    #[arg(long, env = "BERTH_DEFAULT_IMAGE")]
    default_image: Option<String>,
    /// Calls a second each API key may make over HTTP and gRPC (a token bucket per
    /// key; over it: 429 with Retry-After); 0: no limit [default: 0, or the config
    /// file's api.key_rate_limit].
    #[arg(long, env = "BERTH_KEY_RATE_LIMIT")]
    key_rate_limit: Option<u32>,
    /// Calls a key may make at once above its rate; 0: one second's worth [default:
    /// 0, or the config file's api.key_rate_burst].
    #[arg(long, env = "BERTH_KEY_RATE_BURST")]
    key_rate_burst: Option<u32>,
    /// Serve preview URLs http(s)://PORT-SANDBOX.DOMAIN (a wildcard DNS name pointing
    /// here; may carry a :port) on the API listener [default: the config file's
    /// preview_domain; empty: no previews].
    #[arg(long, env = "BERTH_PREVIEW_DOMAIN")]
    preview_domain: Option<String>,
    /// Also serve previews on a listener of their own.
    #[arg(long, env = "BERTH_PREVIEW_LISTEN")]
    preview_listen: Option<SocketAddr>,
    /// Serve the SSH gateway here (`ssh -p 2222 TOKEN@host`), e.g. 0.0.0.0:2222
    /// [default: the config file's ssh_listen; absent: no gateway].
    #[arg(long, env = "BERTH_SSH_LISTEN")]
    ssh_listen: Option<SocketAddr>,
}

impl ServeArgs {
    fn into_config(self) -> anyhow::Result<ServeConfig> {
        let mut serve = match &self.config {
            Some(path) => ServeConfig::from_file(path)?,
            None => ServeConfig::default(),
        };
        let config = &mut serve.control_plane;
        if let Some(value) = self.data_dir {
            config.data_dir = value;
        }
        if let Some(value) = self.keys_dir {
            config.keys_dir = Some(value);
        }
        if let Some(value) = self.listen {
            config.listen = value;
        }
        if let Some(value) = self.mesh_listen {
            config.mesh_listen = value;
        }
        if let Some(value) = self.database_url {
            config.database.url = value;
            config.database.url_file = None;
        }
        if let Some(value) = self.local_worker {
            serve.local_worker.provider = value;
        }
        if let Some(value) = self.heartbeat_interval {
            config.heartbeat_interval = value;
        }
        if let Some(value) = self.trust_domain {
            config.trust_domain = value;
        }
        if let Some(value) = self.default_image {
            serve.set_default_image(&value);
        }
        let config = &mut serve.control_plane;
        if let Some(value) = self.key_rate_limit {
            config.api.key_rate_limit = value;
        }
        if let Some(value) = self.key_rate_burst {
            config.api.key_rate_burst = value;
        }
        if let Some(value) = self.preview_domain {
            config.preview_domain = value;
        }
        if let Some(value) = self.preview_listen {
            config.preview_listen = Some(value);
        }
        if let Some(value) = self.ssh_listen {
            config.ssh_listen = Some(value);
        }
        serve.validate()?;
        Ok(serve)
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let ServeConfig {
        control_plane: config,
        local_worker,
    } = args.into_config()?;
    let listeners = Listeners::bind(&config).await?;
    let shutdown = CancellationToken::new();
    let (data_dir, heartbeat_interval) = (config.data_dir.clone(), config.heartbeat_interval);
    let preview_domain = config.preview_domain.clone();
    let running = berth_controlplane::start(config, listeners, shutdown.clone()).await?;
    let local = if local_worker.enabled() {
        let worker = local_worker::start(
            &local_worker,
            &data_dir,
            heartbeat_interval,
            &running.fleet,
            running.mesh_addr,
            shutdown.clone(),
        )
        .await;
        match worker {
            Ok(worker) => Some(worker),
            Err(err) => {
                shutdown.cancel();
                running.wait().await;
                return Err(err.context("cannot start the local worker"));
            }
        }
    } else {
        None
    };
    if let Some(key) = &running.first_admin_key {
        println!(
            "admin API key (shown once; also in {}):\n  {key}",
            running.admin_key_path.display()
        );
    }
    // the API serves TLS off loopback (berth_controlplane::server::start)
    let api_scheme = if running.api_addr.ip().is_loopback() {
        "http"
    } else {
        "https"
    };
    println!(
        "berth control plane: api {api_scheme}://{} mesh https://{}{}",
        running.api_addr,
        running.mesh_addr,
        local
            .as_ref()
            .map(|worker| format!(", local worker {:?}", worker.worker_id))
            .unwrap_or_default()
    );
    if !preview_domain.is_empty() {
        let listener = running
            .preview_addr
            .map(|addr| format!(" (and on {addr})"))
            .unwrap_or_default();
        println!("previews: {api_scheme}://PORT-SANDBOX.{preview_domain}/{listener}");
    }
    wait_for_signal().await?;
    tracing::info!("shutting down");
    shutdown.cancel();
    match local {
        Some(worker) => {
            tokio::join!(worker.wait(), running.wait());
        }
        None => running.wait().await,
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn config(args: &[&str]) -> ServeConfig {
        let serve = Serve::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))
            .expect("flags parse");
        serve.args.into_config().expect("a valid config")
    }

    #[test]
    fn key_rate_flags_reach_the_api_config_over_the_file() {
        let defaults = config(&[]).control_plane.api;
        if std::env::var_os("BERTH_KEY_RATE_LIMIT").is_none() {
            assert_eq!(defaults.key_rate_limit, 0, "off by default");
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("berth.yaml");
        std::fs::write(&file, "api:\n  key_rate_limit: 5\n  key_rate_burst: 7\n").unwrap();
        let file = file.display().to_string();
        let from_file = config(&["--config", &file]).control_plane.api;
        assert_eq!((from_file.key_rate_limit, from_file.key_rate_burst), (5, 7));
        let flagged = config(&[
            "--config",
            &file,
            "--key-rate-limit",
            "50",
            "--key-rate-burst",
            "100",
        ])
        .control_plane
        .api;
        assert_eq!((flagged.key_rate_limit, flagged.key_rate_burst), (50, 100));
    }
}
