//! Simulated workers: light, many per process, each a real mesh identity. Every one is
//! enrolled through the real `Enroll` RPC (its own P-256 key and CSR, a join token good
//! for many uses) and then heartbeats over its own mTLS connection, at the interval
//! with the real workers' ±20% jitter and back-off. They offer a provider named `sim`
//! with no capacity, so the scheduler never places a sandbox on them.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, ensure};
use berth_pki::transport::{DialOptions, mesh_channel};
use berth_pki::{ReloadableIdentity, SpiffeId, generate_key_and_csr};
use berth_proto::v1 as pb;
use berth_proto::v1::control_plane_client::ControlPlaneClient;
use rand::Rng;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::api::Api;
use crate::latency::Samples;

/// Most uses one join token may carry (the control plane's limit).
const TOKEN_USES: usize = 10_000;
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_RETRY: Duration = Duration::from_millis(250);

/// Heartbeat outcomes since the last [`SimulatedFleet::take_window`].
#[derive(Debug, Default)]
struct Counters {
    ok: AtomicU64,
    failed: AtomicU64,
    latencies: Mutex<Samples>,
    first_error: Mutex<Option<String>>,
}

/// What the simulated workers saw during one window.
#[derive(Debug)]
pub struct WindowStats {
    pub ok: u64,
    pub failed: u64,
    pub latencies: Samples,
    pub first_error: Option<String>,
}

pub struct SimulatedFleet {
    mesh_url: String,
    interval: Duration,
    ids: HashSet<String>,
    /// Successful heartbeats of each worker, ever.
    heartbeats: Vec<Arc<AtomicU64>>,
    counters: Arc<Counters>,
    tasks: JoinSet<()>,
}

impl SimulatedFleet {
    pub fn new(mesh_url: &str, interval: Duration) -> Self {
        Self {
            mesh_url: mesh_url.to_owned(),
            interval,
            ids: HashSet::new(),
            heartbeats: Vec::new(),
            counters: Arc::new(Counters::default()),
            tasks: JoinSet::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn contains(&self, worker_id: &str) -> bool {
        self.ids.contains(worker_id)
    }

    /// Enrolls workers until there are `total`, `concurrency` enrollments at a time,
    /// and starts their heartbeats.
    pub async fn grow(
        &mut self,
        api: &Api,
        total: usize,
        concurrency: usize,
    ) -> anyhow::Result<()> {
        while self.ids.len() < total {
            let batch = (total - self.ids.len()).min(TOKEN_USES);
            let token = api
                .create_join_token(u32::try_from(batch).unwrap_or(u32::MAX), None)
                .await?;
            let enrolled = self.enroll_batch(&token, batch, concurrency).await?;
            for worker in enrolled {
                self.start_heartbeats(worker)?;
            }
        }
        Ok(())
    }

    async fn enroll_batch(
        &self,
        token: &str,
        count: usize,
        concurrency: usize,
    ) -> anyhow::Result<Vec<Enrolled>> {
        let claims = berth_pki::peek_join_claims(token)?;
        let (tls, _) = berth_pki::bootstrap_client_config(&claims.ca_sha256)?;
        let channel = mesh_channel(&self.mesh_url, Arc::new(tls), DialOptions::default())?;
        let anonymous = ControlPlaneClient::new(channel);
        let first = self.ids.len();
        let next = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        for _ in 0..concurrency.max(1) {
            let (anonymous, next, token) = (anonymous.clone(), next.clone(), token.to_owned());
            tasks.spawn(async move {
                let mut enrolled = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst) as usize;
                    if n >= count {
                        return Ok::<_, anyhow::Error>(enrolled);
                    }
                    let id = format!("sim-{:05}", first + n);
                    enrolled.push(enroll(anonymous.clone(), &token, &id).await?);
                }
            });
        }
        let mut all = Vec::with_capacity(count);
        while let Some(joined) = tasks.join_next().await {
            all.extend(joined.context("an enrollment task panicked")??);
        }
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all)
    }

    fn start_heartbeats(&mut self, worker: Enrolled) -> anyhow::Result<()> {
        let identity = Arc::new(ReloadableIdentity::from_pem(
            &worker.cert_pem,
            &worker.key_pem,
        )?);
        let tls = berth_pki::mesh_client_config(
            &worker.ca_der,
            SpiffeId::control_plane(&worker.trust_domain),
            Some(identity),
        )?;
        let channel = mesh_channel(&self.mesh_url, Arc::new(tls), DialOptions::default())?;
        let client = ControlPlaneClient::new(channel);
        let beats = Arc::new(AtomicU64::new(0));
        let request = heartbeat_request(&worker.id);
        self.ids.insert(worker.id);
        self.heartbeats.push(beats.clone());
        let counters = self.counters.clone();
        let interval = self.interval;
        self.tasks
            .spawn(heartbeat_loop(client, request, interval, counters, beats));
        Ok(())
    }

    /// Waits until every worker had at least one heartbeat accepted.
    pub async fn wait_all_heartbeated(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let silent = self
                .heartbeats
                .iter()
                .filter(|beats| beats.load(Ordering::SeqCst) == 0)
                .count();
            if silent == 0 {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "{silent} of {} simulated workers had no heartbeat accepted within {timeout:?} (first error: {})",
                self.ids.len(),
                self.counters
                    .first_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
                    .unwrap_or_else(|| "none".into())
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What happened since the last call, starting a new window.
    pub fn take_window(&self) -> WindowStats {
        let counters = &self.counters;
        WindowStats {
            ok: counters.ok.swap(0, Ordering::SeqCst),
            failed: counters.failed.swap(0, Ordering::SeqCst),
            latencies: std::mem::take(
                &mut *counters.latencies.lock().unwrap_or_else(|e| e.into_inner()),
            ),
            first_error: counters
                .first_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        }
    }

    /// Stops every heartbeat loop and closes the connections.
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
    }
}

