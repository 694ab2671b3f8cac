//! `ssh_keys` and `ssh_tokens`: the SSH gateway's credentials. A public key is
//! registered to an owner (a team, or none for a cluster key's owner, and maybe a
//! user); a one-time token names one sandbox and is spent by the first login that
//! presents it. Only a token's hash is kept.

use super::{Store, StoreError};

/// A registered public key.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SshKeyRow {
    pub id: String,
    /// `None`: registered with a cluster key (it sees every team).
    pub team_id: Option<String>,
    pub user_id: Option<String>,
    pub name: String,
    /// `SHA256:…`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// The key in OpenSSH's one-line form, without a comment.
    pub public_key: String,
    /// The API key that registered it.
    pub created_by: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

const KEY_COLUMNS: &str =
    "id, team_id, user_id, name, fingerprint, public_key, created_by, created_at, revoked_at";

/// A one-time token as stored (its hash, never the token).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SshTokenRow {
    pub token_hash: String,
    pub sandbox_id: String,
    pub team_id: String,
    pub user_id: Option<String>,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

/// What spending a token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSpend {
    /// This login spent it.
    Spent(SshTokenRow),
    /// It was spent before, at `used_at`.
    Used(SshTokenRow),
    /// It expired unused.
    Expired(SshTokenRow),
    /// No such token (or its row was purged).
    Unknown,
}

impl Store {
    /// Registers a key; false when a live key has its fingerprint already.
    pub async fn insert_ssh_key(&self, key: &SshKeyRow) -> Result<bool, StoreError> {
        let inserted = with_write_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO ssh_keys (id, team_id, user_id, name, fingerprint, public_key, \
                 created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&key.id)
            .bind(&key.team_id)
            .bind(&key.user_id)
            .bind(&key.name)
            .bind(&key.fingerprint)
            .bind(&key.public_key)
            .bind(&key.created_by)
            .bind(key.created_at)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(inserted == 1)
    }

    /// Keys, newest first: every team's (`team` `None`), or one team's, and of that
    /// one user only when `user` is given; removed keys only with `removed`.
    pub async fn list_ssh_keys(
        &self,
        team: Option<&str>,
        user: Option<&str>,
        removed: bool,
    ) -> Result<Vec<SshKeyRow>, StoreError> {
        let rows = with_pool!(self, |pool| {
            sqlx::query_as(&format!(
                "SELECT {KEY_COLUMNS} FROM ssh_keys \
                 WHERE (CAST($1 AS TEXT) IS NULL OR team_id = $1) \
                 AND (CAST($2 AS TEXT) IS NULL OR user_id = $2) \
                 AND ($3 OR revoked_at IS NULL) ORDER BY created_at DESC, id"
            ))
            .bind(team)
            .bind(user)
            .bind(removed)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    pub async fn get_ssh_key(&self, id: &str) -> Result<Option<SshKeyRow>, StoreError> {
        let row = with_pool!(self, |pool| {
            sqlx::query_as(&format!("SELECT {KEY_COLUMNS} FROM ssh_keys WHERE id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        Ok(row)
    }

    /// The key a login presents: the live one with `fingerprint`, else the most
    /// recently removed one (so the refusal can say so).
    pub async fn ssh_key_by_fingerprint(
        &self,
        fingerprint: &str,
    ) -> Result<Option<SshKeyRow>, StoreError> {
        let row = with_pool!(self, |pool| {
            sqlx::query_as(&format!(
                "SELECT {KEY_COLUMNS} FROM ssh_keys WHERE fingerprint = $1 \
                 ORDER BY revoked_at IS NULL DESC, revoked_at DESC LIMIT 1"
            ))
            .bind(fingerprint)
            .fetch_optional(pool)
            .await?
        });
        Ok(row)
    }

    /// Marks a key removed at `now`; false when it was removed already or is unknown.
    pub async fn remove_ssh_key(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        let removed = with_write_pool!(self, |pool| {
            sqlx::query("UPDATE ssh_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                .bind(id)
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(removed == 1)
    }

    pub async fn insert_ssh_token(&self, token: &SshTokenRow) -> Result<(), StoreError> {
        with_write_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO ssh_tokens (token_hash, sandbox_id, team_id, user_id, created_by, \
                 created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&token.token_hash)
            .bind(&token.sandbox_id)
            .bind(&token.team_id)
            .bind(&token.user_id)
            .bind(&token.created_by)
            .bind(token.created_at)
            .bind(token.expires_at)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Spends the token with `token_hash` at `now`: one statement marks it used only
    /// if it was unused and unexpired, so two logins racing with one token cannot
    /// both win (on any number of replicas).
    pub async fn spend_ssh_token(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<TokenSpend, StoreError> {
        let spent = with_write_pool!(self, |pool| {
            sqlx::query(
                "UPDATE ssh_tokens SET used_at = $2 \
                 WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
            )
            .bind(token_hash)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected()
        });
        let row: Option<SshTokenRow> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT token_hash, sandbox_id, team_id, user_id, created_by, created_at, \
                 expires_at, used_at FROM ssh_tokens WHERE token_hash = $1",
            )
            .bind(token_hash)
            .fetch_optional(pool)
            .await?
        });
        Ok(match row {
            None => TokenSpend::Unknown,
            Some(row) if spent == 1 => TokenSpend::Spent(row),
            Some(row) if row.used_at.is_some() => TokenSpend::Used(row),
            Some(row) => TokenSpend::Expired(row),
        })
    }

    /// Forgets tokens that expired before `before` (used or not); answers how many.
    pub async fn purge_ssh_tokens(&self, before: i64) -> Result<u64, StoreError> {
        let purged = with_write_pool!(self, |pool| {
            sqlx::query("DELETE FROM ssh_tokens WHERE expires_at < $1")
                .bind(before)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(purged)
    }
}
