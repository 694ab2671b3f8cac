//! Heartbeats: a worker (identified by its verified certificate) reports its state,
//! capacity and providers; the control plane records the time it heard from it.

use super::{Fleet, FleetError, WorkerDescription, duration_ms};
use crate::clock::now_ms;
use crate::store::{HeartbeatUpdate, ReportedState, SandboxState};

#[derive(Debug, Clone)]
pub struct HeartbeatReport {
    pub state: ReportedState,
    pub description: WorkerDescription,
    /// Every sandbox the worker's provider holds, with the lease generation it has
    /// seen for each (0 when none reached it).
    pub inventory: Vec<(String, i64)>,
    /// When the worker sent it (its clock, unix ms); 0 when unknown.
    pub sent_at_ms: i64,
}

#[derive(Debug, Clone)]
pub struct HeartbeatAck {
    pub heartbeat_interval_ms: u32,
    pub server_time_ms: i64,
    /// Sandboxes the worker holds without a lease: it destroys them.
    pub destroy: Vec<String>,
    pub drain_requested: bool,
}

/// A sandbox that started this long before a heartbeat must be in its inventory.
const REPORT_MARGIN_MS: i64 = 5_000;

/// Most sandboxes one heartbeat may report: far more than any worker holds (docker
/// workers run tens to hundreds), few enough that reconciling a hostile or broken
/// report stays cheap. A larger report is refused whole.
pub const MAX_INVENTORY: usize = 10_000;

/// Sandbox ids a log line about many sandboxes names; the rest are counted.
const LOGGED_IDS: usize = 10;

impl Fleet {
    pub async fn heartbeat(
        &self,
        worker_id: &str,
        report: HeartbeatReport,
    ) -> Result<HeartbeatAck, FleetError> {
        report.description.validate()?;
        if report.inventory.len() > MAX_INVENTORY {
            return Err(FleetError::BadRequest(format!(
                "a heartbeat may report at most {MAX_INVENTORY} sandboxes; this one reported {}",
                report.inventory.len()
            )));
        }
        let now = now_ms();
        let description = &report.description;
        let drain_requested = self
            .store
            .record_heartbeat(&HeartbeatUpdate {
                worker_id: worker_id.to_owned(),
                reported_state: report.state,
                hostname: description.hostname.clone(),
                advertise_addr: description.advertise_addr.clone(),
                providers: description.providers_json(),
                max_sandboxes: i64::from(description.max_sandboxes),
                vcpus: i64::from(description.vcpus),
                memory_mb: i64::try_from(description.memory_mb).unwrap_or(i64::MAX),
                version: description.version.clone(),
                reported_sandboxes: i64::try_from(report.inventory.len()).unwrap_or(i64::MAX),
                now_ms: now,
            })
            .await?;
        let destroy = self.reconcile(worker_id, &report.inventory, now).await?;
        if report.sent_at_ms > 0 {
            let lag_ms = (now - report.sent_at_ms).max(0);
            self.metrics.heartbeat_lag.observe(lag_ms as f64 / 1000.0);
        }
        tracing::trace!(%worker_id, "heartbeat");
        Ok(HeartbeatAck {
            heartbeat_interval_ms: duration_ms(self.settings.heartbeat_interval),
            server_time_ms: now,
            destroy,
            drain_requested,
        })
    }

