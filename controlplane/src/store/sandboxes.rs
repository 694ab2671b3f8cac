//! `sandboxes`: the sandbox records and their states, and scheduling (capacity
//! reservation plus lease acquisition in one transaction). Renewing, expiring and
//! losing leases is in `leases.rs`; a sandbox's last use (auto-stop) in `activity.rs`.

use super::{Pool, SandboxState, Store, StoreError, postgres, sqlite, teams};

pub(super) const SANDBOX_COLUMNS: &str = "s.id, s.state, s.provider, s.image, s.memory_mb, s.vcpus, \
     s.owner_id, s.template, s.metadata, s.worker_id, s.vm_id, s.created_at, s.expires_at, \
     s.destroyed_at, s.error, s.internet, s.team_id, l.generation, w.advertise_addr, \
     w.last_heartbeat_ms, s.phases, s.workdir, s.shell, \
     s.ports, s.auto_stop_secs";

/// When sandbox `s` last had activity or started running, whichever is later (unix
/// seconds; 0: it never ran).
pub(super) const ACTIVE_AT: &str = "CASE WHEN s.active_at * 1000 > COALESCE(s.started_at_ms, 0) \
     THEN s.active_at ELSE COALESCE(s.started_at_ms, 0) / 1000 END AS active_at";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SandboxRow {
    pub id: String,
    #[sqlx(try_from = "String")]
    pub state: SandboxState,
    pub provider: String,
    pub image: String,
    pub memory_mb: i64,
    pub vcpus: i64,
    pub owner_id: String,
    pub template: String,
    pub metadata: String,
    pub worker_id: Option<String>,
    pub vm_id: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub destroyed_at: Option<i64>,
    pub error: String,
    /// Whether the sandbox may reach addresses outside its own network.
    pub internet: bool,
    /// The team that owns it (`owner_id` is the user).
    pub team_id: String,
    /// The current lease's generation; `None` without a lease.
    pub generation: Option<i64>,
    /// Where the lease holder listens.
    pub advertise_addr: Option<String>,
    /// When the lease holder last heartbeated (unix ms).
    pub last_heartbeat_ms: Option<i64>,
    /// Its startup phases, a JSON list (see `sandboxes::phases`).
    pub phases: String,
    /// Where its commands and sessions start when they name none ("": `/workspace`).
    pub workdir: String,
    /// What an interactive session with no command runs ("": `sh`).
    pub shell: String,
    /// The ports its template serves previews on, a JSON list.
    pub ports: String,
    /// Stopped after this long without activity (seconds); 0: never.
    pub auto_stop_secs: i64,
    /// When it last had exec, file, session or port traffic, or started running,
    /// whichever is later (unix seconds; written at most once per activity
    /// interval); 0: it never ran.
    pub active_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewSandbox {
    pub id: String,
    pub provider: String,
    pub image: String,
    pub memory_mb: i64,
    pub vcpus: i64,
    pub owner_id: String,
    pub template: String,
    pub metadata: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub internet: bool,
    /// The team that owns it; its quotas are checked when it is placed.
    pub team_id: String,
    /// Its template's `workdir` and `shell` ("": the defaults), and `ports` (a JSON
    /// list).
    pub workdir: String,
    pub shell: String,
    pub ports: String,
    /// Stopped after this long without activity (seconds); 0: never.
    pub auto_stop_secs: i64,
}

/// A worker that may take a sandbox, as the scheduler sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CandidateRow {
    pub id: String,
    pub advertise_addr: String,
    pub providers: String,
    pub reserved: i64,
    pub max_sandboxes: i64,
    /// 0: memory is not counted on this worker.
    pub memory_mb: i64,
    pub reserved_memory_mb: i64,
    /// 0: CPUs are not counted on this worker.
    pub vcpus: i64,
    pub reserved_vcpus: i64,
    /// Its pool and labels (a JSON object), for the scheduler's pools and constraints.
    pub pool: String,
    pub labels: String,
}

impl CandidateRow {
    /// How full the worker is, 0 to 1: the fullest of its slots, memory and CPUs.
    pub fn load(&self) -> f64 {
        let fraction = |used: i64, total: i64| {
            if total > 0 {
                used as f64 / total as f64
            } else {
                0.0
            }
        };
        fraction(self.reserved, self.max_sandboxes)
            .max(fraction(self.reserved_memory_mb, self.memory_mb))
            .max(fraction(self.reserved_vcpus, self.vcpus))
    }
}

