//! The section's report: spawn, exec and teardown tables, the Berth / CLI ratios, the
//! two targets, and notes saying what each side does.

use std::time::Duration;

use berth_worker::DockerConfig;

use super::paths::{ExecPath, PathRun, SpawnPath};
use super::{EXEC_TARGET, MEMORY_MB, SPAWN_TARGET, VCPUS};
use crate::latency::{Summary, ms};
use crate::report::{Section, Table, TargetCheck, Verdict, times};

pub(super) fn report(
    section: &mut Section,
    docker: &DockerConfig,
    spawns: Vec<PathRun>,
    execs: Vec<PathRun>,
) {
    let pids_limit = docker.pids_limit;
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
         {pids_limit} pids, every capability dropped, no-new-privileges, private IPC, \
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
    fn differences_keep_their_sign() {
        let (a, b) = (Duration::from_millis(5), Duration::from_millis(3));
        assert_eq!(signed_ms(a, b), "2.000");
        assert_eq!(signed_ms(b, a), "-2.000");
    }
}
