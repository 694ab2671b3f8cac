//! SQLite's connections: one writer and a few read-only readers, each opened once and
//! held for the store's life behind an async mutex, and transaction batches on the
//! writer (why: `store/sqlite.rs`, parts 1 and 2). The writer is handed out outside
//! any transaction, whatever the last user left behind (`store/sqlite.rs`, part 4).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteRow};
use sqlx::{ConnectOptions, Connection, Executor, Sqlite};
use tokio::sync::{Mutex, MutexGuard};

use super::grouped::GroupedChanges;
use crate::store::StoreError;

#[derive(Debug)]
pub(crate) struct SqliteConnections {
    writer: Mutex<Option<SqliteConnection>>,
    /// A transaction batch on the writer may have been left open: its caller went away
    /// before it finished. The next user of the writer rolls it back first.
    batch_open: AtomicBool,
    readers: Vec<Mutex<Option<SqliteConnection>>>,
    /// Round-robin position over `readers`.
    next_reader: AtomicUsize,
    /// Sandbox state changes waiting for the writer (`grouped.rs`).
    grouped: GroupedChanges,
    /// How the writer was opened, to open it again when sqlx's view of it went wrong
    /// (see [`Self::writer`]); tests add a page limit to it.
    options: std::sync::Mutex<SqliteConnectOptions>,
}

/// A connection in use; derefs to the connection (an error once the store is closed).
pub(crate) struct Held<'a>(MutexGuard<'a, Option<SqliteConnection>>);

impl Held<'_> {
    pub(crate) fn connection(&mut self) -> Result<&mut SqliteConnection, StoreError> {
        self.0.as_mut().ok_or(StoreError::Closed)
    }
}

impl SqliteConnections {
    /// Opens the writer (creating the file), brings the schema up to date through
    /// it, then opens `readers` read-only connections.
    pub(crate) async fn open(
        options: SqliteConnectOptions,
        readers: usize,
    ) -> Result<Self, StoreError> {
        let mut writer = options.connect().await?;
        super::MIGRATIONS.run_direct(&mut writer).await?;
        let read_only = options.clone().read_only(true);
        let mut opened = Vec::with_capacity(readers.max(1));
        for _ in 0..readers.max(1) {
            opened.push(Mutex::new(Some(read_only.connect().await?)));
        }
        Ok(Self {
            writer: Mutex::new(Some(writer)),
            batch_open: AtomicBool::new(false),
            readers: opened,
            next_reader: AtomicUsize::new(0),
            grouped: GroupedChanges::default(),
            options: std::sync::Mutex::new(options),
        })
    }

