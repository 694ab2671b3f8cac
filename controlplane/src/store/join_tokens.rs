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
}

impl Store {
    pub async fn insert_join_token(&self, token: &NewJoinToken) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO join_tokens (jti, worker_id, max_uses, used, created_at, expires_at, created_by) \
             VALUES ($1, $2, $3, 0, $4, $5, $6)",
        )
        .bind(&token.jti)
        .bind(&token.worker_id)
        .bind(i64::from(token.max_uses))
        .bind(token.created_at)
        .bind(token.expires_at)
        .bind(&token.created_by)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// Counts one use of `jti` if it has uses left, is not revoked and has not expired; one
/// conditional statement, so two enrollments racing for the last use cannot both win.
pub(super) async fn consume(
    conn: &mut sqlx::SqliteConnection,
    jti: &str,
    now: i64,
) -> Result<(), StoreError> {
    let used: Option<i64> = sqlx::query_scalar(
        "UPDATE join_tokens SET used = used + 1 \
         WHERE jti = $1 AND used < max_uses AND revoked_at IS NULL AND expires_at > $2 \
         RETURNING used",
    )
    .bind(jti)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    used.map(|_| ()).ok_or(StoreError::JoinTokenUsedUp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::temp_store;

    #[tokio::test]
    async fn a_token_is_used_at_most_max_uses_times() {
        let (_dir, store) = temp_store().await;
        let token = NewJoinToken {
            jti: "t1".into(),
            worker_id: None,
            max_uses: 2,
            created_at: 100,
            expires_at: 1_000,
            created_by: "test".into(),
        };
        store.insert_join_token(&token).await.unwrap();
        let mut conn = store.pool.acquire().await.unwrap();
        consume(&mut conn, "t1", 200).await.unwrap();
        consume(&mut conn, "t1", 200).await.unwrap();
        assert!(matches!(
            consume(&mut conn, "t1", 200).await,
            Err(StoreError::JoinTokenUsedUp)
        ));
        assert!(matches!(
            consume(&mut conn, "unknown", 200).await,
            Err(StoreError::JoinTokenUsedUp)
        ));
    }

    #[tokio::test]
    async fn an_expired_token_is_not_consumed() {
        let (_dir, store) = temp_store().await;
        let token = NewJoinToken {
            jti: "t2".into(),
            worker_id: None,
            max_uses: 1,
            created_at: 100,
            expires_at: 150,
            created_by: "test".into(),
        };
        store.insert_join_token(&token).await.unwrap();
        let mut conn = store.pool.acquire().await.unwrap();
        assert!(matches!(
            consume(&mut conn, "t2", 150).await,
            Err(StoreError::JoinTokenUsedUp)
        ));
    }
}
