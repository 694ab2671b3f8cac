//! Prometheus metrics of the control plane, served at `/metrics` on the API port.
//! Counters and histograms move as things happen; fleet gauges (workers by status,
//! sandboxes by state and worker, leases, certificate expiry, provider health) are
//! read from the store at scrape time, so every replica reports the same fleet.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::clock::now_secs;
use crate::fleet::{ProviderStatus, WorkerView};
use crate::store::{Store, StoreError};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// http | grpc
    pub protocol: String,
    /// The route template or gRPC method.
    pub route: String,
    /// HTTP status, or the gRPC status code.
    pub code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub protocol: String,
    pub route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MeshLabels {
    pub method: String,
    /// The gRPC status code name answered.
    pub code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MeshMethodLabels {
    pub method: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SandboxLabels {
    state: String,
    worker: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    worker: String,
}

impl WorkerLabels {
    fn of(worker_id: &str) -> Self {
        Self {
            worker: worker_id.to_owned(),
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    worker: String,
    provider: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

fn latency_histogram() -> Histogram {
    // 0.5ms .. ~16s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub enrollments: Family<OutcomeLabels, Counter>,
    pub mesh_requests: Family<MeshLabels, Counter>,
    pub mesh_request_duration: Family<MeshMethodLabels, Histogram, fn() -> Histogram>,
    pub heartbeats: Family<OutcomeLabels, Counter>,
    pub heartbeat_lag: Histogram,
    pub lease_renewals: Counter,
    pub certificate_renewals: Family<OutcomeLabels, Counter>,
    workers: Family<StatusLabels, Gauge>,
    sandboxes: Family<SandboxLabels, Gauge>,
    leases: Gauge,
    worker_certificate_expiry_days: Family<WorkerLabels, FloatGauge>,
    ca_expiry_days: FloatGauge,
    provider_healthy: Family<ProviderLabels, Gauge>,
    drain_remaining: Family<WorkerLabels, Gauge>,
    dialout_connections: Family<WorkerLabels, Gauge>,
    dialout_reconnects: Family<WorkerLabels, Counter>,
    dialout_rtt: Family<WorkerLabels, FloatGauge>,
    dialout_rtt_all: Histogram,
    /// Dial-out connections the mesh's admission budget turned away.
    pub dialout_turned_away: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("berth");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "api_requests",
            "Public API calls by route and status",
            requests.clone(),
        );
        let request_duration =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            );
        registry.register(
            "api_request_duration_seconds",
            "Public API latency until the response head",
            request_duration.clone(),
        );
        let mesh_requests = Family::<MeshLabels, Counter>::default();
        registry.register(
            "mesh_requests",
            "Worker calls on the mesh port by method and gRPC code",
            mesh_requests.clone(),
        );
        let mesh_request_duration =
            Family::<MeshMethodLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            );
        registry.register(
            "mesh_request_duration_seconds",
            "Latency of worker calls on the mesh port",
            mesh_request_duration.clone(),
        );
        let enrollments = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "enrollments",
            "Worker enrollments by outcome",
            enrollments.clone(),
        );
        let heartbeats = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "heartbeats",
            "Worker heartbeats by outcome",
            heartbeats.clone(),
        );
        let heartbeat_lag = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "heartbeat_lag_seconds",
            "Time from a worker sending a heartbeat to the control plane recording it",
            heartbeat_lag.clone(),
        );
        let lease_renewals = Counter::default();
        registry.register(
            "lease_renewals",
            "Sandbox leases renewed by heartbeats",
            lease_renewals.clone(),
        );
        let certificate_renewals = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "certificate_renewals",
            "Worker certificate renewals by outcome",
            certificate_renewals.clone(),
        );
        let workers = Family::<StatusLabels, Gauge>::default();
        registry.register("workers", "Workers by status", workers.clone());
        let sandboxes = Family::<SandboxLabels, Gauge>::default();
        registry.register(
            "sandboxes",
            "Sandboxes that are not destroyed, by state and worker",
            sandboxes.clone(),
        );
        let leases = Gauge::default();
        registry.register("leases", "Live sandbox leases", leases.clone());
        let worker_certificate_expiry_days = Family::<WorkerLabels, FloatGauge>::default();
        registry.register(
            "worker_certificate_expiry_days",
            "Days until each worker's current certificate expires",
            worker_certificate_expiry_days.clone(),
        );
        let ca_expiry_days = FloatGauge::default();
        registry.register(
            "ca_expiry_days",
            "Days until the CA certificate expires",
            ca_expiry_days.clone(),
        );
        let provider_healthy = Family::<ProviderLabels, Gauge>::default();
        registry.register(
            "provider_healthy",
            "1 when an online worker reports the provider healthy",
            provider_healthy.clone(),
        );
        let drain_remaining = Family::<WorkerLabels, Gauge>::default();
        registry.register(
            "drain_remaining_sandboxes",
            "Sandboxes a draining worker still holds, as its last heartbeat reported",
            drain_remaining.clone(),
        );
        let dialout_connections = Family::<WorkerLabels, Gauge>::default();
        registry.register(
            "dialout_connections",
            "Connections each dial-out worker holds open to this control plane",
            dialout_connections.clone(),
        );
        let dialout_reconnects = Family::<WorkerLabels, Counter>::default();
        registry.register(
            "dialout_reconnects",
            "Dial-out connections a worker opened again after its first to this control plane",
            dialout_reconnects.clone(),
        );
        let dialout_rtt = Family::<WorkerLabels, FloatGauge>::default();
        registry.register(
            "dialout_rtt_seconds",
            "Round trip of the last probe over each dial-out worker's connection",
            dialout_rtt.clone(),
        );
        let dialout_rtt_all = latency_histogram();
        registry.register(
            "dialout_probe_rtt_seconds",
            "Round trips of the probes over dial-out connections",
            dialout_rtt_all.clone(),
        );
        let dialout_turned_away = Counter::default();
        registry.register(
            "dialout_turned_away",
            "Dial-out connections turned away by the heartbeat budget (the worker dials again later)",
            dialout_turned_away.clone(),
        );
        Self {
            registry: Arc::new(registry),
            requests,
            request_duration,
            enrollments,
            mesh_requests,
            mesh_request_duration,
            heartbeats,
            heartbeat_lag,
            lease_renewals,
            certificate_renewals,
            workers,
            sandboxes,
            leases,
            worker_certificate_expiry_days,
            ca_expiry_days,
            provider_healthy,
            drain_remaining,
            dialout_connections,
            dialout_reconnects,
            dialout_rtt,
            dialout_rtt_all,
            dialout_turned_away,
        }
    }

    /// The open dial-out connections of `worker_id`.
    pub fn dialout_connections(&self, worker_id: &str) -> Gauge {
        self.dialout_connections
            .get_or_create(&WorkerLabels::of(worker_id))
            .clone()
    }

    /// The reconnects of dial-out worker `worker_id`.
    pub fn dialout_reconnects(&self, worker_id: &str) -> Counter {
        self.dialout_reconnects
            .get_or_create(&WorkerLabels::of(worker_id))
            .clone()
    }

    /// Records one probe's round trip over a dial-out connection.
    pub fn observe_dialout_rtt(&self, worker_id: &str, rtt: std::time::Duration) {
        self.dialout_rtt
            .get_or_create(&WorkerLabels::of(worker_id))
            .set(rtt.as_secs_f64());
        self.dialout_rtt_all.observe(rtt.as_secs_f64());
    }

    /// Counts one mesh call and its latency.
    pub fn observe_mesh<T>(
        &self,
        method: &str,
        started: std::time::Instant,
        result: &Result<T, tonic::Status>,
    ) {
        let code = match result {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        };
        self.mesh_requests
            .get_or_create(&MeshLabels {
                method: method.to_owned(),
                code: format!("{code:?}"),
            })
            .inc();
        self.mesh_request_duration
            .get_or_create(&MeshMethodLabels {
                method: method.to_owned(),
            })
            .observe(started.elapsed().as_secs_f64());
    }

    /// The text exposition, with fleet gauges read from the store now.
    pub async fn render(
        &self,
        store: &Store,
        workers: &[WorkerView],
        ca_not_after: i64,
    ) -> Result<String, StoreError> {
        self.refresh(store, workers, ca_not_after).await?;
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).map_err(|_| {
            StoreError::Database(sqlx::Error::Protocol("metrics encoding failed".into()))
        })?;
        Ok(text)
    }

    async fn refresh(
        &self,
        store: &Store,
        workers: &[WorkerView],
        ca_not_after: i64,
    ) -> Result<(), StoreError> {
        let now = now_secs();
        let days = |at: i64| (at - now) as f64 / 86_400.0;
        self.workers.clear();
        for status in ["online", "draining", "unhealthy", "offline", "revoked"] {
            self.workers
                .get_or_create(&StatusLabels {
                    status: status.into(),
                })
                .set(0);
        }
        self.worker_certificate_expiry_days.clear();
        self.provider_healthy.clear();
        self.drain_remaining.clear();
        for worker in workers {
            if worker.drain.state == "draining" {
                self.drain_remaining
                    .get_or_create(&WorkerLabels {
                        worker: worker.id.clone(),
                    })
                    .set(worker.drain.remaining);
            }
            self.workers
                .get_or_create(&StatusLabels {
                    status: worker.status.as_str().into(),
                })
                .inc();
            self.worker_certificate_expiry_days
                .get_or_create(&WorkerLabels {
                    worker: worker.id.clone(),
                })
                .set(days(worker.certificate.expires_at_unix));
            let providers: &[ProviderStatus] = &worker.capabilities;
            for provider in providers {
                self.provider_healthy
                    .get_or_create(&ProviderLabels {
                        worker: worker.id.clone(),
                        provider: provider.name.clone(),
                    })
                    .set(i64::from(
                        provider.healthy && worker.status.as_str() == "online",
                    ));
            }
        }
        self.sandboxes.clear();
        let mut leases = 0;
        for sandbox in store.list_sandboxes().await? {
            if sandbox.generation.is_some() {
                leases += 1;
            }
            self.sandboxes
                .get_or_create(&SandboxLabels {
                    state: sandbox.state.to_string(),
                    worker: sandbox.worker_id.unwrap_or_default(),
                })
                .inc();
        }
        self.leases.set(leases);
        self.ca_expiry_days.set(days(ca_not_after));
        Ok(())
    }
}
