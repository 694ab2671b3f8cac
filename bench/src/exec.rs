//! Section 1: exec round trips through the control plane (HTTP and gRPC) and the same
//! call made directly to the worker, at each client count, so the control plane's
//! overhead is a ratio from one run.

use std::time::Duration;

use anyhow::{Context, ensure};
use berth_proto::v1 as pb;
use serde_json::json;

use berth_proto::v1::sandboxes_client::SandboxesClient;
use tonic::transport::Channel;

use crate::api::{Api, SandboxRef};
use crate::clients::{ControlPlaneIdentity, grpc_client, http_client, with_key};
use crate::fleet::{ControlPlane, Worker, WorkerOptions};
use crate::latency::{Summary, ms};
use crate::load::{LoadResult, closed_loop};
use crate::procstat;
use crate::report::{Section, Table, TargetCheck, Verdict, join, times};
use crate::run::Bench;
use crate::settings::describe_window;

/// The command every call runs (the mock's `echo`; with docker, a real `sh -c`).
pub const COMMAND: &str = "echo hello";
const EXPECTED_STDOUT: &str = "hello\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Direct,
    Http,
    Grpc,
}

impl Path {
    const ALL: [Path; 3] = [Path::Direct, Path::Http, Path::Grpc];

    fn label(self) -> &'static str {
        match self {
            Path::Direct => "worker direct (gRPC, mTLS)",
            Path::Http => "control plane HTTP/JSON",
            Path::Grpc => "control plane gRPC",
        }
    }
}

pub async fn run(bench: &Bench, section: &mut Section) -> anyhow::Result<()> {
    let settings = &bench.settings;
    section.setting("provider", settings.provider.clone());
    section.setting(
        "store",
        bench
            .control_plane_options("exec", Duration::from_secs(2))
            .store_name(),
    );
    section.setting("sandbox command", format!("`{COMMAND}` (shell mode)"));
    section.setting("clients", join(&settings.concurrency));
    section.setting("window per run", describe_window(&settings.exec_window));
    section.setting(
        "connections",
        "one per client; HTTP/1.1 keep-alive, gRPC one HTTP/2 connection per client",
    );

    let sandboxes = settings.max_concurrency();
    let fleet = bench
        .start_fleet(
            "exec",
            &WorkerOptions {
                provider: settings.provider.clone(),
                max_sandboxes: u32::try_from(sandboxes).unwrap_or(u32::MAX) + 8,
                heartbeat_interval: Duration::from_secs(2),
                id: None,
                docker: None,
                dial_out: false,
                labels: None,
            },
        )
        .await?;
    let result = measure(
        bench,
        section,
        &fleet.control_plane,
        &fleet.worker,
        sandboxes,
    )
    .await;
    fleet.stop().await;
    result
}

