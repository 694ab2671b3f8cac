//! What an operator does with keys (admin scope at both edges): create one (the full
//! key is answered once and never again), list them, look at one, revoke one.
//! Revoking drops the key from this control plane's cache at once; other replicas
//! see it when their cached row lapses (`cache.rs`).

use std::time::Duration;

use super::{ApiKeyCache, Scope, new_api_key, scopes_of};
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
        })
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
}

impl From<ApiKeyInfo> for KeyView {
    fn from(info: ApiKeyInfo) -> Self {
        Self {
            scopes: scopes_of(&info.scopes),
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

/// Makes a key; the answer holds the key in full, which nothing keeps.
pub async fn create(store: &Store, request: NewKey) -> Result<CreatedKey, KeyError> {
    let expires_at = request.expires_in.map(|after| {
        let secs = i64::try_from(after.as_secs()).unwrap_or(i64::MAX);
        now_secs().saturating_add(secs)
    });
    let (key, mut row) = new_api_key(&request.name, &request.scopes, expires_at);
    if row.name.is_empty() {
        row.name = row.id.clone();
    }
    store.insert_api_key(&row).await?;
    Ok(CreatedKey {
        view: ApiKeyInfo::from(row).into(),
        key,
    })
}

/// Every key, revoked and expired ones included, oldest first.
pub async fn list(store: &Store) -> Result<Vec<KeyView>, KeyError> {
    let keys = store.list_api_keys().await?;
    Ok(keys.into_iter().map(KeyView::from).collect())
}

pub async fn get(store: &Store, id: &str) -> Result<KeyView, KeyError> {
    let info = store
        .api_key_info(id)
        .await?
        .ok_or_else(|| StoreError::UnknownApiKey(id.to_owned()))?;
    Ok(info.into())
}

/// Revokes key `id` (a revoked key answers the same, unchanged) and drops it from
/// this control plane's cache, so it is refused here from the next request.
pub async fn revoke(store: &Store, cache: &ApiKeyCache, id: &str) -> Result<KeyView, KeyError> {
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
        let admin = create(&store, NewKey::parse(None, &["admin"], None).unwrap())
            .await
            .unwrap();
        assert_eq!(admin.view.name, admin.view.id, "named after its id");
        let created = create(
            &store,
            NewKey::parse(Some("ci"), &["read"], Some("1h")).unwrap(),
        )
        .await
        .unwrap();
        assert!(created.key.contains(&created.view.id));
        let expires_at = created.view.expires_at.unwrap();
        assert!(expires_at >= created.view.created_at + 3_600);
        cache.authenticate(&store, &created.key).await.unwrap();

        let listed = list(&store).await.unwrap();
        assert_eq!(listed.len(), 2);
        let first = revoke(&store, &cache, &created.view.id).await.unwrap();
        assert!(first.revoked_at.is_some());
        let again = revoke(&store, &cache, &created.view.id).await.unwrap();
        assert_eq!(again, first, "revoking twice changes nothing");
        assert!(matches!(
            cache.authenticate(&store, &created.key).await,
            Err(AuthError::Revoked { .. })
        ));
        assert!(matches!(
            revoke(&store, &cache, "nosuch").await,
            Err(KeyError::Store(StoreError::UnknownApiKey(_)))
        ));
        assert!(matches!(
            get(&store, "nosuch").await,
            Err(KeyError::Store(StoreError::UnknownApiKey(_)))
        ));
    }

    #[tokio::test]
    async fn the_last_admin_key_cannot_be_revoked() {
        let (_dir, store) = temp_store().await;
        let cache = ApiKeyCache::default();
        let one = create(&store, NewKey::parse(None, &["admin"], None).unwrap())
            .await
            .unwrap();
        let two = create(
            &store,
            NewKey::parse(None, &["read", "admin"], None).unwrap(),
        )
        .await
        .unwrap();
        revoke(&store, &cache, &one.view.id).await.unwrap();
        let err = revoke(&store, &cache, &two.view.id).await.unwrap_err();
        assert!(matches!(err, KeyError::Store(StoreError::LastAdminKey(_))));
        assert!(err.to_string().contains("lock every operator out"), "{err}");
    }
}
