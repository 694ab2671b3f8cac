//! Section 9's timed rounds: a template's image built on the worker at the first spawn
//! of each version, and reused by the spawns after it. Each round saves a new version
//! of one template (its `on_create` names the round, so its content hash and its
//! image tag are new), then times, one at a time: the first spawn of that version
//! (which builds), a second spawn (which must reuse the built image) and a spawn of
//! the plain base image with no template. Each spawn's `building image` phase is read
//! from the sandbox's own phases, and a reused spawn that built (or a first spawn that
//! did not) fails the round. The plain spawn goes first in even rounds and last in
//! odd ones, so drift on a shared machine hits the paths alike.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::{Value, json};

use super::berth::destroy_sandbox;
use super::cli::docker;
use super::measure::Target;
use crate::fleet::{ControlPlane, Worker};
use crate::latency::{Samples, Summary, ms};
use crate::report::{Section, Table, times};
use crate::run::Bench;

/// What the built image adds: one file naming the round.
const ON_CREATE: &str = "echo round {round} > /etc/berth-bench-round";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SpawnKind {
    Plain,
    FirstOfVersion,
    Reuse,
}

impl SpawnKind {
    const ALL: [SpawnKind; 3] = [Self::Plain, Self::FirstOfVersion, Self::Reuse];

    fn label(self) -> &'static str {
        match self {
            Self::Plain => "plain image, no template",
            Self::FirstOfVersion => "template, first spawn of a new version (builds its image)",
            Self::Reuse => "template, a later spawn of that version (reuses the built image)",
        }
    }

    /// What the `building image` phase must say: `built …`, `reused …`, or no phase.
    fn expected_phase(self) -> Option<&'static str> {
        match self {
            Self::Plain => None,
            Self::FirstOfVersion => Some("built"),
            Self::Reuse => Some("reused"),
        }
    }
}

/// One path's timings.
#[derive(Debug, Default)]
struct KindRun {
    spawns: Samples,
    /// The `building image` phase's duration, by the control plane's clock.
    phases: Samples,
    errors: usize,
    first_error: Option<String>,
}

pub(super) async fn measure(
    bench: &Bench,
    section: &mut Section,
    control_plane: &ControlPlane,
    worker: &Worker,
    docker_config: &berth_worker::DockerConfig,
) -> anyhow::Result<()> {
    let settings = &bench.settings;
    let target = Target::when_ready(bench, control_plane, worker, docker_config).await?;
    let template = format!("bench-build-{}", target.pid);

    let result = async {
        // untimed: one version built and reused, and a plain spawn
        save_version(&target, &template, "warmup").await?;
        for kind in SpawnKind::ALL {
            spawn_once(&target, &template, kind)
                .await
                .with_context(|| format!("warm-up of {}", kind.label()))?;
        }
        let mut runs: Vec<KindRun> = SpawnKind::ALL.iter().map(|_| KindRun::default()).collect();
        for round in 0..settings.template_rounds {
            save_version(&target, &template, &round.to_string()).await?;
            let order = if round % 2 == 0 {
                [
                    SpawnKind::Plain,
                    SpawnKind::FirstOfVersion,
                    SpawnKind::Reuse,
                ]
            } else {
                [
                    SpawnKind::FirstOfVersion,
                    SpawnKind::Reuse,
                    SpawnKind::Plain,
                ]
            };
            for kind in order {
                let index = SpawnKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
                let run = &mut runs[index];
                match spawn_once(&target, &template, kind).await {
                    Ok((spawn, phase)) => {
                        run.spawns.record(spawn);
                        if let Some(phase) = phase {
                            run.phases.record(phase);
                        }
                    }
                    Err(err) => {
                        run.errors += 1;
                        run.first_error.get_or_insert_with(|| format!("{err:#}"));
                    }
                }
            }
        }
        Ok::<_, anyhow::Error>(runs)
    }
    .await;
    // what this run built, whatever happened
    let removed = remove_built(target.pid).await;
    let runs = result?;
    match removed {
        Ok(0) => {}
        Ok(count) => section.notes.push(format!(
            "Removed the {count} images this run's worker built (labels `berth.built` and \
             `berth.worker`) at the end."
        )),
        Err(err) => section.notes.push(format!(
            "Could not remove the images this run built: {err:#}"
        )),
    }
    report(section, runs, settings.template_rounds);
    Ok(())
}

