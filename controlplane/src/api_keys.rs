//! API keys for the public API: `berth_<id>_<secret>`, shown once, stored as the
//! SHA-256 of the secret (the secret is 256 random bits, so a fast hash is enough), and
//! scoped: read, write, exec, admin (admin allows everything), optionally expiring.
//! Operators create, list and revoke them through `manage` (the HTTP and gRPC edges
//! call it); `cache` keeps recently read rows and when each key's use was last written.

use std::fmt;
use std::str::FromStr;

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::clock::now_secs;
use crate::store::{ApiKeyRow, Store, StoreError};

mod cache;
mod last_used;
pub mod manage;

pub use cache::ApiKeyCache;
pub use manage::{CreatedKey, KeyError, KeyView, NewKey};

const PREFIX: &str = "berth_";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Read,
    Write,
    Exec,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Exec => "exec",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "read" => Ok(Self::Read),
            "write" => Ok(Self::Write),
            "exec" => Ok(Self::Exec),
            "admin" => Ok(Self::Admin),
            other => Err(format!("unknown scope {other:?}")),
        }
    }
}

/// An authenticated caller of the public API: its key, what the key may do, and the
/// team (and user) it is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub key_id: String,
    pub scopes: Vec<Scope>,
    /// `None`: a cluster key, not bound to a team.
    pub team: Option<String>,
    /// The user of its team the key acts as, if bound to one.
    pub user: Option<String>,
}

/// What a key is, by its team and the admin scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The admin scope and no team: everything.
    ClusterAdmin,
    /// No team, without the admin scope: its scopes over every team's sandboxes.
    Cluster,
    /// The admin scope within a team: that team's keys, users and sandboxes.
    TeamAdmin,
    /// A team's key without the admin scope.
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterAdmin => "cluster-admin",
            Self::Cluster => "cluster",
            Self::TeamAdmin => "team-admin",
            Self::Member => "member",
        }
    }

    pub fn of(scopes: &[Scope], team: Option<&str>) -> Self {
        match (scopes.contains(&Scope::Admin), team.is_some()) {
            (true, false) => Self::ClusterAdmin,
            (false, false) => Self::Cluster,
            (true, true) => Self::TeamAdmin,
            (false, true) => Self::Member,
        }
    }
}

impl Caller {
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&Scope::Admin) || self.scopes.contains(&scope)
    }

    pub fn role(&self) -> Role {
        Role::of(&self.scopes, self.team.as_deref())
    }

    /// Whether the caller may administer team `team`: a cluster admin may any, a team
    /// admin its own.
    pub fn administers(&self, team: &str) -> bool {
        match self.role() {
            Role::ClusterAdmin => true,
            Role::TeamAdmin => self.team.as_deref() == Some(team),
            Role::Cluster | Role::Member => false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("an API key is required (X-API-Key or Authorization: Bearer)")]
    Missing,
    #[error("invalid API key")]
    Invalid,
    #[error("API key {key_id} expired at {}", crate::sandboxes::rfc3339(*.at))]
    Expired { key_id: String, at: i64 },
    #[error("API key {key_id} was revoked at {}", crate::sandboxes::rfc3339(*.at))]
    Revoked { key_id: String, at: i64 },
    #[error("this API key lacks the {0} scope")]
    Forbidden(Scope),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AuthError {
    /// The key a refusal is about, when the key exists and its secret matched (an
    /// expired or revoked key): the audit record of the refused call names it.
    pub fn key_id(&self) -> Option<&str> {
        match self {
            Self::Expired { key_id, .. } | Self::Revoked { key_id, .. } => Some(key_id),
            _ => None,
        }
    }
}

/// Creates a key with `scopes` that never expires and returns it in full; only its
/// hash is kept.
pub async fn create_api_key(
    store: &Store,
    name: &str,
    scopes: &[Scope],
) -> Result<String, StoreError> {
    let (key, row) = new_api_key(name, scopes, None, KeyOwner::default());
    store.insert_api_key(&row).await?;
    Ok(key)
}

/// Makes the cluster's first admin key, unless the store has keys already or another
/// control plane (a replica starting at the same time) made it; returns it in full
/// when this call made it.
pub async fn create_first_admin_key(store: &Store) -> Result<Option<String>, StoreError> {
    let (key, row) = new_api_key("admin", &[Scope::Admin], None, KeyOwner::default());
    Ok(store.insert_first_admin_key(&row).await?.then_some(key))
}

/// The team and user a key is bound to (neither: a cluster key).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyOwner {
    pub team: Option<String>,
    pub user: Option<String>,
}

