//! Stop and start (`POST /api/v1/sandboxes/{id}/stop`, `/start`): a stopped sandbox
//! keeps its filesystem, its lease and its slot on the worker, runs no processes,
//! and refuses commands, files and ports with a 409 until it is started again.
//!
//! The store moves first on a stop (running → stopped, one conditional update, and
//! the route is forgotten, so nothing more is routed to it), then the worker stops
//! it; a worker that fails puts it back to running. A start asks the worker first and
//! moves the store last, so a crash in between leaves it `stopped` with its container
//! running: a second start (or a destroy) resolves that, as both are idempotent on
//! the worker.

use super::lifecycle::lease_route;
use super::{SandboxError, SandboxView, Sandboxes};
use crate::clock::now_secs;
use crate::store::SandboxState;
use crate::teams::Access;
use crate::workers::Route;

/// What a call on a stopped sandbox is told.
pub(super) fn stopped(sandbox_id: &str) -> SandboxError {
    SandboxError::Conflict(format!(
        "sandbox {sandbox_id:?} is stopped; start it with `berth sandbox start {sandbox_id}`"
    ))
}

impl Sandboxes {
    /// Stops a running sandbox; a stopped one is answered as it is.
    pub async fn stop(&self, access: &Access, id: &str) -> Result<SandboxView, SandboxError> {
        let row = self.live_row(access, id).await?;
        match row.state {
            SandboxState::Stopped => return Ok(self.view(row)),
            SandboxState::Running => {}
            other => return Err(not_now(id, other, "stopped")),
        }
        let route = lease_route(&row).ok_or_else(|| no_lease(id))?;
        if !self
            .store
            .move_sandbox_state(id, SandboxState::Running, SandboxState::Stopped)
            .await?
        {
            return Err(SandboxError::Conflict(format!(
                "sandbox {id:?} changed while it was being stopped; try again"
            )));
        }
        self.stop_on_worker(id, route).await?;
        tracing::info!(sandbox_id = %id, "sandbox stopped");
        self.get(access, id).await
    }

    /// Stops sandbox `id`, already `stopped` in the store, on the worker `route`
    /// names; a worker that fails puts it back to running.
    pub(super) async fn stop_on_worker(&self, id: &str, route: Route) -> Result<(), SandboxError> {
        self.routes().forget(id);
        let stopped = async {
            let client = self.workers.client(&route.worker_id, &route.address)?;
            client
                .stop(id, route.generation, self.settings.limits.spawn_timeout)
                .await?;
            Ok::<_, SandboxError>(())
        }
        .await;
        if let Err(err) = stopped {
            tracing::warn!(sandbox_id = %id, error = %err, "stop failed; the sandbox runs on");
            self.store
                .move_sandbox_state(id, SandboxState::Stopped, SandboxState::Running)
                .await?;
            return Err(err);
        }
        Ok(())
    }

    /// Starts a stopped sandbox and runs `on_start` in it (its template's, as the
    /// template is now; empty: none); a running one is answered as it is. A failing
    /// `on_start` stops it again and fails the start with what the script printed.
    pub async fn start(
        &self,
        access: &Access,
        id: &str,
        on_start: &str,
    ) -> Result<SandboxView, SandboxError> {
        let row = self.live_row(access, id).await?;
        match row.state {
            SandboxState::Running => return Ok(self.view(row)),
            SandboxState::Stopped => {}
            other => return Err(not_now(id, other, "started")),
        }
        let route = lease_route(&row).ok_or_else(|| no_lease(id))?;
        let client = self.workers.client(&route.worker_id, &route.address)?;
        let timeout = self.settings.limits.spawn_timeout;
        client.start(id, route.generation, timeout).await?;
        if !on_start.is_empty()
            && let Err(err) = self
                .run_on_start(&client, id, route.generation, on_start, &row.workdir)
                .await
        {
            // back to how it was: stopped, on the worker too
            if let Err(stop) = client.stop(id, route.generation, timeout).await {
                tracing::warn!(sandbox_id = %id, error = %stop, "cannot stop a sandbox whose on_start failed");
            }
            return Err(err);
        }
        // used now, so an auto-stop counts from here (noted before it is running, so
        // the idle sweep never sees it running with its old activity)
        self.store.touch_sandbox(id, now_secs(), 0).await?;
        self.activity.forget(id);
        self.store
            .move_sandbox_state(id, SandboxState::Stopped, SandboxState::Running)
            .await?;
        tracing::info!(sandbox_id = %id, "sandbox started");
        self.get(access, id).await
    }

    /// The sandbox's row, if `access` sees it and it is not destroyed.
    async fn live_row(
        &self,
        access: &Access,
        id: &str,
    ) -> Result<crate::store::SandboxRow, SandboxError> {
        let row = self.row_seen_by(access, id).await?;
        match row.state {
            SandboxState::Destroyed | SandboxState::Destroying => {
                Err(SandboxError::Destroyed(id.to_owned()))
            }
            _ => Ok(row),
        }
    }
}

fn not_now(id: &str, state: SandboxState, wanted: &str) -> SandboxError {
    SandboxError::Conflict(format!(
        "sandbox {id:?} is {state}; only a running or stopped sandbox can be {wanted}"
    ))
}

fn no_lease(id: &str) -> SandboxError {
    SandboxError::Unavailable(format!("sandbox {id:?} has no live lease"))
}
