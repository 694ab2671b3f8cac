//! Section 3: heartbeat capacity. Simulated workers are added step by step; at each
//! step the control plane is watched for a window: heartbeat latency (as the workers
//! see it and as the control plane measures it), its CPU and memory, and whether it
//! showed any of them as anything but online. The first step that does not hold ends
//! the ladder; the one before it is the largest count that holds here.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::fleet::ControlPlane;
use crate::latency::ms;
use crate::procstat::{self, mib};
use crate::prom::Histogram;
use crate::report::{Section, Table, TargetCheck, Verdict};
use crate::run::Bench;
use crate::simulated::SimulatedFleet;

const TARGET: &str = "≥ 10,000 workers at a 5-second heartbeat, none wrongly marked unhealthy";
const SERVER_HISTOGRAM: &str = "berth_mesh_request_duration_seconds";
/// Enrollments in flight at once while the fleet grows.
const ENROLL_CONCURRENCY: usize = 32;

pub async fn run(bench: &Bench, section: &mut Section) -> anyhow::Result<()> {
    let settings = &bench.settings;
    let interval = settings.heartbeat_interval;
    section.setting(
        "heartbeat interval",
        format!(
            "{} (±20% jitter); unhealthy after 3 missed",
            humantime::format_duration(interval)
        ),
    );
    section.setting(
        "workers per step",
        crate::report::join(&settings.heartbeat_ladder),
    );
    section.setting(
        "window per step",
        format!(
            "{} after every worker's first accepted heartbeat",
            humantime::format_duration(settings.heartbeat_window)
        ),
    );
    section.setting(
        "enrollment",
        format!(
            "real Enroll RPC, join tokens of up to 10,000 uses, {ENROLL_CONCURRENCY} at a time; \
             enrollment rate limit lifted for the bench, heartbeat limits at their defaults"
        ),
    );
    section.setting(
        "open files",
        format!(
            "{} per process (the control plane and the bench each hold one connection per worker)",
            bench.machine.open_files_limit
        ),
    );

    let dir = bench.section_dir("heartbeats")?;
    let control_plane = bench
        .start_control_plane("heartbeats", &dir, interval)
        .await?;
    let mut fleet = SimulatedFleet::new(&control_plane.mesh_url, interval);
    let result = ladder(bench, section, &control_plane, &mut fleet).await;
    fleet.stop().await;
    control_plane.stop().await;
    result
}

