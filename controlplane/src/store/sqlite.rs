//! Everything only the SQLite backend has: how it holds its connections, how a write
//! transaction becomes one command, and how concurrent sandbox state changes share
//! one. This page explains the whole mechanism; the files below it implement one part
//! each.
//!
//! ## The cost being avoided
//!
//! SQLite admits one writer at a time. Several connections racing for its write lock
//! make the losers sleep in SQLite's busy handler (1, 2, 5, 10 ms …), which is what
//! capped spawns and execs once. And sqlx runs each SQLite connection on a thread of
//! its own: every command is handed to that thread and its answer back. That hand-off,
//! not the SQL, is what a statement costs here (50–100 µs on a busy two-core machine,
//! against a few µs in SQLite), and for writes all of it sits inside the one writer's
//! serial section. Every piece below cuts hand-offs out of that section.
//!
//! ## 1. One writer, a few readers, no pool (`sqlite/connections.rs`)
//!
//! [`SqliteConnections`] opens one writer connection (creating the file and migrating
//! it) and [`READERS`] read-only connections, once, and keeps each behind an async
//! mutex for the store's life. Writes queue fairly in tokio for the writer (tokio's
//! mutex is fair); reads take the first idle reader, which WAL lets run alongside the
//! writer. Not a sqlx pool: a pooled connection goes back to the pool through a
//! spawned task that first pings it, a second thread hand-off and a task per
//! statement, inside the writer's serial section (it halved the write rate). A local
//! file cannot drop a connection, which is what the ping guards against in a network
//! database; Postgres keeps its pool. The writer is never closed while the store
//! lives: closing SQLite's last connection removes the WAL files, which read-only
//! connections cannot recreate.
//!
//! ## 2. Transaction batches (`SqliteConnections::transaction_batch`)
//!
//! A write transaction can be sent as one command, `BEGIN IMMEDIATE; …; COMMIT`, whose
//! statements share one argument list (`$n` is the n-th bound value in every
//! statement): one hand-off for the whole transaction instead of one per statement
//! plus two for `BEGIN` and `COMMIT`. Later statements of a batch that must run only if
//! an earlier one changed a row say so with `WHERE changes() = 1`. A failing statement
//! stops the batch and rolls it back. A caller that goes away mid-batch leaves the
//! writer inside a transaction: a flag says a batch is open, and the writer's next
//! user rolls it back before anything else runs. Placing a new sandbox
//! ([`place_new_sandbox`]) is one such batch.
//!
//! ## 3. Grouped sandbox state changes (`sqlite/grouped.rs`)
//!
//! Marking a sandbox running, claiming its destroy and finishing it happen on every
//! spawn and destroy. Each caller queues its change ([`SandboxChange`]) and waits for
//! the writer; whoever gets the writer first runs every change queued by then as one
//! transaction batch and answers each caller through a oneshot channel (flat
//! combining). A lone caller pays what a single statement did; under load the
//! waiting callers share one hand-off instead of each queuing behind the writer. The
//! three kinds of change are three statements over a JSON array each (`json_each`),
//! so the batch is one fixed text however many changes it holds. Within a batch the
//! changes apply in the order mark running, claim, finish: a serial order their
//! callers could have seen, since a sandbox can only be claimed once running and only
//! finished once claimed (or failed, or lost).
//!
//! ## 4. A writer outside any transaction, whatever happened (`SqliteConnections::writer`)
//!
//! Every user gets the writer outside a transaction. Two things can leave one behind:
//! a batch whose caller went away (part 2), and a write refused for want of space.
//! A statement or `COMMIT` that fails with `SQLITE_FULL` (a full disk, or
//! `max_page_count` in tests) makes SQLite roll the whole transaction back itself;
//! the `ROLLBACK` sqlx then sends for the dropped `Transaction` fails ("no transaction
//! is active") and sqlx's own transaction depth stays at one, so every later
//! `begin_with` would fail until a restart. `writer()` checks that depth (an atomic
//! read, no hand-off), rolls back, and when sqlx still counts a transaction, replaces
//! the writer with a new connection. The refused write itself answers
//! [`StoreError::DiskFull`] (507 at the API); once space is freed, writes succeed
//! again with no restart.
//!
//! Everything else on SQLite is the shared SQL of `store/<table>.rs`, run on a reader
//! or on the writer by the dispatch macros (`store/dispatch.rs`); `BEGIN IMMEDIATE`
//! takes the write lock up front, so the one writer never meets "database is locked".

