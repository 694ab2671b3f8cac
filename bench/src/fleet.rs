//! A fleet on loopback made of real processes: `berth serve` (so its CPU and memory are
//! its own and file descriptors split across processes) and `berth worker`s, started
//! from config files the bench writes, on port-0 listeners whose addresses are read
//! from the lines the processes print when they are up. A worker listens (inbound: the
//! control plane dials it) unless its options ask it to dial out, when its config has
//! no `listen` and it connects to the control plane instead.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

use crate::api::Api;

/// How long a process may take to print that it is up.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The `berth` binary the bench starts.
#[derive(Debug, Clone)]
pub struct BerthBinary {
    pub path: PathBuf,
    /// `RUST_LOG` of the started processes.
    pub log_filter: String,
}

/// Settings of a control plane the bench starts.
#[derive(Debug, Clone)]
pub struct ControlPlaneOptions {
    pub heartbeat_interval: Duration,
    pub missed_heartbeats: u32,
    /// None: SQLite in the data dir.
    pub database_url: Option<String>,
}

impl ControlPlaneOptions {
    /// The store the options select, as the report names it.
    pub fn store_name(&self) -> &'static str {
        match &self.database_url {
            Some(url) if url.starts_with("postgres") => "postgres",
            Some(_) | None => "sqlite",
        }
    }

    /// The config file `berth serve` reads (JSON is YAML). Enrollments are unlimited so
    /// the bench can enroll thousands of workers quickly; heartbeat limits keep their
    /// defaults, as an operator would have them.
    fn config(&self, data_dir: &Path) -> Value {
        let mut config = json!({
            "data_dir": data_dir,
            "listen": "127.0.0.1:0",
            "mesh_listen": "127.0.0.1:0",
            "heartbeat_interval": humantime::format_duration(self.heartbeat_interval).to_string(),
            "missed_heartbeats": self.missed_heartbeats,
            "limits": {
                "enrollments_per_second": 1_000_000,
                "enrollment_burst": 1_000_000,
                // every simulated worker dials from 127.0.0.1
                "enrollments_per_source_per_second": 1_000_000,
                "enrollment_source_burst": 1_000_000,
            },
        });
        if let Some(url) = &self.database_url {
            config["database"] = json!({ "url": url });
        }
        config
    }
}

/// A running `berth serve`.
#[derive(Debug)]
pub struct ControlPlane {
    child: Child,
    pub pid: u32,
    pub data_dir: PathBuf,
    pub mesh_url: String,
    pub api: Api,
    log_path: PathBuf,
}

impl ControlPlane {
    /// Starts `berth serve` with its data dir and log under `dir`.
    pub async fn start(
        berth: &BerthBinary,
        dir: &Path,
        options: &ControlPlaneOptions,
    ) -> anyhow::Result<Self> {
        let data_dir = dir.join("control-plane");
        let config_path = dir.join("control-plane.yaml");
        std::fs::write(&config_path, options.config(&data_dir).to_string())?;
        let log_path = dir.join("control-plane.log");
        let mut child = spawn(
            berth,
            &["serve", "--config", &config_path.to_string_lossy()],
            &log_path,
        )?;
        let pid = child.id().context("control plane exited at once")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let line = wait_for_line(stdout, "berth control plane: ", &log_path).await?;
        let (api_addr, mesh_addr) = parse_serve_line(&line)
            .with_context(|| format!("unexpected start line from berth serve: {line:?}"))?;
        let admin_key = std::fs::read_to_string(data_dir.join("admin.key"))
            .context("cannot read the control plane's admin.key")?
            .trim()
            .to_owned();
        let api = Api::new(&format!("http://{api_addr}"), &admin_key);
        api.wait_healthy(START_TIMEOUT).await?;
        Ok(Self {
            child,
            pid,
            data_dir,
            mesh_url: format!("https://{mesh_addr}"),
            api,
            log_path,
        })
    }

    /// The last lines of its log (warnings and errors).
    pub fn log_tail(&self) -> String {
        log_tail(&self.log_path)
    }

    /// How many lines of its log mention any of `needles`.
    pub fn log_mentions(&self, needles: &[&str]) -> anyhow::Result<usize> {
        let log = std::fs::read_to_string(&self.log_path)
            .with_context(|| format!("cannot read {}", self.log_path.display()))?;
        Ok(log
            .lines()
            .filter(|line| needles.iter().any(|needle| line.contains(needle)))
            .count())
    }