async fn measure(
    bench: &Bench,
    section: &mut Section,
    control_plane: &ControlPlane,
    worker: &Worker,
    sandbox_count: usize,
) -> anyhow::Result<()> {
    let settings = &bench.settings;
    control_plane
        .api
        .wait_worker_online(&worker.worker_id, Duration::from_secs(30))
        .await?;
    let mut sandboxes = Vec::with_capacity(sandbox_count);
    for _ in 0..sandbox_count {
        sandboxes.push(control_plane.api.create_sandbox(&settings.provider).await?);
    }
    let identity = ControlPlaneIdentity::mint(&control_plane.data_dir)?;

    let mut table = Table::new(&[
        "path",
        "clients",
        "calls",
        "calls/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "errors",
        "control plane CPU (cores)",
    ]);
    let ticks = procstat::ticks_per_second();
    let mut ratios = Table::new(&[
        "clients",
        "HTTP p50 / direct p50",
        "gRPC p50 / direct p50",
        "HTTP p99 / direct p99",
        "gRPC p99 / direct p99",
    ])
    .captioned("Control-plane overhead (same run):");
    let mut at_eight: Option<[Summary; 3]> = None;
    for &clients in &settings.concurrency {
        let mut summaries = [Summary::default(); 3];
        for (index, path) in Path::ALL.into_iter().enumerate() {
            let before = procstat::sample(control_plane.pid)?;
            let result = run_path(
                path,
                clients,
                control_plane,
                worker,
                &identity,
                &sandboxes,
                bench,
            )
            .await?;
            let after = procstat::sample(control_plane.pid)?;
            section.call_errors += result.errors;
            if let Some(err) = &result.first_error {
                section
                    .notes
                    .push(format!("{} at {clients} clients: {err}", path.label()));
            }
            let s = result.summary;
            table.row(vec![
                path.label().to_owned(),
                clients.to_string(),
                s.count.to_string(),
                format!("{:.0}", s.per_second),
                ms(s.p50),
                ms(s.p90),
                ms(s.p99),
                ms(s.max),
                result.errors.to_string(),
                format!("{:.2}", procstat::cpu_cores_used(&before, &after, ticks)),
            ]);
            summaries[index] = s;
        }
        let [direct, http, grpc] = summaries;
        ratios.row(vec![
            clients.to_string(),
            ratio(http.p50, direct.p50),
            ratio(grpc.p50, direct.p50),
            ratio(http.p99, direct.p99),
            ratio(grpc.p99, direct.p99),
        ]);
        if clients == 8 {
            at_eight = Some(summaries);
        }
    }
    section.tables.push(table);
    section.tables.push(ratios);
    add_targets(section, at_eight);
    Ok(())
}

