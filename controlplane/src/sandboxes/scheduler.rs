//! Placement: among workers that heartbeat within the grace period, are ready, offer
//! the provider healthily, have room, sit in one of the team's pools and meet the
//! request's label constraints ([`super::constraints`]), the least loaded wins.
//! Capacity is reserved by a conditional update in the store, so concurrent spawns (on
//! this replica or another) never over-fill a worker; a lost race moves on to the next
//! candidate.

use std::collections::BTreeSet;

use super::constraints::{self, Placeable};
use super::request::CreateSandbox;
use super::{SandboxError, Sandboxes, grace_ms, lease_ms};
use crate::clock::now_ms;
use crate::fleet::ProviderStatus;
use crate::fleet::labels::{Labels, labels_from_json};
use crate::store::{
    CandidateRow, CreatedPlacement, DrainState, NewSandbox, ReportedState, WorkerRow, WorkerState,
};

impl Sandboxes {
    /// Candidates for `request` (its provider, empty: any; room for its memory and
    /// CPUs), least loaded first, or why there are none.
    pub(super) async fn candidates(
        &self,
        request: &CreateSandbox,
    ) -> Result<Vec<(CandidateRow, String)>, SandboxError> {
        let provider = request.provider.as_str();
        let (memory_mb, vcpus) = resources(request);
        let now = now_ms();
        let fresh_since = now - grace_ms(&self.settings);
        let rows = self
            .store
            .schedulable_workers(fresh_since, memory_mb, vcpus)
            .await?;
        let mut offering = Vec::new();
        for row in rows {
            let labels = labels_from_json(&row.labels);
            if !constraints::eligible(&request.pools, &request.constraints, &row.pool, &labels) {
                continue;
            }
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
            return Err(self.why_nothing_fits(request, fresh_since).await?);
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
            .ok_or_else(|| SandboxError::CreateFailed {
                sandbox_id: sandbox.id.clone(),
                cause: Box::new(SandboxError::NoCapacity(FULL.into())),
            })
    }

    /// Explains an empty candidate list the way an operator would want to read it.
    async fn why_nothing_fits(
        &self,
        request: &CreateSandbox,
        fresh_since_ms: i64,
    ) -> Result<SandboxError, SandboxError> {
        let provider = request.provider.as_str();
        let (memory_mb, vcpus) = resources(request);
        let workers = self.store.list_workers().await?;
        if !provider.is_empty() {
            let known = known_providers(&workers);
            if !known.contains(provider) {
                let known: Vec<&str> = known.iter().map(String::as_str).collect();
                return Ok(SandboxError::BadRequest(format!(
                    "unknown provider {provider:?}; known providers: {}",
                    known.join(", ")
                )));
            }
        }
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
        // the team's pools and the request's constraints before anything else: no
        // retry helps with those
        let labels: Vec<Labels> = online.iter().map(|w| labels_from_json(&w.labels)).collect();
        let placeable: Vec<Placeable<'_>> = online
            .iter()
            .zip(&labels)
            .map(|(w, labels)| Placeable {
                id: &w.id,
                pool: &w.pool,
                labels,
            })
            .collect();
        if let Some(message) =
            constraints::exclusions(&request.pools, &request.constraints, &placeable)
        {
            return Ok(SandboxError::Unavailable(message));
        }
        let restricted = !request.pools.is_empty() || !request.constraints.is_empty();
        let online: Vec<_> = online
            .into_iter()
            .zip(&labels)
            .filter(|(w, labels)| {
                constraints::eligible(&request.pools, &request.constraints, &w.pool, labels)
            })
            .map(|(w, _)| w)
            .collect();
        let scope = if restricted {
            "eligible online worker"
        } else {
            "online worker"
        };
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
                "no {scope} offers a healthy {wanted:?} provider"
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
        // a request no worker could ever hold is the caller's to change, not to retry
        if let Some(largest) = largest(offering.iter().map(|w| w.memory_mb))
            && memory_mb > largest
        {
            return Ok(SandboxError::BadRequest(format!(
                "memory_mb {memory_mb} is more than any worker offering {wanted:?} has (the largest has {largest} MiB)"
            )));
        }
        if let Some(largest) = largest(offering.iter().map(|w| w.vcpus))
            && vcpus > largest
        {
            return Ok(SandboxError::BadRequest(format!(
                "vcpus {vcpus} is more than any worker offering {wanted:?} has (the largest has {largest})"
            )));
        }
        Ok(SandboxError::NoCapacity(format!(
            "all {ready} workers offering {wanted:?} are at capacity (sandbox slots, or memory for {memory_mb} MiB more)"
        )))
    }
}

/// Providers Berth ships; a name no enrolled worker reports and not one of these is a
/// typo, not a provider that happens to be down.
const SHIPPED_PROVIDERS: [&str; 2] = ["docker", "mock"];

/// The shipped providers and every provider an enrolled worker reports, sorted.
fn known_providers(workers: &[WorkerRow]) -> BTreeSet<String> {
    let mut known: BTreeSet<String> = SHIPPED_PROVIDERS.iter().map(|p| (*p).to_owned()).collect();
    for worker in workers {
        let providers: Vec<ProviderStatus> =
            serde_json::from_str(&worker.providers).unwrap_or_default();
        known.extend(providers.into_iter().map(|p| p.name));
    }
    known
}

/// The memory and CPUs a request reserves, as the store counts them.
fn resources(request: &CreateSandbox) -> (i64, i64) {
    request.footprint()
}

/// The largest of `amounts` (one per worker), when every worker counts it (one
/// reporting 0 does not, so anything may fit there).
fn largest(amounts: impl Iterator<Item = i64>) -> Option<i64> {
    let amounts: Vec<i64> = amounts.collect();
    if amounts.contains(&0) {
        return None;
    }
    amounts.into_iter().max()
}

impl Sandboxes {
    /// Whether `request` could be placed now: its team has room under its quotas and
    /// a worker has room for it.
    pub async fn admission(&self, request: &CreateSandbox) -> Result<(), SandboxError> {
        let pools = self.admit_quota(request).await?;
        let request = CreateSandbox {
            pools,
            ..request.clone()
        };
        self.candidates(&request).await.map(|_| ())
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
