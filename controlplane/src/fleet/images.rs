//! `berth images push`: a `docker save` archive, streamed by the client through the
//! control plane and the mesh to every docker worker at once (or to the ones named),
//! each loading it into its engine as it arrives. Nothing is spooled: the archive is
//! read once, in chunks, and each chunk goes to every worker still loading, so the
//! slowest sets the pace and memory stays at a few chunks a worker. A worker whose
//! load fails drops out; an archive cut off or over the size bound reaches no worker
//! whole, and none loads anything from it.

use std::collections::HashSet;

use futures::{Stream, StreamExt};
use serde::Serialize;
use tokio::sync::mpsc;

use super::{Fleet, FleetError, ProviderStatus};
use crate::clock::now_ms;
use crate::store::{ReportedState, WorkerState};

/// The chunks the archive is cut into on the mesh (under gRPC's 4 MiB message limit).
const CHUNK: usize = 1 << 20;
/// Chunks queued for one worker before the archive's reader waits for it.
const QUEUED_CHUNKS: usize = 4;
/// The largest archive a push takes.
pub const MAX_ARCHIVE_BYTES: u64 = 64 << 30;

/// One worker's progress (a line of the push's NDJSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PushEvent {
    pub worker_id: String,
    /// `loading`, then `loaded` or `failed`.
    #[schema(example = "loaded")]
    pub status: String,
    /// The images loaded (`name:tag`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(required = false)]
    pub images: Vec<String>,
    /// The archive's size as the worker received it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    pub bytes: Option<u64>,
    #[serde(skip_serializing_if = "String::is_empty")]
    #[schema(required = false)]
    pub error: String,
}

impl Fleet {
    /// Pushes `archive` to the docker workers (those of `only`, when given); the
    /// events of each as they come. An unknown worker in `only` is not found; one
    /// that is not ready or runs no docker provider is a bad request, named.
    pub async fn push_images<S>(
        &self,
        archive: S,
        only: &[String],
    ) -> Result<impl Stream<Item = PushEvent> + Send + use<S>, FleetError>
    where
        S: Stream<Item = Result<bytes::Bytes, String>> + Send + 'static,
    {
        let targets = self.push_targets(only).await?;
        let (events, received) = mpsc::channel(targets.len() * 2);
        let mut feeds = Vec::new();
        for (worker_id, address) in targets {
            let (feed, chunks) = mpsc::channel::<Result<Vec<u8>, String>>(QUEUED_CHUNKS);
            feeds.push(feed);
            let (workers, events) = (self.workers.clone(), events.clone());
            tokio::spawn(async move {
                let event = |status: &str| PushEvent {
                    worker_id: worker_id.clone(),
                    status: status.to_owned(),
                    images: Vec::new(),
                    bytes: None,
                    error: String::new(),
                };
                let _ = events.send(event("loading")).await;
                let data = futures::stream::unfold(chunks, |mut chunks| async move {
                    chunks.recv().await.map(|chunk| (chunk, chunks))
                });
                let loaded = match workers.client(&worker_id, &address) {
                    Ok(client) => client.load_images(data).await.map_err(|e| e.to_string()),
                    Err(err) => Err(err.to_string()),
                };
                let done = match loaded {
                    Ok(loaded) => PushEvent {
                        images: loaded.images,
                        bytes: Some(loaded.bytes),
                        ..event("loaded")
                    },
                    Err(error) => PushEvent {
                        error,
                        ..event("failed")
                    },
                };
                tracing::info!(worker_id = %done.worker_id, status = %done.status, images = ?done.images, error = %done.error, "image push");
                let _ = events.send(done).await;
            });
        }
        tokio::spawn(feed_archive(archive, feeds));
        Ok(futures::stream::unfold(
            received,
            |mut received| async move { received.recv().await.map(|event| (event, received)) },
        ))
    }