/// What a successful placement holds.
#[derive(Debug, Clone)]
pub struct Placement {
    pub worker_id: String,
    pub advertise_addr: String,
    pub generation: i64,
}

/// A sandbox still being created long after it was placed ([`Store::unconfirmed_spawns`]).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UnconfirmedSpawn {
    pub sandbox_id: String,
    /// The generation of the lease its worker holds.
    pub generation: i64,
}

/// Where [`Store::create_placed_sandbox`] put a new sandbox.
#[derive(Debug, Clone)]
pub struct CreatedPlacement {
    pub placement: Placement,
    /// The worker's last heartbeat (unix ms) at the time of placement.
    pub last_heartbeat_ms: i64,
}

/// A sandbox joined with its lease and the lease holder's address and heartbeat.
pub(super) const SANDBOX_FROM: &str = "FROM sandboxes s \
     LEFT JOIN leases l ON l.sandbox_id = s.id \
     LEFT JOIN workers w ON w.id = l.worker_id";

/// Where a new sandbox was placed, as the backend's placing statement reads it back.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(super) struct Placed {
    pub advertise_addr: String,
    /// The worker's last heartbeat (unix ms).
    pub last_heartbeat_ms: i64,
}

/// The eligibility check and slot reservation for a new sandbox, shared by both
/// backends' placing statements (`sqlite::place_new_sandbox`,
/// `postgres::place_new_sandbox`): `$11` is the worker, `$12` the freshness bound (see
/// [`bind_placement!`]).
pub(super) const RESERVE_SLOT: &str = "UPDATE workers SET reserved = reserved + 1, \
       reserved_memory_mb = reserved_memory_mb + $4, reserved_vcpus = reserved_vcpus + $5 \
     WHERE id = $11 AND state = 'active' AND reserved < max_sandboxes \
       AND (memory_mb = 0 OR reserved_memory_mb + $4 <= memory_mb) \
       AND (vcpus = 0 OR $5 <= vcpus) \
       AND reported_state = 'ready' AND NOT cordoned AND drain_state = '' \
       AND last_heartbeat_ms >= $12";

/// The new sandbox's columns and their values (`$11` its worker), for the same
/// statements.
pub(super) const SANDBOX_INSERT: &str = "INSERT INTO sandboxes (id, state, provider, image, \
     memory_mb, vcpus, owner_id, template, metadata, created_at, expires_at, worker_id, \
     error, internet, team_id, workdir, shell, ports, auto_stop_secs) \
     SELECT $1, 'creating', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, '', $14, $15, $16, $17, \
     $18, $19";

/// Binds a new sandbox's values as `$1`…`$10`, then `$11` the worker, `$12` the
/// freshness bound, `$13` the lease expiry, `$14` the egress flag, `$15` the team,
/// `$16` the workdir, `$17` the shell, `$18` the ports and `$19` the auto-stop: the
/// numbering of every placing statement.
macro_rules! bind_placement {
    ($query:expr, $sandbox:expr, $worker_id:expr, $fresh_since_ms:expr, $lease_expires_at_ms:expr) => {
        $query
            .bind(&$sandbox.id)
            .bind(&$sandbox.provider)
            .bind(&$sandbox.image)
            .bind($sandbox.memory_mb)
            .bind($sandbox.vcpus)
            .bind(&$sandbox.owner_id)
            .bind(&$sandbox.template)
            .bind(&$sandbox.metadata)
            .bind($sandbox.created_at)
            .bind($sandbox.expires_at)
            .bind($worker_id)
            .bind($fresh_since_ms)
            .bind($lease_expires_at_ms)
            .bind($sandbox.internet)
            .bind(&$sandbox.team_id)
            .bind(&$sandbox.workdir)
            .bind(&$sandbox.shell)
            .bind(&$sandbox.ports)
            .bind($sandbox.auto_stop_secs)
    };
}
pub(super) use bind_placement;

