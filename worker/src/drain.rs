//! A worker draining itself (what SIGTERM does): heartbeats say draining so the control
//! plane sends nothing new; running sandboxes may finish until the deadline, then what
//! is left is destroyed; a last heartbeat reports the empty inventory. A stop token
//! cuts it short (a second SIGINT/SIGTERM): with the control plane down, the heartbeats
//! alone can take a long time, and the operator must be able to stop the worker.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::heartbeat;
use crate::runtime::Runtime;

/// How often the provider is asked whether anything is left.
const POLL: Duration = Duration::from_millis(100);

/// Drains the worker unless `stop` fires first; returns how many sandboxes the deadline
/// destroyed (0 when cut short: what is left stays for the next start to reconcile).
pub(crate) async fn drain_self(
    runtime: &Runtime,
    deadline: Duration,
    stop: &CancellationToken,
) -> usize {
    tokio::select! {
        destroyed = drain(runtime, deadline) => destroyed,
        () = stop.cancelled() => {
            tracing::warn!(worker_id = %runtime.worker_id, "drain cut short: stopping now");
            0
        }
    }
}

async fn drain(runtime: &Runtime, deadline: Duration) -> usize {
    runtime.drain.start_own();
    tracing::info!(worker_id = %runtime.worker_id, ?deadline, "draining");
    heartbeat::send_once(runtime).await;
    let until = tokio::time::Instant::now() + deadline;
    let mut destroyed = 0;
    loop {
        let held = runtime.provider.list().await.unwrap_or_default();
        if held.is_empty() {
            break;
        }
        if tokio::time::Instant::now() >= until {
            for sandbox in held {
                match runtime.provider.destroy(&sandbox.sandbox_id).await {
                    Ok(()) => destroyed += 1,
                    Err(err) => {
                        tracing::warn!(sandbox_id = %sandbox.sandbox_id, error = %err, "cannot destroy at the drain deadline")
                    }
                }
            }
            continue;
        }
        tokio::time::sleep(POLL).await;
    }
    heartbeat::send_once(runtime).await;
    tracing::info!(worker_id = %runtime.worker_id, destroyed, "drained");
    destroyed
}
