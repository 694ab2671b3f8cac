//! Section 2: spawn + destroy throughput through the HTTP API, at each client count,
//! on the store the run was given (SQLite by default, Postgres with `--database-url`).

use std::time::Duration;

use anyhow::{Context, ensure};
use serde_json::json;

use crate::clients::http_client;
use crate::fleet::WorkerOptions;
use crate::latency::ms;
use crate::load::closed_loop;
use crate::procstat;
use crate::report::{Section, Table, TargetCheck, Verdict, join};
use crate::run::Bench;
use crate::settings::describe_window;
use crate::store_floor;

const TARGET: &str = "≥ 2,000 spawn+destroy per second on SQLite with the mock provider";

pub async fn run(bench: &Bench, section: &mut Section) -> anyhow::Result<()> {
    let settings = &bench.settings;
    let options = bench.control_plane_options("spawn", Duration::from_secs(2));
    let store = options.store_name();
    section.setting("provider", settings.provider.clone());
    section.setting("store", store);
    section.setting("clients", join(&settings.concurrency));
    section.setting("window per run", describe_window(&settings.spawn_window));
    section.setting(
        "one call",
        "`POST /api/v1/sandboxes` then `DELETE /api/v1/sandboxes/{id}`, one HTTP/1.1 connection per client",
    );

    let fleet = bench
        .start_fleet(
            "spawn",
            &WorkerOptions {
                provider: settings.provider.clone(),
                max_sandboxes: 10_000,
                heartbeat_interval: Duration::from_secs(2),
                id: None,
                docker: None,
                dial_out: false,
                labels: None,
            },
        )
        .await?;
    let (control_plane, worker) = (&fleet.control_plane, &fleet.worker);
    let result: anyhow::Result<()> = async {
        control_plane
            .api
            .wait_worker_online(&worker.worker_id, Duration::from_secs(30))
            .await?;
        let ticks = procstat::ticks_per_second();
        let mut table = Table::new(&[
            "store",
            "clients",
            "pairs",
            "pairs/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "errors",
            "control plane CPU (cores)",
        ]);
        let mut best = 0.0f64;
        for &clients in &settings.concurrency {
            let mut each = Vec::with_capacity(clients);
            for _ in 0..clients {
                each.push((
                    http_client()?,
                    control_plane.api.url("/sandboxes"),
                    control_plane.api.key.clone(),
                    settings.provider.clone(),
                ));
            }
            let before = procstat::sample(control_plane.pid)?;
            let result = closed_loop(
                each,
                settings.spawn_window,
                |(http, url, key, provider)| async move {
                    let response = http
                        .post(&url)
                        .header("X-API-Key", &key)
                        .json(&json!({ "provider": provider, "ttl": "10m" }))
                        .send()
                        .await?;
                    let status = response.status();
                    let body: serde_json::Value = response.json().await?;
                    ensure!(status.as_u16() == 201, "create answered {status}: {body}");
                    let id = body["id"].as_str().context("no sandbox id")?;
                    let response = http
                        .delete(format!("{url}/{id}"))
                        .header("X-API-Key", &key)
                        .send()
                        .await?;
                    let status = response.status();
                    ensure!(
                        status.as_u16() == 200,
                        "destroy answered {status}: {}",
                        response.text().await.unwrap_or_default()
                    );
                    Ok(())
                },
            )
            .await;
            let after = procstat::sample(control_plane.pid)?;
            section.call_errors += result.errors;
            if let Some(err) = &result.first_error {
                section.notes.push(format!("{clients} clients: {err}"));
            }
            let s = result.summary;
            best = best.max(s.per_second);
            table.row(vec![
                store.to_owned(),
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
        }
        section.tables.push(table);
        let verdict = if store == "sqlite" && settings.provider == "mock" {
            Verdict::from_bool(best >= 2_000.0)
        } else {
            Verdict::NotMeasured
        };
        section.targets.push(TargetCheck::new(
            TARGET,
            format!("{best:.0}/s at best ({store}, {})", settings.provider),
            verdict,
        ));
        Ok(())
    }
    .await;
    let dir = fleet.dir.clone();
    fleet.stop().await;
    result?;
    if store == "sqlite" {
        // with the fleet stopped, so the store has the machine to itself
        let (table, best) =
            store_floor::measure(&dir, &settings.concurrency, settings.spawn_window).await?;
        section.notes.push(format!(
            "The store alone (last table): the same writes a pair makes — placement with \
             slot and lease in one transaction, mark running, destroy claim, release, two \
             audit records — straight on a SQLite store in the bench process, no HTTP, \
             gRPC or worker: {best:.0} pairs/s at best, the ceiling of the whole path on \
             this machine's store."
        ));
        section.tables.push(table);
    }
    Ok(())
}
