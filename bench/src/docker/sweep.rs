//! Removing what bench runs left on the engine: containers and networks found by the
//! bench's owner label, or by the `berth.worker` label of a bench's own docker worker,
//! whose pid `remove` picks (another run's that is gone, or this run's at its end).

use super::cli::docker;
use super::{OWNER_LABEL, PREFIX};

/// Whether `pid` is a running berth-bench process.
pub(super) fn bench_is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|comm| comm.trim() == "berth-bench")
}

/// The bench pid in an owner label (`<pid>`), or in a `berth.worker` label when
/// `worker` (`berth-bench-<pid>-docker`; any other worker's id is None).
fn owner_of(label: &str, worker: bool) -> Option<u32> {
    if !worker {
        return label.parse().ok();
    }
    let pid = label.strip_prefix(PREFIX)?.strip_suffix("-docker")?;
    pid.parse().ok()
}

/// `ID LABEL` lines -> the ids whose label names an owner `remove` picks.
fn pick(listing: &str, worker: bool, remove: &impl Fn(u32) -> bool) -> Vec<String> {
    listing
        .lines()
        .filter_map(|line| line.trim().split_once(' '))
        .filter(|(_, label)| owner_of(label.trim(), worker).is_some_and(remove))
        .map(|(id, _)| id.to_owned())
        .collect()
}

/// Removes the containers, then the networks, of bench runs `remove` picks by pid;
/// returns how many.
pub(super) async fn sweep(remove: impl Fn(u32) -> bool) -> anyhow::Result<usize> {
    let mut removed = 0;
    for kind in [["ps", "-a"], ["network", "ls"]] {
        let mut ids = Vec::new();
        for label in [OWNER_LABEL, "berth.worker"] {
            let listing = docker(&[
                kind[0],
                kind[1],
                "--filter",
                &format!("label={label}"),
                "--format",
                &format!("{{{{.ID}}}} {{{{.Label \"{label}\"}}}}"),
            ])
            .await?;
            // by worker label: only the bench's own workers, never another's sandboxes
            ids.extend(pick(&listing, label == "berth.worker", &remove));
        }
        if ids.is_empty() {
            continue;
        }
        removed += ids.len();
        let mut args: Vec<&str> = if kind[0] == "ps" {
            vec!["rm", "-f", "-v"]
        } else {
            vec!["network", "rm"]
        };
        args.extend(ids.iter().map(String::as_str));
        docker(&args).await?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_come_from_labels_and_worker_ids() {
        assert_eq!(owner_of("4242", false), Some(4242));
        assert_eq!(owner_of("berth-bench-4242-docker", true), Some(4242));
        assert_eq!(owner_of("berth-bench-x-docker", true), None);
        // another worker's id is never taken for a bench's, even a numeric one
        assert_eq!(owner_of("4242", true), None);
        assert_eq!(owner_of("smoke-docker-10", true), None);
        let workers =
            "c1 berth-bench-10-docker\nc3 other-worker\nc5 berth-bench-11-docker\nc6 10\n";
        assert_eq!(pick(workers, true, &|pid| pid == 10), vec!["c1"]);
        assert_eq!(pick(workers, true, &|pid| pid != 10), vec!["c5"]);
        let owners = "c2 4242\nc4 10\n";
        assert_eq!(pick(owners, false, &|pid| pid == 10), vec!["c4"]);
    }
}
