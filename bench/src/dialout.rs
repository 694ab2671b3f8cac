//! Section 8: exec round trips through the control plane to a worker that dials out
//! (the control plane calls it over the connection the worker opened, HTTP/2 roles
//! reversed) versus one the control plane dials (inbound), both in one fleet. The two
//! workers get a label each from their join tokens and every sandbox is created with
//! the matching constraint (and its worker checked), so each sandbox is where it is
//! meant to be. Each client alternates between a sandbox on each worker call by call,
//! on its one connection, so both workers' calls run under the same load at the same
//! moments and the ratio dial-out / inbound is not at the mercy of a noisy machine's
//! bursts (an earlier version took turns of a second each, and the ratio of one run
//! swung from 0.4× to 3× on this machine while the host was busy).

use std::time::Duration;

use anyhow::{Context, ensure};
use serde_json::json;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::api::SandboxRef;
use crate::clients::{grpc_client, http_client};
use crate::exec::{GrpcExec, HttpExec, grpc_exec, http_exec};
use crate::fleet::{ControlPlane, Worker, WorkerOptions};
use crate::latency::{Summary, ms};
use crate::load::{RawLoad, Window};
use crate::procstat::{self, MachineCpu};
use crate::report::{Section, Table, TargetCheck, Verdict, join, times};
use crate::run::Bench;
use crate::settings::describe_window;

const TARGET: &str = "exec through the control plane to a dial-out worker ≤ 1.1× an inbound \
                      worker (p50, 1 and 8 clients, HTTP and gRPC; section 8)";
/// The most dial-out / inbound may be for the target.
const LIMIT: f64 = 1.1;
/// Client counts the target is judged at.
const JUDGED_AT: [usize; 2] = [1, 8];
/// The label the join tokens give the workers, and so the placement constraint.
const LABEL: &str = "bench-reach";

/// How the control plane reaches a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    Inbound,
    DialOut,
}

impl Reach {
    const BOTH: [Reach; 2] = [Reach::Inbound, Reach::DialOut];

    fn label(self) -> &'static str {
        match self {
            Reach::Inbound => "inbound",
            Reach::DialOut => "dial-out",
        }
    }

    fn constraint(self) -> String {
        format!("{LABEL}={}", self.label())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ApiKind {
    Http,
    Grpc,
}

impl ApiKind {
    const BOTH: [ApiKind; 2] = [ApiKind::Http, ApiKind::Grpc];

    fn label(self) -> &'static str {
        match self {
            ApiKind::Http => "HTTP/JSON",
            ApiKind::Grpc => "gRPC",
        }
    }
}

/// One client: one connection to the control plane's API and a sandbox on each
/// worker (index 0 inbound, 1 dial-out).
#[derive(Clone)]
enum Pair {
    Http([HttpExec; 2]),
    Grpc(Box<[GrpcExec; 2]>),
}

impl Pair {
    fn new(
        kind: ApiKind,
        control_plane: &ControlPlane,
        sandboxes: [&SandboxRef; 2],
    ) -> anyhow::Result<Self> {
        let api = &control_plane.api;
        Ok(match kind {
            ApiKind::Http => {
                let http = http_client()?;
                Pair::Http(sandboxes.map(|sandbox| HttpExec::new(http.clone(), api, sandbox)))
            }
            ApiKind::Grpc => {
                let grpc = grpc_client(&api.base_url)?;
                Pair::Grpc(Box::new(
                    sandboxes.map(|sandbox| GrpcExec::new(grpc.clone(), api, sandbox)),
                ))
            }
        })
    }

    /// One exec in the sandbox on worker `index`.
    async fn call(&self, index: usize) -> anyhow::Result<()> {
        match self {
            Pair::Http(each) => http_exec(each[index].clone()).await,
            Pair::Grpc(each) => grpc_exec(each[index].clone()).await,
        }
    }
}

/// What one interleaved run came to.
struct Interleaved {
    /// Index 0 inbound, 1 dial-out.
    loads: [RawLoad; 2],
    control_plane_ticks: u64,
    worker_ticks: [u64; 2],
    steal_percent: f64,
}

pub async fn run(bench: &Bench, section: &mut Section) -> anyhow::Result<()> {
    let result = run_section(bench, section).await;
    if let Err(err) = &result
        && section.targets.is_empty()
    {
        section.targets.push(TargetCheck::new(
            TARGET,
            format!("the section failed: {err:#}"),
            Verdict::NotMeasured,
        ));
    }
    result
}

