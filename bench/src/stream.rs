//! Section 4: how fast one large exec stream flows: through the control plane (gRPC
//! and HTTP NDJSON) versus straight from the worker's ExecStream.

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use berth_proto::v1 as pb;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;

use crate::api::SandboxRef;
use crate::clients::{ControlPlaneIdentity, grpc_client, http_client, with_key};
use crate::fleet::{ControlPlane, Worker, WorkerOptions};
use crate::procstat;
use crate::report::{Section, Table, TargetCheck, Verdict};
use crate::run::Bench;

const TARGET: &str = "stream ≥ 200 MB/s through the control plane and ≥ 0.7× the direct rate";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Direct,
    Grpc,
    Http,
}

impl Path {
    const ALL: [Path; 3] = [Path::Direct, Path::Grpc, Path::Http];

    fn label(self) -> &'static str {
        match self {
            Path::Direct => "worker direct (gRPC ExecStream, mTLS)",
            Path::Grpc => "control plane gRPC ExecStream",
            Path::Http => "control plane HTTP NDJSON",
        }
    }
}

pub async fn run(bench: &Bench, section: &mut Section) -> anyhow::Result<()> {
    let settings = &bench.settings;
    let command = format!("generate --bytes {}", settings.stream_bytes);
    section.setting("provider", settings.provider.clone());
    section.setting("sandbox command", format!("`{command}` (64 KiB chunks)"));
    section.setting(
        "runs",
        format!("{} per path, paths interleaved", settings.stream_runs),
    );
    section.setting("MB", "10^6 bytes of stdout payload received by the client");

    let fleet = bench
        .start_fleet(
            "stream",
            &WorkerOptions {
                provider: settings.provider.clone(),
                max_sandboxes: 8,
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
        &command,
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
    command: &str,
) -> anyhow::Result<()> {
    let settings = &bench.settings;
    control_plane
        .api
        .wait_worker_online(&worker.worker_id, Duration::from_secs(30))
        .await?;
    let sandbox = control_plane.api.create_sandbox(&settings.provider).await?;
    let identity = ControlPlaneIdentity::mint(&control_plane.data_dir)?;
    let mut rates: [Vec<f64>; 3] = Default::default();
    let mut cpu: [CpuShare; 3] = Default::default();
    let pids = [control_plane.pid, worker.pid, std::process::id()];
    for _ in 0..settings.stream_runs {
        for (index, path) in Path::ALL.into_iter().enumerate() {
            let before = pids.map(procstat::sample);
            let started = Instant::now();
            let bytes = match path {
                Path::Direct => direct(&identity, worker, &sandbox, command).await,
                Path::Grpc => through_grpc(control_plane, &sandbox, command).await,
                Path::Http => through_http(control_plane, &sandbox, command).await,
            }
            .with_context(|| format!("{} stream", path.label()))?;
            let elapsed = started.elapsed();
            cpu[index].add(&before, &pids.map(procstat::sample), elapsed);
            ensure!(
                bytes == settings.stream_bytes,
                "{} delivered {bytes} bytes, expected {}",
                path.label(),
                settings.stream_bytes
            );
            rates[index].push(megabytes_per_second(bytes, elapsed));
        }
    }
    let medians: Vec<f64> = rates.iter().map(|r| median(r)).collect();
    let mut table = Table::new(&[
        "path",
        "bytes",
        "runs",
        "median MB/s",
        "best MB/s",
        "median / direct",
        "CPU cores: control plane / worker / bench",
    ]);
    for (index, path) in Path::ALL.into_iter().enumerate() {
        let best = rates[index].iter().copied().fold(0.0, f64::max);
        table.row(vec![
            path.label().to_owned(),
            settings.stream_bytes.to_string(),
            rates[index].len().to_string(),
            format!("{:.0}", medians[index]),
            format!("{best:.0}"),
            format!("{:.2}×", medians[index] / medians[0]),
            cpu[index].describe(),
        ]);
    }
    section.tables.push(table);
    let (direct_rate, grpc_rate) = (medians[0], medians[1]);
    let share = grpc_rate / direct_rate;
    section.targets.push(TargetCheck::new(
        TARGET,
        format!(
            "{grpc_rate:.0} MB/s via gRPC, {share:.2}× direct ({direct_rate:.0} MB/s); HTTP NDJSON {:.0} MB/s",
            medians[2]
        ),
        Verdict::from_bool(grpc_rate >= 200.0 && share >= 0.7),
    ));
    Ok(())
}

async fn direct(
    identity: &ControlPlaneIdentity,
    worker: &Worker,
    sandbox: &SandboxRef,
    command: &str,
) -> anyhow::Result<u64> {
    let mut client = identity.worker_client(&worker.worker_id, worker.address()?)?;
    let mut events = client
        .exec_stream(pb::WorkerExecRequest {
            sandbox_id: sandbox.id.clone(),
            generation: sandbox.generation,
            command: command.to_owned(),
            mode: pb::ExecMode::Shell as i32,
            timeout_ms: 300_000,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut total = 0u64;
    while let Some(event) = events.message().await? {
        if let Some(received) = count_event(event, &mut total)? {
            return Ok(received);
        }
    }
    bail!("the stream ended without a terminal event")
}

async fn through_grpc(
    control_plane: &ControlPlane,
    sandbox: &SandboxRef,
    command: &str,
) -> anyhow::Result<u64> {
    let api = &control_plane.api;
    let mut client = grpc_client(&api.base_url)?;
    let request = with_key(
        pb::ExecRequest {
            sandbox_id: sandbox.id.clone(),
            command: command.to_owned(),
            mode: pb::ExecMode::Shell as i32,
            timeout: "300s".to_owned(),
            ..Default::default()
        },
        &api.key,
    )?;
    let mut events = client.exec_stream(request).await?.into_inner();
    let mut total = 0u64;
    while let Some(event) = events.message().await? {
        if let Some(received) = count_event(event, &mut total)? {
            return Ok(received);
        }
    }
    bail!("the stream ended without a terminal event")
}

/// Adds an event's stdout to `total`; `Some` once the terminal event arrived.
fn count_event(event: pb::ExecEvent, total: &mut u64) -> anyhow::Result<Option<u64>> {
    use pb::exec_event::Event;
    match event.event {
        Some(Event::Stdout(data)) => *total += data.len() as u64,
        Some(Event::Stderr(data)) => bail!("unexpected stderr: {}", String::from_utf8_lossy(&data)),
        Some(Event::Exit(exit)) if exit.exit_code == 0 => return Ok(Some(*total)),
        Some(Event::Exit(exit)) => bail!("the command exited {}", exit.exit_code),
        Some(Event::Error(err)) => bail!("{}: {}", err.code, err.message),
        None => {}
    }
    Ok(None)
}

#[derive(Debug, Deserialize)]
struct NdjsonLine {
    stream: String,
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    exit_code: Option<i32>,
    #[serde(default)]
    message: Option<String>,
}

async fn through_http(
    control_plane: &ControlPlane,
    sandbox: &SandboxRef,
    command: &str,
) -> anyhow::Result<u64> {
    let api = &control_plane.api;
    let response = http_client()?
        .post(api.url(&format!("/sandboxes/{}/exec", sandbox.id)))
        .header("X-API-Key", &api.key)
        .json(&json!({ "command": command, "stream": true, "timeout": "300s" }))
        .send()
        .await?;
    ensure!(
        response.status().as_u16() == 200,
        "exec answered {}",
        response.status()
    );
    let mut body = response.bytes_stream();
    let mut pending: Vec<u8> = Vec::new();
    let mut total = 0u64;
    while let Some(chunk) = body.next().await {
        pending.extend_from_slice(&chunk?);
        let mut start = 0;
        while let Some(end) = pending[start..].iter().position(|b| *b == b'\n') {
            let line: NdjsonLine = serde_json::from_slice(&pending[start..start + end])?;
            start += end + 1;
            match line.stream.as_str() {
                "stdout" => total += line.data.map(|d| d.len() as u64).unwrap_or(0),
                "exit" if line.exit_code == Some(0) => return Ok(total),
                "exit" => bail!("the command exited {:?}", line.exit_code),
                other => bail!("unexpected {other} line: {:?}", line.message.or(line.data)),
            }
        }
        pending.drain(..start);
    }
    bail!("the stream ended without a terminal line")
}

/// CPU time the three processes spent on one path's runs, over those runs' wall time.
#[derive(Debug, Default)]
struct CpuShare {
    ticks: [u64; 3],
    wall: Duration,
    unreadable: bool,
}

impl CpuShare {
    fn add(
        &mut self,
        before: &[anyhow::Result<procstat::ProcSample>; 3],
        after: &[anyhow::Result<procstat::ProcSample>; 3],
        elapsed: Duration,
    ) {
        for i in 0..3 {
            match (&before[i], &after[i]) {
                (Ok(b), Ok(a)) => self.ticks[i] += a.cpu_ticks.saturating_sub(b.cpu_ticks),
                _ => self.unreadable = true,
            }
        }
        self.wall += elapsed;
    }

    fn describe(&self) -> String {
        if self.unreadable || self.wall.is_zero() {
            return "-".into();
        }
        let per_second = procstat::ticks_per_second() as f64;
        let cores: Vec<String> = self
            .ticks
            .iter()
            .map(|t| format!("{:.2}", *t as f64 / per_second / self.wall.as_secs_f64()))
            .collect();
        cores.join(" / ")
    }
}

fn megabytes_per_second(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64().max(1e-9)
}

fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[(sorted.len() - 1) / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_medians() {
        assert_eq!(
            megabytes_per_second(200_000_000, Duration::from_secs(2)),
            100.0
        );
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0]), 1.0);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn events_count_stdout_until_the_exit() {
        use pb::exec_event::Event;
        let mut total = 0;
        let out = pb::ExecEvent {
            event: Some(Event::Stdout(vec![b'x'; 10])),
        };
        assert!(count_event(out, &mut total).unwrap().is_none());
        let exit = pb::ExecEvent {
            event: Some(Event::Exit(pb::ExecExit {
                exit_code: 0,
                duration_ms: 1,
            })),
        };
        assert_eq!(count_event(exit, &mut total).unwrap(), Some(10));
        let failed = pb::ExecEvent {
            event: Some(Event::Exit(pb::ExecExit {
                exit_code: 3,
                duration_ms: 1,
            })),
        };
        assert!(count_event(failed, &mut total).is_err());
    }
}
