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

/// What a load run came to before it is summarized: every latency of the window, so
/// runs taken in turns can be merged into one summary.
#[derive(Debug, Default)]
pub struct RawLoad {
    pub samples: Samples,
    /// Successful calls, warm-up included (what the processes' CPU time was spent on).
    pub succeeded: usize,
    pub errors: usize,
    pub first_error: Option<String>,
}

impl RawLoad {
    /// Adds another run's calls to these.
    pub fn merge(&mut self, other: RawLoad) {
        self.samples.extend(other.samples);
        self.succeeded += other.succeeded;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    /// The summary, `measured` being the length of every measured window together.
    pub fn summarize(self, measured: Duration) -> LoadResult {
        LoadResult {
            summary: self.samples.summarize(measured),
            errors: self.errors,
            first_error: self.first_error,
        }
    }
}

/// Runs `call` back to back on each of `clients` (one task per client) for
/// `window.warmup + window.measure`.
pub async fn closed_loop<C, F, Fut>(clients: Vec<C>, window: Window, call: F) -> LoadResult
where
    C: Clone + Send + 'static,
    F: Fn(C) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    closed_loop_raw(clients, window, call)
        .await
        .summarize(window.measure)
}

/// [`closed_loop`], its samples not yet summarized.
pub async fn closed_loop_raw<C, F, Fut>(clients: Vec<C>, window: Window, call: F) -> RawLoad
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
            let mut succeeded = 0usize;
            let mut errors = 0usize;
            let mut first_error = None;
            loop {
                let began = Instant::now();
                if began >= end {
                    break;
                }
                match call(client.clone()).await {
                    Ok(()) => {
                        succeeded += 1;
                        if began >= measure_from {
                            samples.record(began.elapsed());
                        }
                    }
                    Err(err) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{err:#}"));
                        // a failing call can fail fast; do not spin on it
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            RawLoad {
                samples,
                succeeded,
                errors,
                first_error,
            }
        });
    }
    let mut all = RawLoad::default();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(task) => all.merge(task),
            Err(err) => {
                all.errors += 1;
                all.first_error
                    .get_or_insert_with(|| format!("client task failed: {err}"));
            }
        }
    }
    all
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

    #[tokio::test]
    async fn runs_taken_in_turns_merge_into_one_summary() {
        let window = Window {
            warmup: Duration::from_millis(10),
            measure: Duration::from_millis(50),
        };
        let call = |_: ()| async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            Ok(())
        };
        let first = closed_loop_raw(vec![()], window, call).await;
        let second = closed_loop_raw(vec![()], window, call).await;
        let alone = [first.samples.clone(), second.samples.clone()]
            .map(|samples| samples.summarize(window.measure).count);
        assert!(alone[0] > 0 && alone[1] > 0);
        let mut all = RawLoad::default();
        all.merge(first);
        all.merge(second);
        // warm-up calls succeeded too, but only the measured ones are samples
        assert!(all.succeeded > alone[0] + alone[1]);
        let result = all.summarize(window.measure * 2);
        assert_eq!(result.summary.count, alone[0] + alone[1]);
        assert_eq!(result.errors, 0);
    }
}
