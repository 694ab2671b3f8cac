//! Store operations only tests use, built with the `test-support` feature (which
//! `berth-testkit` enables): placing an existing sandbox's lease on a chosen worker,
//! the way a scheduler that moves sandboxes would, so the conformance suite can race
//! placements and move leases between workers; and a page limit on a SQLite store, so
//! tests can fill its "disk" and free it again.

use super::sandboxes::{Placement, release_slot};
use super::{Backend, Pool, Store, StoreError, postgres};

/// What [`Store::place_sandbox`] did.
#[derive(Debug, Clone)]
pub enum PlaceOutcome {
    Placed(Placement),
    /// The worker had no slot left (or is revoked).
    WorkerFull,
    /// The lease is no longer where the caller saw it: another placement won.
    LeaseTaken,
}

impl Store {
    /// Takes sandbox `sandbox_id`'s lease for `worker_id`, if the lease is still where
    /// the caller saw it (`expected`: `None` for a sandbox without a lease, or the
    /// generation it saw), and reserves one slot on the worker, in one transaction. The
    /// slot is a conditional increment, so concurrent schedulers (on one control plane
    /// or several) cannot over-fill a worker; the lease check runs with the sandbox row
    /// locked, so of several callers racing for one lease exactly one wins, and each
    /// acquisition has a higher generation than the one before. A lease moving away
    /// from another worker gives that worker its slot back.
    pub async fn place_sandbox(
        &self,
        sandbox_id: &str,
        worker_id: &str,
        lease_expires_at_ms: i64,
        expected: Option<i64>,
    ) -> Result<PlaceOutcome, StoreError> {
        let backend = self.backend();
        in_write_tx!(self, |tx| {
            let reserved: Option<String> = sqlx::query_scalar(
                "UPDATE workers SET reserved = reserved + 1, \
                     reserved_memory_mb = reserved_memory_mb \
                         + (SELECT memory_mb FROM sandboxes WHERE id = $2), \
                     reserved_vcpus = reserved_vcpus + (SELECT vcpus FROM sandboxes WHERE id = $2) \
                 WHERE id = $1 AND state = 'active' AND reserved < max_sandboxes \
                 RETURNING advertise_addr",
            )
            .bind(worker_id)
            .bind(sandbox_id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(advertise_addr) = reserved else {
                return Ok(PlaceOutcome::WorkerFull);
            };
            // SQLite's `BEGIN IMMEDIATE` already holds the one write lock; Postgres locks
            // the sandbox's row, for the lease check below
            if backend == Backend::Postgres {
                sqlx::query(postgres::LOCK_SANDBOX)
                    .bind(sandbox_id)
                    .execute(&mut *tx)
                    .await?;
            }
            let current: Option<(String, i64)> =
                sqlx::query_as("SELECT worker_id, generation FROM leases WHERE sandbox_id = $1")
                    .bind(sandbox_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if current.as_ref().map(|(_, generation)| *generation) != expected {
                // rolling back returns the slot reserved above
                return Ok(PlaceOutcome::LeaseTaken);
            }
            if let Some((previous, _)) = &current {
                release_slot!(&mut *tx, previous, sandbox_id).await?;
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
            Ok(PlaceOutcome::Placed(Placement {
                worker_id: worker_id.to_owned(),
                advertise_addr,
                generation,
            }))
        })
    }

    /// SQLite only (`None` on Postgres): the database's size in pages.
    pub async fn sqlite_page_count(&self) -> Result<Option<u64>, StoreError> {
        match &self.pool {
            Pool::Sqlite(connections) => connections.page_count().await.map(Some),
            Pool::Postgres(_) => Ok(None),
        }
    }

    /// SQLite only (`None` on Postgres): caps the database at `pages` pages
    /// (`PRAGMA max_page_count` on the writer, never below its size), so writes that
    /// need more fail with `SQLITE_FULL` as on a full disk; a higher cap is space
    /// coming back. Returns the cap in effect.
    pub async fn limit_sqlite_pages(&self, pages: u64) -> Result<Option<u64>, StoreError> {
        match &self.pool {
            Pool::Sqlite(connections) => connections.limit_pages(pages).await.map(Some),
            Pool::Postgres(_) => Ok(None),
        }
    }
}