    /// The writer, once every earlier caller is done with it (tokio's mutex is fair),
    /// outside any transaction: a batch left open is rolled back, and a connection that
    /// sqlx still believes inside a transaction SQLite has already ended is replaced.
    pub(crate) async fn writer(&self) -> Held<'_> {
        let mut held = Held(self.writer.lock().await);
        let Some(connection) = held.0.as_mut() else {
            return held;
        };
        if self.batch_open.load(Ordering::Acquire) || connection.is_in_transaction() {
            // also waits for the rollback a dropped `Transaction` queued, if any: the
            // connection's commands run in order
            roll_back(connection).await;
            // the flag stays set until this has run, even if this caller goes away too
            self.batch_open.store(false, Ordering::Release);
            if connection.is_in_transaction() {
                self.reopen_writer(&mut held).await;
            }
        }
        held
    }

    /// Replaces the writer with a new connection to the same file. For the one state a
    /// rollback cannot clear: a statement or `COMMIT` refused with `SQLITE_FULL` (or
    /// an I/O error) makes SQLite roll the whole transaction back itself, the
    /// `ROLLBACK` sqlx sends when the `Transaction` is dropped then fails ("no
    /// transaction is active"), and sqlx's transaction depth stays at one: every
    /// later `begin_with` would fail. A new connection starts at depth zero. On
    /// failure the old one is kept and the next user of the writer tries again.
    async fn reopen_writer(&self, held: &mut Held<'_>) {
        let options = self
            .options
            .lock()
            .expect("writer options poisoned")
            .clone();
        match options.connect().await {
            Ok(fresh) => {
                tracing::warn!(
                    "the sqlite writer was left in a transaction sqlite had already ended; \
                     opened a new writer connection"
                );
                if let Some(stale) = held.0.replace(fresh)
                    && let Err(err) = stale.close().await
                {
                    tracing::warn!(error = %err, "closing the replaced sqlite writer failed");
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot open a new sqlite writer; the next write tries again");
            }
        }
    }

    /// Runs `batch`, statements that begin with `BEGIN IMMEDIATE` and end with
    /// `COMMIT`, as one command on the writer and returns the rows its statements
    /// gave. A statement that fails stops the batch and rolls the transaction back;
    /// a caller that goes away mid-batch leaves the rollback to the writer's next user.
    pub(crate) async fn transaction_batch<'q, E>(
        &self,
        batch: E,
    ) -> Result<Vec<SqliteRow>, StoreError>
    where
        E: sqlx::Execute<'q, Sqlite> + 'q,
    {
        let mut held = self.writer().await;
        self.batch_on(held.connection()?, batch).await
    }

    /// [`Self::transaction_batch`] on the writer `connection` the caller holds.
    pub(crate) async fn batch_on<'q, E>(
        &self,
        connection: &mut SqliteConnection,
        batch: E,
    ) -> Result<Vec<SqliteRow>, StoreError>
    where
        E: sqlx::Execute<'q, Sqlite> + 'q,
    {
        debug_assert!(
            batch.sql().starts_with("BEGIN IMMEDIATE;") && batch.sql().ends_with("COMMIT"),
            "a transaction batch opens and commits its transaction: {}",
            batch.sql()
        );
        self.batch_open.store(true, Ordering::Release);
        let rows = connection.fetch_all(batch).await;
        if rows.is_err() {
            roll_back(connection).await;
        }
        self.batch_open.store(false, Ordering::Release);
        Ok(rows?)
    }

    pub(crate) fn grouped(&self) -> &GroupedChanges {
        &self.grouped
    }

    /// A reader: the first idle one, else the next in turn once it is free.
    pub(crate) async fn reader(&self) -> Held<'_> {
        for reader in &self.readers {
            if let Ok(idle) = reader.try_lock() {
                return Held(idle);
            }
        }
        let turn = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        Held(self.readers[turn].lock().await)
    }

    /// Closes the readers, then the writer (which checkpoints the WAL).
    pub(crate) async fn close(&self) {
        for reader in &self.readers {
            if let Some(connection) = reader.lock().await.take() {
                let _ = connection.close().await;
            }
        }
        let writer = self.writer.lock().await.take();
        if let Some(connection) = writer
            && let Err(err) = connection.close().await
        {
            tracing::warn!(error = %err, "closing the sqlite writer failed");
        }
    }

    /// How to open another connection to the same file (tests tamper through one).
    #[cfg(test)]
    pub(crate) fn options(&self) -> SqliteConnectOptions {
        self.options
            .lock()
            .expect("writer options poisoned")
            .clone()
    }

    /// The database's size in pages.
    #[cfg(any(test, feature = "test-support"))]
    pub(crate) async fn page_count(&self) -> Result<u64, StoreError> {
        let mut writer = self.writer().await;
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
            .fetch_one(writer.connection()?)
            .await?;
        Ok(u64::try_from(pages).unwrap_or(0))
    }

    /// Caps the database at `pages` pages (`PRAGMA max_page_count`, never below its
    /// size), on the writer and on any writer opened after it: writes that need more
    /// fail with `SQLITE_FULL`, as on a full disk; a higher cap is space coming back.
    /// Returns the cap in effect.
    #[cfg(any(test, feature = "test-support"))]
    pub(crate) async fn limit_pages(&self, pages: u64) -> Result<u64, StoreError> {
        let mut writer = self.writer().await;
        let set: i64 = sqlx::query_scalar(&format!("PRAGMA max_page_count = {pages}"))
            .fetch_one(writer.connection()?)
            .await?;
        let mut options = self.options.lock().expect("writer options poisoned");
        *options = options.clone().pragma("max_page_count", set.to_string());
        Ok(u64::try_from(set).unwrap_or(0))
    }
}

