//! The operator's view of a worker: its record plus a status derived from heartbeat age.

use serde::{Deserialize, Serialize};

use super::labels::{Labels, labels_from_json};
use super::{Fleet, FleetError};
use crate::clock::now_ms;
use crate::sandboxes::rfc3339;
use crate::store::{DrainState, ReportedState, WorkerRow, WorkerState};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WorkerStatus {
    /// Heartbeating within the grace period and ready for work.
    Online,
    /// Heartbeating, but draining or drained by its own account.
    Draining,
    /// Its last heartbeat is older than the grace period.
    Unhealthy,
    /// Enrolled but never heartbeated.
    Offline,
    /// Its credentials are refused.
    Revoked,
}

impl WorkerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Draining => "draining",
            Self::Unhealthy => "unhealthy",
            Self::Offline => "offline",
            Self::Revoked => "revoked",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProviderStatus {
    pub name: String,
    pub healthy: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schema(required = false)]
    pub message: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Capacity {
    pub max_sandboxes: i64,
    pub vcpus: i64,
    pub memory_mb: i64,
}

/// What the sandboxes placed on a worker reserve now (its `capacity` is the most).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Allocated {
    pub sandboxes: i64,
    pub memory_mb: i64,
    pub vcpus: i64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CertificateView {
    pub serial: String,
    /// RFC 3339.
    pub expires_at: String,
    /// Unix seconds (for the gRPC view and metrics).
    #[serde(skip)]
    pub expires_at_unix: i64,
}

/// A worker as `GET /api/v1/workers` shows it (StacyVM's fields plus Berth's own).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WorkerView {
    pub id: String,
    pub spiffe_id: String,
    pub hostname: String,
    pub status: WorkerStatus,
    /// Names of the providers the worker offers.
    pub providers: Vec<String>,
    /// Health of each provider.
    pub capabilities: Vec<ProviderStatus>,
    pub capacity: Capacity,
    pub allocated: Allocated,
    /// RFC 3339; null when it never heartbeated.
    pub last_heartbeat: Option<String>,
    /// Empty for a worker that dials out.
    pub advertise_addr: String,
    /// How the control plane reaches it: `dial-out` (over the connection the worker
    /// opens) or `listen` (dialed at `advertise_addr`).
    #[schema(value_type = String, example = "dial-out")]
    pub mode: &'static str,
    pub version: String,
    /// RFC 3339.
    pub enrolled_at: String,
    pub certificate: CertificateView,
    /// Takes no new sandboxes; keeps running what it has.
    pub cordoned: bool,
    pub drain: DrainView,
    /// The pool its join token named (`default` when it named none).
    pub pool: String,
    /// The labels its join token gave it; request constraints match them.
    pub labels: Labels,
    /// Unix milliseconds of `last_heartbeat` (for the gRPC view).
    #[serde(skip)]
    pub last_heartbeat_ms: Option<i64>,
    /// Unix seconds of `enrolled_at` (for the gRPC view).
    #[serde(skip)]
    pub enrolled_at_unix: i64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DrainView {
    /// none | draining | drained
    pub state: String,
    /// RFC 3339: what is left then is destroyed; null: it waits until all is gone.
    pub deadline: Option<String>,
    /// Sandboxes the worker's provider still holds, as last reported.
    pub remaining: i64,
}

impl WorkerView {
    pub fn from_row(row: WorkerRow, grace_ms: i64, now_ms: i64) -> Self {
        let status = derive_status(&row, grace_ms, now_ms);
        let capabilities: Vec<ProviderStatus> =
            serde_json::from_str(&row.providers).unwrap_or_default();
        Self {
            providers: capabilities.iter().map(|p| p.name.clone()).collect(),
            capabilities,
            status,
            capacity: Capacity {
                max_sandboxes: row.max_sandboxes,
                vcpus: row.vcpus,
                memory_mb: row.memory_mb,
            },
            allocated: Allocated {
                sandboxes: row.reserved,
                memory_mb: row.reserved_memory_mb,
                vcpus: row.reserved_vcpus,
            },
            last_heartbeat: row.last_heartbeat_ms.map(rfc3339_ms),
            certificate: CertificateView {
                serial: row.cert_serial,
                expires_at: rfc3339(row.cert_expires_at),
                expires_at_unix: row.cert_expires_at,
            },
            last_heartbeat_ms: row.last_heartbeat_ms,
            enrolled_at_unix: row.enrolled_at,
            id: row.id,
            spiffe_id: row.spiffe_id,
            hostname: row.hostname,
            mode: if row.advertise_addr.is_empty() {
                "dial-out"
            } else {
                "listen"
            },
            advertise_addr: row.advertise_addr,
            version: row.version,
            enrolled_at: rfc3339(row.enrolled_at),
            cordoned: row.cordoned,
            labels: labels_from_json(&row.labels),
            pool: row.pool,
            drain: DrainView {
                state: match row.drain_state {
                    DrainState::None => "none".to_owned(),
                    drain => drain.to_string(),
                },
                deadline: row.drain_deadline_ms.map(rfc3339_ms),
                remaining: row.reported_sandboxes,
            },
        }
    }
}

