//! The timed rounds: one untimed warm-up of every path, then rounds in which the paths
//! take turns in rotating order, one call at a time; spawns first, then exec round
//! trips on a Berth sandbox and on a `docker run -d` container.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::{Value, json};

use berth_worker::DockerConfig;

use super::PREFIX;
use super::berth::{create_sandbox, destroy_sandbox};
use super::cli::{cli_run, docker, like_berth_args, network_create_args, run_container};
use super::paths::{ExecPath, PathRun, SpawnPath};
use super::report::report;
use crate::api::Api;
use crate::clients::http_client;
use crate::fleet::{ControlPlane, Worker};
use crate::report::Section;
use crate::run::Bench;

/// The command every exec runs, in shell mode (`/bin/sh -c`) on both sides.
pub(super) const COMMAND: &str = "echo hi";
const EXPECTED_STDOUT: &str = "hi\n";
/// What the CLI's plain containers run to stay up.
const KEEP_ALIVE: [&str; 2] = ["sleep", "3600"];
/// Untimed execs per path before the timed rounds.
const EXEC_WARMUP: usize = 2;

/// What the timed calls talk to.
pub(super) struct Target<'a> {
    pub(super) http: reqwest::Client,
    pub(super) api: &'a Api,
    pub(super) image: &'a str,
    /// The docker config of Berth's worker, which the CLI's equivalent copies.
    pub(super) docker: &'a DockerConfig,
    pub(super) pid: u32,
}

impl<'a> Target<'a> {
    /// The calls' target once the fleet's docker worker is online and its provider
    /// healthy.
    pub(super) async fn when_ready(
        bench: &'a Bench,
        control_plane: &'a ControlPlane,
        worker: &Worker,
        docker: &'a DockerConfig,
    ) -> anyhow::Result<Self> {
        let api = &control_plane.api;
        api.wait_worker_online(&worker.worker_id, Duration::from_secs(30))
            .await?;
        api.wait_provider_healthy(&worker.worker_id, "docker", Duration::from_secs(30))
            .await?;
        Ok(Self {
            http: http_client()?,
            api,
            image: &bench.settings.docker_image,
            docker,
            pid: std::process::id(),
        })
    }
}

pub(super) async fn measure(
    bench: &Bench,
    section: &mut Section,
    control_plane: &ControlPlane,
    worker: &Worker,
    docker_config: &DockerConfig,
) -> anyhow::Result<()> {
    let settings = &bench.settings;
    let api = &control_plane.api;
    let target = Target::when_ready(bench, control_plane, worker, docker_config).await?;

    // spawn-to-running
    for path in SpawnPath::ALL {
        spawn_once(&target, path, "warmup")
            .await
            .with_context(|| format!("warm-up of {}", path.label()))?;
    }
    let mut spawns: Vec<PathRun> = SpawnPath::ALL.iter().map(|_| PathRun::default()).collect();
    for round in 0..settings.docker_spawns {
        for k in 0..SpawnPath::ALL.len() {
            let index = (round + k) % SpawnPath::ALL.len();
            let path = SpawnPath::ALL[index];
            let run = &mut spawns[index];
            match spawn_once(&target, path, &round.to_string()).await {
                Ok(timing) => {
                    run.calls.record(timing.spawn);
                    run.teardowns.record(timing.teardown);
                    if let Some(network) = timing.network {
                        run.networks.record(network);
                    }
                }
                Err(err) => run.failed(&err),
            }
        }
    }

    // exec round trips, on a Berth sandbox and a `docker run -d` container
    let sandbox = create_sandbox(&target).await?;
    let result = async {
        let sandbox_container = docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=berth.sandbox={sandbox}"),
        ])
        .await?
        .trim()
        .to_owned();
        ensure!(
            !sandbox_container.is_empty(),
            "no container carries label berth.sandbox={sandbox}"
        );
        let plain = format!("{PREFIX}{}-exec", target.pid);
        cli_run(&target, &plain, &["-d", "--rm"], &KEEP_ALIVE).await?;
        let exec_url = api.url(&format!("/sandboxes/{sandbox}/exec"));
        let exec = |path: ExecPath| {
            let container = match path {
                ExecPath::CliIntoSandbox => sandbox_container.as_str(),
                _ => plain.as_str(),
            };
            exec_once(&target, path, &exec_url, container)
        };
        for path in ExecPath::ALL {
            for _ in 0..EXEC_WARMUP {
                exec(path)
                    .await
                    .with_context(|| format!("warm-up of {}", path.label()))?;
            }
        }
        let mut execs: Vec<PathRun> = ExecPath::ALL.iter().map(|_| PathRun::default()).collect();
        for round in 0..settings.docker_execs {
            for k in 0..ExecPath::ALL.len() {
                let index = (round + k) % ExecPath::ALL.len();
                match exec(ExecPath::ALL[index]).await {
                    Ok(took) => execs[index].calls.record(took),
                    Err(err) => execs[index].failed(&err),
                }
            }
        }
        docker(&["rm", "-f", "-v", &plain]).await?;
        Ok(execs)
    }
    .await;
    let destroyed = destroy_sandbox(&target, &sandbox).await;
    let execs = result?;
    destroyed?;

    report(section, docker_config, spawns, execs);
    Ok(())
}

