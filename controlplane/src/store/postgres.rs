//! Everything only the Postgres backend has: its pool and migrations, running a
//! transaction again when Postgres picked it as a deadlock victim, and the hot writes
//! of a sandbox's life written for Postgres alone (SQLite's are grouped and batched
//! instead, `store/sqlite.rs`).
//!
//! Replicas share the database, so a write that a read decided would race; every
//! statement here is a conditional write, re-checked by Postgres on the newest row
//! version after waiting for a concurrent writer (READ COMMITTED).

use std::sync::LazyLock;
use std::time::Duration;

use rand::Rng;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::sandboxes::{
    NewSandbox, Placed, RESERVE_SLOT, SANDBOX_INSERT, bind_placement, release_slot,
};
use super::teams::within_quota;
use super::{SandboxState, StoreError};

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Locks a sandbox's row until the transaction ends (`$1` its id), so a transaction
/// that reads something about the sandbox before it writes is not raced by another.
#[cfg(any(test, feature = "test-support"))]
pub(super) const LOCK_SANDBOX: &str = "SELECT id FROM sandboxes WHERE id = $1 FOR UPDATE";

/// Locks the rows of every unrevoked cluster admin key until the transaction ends, so
/// two revocations cannot each see the other's key as the admin key that remains.
pub(super) const LOCK_ADMIN_KEYS: &str = "SELECT id FROM api_keys \
     WHERE revoked_at IS NULL AND team_id IS NULL AND ',' || scopes || ',' LIKE '%,admin,%' \
     FOR UPDATE";

/// How often a write transaction is tried when Postgres aborts it for a conflict.
pub(super) const TX_ATTEMPTS: u32 = 5;

/// Connects a pool to the database `options` names and migrates it (concurrent
/// migrations from replicas starting together are serialized by sqlx's lock).
pub(super) async fn open(options: PgConnectOptions) -> Result<PgPool, StoreError> {
    let options = options.application_name("berth-controlplane");
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(15))
        .connect_with(options)
        .await?;
    MIGRATIONS.run(&pool).await?;
    Ok(pool)
}

/// A deadlock victim or serialization failure: the transaction was rolled back and
/// running it again is safe.
pub(super) fn is_transient(err: &StoreError) -> bool {
    let StoreError::Database(sqlx::Error::Database(err)) = err else {
        return false;
    };
    matches!(err.code().as_deref(), Some("40P01" | "40001"))
}

/// A short, growing, jittered pause before a conflicted transaction runs again, so two
/// transactions that deadlocked do not meet again in lockstep.
pub(super) async fn conflict_backoff(attempt: u32) {
    let base_ms = 10u64 << attempt.min(5);
    let jittered = rand::rng().random_range(base_ms / 2..=base_ms);
    tokio::time::sleep(Duration::from_millis(jittered)).await;
}

/// Places `sandbox` on `worker_id` in one statement of data-modifying CTEs (see
/// `Store::create_placed_sandbox` for what placing means): the row and the lease are
/// inserted from what the reserving `UPDATE` returned, so they exist only if it took a
/// slot (foreign keys are checked at the end of the statement, when both are there).
///
/// The statement runs in a transaction that first locks the team's row `FOR SHARE`
/// (a team deleted meanwhile cannot gain a sandbox), and for a team with quotas also
/// takes the team's advisory lock, so its placements run one at a time: the quota
/// condition of the statement, read after the lock, sees every placement committed
/// before it, and concurrent creates through several replicas never exceed a quota.
pub(super) async fn place_new_sandbox(
    pool: &PgPool,
    sandbox: &NewSandbox,
    worker_id: &str,
    fresh_since_ms: i64,
    lease_expires_at_ms: i64,
) -> Result<Option<Placed>, StoreError> {
    static STATEMENT: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH reserved AS ({RESERVE_SLOT} AND {within_quota} \
                 RETURNING advertise_addr, last_heartbeat_ms), \
             inserted AS ({SANDBOX_INSERT} FROM reserved RETURNING id), \
             leased AS (INSERT INTO leases (sandbox_id, worker_id, generation, \
                 expires_at_ms) SELECT id, $11, 1, $13 FROM inserted) \
             SELECT advertise_addr, last_heartbeat_ms FROM reserved",
            within_quota = within_quota("$15", "$4", "$5"),
        )
    });
    postgres_write_tx!(pool, |tx| {
        let limited: Option<bool> = sqlx::query_scalar(LOCK_TEAM)
            .bind(&sandbox.team_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(limited) = limited else {
            return Err(StoreError::UnknownTeam(sandbox.team_id.clone()));
        };
        if limited {
            sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
                .bind(TEAM_LOCK_SPACE)
                .bind(&sandbox.team_id)
                .execute(&mut *tx)
                .await?;
        }
        let placed: Option<Placed> = bind_placement!(
            sqlx::query_as(&STATEMENT),
            sandbox,
            worker_id,
            fresh_since_ms,
            lease_expires_at_ms
        )
        .fetch_optional(&mut *tx)
        .await?;
        if placed.is_some() {
            tx.commit().await?;
        }
        Ok(placed)
    })
}

/// Locks team `$1`'s row against deletion and says whether it has any quota.
const LOCK_TEAM: &str = "SELECT (max_sandboxes IS NOT NULL OR max_vcpus IS NOT NULL \
     OR max_memory_mb IS NOT NULL) FROM teams WHERE id = $1 FOR SHARE";

/// The first key of the advisory locks that serialize one team's placements.
const TEAM_LOCK_SPACE: i32 = 0x6265_7274; // "bert"

/// `creating → running` with the provider's id for it; whether it applied.
pub(super) async fn mark_running(
    pool: &PgPool,
    id: &str,
    vm_id: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let updated = sqlx::query(
        "UPDATE sandboxes SET state = 'running', vm_id = $1, started_at_ms = $2 \
         WHERE id = $3 AND state = 'creating'",
    )
    .bind(vm_id)
    .bind(now_ms)
    .bind(id)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(updated == 1)
}

/// `running → destroying`, noting when; whether it applied.
pub(super) async fn claim_destroy(
    pool: &PgPool,
    id: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let updated = sqlx::query(
        "UPDATE sandboxes SET state = 'destroying', destroying_since_ms = $1 \
         WHERE id = $2 AND state = 'running'",
    )
    .bind(now_ms)
    .bind(id)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(updated == 1)
}

/// Ends a sandbox in one transaction. The lease goes first (`DELETE … RETURNING`), so
/// two replicas finishing the same sandbox return its slot once.
pub(super) async fn finish_sandbox(
    pool: &PgPool,
    id: &str,
    state: SandboxState,
    error: &str,
    now: i64,
) -> Result<(), StoreError> {
    postgres_write_tx!(pool, |tx| {
        let released: Option<String> =
            sqlx::query_scalar("DELETE FROM leases WHERE sandbox_id = $1 RETURNING worker_id")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(worker_id) = released {
            release_slot!(&mut *tx, &worker_id, id).await?;
        }
        sqlx::query("UPDATE sandboxes SET state = $1, error = $2, destroyed_at = $3 WHERE id = $4")
            .bind(state.as_str())
            .bind(error)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    })
}
