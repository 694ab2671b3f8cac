//! Heartbeats: a worker (identified by its verified certificate) reports its state,
//! capacity and providers; the control plane records the time it heard from it.

use super::{Fleet, FleetError, WorkerDescription, duration_ms};
use crate::clock::now_ms;
use crate::store::HeartbeatUpdate;

#[derive(Debug, Clone)]
pub struct HeartbeatReport {
    /// ready | draining | drained
    pub state: &'static str,
    pub description: WorkerDescription,
    /// Sandboxes the worker holds, with the lease generation it has seen for each.
    pub held: Vec<(String, i64)>,
    /// When the worker sent it (its clock, unix ms); 0 when unknown.
    pub sent_at_ms: i64,
}

#[derive(Debug, Clone)]
pub struct HeartbeatAck {
    pub heartbeat_interval_ms: u32,
    pub server_time_ms: i64,
}

impl Fleet {
    pub async fn heartbeat(
        &self,
        worker_id: &str,
        report: HeartbeatReport,
    ) -> Result<HeartbeatAck, FleetError> {
        report.description.validate()?;
        let now = now_ms();
        let description = &report.description;
        self.store
            .record_heartbeat(&HeartbeatUpdate {
                worker_id: worker_id.to_owned(),
                reported_state: report.state.to_owned(),
                hostname: description.hostname.clone(),
                advertise_addr: description.advertise_addr.clone(),
                providers: description.providers_json(),
                max_sandboxes: i64::from(description.max_sandboxes),
                vcpus: i64::from(description.vcpus),
                memory_mb: i64::try_from(description.memory_mb).unwrap_or(i64::MAX),
                version: description.version.clone(),
                now_ms: now,
            })
            .await?;
        if !report.held.is_empty() {
            let grace =
                i64::try_from(self.settings.heartbeat_grace.as_millis()).unwrap_or(i64::MAX);
            let renewed = self
                .store
                .renew_leases(worker_id, &report.held, now + 2 * grace)
                .await?;
            self.metrics.lease_renewals.inc_by(renewed);
        }
        if report.sent_at_ms > 0 {
            let lag_ms = (now - report.sent_at_ms).max(0);
            self.metrics.heartbeat_lag.observe(lag_ms as f64 / 1000.0);
        }
        tracing::trace!(%worker_id, "heartbeat");
        Ok(HeartbeatAck {
            heartbeat_interval_ms: duration_ms(self.settings.heartbeat_interval),
            server_time_ms: now,
        })
    }
}
