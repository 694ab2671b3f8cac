//! `GET /api/v1/quotas/summary` and `GET /api/v1/pool/status`, in the shapes StacyVM's
//! SDK reads (`quota_summary()`, `pool_status()`), answered for the teams the caller
//! sees.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::schemas::ErrorBody;
use super::teams::{QuotaView, UsageView};
use super::{Authorized, ReadScope};
use crate::api::ApiState;
use crate::error::ApiError;
use crate::fleet::{WorkerStatus, WorkerView};

/// How many quota policies are set among the teams the caller sees. Exactly these
/// four fields: StacyVM's SDK builds its `QuotaSummary` from them and nothing else.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QuotaSummary {
    /// Teams counted.
    pub total: usize,
    pub with_max_sandboxes: usize,
    pub with_max_ttl: usize,
    /// Every team is under the fleet's exec timeout limit (`sandboxes.max_exec_timeout`).
    pub with_max_exec_timeout: usize,
}

/// Counts of quota policies over the caller's teams (read scope).
#[utoipa::path(get, path = "/api/v1/quotas/summary", tag = "teams", security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "Policy counts", body = QuotaSummary)))]
pub async fn summary(
    Authorized { caller, .. }: Authorized<ReadScope>,
    State(state): State<ApiState>,
) -> Result<Json<QuotaSummary>, ApiError> {
    let teams = state.teams.list(&caller).await?;
    Ok(Json(QuotaSummary {
        total: teams.len(),
        with_max_sandboxes: teams
            .iter()
            .filter(|t| t.settings.quota.max_sandboxes.is_some())
            .count(),
        with_max_ttl: teams
            .iter()
            .filter(|t| t.settings.quota.max_ttl.is_some())
            .count(),
        with_max_exec_timeout: teams.len(),
    }))
}

/// Sandboxes, CPUs and memory (MiB); 0 CPUs or memory on a worker: not counted there.
#[derive(Debug, Default, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct Amounts {
    pub sandboxes: i64,
    pub vcpus: i64,
    pub memory_mb: i64,
}

/// One pool of workers as a team sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PoolView {
    pub name: String,
    /// Workers in the pool, and how many of them are online and ready.
    pub workers: usize,
    pub online: usize,
    /// What the online workers can hold, hold now, and have left.
    pub capacity: Amounts,
    pub used: Amounts,
    pub available: Amounts,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PoolStatus {
    /// The team the answer is for.
    pub team: String,
    /// The pools the team may place sandboxes in.
    pub pools: Vec<PoolView>,
    pub quota: QuotaView,
    pub usage: UsageView,
}

/// The pool a worker belongs to.
fn pool_of(worker: &WorkerView) -> &str {
    &worker.pool
}

/// The fleet's capacity as the caller's team sees it: the pools it may use, their
/// workers and room, and its own quotas and usage (read scope).
#[utoipa::path(get, path = "/api/v1/pool/status", tag = "teams", security(("api_key" = []), ("bearer" = [])),
    params(("X-Tenant-Id" = Option<String>, Header, description = "The team to answer for (a cluster key; default: default)")),
    responses(
    (status = 200, description = "Pools, quota and usage", body = PoolStatus),
    (status = 404, description = "No such team", body = ErrorBody),
))]
pub async fn pool_status(
    Authorized { access, .. }: Authorized<ReadScope>,
    State(state): State<ApiState>,
) -> Result<Json<PoolStatus>, ApiError> {
    let team = access.creating_team().to_owned();
    let settings = state.teams.settings(&team).await?;
    let standing = state.sandboxes.standing(&team).await?;
    let mut pools: BTreeMap<String, PoolView> = BTreeMap::new();
    for worker in state.fleet.list_workers().await? {
        let pool = pool_of(&worker);
        if !settings.pools.is_empty() && !settings.pools.iter().any(|p| p == pool) {
            continue;
        }
        let view = pools.entry(pool.to_owned()).or_insert_with(|| PoolView {
            name: pool.to_owned(),
            workers: 0,
            online: 0,
            capacity: Amounts::default(),
            used: Amounts::default(),
            available: Amounts::default(),
        });
        view.workers += 1;
        if worker.status != WorkerStatus::Online || worker.cordoned {
            continue;
        }
        view.online += 1;
        let (capacity, used) = (&worker.capacity, &worker.allocated);
        view.capacity.sandboxes += capacity.max_sandboxes;
        view.capacity.vcpus += capacity.vcpus;
        view.capacity.memory_mb += capacity.memory_mb;
        view.used.sandboxes += used.sandboxes;
        view.used.vcpus += used.vcpus;
        view.used.memory_mb += used.memory_mb;
        view.available.sandboxes += (capacity.max_sandboxes - used.sandboxes).max(0);
        view.available.vcpus += (capacity.vcpus - used.vcpus).max(0);
        view.available.memory_mb += (capacity.memory_mb - used.memory_mb).max(0);
    }
    Ok(Json(PoolStatus {
        team,
        pools: pools.into_values().collect(),
        quota: QuotaView::from(&standing.quota),
        usage: UsageView::from(&standing.usage),
    }))
}
