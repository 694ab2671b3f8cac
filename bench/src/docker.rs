//! Section 5: the docker provider against the docker CLI on the same engine and image.
//! One call at a time (one client): spawn-to-running through the HTTP API versus
//! `docker run -d` (plain, and with the options Berth's spawn sets), and an exec round
//! trip through the HTTP API versus `docker exec`. The paths take turns round by round
//! (the order rotating), after one untimed warm-up round, so drift on a shared machine
//! hits them alike; the ratios come from the same run.
//!
//! Without a docker engine the section is skipped, visibly (a failure with
//! `BERTH_REQUIRE_DOCKER=1`); a missing image is a failure. Everything the run makes on
//! the engine carries the bench's pid: CLI containers and networks the label
//! `berth-bench.owner=<pid>` (and a `berth-bench-<pid>-…` name), Berth's the worker id
//! `berth-bench-<pid>-docker` in their `berth.worker` label. It is all removed at the
//! end, and what a run whose process is gone left behind is removed at the start.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};
use tokio::process::Command;

use crate::api::Api;
use crate::clients::http_client;
use crate::fleet::{ControlPlane, Worker, WorkerOptions};
use crate::latency::{Samples, Summary, ms};
use crate::report::{Section, Table, TargetCheck, Verdict, times};
use crate::run::Bench;

const SPAWN_TARGET: &str = "Docker spawn-to-running p50 ≤ 1.1× `docker run -d` (section 5)";
const EXEC_TARGET: &str = "Docker exec p50 ≤ 1.0× `docker exec` (section 5)";

/// The command every exec runs, in shell mode (`/bin/sh -c`) on both sides.
const COMMAND: &str = "echo hi";
const EXPECTED_STDOUT: &str = "hi\n";
/// What the CLI's plain containers run to stay up.
const KEEP_ALIVE: [&str; 2] = ["sleep", "3600"];
/// The docker provider's sleeper (worker/src/provider/docker/scripts.rs), for the
/// container that copies a sandbox's: `/bin/sh -c SLEEPER NAME`.
const SLEEPER: &str = "echo \"berth: sandbox $BERTH_SANDBOX_ID started\"; trap 'exit 0' TERM; \
                       while :; do sleep 3600 & wait $!; done";

/// Label on everything the CLI paths make; its value is the bench's pid.
const OWNER_LABEL: &str = "berth-bench.owner";
/// Prefix of names and worker ids of a bench run: `berth-bench-<pid>-…`.
const PREFIX: &str = "berth-bench-";

/// Longest one docker CLI command may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest the engine may take to answer `docker info`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);
/// Untimed execs per path before the timed rounds.
const EXEC_WARMUP: usize = 2;

/// Berth's defaults the equivalent `docker run` copies: the control plane's default
/// memory and CPUs, and the docker provider's pids limit.
const MEMORY_MB: u64 = 512;
const VCPUS: u32 = 1;
const PIDS_LIMIT: u32 = 512;

pub async fn run(bench: &Bench, section: &mut Section) -> anyhow::Result<()> {
    let result = run_section(bench, section).await;
    if let Err(err) = &result
        && section.targets.is_empty()
    {
        for target in [SPAWN_TARGET, EXEC_TARGET] {
            section.targets.push(TargetCheck::new(
                target,
                format!("the section failed: {err:#}"),
                Verdict::NotMeasured,
            ));
        }
    }
    result
}

