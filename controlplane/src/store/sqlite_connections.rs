//! The SQLite connections of a store: one writer and a few read-only readers, each
//! opened once and held for the store's life behind an async mutex.
//!
//! Why not a sqlx pool: a pooled connection goes back to the pool through a spawned
//! task that first pings it, and sqlx runs each SQLite connection on its own thread,
//! so every statement made through a pool cost a second thread hand-off and a task
//! before the connection could be used again. With one writer (SQLite admits one at
//! a time anyway) that ping sat inside the serial section of every write and halved
//! the store's write rate. A local file cannot drop a connection, which is what the
//! ping guards against in a network database; the Postgres backend keeps its pool.
//!
//! The writer is never closed while the store lives: closing SQLite's last
//! connection removes the WAL files, which read-only connections cannot recreate.

use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::{Mutex, MutexGuard};

use super::StoreError;

#[derive(Debug)]
pub(crate) struct SqliteConnections {
    writer: Mutex<Option<SqliteConnection>>,
    readers: Vec<Mutex<Option<SqliteConnection>>>,
    /// Round-robin position over `readers`.
    next_reader: AtomicUsize,
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
        super::SQLITE_MIGRATIONS.run_direct(&mut writer).await?;
        let read_only = options.clone().read_only(true);
        let mut opened = Vec::with_capacity(readers.max(1));
        for _ in 0..readers.max(1) {
            opened.push(Mutex::new(Some(read_only.connect().await?)));
        }
        Ok(Self {
            writer: Mutex::new(Some(writer)),
            readers: opened,
            next_reader: AtomicUsize::new(0),
            #[cfg(test)]
            options,
        })
    }

    /// The writer, once every earlier caller is done with it (tokio's mutex is fair).
    pub(crate) async fn writer(&self) -> Held<'_> {
        Held(self.writer.lock().await)
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