/// Unix milliseconds as RFC 3339 (seconds precision).
fn rfc3339_ms(unix_ms: i64) -> String {
    rfc3339(unix_ms.div_euclid(1000))
}

fn derive_status(row: &WorkerRow, grace_ms: i64, now_ms: i64) -> WorkerStatus {
    if row.state == WorkerState::Revoked {
        return WorkerStatus::Revoked;
    }
    let Some(last) = row.last_heartbeat_ms else {
        return WorkerStatus::Offline;
    };
    if now_ms.saturating_sub(last) > grace_ms {
        return WorkerStatus::Unhealthy;
    }
    match (row.reported_state, row.drain_state) {
        (ReportedState::Draining | ReportedState::Drained, _)
        | (_, DrainState::Draining | DrainState::Drained) => WorkerStatus::Draining,
        (ReportedState::Ready, DrainState::None) => WorkerStatus::Online,
    }
}

impl Fleet {
    fn grace_ms(&self) -> i64 {
        i64::try_from(self.settings.heartbeat_grace.as_millis()).unwrap_or(i64::MAX)
    }

    pub async fn list_workers(&self) -> Result<Vec<WorkerView>, FleetError> {
        let now = now_ms();
        let grace = self.grace_ms();
        let rows = self.store.list_workers().await?;
        Ok(rows
            .into_iter()
            .map(|row| WorkerView::from_row(row, grace, now))
            .collect())
    }

    /// How many online workers offer a healthy provider: the control plane is ready
    /// (`/api/v1/ready`, gRPC health) when there is one.
    pub async fn ready_workers(&self) -> Result<usize, FleetError> {
        let workers = self.list_workers().await?;
        Ok(workers
            .iter()
            .filter(|w| {
                w.status == WorkerStatus::Online && w.capabilities.iter().any(|p| p.healthy)
            })
            .count())
    }

