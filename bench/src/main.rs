//! `berth-bench`: starts a control plane and workers on loopback (real processes, real
//! mTLS, real store) and measures them; writes the results as a markdown report. This
//! file only parses flags, raises the open-files limit, installs the crypto provider and
//! hands over to [`run`].
//!
//! The bench is a tool whose every error ends a section, so it uses `anyhow`
//! throughout, as `main` and start-up code do elsewhere.

mod api;
mod clients;
mod dialout;
mod docker;
mod exec;
mod fleet;
mod heartbeats;
mod latency;
mod load;
mod machine;
mod memory;
mod procstat;
mod prom;
mod report;
mod run;
mod settings;
mod simulated;
mod soak;
mod spawn;
mod store_floor;
mod stream;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use crate::fleet::BerthBinary;
use crate::machine::Machine;
use crate::run::{Bench, SectionName};
use crate::settings::Settings;

/// Benchmarks Berth on this machine and writes a markdown report.
#[derive(Debug, Parser)]
#[command(name = "berth-bench", version)]
struct Args {
    /// Sections to run, in report order (default: all). `all` runs every section.
    #[arg(value_enum)]
    sections: Vec<Choice>,
    /// Tiny counts that prove the harness works in seconds (what CI runs).
    #[arg(long)]
    quick: bool,
    /// Write the report here (default: print it).
    #[arg(long)]
    report: Option<PathBuf>,
    /// The `berth` binary to start (default: the one next to this binary).
    #[arg(long, env = "BERTH_BENCH_BERTH")]
    berth: Option<PathBuf>,
    /// Control-plane database (default: SQLite in each section's data dir). Every
    /// section needs an empty database: `{section}` in the URL is replaced by the
    /// section's name, e.g. postgres://user:pass@127.0.0.1/berth_bench_{section}.
    #[arg(long, env = "BERTH_BENCH_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Sandbox provider of the workers.
    #[arg(long, default_value = "mock")]
    provider: String,
    /// Measured seconds of each exec and spawn run (after a warm-up of a fifth of it).
    #[arg(long, value_parser = humantime::parse_duration)]
    measure: Option<Duration>,
    /// Simulated worker counts of the heartbeat ladder, comma-separated.
    #[arg(long, value_delimiter = ',')]
    workers: Vec<usize>,
    /// Heartbeat interval of the heartbeat and memory sections.
    #[arg(long, value_parser = humantime::parse_duration)]
    heartbeat_interval: Option<Duration>,
    /// Watched time of each heartbeat step.
    #[arg(long, value_parser = humantime::parse_duration)]
    heartbeat_window: Option<Duration>,
    /// Simulated workers of the memory section.
    #[arg(long)]
    memory_workers: Option<usize>,
    /// Bytes of the streaming section's exec.
    #[arg(long)]
    stream_bytes: Option<u64>,
    /// Image of the docker section; never pulled (build it with
    /// `bash smoke/docker-test-image.sh`).
    #[arg(long, env = "BERTH_TEST_IMAGE")]
    docker_image: Option<String>,
    /// Timed spawns per path of the docker section.
    #[arg(long)]
    docker_spawns: Option<usize>,
    /// Timed execs per path of the docker section.
    #[arg(long)]
    docker_execs: Option<usize>,
    /// `RUST_LOG` of the started processes.
    #[arg(long, default_value = "warn")]
    log_filter: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Choice {
    All,
    Exec,
    Spawn,
    Heartbeats,
    Stream,
    Docker,
    Memory,
    Soak,
    Dialout,
    Templates,
}

impl Args {
    fn sections(&self) -> Vec<SectionName> {
        if self.sections.is_empty() || self.sections.contains(&Choice::All) {
            return SectionName::ALL.to_vec();
        }
        let mut chosen: Vec<SectionName> = self
            .sections
            .iter()
            .filter_map(|choice| match choice {
                Choice::All => None,
                Choice::Exec => Some(SectionName::Exec),
                Choice::Spawn => Some(SectionName::Spawn),
                Choice::Heartbeats => Some(SectionName::Heartbeats),
                Choice::Stream => Some(SectionName::Stream),
                Choice::Docker => Some(SectionName::Docker),
                Choice::Memory => Some(SectionName::Memory),
                Choice::Soak => Some(SectionName::Soak),
                Choice::Dialout => Some(SectionName::Dialout),
                Choice::Templates => Some(SectionName::Templates),
            })
            .collect();
        chosen.sort();
        chosen.dedup();
        chosen
    }

    fn settings(&self) -> Settings {
        let mut settings = if self.quick {
            Settings::quick()
        } else {
            Settings::full()
        };
        settings.provider = self.provider.clone();
        settings.database_url = self.database_url.clone();
        if let Some(measure) = self.measure {
            for window in [&mut settings.exec_window, &mut settings.spawn_window] {
                window.measure = measure;
                window.warmup = measure / 5;
            }
        }
        if !self.workers.is_empty() {
            settings.heartbeat_ladder = self.workers.clone();
        }
        if let Some(interval) = self.heartbeat_interval {
            settings.heartbeat_interval = interval;
        }
        if let Some(window) = self.heartbeat_window {
            settings.heartbeat_window = window;
        }
        if let Some(workers) = self.memory_workers {
            settings.memory_workers = workers;
        }
        if let Some(bytes) = self.stream_bytes {
            settings.stream_bytes = bytes;
        }
        if let Some(image) = &self.docker_image {
            settings.docker_image = image.clone();
        }
        if let Some(spawns) = self.docker_spawns {
            settings.docker_spawns = spawns;
        }
        if let Some(execs) = self.docker_execs {
            settings.docker_execs = execs;
        }
        settings
    }

