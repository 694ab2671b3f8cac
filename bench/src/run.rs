//! One bench run: the sections asked for, in order, each on its own fresh fleet in its
//! own directory, collected into the report. A section that fails is reported as such
//! and the run goes on; the caller turns failures into the exit status.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

use crate::fleet::{
    BerthBinary, ControlPlane, ControlPlaneOptions, SectionFleet, Worker, WorkerOptions,
};
use crate::machine::Machine;
use crate::report::{Report, Section, TargetCheck, Verdict};
use crate::settings::Settings;
use crate::{dialout, docker, exec, heartbeats, memory, soak, spawn, stream};

/// The sections, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum SectionName {
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

impl SectionName {
    pub const ALL: [SectionName; 9] = [
        SectionName::Exec,
        SectionName::Spawn,
        SectionName::Heartbeats,
        SectionName::Stream,
        SectionName::Docker,
        SectionName::Memory,
        SectionName::Soak,
        SectionName::Dialout,
        SectionName::Templates,
    ];

    fn title(self) -> &'static str {
        match self {
            Self::Exec => "1. Exec round trip: control plane vs direct worker call",
            Self::Spawn => "2. Spawn + destroy throughput",
            Self::Heartbeats => "3. Heartbeat capacity",
            Self::Stream => "4. Streaming throughput of one large exec",
            Self::Docker => "5. Docker: spawn-to-running and exec vs the docker CLI",
            Self::Memory => "6. Control-plane memory at rest",
            Self::Soak => "7. Soak: the relay under minutes of sandbox lives",
            Self::Dialout => "8. Exec round trip: dial-out vs inbound worker",
            Self::Templates => "9. Docker: a template's built image, first spawn vs reuse",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Self::Exec => {
                "Closed-loop clients run a short command in a sandbox: through the control \
                 plane's HTTP/JSON and gRPC APIs (API key check, audit record, routing over \
                 the mTLS mesh) and, for comparison, straight to the worker's WorkerService \
                 over mTLS as the control plane itself calls it. All three paths run in the \
                 same fleet, one after the other at each client count."
            }
            Self::Spawn => {
                "Closed-loop clients create a sandbox and destroy it again through the HTTP \
                 API (scheduling, lease, spawn on the worker, destroy, release), back to \
                 back; one pair is one call."
            }
            Self::Heartbeats => {
                "Simulated workers in the bench process, each enrolled through the real \
                 Enroll RPC with its own key and certificate, each heartbeating over its own \
                 TLS connection at the interval with the real workers' ±20% jitter. The \
                 count grows step by step until a step does not hold: a step holds when no \
                 heartbeat failed and the control plane never showed a simulated worker as \
                 anything but online (`GET /api/v1/workers`, polled once per interval)."
            }
            Self::Stream => {
                "One exec whose command writes a large output (`generate --bytes N` in the \
                 mock), read to the end: through the control plane (gRPC stream and HTTP \
                 NDJSON) and straight from the worker's ExecStream."
            }
            Self::Docker => {
                "Berth with the docker provider against the docker CLI on the same engine \
                 and image, one call at a time: spawn-to-running (`POST /api/v1/sandboxes` \
                 answers once the container runs) versus `docker run -d`, and an exec round \
                 trip (`POST /api/v1/sandboxes/{id}/exec`) versus `docker exec`. The paths \
                 take turns round by round, so drift on a shared machine hits them alike; \
                 the ratios come from the same run."
            }
            Self::Memory => {
                "Resident memory (VmRSS, and the peak VmHWM) of the `berth serve` process at \
                 rest: just started, then holding sandboxes on one worker, then with many \
                 simulated workers heartbeating as well."
            }
            Self::Soak => {
                "Closed-loop clients run whole sandbox lives through the HTTP API for minutes: \
                 create, a whole exec, an exec stream left after its first line (a worker \
                 call the control plane cancels for its client), a 100 KB file written and \
                 read back, destroy. Every call must succeed and the control plane's mesh \
                 connection must never be closed (`GOAWAY`) under the cancellations."
            }
            Self::Dialout => {
                "Closed-loop clients run a short command in a sandbox through the control \
                 plane's HTTP/JSON and gRPC APIs, as in section 1, to two workers of one \
                 fleet: one the control plane dials (inbound) and one that dials out (the \
                 control plane calls it over the connection the worker opened, HTTP/2 roles \
                 reversed). Each client alternates between a sandbox on each worker, call \
                 by call, so both see the same load at the same moments and the ratio \
                 dial-out / inbound comes from the same run."
            }
            Self::Templates => {
                "A template's image built on the worker (base image + `on_create`, \
                 committed and tagged by content hash) at the first spawn of each version, \
                 against a later spawn of that version (which reuses the image) and a \
                 plain spawn of the base image, one at a time through the HTTP API on a \
                 docker worker; the `building image` phase is read from each sandbox's \
                 phases."
            }
        }
    }
}

