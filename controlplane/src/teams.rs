//! Teams and their users: who owns sandboxes and keys, each team's quotas and the
//! worker pools its sandboxes may use. Cluster admins create, change and delete
//! teams; a team admin reads its own team and manages its users. Which sandboxes a
//! call may touch is [`Access`] (`teams/access.rs`); the quotas are enforced where a
//! sandbox is placed (`store/teams.rs`), and explained here when one refuses.

mod access;

use std::time::Duration;

pub use access::{Access, AccessError, DEFAULT_TEAM};

use crate::api_keys::{ApiKeyCache, Caller};
use crate::clock::now_secs;
use crate::fleet::labels::validate_pool;
use crate::sandboxes::{SandboxError, Sandboxes};
use crate::store::{Store, StoreError, TeamDeletion, TeamRow, TeamUsage, UserDeletion, UserRow};

/// The longest team or user name.
const MAX_NAME_LEN: usize = 63;

#[derive(Debug, thiserror::Error)]
pub enum TeamError {
    #[error("team {0:?} not found")]
    UnknownTeam(String),
    #[error("team {0:?} exists already")]
    TeamExists(String),
    #[error(
        "invalid team name {0:?}: 1 to 63 lowercase letters, digits and '-', starting with a \
         letter or digit"
    )]
    BadTeamName(String),
    #[error("the default team cannot be deleted")]
    DefaultTeam,
    #[error(
        "team {team:?} still owns {count} sandbox(es); destroy them first or delete with force"
    )]
    TeamOwnsSandboxes { team: String, count: i64 },
    #[error("team {team:?} has no user {user:?}")]
    UnknownUser { team: String, user: String },
    #[error("team {team:?} has a user {user:?} already")]
    UserExists { team: String, user: String },
    #[error("invalid user name {0:?}: 1 to 63 letters, digits, '.', '_', '@' and '-'")]
    BadUserName(String),
    #[error(
        "user {user:?} of team {team:?} still owns {count} sandbox(es); destroy them first or \
         remove with force"
    )]
    UserOwnsSandboxes {
        team: String,
        user: String,
        count: i64,
    },
    #[error("{0}")]
    BadQuota(String),
    #[error("only a cluster admin key may {0}")]
    NotClusterAdmin(&'static str),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A team's quotas; `None`: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    pub max_sandboxes: Option<i64>,
    pub max_vcpus: Option<i64>,
    pub max_memory_mb: Option<i64>,
    pub max_ttl: Option<Duration>,
}

impl Quota {
    fn of(row: &TeamRow) -> Self {
        Self {
            max_sandboxes: row.max_sandboxes,
            max_vcpus: row.max_vcpus,
            max_memory_mb: row.max_memory_mb,
            max_ttl: row
                .max_ttl_secs
                .and_then(|secs| u64::try_from(secs).ok())
                .map(Duration::from_secs),
        }
    }

    fn check(&self) -> Result<(), TeamError> {
        for (name, value) in [
            ("max_sandboxes", self.max_sandboxes),
            ("max_vcpus", self.max_vcpus),
            ("max_memory_mb", self.max_memory_mb),
        ] {
            if value.is_some_and(|v| v < 1) {
                return Err(TeamError::BadQuota(format!(
                    "{name} must be at least 1 (or absent for no limit)"
                )));
            }
        }
        if self.max_ttl.is_some_and(|ttl| ttl < Duration::from_secs(1)) {
            return Err(TeamError::BadQuota(
                "max_ttl must be at least 1s (or absent for no limit)".into(),
            ));
        }
        Ok(())
    }

    /// Whether any limit is set.
    pub fn limits_anything(&self) -> bool {
        self.max_sandboxes.is_some()
            || self.max_vcpus.is_some()
            || self.max_memory_mb.is_some()
            || self.max_ttl.is_some()
    }
}

/// A team's settings: quotas and the pools its sandboxes may use (empty: any).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TeamSettings {
    pub quota: Quota,
    pub pools: Vec<String>,
}

impl TeamSettings {
    fn of(row: &TeamRow) -> Self {
        Self {
            quota: Quota::of(row),
            pools: serde_json::from_str(&row.pools).unwrap_or_default(),
        }
    }

    fn row(&self, id: &str, created_at: i64) -> TeamRow {
        let ttl = self
            .quota
            .max_ttl
            .map(|ttl| i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
        TeamRow {
            id: id.to_owned(),
            created_at,
            max_sandboxes: self.quota.max_sandboxes,
            max_vcpus: self.quota.max_vcpus,
            max_memory_mb: self.quota.max_memory_mb,
            max_ttl_secs: ttl,
            pools: serde_json::to_string(&self.pools).unwrap_or_else(|_| "[]".into()),
        }
    }

    fn check(&self) -> Result<(), TeamError> {
        self.quota.check()?;
        for pool in &self.pools {
            validate_pool(pool).map_err(TeamError::BadQuota)?;
        }
        Ok(())
    }
}

/// A team as its admins see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamView {
    pub name: String,
    pub created_at: i64,
    pub settings: TeamSettings,
    pub usage: TeamUsage,
    pub users: i64,
}

