//! `sandboxes` and `leases`: the sandbox records, scheduling (capacity reservation plus
//! lease acquisition in one transaction), lease renewal and release.

use super::{Store, StoreError};

const SANDBOX_COLUMNS: &str = "s.id, s.state, s.provider, s.image, s.memory_mb, s.vcpus, \
     s.owner_id, s.template, s.metadata, s.worker_id, s.vm_id, s.created_at, s.expires_at, \
     s.destroyed_at, s.error, l.generation, w.advertise_addr, w.last_heartbeat_ms";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SandboxRow {
    pub id: String,
    pub state: String,
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
    /// The current lease's generation; `None` without a lease.
    pub generation: Option<i64>,
    /// Where the lease holder listens.
    pub advertise_addr: Option<String>,
    /// When the lease holder last heartbeated (unix ms).
    pub last_heartbeat_ms: Option<i64>,
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
}

/// A worker that may take a sandbox, as the scheduler sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CandidateRow {
    pub id: String,
    pub advertise_addr: String,
    pub providers: String,
    pub reserved: i64,
    pub max_sandboxes: i64,
}

/// What a successful placement holds.
#[derive(Debug, Clone)]
pub struct Placement {
    pub worker_id: String,
    pub advertise_addr: String,
    pub generation: i64,
}

