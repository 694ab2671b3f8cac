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
    /// The team and user the call was made for; empty for system records and
    /// records written before teams existed.
    pub team_id: String,
    pub user_id: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The newest record of the chain: its seq and hash; `(0, "")` when the chain is
/// empty.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditHead {
    pub seq: i64,
    pub hash: String,
}

/// Rows a single `INSERT` carries.
const INSERT_CHUNK: usize = 500;

const AUDIT_COLUMNS: &str = "seq, at_ms, actor, operation, worker_id, sandbox_id, detail, \
     outcome, request_id, team_id, user_id, prev_hash, hash";

impl Store {
    /// The chain's head.
    pub async fn audit_head(&self) -> Result<AuditHead, StoreError> {
        let head = with_pool!(self, |pool| {
            sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1")
                .fetch_one(pool)
                .await?
        });
        Ok(head)
    }

    /// Appends `rows`, a run that continues the chain (each row's `prev_hash` is the
    /// hash of the one before), if the head is still where the first row expects it:
    /// `(rows[0].seq - 1, rows[0].prev_hash)`. One transaction moves the head to the
    /// last row and inserts them all, so a group of records costs one commit. False
    /// when another writer moved the head first (the caller rebuilds the rows on the
    /// new head and tries again); nothing is written then.
    pub async fn append_audit(&self, rows: &[AuditRow]) -> Result<bool, StoreError> {
        let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
            return Ok(true);
        };
        let insert = format!("INSERT INTO audit_events ({AUDIT_COLUMNS}) ");
        in_write_tx!(self, |tx| {
            let moved = sqlx::query(
                "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1 AND seq = $3 AND hash = $4",
            )
            .bind(last.seq)
            .bind(&last.hash)
            .bind(first.seq - 1)
            .bind(&first.prev_hash)
            .execute(&mut *tx)
            .await?;
            if moved.rows_affected() == 0 {
                return Ok(false);
            }
            // 13 parameters a row: a chunk stays far below either backend's limit
            for chunk in rows.chunks(INSERT_CHUNK) {
                let mut statement = sqlx::QueryBuilder::new(&insert);
                statement.push_values(chunk, |mut values, row| {
                    values
                        .push_bind(row.seq)
                        .push_bind(row.at_ms)
                        .push_bind(&row.actor)
                        .push_bind(&row.operation)
                        .push_bind(&row.worker_id)
                        .push_bind(&row.sandbox_id)
                        .push_bind(&row.detail)
                        .push_bind(&row.outcome)
                        .push_bind(&row.request_id)
                        .push_bind(&row.team_id)
                        .push_bind(&row.user_id)
                        .push_bind(&row.prev_hash)
                        .push_bind(&row.hash);
                });
                statement.build().execute(&mut *tx).await?;
            }
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
