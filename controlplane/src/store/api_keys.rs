//! `api_keys`: hashed, scoped keys for the public API.

use super::{Store, StoreError};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKeyRow {
    pub id: String,
    pub name: String,
    pub secret_hash: String,
    pub scopes: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// Stores `$key` (an [`ApiKeyRow`]) through `$conn`, a pool or a connection of either
/// backend; evaluates to the statement's future.
macro_rules! insert_api_key {
    ($conn:expr, $key:expr) => {
        sqlx::query(
            "INSERT INTO api_keys (id, name, secret_hash, scopes, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&$key.id)
        .bind(&$key.name)
        .bind(&$key.secret_hash)
        .bind(&$key.scopes)
        .bind($key.created_at)
        .execute($conn)
    };
}
pub(super) use insert_api_key;

impl Store {
    pub async fn insert_api_key(&self, key: &ApiKeyRow) -> Result<(), StoreError> {
        with_write_pool!(self, |pool| {
            insert_api_key!(pool, key).await?;
        });
        Ok(())
    }

    pub async fn find_api_key(&self, id: &str) -> Result<Option<ApiKeyRow>, StoreError> {
        let row = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT id, name, secret_hash, scopes, created_at, revoked_at FROM api_keys WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        Ok(row)
    }

    pub async fn count_api_keys(&self) -> Result<i64, StoreError> {
        let count = with_pool!(self, |pool| {
            sqlx::query_scalar("SELECT COUNT(*) FROM api_keys")
                .fetch_one(pool)
                .await?
        });
        Ok(count)
    }
}