    /// The workers a push goes to (id and address): ready, heartbeating, with a
    /// healthy docker provider; those of `only` when given, each of which must be.
    pub async fn push_targets(&self, only: &[String]) -> Result<Vec<(String, String)>, FleetError> {
        let fresh_since =
            now_ms() - i64::try_from(self.settings.heartbeat_grace.as_millis()).unwrap_or(0);
        let workers = self.store.list_workers().await?;
        let known: HashSet<&str> = workers.iter().map(|w| w.id.as_str()).collect();
        if let Some(unknown) = only.iter().find(|id| !known.contains(id.as_str())) {
            return Err(FleetError::WorkerNotFound(unknown.clone()));
        }
        let mut targets = Vec::new();
        for worker in workers {
            if !only.is_empty() && !only.contains(&worker.id) {
                continue;
            }
            let providers: Vec<ProviderStatus> =
                serde_json::from_str(&worker.providers).unwrap_or_default();
            let why_not = if worker.state != WorkerState::Active {
                Some("is revoked")
            } else if worker.reported_state != ReportedState::Ready {
                Some("is not ready (draining or drained)")
            } else if worker.last_heartbeat_ms.is_none_or(|at| at < fresh_since) {
                Some("has not heartbeated recently")
            } else if !providers.iter().any(|p| p.name == "docker" && p.healthy) {
                Some("runs no healthy docker provider")
            } else {
                None
            };
            match why_not {
                None => targets.push((worker.id, worker.advertise_addr)),
                Some(why) if !only.is_empty() => {
                    return Err(FleetError::BadRequest(format!(
                        "worker {:?} {why}; images are pushed to ready docker workers",
                        worker.id
                    )));
                }
                Some(_) => {}
            }
        }
        if targets.is_empty() {
            return Err(FleetError::BadRequest(
                "no ready docker worker to push to".into(),
            ));
        }
        Ok(targets)
    }
}

/// Reads `archive` once and hands each chunk to every worker still loading; a read
/// that fails, or an archive over [`MAX_ARCHIVE_BYTES`], is passed on as an error, so
/// no worker sees the end of the archive and none loads a part of it.
async fn feed_archive<S>(archive: S, mut feeds: Vec<mpsc::Sender<Result<Vec<u8>, String>>>)
where
    S: Stream<Item = Result<bytes::Bytes, String>> + Send + 'static,
{
    let mut archive = Box::pin(archive);
    let mut total: u64 = 0;
    while let Some(chunk) = archive.next().await {
        let failure = match chunk {
            Ok(bytes) => {
                total = total.saturating_add(bytes.len() as u64);
                if total > MAX_ARCHIVE_BYTES {
                    Some(format!(
                        "the archive is larger than {} GiB",
                        MAX_ARCHIVE_BYTES >> 30
                    ))
                } else {
                    for piece in bytes.chunks(CHUNK) {
                        let mut alive = Vec::with_capacity(feeds.len());
                        for feed in feeds.drain(..) {
                            // a worker whose load failed has dropped its receiver
                            if feed.send(Ok(piece.to_vec())).await.is_ok() {
                                alive.push(feed);
                            }
                        }
                        feeds = alive;
                    }
                    if feeds.is_empty() {
                        return;
                    }
                    None
                }
            }
            Err(err) => Some(format!("the archive's upload broke off: {err}")),
        };
        if let Some(failure) = failure {
            for feed in &feeds {
                let _ = feed.send(Err(failure.clone())).await;
            }
            return;
        }
    }
    // dropping the feeds ends each worker's stream, whole
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn fed(archive: Vec<Result<bytes::Bytes, String>>) -> Vec<Result<Vec<u8>, String>> {
        let (feed, mut chunks) = mpsc::channel(64);
        feed_archive(futures::stream::iter(archive), vec![feed]).await;
        let mut got = Vec::new();
        while let Some(chunk) = chunks.recv().await {
            got.push(chunk);
        }
        got
    }

    #[tokio::test]
    async fn an_archive_is_cut_into_mesh_chunks_and_a_broken_one_ends_in_an_error() {
        let big = bytes::Bytes::from(vec![7u8; CHUNK + 10]);
        let got = fed(vec![Ok(big)]).await;
        let sizes: Vec<usize> = got.iter().map(|c| c.as_ref().unwrap().len()).collect();
        assert_eq!(sizes, [CHUNK, 10]);

        let got = fed(vec![
            Ok(bytes::Bytes::from_static(b"abc")),
            Err("reset".into()),
        ])
        .await;
        assert_eq!(got.len(), 2);
        assert!(got[1].as_ref().unwrap_err().contains("broke off: reset"));
    }

    #[tokio::test]
    async fn a_worker_that_stopped_reading_drops_out_and_the_rest_get_everything() {
        let (gone, dropped) = mpsc::channel(1);
        drop(dropped);
        let (feed, mut chunks) = mpsc::channel(64);
        let archive = futures::stream::iter(vec![
            Ok(bytes::Bytes::from_static(b"one")),
            Ok(bytes::Bytes::from_static(b"two")),
        ]);
        feed_archive(archive, vec![gone, feed]).await;
        let mut got = Vec::new();
        while let Some(chunk) = chunks.recv().await {
            got.push(chunk.unwrap());
        }
        assert_eq!(got, [b"one".to_vec(), b"two".to_vec()]);
    }
}
