//! A short-lived cache of API key rows, so a client calling in a loop does not cost a
//! store lookup per request. It caches rows, not verdicts: the presented secret is
//! checked against the cached hash on every request. Only keys that exist are cached
//! (an unknown id always asks the store, so a new key works at once); an entry lives
//! `ttl`, so a change made elsewhere (another replica, the database itself) is seen
//! within it, and [`ApiKeyCache::invalidate`] drops one at once for a change made here.
//! Expiry is checked on every request against the clock, cached row or not. A key
//! that authenticates has its use recorded (`last_used.rs`: at most once a minute).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::last_used::LastUsed;
use super::{AuthError, Caller, split_presented, verify};
use crate::clock::now_secs;
use crate::store::{ApiKeyRow, Store};

/// How long a key row is trusted without asking the store again.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5);
/// Beyond this many keys the cache starts over rather than grow.
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Clone)]
pub struct ApiKeyCache {
    ttl: Duration,
    entries: Arc<Mutex<HashMap<String, (Instant, ApiKeyRow)>>>,
    last_used: LastUsed,
}

impl Default for ApiKeyCache {
    fn default() -> Self {
        Self::new(DEFAULT_TTL)
    }
}

impl ApiKeyCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Arc::default(),
            last_used: LastUsed::default(),
        }
    }

    /// [`super::authenticate`], reading the key's row from the cache when it is fresh.
    pub async fn authenticate(&self, store: &Store, presented: &str) -> Result<Caller, AuthError> {
        let (id, secret) = split_presented(presented).ok_or(AuthError::Invalid)?;
        let row = match self.fresh(id) {
            Some(row) => row,
            None => {
                let row = store.find_api_key(id).await?.ok_or(AuthError::Invalid)?;
                self.keep(row.clone());
                row
            }
        };
        let caller = verify(&row, secret, now_secs())?;
        self.last_used.record(store, &caller.key_id).await;
        Ok(caller)
    }

    /// Forgets key `key_id` (call it when the key is revoked or changed).
    pub fn invalidate(&self, key_id: &str) {
        self.lock().remove(key_id);
    }

    /// Drops every cached key of team `team` (of its user `user` only, when given):
    /// what deleting a team or removing a user revoked is refused here at once.
    pub fn invalidate_team(&self, team: &str, user: Option<&str>) {
        self.lock().retain(|_, (_, row)| {
            let of_team = row.team_id.as_deref() == Some(team);
            let of_user = user.is_none_or(|user| row.user_id.as_deref() == Some(user));
            !(of_team && of_user)
        });
    }

    fn fresh(&self, id: &str) -> Option<ApiKeyRow> {
        let entries = self.lock();
        let (fetched, row) = entries.get(id)?;
        (fetched.elapsed() < self.ttl).then(|| row.clone())
    }

    fn keep(&self, row: ApiKeyRow) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(row.id.clone(), (Instant::now(), row));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, ApiKeyRow)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_keys::{Scope, create_api_key};
    use crate::store::testing::{raw_pool, temp_store};

    fn key_id(key: &str) -> &str {
        split_presented(key).unwrap().0
    }

    async fn revoke_in_the_database(store: &Store, id: &str) {
        sqlx::query("UPDATE api_keys SET revoked_at = 1 WHERE id = $1")
            .bind(id)
            .execute(&raw_pool(store).await)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_cached_key_still_checks_the_secret() {
        let (_dir, store) = temp_store().await;
        let cache = ApiKeyCache::new(Duration::from_secs(3600));
        let key = create_api_key(&store, "ci", &[Scope::Exec]).await.unwrap();
        let caller = cache.authenticate(&store, &key).await.unwrap();
        assert!(caller.allows(Scope::Exec));
        assert!(!caller.allows(Scope::Admin));
        let (head, _) = key.rsplit_once('_').unwrap();
        let wrong = format!("{head}_{}", "0".repeat(64));
        assert!(matches!(
            cache.authenticate(&store, &wrong).await,
            Err(AuthError::Invalid)
        ));
        assert!(matches!(
            cache.authenticate(&store, "berth_nosuchkey_abc").await,
            Err(AuthError::Invalid)
        ));
    }

    #[tokio::test]
    async fn a_cached_row_is_used_until_invalidated() {
        let (_dir, store) = temp_store().await;
        let cache = ApiKeyCache::new(Duration::from_secs(3600));
        let key = create_api_key(&store, "ci", &[Scope::Admin]).await.unwrap();
        cache.authenticate(&store, &key).await.unwrap();
        revoke_in_the_database(&store, key_id(&key)).await;
        // within the ttl the cached row answers; the store is not asked
        assert!(cache.authenticate(&store, &key).await.is_ok());
        cache.invalidate(key_id(&key));
        assert!(matches!(
            cache.authenticate(&store, &key).await,
            Err(AuthError::Revoked { .. })
        ));
    }

    #[tokio::test]
    async fn without_a_ttl_every_request_asks_the_store() {
        let (_dir, store) = temp_store().await;
        let cache = ApiKeyCache::new(Duration::ZERO);
        let key = create_api_key(&store, "ci", &[Scope::Read]).await.unwrap();
        assert!(cache.authenticate(&store, &key).await.is_ok());
        revoke_in_the_database(&store, key_id(&key)).await;
        assert!(matches!(
            cache.authenticate(&store, &key).await,
            Err(AuthError::Revoked { .. })
        ));
    }

    #[tokio::test]
    async fn a_use_is_recorded() {
        let (_dir, store) = temp_store().await;
        let cache = ApiKeyCache::new(Duration::from_secs(3600));
        let key = create_api_key(&store, "ci", &[Scope::Read]).await.unwrap();
        let id = key_id(&key);
        assert_eq!(
            store.find_api_key(id).await.unwrap().unwrap().last_used_at,
            None
        );
        cache.authenticate(&store, &key).await.unwrap();
        assert!(
            store
                .find_api_key(id)
                .await
                .unwrap()
                .unwrap()
                .last_used_at
                .is_some()
        );
    }
}