/// How long one spawn and its teardown took.
struct SpawnTiming {
    spawn: Duration,
    teardown: Duration,
    /// The network create within `spawn`, when timed on its own.
    network: Option<Duration>,
}

/// One spawn of `path` and its teardown.
async fn spawn_once(
    target: &Target<'_>,
    path: SpawnPath,
    round: &str,
) -> anyhow::Result<SpawnTiming> {
    match path {
        SpawnPath::Berth => {
            let started = Instant::now();
            let id = create_sandbox(target).await?;
            let spawn = started.elapsed();
            let started = Instant::now();
            destroy_sandbox(target, &id).await?;
            Ok(SpawnTiming {
                spawn,
                teardown: started.elapsed(),
                network: None,
            })
        }
        SpawnPath::Cli => {
            let name = format!("{PREFIX}{}-run-{round}", target.pid);
            let started = Instant::now();
            cli_run(target, &name, &["-d", "--rm"], &KEEP_ALIVE).await?;
            let spawn = started.elapsed();
            let started = Instant::now();
            docker(&["rm", "-f", &name]).await?;
            Ok(SpawnTiming {
                spawn,
                teardown: started.elapsed(),
                network: None,
            })
        }
        SpawnPath::CliLikeBerth => {
            let name = format!("{PREFIX}{}-like-{round}", target.pid);
            let started = Instant::now();
            docker(&network_create_args(&name, target.pid)).await?;
            let network = started.elapsed();
            let args = like_berth_args(target.docker, target.image, &name, target.pid);
            run_container(target, &name, &args).await?;
            let spawn = started.elapsed();
            let started = Instant::now();
            docker(&["rm", "-f", "-v", &name]).await?;
            docker(&["network", "rm", &name]).await?;
            Ok(SpawnTiming {
                spawn,
                teardown: started.elapsed(),
                network: Some(network),
            })
        }
    }
}

/// One exec round trip of `path` (`container` for the CLI paths).
async fn exec_once(
    target: &Target<'_>,
    path: ExecPath,
    exec_url: &str,
    container: &str,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    match path {
        ExecPath::Berth => {
            let response = target
                .http
                .post(exec_url)
                .header("X-API-Key", &target.api.key)
                .json(&json!({ "command": COMMAND }))
                .send()
                .await?;
            let status = response.status();
            let body: Value = response.json().await?;
            ensure!(status.as_u16() == 200, "exec answered {status}: {body}");
            let exit = body["exit_code"].as_i64().context("no exit_code")?;
            ensure!(exit == 0, "exec exited {exit}: {body}");
            check_stdout(body["stdout"].as_str().context("no stdout")?)?;
        }
        ExecPath::Cli | ExecPath::CliIntoSandbox => {
            let stdout = docker(&["exec", container, "/bin/sh", "-c", COMMAND]).await?;
            check_stdout(&stdout)?;
        }
        ExecPath::CliStartup => {
            docker(&["--version"]).await?;
        }
    }
    Ok(started.elapsed())
}

fn check_stdout(stdout: &str) -> anyhow::Result<()> {
    ensure!(
        stdout == EXPECTED_STDOUT,
        "unexpected output {stdout:?} (expected {EXPECTED_STDOUT:?})"
    );
    Ok(())
}
