//! Section 7: a bounded soak of the relay. Clients run the life of a sandbox back to
//! back through the control plane's HTTP API for minutes: create, a whole exec, an
//! exec stream abandoned after its first line, a 100 KB file written and read back,
//! destroy. Each abandoned stream is a worker call the control plane cancels on the
//! client's behalf; before the mesh remembered enough of them, a few minutes of this
//! closed the control plane's connection to the worker with
//! `GOAWAY(ENHANCE_YOUR_CALM)` and failed the calls in flight with bare 500s. The
//! target: every call of every cycle succeeds.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::clients::http_client;
use crate::fleet::{ControlPlane, WorkerOptions};
use crate::report::{Section, Table, TargetCheck, Verdict};
use crate::run::Bench;

const TARGET: &str = "soak: no failed call, no 5xx, the mesh connection never closed";
/// The file each cycle writes and reads back.
const FILE_BYTES: usize = 100 * 1000;

pub async fn run(bench: &Bench, section: &mut Section) -> anyhow::Result<()> {
    let settings = &bench.settings;
    section.setting("clients", settings.soak_clients.to_string());
    section.setting(
        "duration",
        humantime::format_duration(settings.soak_duration).to_string(),
    );
    section.setting(
        "cycle",
        "create, exec, exec stream abandoned after its first line, 100 KB file written \
         and read back, destroy (HTTP API, mock provider)",
    );
    let fleet = bench
        .start_fleet(
            "soak",
            &WorkerOptions {
                provider: "mock".to_owned(),
                max_sandboxes: u32::try_from(settings.soak_clients * 2).unwrap_or(u32::MAX),
                heartbeat_interval: Duration::from_secs(2),
                id: None,
                docker: None,
                dial_out: false,
                labels: None,
            },
        )
        .await?;
    let result = async {
        fleet
            .control_plane
            .api
            .wait_worker_online(&fleet.worker.worker_id, Duration::from_secs(30))
            .await?;
        soak(bench, section, &fleet.control_plane).await
    }
    .await;
    fleet.stop().await;
    result
}

/// What the clients did.
#[derive(Debug, Default)]
struct Tally {
    cycles: AtomicUsize,
    failures: AtomicUsize,
    server_errors: AtomicUsize,
    /// The first few failures, as they were reported.
    failures_seen: std::sync::Mutex<Vec<String>>,
}

/// Failures quoted in the report.
const QUOTED_FAILURES: usize = 5;

impl Tally {
    fn fail(&self, err: &anyhow::Error) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if format!("{err:#}").contains("answered 5") {
            self.server_errors.fetch_add(1, Ordering::Relaxed);
        }
        let mut seen = self.failures_seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() < QUOTED_FAILURES {
            seen.push(format!("{err:#}"));
        }
    }
}

async fn soak(bench: &Bench, section: &mut Section, cp: &ControlPlane) -> anyhow::Result<()> {
    let settings = &bench.settings;
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let until = started + settings.soak_duration;
    let mut clients = JoinSet::new();
    for _ in 0..settings.soak_clients {
        let client = Client {
            http: http_client()?,
            base: format!("{}/api/v1", cp.api.base_url),
            key: cp.api.key.clone(),
        };
        let tally = tally.clone();
        clients.spawn(async move {
            while Instant::now() < until {
                match client.cycle().await {
                    Ok(()) => tally.cycles.fetch_add(1, Ordering::Relaxed),
                    Err(err) => {
                        tally.fail(&err);
                        // a failing fleet is not hammered in a tight loop
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        0
                    }
                };
            }
        });
    }
    while clients.join_next().await.is_some() {}
    let elapsed = started.elapsed();
    let cycles = tally.cycles.load(Ordering::Relaxed);
    let failures = tally.failures.load(Ordering::Relaxed);
    let server_errors = tally.server_errors.load(Ordering::Relaxed);
    let goaways = cp.log_mentions(&["GOAWAY", "too_many_internal_resets", "ENHANCE_YOUR_CALM"])?;

    let mut table = Table::new(&[
        "cycles",
        "cycles/s",
        "failed cycles",
        "5xx",
        "GOAWAY in the log",
    ]);
    table.row(vec![
        cycles.to_string(),
        format!("{:.1}", cycles as f64 / elapsed.as_secs_f64().max(1e-9)),
        failures.to_string(),
        server_errors.to_string(),
        goaways.to_string(),
    ]);
    section.tables.push(table);
    for failure in tally
        .failures_seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain(..)
    {
        section.notes.push(format!("failure: {failure}"));
    }
    section.call_errors += failures;
    let met = failures == 0 && goaways == 0 && cycles > 0;
    section.targets.push(TargetCheck::new(
        TARGET,
        format!(
            "{cycles} cycles in {:.0} s, {failures} failed, {server_errors} 5xx, {goaways} GOAWAY lines",
            elapsed.as_secs_f64()
        ),
        Verdict::from_bool(met),
    ));
    Ok(())
}

/// One soak client: its own HTTP connection pool.
struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Client {
    async fn call(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<reqwest::Response> {
        let response = request
            .header("X-API-Key", &self.key)
            .send()
            .await
            .with_context(|| format!("{what}: no answer"))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            bail!("{what} answered {}: {body}", status.as_u16());
        }
        Ok(response)
    }

    async fn cycle(&self) -> anyhow::Result<()> {
        let created: Value = self
            .call(
                "create",
                self.http
                    .post(format!("{}/sandboxes", self.base))
                    .json(&json!({"provider": "mock", "ttl": "10m"})),
            )
            .await?
            .json()
            .await?;
        let id = created["id"].as_str().context("no sandbox id")?.to_owned();
        let result = self.use_sandbox(&id).await;
        let destroyed = self
            .call(
                "destroy",
                self.http.delete(format!("{}/sandboxes/{id}", self.base)),
            )
            .await;
        result.and(destroyed.map(|_| ()))
    }

    async fn use_sandbox(&self, id: &str) -> anyhow::Result<()> {
        let exec = format!("{}/sandboxes/{id}/exec", self.base);
        let answer: Value = self
            .call(
                "exec",
                self.http.post(&exec).json(&json!({"command": "echo soak"})),
            )
            .await?
            .json()
            .await?;
        ensure!(answer["stdout"] == "soak\n", "exec answered {answer}");

        // a stream of plenty of output, left after its first chunk
        let stream = self
            .call(
                "exec stream",
                self.http.post(&exec).json(&json!({
                    "command": "generate --lines 100000 --delay-ms 1",
                    "stream": true,
                })),
            )
            .await?;
        let mut body = stream.bytes_stream();
        body.next()
            .await
            .context("the stream ended before its first line")??;
        drop(body);

        let file = format!(
            "{}/sandboxes/{id}/files?path=/workspace/soak.bin",
            self.base
        );
        let data: Vec<u8> = (0..FILE_BYTES).map(|i| (i % 251) as u8).collect();
        self.call("write file", self.http.put(&file).body(data.clone()))
            .await?;
        let back = self
            .call("read file", self.http.get(&file))
            .await?
            .bytes()
            .await?;
        ensure!(
            back.as_ref() == data.as_slice(),
            "the file came back different"
        );
        Ok(())
    }
}
