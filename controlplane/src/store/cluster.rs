//! `cluster`: the identity every control plane on this database must share (trust
//! domain, CA, token key), recorded by the first one to start, and the one-time mark
//! that the first admin key was made.

use super::api_keys::insert_api_key;
use super::{ApiKeyRow, Store, StoreError};

/// What makes replicas one cluster: workers trust the CA, join tokens are checked with
/// the token key, and SPIFFE ids live in the trust domain.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ClusterIdentity {
    pub trust_domain: String,
    /// Hex SHA-256 of the CA certificate (DER).
    pub ca_sha256: String,
    /// Hex SHA-256 of the token verification key (SPKI PEM).
    pub token_key_sha256: String,
}

impl Store {
    /// The cluster's identity, once a control plane recorded it.
    pub async fn cluster_identity(&self) -> Result<Option<ClusterIdentity>, StoreError> {
        let recorded = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT trust_domain, ca_sha256, token_key_sha256 FROM cluster WHERE id = 1",
            )
            .fetch_optional(pool)
            .await?
        });
        Ok(recorded)
    }

    /// Records `ours` as the cluster's identity unless one is recorded already, and
    /// returns the identity in force: the first writer wins, even when several control
    /// planes start together on an empty database; the caller compares it with its own.
    pub async fn claim_cluster_identity(
        &self,
        ours: &ClusterIdentity,
        now_ms: i64,
    ) -> Result<ClusterIdentity, StoreError> {
        with_write_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO cluster (id, trust_domain, ca_sha256, token_key_sha256, created_at_ms) \
                 VALUES (1, $1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&ours.trust_domain)
            .bind(&ours.ca_sha256)
            .bind(&ours.token_key_sha256)
            .bind(now_ms)
            .execute(pool)
            .await?;
        });
        let recorded = with_write_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT trust_domain, ca_sha256, token_key_sha256 FROM cluster WHERE id = 1",
            )
            .fetch_one(pool)
            .await?
        });
        Ok(recorded)
    }

    /// Stores `key` as the cluster's first admin key unless a key exists already or
    /// another control plane made the first one; returns whether this one was stored.
    /// The claim is a conditional update of the cluster row (recorded by
    /// [`Store::claim_cluster_identity`] before), so exactly one of several replicas
    /// starting together makes it.
    pub async fn insert_first_admin_key(&self, key: &ApiKeyRow) -> Result<bool, StoreError> {
        in_write_tx!(self, |tx| {
            let claimed = sqlx::query(
                "UPDATE cluster SET admin_key_id = $1 \
                 WHERE id = 1 AND admin_key_id IS NULL AND NOT EXISTS (SELECT 1 FROM api_keys)",
            )
            .bind(&key.id)
            .execute(&mut *tx)
            .await?;
            if claimed.rows_affected() == 0 {
                return Ok(false);
            }
            insert_api_key!(&mut *tx, key).await?;
            tx.commit().await?;
            Ok(true)
        })
    }
}