    pub async fn stop(mut self) {
        stop_child(&mut self.child).await;
    }
}

/// The fleet most sections measure: one control plane and one worker, started by
/// [`crate::run::Bench::start_fleet`].
#[derive(Debug)]
pub struct SectionFleet {
    /// The section's dir: data dirs, configs and logs of both.
    pub dir: PathBuf,
    pub control_plane: ControlPlane,
    pub worker: Worker,
}

impl SectionFleet {
    /// Stops the worker, then the control plane.
    pub async fn stop(self) {
        self.worker.stop().await;
        self.control_plane.stop().await;
    }
}

/// Settings of a worker the bench starts.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub provider: String,
    pub max_sandboxes: u32,
    pub heartbeat_interval: Duration,
    /// Requested worker id (None: the control plane makes one up).
    pub id: Option<String>,
    /// The `docker:` section of its config (None: the defaults).
    pub docker: Option<Value>,
    /// Listen nowhere and dial out to the control plane (no `listen` in its config).
    pub dial_out: bool,
    /// Labels its join token gives it (placement constraints match them).
    pub labels: Option<Value>,
}

/// A running `berth worker`.
#[derive(Debug)]
pub struct Worker {
    child: Child,
    pub pid: u32,
    pub worker_id: String,
    /// host:port of its WorkerService; `None`: it dials out and listens nowhere.
    pub listen_addr: Option<String>,
}

impl Worker {
    /// Enrolls a new `berth worker` with `control_plane` (a fresh one-use join token).
    pub async fn start(
        berth: &BerthBinary,
        dir: &Path,
        name: &str,
        control_plane: &ControlPlane,
        options: &WorkerOptions,
    ) -> anyhow::Result<Self> {
        let token = control_plane
            .api
            .create_join_token(1, options.labels.as_ref())
            .await?;
        let mut config = json!({
            "data_dir": dir.join(name),
            "control_plane": [control_plane.mesh_url],
            "join_token": token,
            "provider": options.provider,
            "heartbeat_interval": humantime::format_duration(options.heartbeat_interval).to_string(),
            "capacity": { "max_sandboxes": options.max_sandboxes },
        });
        if !options.dial_out {
            config["listen"] = json!("127.0.0.1:0");
        }
        if let Some(id) = &options.id {
            config["id"] = json!(id);
        }
        if let Some(docker) = &options.docker {
            config["docker"] = docker.clone();
        }
        let config_path = dir.join(format!("{name}.yaml"));
        std::fs::write(&config_path, config.to_string())?;
        let log_path = dir.join(format!("{name}.log"));
        let mut child = spawn(
            berth,
            &["worker", "--config", &config_path.to_string_lossy()],
            &log_path,
        )?;
        let pid = child.id().context("worker exited at once")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let line = wait_for_line(stdout, "berth worker ", &log_path).await?;
        let (worker_id, listen_addr) = parse_worker_line(&line)
            .with_context(|| format!("unexpected start line from berth worker: {line:?}"))?;
        if listen_addr.is_some() == options.dial_out {
            bail!("worker {worker_id} did not start in the mode asked for: {line:?}");
        }
        Ok(Self {
            child,
            pid,
            worker_id,
            listen_addr,
        })
    }

    /// host:port of its WorkerService, to call it directly; an error for a worker that
    /// dials out.
    pub fn address(&self) -> anyhow::Result<&str> {
        self.listen_addr
            .as_deref()
            .with_context(|| format!("worker {} dials out: it has no address", self.worker_id))
    }

    pub async fn stop(mut self) {
        stop_child(&mut self.child).await;
    }
}

