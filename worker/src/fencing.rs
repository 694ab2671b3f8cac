//! Lease fencing on the worker: the highest lease generation seen per sandbox. A
//! mutating call with an older generation comes from a stale or partitioned control
//! plane and is refused, so no sandbox is acted on twice.
//!
//! Fences opened on a file are kept there (replaced atomically, fsync'd, mode 0600)
//! whenever one rises or is forgotten, so a sandbox that outlives a worker restart (a
//! container adopted after the restart) keeps its fence. A call that raises a fence
//! proceeds only once the file holding the raised fence is durable; the write runs on
//! the blocking pool, not on the async runtime.
//!
//! Two locks: the table (held only in memory, never across a write) and the file. Every
//! change bumps the table's version and snapshots it under the table lock; a writer
//! holding the file lock skips a snapshot older than what the file already holds (a
//! later snapshot, which includes its change, is already durable). So the file only
//! moves forward, in the order of the changes, and readers of the table never wait for
//! a disk.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::WorkerError;
use crate::identity::write_atomic;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FenceError {
    #[error("a lease generation is required")]
    Missing,
    #[error(
        "stale lease generation {presented} for sandbox {sandbox_id:?}: generation {seen} is in force"
    )]
    Stale {
        sandbox_id: String,
        presented: u64,
        seen: u64,
    },
}

#[derive(Debug, Default)]
pub struct Fences {
    table: Mutex<Table>,
    /// Where the fences are kept; `None`: in memory only.
    file: Option<Arc<FenceFile>>,
}

#[derive(Debug, Default)]
struct Table {
    highest: HashMap<String, u64>,
    /// Bumped by every change.
    version: u64,
}

/// The table as it stood after one change, ready to be written.
struct Snapshot {
    version: u64,
    bytes: Vec<u8>,
}

#[derive(Debug)]
struct FenceFile {
    path: PathBuf,
    /// The version of the table the file holds; the lock serializes the writes.
    written: Mutex<u64>,
}