    /// Compares a worker's inventory with the leases it holds: leases it reports are
    /// renewed; sandboxes it runs without a lease are handed back for destruction;
    /// running sandboxes it no longer reports are marked lost.
    async fn reconcile(
        &self,
        worker_id: &str,
        inventory: &[(String, i64)],
        now_ms: i64,
    ) -> Result<Vec<String>, FleetError> {
        let leases = self.store.leases_of(worker_id).await?;
        let leased: std::collections::HashMap<&str, i64> = leases
            .iter()
            .map(|lease| (lease.sandbox_id.as_str(), lease.generation))
            .collect();
        let reported: std::collections::HashSet<&str> =
            inventory.iter().map(|(id, _)| id.as_str()).collect();
        let held: Vec<(String, i64)> = inventory
            .iter()
            .filter(|(id, _)| leased.contains_key(id.as_str()))
            .map(|(id, _)| (id.clone(), leased[id.as_str()]))
            .collect();
        if !held.is_empty() {
            let lease = i64::try_from(self.settings.lease_duration.as_millis()).unwrap_or(i64::MAX);
            let renewed = self
                .store
                .renew_leases(worker_id, &held, now_ms.saturating_add(lease))
                .await?;
            self.metrics.lease_renewals.inc_by(renewed);
        }
        let mut destroy: Vec<String> = inventory
            .iter()
            .filter(|(id, _)| !leased.contains_key(id.as_str()))
            .map(|(id, _)| id.clone())
            .collect();
        if !destroy.is_empty() {
            // one line per heartbeat, however many: a worker's report must not flood
            // the log
            let named: Vec<&str> = destroy
                .iter()
                .take(LOGGED_IDS)
                .map(String::as_str)
                .collect();
            tracing::warn!(%worker_id, count = destroy.len(), sandbox_ids = ?named, "worker runs sandboxes it holds no lease for; asking it to destroy them");
        }
        if leases
            .iter()
            .any(|lease| lease.state == SandboxState::Creating)
        {
            self.resolve_unconfirmed_spawns(worker_id, inventory, now_ms, &mut destroy)
                .await?;
        }
        for lease in &leases {
            let (id, generation) = (&lease.sandbox_id, lease.generation);
            let must_report = matches!(lease.state, SandboxState::Running | SandboxState::Stopped)
                && lease
                    .started_at_ms
                    .is_some_and(|t| t < now_ms - REPORT_MARGIN_MS);
            if must_report
                && !reported.contains(id.as_str())
                && self
                    .store
                    .mark_lost(id, worker_id, generation, "its worker no longer reports it")
                    .await?
            {
                self.workers.routes().forget(id);
                tracing::warn!(%worker_id, sandbox_id = %id, "sandbox lost: its worker no longer reports it");
            }
        }
        Ok(destroy)
    }

    /// Resolves the spawns on this worker that nobody confirmed within
    /// `spawn_confirm_within` of their placement (the control plane that placed them
    /// died mid-spawn; measured from the row's creation, so any replica, restarted or
    /// not, resolves them): a sandbox the worker reports at the lease's generation is
    /// adopted (marked running), any other is destroyed, its lease and slot released,
    /// and handed back for destruction if the worker holds it at another generation.
    /// Each step is a conditional update, so a spawn confirmed meanwhile, or resolved
    /// by another replica, is left alone.
    async fn resolve_unconfirmed_spawns(
        &self,
        worker_id: &str,
        inventory: &[(String, i64)],
        now_ms: i64,
        destroy: &mut Vec<String>,
    ) -> Result<(), FleetError> {
        let bound_ms =
            i64::try_from(self.settings.spawn_confirm_within.as_millis()).unwrap_or(i64::MAX);
        let created_before = now_ms.saturating_sub(bound_ms).div_euclid(1000);
        for spawn in self
            .store
            .unconfirmed_spawns(worker_id, created_before)
            .await?
        {
            let id = &spawn.sandbox_id;
            let reported = inventory
                .iter()
                .find(|(held, _)| held == id)
                .map(|(_, generation)| *generation);
            if reported == Some(spawn.generation) {
                // the provider's own id for it is not in the inventory; it stays empty
                if self.store.mark_sandbox_running(id, "", now_ms).await? {
                    tracing::warn!(%worker_id, sandbox_id = %id, generation = spawn.generation, "sandbox adopted: its worker holds it but its spawn was never confirmed");
                }
                continue;
            }
            if self
                .store
                .abandon_spawn(
                    id,
                    worker_id,
                    spawn.generation,
                    "its spawn was never confirmed",
                    now_ms.div_euclid(1000),
                )
                .await?
            {
                self.workers.routes().forget(id);
                tracing::warn!(%worker_id, sandbox_id = %id, "sandbox destroyed: its spawn was never confirmed and its worker does not hold it");
                if reported.is_some() && !destroy.contains(id) {
                    destroy.push(id.clone());
                }
            }
        }
        Ok(())
    }

    /// Marks lost every sandbox whose lease ran out (its worker stopped heartbeating);
    /// returns how many.
    pub async fn expire_leases(&self) -> Result<usize, FleetError> {
        let mut lost = 0;
        for lease in self.store.expired_leases(crate::clock::now_ms()).await? {
            let (sandbox_id, worker_id, generation) =
                (lease.sandbox_id, lease.worker_id, lease.generation);
            if self
                .store
                .mark_lost(
                    &sandbox_id,
                    &worker_id,
                    generation,
                    "its worker stopped heartbeating",
                )
                .await?
            {
                self.workers.routes().forget(&sandbox_id);
                tracing::warn!(%worker_id, %sandbox_id, "sandbox lost: its lease ran out");
                lost += 1;
            }
        }
        Ok(lost)
    }
}
