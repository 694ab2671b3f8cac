//! What an operator does with keys (admin scope at both edges): create one (the full
//! key is answered once and never again), list them, look at one, revoke one.
//! Revoking drops the key from this control plane's cache at once; other replicas
//! see it when their cached row lapses (`cache.rs`).
//!
//! A cluster admin manages every key; a team admin only its own team's, and cannot
//! mint a key without a team (a cluster key) or for another team. Another team's key
//! answers as an unknown one, so a team admin learns nothing of other teams.

use std::time::Duration;

use super::{ApiKeyCache, Caller, KeyOwner, Role, Scope, new_api_key, scopes_of};
use crate::clock::now_secs;
use crate::store::{ApiKeyInfo, KeyRevocation, Store, StoreError};

/// The longest name a key may have.
const MAX_NAME_LEN: usize = 128;
/// Every scope, in the order messages list them.
const KNOWN_SCOPES: [Scope; 4] = [Scope::Read, Scope::Write, Scope::Exec, Scope::Admin];

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("unknown scope {0:?}; the known scopes are read, write, exec and admin")]
    UnknownScope(String),
    #[error("a key needs at least one scope (read, write, exec, admin)")]
    NoScopes,
    #[error("invalid expiry {text:?}: {why} (e.g. \"30d\", \"720h\", \"90m\")")]
    BadExpiry { text: String, why: String },
    #[error("a key's name is at most {MAX_NAME_LEN} characters, without control characters")]
    BadName,
    #[error("team {0:?} not found")]
    UnknownTeam(String),
    #[error("team {team:?} has no user {user:?} (add it with `berth users add`)")]
    UnknownUser { team: String, user: String },
    #[error("a key bound to a user needs the user's team")]
    UserWithoutTeam,
    #[error("this key administers team {own:?}; it cannot mint keys {asked}")]
    NotYourTeam { own: String, asked: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A key to create, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKey {
    /// Empty: the key is named after its id.
    pub name: String,
    pub scopes: Vec<Scope>,
    pub expires_in: Option<Duration>,
    /// `None`: the creator's team (a cluster admin's: none, a cluster key).
    pub team: Option<String>,
    pub user: Option<String>,
}

impl NewKey {
    /// Checks a request's name, scope names and expiry (`"30d"`, `"720h"`).
    pub fn parse(
        name: Option<&str>,
        scopes: &[impl AsRef<str>],
        expires: Option<&str>,
    ) -> Result<Self, KeyError> {
        let name = name.unwrap_or_default().trim();
        if name.chars().count() > MAX_NAME_LEN || name.chars().any(char::is_control) {
            return Err(KeyError::BadName);
        }
        Ok(Self {
            name: name.to_owned(),
            scopes: parse_scopes(scopes)?,
            expires_in: parse_expiry(expires)?,
            team: None,
            user: None,
        })
    }

    /// The same key, bound to `team` and `user` (each optional).
    pub fn for_owner(mut self, team: Option<&str>, user: Option<&str>) -> Self {
        let given = |v: Option<&str>| {
            v.map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        self.team = given(team);
        self.user = given(user);
        self
    }
}

/// A key as an operator sees it (never its secret or hash); times are unix seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub team: Option<String>,
    pub user: Option<String>,
    pub role: Role,
}

impl From<ApiKeyInfo> for KeyView {
    fn from(info: ApiKeyInfo) -> Self {
        let scopes = scopes_of(&info.scopes);
        Self {
            role: Role::of(&scopes, info.team_id.as_deref()),
            scopes,
            team: info.team_id,
            user: info.user_id,
            id: info.id,
            name: info.name,
            created_at: info.created_at,
            expires_at: info.expires_at,
            last_used_at: info.last_used_at,
            revoked_at: info.revoked_at,
        }
    }
}

/// A key just made: its view and the key in full, which is shown this once.
#[derive(Debug, Clone)]
pub struct CreatedKey {
    pub view: KeyView,
    pub key: String,
}

/// Scope names as scopes, each once, in the order given; none is an error.
pub fn parse_scopes(names: &[impl AsRef<str>]) -> Result<Vec<Scope>, KeyError> {
    let mut scopes = Vec::new();
    for name in names {
        let name = name.as_ref().trim();
        let scope = KNOWN_SCOPES
            .into_iter()
            .find(|scope| scope.as_str() == name)
            .ok_or_else(|| KeyError::UnknownScope(name.to_owned()))?;
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    if scopes.is_empty() {
        return Err(KeyError::NoScopes);
    }
    Ok(scopes)
}

/// An expiry such as `"30d"` or `"720h"` (at least a second); empty or absent is none.
pub fn parse_expiry(text: Option<&str>) -> Result<Option<Duration>, KeyError> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let bad = |why: String| KeyError::BadExpiry {
        text: text.to_owned(),
        why,
    };
    let duration = humantime::parse_duration(text).map_err(|err| bad(err.to_string()))?;
    if duration < Duration::from_secs(1) {
        return Err(bad("it must be at least 1s".to_owned()));
    }
    Ok(Some(duration))
}

/// The team and user a key `request`ed by `creator` is bound to, checked: the team
/// and user exist, and a team admin stays within its team.
async fn owner_of(store: &Store, creator: &Caller, request: &NewKey) -> Result<KeyOwner, KeyError> {
    let team = match (creator.role(), &request.team) {
        (Role::TeamAdmin, None) => creator.team.clone(),
        (Role::TeamAdmin, Some(asked)) if creator.team.as_ref() != Some(asked) => {
            return Err(KeyError::NotYourTeam {
                own: creator.team.clone().unwrap_or_default(),
                asked: format!("for team {asked:?}"),
            });
        }
        (_, team) => team.clone(),
    };
    if let Some(team) = &team
        && store.get_team(team).await?.is_none()
    {
        return Err(KeyError::UnknownTeam(team.clone()));
    }
    match (&team, &request.user) {
        (None, Some(_)) => Err(KeyError::UserWithoutTeam),
        (Some(team), Some(user)) if store.get_user(team, user).await?.is_none() => {
            Err(KeyError::UnknownUser {
                team: team.clone(),
                user: user.clone(),
            })
        }
        _ => Ok(KeyOwner {
            team,
            user: request.user.clone(),
        }),
    }
}

/// Makes a key for `creator` (a cluster admin, or a team admin within its team); the
/// answer holds the key in full, which nothing keeps.
pub async fn create(
    store: &Store,
    creator: &Caller,
    request: NewKey,
) -> Result<CreatedKey, KeyError> {
    let owner = owner_of(store, creator, &request).await?;
    let expires_at = request.expires_in.map(|after| {
        let secs = i64::try_from(after.as_secs()).unwrap_or(i64::MAX);
        now_secs().saturating_add(secs)
    });
    let (key, mut row) = new_api_key(&request.name, &request.scopes, expires_at, owner);
    if row.name.is_empty() {
        row.name = row.id.clone();
    }
    store.insert_api_key(&row).await?;
    Ok(CreatedKey {
        view: ApiKeyInfo::from(row).into(),
        key,
    })
}

/// Whether `viewer` may see (and revoke) key `info`: a cluster admin every key, a
/// team admin its team's.
fn visible_to(viewer: &Caller, info: &ApiKeyInfo) -> bool {
    match viewer.role() {
        Role::ClusterAdmin => true,
        Role::TeamAdmin => info.team_id.is_some() && info.team_id == viewer.team,
        Role::Cluster | Role::Member => false,
    }
}

/// Every key `viewer` may see, revoked and expired ones included, oldest first.
pub async fn list(store: &Store, viewer: &Caller) -> Result<Vec<KeyView>, KeyError> {
    let keys = store.list_api_keys().await?;
    Ok(keys
        .into_iter()
        .filter(|info| visible_to(viewer, info))
        .map(KeyView::from)
        .collect())
}

/// Key `id`, if `viewer` may see it (another team's key is an unknown one).
async fn visible(store: &Store, viewer: &Caller, id: &str) -> Result<ApiKeyInfo, KeyError> {
    store
        .api_key_info(id)
        .await?
        .filter(|info| visible_to(viewer, info))
        .ok_or_else(|| KeyError::Store(StoreError::UnknownApiKey(id.to_owned())))
}

pub async fn get(store: &Store, viewer: &Caller, id: &str) -> Result<KeyView, KeyError> {
    Ok(visible(store, viewer, id).await?.into())
}

/// Revokes key `id` (a revoked key answers the same, unchanged) and drops it from
/// this control plane's cache, so it is refused here from the next request.
pub async fn revoke(
    store: &Store,
    cache: &ApiKeyCache,
    viewer: &Caller,
    id: &str,
) -> Result<KeyView, KeyError> {
    visible(store, viewer, id).await?;
    let revocation = store.revoke_api_key(id, now_secs()).await;
    cache.invalidate(id);
    match revocation? {
        KeyRevocation::Revoked(info) => {
            tracing::info!(key_id = %id, "API key revoked");
            Ok(info.into())
        }
        KeyRevocation::AlreadyRevoked(info) => Ok(info.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_keys::{AuthError, Scope};
    use crate::store::testing::temp_store;

    fn cluster_admin() -> Caller {
        Caller {
            key_id: "root".into(),
            scopes: vec![Scope::Admin],
            team: None,
            user: None,
        }
    }

    #[test]
    fn scopes_are_checked_and_named() {
        assert_eq!(
            parse_scopes(&["read", " exec", "read"]).unwrap(),
            vec![Scope::Read, Scope::Exec]
        );
        let err = parse_scopes(&["read", "root"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown scope \"root\"; the known scopes are read, write, exec and admin"
        );
        assert!(matches!(
            parse_scopes(&[] as &[&str]),
            Err(KeyError::NoScopes)
        ));
        assert!(matches!(
            parse_scopes(&[""]),
            Err(KeyError::UnknownScope(_))
        ));
    }

    #[test]
    fn expiries_are_durations_of_at_least_a_second() {
        assert_eq!(
            parse_expiry(Some("30d")).unwrap(),
            Some(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(
            parse_expiry(Some("720h")).unwrap(),
            Some(Duration::from_secs(720 * 3_600))
        );
        assert_eq!(parse_expiry(Some(" ")).unwrap(), None);
        assert_eq!(parse_expiry(None).unwrap(), None);
        for bad in ["tomorrow", "0s", "500ms", "-1d"] {
            let err = parse_expiry(Some(bad)).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn names_are_short_and_printable() {
        let long = "n".repeat(MAX_NAME_LEN + 1);
        assert!(matches!(
            NewKey::parse(Some(&long), &["read"], None),
            Err(KeyError::BadName)
        ));
        assert!(matches!(
            NewKey::parse(Some("a\nb"), &["read"], None),
            Err(KeyError::BadName)
        ));
    }

    #[tokio::test]
    async fn a_created_key_is_listed_without_secrets_and_revoked_once() {
        let (_dir, store) = temp_store().await;
        let cache = ApiKeyCache::default();
        let root = cluster_admin();
        let admin = create(
            &store,
            &root,
            NewKey::parse(None, &["admin"], None).unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(admin.view.name, admin.view.id, "named after its id");
        let created = create(
            &store,
            &root,
            NewKey::parse(Some("ci"), &["read"], Some("1h")).unwrap(),
        )
        .await
        .unwrap();
        assert!(created.key.contains(&created.view.id));
        let expires_at = created.view.expires_at.unwrap();
        assert!(expires_at >= created.view.created_at + 3_600);
        cache.authenticate(&store, &created.key).await.unwrap();

        let listed = list(&store, &root).await.unwrap();
        assert_eq!(listed.len(), 2);
        let first = revoke(&store, &cache, &root, &created.view.id)
            .await
            .unwrap();
        assert!(first.revoked_at.is_some());
        let again = revoke(&store, &cache, &root, &created.view.id)
            .await
            .unwrap();
        assert_eq!(again, first, "revoking twice changes nothing");
        assert!(matches!(
            cache.authenticate(&store, &created.key).await,
            Err(AuthError::Revoked { .. })
        ));
        assert!(matches!(
            revoke(&store, &cache, &root, "nosuch").await,
            Err(KeyError::Store(StoreError::UnknownApiKey(_)))
        ));
        assert!(matches!(
            get(&store, &root, "nosuch").await,
            Err(KeyError::Store(StoreError::UnknownApiKey(_)))
        ));
    }

    #[tokio::test]
    async fn the_last_admin_key_cannot_be_revoked() {
        let (_dir, store) = temp_store().await;
        let cache = ApiKeyCache::default();
        let root = cluster_admin();
        let one = create(
            &store,
            &root,
            NewKey::parse(None, &["admin"], None).unwrap(),
        )
        .await
        .unwrap();
        let two = create(
            &store,
            &root,
            NewKey::parse(None, &["read", "admin"], None).unwrap(),
        )
        .await
        .unwrap();
        revoke(&store, &cache, &root, &one.view.id).await.unwrap();
        let err = revoke(&store, &cache, &root, &two.view.id)
            .await
            .unwrap_err();
        assert!(matches!(err, KeyError::Store(StoreError::LastAdminKey(_))));
        assert!(err.to_string().contains("lock every operator out"), "{err}");
    }

    #[tokio::test]
    async fn a_team_admin_mints_only_its_own_teams_keys() {
        let (_dir, store) = temp_store().await;
        let root = cluster_admin();
        for team in ["a", "b"] {
            store
                .insert_team(&crate::store::TeamRow {
                    id: team.into(),
                    created_at: 0,
                    max_sandboxes: None,
                    max_vcpus: None,
                    max_memory_mb: None,
                    max_ttl_secs: None,
                    pools: "[]".into(),
                })
                .await
                .unwrap();
        }
        let key = |scopes: &[&str], team: Option<&str>, user: Option<&str>| {
            NewKey::parse(None, scopes, None)
                .unwrap()
                .for_owner(team, user)
        };
        let a_admin = create(&store, &root, key(&["admin"], Some("a"), None))
            .await
            .unwrap();
        assert_eq!(a_admin.view.role, Role::TeamAdmin);
        let a_admin = Caller {
            key_id: a_admin.view.id,
            scopes: vec![Scope::Admin],
            team: Some("a".into()),
            user: None,
        };
        // no team named: its own
        let member = create(&store, &a_admin, key(&["read"], None, None))
            .await
            .unwrap();
        assert_eq!(member.view.team.as_deref(), Some("a"));
        assert_eq!(member.view.role, Role::Member);
        let err = create(&store, &a_admin, key(&["admin"], Some("b"), None))
            .await
            .unwrap_err();
        assert!(matches!(err, KeyError::NotYourTeam { .. }), "{err}");
        let err = create(&store, &root, key(&["read"], Some("zz"), None))
            .await
            .unwrap_err();
        assert!(matches!(err, KeyError::UnknownTeam(_)), "{err}");
        let err = create(&store, &root, key(&["read"], Some("a"), Some("nobody")))
            .await
            .unwrap_err();
        assert!(matches!(err, KeyError::UnknownUser { .. }), "{err}");
        let err = create(&store, &root, key(&["read"], None, Some("alice")))
            .await
            .unwrap_err();
        assert!(matches!(err, KeyError::UserWithoutTeam), "{err}");

        let b_key = create(&store, &root, key(&["read"], Some("b"), None))
            .await
            .unwrap();
        let seen: Vec<String> = list(&store, &a_admin)
            .await
            .unwrap()
            .into_iter()
            .map(|k| k.id)
            .collect();
        assert!(seen.contains(&member.view.id));
        assert!(!seen.contains(&b_key.view.id));
        let cache = ApiKeyCache::default();
        let err = revoke(&store, &cache, &a_admin, &b_key.view.id)
            .await
            .unwrap_err();
        assert!(matches!(err, KeyError::Store(StoreError::UnknownApiKey(_))));
        // team admin keys never count as the last admin key
        revoke(&store, &cache, &root, &a_admin.key_id)
            .await
            .unwrap();
    }
}