impl Fences {
    /// Fences kept in `file`, starting from what it holds (none when it does not exist).
    pub fn open(file: &Path) -> Result<Self, WorkerError> {
        let highest = match std::fs::read(file) {
            Ok(bytes) => {
                let stored: BTreeMap<String, u64> =
                    serde_json::from_slice(&bytes).map_err(|err| {
                        WorkerError::Config(format!("{} is corrupt: {err}", file.display()))
                    })?;
                stored.into_iter().collect()
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(err) => return Err(WorkerError::io(file, err)),
        };
        Ok(Self {
            table: Mutex::new(Table {
                highest,
                version: 0,
            }),
            file: Some(Arc::new(FenceFile {
                path: file.to_owned(),
                written: Mutex::new(0),
            })),
        })
    }

    /// Admits a call carrying `generation`, raising the sandbox's fence to it; returns
    /// once the raised fence is on disk (when the fences are kept in a file).
    pub async fn admit(&self, sandbox_id: &str, generation: u64) -> Result<(), FenceError> {
        if generation == 0 {
            return Err(FenceError::Missing);
        }
        let snapshot = {
            let mut table = self.lock();
            let seen = table.highest.get(sandbox_id).copied();
            match seen {
                Some(seen) if generation < seen => {
                    return Err(FenceError::Stale {
                        sandbox_id: sandbox_id.to_owned(),
                        presented: generation,
                        seen,
                    });
                }
                Some(seen) if generation == seen => return Ok(()),
                _ => {
                    table.highest.insert(sandbox_id.to_owned(), generation);
                    self.snapshot(&mut table)
                }
            }
        };
        self.persist(snapshot).await;
        Ok(())
    }

    /// The generation in force for a sandbox, if any call reached it.
    pub fn current(&self, sandbox_id: &str) -> Option<u64> {
        self.lock().highest.get(sandbox_id).copied()
    }

    /// Drops the fence of a sandbox that is gone, so the file does not grow forever.
    pub async fn forget(&self, sandbox_id: &str) {
        let snapshot = {
            let mut table = self.lock();
            if table.highest.remove(sandbox_id).is_none() {
                return;
            }
            self.snapshot(&mut table)
        };
        self.persist(snapshot).await;
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a change of the table; what to write for it, when there is a file.
    fn snapshot(&self, table: &mut Table) -> Option<Snapshot> {
        table.version += 1;
        self.file.as_ref()?;
        let sorted: BTreeMap<&String, &u64> = table.highest.iter().collect();
        Some(Snapshot {
            version: table.version,
            bytes: serde_json::to_vec(&sorted).unwrap_or_default(),
        })
    }

    /// Writes a snapshot on the blocking pool and waits for it. A failed write is
    /// logged: the fence still holds in memory for this process.
    async fn persist(&self, snapshot: Option<Snapshot>) {
        let (Some(file), Some(snapshot)) = (self.file.clone(), snapshot) else {
            return;
        };
        match tokio::task::spawn_blocking(move || file.write(snapshot)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::error!(error = %err, "cannot persist lease fences"),
            Err(err) => tracing::error!(error = %err, "the lease fence write did not finish"),
        }
    }
}

impl FenceFile {
    /// Writes `snapshot` unless the file already holds it or a later one.
    fn write(&self, snapshot: Snapshot) -> Result<(), WorkerError> {
        let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        if snapshot.version <= *written {
            return Ok(());
        }
        write_atomic(&self.path, &snapshot.bytes, 0o600)?;
        *written = snapshot.version;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[tokio::test]
    async fn older_generations_are_refused_and_newer_ones_raise_the_fence() {
        let fences = Fences::default();
        fences.admit("a", 2).await.unwrap();
        fences.admit("a", 2).await.unwrap();
        assert!(matches!(
            fences.admit("a", 1).await,
            Err(FenceError::Stale {
                seen: 2,
                presented: 1,
                ..
            })
        ));
        fences.admit("a", 5).await.unwrap();
        assert_eq!(fences.current("a"), Some(5));
        assert!(matches!(
            fences.admit("a", 4).await,
            Err(FenceError::Stale { .. })
        ));
        fences.admit("b", 1).await.unwrap();
        assert_eq!(fences.admit("c", 0).await, Err(FenceError::Missing));
    }

    #[tokio::test]
    async fn fences_survive_a_reopen_and_the_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fences.json");
        let fences = Fences::open(&file).unwrap();
        assert_eq!(fences.current("a"), None);
        fences.admit("a", 3).await.unwrap();
        fences.admit("b", 1).await.unwrap();
        fences.forget("b").await;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let reopened = Fences::open(&file).unwrap();
        assert_eq!(reopened.current("a"), Some(3));
        assert_eq!(reopened.current("b"), None);
        assert!(matches!(
            reopened.admit("a", 2).await,
            Err(FenceError::Stale { seen: 3, .. })
        ));
    }

    #[test]
    fn a_corrupt_fence_file_is_an_error_not_an_empty_fence() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fences.json");
        std::fs::write(&file, "{not json").unwrap();
        assert!(matches!(Fences::open(&file), Err(WorkerError::Config(_))));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_changes_leave_the_file_at_the_latest_table() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fences.json");
        let fences = Arc::new(Fences::open(&file).unwrap());
        let mut calls = tokio::task::JoinSet::new();
        for sandbox in 0..8 {
            for generation in 1..=16 {
                let fences = fences.clone();
                calls.spawn(async move {
                    let sandbox_id = format!("s{sandbox}");
                    let _ = fences.admit(&sandbox_id, generation).await;
                    if sandbox % 2 == 1 && generation == 16 {
                        fences.forget(&sandbox_id).await;
                    }
                });
            }
        }
        calls.join_all().await;

        let reopened = Fences::open(&file).unwrap();
        for sandbox in 0..8 {
            let sandbox_id = format!("s{sandbox}");
            assert_eq!(reopened.current(&sandbox_id), fences.current(&sandbox_id));
        }
        assert_eq!(reopened.current("s0"), Some(16));
    }
}