/// Saves `template` with an `on_create` naming `round`: a new version, a new image.
async fn save_version(target: &Target<'_>, template: &str, round: &str) -> anyhow::Result<()> {
    let response = target
        .http
        .post(target.api.url("/templates"))
        .header("X-API-Key", &target.api.key)
        .json(&json!({
            "name": template,
            "image": target.image,
            "provider": "docker",
            "on_create": ON_CREATE.replace("{round}", round),
        }))
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    ensure!(
        status.is_success(),
        "saving the template answered {status}: {body}"
    );
    Ok(())
}

/// One spawn of `kind` (timed until the create answers, the sandbox running) and its
/// untimed destroy; the `building image` phase's duration when it has one.
async fn spawn_once(
    target: &Target<'_>,
    template: &str,
    kind: SpawnKind,
) -> anyhow::Result<(Duration, Option<Duration>)> {
    let body = match kind {
        SpawnKind::Plain => json!({"provider": "docker", "image": target.image, "ttl": "10m"}),
        _ => json!({"template": template, "ttl": "10m"}),
    };
    let started = Instant::now();
    let response = target
        .http
        .post(target.api.url("/sandboxes"))
        .header("X-API-Key", &target.api.key)
        .json(&body)
        .send()
        .await?;
    let status = response.status();
    let sandbox: Value = response.json().await?;
    let spawn = started.elapsed();
    ensure!(
        status.as_u16() == 201,
        "create answered {status}: {sandbox}"
    );
    let id = sandbox["id"].as_str().context("no sandbox id")?.to_owned();
    let checked = check_phase(&sandbox, kind);
    destroy_sandbox(target, &id).await?;
    ensure!(
        sandbox["state"] == "running",
        "sandbox {id} answered as {}, not running",
        sandbox["state"]
    );
    Ok((spawn, checked?))
}

/// The `building image` phase of `sandbox`, checked against what `kind` must show.
fn check_phase(sandbox: &Value, kind: SpawnKind) -> anyhow::Result<Option<Duration>> {
    let phase = sandbox["phases"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|phase| phase["name"] == "building image");
    match (kind.expected_phase(), phase) {
        (None, None) => Ok(None),
        (None, Some(phase)) => anyhow::bail!("a plain spawn had a build phase: {phase}"),
        (Some(_), None) => anyhow::bail!("no `building image` phase: {sandbox}"),
        (Some(expected), Some(phase)) => {
            let detail = phase["detail"].as_str().unwrap_or_default();
            ensure!(
                detail.starts_with(expected),
                "the `building image` phase says {detail:?}, expected {expected} …"
            );
            let took = phase["duration_ms"].as_u64().context("no duration_ms")?;
            Ok(Some(Duration::from_millis(took)))
        }
    }
}

/// Removes the images the worker of bench run `pid` built (a built image carries its
/// build container's `berth.built` and `berth.worker` labels); returns how many.
async fn remove_built(pid: u32) -> anyhow::Result<usize> {
    let listed = docker(&[
        "images",
        "--filter",
        "label=berth.built",
        "--filter",
        &format!("label=berth.worker={}", super::worker_id(pid)),
        "--format",
        "{{.Repository}}:{{.Tag}}",
    ])
    .await?;
    let built: Vec<&str> = listed.lines().collect();
    for image in &built {
        docker(&["rmi", "-f", image]).await?;
    }
    Ok(built.len())
}

