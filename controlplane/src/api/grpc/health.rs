//! `grpc.health.v1.Health` on the API port (no key needed, like `/api/v1/health`):
//! the server ("") and each of Berth's services are `SERVING` exactly when
//! `/api/v1/ready` answers 200 (an online worker offers a healthy provider),
//! `NOT_SERVING` otherwise. [`keep_updated`] judges that again every heartbeat
//! interval (at most a second apart, so it follows `/ready` closely) and tells
//! watchers only when it changes.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

use crate::fleet::Fleet;

/// The names a health check may ask about: the server as a whole and each service.
pub const SERVICES: [&str; 3] = ["", "berth.v1.Sandboxes", "berth.v1.Admin"];

/// The longest the health service lags the fleet (one store read each time).
pub const MAX_PERIOD: Duration = Duration::from_secs(1);

/// A reporter with every one of [`SERVICES`] `NOT_SERVING` until judged.
pub async fn reporter() -> HealthReporter {
    let reporter = HealthReporter::new();
    set_all(&reporter, ServingStatus::NotServing).await;
    reporter
}

/// The health service answering from `reporter`.
pub fn service(reporter: &HealthReporter) -> HealthServer<HealthService> {
    HealthServer::new(HealthService::from_health_reporter(reporter.clone()))
}

async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    for service in SERVICES {
        reporter.set_service_status(service, status).await;
    }
}

/// Judges the fleet now and every `interval` (at most [`MAX_PERIOD`]) until
/// `shutdown`, then reports `NOT_SERVING` (the server is going away).
pub async fn keep_updated(
    fleet: Fleet,
    reporter: HealthReporter,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let period = interval.min(MAX_PERIOD);
    // [`reporter`] starts every service NOT_SERVING; a watcher hears only changes
    // (setting the same status again would send it a duplicate)
    let mut serving = false;
    loop {
        let now = match fleet.ready_workers().await {
            Ok(ready) => ready > 0,
            Err(err) => {
                tracing::warn!(error = %err, "cannot judge the fleet's health");
                false
            }
        };
        if serving != now {
            let status = if now {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            set_all(&reporter, status).await;
            tracing::info!(%status, "grpc health");
            serving = now;
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(period) => {}
        }
    }
    set_all(&reporter, ServingStatus::NotServing).await;
}