async fn run_section(bench: &Bench, section: &mut Section) -> anyhow::Result<()> {
    let settings = &bench.settings;
    let image = settings.docker_image.clone();
    section.setting(
        "provider",
        "docker (the `--provider` flag does not apply here)",
    );
    section.setting(
        "store",
        bench
            .control_plane_options("docker", Duration::from_secs(2))
            .store_name(),
    );
    section.setting("image", format!("`{image}` (local, never pulled)"));
    section.setting(
        "runs",
        format!(
            "{} spawns and {} execs per path, one at a time (1 client); one untimed warm-up \
             round first; paths take turns each round, in rotating order",
            settings.docker_spawns, settings.docker_execs
        ),
    );
    section.setting(
        "exec command",
        format!("`{COMMAND}` through `/bin/sh -c` on both sides, output checked"),
    );
    section.setting(
        "Berth client",
        "HTTP/JSON, one HTTP/1.1 keep-alive connection, admin key",
    );

    let engine = match probe_engine().await {
        Ok(engine) => engine,
        Err(reason) => {
            if std::env::var("BERTH_REQUIRE_DOCKER").as_deref() == Ok("1") {
                bail!("BERTH_REQUIRE_DOCKER=1 but no docker engine answers: {reason}");
            }
            let reason = format!("no docker engine answers: {reason}");
            for target in [SPAWN_TARGET, EXEC_TARGET] {
                section.targets.push(TargetCheck::new(
                    target,
                    format!("skipped: {reason}"),
                    Verdict::NotMeasured,
                ));
            }
            section.skipped = Some(reason);
            return Ok(());
        }
    };
    section.setting("engine", engine.clone());
    check_image(&image).await?;

    let pid = std::process::id();
    match sweep(|owner| owner != pid && !bench_is_running(owner)).await {
        Ok(0) => {}
        Ok(removed) => section.notes.push(format!(
            "Removed {removed} containers and networks an earlier bench run left on the engine."
        )),
        Err(err) => section.notes.push(format!(
            "Could not look for leftovers of earlier runs: {err:#}"
        )),
    }

    let dir = bench.section_dir("docker")?;
    let control_plane = bench
        .start_control_plane("docker", &dir, Duration::from_secs(2))
        .await?;
    let mut docker_config = json!({ "default_image": image, "pull_policy": "never" });
    // the engine the CLI talks to
    if let Ok(host) = std::env::var("DOCKER_HOST")
        && !host.is_empty()
    {
        docker_config["host"] = json!(host);
    }
    let worker = Worker::start(
        &bench.berth,
        &dir,
        "worker-1",
        &control_plane,
        &WorkerOptions {
            provider: "docker".to_owned(),
            max_sandboxes: 16,
            heartbeat_interval: Duration::from_secs(2),
            id: Some(format!("{PREFIX}{pid}-docker")),
            docker: Some(docker_config),
        },
    )
    .await;
    let result = match worker {
        Ok(worker) => {
            let result = measure(bench, section, &control_plane, &worker).await;
            worker.stop().await;
            result
        }
        Err(err) => Err(err),
    };
    control_plane.stop().await;
    match sweep(|owner| owner == pid).await {
        Ok(0) => {}
        Ok(removed) => section.notes.push(format!(
            "Removed {removed} containers and networks of this run that were still on the \
             engine at the end."
        )),
        Err(err) => {
            let err = err.context("cannot remove what this run made on the engine");
            if result.is_ok() {
                return Err(err);
            }
            section.notes.push(format!("{err:#}"));
        }
    }
    result
}

/// The timings of one path.
#[derive(Debug, Default)]
struct PathRun {
    calls: Samples,
    /// Destroys of the spawn paths, timed apart.
    teardowns: Samples,
    /// The `docker network create` part of a spawn that makes its network with the CLI.
    networks: Samples,
    errors: usize,
    first_error: Option<String>,
}

impl PathRun {
    fn failed(&mut self, err: &anyhow::Error) {
        self.errors += 1;
        self.first_error.get_or_insert_with(|| format!("{err:#}"));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SpawnPath {
    Berth,
    Cli,
    CliLikeBerth,
}

impl SpawnPath {
    const ALL: [SpawnPath; 3] = [SpawnPath::Berth, SpawnPath::Cli, SpawnPath::CliLikeBerth];

    fn label(self) -> &'static str {
        match self {
            Self::Berth => "Berth `POST /api/v1/sandboxes` (docker provider)",
            Self::Cli => "`docker run -d --rm IMAGE sleep 3600`",
            Self::CliLikeBerth => "`docker network create` + `docker run -d` with Berth's options",
        }
    }

    fn timed(self) -> &'static str {
        match self {
            Self::Berth => "until the answer (state running)",
            Self::Cli => "until the command returned (container running)",
            Self::CliLikeBerth => "both commands, until the second returned",
        }
    }