async fn run_section(bench: &Bench, section: &mut Section) -> anyhow::Result<()> {
    let settings = &bench.settings;
    let heartbeat_interval = Duration::from_secs(2);
    section.setting("provider", settings.provider.clone());
    section.setting(
        "store",
        bench
            .control_plane_options("dialout", heartbeat_interval)
            .store_name(),
    );
    section.setting(
        "workers",
        "two on the same machine: one inbound (`listen: 127.0.0.1:0`, the control plane \
         dials it), one dial-out (no `listen`: it connects to the control plane's mesh \
         port with ALPN berth-dialout/1)",
    );
    section.setting(
        "placement",
        format!(
            "join tokens label the workers `{LABEL}=inbound` and `{LABEL}=dial-out`; every \
             sandbox is created with the matching constraint and its worker checked"
        ),
    );
    section.setting(
        "sandbox command",
        format!("`{}` (shell mode)", crate::exec::COMMAND),
    );
    section.setting("clients", join(&settings.concurrency));
    let window = interleaved_window(settings.exec_window);
    section.setting(
        "calls",
        "each client alternates between its sandbox on the inbound worker and its sandbox \
         on the dial-out worker, call by call (half the clients start with each), so both \
         workers' calls run under the same load at the same moments",
    );
    section.setting(
        "window per run",
        format!(
            "{} (each worker gets half the calls, so the measured time is twice section \
             1's)",
            describe_window(&window)
        ),
    );
    section.setting(
        "connections",
        "one per client, used for both workers' calls; HTTP/1.1 keep-alive, gRPC one \
         HTTP/2 connection per client",
    );
    section.setting(
        "steal",
        "the share of the machine's CPU time the hypervisor gave to other guests during \
         the run (`/proc/stat`); when it is high, absolute figures mean little",
    );

    let dir = bench.section_dir("dialout")?;
    let control_plane = bench
        .start_control_plane("dialout", &dir, heartbeat_interval)
        .await?;
    let sandboxes = settings.max_concurrency();
    let options = |reach: Reach| WorkerOptions {
        provider: settings.provider.clone(),
        max_sandboxes: u32::try_from(sandboxes).unwrap_or(u32::MAX) + 8,
        heartbeat_interval,
        id: None,
        docker: None,
        dial_out: reach == Reach::DialOut,
        labels: Some(json!({ LABEL: reach.label() })),
    };
    let mut workers = Vec::new();
    let mut result = Ok(());
    for (reach, name) in Reach::BOTH
        .into_iter()
        .zip(["worker-inbound", "worker-dialout"])
    {
        match Worker::start(&bench.berth, &dir, name, &control_plane, &options(reach)).await {
            Ok(worker) => workers.push(worker),
            Err(err) => {
                result = Err(err.context(format!("the {} worker did not start", reach.label())));
                break;
            }
        }
    }
    if let [inbound, dial_out] = workers.as_slice()
        && result.is_ok()
    {
        result = measure(
            bench,
            section,
            &control_plane,
            [inbound, dial_out],
            sandboxes,
        )
        .await;
    }
    for worker in workers {
        worker.stop().await;
    }
    control_plane.stop().await;
    result
}

/// Section 1's window with twice the measured time: each worker gets half the calls.
fn interleaved_window(window: Window) -> Window {
    Window {
        warmup: window.warmup,
        measure: window.measure * 2,
    }
}

