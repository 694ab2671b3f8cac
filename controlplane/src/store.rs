//! The control plane's persistent state: its database connections, the embedded
//! migrations, and every SQL statement (grouped by table in `store/`). Callers never
//! see SQL or rows of another table than the one they asked about.
//!
//! Two backends: SQLite, the embedded default (one WAL file in the data dir), and
//! Postgres, which several `berth serve` replicas share. Every statement is written
//! once, in the subset both speak (`$n` placeholders in ascending order, `ON CONFLICT`,
//! `RETURNING`, integer times), and compiled for each backend's own driver by
//! `with_pool!` and `in_write_tx!`. Correctness under concurrent replicas comes
//! from the statements themselves, never from a read followed by a write: capacity,
//! join-token uses, lease generations, sandbox state changes and the audit head all
//! move by conditional `UPDATE`/`INSERT … ON CONFLICT`, which Postgres re-checks on the
//! newest row version after waiting for a concurrent writer (READ COMMITTED).

/// Runs `$body` with `$pool` bound to a concrete executor for reads (a
/// `&mut SqliteConnection` of a reader, or `&PgPool`): the body is written once and
/// compiled for each backend, and uses `$pool` for one statement. On SQLite the
/// readers are read-only, so a statement that writes must use [`with_write_pool!`]
/// or [`in_write_tx!`] (or fail loudly in every test).
macro_rules! with_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.pool {
            $crate::store::Pool::Sqlite(connections) => {
                let mut held = connections.reader().await;
                let $pool = held.connection()?;
                $body
            }
            $crate::store::Pool::Postgres($pool) => $body,
        }
    };
}

/// Like [`with_pool!`] for a single autocommit statement that writes: on SQLite it runs
/// on the one writer connection.
macro_rules! with_write_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.pool {
            $crate::store::Pool::Sqlite(connections) => {
                let mut held = connections.writer().await;
                let $pool = held.connection()?;
                $body
            }
            $crate::store::Pool::Postgres($pool) => $body,
        }
    };
}

/// Runs `$body` in a write transaction bound to `$tx`. The body commits; returning
/// early (or with an error) rolls back. SQLite takes its write lock up front
/// (`BEGIN IMMEDIATE`), so a transaction that reads before it writes waits for other
/// writers instead of failing with "database is locked". On Postgres see
/// [`postgres_write_tx!`].
macro_rules! in_write_tx {
    ($store:expr, |$tx:ident| $body:expr) => {{
        match &$store.pool {
            $crate::store::Pool::Sqlite(connections) => {
                $crate::store::transaction(async {
                    let mut held = connections.writer().await;
                    #[allow(unused_mut)]
                    let mut $tx =
                        sqlx::Connection::begin_with(held.connection()?, "BEGIN IMMEDIATE").await?;
                    $body
                })
                .await
            }
            $crate::store::Pool::Postgres(pool) => postgres_write_tx!(pool, |$tx| $body),
        }
    }};
}

/// Runs `$body` in a write transaction on Postgres pool `$pool`, bound to `$tx`; the
/// body commits. A transaction chosen as a deadlock victim (or failing serialization)
/// is run again from the start, a few times; its effects were rolled back, so nothing
/// happens twice.
macro_rules! postgres_write_tx {
    ($pool:expr, |$tx:ident| $body:expr) => {{
        let mut attempt = 1u32;
        loop {
            let result = $crate::store::transaction(async {
                #[allow(unused_mut)]
                let mut $tx = $pool.begin().await?;
                $body
            })
            .await;
            match result {
                Err(err) if attempt < $crate::store::TX_ATTEMPTS && err.is_transient() => {
                    tracing::debug!(attempt, error = %err, "transaction conflicted; running it again");
                    $crate::store::conflict_backoff(attempt).await;
                    attempt += 1;
                }
                other => break other,
            }
        }
    }};
}

/// Gives worker `$worker_id` back the capacity slot a sandbox held, on `$conn` inside
/// the caller's transaction; evaluates to the statement's future.
macro_rules! release_slot {
    ($conn:expr, $worker_id:expr) => {
        sqlx::query("UPDATE workers SET reserved = reserved - 1 WHERE id = $1 AND reserved > 0")
            .bind($worker_id)
            .execute($conn)
    };
}

mod api_keys;
mod audit;
mod certificates;
mod cluster;
mod dialect;
mod join_tokens;
mod sandboxes;
mod sqlite_connections;
mod sqlite_grouped;
mod workers;

use std::future::Future;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

use sqlite_connections::SqliteConnections;

pub use api_keys::ApiKeyRow;
pub use audit::AuditRow;
pub use certificates::NewCertificate;
pub use cluster::ClusterIdentity;
pub use join_tokens::NewJoinToken;
pub use sandboxes::{
    CandidateRow, CreatedPlacement, NewSandbox, PlaceOutcome, Placement, SandboxRow,
};
pub use workers::{Enrollment, EnrollmentCredential, HeartbeatUpdate, Revocation, WorkerRow};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Read-only connections to SQLite (each is a thread of sqlx's).
const SQLITE_READERS: usize = 4;

/// How often a write transaction is tried when Postgres aborts it for a conflict.
const TX_ATTEMPTS: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database url {0:?}: use a sqlite: or postgres:// url")]
    UnsupportedUrl(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("join token is unknown, revoked, expired or already used up")]
    JoinTokenUsedUp,
    #[error("worker id {0:?} is already enrolled; enroll it with a join token pinned to that id")]
    WorkerIdTaken(String),
    #[error("worker {0:?} is revoked")]
    WorkerRevoked(String),
    #[error("worker {0:?} is not enrolled")]
    UnknownWorker(String),
    #[error("worker token is not the newest one issued to worker {0:?}")]
    StaleWorkerToken(String),
    #[error("the store is closed")]
    Closed,
    #[error("database: {0}")]
    GroupedWrite(String),
}