/// Gives worker `$worker_id` back the capacity slot, memory and CPUs sandbox
/// `$sandbox_id` held, on `$conn` inside the caller's transaction; evaluates to the
/// statement's future.
macro_rules! release_slot {
    ($conn:expr, $worker_id:expr, $sandbox_id:expr) => {
        sqlx::query(
            "UPDATE workers SET reserved = reserved - 1, \
                 reserved_memory_mb = reserved_memory_mb \
                     - COALESCE((SELECT memory_mb FROM sandboxes WHERE id = $2), 0), \
                 reserved_vcpus = reserved_vcpus \
                     - COALESCE((SELECT vcpus FROM sandboxes WHERE id = $2), 0) \
             WHERE id = $1 AND reserved > 0",
        )
        .bind($worker_id)
        .bind($sandbox_id)
        .execute($conn)
    };
}
pub(super) use release_slot;

/// Deletes `$sandbox_id`'s lease if `$worker_id` still holds it at `$generation`, on
/// `$conn` inside the caller's transaction; evaluates to the statement's future (one
/// row affected: the lease was still that one).
macro_rules! release_lease_at {
    ($conn:expr, $sandbox_id:expr, $worker_id:expr, $generation:expr) => {
        sqlx::query(
            "DELETE FROM leases WHERE sandbox_id = $1 AND worker_id = $2 AND generation = $3",
        )
        .bind($sandbox_id)
        .bind($worker_id)
        .bind($generation)
        .execute($conn)
    };
}
pub(super) use release_lease_at;

impl Store {
    pub async fn insert_sandbox(&self, sandbox: &NewSandbox) -> Result<(), StoreError> {
        with_write_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO sandboxes (id, state, provider, image, memory_mb, vcpus, owner_id, \
                     template, metadata, created_at, expires_at, internet, team_id, workdir, \
                     shell, ports, auto_stop_secs) \
                 VALUES ($1, 'creating', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
                     $14, $15, $16)",
            )
            .bind(&sandbox.id)
            .bind(&sandbox.provider)
            .bind(&sandbox.image)
            .bind(sandbox.memory_mb)
            .bind(sandbox.vcpus)
            .bind(&sandbox.owner_id)
            .bind(&sandbox.template)
            .bind(&sandbox.metadata)
            .bind(sandbox.created_at)
            .bind(sandbox.expires_at)
            .bind(sandbox.internet)
            .bind(&sandbox.team_id)
            .bind(&sandbox.workdir)
            .bind(&sandbox.shell)
            .bind(&sandbox.ports)
            .bind(sandbox.auto_stop_secs)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    pub async fn get_sandbox(&self, id: &str) -> Result<Option<SandboxRow>, StoreError> {
        let sql = format!("SELECT {SANDBOX_COLUMNS}, {ACTIVE_AT} {SANDBOX_FROM} WHERE s.id = $1");
        let row = with_pool!(self, |pool| {
            sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?
        });
        Ok(row)
    }

    /// Sandboxes that are not destroyed, oldest first.
    pub async fn list_sandboxes(&self) -> Result<Vec<SandboxRow>, StoreError> {
        let sql = format!(
            "SELECT {SANDBOX_COLUMNS}, {ACTIVE_AT} {SANDBOX_FROM} \
             WHERE s.state <> 'destroyed' ORDER BY s.created_at, s.id"
        );
        let rows = with_pool!(self, |pool| sqlx::query_as(&sql).fetch_all(pool).await?);
        Ok(rows)
    }

