//! The few statements SQLite and Postgres write differently, kept in one place. Every
//! other statement is shared text.

use sqlx::{PgConnection, SqliteConnection};

/// Backend-specific statements, run on a connection inside the caller's transaction.
pub(super) trait Dialect {
    /// Holds sandbox `id`'s row until the transaction ends, so a transaction that reads
    /// something about the sandbox before it writes is not raced by another one.
    async fn lock_sandbox(&mut self, id: &str) -> Result<(), sqlx::Error>;
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
