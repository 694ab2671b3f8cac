//! `join_tokens`: every join token ever issued, and how often it has been used.

use super::{Store, StoreError};

#[derive(Debug, Clone)]
pub struct NewJoinToken {
    pub jti: String,
    pub worker_id: Option<String>,
    pub max_uses: u32,
    pub created_at: i64,
    pub expires_at: i64,
    pub created_by: String,
    /// The pool of the worker that enrolls with it.
    pub pool: String,
    /// The labels of the worker that enrolls with it (a JSON object).
    pub labels: String,
}

impl Store {
    pub async fn insert_join_token(&self, token: &NewJoinToken) -> Result<(), StoreError> {
        with_write_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO join_tokens (jti, worker_id, max_uses, used, created_at, expires_at, \
                     created_by, pool, labels) \
                 VALUES ($1, $2, $3, 0, $4, $5, $6, $7, $8)",
            )
            .bind(&token.jti)
            .bind(&token.worker_id)
            .bind(i64::from(token.max_uses))
            .bind(token.created_at)
            .bind(token.expires_at)
            .bind(&token.created_by)
            .bind(&token.pool)
            .bind(&token.labels)
            .execute(pool)
            .await?;
        });
        Ok(())
    }
}

/// Counts one use of join token `$jti` at time `$now` on `$conn` (inside the caller's
/// transaction) if it has uses left, is not revoked and has not expired; evaluates to
/// `Result<(String, String), StoreError>`: the pool and labels the token gives. One
/// conditional statement, so two enrollments racing for the last use cannot both win,
/// on one control plane or across replicas.
macro_rules! consume_join_token {
    ($conn:expr, $jti:expr, $now:expr) => {{
        let given: Option<(String, String)> = sqlx::query_as(
            "UPDATE join_tokens SET used = used + 1 \
             WHERE jti = $1 AND used < max_uses AND revoked_at IS NULL AND expires_at > $2 \
             RETURNING pool, labels",
        )
        .bind($jti)
        .bind($now)
        .fetch_optional($conn)
        .await?;
        given.ok_or($crate::store::StoreError::JoinTokenUsedUp)
    }};
}
pub(super) use consume_join_token;
