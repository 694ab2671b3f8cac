//! `audit_events` and `audit_head`: appending to the hash chain and reading it back.

use super::{Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditRow {
    pub seq: i64,
    pub at_ms: i64,
    pub actor: String,
    pub operation: String,
    pub worker_id: String,
    pub sandbox_id: String,
    pub detail: String,
    pub outcome: String,
    pub request_id: String,
    pub prev_hash: String,
    pub hash: String,
}

const AUDIT_COLUMNS: &str = "seq, at_ms, actor, operation, worker_id, sandbox_id, detail, \
     outcome, request_id, prev_hash, hash";

impl Store {
    /// The chain's head: (seq, hash) of the newest record; (0, "") when empty.
    pub async fn audit_head(&self) -> Result<(i64, String), StoreError> {
        let head = with_pool!(self, |pool| {
            sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1")
                .fetch_one(pool)
                .await?
        });
        Ok(head)
    }

    /// Appends `row` if the head is still `(row.seq - 1, row.prev_hash)`; false when
    /// another writer got there first (the caller rebuilds the row and retries).
    pub async fn append_audit(&self, row: &AuditRow) -> Result<bool, StoreError> {
        in_write_tx!(self, |tx| {
            let moved = sqlx::query(
                "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1 AND seq = $3 AND hash = $4",
            )
            .bind(row.seq)
            .bind(&row.hash)
            .bind(row.seq - 1)
            .bind(&row.prev_hash)
            .execute(&mut *tx)
            .await?;
            if moved.rows_affected() == 0 {
                return Ok(false);
            }
            sqlx::query(&format!(
                "INSERT INTO audit_events ({AUDIT_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            ))
            .bind(row.seq)
            .bind(row.at_ms)
            .bind(&row.actor)
            .bind(&row.operation)
            .bind(&row.worker_id)
            .bind(&row.sandbox_id)
            .bind(&row.detail)
            .bind(&row.outcome)
            .bind(&row.request_id)
            .bind(&row.prev_hash)
            .bind(&row.hash)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Records with `at_ms >= since_ms`, oldest first, at most `limit`.
    pub async fn list_audit(&self, since_ms: i64, limit: i64) -> Result<Vec<AuditRow>, StoreError> {
        let sql = format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_events WHERE at_ms >= $1 ORDER BY seq LIMIT $2"
        );
        let rows = with_pool!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(since_ms)
                .bind(limit)
                .fetch_all(pool)
                .await?
        });
        Ok(rows)
    }

    /// Records after `after_seq`, oldest first, at most `limit` (for walking the chain).
    pub async fn audit_page(
        &self,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let sql = format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2"
        );
        let rows = with_pool!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(after_seq)
                .bind(limit)
                .fetch_all(pool)
                .await?
        });
        Ok(rows)
    }
}
