//! SQLite's connections: one writer and a few read-only readers, each opened once and
//! held for the store's life behind an async mutex, and transaction batches on the
//! writer (why: `store/sqlite.rs`, parts 1 and 2).

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
    #[cfg(test)]
    options: SqliteConnectOptions,
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
            #[cfg(test)]
            options,
        })
    }

    /// The writer, once every earlier caller is done with it (tokio's mutex is fair),
    /// outside any transaction.
    pub(crate) async fn writer(&self) -> Held<'_> {
        let mut held = Held(self.writer.lock().await);
        if self.batch_open.load(Ordering::Acquire)
            && let Ok(connection) = held.connection()
        {
            // the flag stays set until this has run, even if this caller goes away too
            roll_back(connection).await;
            self.batch_open.store(false, Ordering::Release);
        }
        held
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
    pub(crate) fn options(&self) -> &SqliteConnectOptions {
        &self.options
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
