//! The paths the section times, spawn and exec, with what each row of the report
//! says about them, and the timings one path collects.

use crate::latency::Samples;

/// The timings of one path.
#[derive(Debug, Default)]
pub(super) struct PathRun {
    pub(super) calls: Samples,
    /// Destroys of the spawn paths, timed apart.
    pub(super) teardowns: Samples,
    /// The `docker network create` part of a spawn that makes its network with the CLI.
    pub(super) networks: Samples,
    pub(super) errors: usize,
    pub(super) first_error: Option<String>,
}

impl PathRun {
    pub(super) fn failed(&mut self, err: &anyhow::Error) {
        self.errors += 1;
        self.first_error.get_or_insert_with(|| format!("{err:#}"));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SpawnPath {
    Berth,
    Cli,
    CliLikeBerth,
}

impl SpawnPath {
    pub(super) const ALL: [SpawnPath; 3] =
        [SpawnPath::Berth, SpawnPath::Cli, SpawnPath::CliLikeBerth];

    pub(super) fn label(self) -> &'static str {
        match self {
            Self::Berth => "Berth `POST /api/v1/sandboxes` (docker provider)",
            Self::Cli => "`docker run -d --rm IMAGE sleep 3600`",
            Self::CliLikeBerth => "`docker network create` + `docker run -d` with Berth's options",
        }
    }

    pub(super) fn timed(self) -> &'static str {
        match self {
            Self::Berth => "until the answer (state running)",
            Self::Cli => "until the command returned (container running)",
            Self::CliLikeBerth => "both commands, until the second returned",
        }
    }

    pub(super) fn teardown(self) -> &'static str {
        match self {
            Self::Berth => "`DELETE /api/v1/sandboxes/{id}`",
            Self::Cli => "`docker rm -f`",
            Self::CliLikeBerth => "`docker rm -f -v` + `docker network rm`",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ExecPath {
    Berth,
    Cli,
    CliIntoSandbox,
    CliStartup,
}

impl ExecPath {
    pub(super) const ALL: [ExecPath; 4] = [
        ExecPath::Berth,
        ExecPath::Cli,
        ExecPath::CliIntoSandbox,
        ExecPath::CliStartup,
    ];

    pub(super) fn label(self) -> &'static str {
        match self {
            Self::Berth => "Berth `POST /api/v1/sandboxes/{id}/exec`",
            Self::Cli => "`docker exec C /bin/sh -c …` (C from `docker run -d`)",
            Self::CliIntoSandbox => "`docker exec` into the Berth sandbox's container",
            Self::CliStartup => "docker CLI start-up alone (`docker --version`, no engine call)",
        }
    }
}