fn report(section: &mut Section, runs: Vec<KindRun>, rounds: usize) {
    let mut spawn_table = Table::new(&["path", "runs", "p50 ms", "p90 ms", "max ms", "errors"])
        .captioned("Spawn to running (one at a time; until the create answers):");
    let mut phase_table = Table::new(&["path", "runs", "p50 ms", "max ms"])
        .captioned("Its `building image` phase (from the sandbox's phases):");
    let mut summaries: Vec<Summary> = Vec::new();
    for (kind, run) in SpawnKind::ALL.into_iter().zip(runs) {
        section.call_errors += run.errors;
        if let Some(err) = &run.first_error {
            section.notes.push(format!("{}: {err}", kind.label()));
        }
        let spawns = run.spawns.summarize(Duration::ZERO);
        spawn_table.row(vec![
            kind.label().to_owned(),
            spawns.count.to_string(),
            ms(spawns.p50),
            ms(spawns.p90),
            ms(spawns.max),
            run.errors.to_string(),
        ]);
        if kind.expected_phase().is_some() {
            let phases = run.phases.summarize(Duration::ZERO);
            phase_table.row(vec![
                kind.label().to_owned(),
                phases.count.to_string(),
                ms(phases.p50),
                ms(phases.max),
            ]);
        }
        summaries.push(spawns);
    }
    let [plain, first, reuse] = [summaries[0], summaries[1], summaries[2]];
    let mut ratios = Table::new(&["ratio", "p50", "p90", "max"])
        .captioned("Against the plain spawn (same run; 1 is no cost):");
    for (label, of) in [
        ("first spawn of a version / plain spawn", first),
        ("later spawn of that version / plain spawn", reuse),
    ] {
        ratios.row(vec![
            label.to_owned(),
            format!("{:.2}×", times(of.p50, plain.p50)),
            format!("{:.2}×", times(of.p90, plain.p90)),
            format!("{:.2}×", times(of.max, plain.max)),
        ]);
    }
    section.tables.extend([spawn_table, phase_table, ratios]);
    section.notes.push(format!(
        "Every round ({rounds} in all) saved a new version of the template, so each first \
         spawn built an image of its own: a container of the base image ran the `on_create` \
         script, was committed and tagged `berth/built:<content hash>`. Every later spawn \
         of that version found the tag on the engine and ran it: its `building image` \
         phase is one image lookup. A later spawn that built, or a first spawn that did \
         not, counts as an error."
    ));
    let millis = |d: Duration| d.as_secs_f64() * 1000.0;
    section.notes.push(format!(
        "At p50 a first spawn took {:+.3} ms against a later one (the build), and a later \
         spawn {:+.3} ms against a plain one (the template's lookup and the image check).",
        millis(first.p50) - millis(reuse.p50),
        millis(reuse.p50) - millis(plain.p50),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_phase_must_say_what_each_spawn_should_have_done() {
        let built = json!({"phases": [{"name": "scheduled", "duration_ms": 1},
            {"name": "building image", "detail": "built berth/built:ab in 2.0s",
             "duration_ms": 2000}]});
        let reused = json!({"phases": [{"name": "building image",
            "detail": "reused berth/built:ab", "duration_ms": 3}]});
        let plain = json!({"phases": [{"name": "creating", "duration_ms": 300}]});
        assert_eq!(
            check_phase(&built, SpawnKind::FirstOfVersion).unwrap(),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            check_phase(&reused, SpawnKind::Reuse).unwrap(),
            Some(Duration::from_millis(3))
        );
        assert_eq!(check_phase(&plain, SpawnKind::Plain).unwrap(), None);
        assert!(
            check_phase(&built, SpawnKind::Reuse).is_err(),
            "a reuse that built"
        );
        assert!(check_phase(&reused, SpawnKind::FirstOfVersion).is_err());
        assert!(check_phase(&plain, SpawnKind::Reuse).is_err(), "no phase");
        assert!(check_phase(&built, SpawnKind::Plain).is_err());
    }
}
