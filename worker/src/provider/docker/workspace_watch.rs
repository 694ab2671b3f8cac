//! The `/workspace` watchdog. A sandbox's `/workspace` is an anonymous volume of the
//! engine's `local` driver, which has no size limit (the engine's `--storage-opt
//! size` bounds only a container's root filesystem, and only on some storage drivers),
//! so a sandbox could fill the host's disk. Every `docker.workspace_check_interval`
//! the inventory pass of a heartbeat measures each running sandbox's `/workspace`
//! (`du -sxk` inside it, in the background, one sandbox at a time) and stops a
//! sandbox whose `/workspace` holds more than `docker.workspace_max_mb`: its console
//! log says why, its processes are killed, its files stay (readable through the
//! files API), and the heartbeat reports it `stopped`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::KillContainerOptions;
use tokio_util::task::TaskTracker;

use super::exec::{self, Command};
use super::inventory::resource_name;
use crate::provider::{SandboxInfo, SandboxState};

/// Longest one measurement may take (a tree of millions of files is its owner's
/// problem, not the heartbeat's).
const MEASURE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct WorkspaceWatch {
    /// 0: no limit.
    max_kib: u64,
    interval: Duration,
    last: Mutex<Option<Instant>>,
    /// A pass is running in the background.
    busy: std::sync::Arc<AtomicBool>,
}

impl WorkspaceWatch {
    pub fn new(max_mb: u64, interval: Duration) -> Self {
        Self {
            max_kib: max_mb.saturating_mul(1024),
            interval,
            last: Mutex::new(None),
            busy: std::sync::Arc::default(),
        }
    }

    /// Starts a pass over `sandboxes` in the background when one is due (enabled, the
    /// interval passed since the last, none running).
    pub fn maybe_check(
        &self,
        docker: &Docker,
        worker_id: &str,
        sandboxes: &[SandboxInfo],
        tasks: &TaskTracker,
    ) {
        if self.max_kib == 0 {
            return;
        }
        {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|at| at.elapsed() < self.interval) {
                return;
            }
            if self.busy.swap(true, Ordering::AcqRel) {
                return;
            }
            *last = Some(Instant::now());
        }
        let running: Vec<String> = sandboxes
            .iter()
            .filter(|sandbox| sandbox.state == SandboxState::Running)
            .map(|sandbox| sandbox.sandbox_id.clone())
            .collect();
        let (docker, worker_id, tasks_inner) =
            (docker.clone(), worker_id.to_owned(), tasks.clone());
        let (busy, max_kib) = (self.busy.clone(), self.max_kib);
        tasks.spawn(async move {
            for sandbox_id in running {
                check_one(&docker, &worker_id, &sandbox_id, max_kib, &tasks_inner).await;
            }
            busy.store(false, Ordering::Release);
        });
    }
}

async fn check_one(
    docker: &Docker,
    worker_id: &str,
    sandbox_id: &str,
    max_kib: u64,
    tasks: &TaskTracker,
) {
    let container = resource_name(sandbox_id);
    let Some(used_kib) = measure(docker, &container, sandbox_id, tasks).await else {
        return;
    };
    if used_kib <= max_kib {
        return;
    }
    let (used_mb, max_mb) = (used_kib / 1024, max_kib / 1024);
    tracing::warn!(%worker_id, sandbox_id, used_mb, max_mb, "/workspace is over docker.workspace_max_mb; stopping the sandbox");
    let notice = format!(
        "echo 'berth: /workspace holds {used_mb} MiB, more than this worker allows (docker.workspace_max_mb: {max_mb}); the sandbox is stopped' > /proc/1/fd/1"
    );
    let _ = exec::run(
        docker,
        &container,
        sandbox_id,
        shell(&notice, Duration::from_secs(5)),
        tasks,
    )
    .await;
    let kill = KillContainerOptions {
        signal: "SIGKILL".to_owned(),
    };
    if let Err(err) = docker.kill_container(&container, Some(kill)).await {
        tracing::warn!(%worker_id, sandbox_id, error = %err, "cannot stop a sandbox over its /workspace limit");
    }
}

/// KiB used under `/workspace` (one file system), or `None` when it cannot be told.
async fn measure(
    docker: &Docker,
    container: &str,
    sandbox_id: &str,
    tasks: &TaskTracker,
) -> Option<u64> {
    let output = exec::run(
        docker,
        container,
        sandbox_id,
        shell("du -sxk /workspace", MEASURE_TIMEOUT),
        tasks,
    )
    .await
    .ok()?;
    parse_du(&output.stdout_text())
}

fn shell(line: &str, timeout: Duration) -> Command {
    Command {
        argv: vec!["/bin/sh".to_owned(), "-c".to_owned(), line.to_owned()],
        env: Vec::new(),
        workdir: "/".to_owned(),
        timeout,
    }
}

/// The size column of `du -sk`'s answer.
fn parse_du(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn du_answers_are_read_or_refused() {
        assert_eq!(parse_du("2052\t/workspace\n"), Some(2052));
        assert_eq!(parse_du(""), None);
        assert_eq!(parse_du("du: /workspace: No such file"), None);
    }
}
