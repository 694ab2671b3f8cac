//! The control plane's persistent state: one sqlx pool, the embedded migrations, and
//! every SQL statement (grouped by table in `store/`). Callers never see SQL or rows of
//! another table than the one they asked about.
//!
//! SQLite is the embedded default (one WAL file in the data dir). The statements keep
//! to the subset SQLite and Postgres share (`$n` placeholders in ascending order,
//! `ON CONFLICT`, `RETURNING`, integer times) so the Postgres backend can reuse them.

mod api_keys;
mod audit;
mod certificates;
mod join_tokens;
mod sandboxes;
mod workers;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

pub use api_keys::ApiKeyRow;
pub use audit::AuditRow;
pub use certificates::NewCertificate;
pub use join_tokens::NewJoinToken;
pub use sandboxes::{CandidateRow, NewSandbox, Placement, SandboxRow};
pub use workers::{Enrollment, EnrollmentCredential, HeartbeatUpdate, Revocation, WorkerRow};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "unsupported database url {0:?}: use a sqlite: url (postgres arrives with the postgres store)"
    )]
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
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// Opens (creating when missing) the SQLite database at `path` and migrates it.
    pub async fn open_sqlite_file(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true);
        Self::open_sqlite(options).await
    }

    /// Opens the database a `database.url` names.
    pub async fn open_url(url: &str) -> Result<Self, StoreError> {
        if !url.starts_with("sqlite:") {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        }
        let options = SqliteConnectOptions::from_str(url)?.create_if_missing(true);
        Self::open_sqlite(options).await
    }

    async fn open_sqlite(options: SqliteConnectOptions) -> Result<Self, StoreError> {
        let options = options
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        SQLITE_MIGRATIONS.run(&pool).await?;
        Ok(Self { pool })
    }

    /// Which backend this is, for status output.
    pub fn backend(&self) -> &'static str {
        "sqlite"
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// A transaction that takes SQLite's write lock up front (`BEGIN IMMEDIATE`), so a
    /// transaction that reads before it writes waits for other writers instead of
    /// failing with "database is locked" when one committed in between.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'_, sqlx::Sqlite>, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::Store;

    /// The raw pool, for tests that tamper with rows behind the store's back.
    pub fn raw_pool(store: &Store) -> &sqlx::SqlitePool {
        &store.pool
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
