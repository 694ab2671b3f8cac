//! Get, list, destroy, extend and prune (create is in `create.rs`). No lock is held across a worker call:
//! state changes are conditional updates in the store, so concurrent spawns run in
//! parallel and two destroys of one sandbox cannot both act.

use std::time::Duration;

use berth_proto::ErrorCode;
use tracing::Instrument;

use super::calls::note_worker;
use super::{PruneSelection, SandboxError, SandboxView, Sandboxes, request};
use crate::clock::now_secs;
use crate::store::{DrainState, SandboxState};
use crate::teams::{Access, team_settings};
use crate::workers::Route;

const DESTROY_TIMEOUT: Duration = Duration::from_secs(60);
/// A destroy claim older than this was abandoned (a replica died holding it): twice
/// the longest a destroy call may take, so a live claimer is never raced.
const STALLED_DESTROY_MS: i64 = 2 * DESTROY_TIMEOUT.as_millis() as i64;

impl Sandboxes {
    /// Sandbox `id`'s row in any state, if `access` sees it (another team's is not
    /// found, like one that does not exist).
    pub(super) async fn row_seen_by(
        &self,
        access: &Access,
        id: &str,
    ) -> Result<crate::store::SandboxRow, SandboxError> {
        self.store
            .get_sandbox(id)
            .await?
            .filter(|row| access.sees(&row.team_id))
            .ok_or_else(|| SandboxError::NotFound(id.to_owned()))
    }

    /// Sandbox `id`, if `access` sees it (another team's is not found, like one that
    /// does not exist).
    pub async fn get(&self, access: &Access, id: &str) -> Result<SandboxView, SandboxError> {
        let row = self.row_seen_by(access, id).await?;
        if row.state == SandboxState::Destroyed {
            return Err(SandboxError::Destroyed(id.to_owned()));
        }
        Ok(self.view(row))
    }

    /// A stored sandbox as the API shows it.
    pub(super) fn view(&self, row: crate::store::SandboxRow) -> SandboxView {
        let mut view = SandboxView::from(row);
        view.preview_domain
            .clone_from(&self.settings.preview_domain);
        view
    }

    /// Every sandbox that is not destroyed, of the teams `access` sees.
    pub async fn list(&self, access: &Access) -> Result<Vec<SandboxView>, SandboxError> {
        let rows = self.store.list_sandboxes().await?;
        Ok(rows
            .into_iter()
            .filter(|row| access.sees(&row.team_id))
            .map(|row| self.view(row))
            .collect())
    }

    /// Fails with not found unless `access` sees sandbox `id` (a destroyed one counts:
    /// the call then answers what it answers for any destroyed sandbox).
    async fn check_sees(&self, access: &Access, id: &str) -> Result<(), SandboxError> {
        if access.team_filter().is_none() {
            return Ok(());
        }
        if let Some(team) = self.routes().team_of(id) {
            return if access.sees(&team) {
                Ok(())
            } else {
                Err(SandboxError::NotFound(id.to_owned()))
            };
        }
        match self.store.get_sandbox(id).await? {
            Some(row) if access.sees(&row.team_id) => Ok(()),
            _ => Err(SandboxError::NotFound(id.to_owned())),
        }
    }

    /// Destroys every sandbox of the team `access` is limited to that is not destroyed
    /// (only those of `owner`, when given); returns how many it destroyed.
    pub async fn destroy_all_of(
        &self,
        access: &Access,
        owner: Option<&str>,
    ) -> Result<usize, SandboxError> {
        let mut destroyed = 0;
        for sandbox in self.list(access).await? {
            if owner.is_some_and(|owner| owner != sandbox.owner_id) {
                continue;
            }
            match self.destroy(access, &sandbox.id).await {
                Ok(()) | Err(SandboxError::Destroyed(_)) => destroyed += 1,
                Err(err) => return Err(err),
            }
        }
        Ok(destroyed)
    }

    /// Destroys a sandbox on its worker, then releases its lease and capacity. Of two
    /// concurrent destroys exactly one acts; the other is told it is being destroyed.
    /// Like [`Self::create`], it runs to the end even when the caller goes away.
    pub async fn destroy(&self, access: &Access, id: &str) -> Result<(), SandboxError> {
        self.check_sees(access, id).await?;
        let (sandboxes, id) = (self.clone(), id.to_owned());
        finish_detached(
            self.tasks
                .spawn(async move { sandboxes.destroy_now(&id).await }.in_current_span()),
        )
        .await
    }

