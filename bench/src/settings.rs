//! How big each measurement is: the full run that produces the report, and the quick
//! mode CI runs to prove the harness works (tiny counts, seconds in total).

use std::time::Duration;

use crate::load::Window;

#[derive(Debug, Clone)]
pub struct Settings {
    pub quick: bool,
    /// Sandbox provider of the workers the exec, spawn and stream runs use.
    pub provider: String,
    /// None: SQLite in the control plane's data dir.
    pub database_url: Option<String>,
    /// Concurrent clients of the exec and spawn runs.
    pub concurrency: Vec<usize>,
    pub exec_window: Window,
    pub spawn_window: Window,
    /// Bytes of the one large exec stream, and how often it is repeated per path.
    pub stream_bytes: u64,
    pub stream_runs: usize,
    /// Heartbeat interval of the simulated workers (and the control plane's setting).
    pub heartbeat_interval: Duration,
    /// Simulated worker counts tried in turn, stopping at the first that does not hold.
    pub heartbeat_ladder: Vec<usize>,
    /// How long each step of the ladder is watched once every worker heartbeated.
    pub heartbeat_window: Duration,
    /// Simulated workers and sandboxes held while the control plane's memory is read.
    pub memory_workers: usize,
    pub memory_sandboxes: usize,
    /// Image of the docker section (built locally by smoke/docker-test-image.sh).
    pub docker_image: String,
    /// Timed spawns, and execs, per path of the docker section (one at a time).
    pub docker_spawns: usize,
    pub docker_execs: usize,
    /// Rounds of the template section (a new version built, then reused, each round).
    pub template_rounds: usize,
    /// Clients of the soak, and how long it runs.
    pub soak_clients: usize,
    pub soak_duration: Duration,
}

impl Settings {
    pub fn full() -> Self {
        Self {
            quick: false,
            provider: "mock".to_owned(),
            database_url: None,
            concurrency: vec![1, 8, 64],
            exec_window: Window {
                warmup: Duration::from_secs(1),
                measure: Duration::from_secs(5),
            },
            spawn_window: Window {
                warmup: Duration::from_secs(1),
                measure: Duration::from_secs(5),
            },
            stream_bytes: 512 << 20,
            stream_runs: 3,
            heartbeat_interval: Duration::from_secs(5),
            heartbeat_ladder: vec![1_000, 5_000, 10_000, 15_000, 19_000],
            heartbeat_window: Duration::from_secs(30),
            memory_workers: 10_000,
            memory_sandboxes: 1_000,
            docker_image: "berth-test-busybox:latest".to_owned(),
            docker_spawns: 20,
            docker_execs: 200,
            template_rounds: 10,
            soak_clients: 8,
            soak_duration: Duration::from_secs(300),
        }
    }

    pub fn quick() -> Self {
        Self {
            quick: true,
            concurrency: vec![1, 8, 64],
            exec_window: Window {
                warmup: Duration::from_millis(50),
                measure: Duration::from_millis(250),
            },
            spawn_window: Window {
                warmup: Duration::from_millis(50),
                measure: Duration::from_millis(250),
            },
            stream_bytes: 4 << 20,
            stream_runs: 1,
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_ladder: vec![10, 20],
            heartbeat_window: Duration::from_secs(3),
            memory_workers: 10,
            memory_sandboxes: 5,
            docker_spawns: 2,
            docker_execs: 4,
            template_rounds: 1,
            soak_clients: 4,
            soak_duration: Duration::from_secs(5),
            ..Self::full()
        }
    }

    /// The most sandboxes one run keeps at once (one per exec client).
    pub fn max_concurrency(&self) -> usize {
        self.concurrency.iter().copied().max().unwrap_or(1)
    }
}

/// A window as the report's settings show it.
pub fn describe_window(window: &Window) -> String {
    format!(
        "{} warm-up, then {} measured",
        humantime::format_duration(window.warmup),
        humantime::format_duration(window.measure)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_mode_is_small_and_keeps_the_shape() {
        let full = Settings::full();
        let quick = Settings::quick();
        assert!(quick.quick && !full.quick);
        assert_eq!(quick.concurrency, full.concurrency);
        assert!(quick.exec_window.measure < full.exec_window.measure);
        assert!(quick.heartbeat_ladder.iter().all(|k| *k <= 100));
        assert!(quick.stream_bytes < full.stream_bytes);
        assert!(quick.docker_spawns < full.docker_spawns);
        assert!(quick.docker_execs < full.docker_execs);
        assert!(quick.template_rounds < full.template_rounds);
        assert_eq!(quick.docker_image, full.docker_image);
        assert_eq!(full.max_concurrency(), 64);
        assert!(full.heartbeat_ladder.contains(&10_000));
        assert_eq!(
            describe_window(&quick.exec_window),
            "50ms warm-up, then 250ms measured"
        );
    }
}
