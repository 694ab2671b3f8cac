//! The closed-loop load generator: N clients, each with its own connection, call back
//! to back for a warm-up and then a measured window; only calls that start inside the
//! window are recorded, so calls per second is recorded calls over the window length.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::latency::{Samples, Summary};

/// How long one load run lasts.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub warmup: Duration,
    pub measure: Duration,
}

/// What a load run came to: the latency summary of the successful calls in the window,
/// how many calls failed (at any time) and the first failure's message.
#[derive(Debug, Clone)]
pub struct LoadResult {
    pub summary: Summary,
    pub errors: usize,
    pub first_error: Option<String>,
}

/// Runs `call` back to back on each of `clients` (one task per client) for
/// `window.warmup + window.measure`.
pub async fn closed_loop<C, F, Fut>(clients: Vec<C>, window: Window, call: F) -> LoadResult
where
    C: Clone + Send + 'static,
    F: Fn(C) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let call = Arc::new(call);
    let start = Instant::now();
    let measure_from = start + window.warmup;
    let end = measure_from + window.measure;
    let mut tasks = JoinSet::new();
    for client in clients {
        let call = call.clone();
        tasks.spawn(async move {
            let mut samples = Samples::with_capacity(4096);
            let mut errors = 0usize;
            let mut first_error = None;
            loop {
                let began = Instant::now();
                if began >= end {
                    break;
                }
                match call(client.clone()).await {
                    Ok(()) if began >= measure_from => samples.record(began.elapsed()),
                    Ok(()) => {}
                    Err(err) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{err:#}"));
                        // a failing call can fail fast; do not spin on it
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            (samples, errors, first_error)
        });
    }
    let mut all = Samples::default();
    let mut errors = 0;
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((samples, task_errors, task_first)) => {
                all.extend(samples);
                errors += task_errors;
                if first_error.is_none() {
                    first_error = task_first;
                }
            }
            Err(err) => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("client task failed: {err}"));
            }
        }
    }
    LoadResult {
        summary: all.summarize(window.measure),
        errors,
        first_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn every_client_calls_and_failures_are_counted() {
        let calls = Arc::new(AtomicUsize::new(0));
        let window = Window {
            warmup: Duration::from_millis(20),
            measure: Duration::from_millis(100),
        };
        let counter = calls.clone();
        let result = closed_loop(vec![0u32, 1, 2], window, move |client| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
                if client == 2 {
                    anyhow::bail!("client 2 always fails");
                }
                Ok(())
            }
        })
        .await;
        assert!(result.summary.count > 0);
        assert!(result.errors > 0);
        assert_eq!(result.first_error.as_deref(), Some("client 2 always fails"));
        // recorded calls are a subset of all calls (warm-up and failures are not kept)
        assert!(result.summary.count + result.errors <= calls.load(Ordering::SeqCst));
        assert!(result.summary.p50 >= Duration::from_millis(2));
    }
}
