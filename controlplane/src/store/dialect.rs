//! The few statements SQLite and Postgres write differently, kept in one place. Every
//! other statement is shared text.
//!
//! The hot writes of a sandbox's life, placing a new one and finishing one, are also
//! written per backend, each as few round trips as the backend allows: on SQLite one
//! transaction batch (see `sqlite_connections.rs` for why a batch), whose statements
//! share one argument list (`$n` is the n-th bound value in every statement); on
//! Postgres, placement is one statement of data-modifying CTEs.

use std::sync::LazyLock;

use sqlx::{PgConnection, Row, SqliteConnection};

use super::sandboxes::NewSandbox;
use super::sqlite_grouped::SandboxChange;
use super::{Pool, StoreError};

/// Backend-specific statements, run on a connection inside the caller's transaction.
pub(super) trait Dialect {
    /// Holds sandbox `id`'s row until the transaction ends, so a transaction that reads
    /// something about the sandbox before it writes is not raced by another one.
    async fn lock_sandbox(&mut self, id: &str) -> Result<(), sqlx::Error>;
}

/// The eligibility check and slot reservation for a new sandbox, written once for both
/// backends: `$11` is the worker, `$12` the freshness bound (see `bind_placement!`).
const RESERVE_SLOT: &str = "UPDATE workers SET reserved = reserved + 1 \
     WHERE id = $11 AND state = 'active' AND reserved < max_sandboxes \
       AND reported_state = 'ready' AND NOT cordoned AND drain_state = '' \
       AND last_heartbeat_ms >= $12";

/// The new sandbox's columns and their values (`$11` its worker).
const SANDBOX_INSERT: &str = "INSERT INTO sandboxes (id, state, provider, image, memory_mb, \
     vcpus, owner_id, template, metadata, created_at, expires_at, worker_id, error) \
     SELECT $1, 'creating', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, ''";

/// Binds a new sandbox's values as `$1`…`$10`, then `$11` the worker, `$12` the
/// freshness bound and `$13` the lease expiry: the numbering of every placement
/// statement above.
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
    };
}

impl Dialect for SqliteConnection {
    /// Nothing to do: every write transaction starts with `BEGIN IMMEDIATE`, which
    /// already holds the database's single write lock.
    async fn lock_sandbox(&mut self, _id: &str) -> Result<(), sqlx::Error> {
        Ok(())
    }
}

impl Dialect for PgConnection {
    async fn lock_sandbox(&mut self, id: &str) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT id FROM sandboxes WHERE id = $1 FOR UPDATE")
            .bind(id)
            .execute(self)
            .await?;
        Ok(())
    }
}

/// Where a new sandbox was placed: the worker's address and its last heartbeat (ms).
pub(super) type Placed = (String, i64);

/// Places `sandbox` on worker `worker_id` if it is still eligible (active, ready, not
/// cordoned or draining, heartbeat at or after `fresh_since_ms`) and has room: one of
/// its slots is reserved, the sandbox inserted as `creating` on it and its first lease
/// (generation 1) taken, atomically. `None`, with nothing written, when the worker
/// cannot take it.
pub(super) async fn insert_placed_sandbox(
    pool: &Pool,
    sandbox: &NewSandbox,
    worker_id: &str,
    fresh_since_ms: i64,
    lease_expires_at_ms: i64,
) -> Result<Option<Placed>, StoreError> {
    match pool {
        // each statement after the reservation runs only if the one before it changed
        // a row (`changes()`); the last one reads back what the caller needs
        Pool::Sqlite(connections) => {
            static BATCH: LazyLock<String> = LazyLock::new(|| {
                format!(
                    "BEGIN IMMEDIATE; \
                     {RESERVE_SLOT}; \
                     {SANDBOX_INSERT} WHERE changes() = 1; \
                     INSERT INTO leases (sandbox_id, worker_id, generation, expires_at_ms) \
                     SELECT $1, $11, 1, $13 WHERE changes() = 1; \
                     SELECT advertise_addr, last_heartbeat_ms FROM workers \
                     WHERE id = $11 AND changes() = 1; \
                     COMMIT"
                )
            });
            let rows = connections
                .transaction_batch(bind_placement!(
                    sqlx::query(&BATCH),
                    sandbox,
                    worker_id,
                    fresh_since_ms,
                    lease_expires_at_ms
                ))
                .await?;
            match rows.first() {
                Some(row) => Ok(Some((row.try_get(0)?, row.try_get(1)?))),
                None => Ok(None),
            }
        }
        // the row and the lease are inserted from what the reserving `UPDATE` returned,
        // so they exist only if it took a slot (foreign keys are checked at the end of
        // the statement, when both are there)
        Pool::Postgres(pool) => {
            static STATEMENT: LazyLock<String> = LazyLock::new(|| {
                format!(
                    "WITH reserved AS ({RESERVE_SLOT} \
                         RETURNING advertise_addr, last_heartbeat_ms), \
                     inserted AS ({SANDBOX_INSERT} FROM reserved RETURNING id), \
                     leased AS (INSERT INTO leases (sandbox_id, worker_id, generation, \
                         expires_at_ms) SELECT id, $11, 1, $13 FROM inserted) \
                     SELECT advertise_addr, last_heartbeat_ms FROM reserved"
                )
            });
            let placed = bind_placement!(
                sqlx::query_as(&STATEMENT),
                sandbox,
                worker_id,
                fresh_since_ms,
                lease_expires_at_ms
            )
            .fetch_optional(pool)
            .await?;
            Ok(placed)
        }
    }
}

/// Ends sandbox `id` in `state` with `error` at `now`: its lease (if any) is deleted
/// and the lease holder's slot given back, once however often this runs.
pub(super) async fn finish_sandbox(
    pool: &Pool,
    id: &str,
    state: &str,
    error: &str,
    now: i64,
) -> Result<(), StoreError> {
    match pool {
        // grouped with the other callers' changes (`sqlite_grouped.rs`); the batch's
        // write lock keeps the slot, the lease and the row from being raced
        Pool::Sqlite(connections) => {
            let change = SandboxChange::Finish {
                id: id.to_owned(),
                state: state.to_owned(),
                error: error.to_owned(),
                at: now,
            };
            connections.change_sandbox(change).await?;
            Ok(())
        }
        // the lease goes first (`DELETE … RETURNING`), so two replicas finishing the
        // same sandbox return its slot once
        Pool::Postgres(pool) => postgres_write_tx!(pool, |tx| {
            let released: Option<String> =
                sqlx::query_scalar("DELETE FROM leases WHERE sandbox_id = $1 RETURNING worker_id")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some(worker_id) = released {
                release_slot!(&mut *tx, &worker_id).await?;
            }
            sqlx::query(
                "UPDATE sandboxes SET state = $1, error = $2, destroyed_at = $3 WHERE id = $4",
            )
            .bind(state)
            .bind(error)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        }),
    }
}