async fn ladder(
    bench: &Bench,
    section: &mut Section,
    control_plane: &ControlPlane,
    fleet: &mut SimulatedFleet,
) -> anyhow::Result<()> {
    let settings = &bench.settings;
    let interval = settings.heartbeat_interval;
    let ticks = procstat::ticks_per_second();
    let mut table = Table::new(&[
        "workers",
        "enrolled in s",
        "heartbeats/s",
        "client p50 ms",
        "client p99 ms",
        "client max ms",
        "server mean ms",
        "server p99 ≤ ms",
        "failed heartbeats",
        "shown not online",
        "control plane CPU (cores)",
        "bench CPU (cores)",
        "control plane RSS MiB",
        "holds",
    ]);
    let mut largest = None;
    for &workers in &settings.heartbeat_ladder {
        let enrolling = Instant::now();
        let grown = fleet
            .grow(&control_plane.api, workers, ENROLL_CONCURRENCY)
            .await;
        let enrolled_in = enrolling.elapsed();
        if let Err(err) = grown {
            section.notes.push(format!(
                "{workers} workers: enrollment stopped after {} workers: {err:#}",
                fleet.len()
            ));
            break;
        }
        if let Err(err) = fleet
            .wait_all_heartbeated(interval * 3 + Duration::from_secs(30))
            .await
        {
            section.notes.push(format!("{workers} workers: {err:#}"));
            let log = control_plane.log_tail();
            if !log.trim().is_empty() {
                section.notes.push(format!(
                    "{workers} workers: the control plane's log ended with:\n\n```text\n{}\n```",
                    last_lines(&log, 5)
                ));
            }
            table.row(failed_row(workers, enrolled_in));
            break;
        }
        // a new window: counters reset, then watched for the window's length
        fleet.take_window();
        let server_before = server_histogram(control_plane).await?;
        let cp_before = procstat::sample(control_plane.pid)?;
        let bench_before = procstat::sample(std::process::id())?;
        let started = Instant::now();
        let end = started + settings.heartbeat_window;
        let mut not_online: HashSet<String> = HashSet::new();
        let mut polls = 0;
        while Instant::now() < end {
            let wait = interval.min(end.saturating_duration_since(Instant::now()));
            tokio::time::sleep(wait).await;
            for (id, status) in control_plane.api.worker_statuses().await? {
                if status != "online" && fleet.contains(&id) {
                    not_online.insert(id);
                }
            }
            polls += 1;
        }
        let elapsed = started.elapsed();
        let cp_after = procstat::sample(control_plane.pid)?;
        let bench_after = procstat::sample(std::process::id())?;
        let server = server_histogram(control_plane).await?.since(&server_before);
        let window = fleet.take_window();
        let holds = window.failed == 0 && not_online.is_empty();
        let client = window.latencies.summarize(elapsed);
        table.row(vec![
            workers.to_string(),
            format!("{:.1}", enrolled_in.as_secs_f64()),
            format!("{:.0}", window.ok as f64 / elapsed.as_secs_f64()),
            ms(client.p50),
            ms(client.p99),
            ms(client.max),
            server
                .mean()
                .map(|s| format!("{:.3}", s * 1000.0))
                .unwrap_or_else(|| "-".into()),
            server
                .quantile_bound(0.99)
                .map(|s| {
                    if s.is_finite() {
                        format!("{:.1}", s * 1000.0)
                    } else {
                        "> largest bucket".into()
                    }
                })
                .unwrap_or_else(|| "-".into()),
            window.failed.to_string(),
            not_online.len().to_string(),
            format!(
                "{:.2}",
                procstat::cpu_cores_used(&cp_before, &cp_after, ticks)
            ),
            format!(
                "{:.2}",
                procstat::cpu_cores_used(&bench_before, &bench_after, ticks)
            ),
            mib(cp_after.rss_kib),
            if holds { "yes".into() } else { "**no**".into() },
        ]);
        if let Some(err) = window.first_error {
            section
                .notes
                .push(format!("{workers} workers: first failed heartbeat: {err}"));
        }
        if !not_online.is_empty() {
            let mut sample: Vec<&String> = not_online.iter().take(5).collect();
            sample.sort();
            section.notes.push(format!(
                "{workers} workers: {} shown not online in {polls} polls (e.g. {sample:?})",
                not_online.len()
            ));
        }
        eprintln!("berth-bench:   {workers} simulated workers: holds = {holds}");
        if !holds {
            break;
        }
        largest = Some(workers);
    }
    section.tables.push(table);
    let largest_text = largest
        .map(|k| format!("{k} workers held"))
        .unwrap_or_else(|| "no step held".into());
    let top = settings.heartbeat_ladder.last().copied().unwrap_or(0);
    if largest == Some(top) {
        section.notes.push(format!(
            "Every step held; the ladder stops at {top} because each simulated worker costs one \
             file descriptor in the control plane and one in the bench (limit {} per process here).",
            bench.machine.open_files_limit
        ));
    }
    let verdict = if interval == Duration::from_secs(5) {
        Verdict::from_bool(largest.is_some_and(|k| k >= 10_000))
    } else {
        Verdict::NotMeasured
    };
    section.targets.push(TargetCheck::new(
        TARGET,
        format!("{largest_text} at {}", humantime::format_duration(interval)),
        verdict,
    ));
    Ok(())
}

fn failed_row(workers: usize, enrolled_in: Duration) -> Vec<String> {
    let mut row = vec![
        workers.to_string(),
        format!("{:.1}", enrolled_in.as_secs_f64()),
    ];
    row.extend(std::iter::repeat_n("-".to_owned(), 11));
    row.push("**no**".into());
    row
}

fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

async fn server_histogram(control_plane: &ControlPlane) -> anyhow::Result<Histogram> {
    let text = control_plane.api.metrics().await?;
    Ok(Histogram::parse(
        &text,
        SERVER_HISTOGRAM,
        ("method", "Heartbeat"),
    ))
}
