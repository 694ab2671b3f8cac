//! `teams` and `users`: who owns sandboxes and keys, each team's quotas (NULL: no
//! limit) and the pools its sandboxes may use, and how much of its quotas its live
//! sandboxes hold. A team's usage is read from the sandboxes holding a lease (what
//! also holds worker capacity), never kept as a counter, so nothing can drift.

use super::{Backend, Store, StoreError};

/// A team as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TeamRow {
    pub id: String,
    pub created_at: i64,
    pub max_sandboxes: Option<i64>,
    pub max_vcpus: Option<i64>,
    pub max_memory_mb: Option<i64>,
    pub max_ttl_secs: Option<i64>,
    /// JSON array of pool names; empty: any pool.
    pub pools: String,
}

/// What a team's live sandboxes (those holding a lease) hold of its quotas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct TeamUsage {
    pub sandboxes: i64,
    pub vcpus: i64,
    pub memory_mb: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UserRow {
    pub team_id: String,
    pub name: String,
    pub created_at: i64,
}

const TEAM_COLUMNS: &str =
    "id, created_at, max_sandboxes, max_vcpus, max_memory_mb, max_ttl_secs, pools";

/// The usage of team `$1`: its sandboxes that hold a lease.
pub(super) const TEAM_USAGE: &str = "SELECT COUNT(*) AS sandboxes, \
     CAST(COALESCE(SUM(s.vcpus), 0) AS BIGINT) AS vcpus, \
     CAST(COALESCE(SUM(s.memory_mb), 0) AS BIGINT) AS memory_mb \
     FROM leases l JOIN sandboxes s ON s.id = l.sandbox_id WHERE s.team_id = $1";

/// Team `team` exists and has room for one more sandbox of `memory_mb` MiB and
/// `vcpus` CPUs (each argument a placeholder, `$n`): the condition a placing statement
/// adds to its slot reservation, so the quota is checked by the statement that places
/// (on Postgres after the team's creates are serialized, `postgres::place_new_sandbox`).
pub(super) fn within_quota(team: &str, memory_mb: &str, vcpus: &str) -> String {
    let used = |what: &str| {
        format!(
            "(SELECT {what} FROM leases ql JOIN sandboxes qs ON qs.id = ql.sandbox_id \
             WHERE qs.team_id = {team})"
        )
    };
    format!(
        "EXISTS (SELECT 1 FROM teams qt WHERE qt.id = {team} \
           AND (qt.max_sandboxes IS NULL OR {count} < qt.max_sandboxes) \
           AND (qt.max_vcpus IS NULL OR {cpus} + {vcpus} <= qt.max_vcpus) \
           AND (qt.max_memory_mb IS NULL OR {memory} + {memory_mb} <= qt.max_memory_mb))",
        count = used("COUNT(*)"),
        cpus = used("CAST(COALESCE(SUM(qs.vcpus), 0) AS BIGINT)"),
        memory = used("CAST(COALESCE(SUM(qs.memory_mb), 0) AS BIGINT)"),
    )
}

/// Whether team `$1` exists, and whether it has room for a sandbox of `$2` MiB and
/// `$3` CPUs: what a placement that placed nothing asks, to tell a full fleet from a
/// full quota.
pub(super) static QUOTA_ROOM: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT EXISTS (SELECT 1 FROM teams WHERE id = $1), {}",
        within_quota("$1", "$2", "$3")
    )
});

/// What [`Store::delete_team`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TeamDeletion {
    Deleted,
    /// The team still owns this many sandboxes that are not destroyed.
    OwnsSandboxes(i64),
    Unknown,
}

/// What [`Store::delete_user`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserDeletion {
    Deleted,
    /// The user still owns this many sandboxes that are not destroyed.
    OwnsSandboxes(i64),
    Unknown,
}

impl Store {
    /// Inserts `team`; false when a team of that name exists.
    pub async fn insert_team(&self, team: &TeamRow) -> Result<bool, StoreError> {
        let inserted = with_write_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO teams (id, created_at, max_sandboxes, max_vcpus, max_memory_mb, \
                     max_ttl_secs, pools) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(&team.id)
            .bind(team.created_at)
            .bind(team.max_sandboxes)
            .bind(team.max_vcpus)
            .bind(team.max_memory_mb)
            .bind(team.max_ttl_secs)
            .bind(&team.pools)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(inserted == 1)
    }