async fn run_path(
    path: Path,
    clients: usize,
    control_plane: &ControlPlane,
    worker: &Worker,
    identity: &ControlPlaneIdentity,
    sandboxes: &[SandboxRef],
    bench: &Bench,
) -> anyhow::Result<LoadResult> {
    let window = bench.settings.exec_window;
    let api = &control_plane.api;
    let pick = |i: usize| sandboxes[i % sandboxes.len()].clone();
    Ok(match path {
        Path::Direct => {
            let mut each = Vec::with_capacity(clients);
            for i in 0..clients {
                let client = identity.worker_client(&worker.worker_id, worker.address()?)?;
                each.push((client, pick(i)));
            }
            closed_loop(each, window, |(mut client, sandbox)| async move {
                let answer = client
                    .exec(pb::WorkerExecRequest {
                        sandbox_id: sandbox.id,
                        generation: sandbox.generation,
                        command: COMMAND.to_owned(),
                        mode: pb::ExecMode::Shell as i32,
                        timeout_ms: 60_000,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                check_output(answer.exit_code, &answer.stdout)
            })
            .await
        }
        Path::Http => closed_loop(http_execs(api, sandboxes, clients)?, window, http_exec).await,
        Path::Grpc => closed_loop(grpc_execs(api, sandboxes, clients)?, window, grpc_exec).await,
    })
}

/// One client of the control plane's HTTP/JSON exec: its own connection, its sandbox.
#[derive(Clone)]
pub struct HttpExec {
    http: reqwest::Client,
    url: String,
    key: String,
}

impl HttpExec {
    /// Execs in `sandbox` over `http`'s connection.
    pub fn new(http: reqwest::Client, api: &Api, sandbox: &SandboxRef) -> Self {
        Self {
            http,
            url: api.url(&format!("/sandboxes/{}/exec", sandbox.id)),
            key: api.key.clone(),
        }
    }
}

/// `clients` HTTP clients, client `i` on sandbox `i` (round robin).
pub fn http_execs(
    api: &Api,
    sandboxes: &[SandboxRef],
    clients: usize,
) -> anyhow::Result<Vec<HttpExec>> {
    ensure!(!sandboxes.is_empty(), "no sandboxes to exec in");
    (0..clients)
        .map(|i| {
            Ok(HttpExec::new(
                http_client()?,
                api,
                &sandboxes[i % sandboxes.len()],
            ))
        })
        .collect()
}

/// One exec through `POST /api/v1/sandboxes/{id}/exec`, its output checked.
pub async fn http_exec(client: HttpExec) -> anyhow::Result<()> {
    let HttpExec { http, url, key } = client;
    let response = http
        .post(&url)
        .header("X-API-Key", &key)
        .json(&json!({ "command": COMMAND }))
        .send()
        .await?;
    let status = response.status();
    let body: serde_json::Value = response.json().await?;
    ensure!(status.as_u16() == 200, "exec answered {status}: {body}");
    let exit = body["exit_code"].as_i64().context("no exit_code")?;
    let stdout = body["stdout"].as_str().context("no stdout")?;
    check_output(i32::try_from(exit).unwrap_or(-1), stdout.as_bytes())
}

/// One client of the control plane's gRPC exec: its own HTTP/2 connection, its sandbox.
#[derive(Clone)]
pub struct GrpcExec {
    client: SandboxesClient<Channel>,
    sandbox_id: String,
    key: String,
}

impl GrpcExec {
    /// Execs in `sandbox` over `client`'s connection.
    pub fn new(client: SandboxesClient<Channel>, api: &Api, sandbox: &SandboxRef) -> Self {
        Self {
            client,
            sandbox_id: sandbox.id.clone(),
            key: api.key.clone(),
        }
    }
}

/// `clients` gRPC clients, client `i` on sandbox `i` (round robin).
pub fn grpc_execs(
    api: &Api,
    sandboxes: &[SandboxRef],
    clients: usize,
) -> anyhow::Result<Vec<GrpcExec>> {
    ensure!(!sandboxes.is_empty(), "no sandboxes to exec in");
    (0..clients)
        .map(|i| {
            Ok(GrpcExec::new(
                grpc_client(&api.base_url)?,
                api,
                &sandboxes[i % sandboxes.len()],
            ))
        })
        .collect()
}

/// One exec through `Sandboxes.Exec`, its output checked.
pub async fn grpc_exec(client: GrpcExec) -> anyhow::Result<()> {
    let GrpcExec {
        mut client,
        sandbox_id,
        key,
    } = client;
    let request = with_key(
        pb::ExecRequest {
            sandbox_id,
            command: COMMAND.to_owned(),
            mode: pb::ExecMode::Shell as i32,
            ..Default::default()
        },
        &key,
    )?;
    let answer = client.exec(request).await?.into_inner();
    check_output(answer.exit_code, &answer.stdout)
}

fn check_output(exit_code: i32, stdout: &[u8]) -> anyhow::Result<()> {
    ensure!(exit_code == 0, "exec exited {exit_code}");
    ensure!(
        stdout == EXPECTED_STDOUT.as_bytes(),
        "unexpected output {:?}",
        String::from_utf8_lossy(stdout)
    );
    Ok(())
}

fn add_targets(section: &mut Section, at_eight: Option<[Summary; 3]>) {
    let Some([direct, http, grpc]) = at_eight else {
        section.targets.push(TargetCheck::new(
            OVERHEAD_TARGET,
            "not run at 8 clients".into(),
            Verdict::NotMeasured,
        ));
        section.targets.push(TargetCheck::new(
            P99_TARGET,
            "not run at 8 clients".into(),
            Verdict::NotMeasured,
        ));
        return;
    };
    let http_ratio = times(http.p50, direct.p50);
    let grpc_ratio = times(grpc.p50, direct.p50);
    section.targets.push(TargetCheck::new(
        OVERHEAD_TARGET,
        format!("HTTP {http_ratio:.2}×, gRPC {grpc_ratio:.2}× (8 clients)"),
        Verdict::from_bool(http_ratio <= 2.0 && grpc_ratio <= 2.0),
    ));
    let limit = Duration::from_millis(5);
    section.targets.push(TargetCheck::new(
        P99_TARGET,
        format!("HTTP {} ms, gRPC {} ms", ms(http.p99), ms(grpc.p99)),
        Verdict::from_bool(http.p99 <= limit && grpc.p99 <= limit),
    ));
}

const OVERHEAD_TARGET: &str = "exec p50 through the control plane ≤ 2× the direct worker call";
const P99_TARGET: &str = "exec p99 through the control plane ≤ 5 ms at 8 clients";

fn ratio(a: Duration, b: Duration) -> String {
    format!("{:.2}×", times(a, b))
}
