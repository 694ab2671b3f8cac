//! `secrets`: each team's sealed secrets. The store never sees a value, only what
//! `secrets.rs` sealed.

use super::{Store, StoreError};

/// A secret as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SecretRow {
    pub team_id: String,
    pub name: String,
    /// The sealing key's id.
    pub key_id: String,
    /// `nonce || ciphertext || tag`.
    pub sealed: Vec<u8>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Store {
    /// Sets `row`'s secret (made, or its value replaced); answers whether it is new,
    /// and the row as stored (a replaced one keeps its `created_at`).
    pub async fn put_secret(&self, row: &SecretRow) -> Result<(bool, SecretRow), StoreError> {
        let existed: Option<i64> = with_pool!(self, |pool| {
            sqlx::query_scalar("SELECT created_at FROM secrets WHERE team_id = $1 AND name = $2")
                .bind(&row.team_id)
                .bind(&row.name)
                .fetch_optional(pool)
                .await?
        });
        let stored = with_write_pool!(self, |pool| {
            sqlx::query_as(
                "INSERT INTO secrets (team_id, name, key_id, sealed, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $5) \
                 ON CONFLICT (team_id, name) DO UPDATE SET key_id = excluded.key_id, \
                 sealed = excluded.sealed, updated_at = excluded.updated_at \
                 RETURNING team_id, name, key_id, sealed, created_at, updated_at",
            )
            .bind(&row.team_id)
            .bind(&row.name)
            .bind(&row.key_id)
            .bind(&row.sealed)
            .bind(row.updated_at)
            .fetch_one(pool)
            .await?
        });
        Ok((existed.is_none(), stored))
    }

    /// `team`'s secrets by name, values left sealed.
    pub async fn list_secrets(&self, team: &str) -> Result<Vec<SecretRow>, StoreError> {
        let rows = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT team_id, name, key_id, sealed, created_at, updated_at FROM secrets \
                 WHERE team_id = $1 ORDER BY name",
            )
            .bind(team)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// Deletes `team`'s secret `name`; false when there was none.
    pub async fn delete_secret(&self, team: &str, name: &str) -> Result<bool, StoreError> {
        let deleted = with_write_pool!(self, |pool| {
            sqlx::query("DELETE FROM secrets WHERE team_id = $1 AND name = $2")
                .bind(team)
                .bind(name)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(deleted == 1)
    }
}
