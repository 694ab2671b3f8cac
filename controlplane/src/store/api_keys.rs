//! `api_keys`: hashed, scoped keys for the public API, with an optional expiry, a
//! revocation time and when each was last used. Listings never carry the hash.

use super::{Backend, Store, StoreError, postgres};

/// A key as stored, hash included: what authentication reads.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKeyRow {
    pub id: String,
    pub name: String,
    pub secret_hash: String,
    pub scopes: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// `None`: a cluster key (not bound to a team).
    pub team_id: Option<String>,
    /// The user of its team the key acts as, if bound to one.
    pub user_id: Option<String>,
}

/// A key as listed: everything but the hash.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ApiKeyInfo {
    pub id: String,
    pub name: String,
    pub scopes: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
}

impl From<ApiKeyRow> for ApiKeyInfo {
    fn from(row: ApiKeyRow) -> Self {
        Self {
            id: row.id,
            name: row.name,
            scopes: row.scopes,
            created_at: row.created_at,
            expires_at: row.expires_at,
            last_used_at: row.last_used_at,
            revoked_at: row.revoked_at,
            team_id: row.team_id,
            user_id: row.user_id,
        }
    }
}

/// What [`Store::revoke_api_key`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRevocation {
    /// This call revoked it.
    Revoked(ApiKeyInfo),
    /// It was revoked before (the answer is the same; nothing changed).
    AlreadyRevoked(ApiKeyInfo),
}

const INFO_COLUMNS: &str =
    "id, name, scopes, created_at, expires_at, last_used_at, revoked_at, team_id, user_id";

/// Stores `$key` (an [`ApiKeyRow`]) through `$conn`, a pool or a connection of either
/// backend; evaluates to the statement's future.
macro_rules! insert_api_key {
    ($conn:expr, $key:expr) => {
        sqlx::query(
            "INSERT INTO api_keys (id, name, secret_hash, scopes, created_at, expires_at, \
                 team_id, user_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&$key.id)
        .bind(&$key.name)
        .bind(&$key.secret_hash)
        .bind(&$key.scopes)
        .bind($key.created_at)
        .bind($key.expires_at)
        .bind(&$key.team_id)
        .bind(&$key.user_id)
        .execute($conn)
    };
}
pub(super) use insert_api_key;

/// Revokes `$1` at `$2`, unless it is revoked already or it is a cluster admin key
/// (the admin scope, no team) and no other one is usable (unrevoked and unexpired at
/// `$2`): the last one would lock every operator out.
const REVOKE: &str = "UPDATE api_keys SET revoked_at = $2 \
     WHERE id = $1 AND revoked_at IS NULL \
     AND (',' || scopes || ',' NOT LIKE '%,admin,%' OR team_id IS NOT NULL OR EXISTS ( \
         SELECT 1 FROM api_keys other WHERE other.id <> $1 AND other.revoked_at IS NULL \
         AND other.team_id IS NULL \
         AND (other.expires_at IS NULL OR other.expires_at > $2) \
         AND ',' || other.scopes || ',' LIKE '%,admin,%'))";

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
                "SELECT id, name, secret_hash, scopes, created_at, expires_at, last_used_at, \
                 revoked_at, team_id, user_id FROM api_keys WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        Ok(row)
    }

    /// Key `id` without its hash.
    pub async fn api_key_info(&self, id: &str) -> Result<Option<ApiKeyInfo>, StoreError> {
        let row = with_pool!(self, |pool| {
            sqlx::query_as(&format!(
                "SELECT {INFO_COLUMNS} FROM api_keys WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        Ok(row)
    }

    /// Every key, revoked ones included, oldest first; never the hash.
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyInfo>, StoreError> {
        let rows = with_pool!(self, |pool| {
            sqlx::query_as(&format!(
                "SELECT {INFO_COLUMNS} FROM api_keys ORDER BY created_at, id"
            ))
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    pub async fn count_api_keys(&self) -> Result<i64, StoreError> {
        let count = with_pool!(self, |pool| {
            sqlx::query_scalar("SELECT COUNT(*) FROM api_keys")
                .fetch_one(pool)
                .await?
        });
        Ok(count)
    }

    /// Revokes key `id` at `now`. Revoking a revoked key changes nothing and says so;
    /// an unknown key is [`StoreError::UnknownApiKey`]; the last usable admin key is
    /// refused with [`StoreError::LastAdminKey`]. Two replicas revoking the last two
    /// admin keys at once cannot both succeed: Postgres locks the unrevoked admin
    /// rows first (SQLite's `BEGIN IMMEDIATE` holds its one write lock already).
    pub async fn revoke_api_key(&self, id: &str, now: i64) -> Result<KeyRevocation, StoreError> {
        let backend = self.backend();
        in_write_tx!(self, |tx| {
            if backend == Backend::Postgres {
                sqlx::query(postgres::LOCK_ADMIN_KEYS)
                    .execute(&mut *tx)
                    .await?;
            }
            let revoked = sqlx::query(REVOKE)
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            let info: Option<ApiKeyInfo> = sqlx::query_as(&format!(
                "SELECT {INFO_COLUMNS} FROM api_keys WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(info) = info else {
                return Err(StoreError::UnknownApiKey(id.to_owned()));
            };
            if revoked.rows_affected() == 1 {
                tx.commit().await?;
                return Ok(KeyRevocation::Revoked(info));
            }
            if info.revoked_at.is_some() {
                return Ok(KeyRevocation::AlreadyRevoked(info));
            }
            Err(StoreError::LastAdminKey(id.to_owned()))
        })
    }

    /// Records that key `id` was used at `now`, unless a use was recorded at most
    /// `min_interval_secs` before; returns whether it wrote.
    pub async fn touch_api_key(
        &self,
        id: &str,
        now: i64,
        min_interval_secs: i64,
    ) -> Result<bool, StoreError> {
        let written = with_write_pool!(self, |pool| {
            sqlx::query(
                "UPDATE api_keys SET last_used_at = $2 \
                 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $3)",
            )
            .bind(id)
            .bind(now)
            .bind(now - min_interval_secs)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(written == 1)
    }
}
