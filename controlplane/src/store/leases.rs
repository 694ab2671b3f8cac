//! `leases`: which worker holds each sandbox at which generation. Heartbeats renew the
//! leases a worker reports holding (and only those, at their generation); a lease that
//! ran out is found here for the reaper, which marks its sandbox lost, releasing the
//! lease and the worker's slot in one transaction.

use super::sandboxes::{release_lease_at, release_slot};
use super::{SandboxState, Store, StoreError};

/// A lease a worker holds, with its sandbox's state ([`Store::leases_of`]).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct HeldLease {
    pub sandbox_id: String,
    pub generation: i64,
    #[sqlx(try_from = "String")]
    pub state: SandboxState,
    /// When the sandbox started running (unix ms); `None` before it did.
    pub started_at_ms: Option<i64>,
}

/// A lease that ran out ([`Store::expired_leases`]).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ExpiredLease {
    pub sandbox_id: String,
    pub worker_id: String,
    pub generation: i64,
}

impl Store {
    /// Leases `worker_id` holds, by sandbox id.
    pub async fn leases_of(&self, worker_id: &str) -> Result<Vec<HeldLease>, StoreError> {
        let rows = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT l.sandbox_id, l.generation, s.state, s.started_at_ms FROM leases l \
                 JOIN sandboxes s ON s.id = l.sandbox_id WHERE l.worker_id = $1 \
                 ORDER BY l.sandbox_id",
            )
            .bind(worker_id)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// Marks `sandbox_id` lost if `worker_id` still holds its lease at `generation`,
    /// releasing the lease and the slot; false when anything changed meanwhile (or
    /// another replica marked it first).
    pub async fn mark_lost(
        &self,
        sandbox_id: &str,
        worker_id: &str,
        generation: i64,
        reason: &str,
    ) -> Result<bool, StoreError> {
        in_write_tx!(self, |tx| {
            let released = release_lease_at!(&mut *tx, sandbox_id, worker_id, generation).await?;
            if released.rows_affected() == 0 {
                return Ok(false);
            }
            release_slot!(&mut *tx, worker_id, sandbox_id).await?;
            sqlx::query(
                "UPDATE sandboxes SET state = 'lost', error = $1 \
                 WHERE id = $2 AND state IN ('creating', 'running', 'stopped', 'destroying')",
            )
            .bind(reason)
            .bind(sandbox_id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Leases that ran out before `now_ms`, by sandbox id.
    pub async fn expired_leases(&self, now_ms: i64) -> Result<Vec<ExpiredLease>, StoreError> {
        let rows = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT sandbox_id, worker_id, generation FROM leases WHERE expires_at_ms < $1 \
                 ORDER BY sandbox_id",
            )
            .bind(now_ms)
            .fetch_all(pool)
            .await?
        });
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
        // one order for every writer of several lease rows, so two never deadlock
        let mut held = held.to_vec();
        held.sort();
        in_write_tx!(self, |tx| {
            let mut renewed = 0;
            for (sandbox_id, generation) in &held {
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
        })
    }
}
