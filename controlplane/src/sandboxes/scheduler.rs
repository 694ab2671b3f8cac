//! Placement: among workers that heartbeat within the grace period, are ready, offer
//! the provider healthily and have room, the least loaded wins. Capacity is reserved
//! by a conditional update in the store, so concurrent spawns (on this replica or
//! another) never over-fill a worker; a lost race moves on to the next candidate.

use super::{SandboxError, Sandboxes, grace_ms, lease_ms};
use crate::clock::now_ms;
use crate::fleet::ProviderStatus;
use crate::store::{
    CandidateRow, CreatedPlacement, DrainState, NewSandbox, ReportedState, WorkerState,
};

impl Sandboxes {
    /// Candidates for `provider` (empty: any), least loaded first, or why there are none.
    pub(super) async fn candidates(
        &self,
        provider: &str,
    ) -> Result<Vec<(CandidateRow, String)>, SandboxError> {
        let now = now_ms();
        let fresh_since = now - grace_ms(&self.settings);
        let rows = self.store.schedulable_workers(fresh_since).await?;
        let mut offering = Vec::new();
        for row in rows {
            let providers: Vec<ProviderStatus> =
                serde_json::from_str(&row.providers).unwrap_or_default();
            let chosen = providers
                .iter()
                .find(|p| p.healthy && (provider.is_empty() || p.name == provider))
                .map(|p| p.name.clone());
            if let Some(name) = chosen {
                offering.push((row, name));
            }
        }
        if offering.is_empty() {
            return Err(self.why_nothing_fits(provider, fresh_since).await?);
        }
        Ok(offering)
    }

    /// Records `sandbox` placed on the first candidate that still has room (slot,
    /// row and lease in one store transaction); when they all filled up meanwhile it
    /// is recorded as failed and the caller told to try again.
    pub(super) async fn place(
        &self,
        sandbox: &NewSandbox,
        candidates: &[(CandidateRow, String)],
    ) -> Result<CreatedPlacement, SandboxError> {
        let now = now_ms();
        let fresh_since = now - grace_ms(&self.settings);
        let lease_expires = now.saturating_add(lease_ms(&self.settings));
        let ids: Vec<String> = candidates.iter().map(|(c, _)| c.id.clone()).collect();
        const FULL: &str = "every eligible worker filled up meanwhile; try again";
        self.store
            .create_placed_sandbox(sandbox, &ids, fresh_since, lease_expires, FULL)
            .await?
            .ok_or_else(|| SandboxError::NoCapacity(FULL.into()))
    }

    /// Explains an empty candidate list the way an operator would want to read it.
    async fn why_nothing_fits(
        &self,
        provider: &str,
        fresh_since_ms: i64,
    ) -> Result<SandboxError, SandboxError> {
        let workers = self.store.list_workers().await?;
        let online: Vec<_> = workers
            .iter()
            .filter(|w| {
                w.state == WorkerState::Active
                    && w.last_heartbeat_ms.is_some_and(|t| t >= fresh_since_ms)
            })
            .collect();
        if online.is_empty() {
            return Ok(SandboxError::Unavailable(format!(
                "no online worker ({} enrolled)",
                workers.len()
            )));
        }
        let wanted = if provider.is_empty() { "any" } else { provider };
        let offering: Vec<_> = online
            .iter()
            .filter(|w| {
                let providers: Vec<ProviderStatus> =
                    serde_json::from_str(&w.providers).unwrap_or_default();
                providers
                    .iter()
                    .any(|p| p.healthy && (provider.is_empty() || p.name == provider))
            })
            .collect();
        if offering.is_empty() {
            return Ok(SandboxError::Unavailable(format!(
                "no online worker offers a healthy {wanted:?} provider"
            )));
        }
        let ready = offering
            .iter()
            .filter(|w| {
                w.reported_state == ReportedState::Ready
                    && !w.cordoned
                    && w.drain_state == DrainState::None
            })
            .count();
        if ready == 0 {
            return Ok(SandboxError::Unavailable(format!(
                "all {} workers offering {wanted:?} are cordoned or draining",
                offering.len()
            )));
        }
        Ok(SandboxError::NoCapacity(format!(
            "all {ready} workers offering {wanted:?} are at capacity"
        )))
    }
}

impl Sandboxes {
    /// Whether a sandbox of `provider` could be placed now.
    pub async fn admission(&self, provider: &str) -> Result<(), SandboxError> {
        self.candidates(provider).await.map(|_| ())
    }

    /// Sandboxes the online workers can hold together.
    pub async fn total_capacity(&self) -> Result<i64, SandboxError> {
        let fresh_since = now_ms() - grace_ms(&self.settings);
        let workers = self.store.list_workers().await?;
        Ok(workers
            .iter()
            .filter(|w| {
                w.state == WorkerState::Active
                    && w.last_heartbeat_ms.is_some_and(|t| t >= fresh_since)
            })
            .map(|w| w.max_sandboxes)
            .sum())
    }
}
