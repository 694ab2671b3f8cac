//! Lease fencing on the worker: the highest lease generation seen per sandbox. A
//! mutating call with an older generation comes from a stale or partitioned control
//! plane and is refused, so no sandbox is acted on twice.
//!
//! Fences opened on a file are kept there (replaced atomically, mode 0600) whenever one
//! rises or is forgotten, so a sandbox that outlives a worker restart (a container
//! adopted after the restart) keeps its fence.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

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
    highest: Mutex<HashMap<String, u64>>,
    /// Where the fences are kept; `None`: in memory only.
    file: Option<PathBuf>,
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
            highest: Mutex::new(highest),
            file: Some(file.to_owned()),
        })
    }

    /// Admits a call carrying `generation`, raising the sandbox's fence to it.
    pub fn admit(&self, sandbox_id: &str, generation: u64) -> Result<(), FenceError> {
        if generation == 0 {
            return Err(FenceError::Missing);
        }
        let mut highest = self.lock();
        let seen = highest.get(sandbox_id).copied();
        match seen {
            Some(seen) if generation < seen => Err(FenceError::Stale {
                sandbox_id: sandbox_id.to_owned(),
                presented: generation,
                seen,
            }),
            Some(seen) if generation == seen => Ok(()),
            _ => {
                highest.insert(sandbox_id.to_owned(), generation);
                self.persist(&highest);
                Ok(())
            }
        }
    }

    /// The generation in force for a sandbox, if any call reached it.
    pub fn current(&self, sandbox_id: &str) -> Option<u64> {
        self.lock().get(sandbox_id).copied()
    }

    /// Drops the fence of a sandbox that is gone, so the file does not grow forever.
    pub fn forget(&self, sandbox_id: &str) {
        let mut highest = self.lock();
        if highest.remove(sandbox_id).is_some() {
            self.persist(&highest);
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, u64>> {
        self.highest.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the fences under the lock, so writes land in the order of the changes. A
    /// failed write is logged: the fence still holds in memory for this process.
    fn persist(&self, highest: &HashMap<String, u64>) {
        let Some(file) = &self.file else { return };
        let sorted: BTreeMap<&String, &u64> = highest.iter().collect();
        let bytes = serde_json::to_vec(&sorted).unwrap_or_default();
        if let Err(err) = write_atomic(file, &bytes, 0o600) {
            tracing::error!(error = %err, "cannot persist lease fences");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn older_generations_are_refused_and_newer_ones_raise_the_fence() {
        let fences = Fences::default();
        fences.admit("a", 2).unwrap();
        fences.admit("a", 2).unwrap();
        assert!(matches!(
            fences.admit("a", 1),
            Err(FenceError::Stale {
                seen: 2,
                presented: 1,
                ..
            })
        ));
        fences.admit("a", 5).unwrap();
        assert_eq!(fences.current("a"), Some(5));
        assert!(matches!(
            fences.admit("a", 4),
            Err(FenceError::Stale { .. })
        ));
        fences.admit("b", 1).unwrap();
        assert_eq!(fences.admit("c", 0), Err(FenceError::Missing));
    }

    #[test]
    fn fences_survive_a_reopen_and_the_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fences.json");
        let fences = Fences::open(&file).unwrap();
        assert_eq!(fences.current("a"), None);
        fences.admit("a", 3).unwrap();
        fences.admit("b", 1).unwrap();
        fences.forget("b");
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let reopened = Fences::open(&file).unwrap();
        assert_eq!(reopened.current("a"), Some(3));
        assert_eq!(reopened.current("b"), None);
        assert!(matches!(
            reopened.admit("a", 2),
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
}