mod connections;
mod grouped;

use std::sync::LazyLock;
use std::time::Duration;

use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

use super::sandboxes::{NewSandbox, Placed, RESERVE_SLOT, SANDBOX_INSERT, bind_placement};
use super::teams::within_quota;
use super::{SandboxState, StoreError};

pub(super) use connections::SqliteConnections;
use grouped::SandboxChange;

pub(super) static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Read-only connections to SQLite (each is a thread of sqlx's).
const READERS: usize = 4;

/// Opens the database `options` names in WAL mode, migrates it, and holds its writer
/// and readers.
pub(super) async fn open(options: SqliteConnectOptions) -> Result<SqliteConnections, StoreError> {
    let options = options
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10));
    SqliteConnections::open(options, READERS).await
}

/// Places `sandbox` on `worker_id` as one transaction batch (see
/// `Store::create_placed_sandbox` for what placing means): each statement after the
/// reservation runs only if the one before it changed a row (`changes()`); the last one
/// reads back what the caller needs.
pub(super) async fn place_new_sandbox(
    connections: &SqliteConnections,
    sandbox: &NewSandbox,
    worker_id: &str,
    fresh_since_ms: i64,
    lease_expires_at_ms: i64,
) -> Result<Option<Placed>, StoreError> {
    static BATCH: LazyLock<String> = LazyLock::new(|| {
        format!(
            "BEGIN IMMEDIATE; \
             {RESERVE_SLOT} AND {within_quota}; \
             {SANDBOX_INSERT} WHERE changes() = 1; \
             INSERT INTO leases (sandbox_id, worker_id, generation, expires_at_ms) \
             SELECT $1, $11, 1, $13 WHERE changes() = 1; \
             SELECT advertise_addr, last_heartbeat_ms FROM workers \
             WHERE id = $11 AND changes() = 1; \
             COMMIT",
            within_quota = within_quota("$15", "$4", "$5"),
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
        Some(row) => Ok(Some(Placed {
            advertise_addr: row.try_get(0)?,
            last_heartbeat_ms: row.try_get(1)?,
        })),
        None => Ok(None),
    }
}

/// `creating → running`, grouped with other callers' changes; whether it applied.
pub(super) async fn mark_running(
    connections: &SqliteConnections,
    id: &str,
    vm_id: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let change = SandboxChange::MarkRunning {
        id: id.to_owned(),
        vm_id: vm_id.to_owned(),
        at_ms: now_ms,
    };
    connections.change_sandbox(change).await
}

/// `running → destroying`, grouped with other callers' changes; whether it applied.
pub(super) async fn claim_destroy(
    connections: &SqliteConnections,
    id: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let change = SandboxChange::ClaimDestroy {
        id: id.to_owned(),
        at_ms: now_ms,
    };
    connections.change_sandbox(change).await
}

/// Ends a sandbox, grouped with other callers' changes; the batch's write lock keeps
/// the slot, the lease and the row from being raced.
pub(super) async fn finish_sandbox(
    connections: &SqliteConnections,
    id: &str,
    state: SandboxState,
    error: &str,
    now: i64,
) -> Result<(), StoreError> {
    let change = SandboxChange::Finish {
        id: id.to_owned(),
        state,
        error: error.to_owned(),
        at: now,
    };
    connections.change_sandbox(change).await?;
    Ok(())
}