/// A fresh key in full and the row that stores its hash.
fn new_api_key(
    name: &str,
    scopes: &[Scope],
    expires_at: Option<i64>,
    owner: KeyOwner,
) -> (String, ApiKeyRow) {
    let mut id = [0u8; 6];
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut id);
    rand::rng().fill_bytes(&mut secret);
    let id = hex::encode(id);
    let secret = hex::encode(secret);
    let scopes = scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let row = ApiKeyRow {
        id: id.clone(),
        name: name.to_owned(),
        secret_hash: hash_secret(&secret),
        scopes,
        created_at: now_secs(),
        expires_at,
        last_used_at: None,
        revoked_at: None,
        team_id: owner.team,
        user_id: owner.user,
    };
    (format!("{PREFIX}{id}_{secret}"), row)
}

/// Checks a presented key and returns who it belongs to.
pub async fn authenticate(store: &Store, presented: &str) -> Result<Caller, AuthError> {
    let (id, secret) = split_presented(presented).ok_or(AuthError::Invalid)?;
    let row = store.find_api_key(id).await?.ok_or(AuthError::Invalid)?;
    verify(&row, secret, now_secs())
}

/// A presented key as (key id, secret); `None` when it is not shaped like one of ours.
fn split_presented(presented: &str) -> Option<(&str, &str)> {
    presented
        .trim()
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.split_once('_'))
}

/// Checks `secret` against the stored key `row` (in constant time), then that the key
/// is neither revoked nor expired at `now`. Only a caller holding the secret learns
/// which: a wrong secret is [`AuthError::Invalid`] whatever the key's state.
fn verify(row: &ApiKeyRow, secret: &str, now: i64) -> Result<Caller, AuthError> {
    let matches: bool = hash_secret(secret)
        .as_bytes()
        .ct_eq(row.secret_hash.as_bytes())
        .into();
    if !matches {
        return Err(AuthError::Invalid);
    }
    if let Some(at) = row.revoked_at {
        return Err(AuthError::Revoked {
            key_id: row.id.clone(),
            at,
        });
    }
    if let Some(at) = row.expires_at.filter(|at| *at <= now) {
        return Err(AuthError::Expired {
            key_id: row.id.clone(),
            at,
        });
    }
    Ok(Caller {
        key_id: row.id.clone(),
        scopes: scopes_of(&row.scopes),
        team: row.team_id.clone(),
        user: row.user_id.clone(),
    })
}

/// The scopes of a stored `scopes` column (unknown names are ignored).
fn scopes_of(column: &str) -> Vec<Scope> {
    column.split(',').filter_map(|s| s.parse().ok()).collect()
}

fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::temp_store;

    #[tokio::test]
    async fn a_created_key_authenticates_with_its_scopes() {
        let (_dir, store) = temp_store().await;
        let key = create_api_key(&store, "ci", &[Scope::Read, Scope::Exec])
            .await
            .unwrap();
        let caller = authenticate(&store, &key).await.unwrap();
        assert!(caller.allows(Scope::Read));
        assert!(caller.allows(Scope::Exec));
        assert!(!caller.allows(Scope::Admin));
        assert!(!caller.allows(Scope::Write));
    }

    #[tokio::test]
    async fn admin_allows_everything() {
        let caller = Caller {
            key_id: "k".into(),
            scopes: vec![Scope::Admin],
            team: None,
            user: None,
        };
        for scope in [Scope::Read, Scope::Write, Scope::Exec, Scope::Admin] {
            assert!(caller.allows(scope));
        }
    }

    #[tokio::test]
    async fn wrong_secrets_and_garbage_are_invalid() {
        let (_dir, store) = temp_store().await;
        let key = create_api_key(&store, "ci", &[Scope::Admin]).await.unwrap();
        let (head, _) = key.rsplit_once('_').unwrap();
        let wrong = format!("{head}_{}", "0".repeat(64));
        for presented in [wrong.as_str(), "", "berth_", "nonsense", "berth_abc_def"] {
            assert!(
                matches!(
                    authenticate(&store, presented).await,
                    Err(AuthError::Invalid)
                ),
                "{presented:?}"
            );
        }
    }

    fn stored(secret: &str, expires_at: Option<i64>, revoked_at: Option<i64>) -> ApiKeyRow {
        ApiKeyRow {
            id: "k1".into(),
            name: "ci".into(),
            secret_hash: hash_secret(secret),
            scopes: "read,exec".into(),
            created_at: 0,
            expires_at,
            last_used_at: None,
            revoked_at,
            team_id: None,
            user_id: None,
        }
    }

    #[test]
    fn expired_and_revoked_keys_are_refused_by_name() {
        let err = verify(&stored("s", Some(100), None), "s", 100).unwrap_err();
        assert!(matches!(err, AuthError::Expired { ref key_id, at: 100 } if key_id == "k1"));
        assert_eq!(
            err.to_string(),
            "API key k1 expired at 1970-01-01T00:01:40Z"
        );
        assert_eq!(err.key_id(), Some("k1"));
        assert!(verify(&stored("s", Some(101), None), "s", 100).is_ok());
        let err = verify(&stored("s", None, Some(5)), "s", 100).unwrap_err();
        assert!(err.to_string().contains("k1 was revoked"), "{err}");
        assert_eq!(err.key_id(), Some("k1"));
    }

    #[test]
    fn a_wrong_secret_does_not_learn_the_state_of_the_key() {
        for row in [
            stored("s", Some(1), None),
            stored("s", None, Some(1)),
            stored("s", None, None),
        ] {
            let err = verify(&row, "wrong", 100).unwrap_err();
            assert!(matches!(err, AuthError::Invalid));
            assert_eq!(err.key_id(), None);
        }
    }

    #[test]
    fn roles_follow_the_team_and_the_admin_scope() {
        let caller = |scopes: Vec<Scope>, team: Option<&str>| Caller {
            key_id: "k".into(),
            scopes,
            team: team.map(str::to_owned),
            user: None,
        };
        let cluster_admin = caller(vec![Scope::Admin], None);
        assert_eq!(cluster_admin.role(), Role::ClusterAdmin);
        assert!(cluster_admin.administers("a"));
        let team_admin = caller(vec![Scope::Admin], Some("a"));
        assert_eq!(team_admin.role(), Role::TeamAdmin);
        assert!(team_admin.administers("a"));
        assert!(!team_admin.administers("b"));
        let member = caller(vec![Scope::Read, Scope::Exec], Some("a"));
        assert_eq!(member.role(), Role::Member);
        assert!(!member.administers("a"));
        assert_eq!(caller(vec![Scope::Read], None).role(), Role::Cluster);
        assert_eq!(Role::TeamAdmin.as_str(), "team-admin");
    }

    #[tokio::test]
    async fn only_the_hash_is_stored() {
        let (_dir, store) = temp_store().await;
        let key = create_api_key(&store, "ci", &[Scope::Admin]).await.unwrap();
        let (_, secret) = key.rsplit_once('_').unwrap();
        let id = key.strip_prefix(PREFIX).unwrap().split('_').next().unwrap();
        let row = store.find_api_key(id).await.unwrap().unwrap();
        assert_ne!(row.secret_hash, secret);
        assert!(!row.secret_hash.contains(secret));
    }
}
