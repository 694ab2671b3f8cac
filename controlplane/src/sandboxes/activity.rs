//! When each sandbox was last used, for `auto_stop` and the `last_active_at` it shows.
//! Use is what a person or an agent does in it: an exec, a file call, a session
//! opened or attached, a port connection. Looking at it (its JSON, logs, the list of
//! its sessions) is not use.
//!
//! A call notes use with [`Activity::touch`]: written to the store in the background
//! at most once per interval per sandbox, so a client calling in a loop does not cost
//! a write per call (each control plane remembers what it wrote; the store's
//! conditional `UPDATE` also skips a write another replica made within the interval).
//! A session stream or a port connection holds an [`Activity::hold`] guard while it is
//! open, which touches the sandbox every interval until it is dropped: someone
//! attached to a shell or a preview is using the sandbox even while it is quiet.
//!
//! So the store's `active_at` is at most one interval (plus a second of rounding)
//! behind the last use, and the idle sweep ([`Sandboxes::stop_idle`]) allows that
//! much: a sandbox is never stopped before its `auto_stop` has passed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::{CancellationToken, DropGuard};

use super::{SandboxError, Sandboxes};
use crate::clock::now_secs;
use crate::store::{SandboxRow, Store};

/// Beyond this many sandboxes the memory of writes starts over rather than grow.
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Clone)]
pub(super) struct Activity {
    store: Store,
    interval: Duration,
    written: Arc<Mutex<HashMap<String, Instant>>>,
}

impl Activity {
    pub(super) fn new(store: Store, interval: Duration) -> Self {
        Self {
            store,
            interval: interval.max(Duration::from_secs(1)),
            written: Arc::default(),
        }
    }

    /// How far behind the last use the store's `active_at` may be, in whole seconds.
    pub(super) fn slack_secs(&self) -> i64 {
        i64::try_from(self.interval.as_secs())
            .unwrap_or(i64::MAX)
            .saturating_add(1)
    }

    /// Notes a use of sandbox `id` now, unless this control plane wrote one within the
    /// interval. The write happens in the background; a failed one is logged and
    /// forgotten (a call is never refused for it).
    pub(super) fn touch(&self, id: &str) {
        if !self.claim(id) {
            return;
        }
        let (store, id) = (self.store.clone(), id.to_owned());
        // the store skips it if any replica wrote within most of the interval (a
        // whole one would skip the ticks of a held session that land on the second)
        let min_interval = i64::try_from(self.interval.as_secs())
            .unwrap_or(i64::MAX)
            .saturating_sub(1);
        tokio::spawn(async move {
            if let Err(err) = store.touch_sandbox(&id, now_secs(), min_interval).await {
                tracing::warn!(sandbox_id = %id, error = %err, "cannot record a sandbox's activity");
            }
        });
    }

    /// Notes a use of sandbox `id` now and every interval after, until the guard is
    /// dropped (an open session or port connection).
    pub(super) fn hold(&self, id: &str) -> DropGuard {
        let open = CancellationToken::new();
        let closed = open.clone();
        let (activity, id) = (self.clone(), id.to_owned());
        tokio::spawn(async move {
            loop {
                activity.touch(&id);
                tokio::select! {
                    () = closed.cancelled() => return,
                    () = tokio::time::sleep(activity.interval) => {}
                }
            }
        });
        open.drop_guard()
    }

    /// Whether a write of `id`'s use is due; when it is, notes it as written now (so
    /// calls arriving together write once).
    fn claim(&self, id: &str) -> bool {
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        // a tick of a held session lands a hair under a whole interval after the last
        if written
            .get(id)
            .is_some_and(|at| at.elapsed() + Duration::from_millis(50) < self.interval)
        {
            return false;
        }
        if written.len() >= MAX_ENTRIES {
            written.clear();
        }
        written.insert(id.to_owned(), Instant::now());
        true
    }

    /// Forgets what was written for `id`: its next use is written at once (after a
    /// start, whose own write the store made).
    pub(super) fn forget(&self, id: &str) {
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

impl Sandboxes {
    /// Stops the running sandboxes whose `auto_stop` has passed since their last use
    /// (plus the slack of how often use is written); returns how many. Safe beside
    /// other replicas doing the same, and beside a call arriving meanwhile: the store
    /// moves a sandbox to `stopped` only if no use was written since it was read.
    pub async fn stop_idle(&self) -> Result<usize, SandboxError> {
        let idle = self
            .store
            .idle_sandboxes(now_secs(), self.activity.slack_secs())
            .await?;
        let mut stopped = 0;
        for row in idle {
            let id = row.id.clone();
            match self.stop_if_idle(row).await {
                Ok(true) => {
                    tracing::info!(sandbox_id = %id, "idle sandbox stopped (auto_stop)");
                    stopped += 1;
                }
                Ok(false) => {
                    tracing::debug!(sandbox_id = %id, "idle sandbox used or moved meanwhile")
                }
                Err(err) => {
                    tracing::warn!(sandbox_id = %id, error = %err, "cannot stop an idle sandbox")
                }
            }
        }
        Ok(stopped)
    }

    /// Stops `row` (as the idle query read it) unless it was used since.
    async fn stop_if_idle(&self, row: SandboxRow) -> Result<bool, SandboxError> {
        let Some(route) = super::lifecycle::lease_route(&row) else {
            return Ok(false);
        };
        if !self.store.stop_idle_sandbox(&row.id, row.active_at).await? {
            return Ok(false);
        }
        self.stop_on_worker(&row.id, route).await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::temp_store;

    #[tokio::test]
    async fn a_sandbox_is_due_once_per_interval() {
        let (_dir, store) = temp_store().await;
        let activity = Activity::new(store, Duration::from_secs(30));
        assert!(activity.claim("s1"));
        assert!(!activity.claim("s1"));
        assert!(activity.claim("s2"), "each sandbox on its own");
        activity.forget("s1");
        assert!(activity.claim("s1"), "forgotten: due at once");
    }

    #[tokio::test]
    async fn the_slack_covers_the_interval_and_rounding() {
        let (_dir, store) = temp_store().await;
        assert_eq!(
            Activity::new(store.clone(), Duration::from_secs(30)).slack_secs(),
            31
        );
        // below a second is taken as a second
        assert_eq!(
            Activity::new(store, Duration::from_millis(10)).slack_secs(),
            2
        );
    }
}
