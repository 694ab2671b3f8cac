//! Prometheus metrics of a worker, served on its own `metrics_listen` address (plain
//! HTTP; bind it where only the scraper reaches). Sandbox count, provider health,
//! certificate expiry and whether the worker drains are read at scrape time; counters
//! move as calls happen.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::clock::now_secs;
use crate::runtime::Runtime;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

#[derive(Debug, Clone)]
pub struct WorkerMetrics {
    registry: Arc<Registry>,
    pub spawns: Family<OutcomeLabels, Counter>,
    pub destroys: Family<OutcomeLabels, Counter>,
    pub execs: Family<OutcomeLabels, Counter>,
    /// Interactive sessions started, by outcome.
    pub sessions_started: Family<OutcomeLabels, Counter>,
    /// Port streams opened (a connection into a sandbox), by outcome.
    pub ports_opened: Family<OutcomeLabels, Counter>,
    /// Port streams open now.
    pub ports_open: Gauge,
    pub fence_refusals: Counter,
    pub heartbeat_failures: Counter,
    pub certificate_renewals: Family<OutcomeLabels, Counter>,
    sandboxes: Gauge,
    sessions: Gauge,
    provider_healthy: Family<ProviderLabels, Gauge>,
    certificate_expiry_days: Gauge<f64, AtomicU64>,
    draining: Gauge,
    /// Open dial-out connections, by control plane.
    pub dialout_connections: Family<ControlPlaneLabels, Gauge>,
    /// Dial-out connections opened after the first, by control plane.
    pub dialout_reconnects: Family<ControlPlaneLabels, Counter>,
    /// Dial-out attempts that failed, by control plane.
    pub dialout_failures: Family<ControlPlaneLabels, Counter>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControlPlaneLabels {
    pub control_plane: String,
}

impl ControlPlaneLabels {
    pub fn of(url: &str) -> Self {
        Self {
            control_plane: url.to_owned(),
        }
    }
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl WorkerMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("berth_worker");
        let spawns = Family::<OutcomeLabels, Counter>::default();
        registry.register("spawns", "Sandboxes spawned, by outcome", spawns.clone());
        let destroys = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "destroys",
            "Sandboxes destroyed, by outcome",
            destroys.clone(),
        );
        let execs = Family::<OutcomeLabels, Counter>::default();
        registry.register("execs", "Commands run, by outcome", execs.clone());
        let sessions_started = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "sessions_started",
            "Interactive sessions started, by outcome",
            sessions_started.clone(),
        );
        let ports_opened = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "ports_opened",
            "Connections opened to ports inside sandboxes, by outcome",
            ports_opened.clone(),
        );
        let ports_open = Gauge::default();
        registry.register(
            "ports_open",
            "Port streams open now (connections into sandboxes)",
            ports_open.clone(),
        );
        let fence_refusals = Counter::default();
        registry.register(
            "fence_refusals",
            "Calls refused for a stale or missing lease generation",
            fence_refusals.clone(),
        );
        let heartbeat_failures = Counter::default();
        registry.register(
            "heartbeat_failures",
            "Heartbeats that failed",
            heartbeat_failures.clone(),
        );
        let certificate_renewals = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "certificate_renewals",
            "Certificate renewals, by outcome",
            certificate_renewals.clone(),
        );
        let sandboxes = Gauge::default();
        registry.register(
            "sandboxes",
            "Sandboxes the provider holds",
            sandboxes.clone(),
        );
        let sessions = Gauge::default();
        registry.register(
            "sessions",
            "Interactive sessions held (running, or ended and kept for a client)",
            sessions.clone(),
        );
        let provider_healthy = Family::<ProviderLabels, Gauge>::default();
        registry.register(
            "provider_healthy",
            "1 when the provider is healthy",
            provider_healthy.clone(),
        );
        let certificate_expiry_days = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "certificate_expiry_days",
            "Days until the worker's certificate expires",
            certificate_expiry_days.clone(),
        );
        let draining = Gauge::default();
        registry.register(
            "draining",
            "1 while the worker drains, on its own account or the control plane's",
            draining.clone(),
        );
        let dialout_connections = Family::<ControlPlaneLabels, Gauge>::default();
        registry.register(
            "dialout_connections",
            "Open dial-out connections to each control plane",
            dialout_connections.clone(),
        );
        let dialout_reconnects = Family::<ControlPlaneLabels, Counter>::default();
        registry.register(
            "dialout_reconnects",
            "Dial-out connections opened again after the first, by control plane",
            dialout_reconnects.clone(),
        );
        let dialout_failures = Family::<ControlPlaneLabels, Counter>::default();
        registry.register(
            "dialout_failures",
            "Dial-out attempts that failed, by control plane",
            dialout_failures.clone(),
        );
        Self {
            registry: Arc::new(registry),
            spawns,
            destroys,
            execs,
            sessions_started,
            ports_opened,
            ports_open,
            fence_refusals,
            heartbeat_failures,
            certificate_renewals,
            sandboxes,
            sessions,
            provider_healthy,
            certificate_expiry_days,
            draining,
            dialout_connections,
            dialout_reconnects,
            dialout_failures,
        }
    }

    pub fn count(family: &Family<OutcomeLabels, Counter>, outcome: &str) {
        family
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    async fn render(&self, runtime: &Runtime) -> String {
        let provider = &runtime.provider;
        if let Ok(list) = provider.list().await {
            self.sandboxes
                .set(i64::try_from(list.len()).unwrap_or(i64::MAX));
        }
        self.sessions
            .set(i64::try_from(runtime.sessions.count()).unwrap_or(i64::MAX));
        let health = provider.health().await;
        self.provider_healthy
            .get_or_create(&ProviderLabels {
                provider: provider.name().to_owned(),
            })
            .set(i64::from(health.healthy));
        if let Ok(info) = berth_pki::cert_info(&runtime.identity.current_leaf_der()) {
            self.certificate_expiry_days
                .set((info.not_after - now_secs()) as f64 / 86_400.0);
        }
        self.draining.set(i64::from(runtime.drain.is_draining()));
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown`.
pub(crate) async fn serve(
    listener: TcpListener,
    runtime: Arc<Runtime>,
    shutdown: CancellationToken,
) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let runtime = runtime.clone();
            async move {
                let text = runtime.metrics.render(&runtime).await;
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    text,
                )
            }
        }),
    );
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    if let Err(err) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::error!(?addr, error = %err, "metrics server stopped");
    }
}
