//! When each key was last used, written to the store at most once per key per
//! [`INTERVAL`], so a client calling in a loop does not cost a write per request.
//! Each control plane remembers when it last wrote a key's use; the store's own
//! conditional `UPDATE` also skips a write another replica made within the interval.
//! A failed write is logged and forgotten: a key's use is never refused for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::clock::now_secs;
use crate::store::Store;

/// How stale a key's `last_used_at` may be.
pub const INTERVAL: Duration = Duration::from_secs(60);
/// Beyond this many keys the memory starts over rather than grow.
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Clone, Default)]
pub struct LastUsed {
    written: Arc<Mutex<HashMap<String, Instant>>>,
}

impl LastUsed {
    /// Records a use of key `id` now, unless this control plane wrote one within
    /// [`INTERVAL`].
    pub async fn record(&self, store: &Store, id: &str) {
        if !self.claim(id) {
            return;
        }
        let interval = i64::try_from(INTERVAL.as_secs()).unwrap_or(60);
        if let Err(err) = store.touch_api_key(id, now_secs(), interval).await {
            tracing::warn!(key_id = %id, error = %err, "cannot record an API key's last use");
        }
    }

    /// Whether a write of key `id`'s use is due; when it is, notes it as written now
    /// (so requests arriving together write once).
    fn claim(&self, id: &str) -> bool {
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        if written.get(id).is_some_and(|at| at.elapsed() < INTERVAL) {
            return false;
        }
        if written.len() >= MAX_ENTRIES {
            written.clear();
        }
        written.insert(id.to_owned(), Instant::now());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_keys::{Scope, create_api_key, split_presented};
    use crate::store::testing::{raw_pool, temp_store};

    #[test]
    fn a_key_is_due_once_per_interval() {
        let last_used = LastUsed::default();
        assert!(last_used.claim("k1"));
        assert!(!last_used.claim("k1"));
        assert!(last_used.claim("k2"), "each key on its own");
    }

    #[tokio::test]
    async fn the_first_use_is_written_and_later_ones_within_the_interval_are_not() {
        let (_dir, store) = temp_store().await;
        let key = create_api_key(&store, "ci", &[Scope::Read]).await.unwrap();
        let id = split_presented(&key).unwrap().0;
        let last_used = LastUsed::default();
        last_used.record(&store, id).await;
        let first = store.find_api_key(id).await.unwrap().unwrap().last_used_at;
        assert!(first.is_some());
        // moved back in the database: a second use within the interval leaves it
        sqlx::query("UPDATE api_keys SET last_used_at = 7 WHERE id = $1")
            .bind(id)
            .execute(&raw_pool(&store).await)
            .await
            .unwrap();
        last_used.record(&store, id).await;
        let second = store.find_api_key(id).await.unwrap().unwrap().last_used_at;
        assert_eq!(second, Some(7), "no write within the interval");
    }
}
