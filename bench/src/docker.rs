//! Section 5: the docker provider against the docker CLI on the same engine and image.
//! One call at a time (one client): spawn-to-running through the HTTP API versus
//! `docker run -d` (plain, and with the options Berth's spawn sets, taken from the
//! worker's own container settings), and an exec round trip through the HTTP API versus
//! `docker exec`. The paths take turns round by round (the order rotating), after one
//! untimed warm-up round, so drift on a shared machine hits them alike; the ratios come
//! from the same run.
//!
//! Without a docker engine the section is skipped, visibly (a failure with
//! `BERTH_REQUIRE_DOCKER=1`); a missing image is a failure. Everything the run makes on
//! the engine carries the bench's pid: CLI containers and networks the label
//! `berth-bench.owner=<pid>` (and a `berth-bench-<pid>-…` name), Berth's the worker id
//! `berth-bench-<pid>-docker` in their `berth.worker` label. It is all removed at the
//! end, and what a run whose process is gone left behind is removed at the start.
//!
//! Section 9 runs on the same kind of fleet: a template's image built on the worker at
//! the first spawn of a version versus its reuse by later spawns ([`templates`]).
//!
//! This file runs the sections; the parts live in `docker/`: [`paths`] (what is timed),
//! [`measure`] (the timed rounds), [`berth`] (the Berth API calls), [`cli`] (the docker
//! CLI calls), [`engine`] (probing the engine and the image), [`sweep`] (removing what
//! bench runs left), [`report`] (tables, ratios, targets and notes) and [`templates`]
//! (section 9's rounds and report).

mod berth;
mod cli;
mod engine;
mod measure;
mod paths;
mod report;
mod sweep;
mod templates;

use std::time::Duration;

use anyhow::bail;
use serde_json::json;

use berth_worker::DockerConfig;
use berth_worker::provider::docker::PullPolicy;

use crate::fleet::WorkerOptions;
use crate::report::{Section, TargetCheck, Verdict};
use crate::run::Bench;

const SPAWN_TARGET: &str = "Docker spawn-to-running p50 ≤ 1.1× `docker run -d` (section 5)";
const EXEC_TARGET: &str = "Docker exec p50 ≤ 1.0× `docker exec` (section 5)";

/// Label on everything the CLI paths make; its value is the bench's pid.
const OWNER_LABEL: &str = "berth-bench.owner";
/// Prefix of names and worker ids of a bench run: `berth-bench-<pid>-…`.
const PREFIX: &str = "berth-bench-";

/// The id of the docker worker of the bench run `pid` (its containers', networks' and
/// built images' `berth.worker` label).
fn worker_id(pid: u32) -> String {
    format!("{PREFIX}{pid}-docker")
}

/// Longest one docker CLI command may take (and a Berth sandbox to start running).
const CLI_TIMEOUT: Duration = Duration::from_secs(120);

/// What a Berth sandbox asks for (the control plane's default memory and CPUs), and so
/// what the equivalent `docker run` is given.
const MEMORY_MB: u64 = 512;
const VCPUS: u32 = 1;

/// What a docker section measures on its fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Measure {
    /// Section 5: Berth against the docker CLI.
    AgainstCli,
    /// Section 9: a template's built image, first spawn against reuse.
    TemplateBuilds,
}

/// Section 9: a template's first spawn of each version (which builds its image) against
/// later spawns (which reuse it) and a plain spawn.
pub async fn run_templates(bench: &Bench, section: &mut Section) -> anyhow::Result<()> {
    run_section(bench, section, Measure::TemplateBuilds).await
}

pub async fn run(bench: &Bench, section: &mut Section) -> anyhow::Result<()> {
    let result = run_section(bench, section, Measure::AgainstCli).await;
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

async fn run_section(bench: &Bench, section: &mut Section, what: Measure) -> anyhow::Result<()> {
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
    match what {
        Measure::AgainstCli => {
            section.setting(
                "runs",
                format!(
                    "{} spawns and {} execs per path, one at a time (1 client); one untimed \
                     warm-up round first; paths take turns each round, in rotating order",
                    settings.docker_spawns, settings.docker_execs
                ),
            );
            section.setting(
                "exec command",
                format!(
                    "`{}` through `/bin/sh -c` on both sides, output checked",
                    measure::COMMAND
                ),
            );
        }
        Measure::TemplateBuilds => {
            section.setting(
                "runs",
                format!(
                    "rounds: {}, one spawn per path each, one at a time (1 client); one \
                     untimed warm-up round first; each round saves a new template version",
                    settings.template_rounds
                ),
            );
            section.setting(
                "template",
                "the image above, `provider: docker`, `on_create: echo round N > \
                 /etc/berth-bench-round` (no packages: the image has no package manager)",
            );
        }
    }
    section.setting(
        "Berth client",
        "HTTP/JSON, one HTTP/1.1 keep-alive connection, admin key",
    );

    let engine = match engine::probe_engine().await {
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
    engine::check_image(&image).await?;

    let pid = std::process::id();
    match sweep::sweep(|owner| owner != pid && !sweep::bench_is_running(owner)).await {
        Ok(0) => {}
        Ok(removed) => section.notes.push(format!(
            "Removed {removed} containers and networks an earlier bench run left on the engine."
        )),
        Err(err) => section.notes.push(format!(
            "Could not look for leftovers of earlier runs: {err:#}"
        )),
    }

    // the worker's docker config; the CLI's equivalent of its containers comes from it
    let docker = DockerConfig {
        default_image: image.clone(),
        pull_policy: PullPolicy::Never,
        ..Default::default()
    };
    let mut docker_config = json!({ "default_image": image, "pull_policy": "never" });
    // the engine the CLI talks to
    if let Ok(host) = std::env::var("DOCKER_HOST")
        && !host.is_empty()
    {
        docker_config["host"] = json!(host);
    }
    let fleet = bench
        .start_fleet(
            "docker",
            &WorkerOptions {
                provider: "docker".to_owned(),
                max_sandboxes: 16,
                heartbeat_interval: Duration::from_secs(2),
                id: Some(worker_id(pid)),
                docker: Some(docker_config),
                dial_out: false,
                labels: None,
            },
        )
        .await;
    let result = match fleet {
        Ok(fleet) => {
            let (control_plane, worker) = (&fleet.control_plane, &fleet.worker);
            let result = match what {
                Measure::AgainstCli => {
                    measure::measure(bench, section, control_plane, worker, &docker).await
                }
                Measure::TemplateBuilds => {
                    templates::measure(bench, section, control_plane, worker, &docker).await
                }
            };
            fleet.stop().await;
            result
        }
        Err(err) => Err(err),
    };
    match sweep::sweep(|owner| owner == pid).await {
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