/// Team `name`'s quotas and pools, if there is such a team.
pub async fn team_settings(store: &Store, name: &str) -> Result<Option<TeamSettings>, StoreError> {
    Ok(store.get_team(name).await?.as_ref().map(TeamSettings::of))
}

/// Team names follow the rule of pool names: `[a-z0-9][a-z0-9-]{0,62}`.
pub fn valid_team_name(name: &str) -> bool {
    validate_pool(name).is_ok()
}

/// User names: `[A-Za-z0-9._@-]{1,63}`.
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'))
}

#[derive(Debug, Clone)]
pub struct Teams {
    store: Store,
    sandboxes: Sandboxes,
    /// The API key cache, so keys a deletion revokes are refused here at once.
    keys: ApiKeyCache,
}

impl Teams {
    pub fn new(store: Store, sandboxes: Sandboxes, keys: ApiKeyCache) -> Self {
        Self {
            store,
            sandboxes,
            keys,
        }
    }

    fn cluster_admin(caller: &Caller, what: &'static str) -> Result<(), TeamError> {
        if caller.role() == crate::api_keys::Role::ClusterAdmin {
            Ok(())
        } else {
            Err(TeamError::NotClusterAdmin(what))
        }
    }

    /// Team `name` as `caller` may see it: a team key sees only its own team (another
    /// is unknown, like one that does not exist).
    async fn visible(&self, caller: &Caller, name: &str) -> Result<TeamRow, TeamError> {
        if caller.team.as_deref().is_some_and(|own| own != name) {
            return Err(TeamError::UnknownTeam(name.to_owned()));
        }
        self.store
            .get_team(name)
            .await?
            .ok_or_else(|| TeamError::UnknownTeam(name.to_owned()))
    }

    async fn view(&self, row: TeamRow, users: i64) -> Result<TeamView, TeamError> {
        Ok(TeamView {
            usage: self.store.team_usage(&row.id).await?,
            settings: TeamSettings::of(&row),
            name: row.id,
            created_at: row.created_at,
            users,
        })
    }

    pub async fn create(
        &self,
        caller: &Caller,
        name: &str,
        settings: TeamSettings,
    ) -> Result<TeamView, TeamError> {
        Self::cluster_admin(caller, "create teams")?;
        if !valid_team_name(name) {
            return Err(TeamError::BadTeamName(name.to_owned()));
        }
        settings.check()?;
        let row = settings.row(name, now_secs());
        if !self.store.insert_team(&row).await? {
            return Err(TeamError::TeamExists(name.to_owned()));
        }
        tracing::info!(team = %name, "team created");
        self.view(row, 0).await
    }

    /// Every team `caller` may see (a team key: its own).
    pub async fn list(&self, caller: &Caller) -> Result<Vec<TeamView>, TeamError> {
        let counts = self.store.user_counts().await?;
        let mut views = Vec::new();
        for row in self.store.list_teams().await? {
            if caller.team.as_deref().is_some_and(|own| own != row.id) {
                continue;
            }
            let users = counts
                .iter()
                .find(|(team, _)| *team == row.id)
                .map_or(0, |(_, n)| *n);
            views.push(self.view(row, users).await?);
        }
        Ok(views)
    }

    pub async fn get(&self, caller: &Caller, name: &str) -> Result<TeamView, TeamError> {
        let row = self.visible(caller, name).await?;
        let users = self.store.list_users(name).await?.len();
        self.view(row, i64::try_from(users).unwrap_or(i64::MAX))
            .await
    }

    /// The settings of team `name` (for placement: its quotas and pools).
    pub async fn settings(&self, name: &str) -> Result<TeamSettings, TeamError> {
        let row = self
            .store
            .get_team(name)
            .await?
            .ok_or_else(|| TeamError::UnknownTeam(name.to_owned()))?;
        Ok(TeamSettings::of(&row))
    }

    /// Changes team `name`'s settings with `change` (cluster admins).
    pub async fn update(
        &self,
        caller: &Caller,
        name: &str,
        change: impl FnOnce(&mut TeamSettings),
    ) -> Result<TeamView, TeamError> {
        Self::cluster_admin(caller, "change a team's quotas and pools")?;
        let row = self.visible(caller, name).await?;
        let mut settings = TeamSettings::of(&row);
        change(&mut settings);
        settings.check()?;
        let row = settings.row(name, row.created_at);
        if !self.store.update_team(&row).await? {
            return Err(TeamError::UnknownTeam(name.to_owned()));
        }
        tracing::info!(team = %name, "team settings changed");
        self.get(caller, name).await
    }