async fn measure(
    bench: &Bench,
    section: &mut Section,
    control_plane: &ControlPlane,
    workers: [&Worker; 2],
    sandbox_count: usize,
) -> anyhow::Result<()> {
    let settings = &bench.settings;
    let api = &control_plane.api;
    for worker in workers {
        api.wait_worker_online(&worker.worker_id, Duration::from_secs(30))
            .await?;
    }
    let mut sandboxes: [Vec<SandboxRef>; 2] = Default::default();
    for (index, reach) in Reach::BOTH.into_iter().enumerate() {
        for _ in 0..sandbox_count {
            let sandbox =
                create_on(control_plane, &settings.provider, reach, workers[index]).await?;
            sandboxes[index].push(sandbox);
        }
    }

    let ticks = procstat::ticks_per_second();
    let mut table = Table::new(&[
        "API",
        "clients",
        "worker",
        "calls",
        "calls/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "errors",
        "worker CPU µs/call",
        "control plane CPU µs/call (both workers' calls)",
        "steal %",
    ]);
    let mut ratios = Table::new(&[
        "clients",
        "HTTP p50 dial-out / inbound",
        "gRPC p50 dial-out / inbound",
        "HTTP p99 dial-out / inbound",
        "gRPC p99 dial-out / inbound",
    ])
    .captioned("Dial-out over inbound (same run, calls interleaved):");
    // (clients, [HTTP [inbound, dial-out], gRPC [inbound, dial-out]])
    let mut judged: Vec<(usize, [[Summary; 2]; 2])> = Vec::new();
    let window = interleaved_window(settings.exec_window);
    let per_call = |cpu_ticks: u64, calls: usize| -> String {
        if calls == 0 || ticks == 0 {
            return "-".to_owned();
        }
        let seconds = cpu_ticks as f64 / ticks as f64;
        format!("{:.0}", seconds * 1e6 / calls as f64)
    };
    for &clients in &settings.concurrency {
        let mut by_api = [[Summary::default(); 2]; 2];
        for (api_index, kind) in ApiKind::BOTH.into_iter().enumerate() {
            let mut pairs = Vec::with_capacity(clients);
            for i in 0..clients {
                let mine = [0, 1].map(|w| &sandboxes[w][i % sandboxes[w].len()]);
                pairs.push(Pair::new(kind, control_plane, mine)?);
            }
            let run = interleave(control_plane, workers, pairs, window).await?;
            let all_calls = run.loads[0].succeeded + run.loads[1].succeeded;
            let control_plane_cpu = per_call(run.control_plane_ticks, all_calls);
            for (index, (reach, load)) in Reach::BOTH.into_iter().zip(run.loads).enumerate() {
                section.call_errors += load.errors;
                if let Some(err) = &load.first_error {
                    section.notes.push(format!(
                        "{} to the {} worker at {clients} clients: {err}",
                        kind.label(),
                        reach.label()
                    ));
                }
                let worker_cpu = per_call(run.worker_ticks[index], load.succeeded);
                let result = load.summarize(window.measure);
                let s = result.summary;
                table.row(vec![
                    kind.label().to_owned(),
                    clients.to_string(),
                    reach.label().to_owned(),
                    s.count.to_string(),
                    format!("{:.0}", s.per_second),
                    ms(s.p50),
                    ms(s.p90),
                    ms(s.p99),
                    ms(s.max),
                    result.errors.to_string(),
                    worker_cpu,
                    control_plane_cpu.clone(),
                    format!("{:.0}", run.steal_percent),
                ]);
                by_api[api_index][index] = s;
            }
        }
        let [[http_in, http_out], [grpc_in, grpc_out]] = by_api;
        ratios.row(vec![
            clients.to_string(),
            ratio(http_out.p50, http_in.p50),
            ratio(grpc_out.p50, grpc_in.p50),
            ratio(http_out.p99, http_in.p99),
            ratio(grpc_out.p99, grpc_in.p99),
        ]);
        if JUDGED_AT.contains(&clients) {
            judged.push((clients, by_api));
        }
    }
    section.tables.push(table);
    section.tables.push(ratios);
    section.targets.push(target(&judged));
    Ok(())
}