struct Enrolled {
    id: String,
    trust_domain: String,
    cert_pem: String,
    key_pem: String,
    ca_der: Vec<u8>,
}

async fn enroll(
    mut client: ControlPlaneClient<Channel>,
    token: &str,
    id: &str,
) -> anyhow::Result<Enrolled> {
    let key = generate_key_and_csr(id)?;
    let mut request = tonic::Request::new(pb::EnrollRequest {
        credential: Some(pb::enroll_request::Credential::JoinToken(token.to_owned())),
        worker_id: id.to_owned(),
        csr_pem: key.csr_pem,
        info: Some(worker_info()),
    });
    request.set_timeout(Duration::from_secs(60));
    let granted = client
        .enroll(request)
        .await
        .with_context(|| format!("enrolling {id}"))?
        .into_inner();
    ensure!(
        granted.worker_id == id,
        "asked for {id}, got {}",
        granted.worker_id
    );
    let ca_der = CertificateDer::from_pem_slice(granted.ca_pem.as_bytes())
        .context("the granted CA is not PEM")?
        .to_vec();
    Ok(Enrolled {
        id: granted.worker_id,
        trust_domain: granted.trust_domain,
        cert_pem: granted.certificate_pem,
        key_pem: key.key_pem,
        ca_der,
    })
}

fn worker_info() -> pb::WorkerInfo {
    pb::WorkerInfo {
        hostname: "berth-bench".to_owned(),
        // never dialed: the `sim` provider has no capacity, so nothing is placed here
        advertise_addr: "127.0.0.1:9".to_owned(),
        providers: vec![pb::ProviderHealth {
            name: "sim".to_owned(),
            healthy: true,
            message: String::new(),
        }],
        capacity: Some(pb::Capacity {
            max_sandboxes: 0,
            vcpus: 1,
            memory_mb: 64,
        }),
        version: "bench".to_owned(),
    }
}

fn heartbeat_request(id: &str) -> pb::HeartbeatRequest {
    pb::HeartbeatRequest {
        worker_id: id.to_owned(),
        state: pb::WorkerState::Ready as i32,
        info: Some(worker_info()),
        sandboxes: Vec::new(),
        sent_at_ms: 0,
    }
}

/// Heartbeats for ever (until aborted): first at a random point of the first interval
/// so the fleet is spread out, then every interval ±20%; after a failure, retries
/// from 250ms doubling up to the interval, as `berth worker` does.
async fn heartbeat_loop(
    mut client: ControlPlaneClient<Channel>,
    template: pb::HeartbeatRequest,
    interval: Duration,
    counters: Arc<Counters>,
    beats: Arc<AtomicU64>,
) {
    let offset = interval.mul_f64(rand::rng().random_range(0.0..1.0));
    tokio::time::sleep(offset).await;
    let mut failures = 0u32;
    loop {
        let mut message = template.clone();
        message.sent_at_ms = now_ms();
        let mut request = tonic::Request::new(message);
        request.set_timeout(CALL_TIMEOUT);
        let began = Instant::now();
        match client.heartbeat(request).await {
            Ok(_) => {
                let latency = began.elapsed();
                counters.ok.fetch_add(1, Ordering::SeqCst);
                counters
                    .latencies
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .record(latency);
                beats.fetch_add(1, Ordering::SeqCst);
                failures = 0;
            }
            Err(status) => {
                counters.failed.fetch_add(1, Ordering::SeqCst);
                counters
                    .first_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert_with(|| format!("{}: {}", template.worker_id, status.message()));
                failures += 1;
            }
        }
        let base = if failures == 0 {
            interval
        } else {
            FIRST_RETRY
                .saturating_mul(1 << failures.min(16))
                .min(interval)
        };
        let delay = base.mul_f64(rand::rng().random_range(0.8..1.2));
        tokio::time::sleep(delay).await;
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