impl StoreError {
    /// A Postgres deadlock victim or serialization failure: the transaction was rolled
    /// back and running it again is safe.
    fn is_transient(&self) -> bool {
        let Self::Database(sqlx::Error::Database(err)) = self else {
            return false;
        };
        matches!(err.code().as_deref(), Some("40P01" | "40001"))
    }
}

/// Which database the store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend a `database.url` names, by its scheme.
    pub fn of_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err(StoreError::UnsupportedUrl(redact_url(url)))
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// The connections of one backend; the macros above dispatch on them.
///
/// SQLite lets one writer in at a time. Several connections racing for its write lock
/// make the losers sleep in SQLite's busy handler (1, 2, 5, 10 ms …), which is what
/// capped spawns and execs before. So writes go through one connection, queued fairly
/// in tokio, and reads through read-only connections that WAL lets run alongside it
/// (see `store/sqlite_connections.rs` for why these are not a sqlx pool).
#[derive(Debug, Clone)]
enum Pool {
    Sqlite(Arc<SqliteConnections>),
    Postgres(PgPool),
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool,
}

impl Store {
    /// Opens (creating when missing) the SQLite database at `path` and migrates it.
    pub async fn open_sqlite_file(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true);
        Self::open_sqlite(options).await
    }

    /// Opens the database a `database.url` names (`sqlite:…` or `postgres://…`) and
    /// brings its schema up to date.
    pub async fn open_url(url: &str) -> Result<Self, StoreError> {
        match Backend::of_url(url)? {
            Backend::Sqlite => {
                let options = SqliteConnectOptions::from_str(url)?.create_if_missing(true);
                Self::open_sqlite(options).await
            }
            Backend::Postgres => Self::open_postgres(PgConnectOptions::from_str(url)?).await,
        }
    }

    async fn open_sqlite(options: SqliteConnectOptions) -> Result<Self, StoreError> {
        let options = options
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let connections = SqliteConnections::open(options, SQLITE_READERS).await?;
        Ok(Self {
            pool: Pool::Sqlite(Arc::new(connections)),
        })
    }

    async fn open_postgres(options: PgConnectOptions) -> Result<Self, StoreError> {
        let options = options.application_name("berth-controlplane");
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(15))
            .connect_with(options)
            .await?;
        POSTGRES_MIGRATIONS.run(&pool).await?;
        Ok(Self {
            pool: Pool::Postgres(pool),
        })
    }

    /// Which backend this is, for status output.
    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        with_pool!(self, |pool| {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(connections) => connections.close().await,
            Pool::Postgres(pool) => pool.close().await,
        }
    }
}

/// Pins a transaction body's result type, so `?` inside it converts to `StoreError`.
async fn transaction<T>(
    body: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    body.await
}

/// A short, growing, jittered pause before a conflicted transaction runs again, so two
/// transactions that deadlocked do not meet again in lockstep.
async fn conflict_backoff(attempt: u32) {
    use rand::Rng;
    let base_ms = 10u64 << attempt.min(5);
    let jittered = rand::rng().random_range(base_ms / 2..=base_ms);
    tokio::time::sleep(Duration::from_millis(jittered)).await;
}

/// A database url fit for an error message: the password is never shown.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::{Pool, Store};

    /// A pool of its own on a SQLite test store's file, for tests that tamper with
    /// rows behind the store's back.
    pub async fn raw_pool(store: &Store) -> sqlx::SqlitePool {
        match &store.pool {
            Pool::Sqlite(connections) => sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(connections.options().clone())
                .await
                .expect("open the test store's file"),
            Pool::Postgres(_) => panic!("raw_pool is for SQLite test stores"),
        }
    }

    /// A migrated store in a temp file (`sqlite::memory:` gives every pooled connection
    /// its own empty database, so tests use a real file).
    pub async fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open_sqlite_file(&dir.path().join("berth.db"))
            .await
            .expect("open store");
        (dir, store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_scheme_picks_the_backend() {
        assert_eq!(
            Backend::of_url("sqlite:///var/lib/berth/berth.db").unwrap(),
            Backend::Sqlite
        );
        assert_eq!(
            Backend::of_url("postgres://berth@db/berth").unwrap(),
            Backend::Postgres
        );
        assert_eq!(
            Backend::of_url("postgresql://berth@db/berth").unwrap(),
            Backend::Postgres
        );
        let err = Backend::of_url("mysql://root:hunter2@db/berth").unwrap_err();
        let message = err.to_string();
        assert!(message.contains("mysql://root:***@db/berth"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://berth:s3cret@db:5432/berth"),
            "postgres://berth:***@db:5432/berth"
        );
        assert_eq!(
            redact_url("postgres://berth@db/berth"),
            "postgres://berth@db/berth"
        );
    }
}