impl Store {
    pub async fn insert_sandbox(&self, sandbox: &NewSandbox) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sandboxes (id, state, provider, image, memory_mb, vcpus, owner_id, \
                 template, metadata, created_at, expires_at) \
             VALUES ($1, 'creating', $2, $3, $4, $5, $6, $7, $8, $9, $10)",
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
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn get_sandbox(&self, id: &str) -> Result<Option<SandboxRow>, StoreError> {
        let row = sqlx::query_as(&format!(
            "SELECT {SANDBOX_COLUMNS} FROM sandboxes s \
             LEFT JOIN leases l ON l.sandbox_id = s.id \
             LEFT JOIN workers w ON w.id = l.worker_id \
             WHERE s.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row)
    }

    /// Sandboxes that are not destroyed, oldest first.
    pub async fn list_sandboxes(&self) -> Result<Vec<SandboxRow>, StoreError> {
        let rows = sqlx::query_as(&format!(
            "SELECT {SANDBOX_COLUMNS} FROM sandboxes s \
             LEFT JOIN leases l ON l.sandbox_id = s.id \
             LEFT JOIN workers w ON w.id = l.worker_id \
             WHERE s.state <> 'destroyed' ORDER BY s.created_at, s.id"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Workers that heartbeated since `fresh_since_ms`, are active and ready, and have
    /// room left, least loaded first.
    pub async fn schedulable_workers(
        &self,
        fresh_since_ms: i64,
    ) -> Result<Vec<CandidateRow>, StoreError> {
        let rows = sqlx::query_as(
            "SELECT id, advertise_addr, providers, reserved, max_sandboxes FROM workers \
             WHERE state = 'active' AND reported_state = 'ready' AND cordoned = 0 AND drain_state = '' \
               AND last_heartbeat_ms >= $1 AND reserved < max_sandboxes \
             ORDER BY CAST(reserved AS REAL) / max_sandboxes, reserved, id",
        )
        .bind(fresh_since_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Reserves one slot on `worker_id` (a conditional increment, so concurrent
    /// schedulers cannot over-fill it), takes the sandbox's lease and records the
    /// worker on the sandbox, in one transaction. `Ok(None)` when the worker is full.
    pub async fn place_sandbox(
        &self,
        sandbox_id: &str,
        worker_id: &str,
        lease_expires_at_ms: i64,
    ) -> Result<Option<Placement>, StoreError> {
        let mut tx = self.begin_write().await?;
        let reserved: Option<String> = sqlx::query_scalar(
            "UPDATE workers SET reserved = reserved + 1 \
             WHERE id = $1 AND state = 'active' AND reserved < max_sandboxes \
             RETURNING advertise_addr",
        )
        .bind(worker_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(advertise_addr) = reserved else {
            return Ok(None);
        };
        // a lease moving away from another worker gives that worker its slot back
        let previous: Option<String> =
            sqlx::query_scalar("SELECT worker_id FROM leases WHERE sandbox_id = $1")
                .bind(sandbox_id)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(previous) = previous {
            release_slot(&mut tx, &previous).await?;
        }
        let generation: i64 = sqlx::query_scalar(
            "INSERT INTO leases (sandbox_id, worker_id, generation, expires_at_ms) \
             VALUES ($1, $2, 1, $3) \
             ON CONFLICT (sandbox_id) DO UPDATE SET worker_id = excluded.worker_id, \
                 generation = leases.generation + 1, expires_at_ms = excluded.expires_at_ms \
             RETURNING generation",
        )
        .bind(sandbox_id)
        .bind(worker_id)
        .bind(lease_expires_at_ms)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("UPDATE sandboxes SET worker_id = $1 WHERE id = $2")
            .bind(worker_id)
            .bind(sandbox_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(Placement {
            worker_id: worker_id.to_owned(),
            advertise_addr,
            generation,
        }))
    }

    /// Moves a sandbox from one of `from` states to `to`; false when it was in none.
    pub async fn transition_sandbox(
        &self,
        id: &str,
        from: &[&str],
        to: &str,
    ) -> Result<bool, StoreError> {
        // states are our own constants, never user input
        let from = from
            .iter()
            .map(|state| format!("'{state}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let updated = sqlx::query(&format!(
            "UPDATE sandboxes SET state = $1 WHERE id = $2 AND state IN ({from})"
        ))
        .bind(to)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    pub async fn mark_sandbox_running(
        &self,
        id: &str,
        vm_id: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sandboxes SET state = 'running', vm_id = $1, started_at_ms = $2 \
             WHERE id = $3 AND state = 'creating'",
        )
        .bind(vm_id)
        .bind(now_ms)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Ends a sandbox (`destroyed` or `error`): its lease is released and its worker's
    /// reservation returned, in one transaction.
    pub async fn finish_sandbox(
        &self,
        id: &str,
        state: &str,
        error: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let released: Option<String> =
            sqlx::query_scalar("DELETE FROM leases WHERE sandbox_id = $1 RETURNING worker_id")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(worker_id) = released {
            release_slot(&mut tx, &worker_id).await?;
        }
        sqlx::query("UPDATE sandboxes SET state = $1, error = $2, destroyed_at = $3 WHERE id = $4")
            .bind(state)
            .bind(error)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Moves a live sandbox's TTL and renews its lease to `lease_expires_at_ms` (never
    /// shortening it), in one transaction.
    pub async fn set_sandbox_expiry(
        &self,
        id: &str,
        expires_at: i64,
        lease_expires_at_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE sandboxes SET expires_at = $1 WHERE id = $2 AND state IN ('creating', 'running')",
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
    }

    /// Ids of live sandboxes whose TTL ran out before `now`.
    pub async fn expired_sandboxes(&self, now: i64) -> Result<Vec<String>, StoreError> {
        let ids = sqlx::query_scalar(
            "SELECT id FROM sandboxes WHERE state = 'running' AND expires_at < $1 ORDER BY id",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids)
    }

    /// Leases `worker_id` holds: (sandbox id, generation, sandbox state, when it started
    /// running in unix ms).
    pub async fn leases_of(
        &self,
        worker_id: &str,
    ) -> Result<Vec<(String, i64, String, Option<i64>)>, StoreError> {
        let rows = sqlx::query_as(
            "SELECT l.sandbox_id, l.generation, s.state, s.started_at_ms FROM leases l \
             JOIN sandboxes s ON s.id = l.sandbox_id WHERE l.worker_id = $1",
        )
        .bind(worker_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Marks `sandbox_id` lost if `worker_id` still holds its lease at `generation`,
    /// releasing the lease and the slot; false when anything changed meanwhile.
    pub async fn mark_lost(
        &self,
        sandbox_id: &str,
        worker_id: &str,
        generation: i64,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let released = sqlx::query(
            "DELETE FROM leases WHERE sandbox_id = $1 AND worker_id = $2 AND generation = $3",
        )
        .bind(sandbox_id)
        .bind(worker_id)
        .bind(generation)
        .execute(&mut *tx)
        .await?;
        if released.rows_affected() == 0 {
            return Ok(false);
        }
        release_slot(&mut tx, worker_id).await?;
        sqlx::query(
            "UPDATE sandboxes SET state = 'lost', error = $1 \
             WHERE id = $2 AND state IN ('creating', 'running', 'destroying')",
        )
        .bind(reason)
        .bind(sandbox_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Leases that ran out before `now_ms`: (sandbox id, worker id, generation).
    pub async fn expired_leases(
        &self,
        now_ms: i64,
    ) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows = sqlx::query_as(
            "SELECT sandbox_id, worker_id, generation FROM leases WHERE expires_at_ms < $1",
        )
        .bind(now_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Extends the leases `worker_id` holds at the generations it reports; returns how
    /// many were renewed. A report of another worker's lease or an old generation
    /// renews nothing.
    pub async fn renew_leases(
        &self,
        worker_id: &str,
        held: &[(String, i64)],
        expires_at_ms: i64,
    ) -> Result<u64, StoreError> {
        let mut renewed = 0;
        let mut tx = self.begin_write().await?;
        for (sandbox_id, generation) in held {
            let updated = sqlx::query(
                "UPDATE leases SET expires_at_ms = $1 \
                 WHERE sandbox_id = $2 AND worker_id = $3 AND generation = $4",
            )
            .bind(expires_at_ms)
            .bind(sandbox_id)
            .bind(worker_id)
            .bind(generation)
            .execute(&mut *tx)
            .await?;
            renewed += updated.rows_affected();
        }
        tx.commit().await?;
        Ok(renewed)
    }
}

/// Gives a worker back the capacity slot a sandbox held.
async fn release_slot(
    conn: &mut sqlx::SqliteConnection,
    worker_id: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE workers SET reserved = reserved - 1 WHERE id = $1 AND reserved > 0")
        .bind(worker_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::temp_store;
    use crate::store::{Enrollment, EnrollmentCredential, NewCertificate, NewJoinToken};

    async fn worker(store: &Store, id: &str, max: i64) {
        store
            .insert_join_token(&NewJoinToken {
                jti: format!("j-{id}"),
                worker_id: None,
                max_uses: 1,
                created_at: 0,
                expires_at: i64::MAX,
                created_by: "t".into(),
            })
            .await
            .unwrap();
        store
            .enroll_worker(&Enrollment {
                worker_id: id.into(),
                spiffe_id: String::new(),
                credential: EnrollmentCredential::JoinToken {
                    jti: format!("j-{id}"),
                    pinned: false,
                },
                hostname: String::new(),
                advertise_addr: format!("{id}:1"),
                providers: "[]".into(),
                max_sandboxes: max,
                vcpus: 1,
                memory_mb: 1,
                version: String::new(),
                new_worker_token_jti: format!("w-{id}"),
                certificate: NewCertificate {
                    serial: format!("s-{id}"),
                    worker_id: id.into(),
                    issued_at: 0,
                    expires_at: 1,
                    reason: "enroll",
                },
                now: 0,
            })
            .await
            .unwrap();
    }

    async fn sandbox(store: &Store, id: &str) {
        store
            .insert_sandbox(&NewSandbox {
                id: id.into(),
                provider: "mock".into(),
                image: "img".into(),
                memory_mb: 1,
                vcpus: 1,
                owner_id: String::new(),
                template: String::new(),
                metadata: "{}".into(),
                created_at: 1,
                expires_at: 100,
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn placement_reserves_capacity_and_never_overfills() {
        let (_dir, store) = temp_store().await;
        worker(&store, "w1", 2).await;
        for id in ["a", "b", "c"] {
            sandbox(&store, id).await;
        }
        assert!(store.place_sandbox("a", "w1", 10).await.unwrap().is_some());
        assert!(store.place_sandbox("b", "w1", 10).await.unwrap().is_some());
        assert!(
            store.place_sandbox("c", "w1", 10).await.unwrap().is_none(),
            "full"
        );
        store.finish_sandbox("a", "destroyed", "", 5).await.unwrap();
        let placed = store.place_sandbox("c", "w1", 10).await.unwrap().unwrap();
        assert_eq!(placed.generation, 1);
        assert_eq!(placed.advertise_addr, "w1:1");
        let row = store.get_sandbox("c").await.unwrap().unwrap();
        assert_eq!(row.worker_id.as_deref(), Some("w1"));
        assert_eq!(row.generation, Some(1));
        let gone = store.get_sandbox("a").await.unwrap().unwrap();
        assert_eq!(gone.state, "destroyed");
        assert_eq!(gone.generation, None);
    }

    #[tokio::test]
    async fn concurrent_placements_fill_a_worker_exactly() {
        let (_dir, store) = temp_store().await;
        worker(&store, "w1", 5).await;
        let mut tasks = Vec::new();
        for i in 0..20 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let id = format!("s{i}");
                sandbox(&store, &id).await;
                store.place_sandbox(&id, "w1", 10).await.unwrap().is_some()
            }));
        }
        let mut placed = 0;
        for task in tasks {
            placed += usize::from(task.await.unwrap());
        }
        assert_eq!(placed, 5);
        let row = store.get_worker("w1").await.unwrap().unwrap();
        assert_eq!(row.max_sandboxes, 5);
    }

    #[tokio::test]
    async fn a_replaced_lease_has_a_higher_generation_and_old_renewals_fail() {
        let (_dir, store) = temp_store().await;
        worker(&store, "w1", 5).await;
        worker(&store, "w2", 5).await;
        sandbox(&store, "a").await;
        let first = store.place_sandbox("a", "w1", 10).await.unwrap().unwrap();
        let second = store.place_sandbox("a", "w2", 10).await.unwrap().unwrap();
        assert!(second.generation > first.generation);
        let stale = store
            .renew_leases("w1", &[("a".into(), first.generation)], 99)
            .await
            .unwrap();
        assert_eq!(stale, 0);
        let current = store
            .renew_leases("w2", &[("a".into(), second.generation)], 99)
            .await
            .unwrap();
        assert_eq!(current, 1);
    }

    #[tokio::test]
    async fn transitions_are_conditional() {
        let (_dir, store) = temp_store().await;
        sandbox(&store, "a").await;
        assert!(
            store
                .transition_sandbox("a", &["creating"], "running")
                .await
                .unwrap()
        );
        assert!(
            !store
                .transition_sandbox("a", &["creating"], "running")
                .await
                .unwrap()
        );
        assert!(
            store
                .transition_sandbox("a", &["running"], "destroying")
                .await
                .unwrap()
        );
        assert!(
            !store
                .transition_sandbox("a", &["running"], "destroying")
                .await
                .unwrap()
        );
    }
}