    async fn destroy_now(&self, id: &str) -> Result<(), SandboxError> {
        // the common case first: a running sandbox, claimed by one conditional update
        if !self.store.claim_destroy(id, crate::clock::now_ms()).await? {
            return self.destroy_unclaimed(id).await;
        }
        // nothing more is routed to it; its route still names the worker to call
        let cached = self.routes().live(id, i64::MIN);
        self.routes().forget(id);
        match cached {
            Some(route) => {
                self.destroy_claimed(id, route, true, SandboxState::Running)
                    .await
            }
            None => {
                self.destroy_claimed_from_store(id, SandboxState::Running)
                    .await
            }
        }
    }

    /// A destroy of a sandbox that was not running. Every state has a way out: one
    /// still being created is claimed like a running one (its spawn may be in flight,
    /// or was never confirmed) and destroyed on its worker; a failed or lost one runs
    /// nowhere we still hold a lease, so it is finished (whatever its worker still
    /// holds is reconciled away, see `fleet/heartbeats.rs`); a destroy whose claimer
    /// died is taken over. Only a destroy in progress, or a sandbox destroyed already,
    /// is refused.
    async fn destroy_unclaimed(&self, id: &str) -> Result<(), SandboxError> {
        let row = self
            .store
            .get_sandbox(id)
            .await?
            .ok_or_else(|| SandboxError::NotFound(id.to_owned()))?;
        match row.state {
            SandboxState::Destroyed => Err(SandboxError::Destroyed(id.to_owned())),
            SandboxState::Creating => {
                if self
                    .store
                    .claim_destroy_creating(id, crate::clock::now_ms())
                    .await?
                {
                    self.routes().forget(id);
                    return self
                        .destroy_claimed_from_store(id, SandboxState::Creating)
                        .await;
                }
                // it moved on meanwhile (running, lost, claimed…), never back to
                // creating: destroy what it is now
                Box::pin(self.destroy_now(id)).await
            }
            SandboxState::Stopped => {
                if self
                    .store
                    .claim_destroy_from(id, SandboxState::Stopped, crate::clock::now_ms())
                    .await?
                {
                    self.routes().forget(id);
                    return self
                        .destroy_claimed_from_store(id, SandboxState::Stopped)
                        .await;
                }
                // started or claimed meanwhile: destroy what it is now
                Box::pin(self.destroy_now(id)).await
            }
            SandboxState::Error | SandboxState::Lost => {
                self.store
                    .finish_sandbox(id, SandboxState::Destroyed, &row.error, now_secs())
                    .await?;
                Ok(())
            }
            SandboxState::Destroying => {
                let now = crate::clock::now_ms();
                let stalled_before = now - STALLED_DESTROY_MS;
                if self.store.reclaim_destroy(id, stalled_before, now).await? {
                    tracing::warn!(sandbox_id = %id, "taking over a destroy that stalled");
                    return self
                        .destroy_claimed_from_store(id, SandboxState::Running)
                        .await;
                }
                Err(SandboxError::Conflict(format!(
                    "sandbox {id:?} is being destroyed"
                )))
            }
            SandboxState::Running => Err(SandboxError::Conflict(format!(
                "sandbox {id:?} is being destroyed"
            ))),
        }
    }

    /// Destroys sandboxes whose destroy claim stalled (the replica holding it died
    /// mid-destroy): each is taken over by one replica, with a conditional update, and
    /// destroyed again; returns how many.
    pub async fn retry_stalled_destroys(&self) -> Result<usize, SandboxError> {
        let now = crate::clock::now_ms();
        let stalled_before = now - STALLED_DESTROY_MS;
        let mut destroyed = 0;
        for id in self.store.stalled_destroys(stalled_before).await? {
            if !self.store.reclaim_destroy(&id, stalled_before, now).await? {
                continue;
            }
            tracing::warn!(sandbox_id = %id, "taking over a destroy that stalled");
            match self
                .destroy_claimed_from_store(&id, SandboxState::Running)
                .await
            {
                Ok(()) => destroyed += 1,
                Err(err) => {
                    tracing::warn!(sandbox_id = %id, error = %err, "cannot finish a stalled destroy")
                }
            }
        }
        Ok(destroyed)
    }

    /// The worker's part of a destroy this control plane has claimed, on the lease in
    /// the store; a failed one puts the sandbox back in `restore` (the state it was
    /// claimed from).
    async fn destroy_claimed_from_store(
        &self,
        id: &str,
        restore: SandboxState,
    ) -> Result<(), SandboxError> {
        let row = self.store.get_sandbox(id).await?;
        match row.and_then(|row| lease_route(&row)) {
            Some(route) => self.destroy_claimed(id, route, false, restore).await,
            None => {
                self.store
                    .finish_sandbox(id, SandboxState::Destroyed, "", now_secs())
                    .await?;
                Ok(())
            }
        }
    }