    /// Deletes team `name` with its users, revoking its keys. While it owns sandboxes
    /// that are not destroyed it is refused, unless `force`: then they are destroyed
    /// first. Answers how many were destroyed.
    pub async fn delete(
        &self,
        caller: &Caller,
        name: &str,
        force: bool,
    ) -> Result<usize, TeamError> {
        Self::cluster_admin(caller, "delete teams")?;
        if name == DEFAULT_TEAM {
            return Err(TeamError::DefaultTeam);
        }
        self.visible(caller, name).await?;
        let destroyed = if force {
            self.sandboxes
                .destroy_all_of(&Access::team(name), None)
                .await?
        } else {
            0
        };
        let deletion = self.store.delete_team(name, now_secs()).await;
        self.keys.invalidate_team(name, None);
        match deletion? {
            TeamDeletion::Deleted => {
                tracing::info!(team = %name, destroyed, "team deleted");
                Ok(destroyed)
            }
            TeamDeletion::OwnsSandboxes(count) => Err(TeamError::TeamOwnsSandboxes {
                team: name.to_owned(),
                count,
            }),
            TeamDeletion::Unknown => Err(TeamError::UnknownTeam(name.to_owned())),
        }
    }

    /// Team `team` as `caller` may administer it (cluster admin, or its team admin).
    async fn administered(&self, caller: &Caller, team: &str) -> Result<TeamRow, TeamError> {
        let row = self.visible(caller, team).await?;
        if !caller.administers(team) {
            return Err(TeamError::UnknownTeam(team.to_owned()));
        }
        Ok(row)
    }

    pub async fn add_user(
        &self,
        caller: &Caller,
        team: &str,
        name: &str,
    ) -> Result<UserRow, TeamError> {
        self.administered(caller, team).await?;
        if !valid_user_name(name) {
            return Err(TeamError::BadUserName(name.to_owned()));
        }
        let user = UserRow {
            team_id: team.to_owned(),
            name: name.to_owned(),
            created_at: now_secs(),
        };
        if !self.store.insert_user(&user).await? {
            return Err(TeamError::UserExists {
                team: team.to_owned(),
                user: name.to_owned(),
            });
        }
        Ok(user)
    }

    pub async fn users(&self, caller: &Caller, team: &str) -> Result<Vec<UserRow>, TeamError> {
        self.administered(caller, team).await?;
        Ok(self.store.list_users(team).await?)
    }

    /// Removes a user and revokes its keys; its sandboxes are destroyed first when
    /// `force`, else they refuse the removal.
    pub async fn remove_user(
        &self,
        caller: &Caller,
        team: &str,
        name: &str,
        force: bool,
    ) -> Result<usize, TeamError> {
        self.administered(caller, team).await?;
        if self.store.get_user(team, name).await?.is_none() {
            return Err(TeamError::UnknownUser {
                team: team.to_owned(),
                user: name.to_owned(),
            });
        }
        let destroyed = if force {
            self.sandboxes
                .destroy_all_of(&Access::team(team), Some(name))
                .await?
        } else {
            0
        };
        let deletion = self.store.delete_user(team, name, now_secs()).await;
        self.keys.invalidate_team(team, Some(name));
        match deletion? {
            UserDeletion::Deleted => Ok(destroyed),
            UserDeletion::OwnsSandboxes(count) => Err(TeamError::UserOwnsSandboxes {
                team: team.to_owned(),
                user: name.to_owned(),
                count,
            }),
            UserDeletion::Unknown => Err(TeamError::UnknownUser {
                team: team.to_owned(),
                user: name.to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["a", "team-1", "0x"] {
            assert!(valid_team_name(good), "{good}");
        }
        for bad in ["", "-a", "A", "a_b", "a b", &"a".repeat(64)] {
            assert!(!valid_team_name(bad), "{bad}");
        }
        for good in ["alice", "a.b@c", "x_y-z", "Bob"] {
            assert!(valid_user_name(good), "{good}");
        }
        for bad in ["", "a b", "a/b", &"u".repeat(64)] {
            assert!(!valid_user_name(bad), "{bad}");
        }
    }

    #[test]
    fn quotas_are_positive_and_settings_round_trip_through_a_row() {
        let settings = TeamSettings {
            quota: Quota {
                max_sandboxes: Some(10),
                max_vcpus: None,
                max_memory_mb: Some(4096),
                max_ttl: Some(Duration::from_secs(7200)),
            },
            pools: vec!["eu".into()],
        };
        settings.check().unwrap();
        let row = settings.row("a", 5);
        assert_eq!(TeamSettings::of(&row), settings);
        let zero = TeamSettings {
            quota: Quota {
                max_sandboxes: Some(0),
                ..Quota::default()
            },
            pools: vec![],
        };
        assert!(
            zero.check()
                .unwrap_err()
                .to_string()
                .contains("max_sandboxes")
        );
        let bad_pool = TeamSettings {
            quota: Quota::default(),
            pools: vec!["EU!".into()],
        };
        assert!(bad_pool.check().is_err());
    }
}