/// What every section needs.
pub struct Bench {
    pub berth: BerthBinary,
    pub settings: Settings,
    pub machine: Machine,
    pub workdir: TempDir,
}

impl Bench {
    /// A fresh directory for one section's processes, configs and logs.
    pub fn section_dir(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.workdir.path().join(name);
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// The control plane of section `section`: its database URL is the one given with
    /// `{section}` replaced, so each section can start on an empty database.
    pub fn control_plane_options(
        &self,
        section: &str,
        heartbeat_interval: Duration,
    ) -> ControlPlaneOptions {
        ControlPlaneOptions {
            heartbeat_interval,
            missed_heartbeats: 3,
            database_url: self
                .settings
                .database_url
                .as_ref()
                .map(|url| url.replace("{section}", section)),
        }
    }

    /// Starts the control plane of section `section` in `dir`.
    pub async fn start_control_plane(
        &self,
        section: &str,
        dir: &Path,
        heartbeat_interval: Duration,
    ) -> anyhow::Result<ControlPlane> {
        let options = self.control_plane_options(section, heartbeat_interval);
        ControlPlane::start(&self.berth, dir, &options).await
    }

    /// The control plane of section `section` and one worker (`worker-1`, started with
    /// `worker`), both in the section's own dir and heartbeating at the worker's
    /// interval. A worker that cannot start stops the control plane too.
    pub async fn start_fleet(
        &self,
        section: &str,
        worker: &WorkerOptions,
    ) -> anyhow::Result<SectionFleet> {
        let dir = self.section_dir(section)?;
        let control_plane = self
            .start_control_plane(section, &dir, worker.heartbeat_interval)
            .await?;
        match Worker::start(&self.berth, &dir, "worker-1", &control_plane, worker).await {
            Ok(worker) => Ok(SectionFleet {
                dir,
                control_plane,
                worker,
            }),
            Err(err) => {
                control_plane.stop().await;
                Err(err)
            }
        }
    }
}

/// Runs `sections` and returns the report.
pub async fn run(
    bench: &Bench,
    sections: &[SectionName],
    command: String,
    analysis: String,
) -> Report {
    let mut done = Vec::new();
    for &name in sections {
        let mut section = Section::new(name.title(), name.what());
        eprintln!("berth-bench: {} ...", name.title());
        let started = std::time::Instant::now();
        let result = match name {
            SectionName::Exec => exec::run(bench, &mut section).await,
            SectionName::Spawn => spawn::run(bench, &mut section).await,
            SectionName::Heartbeats => heartbeats::run(bench, &mut section).await,
            SectionName::Stream => stream::run(bench, &mut section).await,
            SectionName::Docker => docker::run(bench, &mut section).await,
            SectionName::Memory => memory::run(bench, &mut section).await,
            SectionName::Soak => soak::run(bench, &mut section).await,
            SectionName::Dialout => dialout::run(bench, &mut section).await,
            SectionName::Templates => docker::run_templates(bench, &mut section).await,
        };
        if let Err(err) = result {
            eprintln!("berth-bench: {} failed: {err:#}", name.title());
            section.failure = Some(format!("{err:#}"));
        }
        eprintln!(
            "berth-bench: {} done in {:.1}s",
            name.title(),
            started.elapsed().as_secs_f64()
        );
        done.push(section);
    }
    let mut unmeasured = Vec::new();
    for name in SectionName::ALL {
        if !sections.contains(&name) {
            unmeasured.push(TargetCheck::new(
                name.title(),
                "section not run".into(),
                Verdict::NotMeasured,
            ));
        }
    }
    Report {
        machine: bench.machine.clone(),
        command,
        generated_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        quick: bench.settings.quick,
        sections: done,
        unmeasured,
        analysis,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_section_gets_its_own_database() {
        let mut settings = Settings::quick();
        settings.database_url = Some("postgres://u@127.0.0.1/berth_bench_{section}".into());
        let bench = Bench {
            berth: BerthBinary {
                path: PathBuf::from("berth"),
                log_filter: "warn".into(),
            },
            settings,
            machine: Machine::detect(Path::new("."), 1024),
            workdir: tempfile::tempdir().unwrap(),
        };
        let options = bench.control_plane_options("spawn", Duration::from_secs(1));
        assert_eq!(
            options.database_url.as_deref(),
            Some("postgres://u@127.0.0.1/berth_bench_spawn")
        );
        assert_eq!(options.store_name(), "postgres");
        let dir = bench.section_dir("spawn").unwrap();
        assert!(dir.is_dir() && dir.starts_with(bench.workdir.path()));
    }
}