    /// The worker's part of a destroy this control plane has claimed. A worker that no
    /// longer holds the sandbox counts as done, once the store confirms that `route`
    /// (taken from the cache when `cached`) is the lease's. A failed call puts the
    /// sandbox back in `restore`, so a retry (or, for one still being created, the
    /// resolution of unconfirmed spawns) can finish it.
    async fn destroy_claimed(
        &self,
        id: &str,
        route: Route,
        cached: bool,
        restore: SandboxState,
    ) -> Result<(), SandboxError> {
        let worker_id = route.worker_id.clone();
        note_worker(&worker_id);
        let result = async {
            let client = self
                .workers
                .client(&worker_id, &route.address)
                .map_err(|err| Some(SandboxError::Remote(err)))?;
            client
                .destroy(id, route.generation, DESTROY_TIMEOUT)
                .await
                .map_err(|err| {
                    if err.code == ErrorCode::NotFound {
                        None
                    } else {
                        Some(SandboxError::Remote(err))
                    }
                })
        }
        .await;
        match result {
            Err(None) if cached => {
                // "not found" is only as good as destroyed on the lease holder
                let row = self.store.get_sandbox(id).await?;
                match row.and_then(|row| lease_route(&row)) {
                    Some(stored)
                        if stored.worker_id != route.worker_id
                            || stored.generation != route.generation =>
                    {
                        Box::pin(self.destroy_claimed(id, stored, false, restore)).await
                    }
                    _ => self.finish_destroyed(id, &worker_id).await,
                }
            }
            // the worker no longer holding it is as good as destroyed
            Ok(_) | Err(None) => self.finish_destroyed(id, &worker_id).await,
            Err(Some(err)) => {
                // leave it as it was so a retry can destroy it
                self.store
                    .transition_sandbox(id, &[SandboxState::Destroying], restore)
                    .await?;
                Err(err)
            }
        }
    }

    async fn finish_destroyed(&self, id: &str, worker_id: &str) -> Result<(), SandboxError> {
        self.store
            .finish_sandbox(id, SandboxState::Destroyed, "", now_secs())
            .await?;
        tracing::info!(sandbox_id = %id, %worker_id, "sandbox destroyed");
        Ok(())
    }

    /// New expiry = now + `ttl` (within the team's `max_ttl`).
    pub async fn extend(
        &self,
        access: &Access,
        id: &str,
        ttl: &str,
    ) -> Result<SandboxView, SandboxError> {
        let ttl = request::parse_ttl(ttl, self.settings.limits.max_ttl)?;
        let row = self
            .store
            .get_sandbox(id)
            .await?
            .filter(|row| access.sees(&row.team_id))
            .ok_or_else(|| SandboxError::NotFound(id.to_owned()))?;
        if let Some(team) = team_settings(&self.store, &row.team_id).await? {
            Self::check_ttl(&row.team_id, &team.quota, ttl)?;
        }
        let expires_at = now_secs().saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(0));
        let lease_until = crate::clock::now_ms().saturating_add(super::lease_ms(&self.settings));
        if !self
            .store
            .set_sandbox_expiry(id, expires_at, lease_until)
            .await?
        {
            return match self.store.get_sandbox(id).await? {
                None => Err(SandboxError::NotFound(id.to_owned())),
                Some(row) if row.state == SandboxState::Destroyed => {
                    Err(SandboxError::Destroyed(id.to_owned()))
                }
                Some(row) => Err(SandboxError::Conflict(format!(
                    "sandbox {id:?} is {} and cannot be extended",
                    row.state
                ))),
            };
        }
        self.get(access, id).await
    }

    /// Destroys every sandbox whose TTL has run out, whatever its state (running,
    /// still creating, failed or lost); returns how many. Safe beside other replicas
    /// doing the same: each destroy first claims the sandbox with a conditional
    /// update (`running → destroying`, `creating → destroying`, or the finish of one
    /// that runs nowhere), so only one of them calls the worker.
    pub async fn prune_expired(&self) -> Result<usize, SandboxError> {
        self.prune(&Access::everything(), PruneSelection::EXPIRED)
            .await
    }

    /// Destroys the sandboxes `selection` names (expired ones, and those in state
    /// `lost` or `error`, whatever their expiry), of the teams `access` sees; returns
    /// how many.
    pub async fn prune(
        &self,
        access: &Access,
        selection: PruneSelection,
    ) -> Result<usize, SandboxError> {
        let mut ids = std::collections::BTreeSet::new();
        if selection.expired {
            ids.extend(self.store.expired_sandboxes(now_secs()).await?);
        }
        if selection.lost {
            ids.extend(self.store.sandboxes_in_state(SandboxState::Lost).await?);
        }
        if selection.error {
            ids.extend(self.store.sandboxes_in_state(SandboxState::Error).await?);
        }
        if access.team_filter().is_some() {
            let seen: std::collections::BTreeSet<String> =
                self.list(access).await?.into_iter().map(|s| s.id).collect();
            ids.retain(|id| seen.contains(id));
        }
        let mut pruned = 0;
        for id in ids {
            match self.destroy_now(&id).await {
                Ok(()) => pruned += 1,
                Err(SandboxError::Conflict(_) | SandboxError::Destroyed(_)) => {
                    tracing::debug!(sandbox_id = %id, "pruned sandbox taken by another destroy");
                }
                Err(err) => {
                    tracing::warn!(sandbox_id = %id, error = %err, "cannot prune sandbox")
                }
            }
        }
        Ok(pruned)
    }
}