/// Ends whatever transaction a batch left open; none being open is fine.
async fn roll_back(connection: &mut SqliteConnection) {
    if let Err(err) = connection.execute("ROLLBACK").await
        && !err.to_string().contains("no transaction is active")
    {
        tracing::warn!(error = %err, "rolling back an unfinished sqlite batch failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn open(dir: &tempfile::TempDir) -> SqliteConnections {
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("batch.db"))
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
        let connections = SqliteConnections::open(options, 1).await.unwrap();
        let mut writer = connections.writer().await;
        writer
            .connection()
            .unwrap()
            .execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
            .await
            .unwrap();
        drop(writer);
        connections
    }

    async fn ids(connections: &SqliteConnections) -> Vec<i64> {
        let mut reader = connections.reader().await;
        sqlx::query_scalar("SELECT id FROM t ORDER BY id")
            .fetch_all(reader.connection().unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_batch_commits_whole_and_returns_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let connections = open(&dir).await;
        let rows = connections
            .transaction_batch(
                sqlx::query(
                    "BEGIN IMMEDIATE; INSERT INTO t VALUES ($1); INSERT INTO t VALUES ($2); \
                     SELECT COUNT(*) FROM t; COMMIT",
                )
                .bind(1)
                .bind(2),
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(sqlx::Row::get::<i64, _>(&rows[0], 0), 2);
        assert_eq!(ids(&connections).await, [1, 2]);
    }

    #[tokio::test]
    async fn a_failing_statement_rolls_the_whole_batch_back() {
        let dir = tempfile::tempdir().unwrap();
        let connections = open(&dir).await;
        let failed = connections
            .transaction_batch(
                sqlx::query(
                    "BEGIN IMMEDIATE; INSERT INTO t VALUES ($1); INSERT INTO t VALUES ($1); \
                     COMMIT",
                )
                .bind(7),
            )
            .await;
        assert!(
            matches!(failed, Err(StoreError::Database(_))),
            "{:?}",
            failed.map(|rows| rows.len())
        );
        assert!(ids(&connections).await.is_empty(), "nothing of it stays");
        // and the writer is outside any transaction again
        let mut writer = connections.writer().await;
        let tx = writer
            .connection()
            .unwrap()
            .begin_with("BEGIN IMMEDIATE")
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }

    /// Inserts 4 KiB rows, each in its own `begin_with` transaction the way
    /// `in_write_tx!` runs one, until the store refuses one; that error.
    async fn insert_until_refused(connections: &SqliteConnections) -> StoreError {
        for _ in 0..100_000 {
            let mut writer = connections.writer().await;
            let inserted = async {
                let mut tx = writer.connection()?.begin_with("BEGIN IMMEDIATE").await?;
                sqlx::query("INSERT INTO t (pad) VALUES (zeroblob(4096))")
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok::<_, StoreError>(())
            }
            .await;
            if let Err(err) = inserted {
                return err;
            }
        }
        unreachable!("the page limit is never reached")
    }

    /// A write transaction refused for want of space (SQLITE_FULL, here from
    /// `max_page_count`) ends the transaction inside SQLite itself; sqlx's rollback on
    /// drop then fails and its depth bookkeeping stayed at one, so every later
    /// `begin_with` failed ("non-zero transaction depth") until a restart.
    #[tokio::test]
    async fn a_transaction_refused_for_space_leaves_the_writer_usable() {
        let dir = tempfile::tempdir().unwrap();
        let connections = open(&dir).await;
        sqlx::query("ALTER TABLE t ADD COLUMN pad BLOB")
            .execute(connections.writer().await.connection().unwrap())
            .await
            .unwrap();
        let pages = connections.page_count().await.unwrap();
        connections.limit_pages(pages + 4).await.unwrap();
        let refused = insert_until_refused(&connections).await;
        assert!(matches!(refused, StoreError::DiskFull(_)), "{refused:?}");
        // still full: refused again for space, not for a transaction left open
        let refused = insert_until_refused(&connections).await;
        assert!(matches!(refused, StoreError::DiskFull(_)), "{refused:?}");

        // space comes back: the same writer takes transactions and batches again
        connections.limit_pages(1 << 30).await.unwrap();
        let mut writer = connections.writer().await;
        let tx = writer
            .connection()
            .unwrap()
            .begin_with("BEGIN IMMEDIATE")
            .await
            .expect("the writer is outside any transaction");
        tx.commit().await.unwrap();
        drop(writer);
        connections
            .transaction_batch(sqlx::query(
                "BEGIN IMMEDIATE; INSERT INTO t (id) VALUES (-1); COMMIT",
            ))
            .await
            .unwrap();
        assert!(ids(&connections).await.contains(&-1));
    }

    /// A batch refused for space is rolled back whole and the writer stays usable.
    #[tokio::test]
    async fn a_batch_refused_for_space_is_a_disk_full_error() {
        let dir = tempfile::tempdir().unwrap();
        let connections = open(&dir).await;
        let pages = connections.page_count().await.unwrap();
        connections.limit_pages(pages).await.unwrap();
        let refused = connections
            .transaction_batch(sqlx::query(
                "BEGIN IMMEDIATE; INSERT INTO t (id) VALUES (1); \
                 WITH RECURSIVE n(i) AS (SELECT 2 UNION ALL SELECT i + 1 FROM n WHERE i < 5000) \
                 INSERT INTO t (id) SELECT i FROM n; COMMIT",
            ))
            .await;
        assert!(
            matches!(refused, Err(StoreError::DiskFull(_))),
            "{:?}",
            refused.map(|rows| rows.len())
        );
        connections.limit_pages(1 << 30).await.unwrap();
        assert!(ids(&connections).await.is_empty(), "nothing of it stays");
        connections
            .transaction_batch(sqlx::query(
                "BEGIN IMMEDIATE; INSERT INTO t (id) VALUES (2); COMMIT",
            ))
            .await
            .unwrap();
        assert_eq!(ids(&connections).await, [2]);
    }

    /// A batch whose caller went away part way (here: one that began and never got to
    /// its commit) is rolled back by the writer's next user before anything else runs.
    #[tokio::test]
    async fn a_batch_left_open_is_rolled_back_by_the_next_writer() {
        let dir = tempfile::tempdir().unwrap();
        let connections = open(&dir).await;
        {
            let mut writer = connections.writer().await;
            connections.batch_open.store(true, Ordering::Release);
            writer
                .connection()
                .unwrap()
                .execute("BEGIN IMMEDIATE; INSERT INTO t VALUES (3)")
                .await
                .unwrap();
        }
        let mut writer = connections.writer().await;
        let mut tx = writer
            .connection()
            .unwrap()
            .begin_with("BEGIN IMMEDIATE")
            .await
            .expect("no transaction is still open");
        sqlx::query("INSERT INTO t VALUES (4)")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        drop(writer);
        assert_eq!(ids(&connections).await, [4], "the abandoned insert is gone");
        assert!(!connections.batch_open.load(Ordering::Acquire));
    }
}
