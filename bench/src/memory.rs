//! Section 6: the control plane's resident memory at rest, read at three points of one
//! run: just started; holding N sandboxes on one real worker; and with K simulated
//! workers heartbeating besides.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};

use crate::fleet::{ControlPlane, Worker, WorkerOptions};
use crate::procstat::{self, mib};
use crate::report::{Section, Table};
use crate::run::Bench;
use crate::simulated::SimulatedFleet;

pub async fn run(bench: &Bench, section: &mut Section) -> anyhow::Result<()> {
    let settings = &bench.settings;
    let interval = settings.heartbeat_interval;
    section.setting("provider", settings.provider.clone());
    section.setting(
        "store",
        bench.control_plane_options("memory", interval).store_name(),
    );
    section.setting("sandboxes (N)", settings.memory_sandboxes.to_string());
    section.setting("simulated workers (K)", settings.memory_workers.to_string());
    section.setting(
        "at rest",
        format!(
            "read after two heartbeat intervals ({}) without API traffic",
            humantime::format_duration(interval * 2)
        ),
    );

    let fleet = bench
        .start_fleet(
            "memory",
            &WorkerOptions {
                provider: settings.provider.clone(),
                max_sandboxes: u32::try_from(settings.memory_sandboxes).unwrap_or(u32::MAX) + 8,
                heartbeat_interval: interval,
                id: None,
                docker: None,
                dial_out: false,
                labels: None,
            },
        )
        .await?;
    let (control_plane, worker) = (&fleet.control_plane, &fleet.worker);
    let mut simulated = SimulatedFleet::new(&control_plane.mesh_url, interval);
    let result = measure(bench, section, control_plane, worker, &mut simulated).await;
    simulated.stop().await;
    fleet.stop().await;
    result
}

async fn measure(
    bench: &Bench,
    section: &mut Section,
    control_plane: &ControlPlane,
    worker: &Worker,
    fleet: &mut SimulatedFleet,
) -> anyhow::Result<()> {
    let settings = &bench.settings;
    let rest = settings.heartbeat_interval * 2;
    let mut table = Table::new(&["state", "workers", "sandboxes", "RSS MiB", "peak RSS MiB"]);
    let mut read = |state: &str, workers: usize, sandboxes: usize| -> anyhow::Result<()> {
        let sample = procstat::sample(control_plane.pid)?;
        table.row(vec![
            state.to_owned(),
            workers.to_string(),
            sandboxes.to_string(),
            mib(sample.rss_kib),
            mib(sample.hwm_kib),
        ]);
        Ok(())
    };

    control_plane
        .api
        .wait_worker_online(&worker.worker_id, Duration::from_secs(30))
        .await?;
    tokio::time::sleep(rest).await;
    read("started, one worker", 1, 0)?;

    let api = &control_plane.api;
    let created: Vec<_> = futures::stream::iter(0..settings.memory_sandboxes)
        .map(|_| api.create_sandbox(&settings.provider))
        .buffer_unordered(8)
        .try_collect()
        .await?;
    tokio::time::sleep(rest).await;
    read("holding sandboxes", 1, created.len())?;

    fleet.grow(api, settings.memory_workers, 32).await?;
    fleet
        .wait_all_heartbeated(settings.heartbeat_interval * 3 + Duration::from_secs(30))
        .await?;
    let connecting = fleet.take_window();
    if connecting.failed > 0 {
        section.notes.push(format!(
            "While {} simulated workers connected at once, {} heartbeats failed and were \
             retried (first: {})",
            fleet.len(),
            connecting.failed,
            connecting.first_error.unwrap_or_default()
        ));
    }
    tokio::time::sleep(rest).await;
    read(
        "plus simulated workers heartbeating",
        1 + fleet.len(),
        created.len(),
    )?;
    let window = fleet.take_window();
    if window.failed > 0 {
        section.notes.push(format!(
            "{} heartbeats of simulated workers failed at rest (first: {})",
            window.failed,
            window.first_error.unwrap_or_default()
        ));
    }
    section.tables.push(table);
    Ok(())
}
