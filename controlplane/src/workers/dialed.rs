//! The connections dial-out workers opened to this control plane, by worker id. The id
//! is always the one in the certificate that opened the connection (the mesh port
//! verified it in the handshake), never anything the worker says, so a worker can only
//! ever be reached for its own id.
//!
//! A worker that renews its certificate opens a new connection; the newer one takes
//! the worker's place here and the older one is only dropped from the map, so calls
//! still on it finish. It closes once they have (or at its certificate's expiry).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

#[derive(Debug, Default)]
pub struct Dialed {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_worker: HashMap<String, Entry>,
    /// Workers that connected before, since this control plane started.
    seen: HashSet<String>,
    next_generation: u64,
}

#[derive(Debug)]
struct Entry {
    generation: u64,
    channel: Channel,
    closer: CancellationToken,
}

/// A connection registered with [`Dialed::insert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registered {
    pub generation: u64,
    /// The worker had connected before (since this control plane started).
    pub reconnect: bool,
}

impl Dialed {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The channel over the newest connection of `worker_id`, if it has one here.
    pub fn channel(&self, worker_id: &str) -> Option<Channel> {
        self.lock()
            .by_worker
            .get(worker_id)
            .map(|entry| entry.channel.clone())
    }

    /// Makes `channel` the way to `worker_id`; `closer` closes its connection.
    pub fn insert(
        &self,
        worker_id: &str,
        channel: Channel,
        closer: CancellationToken,
    ) -> Registered {
        let mut inner = self.lock();
        inner.next_generation += 1;
        let generation = inner.next_generation;
        let reconnect = !inner.seen.insert(worker_id.to_owned());
        inner.by_worker.insert(
            worker_id.to_owned(),
            Entry {
                generation,
                channel,
                closer,
            },
        );
        Registered {
            generation,
            reconnect,
        }
    }

    /// Forgets the connection registered as `generation`, if it is still the worker's
    /// newest (it ended); a newer one stays.
    pub fn remove(&self, worker_id: &str, generation: u64) {
        let mut inner = self.lock();
        if inner
            .by_worker
            .get(worker_id)
            .is_some_and(|entry| entry.generation == generation)
        {
            inner.by_worker.remove(worker_id);
        }
    }

    /// Whether the connection registered as `generation` is still the worker's newest.
    pub fn is_current(&self, worker_id: &str, generation: u64) -> bool {
        self.lock()
            .by_worker
            .get(worker_id)
            .is_some_and(|entry| entry.generation == generation)
    }

    /// Closes and forgets the worker's connection (it was revoked or removed).
    pub fn close(&self, worker_id: &str) {
        if let Some(entry) = self.lock().by_worker.remove(worker_id) {
            entry.closer.cancel();
        }
    }

    /// Whether `worker_id` has a connection here.
    pub fn is_connected(&self, worker_id: &str) -> bool {
        self.lock().by_worker.contains_key(worker_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel() -> Channel {
        tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy()
    }

    #[tokio::test]
    async fn the_newest_connection_wins_and_an_older_one_ending_leaves_it() {
        let dialed = Dialed::default();
        let first = dialed.insert("w1", channel(), CancellationToken::new());
        assert!(!first.reconnect);
        let second = dialed.insert("w1", channel(), CancellationToken::new());
        assert!(second.reconnect);
        assert!(!dialed.is_current("w1", first.generation));
        assert!(dialed.is_current("w1", second.generation));
        dialed.remove("w1", first.generation);
        assert!(dialed.is_connected("w1"));
        dialed.remove("w1", second.generation);
        assert!(!dialed.is_connected("w1"));
        assert!(dialed.channel("w1").is_none());
    }

    #[tokio::test]
    async fn closing_a_worker_closes_its_connection() {
        let dialed = Dialed::default();
        let closer = CancellationToken::new();
        dialed.insert("w1", channel(), closer.clone());
        dialed.insert("w2", channel(), CancellationToken::new());
        dialed.close("w1");
        assert!(closer.is_cancelled());
        assert!(!dialed.is_connected("w1"));
        assert!(dialed.is_connected("w2"));
    }
}