fn spawn(berth: &BerthBinary, args: &[&str], log_path: &Path) -> anyhow::Result<Child> {
    let log = std::fs::File::create(log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    Command::new(&berth.path)
        .args(args)
        .env("RUST_LOG", &berth.log_filter)
        // plain log files (tracing-subscriber honours NO_COLOR)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", berth.path.display()))
}

/// Reads stdout until a line starting with `prefix`, then keeps draining it in the
/// background so the process never blocks on a full pipe.
async fn wait_for_line(
    stdout: ChildStdout,
    prefix: &str,
    log_path: &Path,
) -> anyhow::Result<String> {
    let mut lines = BufReader::new(stdout).lines();
    let found = tokio::time::timeout(START_TIMEOUT, async {
        while let Some(line) = lines.next_line().await? {
            if line.starts_with(prefix) {
                return Ok::<_, std::io::Error>(Some(line));
            }
        }
        Ok(None)
    })
    .await;
    let line = match found {
        Ok(Ok(Some(line))) => line,
        Ok(Ok(None)) | Ok(Err(_)) => bail!(
            "the process ended before it was up; its log:\n{}",
            log_tail(log_path)
        ),
        Err(_) => bail!(
            "the process was not up after {START_TIMEOUT:?}; its log:\n{}",
            log_tail(log_path)
        ),
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(line)
}

fn log_tail(path: &Path) -> String {
    let text = strip_ansi(&std::fs::read_to_string(path).unwrap_or_default());
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Drops terminal colour sequences (`ESC [ … letter`), should a log still carry them.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

async fn stop_child(child: &mut Child) {
    let _ = child.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
}

/// `berth control plane: api http://A mesh https://B[, local worker "x"]` -> (A, B).
fn parse_serve_line(line: &str) -> Option<(String, String)> {
    let rest = line.split_once("api http://")?.1;
    let (api, rest) = rest.split_once(' ')?;
    let mesh = rest.strip_prefix("mesh https://")?;
    let mesh = mesh.split(',').next()?.trim();
    Some((api.to_owned(), mesh.to_owned()))
}

/// `berth worker "ID" (spiffe://…) serving on ADDR` -> (ID, Some(ADDR)), or
/// `berth worker "ID" (spiffe://…) dialing out to URLS` -> (ID, None).
fn parse_worker_line(line: &str) -> Option<(String, Option<String>)> {
    let rest = line.strip_prefix("berth worker \"")?;
    let (id, rest) = rest.split_once('"')?;
    if let Some((_, addr)) = rest.rsplit_once(") serving on ") {
        return Some((id.to_owned(), Some(addr.trim().to_owned())));
    }
    let urls = rest.rsplit_once(") dialing out to ")?.1.trim();
    (!urls.is_empty()).then(|| (id.to_owned(), None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_lines_give_the_addresses() {
        assert_eq!(
            parse_serve_line(
                "berth control plane: api http://127.0.0.1:4000 mesh https://127.0.0.1:4001"
            ),
            Some(("127.0.0.1:4000".into(), "127.0.0.1:4001".into()))
        );
        assert_eq!(
            parse_serve_line(
                "berth control plane: api http://127.0.0.1:1 mesh https://127.0.0.1:2, local worker \"w\""
            ),
            Some(("127.0.0.1:1".into(), "127.0.0.1:2".into()))
        );
        assert_eq!(parse_serve_line("admin API key"), None);
        assert_eq!(
            parse_worker_line(
                "berth worker \"w-1\" (spiffe://berth.local/worker/w-1) serving on 127.0.0.1:5000"
            ),
            Some(("w-1".into(), Some("127.0.0.1:5000".into())))
        );
        assert_eq!(
            parse_worker_line(
                "berth worker \"w-2\" (spiffe://berth.local/worker/w-2) dialing out to https://127.0.0.1:4001, https://127.0.0.1:4002"
            ),
            Some(("w-2".into(), None))
        );
        assert_eq!(parse_worker_line("berth worker"), None);
        assert_eq!(
            parse_worker_line(
                "berth worker \"w-3\" (spiffe://berth.local/worker/w-3) dialing out to "
            ),
            None
        );
    }

    #[test]
    fn colour_sequences_are_dropped_from_logs() {
        assert_eq!(
            strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m slow"),
            "2026  WARN slow"
        );
        assert_eq!(strip_ansi("plain [text]"), "plain [text]");
    }

    #[test]
    fn the_config_names_its_store_and_lifts_only_enrollment_limits() {
        let options = ControlPlaneOptions {
            heartbeat_interval: Duration::from_millis(500),
            missed_heartbeats: 3,
            database_url: None,
        };
        assert_eq!(options.store_name(), "sqlite");
        let config = options.config(Path::new("/tmp/x"));
        assert_eq!(config["heartbeat_interval"], "500ms");
        assert!(config.get("database").is_none());
        assert!(config["limits"].get("heartbeats_per_second").is_none());
        let postgres = ControlPlaneOptions {
            database_url: Some("postgres://bench@127.0.0.1/berth".into()),
            ..options
        };
        assert_eq!(postgres.store_name(), "postgres");
        assert_eq!(
            postgres.config(Path::new("/tmp/x"))["database"]["url"],
            "postgres://bench@127.0.0.1/berth"
        );
    }
}
