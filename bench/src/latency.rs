//! Latency samples and their summary: exact percentiles from a sorted vector (the
//! runs are short enough to keep every sample), plus calls per second over the window
//! they were taken in.

use std::time::Duration;

/// Every latency of one measurement window.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    nanos: Vec<u64>,
}

impl Samples {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            nanos: Vec::with_capacity(capacity),
        }
    }

    pub fn record(&mut self, latency: Duration) {
        self.nanos
            .push(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
    }

    pub fn extend(&mut self, other: Samples) {
        self.nanos.extend(other.nanos);
    }

    /// The summary of these samples taken over `window`.
    pub fn summarize(mut self, window: Duration) -> Summary {
        self.nanos.sort_unstable();
        let count = self.nanos.len();
        let per_second = if window.is_zero() {
            0.0
        } else {
            count as f64 / window.as_secs_f64()
        };
        Summary {
            count,
            per_second,
            p50: percentile(&self.nanos, 50.0),
            p90: percentile(&self.nanos, 90.0),
            p99: percentile(&self.nanos, 99.0),
            max: self
                .nanos
                .last()
                .map(|n| Duration::from_nanos(*n))
                .unwrap_or_default(),
        }
    }
}

/// The nearest-rank percentile of sorted samples; zero when there are none.
fn percentile(sorted: &[u64], pct: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (pct / 100.0 * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    Duration::from_nanos(sorted[index])
}

/// What a measurement window came to.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub count: usize,
    pub per_second: f64,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
}

/// A duration in milliseconds with three decimals, as the report prints latencies.
pub fn ms(duration: Duration) -> String {
    format!("{:.3}", duration.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(millis: impl IntoIterator<Item = u64>) -> Samples {
        let mut samples = Samples::default();
        for m in millis {
            samples.record(Duration::from_millis(m));
        }
        samples
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        // 1..=100 ms in shuffled order
        let mut values: Vec<u64> = (1..=100).collect();
        values.reverse();
        values.swap(3, 70);
        let summary = samples(values).summarize(Duration::from_secs(2));
        assert_eq!(summary.count, 100);
        assert_eq!(summary.p50, Duration::from_millis(50));
        assert_eq!(summary.p90, Duration::from_millis(90));
        assert_eq!(summary.p99, Duration::from_millis(99));
        assert_eq!(summary.max, Duration::from_millis(100));
        assert!((summary.per_second - 50.0).abs() < 1e-9);
    }

    #[test]
    fn few_samples_still_give_sensible_percentiles() {
        let summary = samples([7]).summarize(Duration::from_secs(1));
        assert_eq!(summary.p50, Duration::from_millis(7));
        assert_eq!(summary.p99, Duration::from_millis(7));
        let summary = samples([1, 9]).summarize(Duration::from_secs(1));
        assert_eq!(summary.p50, Duration::from_millis(1));
        assert_eq!(summary.p90, Duration::from_millis(9));
    }

    #[test]
    fn no_samples_summarize_to_zero() {
        let summary = Samples::default().summarize(Duration::ZERO);
        assert_eq!(summary.count, 0);
        assert_eq!(summary.per_second, 0.0);
        assert_eq!(summary.max, Duration::ZERO);
    }

    #[test]
    fn merged_samples_count_once_each() {
        let mut all = samples([1, 2]);
        all.extend(samples([3]));
        let summary = all.summarize(Duration::from_secs(1));
        assert_eq!(summary.count, 3);
        assert_eq!(summary.max, Duration::from_millis(3));
    }

    #[test]
    fn milliseconds_print_with_three_decimals() {
        assert_eq!(ms(Duration::from_micros(1_234)), "1.234");
        assert_eq!(ms(Duration::ZERO), "0.000");
    }
}
