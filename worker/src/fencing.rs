//! Lease fencing on the worker: the highest lease generation seen per sandbox. A
//! mutating call with an older generation comes from a stale or partitioned control
//! plane and is refused, so no sandbox is acted on twice.

use std::collections::HashMap;
use std::sync::Mutex;

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
}

impl Fences {
    /// Admits a call carrying `generation`, raising the sandbox's fence to it.
    pub fn admit(&self, sandbox_id: &str, generation: u64) -> Result<(), FenceError> {
        if generation == 0 {
            return Err(FenceError::Missing);
        }
        let mut highest = self.highest.lock().unwrap_or_else(|e| e.into_inner());
        let seen = highest.entry(sandbox_id.to_owned()).or_insert(generation);
        if generation < *seen {
            return Err(FenceError::Stale {
                sandbox_id: sandbox_id.to_owned(),
                presented: generation,
                seen: *seen,
            });
        }
        *seen = generation;
        Ok(())
    }

    /// The generation in force for a sandbox, if any call reached it.
    pub fn current(&self, sandbox_id: &str) -> Option<u64> {
        let highest = self.highest.lock().unwrap_or_else(|e| e.into_inner());
        highest.get(sandbox_id).copied()
    }
}

#[cfg(test)]
mod tests {
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
}