    /// Drains a worker: no new sandboxes; what it runs is destroyed at `deadline` (at
    /// once with `force`); the drain completes when its provider reports none left.
    pub async fn drain(
        &self,
        id: &str,
        deadline: Option<std::time::Duration>,
        force: bool,
    ) -> Result<WorkerView, FleetError> {
        let deadline_ms = if force {
            Some(crate::clock::now_ms())
        } else {
            deadline
                .map(|d| crate::clock::now_ms() + i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        };
        self.store.start_drain(id, deadline_ms).await?;
        tracing::info!(worker_id = %id, ?deadline_ms, force, "worker draining");
        self.get_worker(id).await
    }

    pub async fn undrain(&self, id: &str) -> Result<WorkerView, FleetError> {
        self.store.undrain(id).await.map_err(|err| match err {
            crate::store::StoreError::UnknownWorker(id) => FleetError::WorkerNotFound(id),
            other => other.into(),
        })?;
        tracing::info!(worker_id = %id, "worker drain cancelled");
        self.get_worker(id).await
    }

    /// Cordons (no new sandboxes, nothing stopped) or uncordons a worker.
    pub async fn set_cordoned(&self, id: &str, cordoned: bool) -> Result<WorkerView, FleetError> {
        self.store.set_cordoned(id, cordoned).await?;
        tracing::info!(worker_id = %id, cordoned, "worker cordon changed");
        self.get_worker(id).await
    }

    pub async fn get_worker(&self, id: &str) -> Result<WorkerView, FleetError> {
        let row = self
            .store
            .get_worker(id)
            .await?
            .ok_or_else(|| FleetError::WorkerNotFound(id.to_owned()))?;
        Ok(WorkerView::from_row(row, self.grace_ms(), now_ms()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(state: WorkerState, reported: ReportedState, last: Option<i64>) -> WorkerRow {
        WorkerRow {
            id: "w1".into(),
            spiffe_id: "spiffe://berth.local/worker/w1".into(),
            hostname: "h".into(),
            advertise_addr: "127.0.0.1:1".into(),
            providers: r#"[{"name":"mock","healthy":true}]"#.into(),
            max_sandboxes: 1,
            vcpus: 1,
            memory_mb: 1,
            version: "v".into(),
            state,
            reported_state: reported,
            worker_token_jti: "j".into(),
            enrolled_at: 0,
            last_heartbeat_ms: last,
            cert_serial: "s".into(),
            cert_expires_at: 0,
            cordoned: false,
            drain_state: DrainState::None,
            drain_deadline_ms: None,
            reported_sandboxes: 0,
            reserved: 0,
            reserved_memory_mb: 0,
            reserved_vcpus: 0,
            pool: "default".into(),
            labels: "{}".into(),
        }
    }

    #[test]
    fn status_follows_heartbeat_age_and_state() {
        let view = |r| WorkerView::from_row(r, 15_000, 100_000).status;
        assert_eq!(
            view(row(WorkerState::Active, ReportedState::Ready, Some(90_000))),
            WorkerStatus::Online
        );
        assert_eq!(
            view(row(WorkerState::Active, ReportedState::Ready, Some(80_000))),
            WorkerStatus::Unhealthy
        );
        assert_eq!(
            view(row(
                WorkerState::Active,
                ReportedState::Draining,
                Some(99_000)
            )),
            WorkerStatus::Draining
        );
        assert_eq!(
            view(row(WorkerState::Active, ReportedState::Ready, None)),
            WorkerStatus::Offline
        );
        assert_eq!(
            view(row(
                WorkerState::Revoked,
                ReportedState::Ready,
                Some(99_000)
            )),
            WorkerStatus::Revoked
        );
    }

    #[test]
    fn times_are_rfc3339_and_reservations_are_shown() {
        let mut heard = row(
            WorkerState::Active,
            ReportedState::Ready,
            Some(1_767_225_600_999),
        );
        heard.enrolled_at = 1_767_225_600;
        heard.cert_expires_at = 1_767_312_000;
        heard.drain_deadline_ms = Some(1_767_225_660_000);
        (
            heard.reserved,
            heard.reserved_memory_mb,
            heard.reserved_vcpus,
        ) = (2, 1024, 3);
        let view = serde_json::to_value(WorkerView::from_row(heard, 1, 1)).unwrap();
        assert_eq!(view["last_heartbeat"], "2026-01-01T00:00:00Z");
        assert_eq!(view["enrolled_at"], "2026-01-01T00:00:00Z");
        assert_eq!(view["certificate"]["expires_at"], "2026-01-02T00:00:00Z");
        assert_eq!(view["drain"]["deadline"], "2026-01-01T00:01:00Z");
        assert!(view["drain"].get("deadline_ms").is_none());
        assert_eq!(
            view["allocated"],
            serde_json::json!({"sandboxes": 2, "memory_mb": 1024, "vcpus": 3})
        );
        let never =
            WorkerView::from_row(row(WorkerState::Active, ReportedState::Ready, None), 1, 1);
        assert_eq!(
            serde_json::to_value(never).unwrap()["last_heartbeat"],
            serde_json::Value::Null
        );
    }

    #[test]
    fn pool_and_labels_are_shown() {
        let mut labelled = row(WorkerState::Active, ReportedState::Ready, None);
        labelled.pool = "eu".into();
        labelled.labels = r#"{"region":"eu","disk":"ssd"}"#.into();
        let view = serde_json::to_value(WorkerView::from_row(labelled, 1, 1)).unwrap();
        assert_eq!(view["pool"], "eu");
        assert_eq!(
            view["labels"],
            serde_json::json!({"region": "eu", "disk": "ssd"})
        );
        let plain =
            WorkerView::from_row(row(WorkerState::Active, ReportedState::Ready, None), 1, 1);
        let plain = serde_json::to_value(plain).unwrap();
        assert_eq!(plain["pool"], "default");
        assert_eq!(plain["labels"], serde_json::json!({}));
    }

    #[test]
    fn providers_are_listed_by_name_with_their_health() {
        let view = WorkerView::from_row(row(WorkerState::Active, ReportedState::Ready, None), 1, 1);
        assert_eq!(view.providers, vec!["mock".to_owned()]);
        assert!(view.capabilities[0].healthy);
    }
}