    fn berth_binary(&self) -> anyhow::Result<PathBuf> {
        let path = match &self.berth {
            Some(path) => path.clone(),
            None => std::env::current_exe()?
                .parent()
                .context("this binary has no directory")?
                .join("berth"),
        };
        anyhow::ensure!(
            path.is_file(),
            "no berth binary at {} (build it with `cargo build --release --bin berth`, or pass --berth)",
            path.display()
        );
        Ok(path)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    berth_pki::install_crypto_provider();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the bench; `Ok(false)` when a section failed or calls failed.
async fn bench(args: Args) -> anyhow::Result<bool> {
    // one connection per simulated worker: take every file descriptor we may have;
    // the processes the bench starts inherit the limit
    let open_files =
        rlimit::increase_nofile_limit(u64::MAX).context("cannot raise the open-files limit")?;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let berth = BerthBinary {
        path: args.berth_binary()?,
        log_filter: args.log_filter.clone(),
    };
    let bench = Bench {
        berth,
        settings: args.settings(),
        machine: Machine::detect(&repo, open_files),
        workdir: tempfile::Builder::new().prefix("berth-bench-").tempdir()?,
    };
    let analysis = std::fs::read_to_string(repo.join("bench/analysis.md")).unwrap_or_default();
    let sections = args.sections();
    if let Some(url) = &args.database_url {
        check_database_url(url, &sections)?;
    }
    let command = command_line();
    let report = run::run(&bench, &sections, command, analysis).await;
    let text = report.render();
    match &args.report {
        Some(path) => {
            std::fs::write(path, &text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("berth-bench: report written to {}", path.display());
        }
        None => print!("{text}"),
    }
    let mut ok = true;
    for section in &report.sections {
        if let Some(reason) = &section.skipped {
            eprintln!("berth-bench: SKIPPED {}: {reason}", section.title);
        }
        if let Some(failure) = &section.failure {
            eprintln!("berth-bench: FAILED {}: {failure}", section.title);
            ok = false;
        }
        if section.call_errors > 0 {
            eprintln!(
                "berth-bench: FAILED {}: {} calls failed",
                section.title, section.call_errors
            );
            ok = false;
        }
    }
    Ok(ok)
}

/// Every section starts its control plane on an empty database, so a shared database
/// URL needs `{section}` unless only one section runs.
fn check_database_url(url: &str, sections: &[SectionName]) -> anyhow::Result<()> {
    anyhow::ensure!(
        url.starts_with("sqlite:") || url.contains("{section}") || sections.len() == 1,
        "every section starts on an empty database: put {{section}} in the database URL \
         (e.g. postgres://…/berth_bench_{{section}}, one database per section) or run one section"
    );
    Ok(())
}

/// The command as typed, with the binary's name instead of its full path and the
/// database URL's credentials hidden.
fn command_line() -> String {
    let mut parts = vec!["berth-bench".to_owned()];
    let mut hide_next = false;
    for arg in std::env::args().skip(1) {
        if hide_next {
            parts.push("<database-url>".to_owned());
            hide_next = false;
        } else if arg == "--database-url" {
            parts.push(arg);
            hide_next = true;
        } else if arg.starts_with("--database-url=") {
            parts.push("--database-url=<database-url>".to_owned());
        } else {
            parts.push(arg);
        }
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_default_to_all_and_keep_report_order() {
        let args = Args::parse_from(["berth-bench"]);
        assert_eq!(args.sections(), SectionName::ALL.to_vec());
        let args = Args::parse_from(["berth-bench", "all", "--quick"]);
        assert_eq!(args.sections(), SectionName::ALL.to_vec());
        assert!(args.settings().quick);
        let args = Args::parse_from(["berth-bench", "stream", "exec", "exec"]);
        assert_eq!(
            args.sections(),
            vec![SectionName::Exec, SectionName::Stream]
        );
        let args = Args::parse_from(["berth-bench", "dialout", "exec"]);
        assert_eq!(
            args.sections(),
            vec![SectionName::Exec, SectionName::Dialout]
        );
        let args = Args::parse_from(["berth-bench", "memory", "docker", "stream"]);
        assert_eq!(
            args.sections(),
            vec![
                SectionName::Stream,
                SectionName::Docker,
                SectionName::Memory
            ]
        );
    }

    #[test]
    fn flags_override_the_settings() {
        let args = Args::parse_from([
            "berth-bench",
            "heartbeats",
            "--workers",
            "100,200",
            "--heartbeat-interval",
            "2s",
            "--measure",
            "10s",
            "--database-url",
            "postgres://x@127.0.0.1/db",
            "--docker-spawns",
            "3",
            "--docker-execs",
            "7",
        ]);
        let settings = args.settings();
        assert_eq!(settings.heartbeat_ladder, vec![100, 200]);
        assert_eq!(settings.heartbeat_interval, Duration::from_secs(2));
        assert_eq!(settings.exec_window.measure, Duration::from_secs(10));
        assert_eq!(settings.spawn_window.warmup, Duration::from_secs(2));
        assert_eq!((settings.docker_spawns, settings.docker_execs), (3, 7));
        assert_eq!(
            settings.database_url.as_deref(),
            Some("postgres://x@127.0.0.1/db")
        );
        assert!(Args::try_parse_from(["berth-bench", "nonsense"]).is_err());
    }

    #[test]
    fn a_shared_database_needs_a_section_placeholder() {
        let all = SectionName::ALL.to_vec();
        assert!(check_database_url("postgres://u@127.0.0.1/bench", &all).is_err());
        assert!(check_database_url("postgres://u@127.0.0.1/bench", &[SectionName::Spawn]).is_ok());
        assert!(check_database_url("postgres://u@127.0.0.1/bench_{section}", &all).is_ok());
    }
}
