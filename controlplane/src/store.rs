//! The control plane's persistent state: its database connections, the embedded
//! migrations, and every SQL statement. Callers never see SQL or rows of another table
//! than the one they asked about.
//!
//! Two backends: SQLite, the embedded default (one WAL file in the data dir), and
//! Postgres, which several `berth serve` replicas share. Correctness under concurrent
//! replicas comes from the statements themselves, never from a read followed by a
//! write: capacity, join-token uses, lease generations, sandbox state changes and the
//! audit head all move by conditional `UPDATE`/`INSERT … ON CONFLICT`, which Postgres
//! re-checks on the newest row version after waiting for a concurrent writer (READ
//! COMMITTED).
//!
//! ## Layout
//!
//! - `store/<table>.rs` (`api_keys`, `audit`, `certificates`, `cluster`, `join_tokens`,
//!   `sandboxes`, `teams` (and `users`), `workers`): the [`Store`] methods of that
//!   table, in shared SQL.
//! - `store/sqlite.rs` + `store/sqlite/`: what only SQLite has: one writer connection
//!   and read-only readers instead of a pool, transaction batches, and the grouped
//!   sandbox state changes. Its page explains the whole mechanism.
//! - `store/postgres.rs`: what only Postgres has: its pool, retrying deadlock victims,
//!   and the statements written for it alone.
//! - `store/states.rs`: sandbox and worker states as enums, parsed from and written
//!   as the columns' text at this boundary.
//! - `store/test_support.rs` (feature `test-support`): operations only tests use.
//! - `store/backup.rs` + `store/backup/`: `berth backup` and `berth restore` of a
//!   SQLite store (Postgres has `pg_dump`); files, not [`Store`] methods.
//!
//! ## Reaching the backend: two ways, each for one case
//!
//! **Shared SQL** is written once, in the subset both backends speak (`$n`
//! placeholders in ascending order, `ON CONFLICT`, `RETURNING`, integer times), and
//! run through the macros of `store/dispatch.rs`: [`with_pool!`] (a read),
//! [`with_write_pool!`] (one autocommit write) and [`in_write_tx!`] (a write
//! transaction). Each expands its body once per backend, so the one text is compiled
//! for each driver's own types (sqlx's `Any` driver cannot decode SQLite's integer
//! booleans nor take our SQLite connection options).
//!
//! **Backend-specific code**, where one backend does the work differently (the hot
//! writes of a sandbox's life, opening, closing), is a function of the same name in
//! each backend module, chosen by one `match` on the pool:
//!
//! ```text
//! match &self.pool {
//!     Pool::Sqlite(connections) => sqlite::claim_destroy(connections, id, now_ms).await,
//!     Pool::Postgres(pool) => postgres::claim_destroy(pool, id, now_ms).await,
//! }
//! ```
//!
//! Nothing else looks at the backend, and no trait abstracts the connections. (The
//! shared bodies with a Postgres-only statement in them, test-only `place_sandbox`
//! and `revoke_api_key`, check [`Store::backend`] for their row locks.)

#[macro_use]
mod dispatch;

mod activity;
mod api_keys;
mod audit;
pub mod backup;
mod certificates;
mod cluster;
mod join_tokens;
mod leases;
mod ports;
mod postgres;
mod sandboxes;
mod secrets;
mod sqlite;
mod ssh;
mod states;
mod teams;
mod templates;
#[cfg(any(test, feature = "test-support"))]
mod test_support;
mod workers;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;

use sqlite::SqliteConnections;

pub use api_keys::{ApiKeyInfo, ApiKeyRow, KeyRevocation};
pub use audit::AuditHead;
pub use audit::AuditRow;
pub use certificates::NewCertificate;
pub use cluster::ClusterIdentity;
pub use join_tokens::NewJoinToken;
pub use leases::{ExpiredLease, HeldLease};
pub use sandboxes::{
    CandidateRow, CreatedPlacement, NewSandbox, Placement, SandboxRow, UnconfirmedSpawn,
};
pub use secrets::SecretRow;
pub use ssh::{SshKeyRow, SshTokenRow, TokenSpend};
pub use states::{DrainState, ReportedState, SandboxState, UnknownState, WorkerState};
pub use teams::{TeamDeletion, TeamRow, TeamUsage, UserDeletion, UserRow};
pub use templates::{TemplateRow, TemplateSave};
#[cfg(any(test, feature = "test-support"))]
pub use test_support::PlaceOutcome;
pub use workers::{
    Enrollment, EnrollmentCredential, HeartbeatUpdate, Removal, Revocation, WorkerRow,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database url {0:?}: use a sqlite: or postgres:// url")]
    UnsupportedUrl(String),
    #[error("database: {0}")]
    Database(sqlx::Error),
    /// The database has no room for the write (SQLite's `SQLITE_FULL`, Postgres's
    /// `disk_full`): nothing of it was kept, and writes work again once space is freed.
    #[error("the database is out of disk space: {0}")]
    DiskFull(String),
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
    #[error(
        "worker {worker_id} holds {count} sandboxes; pass force=true (berth workers rm --force) \
         to mark them lost and remove it"
    )]
    WorkerHoldsSandboxes { worker_id: String, count: usize },
    #[error("no API key has id {0:?}")]
    UnknownApiKey(String),
    #[error("no team is named {0:?}")]
    UnknownTeam(String),
    /// The team's quotas leave no room for the sandbox; nothing was recorded.
    #[error("team {0:?} is at one of its quotas")]
    OverQuota(String),
    #[error(
        "API key {0} is the last usable admin key; revoking it would lock every operator \
         out (create another admin key first)"
    )]
    LastAdminKey(String),
    #[error("the store is closed")]
    Closed,
    #[error("database: {0}")]
    GroupedWrite(String),
}

/// Every driver error becomes a `StoreError` here, so a full disk is told apart once
/// for both backends.
impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        if is_disk_full(&err) {
            Self::DiskFull(err.to_string())
        } else {
            Self::Database(err)
        }
    }
}

/// SQLite's `SQLITE_FULL` (result code 13, also as the primary code of an extended
/// one) or Postgres's SQLSTATE `53100 disk_full`.
fn is_disk_full(err: &sqlx::Error) -> bool {
    const SQLITE_FULL: i64 = 13;
    const PG_DISK_FULL: &str = "53100";
    let sqlx::Error::Database(db) = err else {
        return false;
    };
    let Some(code) = db.code() else {
        return false;
    };
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        return code
            .parse::<i64>()
            .is_ok_and(|code| code & 0xff == SQLITE_FULL);
    }
    code == PG_DISK_FULL
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

/// The connections of one backend: SQLite's writer and readers (`store/sqlite.rs`),
/// or Postgres's pool. The dispatch macros and the backend `match`es take it apart.
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
        let connections = sqlite::open(options).await?;
        Ok(Self {
            pool: Pool::Sqlite(Arc::new(connections)),
        })
    }

    async fn open_postgres(options: PgConnectOptions) -> Result<Self, StoreError> {
        let pool = postgres::open(options).await?;
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
                .connect_with(connections.options())
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