    fn teardown(self) -> &'static str {
        match self {
            Self::Berth => "`DELETE /api/v1/sandboxes/{id}`",
            Self::Cli => "`docker rm -f`",
            Self::CliLikeBerth => "`docker rm -f -v` + `docker network rm`",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExecPath {
    Berth,
    Cli,
    CliIntoSandbox,
    CliStartup,
}

impl ExecPath {
    const ALL: [ExecPath; 4] = [
        ExecPath::Berth,
        ExecPath::Cli,
        ExecPath::CliIntoSandbox,
        ExecPath::CliStartup,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Berth => "Berth `POST /api/v1/sandboxes/{id}/exec`",
            Self::Cli => "`docker exec C /bin/sh -c …` (C from `docker run -d`)",
            Self::CliIntoSandbox => "`docker exec` into the Berth sandbox's container",
            Self::CliStartup => "docker CLI start-up alone (`docker --version`, no engine call)",
        }
    }
}

/// What the timed calls talk to.
struct Target<'a> {
    http: reqwest::Client,
    api: &'a Api,
    image: &'a str,
    pid: u32,
}

async fn measure(
    bench: &Bench,
    section: &mut Section,
    control_plane: &ControlPlane,
    worker: &Worker,
) -> anyhow::Result<()> {
    let settings = &bench.settings;
    let api = &control_plane.api;
    api.wait_worker_online(&worker.worker_id, Duration::from_secs(30))
        .await?;
    api.wait_provider_healthy(&worker.worker_id, "docker", Duration::from_secs(30))
        .await?;
    let target = Target {
        http: http_client()?,
        api,
        image: &settings.docker_image,
        pid: std::process::id(),
    };

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

    report(section, spawns, execs);
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
            let options = like_berth_options(&name);
            let options: Vec<&str> = options.iter().map(String::as_str).collect();
            let init = format!("berth-init-{name}");
            cli_run(target, &name, &options, &["-c", SLEEPER, &init]).await?;
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

/// Creates a Berth sandbox on the docker worker; returns once it runs.
async fn create_sandbox(target: &Target<'_>) -> anyhow::Result<String> {
    let url = target.api.url("/sandboxes");
    let response = target
        .http
        .post(&url)
        .header("X-API-Key", &target.api.key)
        .json(&json!({ "provider": "docker", "image": target.image, "ttl": "10m" }))
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    ensure!(status.as_u16() == 201, "create answered {status}: {body}");
    let id = body["id"].as_str().context("no sandbox id")?.to_owned();
    // the create answers once the worker started the container; should that ever
    // change, wait for running here so the timing still means spawn-to-running
    let mut state = body["state"].as_str().unwrap_or_default().to_owned();
    let deadline = Instant::now() + CLI_TIMEOUT;
    while state != "running" {
        ensure!(
            matches!(
                state.as_str(),
                "pending" | "starting" | "scheduled" | "creating"
            ),
            "sandbox {id} is {state:?}, not running: {body}"
        );
        ensure!(
            Instant::now() < deadline,
            "sandbox {id} was not running within {CLI_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        let response = target
            .http
            .get(format!("{url}/{id}"))
            .header("X-API-Key", &target.api.key)
            .send()
            .await?;
        let body: Value = response.json().await?;
        state = body["state"].as_str().unwrap_or_default().to_owned();
    }
    Ok(id)
}

async fn destroy_sandbox(target: &Target<'_>, id: &str) -> anyhow::Result<()> {
    let response = target
        .http
        .delete(target.api.url(&format!("/sandboxes/{id}")))
        .header("X-API-Key", &target.api.key)
        .send()
        .await?;
    let status = response.status();
    ensure!(
        status.as_u16() == 200,
        "destroy answered {status}: {}",
        response.text().await.unwrap_or_default()
    );
    Ok(())
}

/// `docker run --name NAME --label OWNER OPTIONS… IMAGE COMMAND…` (`options` holds
/// `-d`); the container keeps running until removed.
async fn cli_run(
    target: &Target<'_>,
    name: &str,
    options: &[&str],
    command: &[&str],
) -> anyhow::Result<()> {
    let owner = format!("{OWNER_LABEL}={}", target.pid);
    let mut args = vec!["run", "--name", name, "--label", &owner];
    args.extend_from_slice(options);
    args.push(target.image);
    args.extend_from_slice(command);
    let id = docker(&args).await?;
    ensure!(!id.trim().is_empty(), "docker run printed no container id");
    Ok(())
}

/// The network Berth makes per sandbox: a bridge with inter-container traffic off.
fn network_create_args(name: &str, pid: u32) -> Vec<String> {
    [
        "network",
        "create",
        "--driver",
        "bridge",
        "--opt",
        "com.docker.network.bridge.enable_icc=false",
        "--label",
        &format!("{OWNER_LABEL}={pid}"),
        name,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// `docker run` options equal to what the docker provider sets on a sandbox's
/// container (worker/src/provider/docker/spawn.rs) with Berth's defaults, including a
/// shell sleeper as its main process under docker-init (its script follows the image).
fn like_berth_options(name: &str) -> Vec<String> {
    let memory = format!("{MEMORY_MB}m");
    let sandbox_env = format!("BERTH_SANDBOX_ID={name}");
    [
        "-d",
        "--network",
        name,
        "--memory",
        &memory,
        "--memory-swap",
        &memory,
        "--cpus",
        &VCPUS.to_string(),
        "--pids-limit",
        &PIDS_LIMIT.to_string(),
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--init",
        "--ipc",
        "private",
        "--runtime",
        "runc",
        "-v",
        "/workspace",
        "-w",
        "/workspace",
        "-e",
        "HOME=/workspace",
        "-e",
        &sandbox_env,
        "--entrypoint",
        "/bin/sh",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Runs `docker ARGS…` and returns its stdout; an error with its stderr when it fails.
async fn docker<S: AsRef<str>>(args: &[S]) -> anyhow::Result<String> {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let output = tokio::time::timeout(
        CLI_TIMEOUT,
        Command::new("docker")
            .args(&args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| {
        format!(
            "`docker {}` took longer than {CLI_TIMEOUT:?}",
            args.join(" ")
        )
    })?
    .with_context(|| format!("cannot run `docker {}`", args.join(" ")))?;
    ensure!(
        output.status.success(),
        "`docker {}` failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The engine as the report names it, or why none answers.
async fn probe_engine() -> Result<String, String> {
    let format = "{{.ServerVersion}}|{{.Driver}}|{{.DefaultRuntime}}|{{.CgroupVersion}}|{{.NCPU}}";
    let output = tokio::time::timeout(
        PROBE_TIMEOUT,
        Command::new("docker")
            .args(["info", "--format", format])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| format!("`docker info` did not answer within {PROBE_TIMEOUT:?}"))?
    .map_err(|err| format!("cannot run the docker CLI: {err}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    match describe_engine(&stdout) {
        Some(engine) if output.status.success() => Ok(engine),
        _ => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let why = stderr
                .lines()
                .map(str::trim)
                .find(|line| !line.is_empty())
                .unwrap_or("`docker info` gave no server version");
            Err(why.to_owned())
        }
    }
}

/// `20.10.24|overlay2|runc|2|8` -> `docker 20.10.24, storage overlay2, runtime runc,
/// cgroup v2, 8 CPUs`; None without a server version.
fn describe_engine(info: &str) -> Option<String> {
    let fields: Vec<&str> = info.trim().split('|').map(str::trim).collect();
    let [version, driver, runtime, cgroup, cpus] = fields.as_slice() else {
        return None;
    };
    if version.is_empty() {
        return None;
    }
    Some(format!(
        "docker {version}, storage {driver}, runtime {runtime}, cgroup v{cgroup}, {cpus} CPUs"
    ))
}

async fn check_image(image: &str) -> anyhow::Result<()> {
    if let Err(err) = docker(&["image", "inspect", "--format", "{{.Id}}", image]).await {
        bail!(
            "image {image} is not on the docker engine (there is no registry): build it with \
             `bash smoke/docker-test-image.sh` ({err:#})"
        );
    }
    Ok(())
}

/// Whether `pid` is a running berth-bench process.
fn bench_is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|comm| comm.trim() == "berth-bench")
}

/// The bench pid in an owner label (`<pid>`), or in a `berth.worker` label when
/// `worker` (`berth-bench-<pid>-docker`; any other worker's id is None).
fn owner_of(label: &str, worker: bool) -> Option<u32> {
    if !worker {
        return label.parse().ok();
    }
    let pid = label.strip_prefix(PREFIX)?.strip_suffix("-docker")?;
    pid.parse().ok()
}

/// `ID LABEL` lines -> the ids whose label names an owner `remove` picks.
fn pick(listing: &str, worker: bool, remove: &impl Fn(u32) -> bool) -> Vec<String> {
    listing
        .lines()
        .filter_map(|line| line.trim().split_once(' '))
        .filter(|(_, label)| owner_of(label.trim(), worker).is_some_and(remove))
        .map(|(id, _)| id.to_owned())
        .collect()
}

/// Removes the containers, then the networks, of bench runs `remove` picks by pid;
/// returns how many.
async fn sweep(remove: impl Fn(u32) -> bool) -> anyhow::Result<usize> {
    let mut removed = 0;
    for kind in [["ps", "-a"], ["network", "ls"]] {
        let mut ids = Vec::new();
        for label in [OWNER_LABEL, "berth.worker"] {
            let listing = docker(&[
                kind[0],
                kind[1],
                "--filter",
                &format!("label={label}"),
                "--format",
                &format!("{{{{.ID}}}} {{{{.Label \"{label}\"}}}}"),
            ])
            .await?;
            // by worker label: only the bench's own workers, never another's sandboxes
            ids.extend(pick(&listing, label == "berth.worker", &remove));
        }
        if ids.is_empty() {
            continue;
        }
        removed += ids.len();
        let mut args: Vec<&str> = if kind[0] == "ps" {
            vec!["rm", "-f", "-v"]
        } else {
            vec!["network", "rm"]
        };
        args.extend(ids.iter().map(String::as_str));
        docker(&args).await?;
    }
    Ok(removed)
}

fn report(section: &mut Section, spawns: Vec<PathRun>, execs: Vec<PathRun>) {
    let mut spawn_table = Table::new(&[
        "path", "timed", "runs", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors",
    ])
    .captioned("Spawn to running (one at a time):");
    let mut teardown_table = Table::new(&["path", "teardown", "runs", "p50 ms", "max ms"])
        .captioned("Teardown after each spawn (timed apart, not in the ratios):");
    let mut spawn_summaries = Vec::new();
    let mut teardown_summaries = Vec::new();
    let mut network_create = Summary::default();
    for (path, run) in SpawnPath::ALL.into_iter().zip(spawns) {
        if path == SpawnPath::CliLikeBerth {
            network_create = run.networks.clone().summarize(Duration::ZERO);
        }
        section.call_errors += run.errors;
        if let Some(err) = &run.first_error {
            section.notes.push(format!("{}: {err}", path.label()));
        }
        let s = run.calls.summarize(Duration::ZERO);
        let t = run.teardowns.summarize(Duration::ZERO);
        spawn_table.row(vec![
            path.label().to_owned(),
            path.timed().to_owned(),
            s.count.to_string(),
            ms(s.p50),
            ms(s.p90),
            ms(s.p99),
            ms(s.max),
            run.errors.to_string(),
        ]);
        teardown_table.row(vec![
            path.label().to_owned(),
            path.teardown().to_owned(),
            t.count.to_string(),
            ms(t.p50),
            ms(t.max),
        ]);
        spawn_summaries.push(s);
        teardown_summaries.push(t);
    }
    let mut exec_table = Table::new(&[
        "path", "runs", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors",
    ])
    .captioned("Exec round trip (one at a time):");
    let mut exec_summaries = Vec::new();
    for (path, run) in ExecPath::ALL.into_iter().zip(execs) {
        section.call_errors += run.errors;
        if let Some(err) = &run.first_error {
            section.notes.push(format!("{}: {err}", path.label()));
        }
        let s = run.calls.summarize(Duration::ZERO);
        exec_table.row(vec![
            path.label().to_owned(),
            s.count.to_string(),
            ms(s.p50),
            ms(s.p90),
            ms(s.p99),
            ms(s.max),
            run.errors.to_string(),
        ]);
        exec_summaries.push(s);
    }

    let [berth_spawn, cli_spawn, like_spawn] = [0, 1, 2].map(|i| spawn_summaries[i]);
    let [berth_destroy, cli_destroy, like_destroy] = [0, 1, 2].map(|i| teardown_summaries[i]);
    let [berth_exec, cli_exec, cli_into, cli_startup] = [0, 1, 2, 3].map(|i| exec_summaries[i]);
    let mut ratios = Table::new(&["ratio", "p50", "p90", "max"])
        .captioned("Berth / docker CLI (same run; below 1 means Berth was faster):");
    let mut ratio = |name: &str, a: Summary, b: Summary| {
        ratios.row(vec![
            name.to_owned(),
            times_text(a.p50, b.p50),
            times_text(a.p90, b.p90),
            times_text(a.max, b.max),
        ]);
    };
    ratio("spawn: Berth / `docker run -d`", berth_spawn, cli_spawn);
    ratio(
        "spawn: Berth / network create + `docker run -d` with Berth's options",
        berth_spawn,
        like_spawn,
    );
    ratio(
        "destroy: Berth / `docker rm -f`",
        berth_destroy,
        cli_destroy,
    );
    ratio(
        "destroy: Berth / `docker rm -f -v` + `docker network rm`",
        berth_destroy,
        like_destroy,
    );
    ratio("exec: Berth / `docker exec`", berth_exec, cli_exec);
    ratio(
        "exec: Berth / `docker exec` into the same container",
        berth_exec,
        cli_into,
    );
    section.tables.push(spawn_table);
    section.tables.push(exec_table);
    section.tables.push(ratios);
    section.tables.push(teardown_table);

    let spawn_ratio = times(berth_spawn.p50, cli_spawn.p50);
    let like_ratio = times(berth_spawn.p50, like_spawn.p50);
    section.targets.push(target(
        SPAWN_TARGET,
        [berth_spawn, cli_spawn].iter().all(|s| s.count > 0),
        format!(
            "{spawn_ratio:.2}× (p50 {} ms vs {} ms); {like_ratio:.2}× against `docker run` \
             with Berth's options and network",
            ms(berth_spawn.p50),
            ms(cli_spawn.p50)
        ),
        spawn_ratio <= 1.1,
    ));
    let exec_ratio = times(berth_exec.p50, cli_exec.p50);
    section.targets.push(target(
        EXEC_TARGET,
        [berth_exec, cli_exec].iter().all(|s| s.count > 0),
        format!(
            "{exec_ratio:.2}× (p50 {} ms vs {} ms)",
            ms(berth_exec.p50),
            ms(cli_exec.p50)
        ),
        exec_ratio <= 1.0,
    ));

    section.notes.push(format!(
        "What Berth's spawn does beyond `docker run -d`: the HTTP API checks the key, \
         validates the request and appends a hash-chained audit record; the control plane \
         inserts the sandbox, schedules it and takes the lease and a slot in one \
         transaction, calls the worker's Spawn over the mTLS mesh and marks the sandbox \
         running; the worker checks and persists the lease fence (`fences.json`, replaced \
         atomically); on the engine the provider looks for an existing container of that \
         name, inspects the image (pull policy), creates a bridge network of the sandbox's \
         own (`berth-<id>`, inter-container traffic off), creates the container with labels, \
         limits and hardening ({MEMORY_MB} MiB memory and no swap, {VCPUS} CPU, \
         {PIDS_LIMIT} pids, every capability dropped, no-new-privileges, private IPC, \
         docker-init as PID 1 over a shell sleeper, an anonymous `/workspace` volume), \
         starts it and inspects it again to report its state. The third spawn row does the \
         engine-side part of that with the CLI (network create, then `docker run` with the \
         same options) so the cost of the options and the network can be told apart from \
         Berth's own path. Berth's destroy also removes the network and the volume."
    ));
    section.notes.push(
        "What Berth's exec does beyond `docker exec`: the API key check and an audit record, \
         routing to the worker over mTLS, the worker's fence check, a container inspect (the \
         sandbox's container, checked to be this worker's), then the same create exec, \
         attached start and exec inspect (for the exit code) the CLI makes, with a \
         `BERTH_EXEC_ID` marker in the environment and `/workspace` as working directory. \
         The docker CLI pays a process start (see its start-up row) and a new connection to \
         the engine per command; the Berth client keeps one HTTP connection."
            .to_owned(),
    );
    section.notes.push(format!(
        "Within the third spawn row, `docker network create` alone took {} ms at p50 (max {} \
         ms); Berth's spawn took {} ms more than a plain `docker run -d` at p50.",
        ms(network_create.p50),
        ms(network_create.max),
        signed_ms(berth_spawn.p50, cli_spawn.p50)
    ));
    section.notes.push(format!(
        "docker CLI start-up alone took {} ms at p50: that much of every CLI figure is the \
         CLI process itself, not the engine.",
        ms(cli_startup.p50)
    ));
}

fn target(name: &str, measured_all: bool, measured: String, met: bool) -> TargetCheck {
    if measured_all {
        TargetCheck::new(name, measured, Verdict::from_bool(met))
    } else {
        TargetCheck::new(
            name,
            "no successful calls to compare".into(),
            Verdict::NotMeasured,
        )
    }
}

/// `a - b` in milliseconds, negative when `b` is larger.
fn signed_ms(a: Duration, b: Duration) -> String {
    if a >= b {
        ms(a - b)
    } else {
        format!("-{}", ms(b - a))
    }
}

fn times_text(a: Duration, b: Duration) -> String {
    format!("{:.2}×", times(a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_info_is_described_or_missing() {
        assert_eq!(
            describe_engine("20.10.24|overlay2|runc|2|8\n").as_deref(),
            Some("docker 20.10.24, storage overlay2, runtime runc, cgroup v2, 8 CPUs")
        );
        assert_eq!(describe_engine("|||| \n"), None);
        assert_eq!(describe_engine(""), None);
    }

    #[test]
    fn owners_come_from_labels_and_worker_ids() {
        assert_eq!(owner_of("4242", false), Some(4242));
        assert_eq!(owner_of("berth-bench-4242-docker", true), Some(4242));
        assert_eq!(owner_of("berth-bench-x-docker", true), None);
        // another worker's id is never taken for a bench's, even a numeric one
        assert_eq!(owner_of("4242", true), None);
        assert_eq!(owner_of("smoke-docker-10", true), None);
        let workers =
            "c1 berth-bench-10-docker\nc3 other-worker\nc5 berth-bench-11-docker\nc6 10\n";
        assert_eq!(pick(workers, true, &|pid| pid == 10), vec!["c1"]);
        assert_eq!(pick(workers, true, &|pid| pid != 10), vec!["c5"]);
        let owners = "c2 4242\nc4 10\n";
        assert_eq!(pick(owners, false, &|pid| pid == 10), vec!["c4"]);
    }

    #[test]
    fn differences_keep_their_sign() {
        let (a, b) = (Duration::from_millis(5), Duration::from_millis(3));
        assert_eq!(signed_ms(a, b), "2.000");
        assert_eq!(signed_ms(b, a), "-2.000");
    }

    #[test]
    fn the_equivalent_run_copies_the_providers_options() {
        let options = like_berth_options("berth-bench-1-like-0");
        let joined = options.join(" ");
        for expected in [
            "--network berth-bench-1-like-0",
            "--memory 512m --memory-swap 512m",
            "--cpus 1",
            "--pids-limit 512",
            "--cap-drop ALL",
            "--security-opt no-new-privileges",
            "--init",
            "--ipc private",
            "-v /workspace",
            "--entrypoint /bin/sh",
        ] {
            assert!(
                joined.contains(expected),
                "{expected} missing from {joined}"
            );
        }
        let network = network_create_args("n", 7).join(" ");
        assert!(network.contains("com.docker.network.bridge.enable_icc=false"));
        assert!(network.contains("--label berth-bench.owner=7"));
    }
}