    /// Workers that heartbeated since `fresh_since_ms`, are active and ready, and have
    /// room left, least loaded first.
    /// Workers that may take a sandbox of `memory_mb` and `vcpus` now, least loaded
    /// (by the fullest of slots, memory and CPUs: [`CandidateRow::load`]) first.
    pub async fn schedulable_workers(
        &self,
        fresh_since_ms: i64,
        memory_mb: i64,
        vcpus: i64,
    ) -> Result<Vec<CandidateRow>, StoreError> {
        let mut rows: Vec<CandidateRow> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT id, advertise_addr, providers, reserved, max_sandboxes, memory_mb, \
                     reserved_memory_mb, vcpus, reserved_vcpus, pool, labels FROM workers \
                 WHERE state = 'active' AND reported_state = 'ready' AND NOT cordoned \
                   AND drain_state = '' AND last_heartbeat_ms >= $1 \
                   AND reserved < max_sandboxes \
                   AND (memory_mb = 0 OR reserved_memory_mb + $2 <= memory_mb) \
                   AND (vcpus = 0 OR $3 <= vcpus)",
            )
            .bind(fresh_since_ms)
            .bind(memory_mb)
            .bind(vcpus)
            .fetch_all(pool)
            .await?
        });
        rows.sort_by(|a, b| {
            a.load()
                .total_cmp(&b.load())
                .then(a.reserved.cmp(&b.reserved))
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(rows)
    }

    /// Records a new sandbox already placed: on the first of `candidates` (worker ids,
    /// in order of preference) that is still eligible (active, ready, not cordoned or
    /// draining, heartbeat at or after `fresh_since_ms`) and has room, one slot is
    /// reserved, the sandbox inserted as `creating` on it and its first lease taken,
    /// atomically (a candidate that cannot take it leaves nothing behind). The checks
    /// sit in the reserving `UPDATE`, so a drain or cordon that lands after the caller
    /// listed its candidates still keeps the sandbox off that worker. The same
    /// statement checks the sandbox's team has room under its quotas; when it has not,
    /// nothing is recorded and the answer is [`StoreError::OverQuota`] (or
    /// [`StoreError::UnknownTeam`] for a team deleted meanwhile). When no worker has
    /// room the sandbox is recorded as `error` with `full_message` and `None` is
    /// returned.
    pub async fn create_placed_sandbox(
        &self,
        sandbox: &NewSandbox,
        candidates: &[String],
        fresh_since_ms: i64,
        lease_expires_at_ms: i64,
        full_message: &str,
    ) -> Result<Option<CreatedPlacement>, StoreError> {
        for worker_id in candidates {
            let placed = match &self.pool {
                Pool::Sqlite(connections) => {
                    sqlite::place_new_sandbox(
                        connections,
                        sandbox,
                        worker_id,
                        fresh_since_ms,
                        lease_expires_at_ms,
                    )
                    .await?
                }
                Pool::Postgres(pool) => {
                    postgres::place_new_sandbox(
                        pool,
                        sandbox,
                        worker_id,
                        fresh_since_ms,
                        lease_expires_at_ms,
                    )
                    .await?
                }
            };
            let Some(placed) = placed else {
                self.check_quota_room(sandbox).await?;
                continue;
            };
            return Ok(Some(CreatedPlacement {
                placement: Placement {
                    worker_id: worker_id.clone(),
                    advertise_addr: placed.advertise_addr,
                    generation: 1,
                },
                last_heartbeat_ms: placed.last_heartbeat_ms,
            }));
        }
        with_write_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO sandboxes (id, state, provider, image, memory_mb, vcpus, owner_id, \
                     template, metadata, created_at, expires_at, error, destroyed_at, internet, \
                     team_id) \
                 VALUES ($1, 'error', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            )
            .bind(&sandbox.id)
            .bind(&sandbox.provider)
            .bind(&sandbox.image)
            .bind(sandbox.memory_mb)
            .bind(sandbox.vcpus)
            .bind(&sandbox.owner_id)
            .bind(&sandbox.template)
            .bind(&sandbox.metadata)
            .bind(sandbox.created_at)
            .bind(sandbox.expires_at)
            .bind(full_message)
            .bind(sandbox.created_at)
            .bind(sandbox.internet)
            .bind(&sandbox.team_id)
            .execute(pool)
            .await?;
        });
        Ok(None)
    }

    /// Whether `sandbox`'s team (still) exists and has room for it under its quotas:
    /// a placement that placed nothing asks, to tell a full quota from a full worker.
    async fn check_quota_room(&self, sandbox: &NewSandbox) -> Result<(), StoreError> {
        let (exists, room): (bool, bool) = with_pool!(self, |pool| {
            sqlx::query_as(&teams::QUOTA_ROOM)
                .bind(&sandbox.team_id)
                .bind(sandbox.memory_mb)
                .bind(sandbox.vcpus)
                .fetch_one(pool)
                .await?
        });
        match (exists, room) {
            (false, _) => Err(StoreError::UnknownTeam(sandbox.team_id.clone())),
            (true, false) => Err(StoreError::OverQuota(sandbox.team_id.clone())),
            (true, true) => Ok(()),
        }
    }

    /// Moves a sandbox from one of `from` states to `to`; false when it was in none.
    /// Conditional, so of two replicas racing for the same change exactly one wins.
    pub async fn transition_sandbox(
        &self,
        id: &str,
        from: &[SandboxState],
        to: SandboxState,
    ) -> Result<bool, StoreError> {
        // the states' own text, never user input
        let from = from
            .iter()
            .map(|state| format!("'{}'", state.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!("UPDATE sandboxes SET state = $1 WHERE id = $2 AND state IN ({from})");
        let updated = with_write_pool!(self, |pool| {
            sqlx::query(&sql)
                .bind(to.as_str())
                .bind(id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(updated == 1)
    }

    /// Claims a running sandbox for destruction (`running → destroying`, noting when);
    /// false when it is not running. Of replicas racing to destroy one sandbox exactly
    /// one wins.
    pub async fn claim_destroy(&self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        match &self.pool {
            Pool::Sqlite(connections) => sqlite::claim_destroy(connections, id, now_ms).await,
            Pool::Postgres(pool) => postgres::claim_destroy(pool, id, now_ms).await,
        }
    }

    /// Claims a sandbox that is still being created for destruction (`creating →
    /// destroying`, noting when): its spawn may be in flight or was never confirmed (its
    /// control plane died). False when it is no longer being created. Of replicas racing
    /// to destroy one sandbox exactly one wins.
    pub async fn claim_destroy_creating(&self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        self.claim_destroy_from(id, SandboxState::Creating, now_ms)
            .await
    }

    /// Claims a sandbox in `from` (creating, stopped) for destruction; false when it
    /// is no longer in `from`. Of replicas racing exactly one wins.
    pub async fn claim_destroy_from(
        &self,
        id: &str,
        from: SandboxState,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let updated = with_write_pool!(self, |pool| {
            sqlx::query(
                "UPDATE sandboxes SET state = 'destroying', destroying_since_ms = $1 \
                 WHERE id = $2 AND state = $3",
            )
            .bind(now_ms)
            .bind(id)
            .bind(from.as_str())
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(updated == 1)
    }

    /// Moves a sandbox from `from` to `to` (running ⇄ stopped); false when it was not
    /// in `from` (another call moved it first).
    pub async fn move_sandbox_state(
        &self,
        id: &str,
        from: SandboxState,
        to: SandboxState,
    ) -> Result<bool, StoreError> {
        let updated = with_write_pool!(self, |pool| {
            sqlx::query("UPDATE sandboxes SET state = $1 WHERE id = $2 AND state = $3")
                .bind(to.as_str())
                .bind(id)
                .bind(from.as_str())
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(updated == 1)
    }

    /// Sandboxes of `worker_id` still `creating` though created before `created_before`
    /// (unix seconds), with the generation of the lease it holds: spawns nobody
    /// confirmed (the control plane that placed them died mid-spawn), by sandbox id.
    pub async fn unconfirmed_spawns(
        &self,
        worker_id: &str,
        created_before: i64,
    ) -> Result<Vec<UnconfirmedSpawn>, StoreError> {
        let rows = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT s.id AS sandbox_id, l.generation FROM sandboxes s \
                 JOIN leases l ON l.sandbox_id = s.id \
                 WHERE l.worker_id = $1 AND s.state = 'creating' AND s.created_at < $2 \
                 ORDER BY s.id",
            )
            .bind(worker_id)
            .bind(created_before)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// Ends a spawn that was never confirmed and that its worker does not hold: if
    /// `worker_id` still holds the lease at `generation` and the sandbox is still
    /// `creating`, the lease and the slot are released and the sandbox is `destroyed`
    /// with `reason`, in one transaction; false when anything moved meanwhile (or
    /// another replica ended it first).
    pub async fn abandon_spawn(
        &self,
        sandbox_id: &str,
        worker_id: &str,
        generation: i64,
        reason: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        // leases, then sandboxes, then workers: the order `mark_lost` takes them in
        in_write_tx!(self, |tx| {
            let released = release_lease_at!(&mut *tx, sandbox_id, worker_id, generation).await?;
            if released.rows_affected() == 0 {
                return Ok(false);
            }
            let ended = sqlx::query(
                "UPDATE sandboxes SET state = 'destroyed', error = $1, destroyed_at = $2 \
                 WHERE id = $3 AND state = 'creating'",
            )
            .bind(reason)
            .bind(now)
            .bind(sandbox_id)
            .execute(&mut *tx)
            .await?;
            if ended.rows_affected() == 0 {
                // marked running (or claimed) meanwhile: rolling back keeps its lease
                return Ok(false);
            }
            release_slot!(&mut *tx, worker_id, sandbox_id).await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Sandboxes claimed for destruction before `claimed_before_ms` (or before claims
    /// were timed) and still not destroyed: their claimer died without finishing.
    pub async fn stalled_destroys(
        &self,
        claimed_before_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        let ids = with_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT id FROM sandboxes WHERE state = 'destroying' \
                   AND (destroying_since_ms IS NULL OR destroying_since_ms < $1) ORDER BY id",
            )
            .bind(claimed_before_ms)
            .fetch_all(pool)
            .await?
        });
        Ok(ids)
    }

    /// Takes over a stalled destroy claim (one made before `claimed_before_ms`); false
    /// when it is no longer stalled, e.g. another replica took it over first.
    pub async fn reclaim_destroy(
        &self,
        id: &str,
        claimed_before_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let updated = with_write_pool!(self, |pool| {
            sqlx::query(
                "UPDATE sandboxes SET destroying_since_ms = $1 \
                 WHERE id = $2 AND state = 'destroying' \
                   AND (destroying_since_ms IS NULL OR destroying_since_ms < $3)",
            )
            .bind(now_ms)
            .bind(id)
            .bind(claimed_before_ms)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(updated == 1)
    }

    /// `creating → running` with the provider's id for it; false when the sandbox was
    /// no longer being created (a destroy or a lost worker moved it on).
    pub async fn mark_sandbox_running(
        &self,
        id: &str,
        vm_id: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        match &self.pool {
            Pool::Sqlite(connections) => sqlite::mark_running(connections, id, vm_id, now_ms).await,
            Pool::Postgres(pool) => postgres::mark_running(pool, id, vm_id, now_ms).await,
        }
    }

    /// Records a sandbox's startup phases (a JSON list), whatever its state.
    pub async fn set_sandbox_phases(&self, id: &str, phases: &str) -> Result<(), StoreError> {
        with_write_pool!(self, |pool| {
            sqlx::query("UPDATE sandboxes SET phases = $1 WHERE id = $2")
                .bind(phases)
                .bind(id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Ends a sandbox (`destroyed` or `error`): its lease is released and its worker's
    /// reservation returned, in one transaction; two replicas finishing the same
    /// sandbox return its slot once.
    pub async fn finish_sandbox(
        &self,
        id: &str,
        state: SandboxState,
        error: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        match &self.pool {
            Pool::Sqlite(connections) => {
                sqlite::finish_sandbox(connections, id, state, error, now).await
            }
            Pool::Postgres(pool) => postgres::finish_sandbox(pool, id, state, error, now).await,
        }
    }

    /// Moves a live sandbox's TTL and renews its lease to `lease_expires_at_ms` (never
    /// shortening it), in one transaction.
    pub async fn set_sandbox_expiry(
        &self,
        id: &str,
        expires_at: i64,
        lease_expires_at_ms: i64,
    ) -> Result<bool, StoreError> {
        in_write_tx!(self, |tx| {
            let updated = sqlx::query(
                "UPDATE sandboxes SET expires_at = $1 \
                 WHERE id = $2 AND state IN ('creating', 'running', 'stopped')",
            )
            .bind(expires_at)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            if updated.rows_affected() == 0 {
                return Ok(false);
            }
            sqlx::query(
                "UPDATE leases SET expires_at_ms = $1 WHERE sandbox_id = $2 AND expires_at_ms < $3",
            )
            .bind(lease_expires_at_ms)
            .bind(id)
            .bind(lease_expires_at_ms)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Ids of sandboxes whose TTL ran out before `now`, in every state but destroyed
    /// and destroying (a claimed destroy is finished, or taken over once stalled, by
    /// its own path): running, still creating, failed or lost alike.
    pub async fn expired_sandboxes(&self, now: i64) -> Result<Vec<String>, StoreError> {
        let ids = with_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT id FROM sandboxes \
                 WHERE state IN ('creating', 'running', 'stopped', 'error', 'lost') AND expires_at < $1 \
                 ORDER BY id",
            )
            .bind(now)
            .fetch_all(pool)
            .await?
        });
        Ok(ids)
    }

    /// Sandboxes in `state` (whatever their expiry), by id.
    pub async fn sandboxes_in_state(&self, state: SandboxState) -> Result<Vec<String>, StoreError> {
        let ids = with_pool!(self, |pool| {
            sqlx::query_scalar("SELECT id FROM sandboxes WHERE state = $1 ORDER BY id")
                .bind(state.as_str())
                .fetch_all(pool)
                .await?
        });
        Ok(ids)
    }
}