impl Sandboxes {
    /// Best effort, in the background: destroys `sandbox_id` on a worker after a failed
    /// spawn. Whatever is missed there, reconciliation of the worker's inventory catches.
    pub(super) fn abandon_on_worker(
        &self,
        sandbox_id: &str,
        worker_id: &str,
        address: &str,
        generation: i64,
    ) {
        let Ok(client) = self.workers.client(worker_id, address) else {
            return;
        };
        let generation = u64::try_from(generation).unwrap_or(0);
        let sandbox_id = sandbox_id.to_owned();
        self.tasks.spawn(async move {
            if let Err(err) = client
                .destroy(&sandbox_id, generation, DESTROY_TIMEOUT)
                .await
            {
                tracing::debug!(%sandbox_id, worker_id = %client.worker_id(), error = %err, "cleanup after a failed spawn did not reach the worker");
            }
        });
    }
}

/// The outcome of work spawned so that it outlives its caller.
pub(super) async fn finish_detached<T>(
    task: tokio::task::JoinHandle<Result<T, SandboxError>>,
) -> Result<T, SandboxError> {
    match task.await {
        Ok(outcome) => outcome,
        Err(err) => {
            tracing::error!(error = %err, "sandbox task failed");
            Err(SandboxError::Unavailable(
                "the control plane could not finish the call".into(),
            ))
        }
    }
}

/// The lease of a sandbox row as a route, if it has one.
pub(super) fn lease_route(row: &crate::store::SandboxRow) -> Option<Route> {
    Some(Route {
        worker_id: row.worker_id.clone()?,
        address: row.advertise_addr.clone()?,
        generation: u64::try_from(row.generation?).unwrap_or(0),
        last_heartbeat_ms: row.last_heartbeat_ms.unwrap_or(0),
        team_id: row.team_id.clone(),
        workdir: row.workdir.clone(),
    })
}

/// `sbx-` and 16 hex digits.
pub(super) fn new_sandbox_id() -> String {
    format!("sbx-{}", &uuid::Uuid::new_v4().simple().to_string()[..16])
}

impl Sandboxes {
    /// Moves every drain along: past its deadline, what the worker still runs is
    /// destroyed; a drain completes only once the worker has no leases left and its
    /// provider, in a heartbeat since, reports no sandboxes.
    pub async fn progress_drains(&self) -> Result<usize, SandboxError> {
        let now = crate::clock::now_ms();
        let fresh_since = now - super::grace_ms(&self.settings);
        let mut completed = 0;
        for worker in self.store.list_workers().await? {
            if worker.drain_state != DrainState::Draining {
                continue;
            }
            let leases = self.store.leases_of(&worker.id).await?;
            if worker
                .drain_deadline_ms
                .is_some_and(|deadline| deadline <= now)
            {
                for lease in &leases {
                    let sandbox_id = &lease.sandbox_id;
                    match self.destroy_now(sandbox_id).await {
                        Ok(()) => {
                            tracing::info!(worker_id = %worker.id, %sandbox_id, "destroyed at the drain deadline")
                        }
                        Err(err) => {
                            tracing::warn!(worker_id = %worker.id, %sandbox_id, error = %err, "cannot destroy at the drain deadline")
                        }
                    }
                }
            }
            let confirmed = worker.reported_sandboxes == 0
                && worker.last_heartbeat_ms.is_some_and(|t| t >= fresh_since);
            if leases.is_empty() && confirmed && self.store.mark_drained(&worker.id).await? {
                tracing::info!(worker_id = %worker.id, "drain complete");
                completed += 1;
            }
        }
        Ok(completed)
    }
}
