//! The heartbeat loop: report state, capacity and providers at the interval the
//! control plane asks for; on failure move to the next control plane and back off
//! with jitter, so a fleet does not reconnect in lockstep.

use std::sync::Arc;
use std::time::Duration;

use berth_proto::v1 as pb;
use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::control_planes::status_detail;
use crate::runtime::Runtime;

const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_RETRY: Duration = Duration::from_millis(250);

pub(crate) async fn run(runtime: Arc<Runtime>, shutdown: CancellationToken) {
    let mut interval = runtime.config.heartbeat_interval;
    let mut target = 0usize;
    let mut failures = 0u32;
    loop {
        let plane = runtime.control_planes.get(target);
        let mut client = plane.client.clone();
        let mut request = tonic::Request::new(report(&runtime).await);
        request.set_timeout(HEARTBEAT_TIMEOUT);
        let result = tokio::select! {
            () = shutdown.cancelled() => return,
            result = client.heartbeat(request) => result,
        };
        match result {
            Ok(ack) => {
                if failures > 0 {
                    tracing::info!(worker_id = %runtime.worker_id, "heartbeats accepted again");
                }
                failures = 0;
                let ack = ack.into_inner();
                if ack.heartbeat_interval_ms > 0 {
                    interval = Duration::from_millis(u64::from(ack.heartbeat_interval_ms));
                }
                note_drain_request(&runtime, ack.drain_requested);
                destroy_unleased(&runtime, &ack.destroy_sandboxes).await;
            }
            Err(status) => {
                failures += 1;
                runtime.metrics.heartbeat_failures.inc();
                tracing::warn!(
                    worker_id = %runtime.worker_id,
                    control_plane = %plane.url,
                    failures,
                    error = %status_detail(&status),
                    "heartbeat failed"
                );
                target = runtime.control_planes.next(target);
            }
        }
        let delay = next_delay(interval, failures);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// Takes note of whether the control plane wants this worker drained. It only shows in
/// the worker's status and metrics: the control plane runs that drain itself (see
/// `runtime::DrainState`).
fn note_drain_request(runtime: &Runtime, requested: bool) {
    if !runtime.drain.set_requested(requested) {
        return;
    }
    if requested {
        tracing::info!(worker_id = %runtime.worker_id, "the control plane drains this worker");
    } else {
        tracing::info!(worker_id = %runtime.worker_id, "the control plane cancelled or finished this worker's drain");
    }
}

/// Destroys sandboxes the control plane holds no lease for (left by a failed spawn,
/// or kept while the worker was cut off and their leases went elsewhere).
async fn destroy_unleased(runtime: &Runtime, sandbox_ids: &[String]) {
    for sandbox_id in sandbox_ids {
        match runtime.provider.destroy(sandbox_id).await {
            Ok(()) => {
                runtime.fences.forget(sandbox_id).await;
                tracing::info!(worker_id = %runtime.worker_id, %sandbox_id, "destroyed a sandbox without a lease")
            }
            Err(err) => {
                tracing::warn!(worker_id = %runtime.worker_id, %sandbox_id, error = %err, "cannot destroy a sandbox without a lease")
            }
        }
    }
}

/// One heartbeat to the first control plane that takes it (a drain's first and last
/// word); failures are logged, the regular loop carries on regardless.
pub(crate) async fn send_once(runtime: &Runtime) {
    let sent = runtime
        .control_planes
        .call_in_turn(|mut client| async move {
            let mut request = tonic::Request::new(report(runtime).await);
            request.set_timeout(HEARTBEAT_TIMEOUT);
            client.heartbeat(request).await
        })
        .await;
    let Err(failures) = sent else { return };
    for failure in failures {
        tracing::warn!(
            worker_id = %runtime.worker_id,
            control_plane = %failure.url,
            error = %status_detail(&failure.status),
            "heartbeat failed"
        );
    }
}

/// What the worker tells the control plane: its state (draining only when it drains
/// itself), provider health and the sandboxes it holds with their lease generations
/// (which renews those leases).
async fn report(runtime: &Runtime) -> pb::HeartbeatRequest {
    let provider = &runtime.provider;
    let health = provider.health().await;
    let mut info = runtime.info.clone();
    if let Some(capacity) = info.capacity.as_mut()
        && capacity.memory_mb == 0
    {
        capacity.memory_mb = provider.total_memory_mb();
    }
    info.providers = vec![pb::ProviderHealth {
        name: provider.name().to_owned(),
        healthy: health.healthy,
        message: health.message,
    }];
    let sandboxes = match provider.list().await {
        Ok(list) => list
            .into_iter()
            .map(|sandbox| pb::SandboxReport {
                generation: runtime.fences.current(&sandbox.sandbox_id).unwrap_or(0),
                state: sandbox.state.as_str().to_owned(),
                sandbox_id: sandbox.sandbox_id,
            })
            .collect(),
        Err(err) => {
            tracing::warn!(worker_id = %runtime.worker_id, error = %err, "cannot list sandboxes for the heartbeat");
            Vec::new()
        }
    };
    pb::HeartbeatRequest {
        worker_id: runtime.worker_id.clone(),
        state: if runtime.drain.is_own() {
            pb::WorkerState::Draining as i32
        } else {
            pb::WorkerState::Ready as i32
        },
        info: Some(info),
        sandboxes,
        sent_at_ms: now_ms(),
    }
}

/// The interval itself while healthy; exponential backoff from 250ms capped at the
/// interval while failing; both with ±20% jitter.
fn next_delay(interval: Duration, failures: u32) -> Duration {
    let base = if failures == 0 {
        interval
    } else {
        FIRST_RETRY
            .saturating_mul(1 << failures.min(16))
            .min(interval)
    };
    base.mul_f64(rand::rng().random_range(0.8..1.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_back_off_up_to_the_interval_with_jitter() {
        let interval = Duration::from_secs(5);
        for _ in 0..100 {
            let healthy = next_delay(interval, 0);
            assert!(healthy >= Duration::from_secs(4) && healthy <= Duration::from_secs(6));
            let first = next_delay(interval, 1);
            assert!(first >= Duration::from_millis(400) && first <= Duration::from_millis(600));
            let many = next_delay(interval, 30);
            assert!(many <= Duration::from_secs(6));
        }
    }
}
