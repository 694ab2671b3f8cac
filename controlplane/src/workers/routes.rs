//! Where running sandboxes live, remembered for a moment: sandbox id → (lease holder,
//! its address, lease generation, its last heartbeat). Routing an exec or a file call
//! would otherwise cost a store read before every worker call, which on SQLite is
//! two thread hand-offs and most of a routed call's time.
//!
//! A route is only a hint, never the authority: the worker's fence refuses a stale
//! generation and a sandbox it no longer holds, and the caller then forgets the route
//! and asks the store (see `Sandboxes::on_lease_holder`). A route is used for at most
//! [`ROUTE_TTL`] after it was read, and only while the heartbeat it was read with is
//! within the grace period, so a change made by another replica (a destroy, a worker
//! gone silent) is seen within that time; changes made here forget the route at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a route read from the store is used without reading it again.
pub const ROUTE_TTL: Duration = Duration::from_secs(1);
/// Beyond this many routes, stale ones are dropped (and all, if that is not enough).
const MAX_ROUTES: usize = 100_000;

/// The lease holder of a running sandbox, as last read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub worker_id: String,
    pub address: String,
    pub generation: u64,
    /// The worker's last heartbeat (unix ms) when the route was read.
    pub last_heartbeat_ms: i64,
    /// The team that owns the sandbox (it never changes), so a routed call checks
    /// who may make it without reading the store.
    pub team_id: String,
    /// Where its commands and sessions start when they name none ("": the worker's
    /// default, `/workspace`); it never changes either.
    pub workdir: String,
}

#[derive(Debug)]
struct Entry {
    /// `None` once the sandbox left this worker (destroyed, lost): only its worker id
    /// is still answered, for the audit record of the call that ended it.
    route: Option<Route>,
    worker_id: String,
    noted_at: Instant,
}

#[derive(Debug)]
pub struct Routes {
    ttl: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

impl Default for Routes {
    fn default() -> Self {
        Self::new(ROUTE_TTL)
    }
}

impl Routes {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The route of `sandbox_id`, if it was read less than the TTL ago and its
    /// worker had heartbeated at or after `fresh_since_ms` then.
    pub fn live(&self, sandbox_id: &str, fresh_since_ms: i64) -> Option<Route> {
        let entries = self.lock();
        let entry = entries.get(sandbox_id)?;
        let route = entry.route.as_ref()?;
        (entry.noted_at.elapsed() < self.ttl && route.last_heartbeat_ms >= fresh_since_ms)
            .then(|| route.clone())
    }

    /// The worker `sandbox_id` was last seen on, even after it left it (within the
    /// TTL): what the audit record of a destroy names.
    pub fn worker_of(&self, sandbox_id: &str) -> Option<String> {
        let entries = self.lock();
        let entry = entries.get(sandbox_id)?;
        (entry.noted_at.elapsed() < self.ttl).then(|| entry.worker_id.clone())
    }

    /// The team that owns `sandbox_id`, if its route is remembered (a sandbox's team
    /// never changes, so any remembered route answers, however old).
    pub fn team_of(&self, sandbox_id: &str) -> Option<String> {
        let entries = self.lock();
        Some(entries.get(sandbox_id)?.route.as_ref()?.team_id.clone())
    }

    pub fn remember(&self, sandbox_id: &str, route: Route) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= MAX_ROUTES && !entries.contains_key(sandbox_id) {
            let ttl = self.ttl;
            entries.retain(|_, entry| entry.noted_at.elapsed() < ttl);
            if entries.len() >= MAX_ROUTES {
                entries.clear();
            }
        }
        let worker_id = route.worker_id.clone();
        entries.insert(
            sandbox_id.to_owned(),
            Entry {
                route: Some(route),
                worker_id,
                noted_at: Instant::now(),
            },
        );
    }

    /// Stops routing to `sandbox_id` (it is being destroyed, was lost, or its worker
    /// refused it); its worker id stays answerable for the TTL.
    pub fn forget(&self, sandbox_id: &str) {
        let mut entries = self.lock();
        if let Some(entry) = entries.get_mut(sandbox_id) {
            entry.route = None;
        }
    }

    /// Stops routing to every sandbox on `worker_id` (it was revoked).
    pub fn forget_worker(&self, worker_id: &str) {
        let mut entries = self.lock();
        for entry in entries.values_mut() {
            if entry.worker_id == worker_id {
                entry.route = None;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(worker: &str, heartbeat_ms: i64) -> Route {
        Route {
            worker_id: worker.into(),
            address: "127.0.0.1:1".into(),
            generation: 3,
            last_heartbeat_ms: heartbeat_ms,
            team_id: "default".into(),
            workdir: String::new(),
        }
    }

    #[test]
    fn a_route_is_used_only_while_its_heartbeat_is_fresh() {
        let routes = Routes::default();
        routes.remember("s1", route("w1", 1_000));
        assert_eq!(routes.live("s1", 1_000), Some(route("w1", 1_000)));
        assert_eq!(
            routes.live("s1", 1_001),
            None,
            "heartbeat older than the grace"
        );
        assert_eq!(routes.live("s2", 0), None);
    }

    #[test]
    fn a_route_expires_after_its_ttl() {
        let routes = Routes::new(Duration::from_millis(20));
        routes.remember("s1", route("w1", 0));
        assert!(routes.live("s1", 0).is_some());
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(routes.live("s1", 0), None);
        assert_eq!(routes.worker_of("s1"), None);
    }

    #[test]
    fn forgotten_routes_keep_only_their_worker() {
        let routes = Routes::default();
        routes.remember("s1", route("w1", 0));
        routes.remember("s2", route("w2", 0));
        routes.remember("s3", route("w1", 0));
        routes.forget("s1");
        assert_eq!(routes.live("s1", 0), None);
        assert_eq!(routes.worker_of("s1").as_deref(), Some("w1"));
        routes.forget_worker("w1");
        assert_eq!(routes.live("s3", 0), None);
        assert!(routes.live("s2", 0).is_some());
    }

    #[test]
    fn a_zero_ttl_remembers_nothing() {
        let routes = Routes::new(Duration::ZERO);
        routes.remember("s1", route("w1", 0));
        assert_eq!(routes.live("s1", 0), None);
    }
}