    pub async fn get_team(&self, id: &str) -> Result<Option<TeamRow>, StoreError> {
        let row = with_pool!(self, |pool| {
            sqlx::query_as(&format!("SELECT {TEAM_COLUMNS} FROM teams WHERE id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        Ok(row)
    }

    pub async fn list_teams(&self) -> Result<Vec<TeamRow>, StoreError> {
        let rows = with_pool!(self, |pool| {
            sqlx::query_as(&format!("SELECT {TEAM_COLUMNS} FROM teams ORDER BY id"))
                .fetch_all(pool)
                .await?
        });
        Ok(rows)
    }

    /// Replaces team `team.id`'s quotas and pools; false when there is no such team.
    pub async fn update_team(&self, team: &TeamRow) -> Result<bool, StoreError> {
        let updated = with_write_pool!(self, |pool| {
            sqlx::query(
                "UPDATE teams SET max_sandboxes = $2, max_vcpus = $3, max_memory_mb = $4, \
                     max_ttl_secs = $5, pools = $6 WHERE id = $1",
            )
            .bind(&team.id)
            .bind(team.max_sandboxes)
            .bind(team.max_vcpus)
            .bind(team.max_memory_mb)
            .bind(team.max_ttl_secs)
            .bind(&team.pools)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(updated == 1)
    }

    pub async fn team_usage(&self, id: &str) -> Result<TeamUsage, StoreError> {
        let usage = with_pool!(self, |pool| {
            sqlx::query_as(TEAM_USAGE).bind(id).fetch_one(pool).await?
        });
        Ok(usage)
    }

    /// How many users each team has, by team id.
    pub async fn user_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = with_pool!(self, |pool| {
            sqlx::query_as("SELECT team_id, COUNT(*) FROM users GROUP BY team_id")
                .fetch_all(pool)
                .await?
        });
        Ok(rows)
    }

    /// Deletes team `id` with its users, revoking its keys at `now`, unless it still
    /// owns sandboxes that are not destroyed (checked in the same transaction).
    pub async fn delete_team(&self, id: &str, now: i64) -> Result<TeamDeletion, StoreError> {
        let backend = self.backend();
        in_write_tx!(self, |tx| {
            // SQLite's `BEGIN IMMEDIATE` holds its one write lock already; Postgres
            // locks the team's row, which creates for the team share (see
            // `postgres::place_new_sandbox`)
            let lock = if backend == Backend::Postgres {
                " FOR UPDATE"
            } else {
                ""
            };
            let locked: Option<String> =
                sqlx::query_scalar(&format!("SELECT id FROM teams WHERE id = $1{lock}"))
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if locked.is_none() {
                return Ok(TeamDeletion::Unknown);
            }
            let owned: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM sandboxes WHERE team_id = $1 AND state <> 'destroyed'",
            )
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
            if owned > 0 {
                return Ok(TeamDeletion::OwnsSandboxes(owned));
            }
            sqlx::query(
                "UPDATE api_keys SET revoked_at = $2 WHERE team_id = $1 AND revoked_at IS NULL",
            )
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE ssh_keys SET revoked_at = $2 WHERE team_id = $1 AND revoked_at IS NULL",
            )
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM templates WHERE team_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM secrets WHERE team_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM users WHERE team_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM teams WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(TeamDeletion::Deleted)
        })
    }

    /// Inserts `user`; false when its team has a user of that name already.
    pub async fn insert_user(&self, user: &UserRow) -> Result<bool, StoreError> {
        let inserted = with_write_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO users (team_id, name, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (team_id, name) DO NOTHING",
            )
            .bind(&user.team_id)
            .bind(&user.name)
            .bind(user.created_at)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(inserted == 1)
    }

    pub async fn get_user(&self, team_id: &str, name: &str) -> Result<Option<UserRow>, StoreError> {
        let row = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT team_id, name, created_at FROM users WHERE team_id = $1 AND name = $2",
            )
            .bind(team_id)
            .bind(name)
            .fetch_optional(pool)
            .await?
        });
        Ok(row)
    }

    pub async fn list_users(&self, team_id: &str) -> Result<Vec<UserRow>, StoreError> {
        let rows = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT team_id, name, created_at FROM users WHERE team_id = $1 ORDER BY name",
            )
            .bind(team_id)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// Removes a user of a team and revokes its keys at `now`, unless the user still
    /// owns sandboxes that are not destroyed.
    pub async fn delete_user(
        &self,
        team_id: &str,
        name: &str,
        now: i64,
    ) -> Result<UserDeletion, StoreError> {
        in_write_tx!(self, |tx| {
            let owned: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM sandboxes \
                 WHERE team_id = $1 AND owner_id = $2 AND state <> 'destroyed'",
            )
            .bind(team_id)
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
            if owned > 0 {
                return Ok(UserDeletion::OwnsSandboxes(owned));
            }
            let deleted = sqlx::query("DELETE FROM users WHERE team_id = $1 AND name = $2")
                .bind(team_id)
                .bind(name)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if deleted == 0 {
                return Ok(UserDeletion::Unknown);
            }
            sqlx::query(
                "UPDATE api_keys SET revoked_at = $3 \
                 WHERE team_id = $1 AND user_id = $2 AND revoked_at IS NULL",
            )
            .bind(team_id)
            .bind(name)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE ssh_keys SET revoked_at = $3 \
                 WHERE team_id = $1 AND user_id = $2 AND revoked_at IS NULL",
            )
            .bind(team_id)
            .bind(name)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(UserDeletion::Deleted)
        })
    }
}