/// A sandbox on `worker`, placed there by its label. A dial-out worker is reachable
/// once its connection is registered, which can come a moment after its first
/// heartbeat: creating is retried for a while.
async fn create_on(
    control_plane: &ControlPlane,
    provider: &str,
    reach: Reach,
    worker: &Worker,
) -> anyhow::Result<SandboxRef> {
    let constraint = reach.constraint();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let sandbox = loop {
        match control_plane
            .api
            .create_sandbox_where(provider, &[constraint.as_str()])
            .await
        {
            Ok(sandbox) => break sandbox,
            Err(err) if tokio::time::Instant::now() >= deadline => {
                return Err(err.context(format!(
                    "no sandbox on the {} worker within 30s",
                    reach.label()
                )));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    ensure!(
        sandbox.worker_id == worker.worker_id,
        "a sandbox constrained to `{constraint}` went to worker {}, not {}",
        sandbox.worker_id,
        worker.worker_id
    );
    Ok(sandbox)
}

/// Runs `pairs` closed-loop for `window`, each client alternating between the two
/// workers call by call, and reads the processes' and the machine's CPU around it.
async fn interleave(
    control_plane: &ControlPlane,
    workers: [&Worker; 2],
    pairs: Vec<Pair>,
    window: Window,
) -> anyhow::Result<Interleaved> {
    let cp_before = procstat::sample(control_plane.pid)?;
    let workers_before = [
        procstat::sample(workers[0].pid)?,
        procstat::sample(workers[1].pid)?,
    ];
    let machine_before = MachineCpu::sample()?;
    let loads = interleaved_loop(pairs, window).await;
    let machine_after = MachineCpu::sample()?;
    let cp_after = procstat::sample(control_plane.pid)?;
    let mut worker_ticks = [0; 2];
    for (index, worker) in workers.into_iter().enumerate() {
        let after = procstat::sample(worker.pid)
            .with_context(|| format!("worker {} is gone", worker.worker_id))?;
        worker_ticks[index] = after
            .cpu_ticks
            .saturating_sub(workers_before[index].cpu_ticks);
    }
    Ok(Interleaved {
        loads,
        control_plane_ticks: cp_after.cpu_ticks.saturating_sub(cp_before.cpu_ticks),
        worker_ticks,
        steal_percent: machine_after.steal_percent_since(&machine_before),
    })
}

/// The closed loop of [`crate::load::closed_loop`], each client calling worker 0 and
/// worker 1 in turn (client `n` starting with worker `n % 2`), each call's latency
/// kept for its worker.
async fn interleaved_loop(pairs: Vec<Pair>, window: Window) -> [RawLoad; 2] {
    let start = Instant::now();
    let measure_from = start + window.warmup;
    let end = measure_from + window.measure;
    let mut tasks = JoinSet::new();
    for (n, pair) in pairs.into_iter().enumerate() {
        tasks.spawn(async move {
            let mut loads = [RawLoad::default(), RawLoad::default()];
            let mut index = n % 2;
            loop {
                let began = Instant::now();
                if began >= end {
                    break;
                }
                let load = &mut loads[index];
                match pair.call(index).await {
                    Ok(()) => {
                        load.succeeded += 1;
                        if began >= measure_from {
                            load.samples.record(began.elapsed());
                        }
                    }
                    Err(err) => {
                        load.errors += 1;
                        load.first_error.get_or_insert_with(|| format!("{err:#}"));
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                index = 1 - index;
            }
            loads
        });
    }
    let mut all = [RawLoad::default(), RawLoad::default()];
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok([inbound, dial_out]) => {
                all[0].merge(inbound);
                all[1].merge(dial_out);
            }
            Err(err) => {
                all[0].errors += 1;
                all[0]
                    .first_error
                    .get_or_insert_with(|| format!("client task failed: {err}"));
            }
        }
    }
    all
}

/// The target, judged on p50 at the client counts of [`JUDGED_AT`] that ran.
fn target(judged: &[(usize, [[Summary; 2]; 2])]) -> TargetCheck {
    if judged.is_empty() {
        return TargetCheck::new(
            TARGET,
            format!("not run at {} clients", join(&JUDGED_AT)),
            Verdict::NotMeasured,
        );
    }
    let mut met = true;
    let mut parts = Vec::new();
    for (clients, [http, grpc]) in judged {
        let p50 = [
            times(http[1].p50, http[0].p50),
            times(grpc[1].p50, grpc[0].p50),
        ];
        let p99 = [
            times(http[1].p99, http[0].p99),
            times(grpc[1].p99, grpc[0].p99),
        ];
        met &= p50.iter().all(|r| *r <= LIMIT);
        parts.push(format!(
            "{clients} clients: p50 HTTP {:.2}×, gRPC {:.2}× (p99 {:.2}×, {:.2}×)",
            p50[0], p50[1], p99[0], p99[1]
        ));
    }
    TargetCheck::new(TARGET, parts.join("; "), Verdict::from_bool(met))
}

fn ratio(a: Duration, b: Duration) -> String {
    format!("{:.2}×", times(a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(p50_us: u64, p99_us: u64) -> Summary {
        Summary {
            count: 10,
            per_second: 1.0,
            p50: Duration::from_micros(p50_us),
            p90: Duration::from_micros(p99_us),
            p99: Duration::from_micros(p99_us),
            max: Duration::from_micros(p99_us),
        }
    }

    #[test]
    fn the_target_judges_p50_at_one_and_eight_clients() {
        let even = [summary(500, 900), summary(520, 1_500)];
        let check = target(&[(1, [even, even]), (8, [even, even])]);
        assert_eq!(check.verdict, Verdict::Met, "{}", check.measured);
        assert!(
            check.measured.contains("8 clients: p50 HTTP 1.04×"),
            "{}",
            check.measured
        );
        assert!(
            check.measured.contains("(p99 1.67×, 1.67×)"),
            "{}",
            check.measured
        );
        let slow = [summary(500, 900), summary(600, 900)];
        let check = target(&[(1, [even, even]), (8, [even, slow])]);
        assert_eq!(check.verdict, Verdict::Missed);
        assert_eq!(target(&[]).verdict, Verdict::NotMeasured);
    }

    #[test]
    fn the_window_doubles_and_placement_uses_the_label() {
        let window = interleaved_window(Window {
            warmup: Duration::from_secs(1),
            measure: Duration::from_secs(5),
        });
        assert_eq!(window.warmup, Duration::from_secs(1));
        assert_eq!(window.measure, Duration::from_secs(10));
        assert_eq!(Reach::DialOut.constraint(), "bench-reach=dial-out");
        assert_eq!(Reach::Inbound.constraint(), "bench-reach=inbound");
    }
}
