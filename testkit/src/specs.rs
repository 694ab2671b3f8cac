//! Provider-level requests for tests that drive a provider directly: a sandbox spec
//! and a shell exec, with the values most tests want; a test that wants others
//! overrides fields (`SandboxSpec { memory_mb: 96, ..spec(id) }`).

use std::collections::BTreeMap;
use std::time::Duration;

use berth_worker::provider::{ExecMode, ExecSpec, SandboxSpec};

/// A sandbox `id` on the provider's default image: 1 CPU, 128 MiB, no env.
pub fn spec(id: &str) -> SandboxSpec {
    SandboxSpec {
        sandbox_id: id.into(),
        image: String::new(),
        vcpus: 1,
        memory_mb: 128,
        env: BTreeMap::new(),
        metadata: BTreeMap::new(),
        internet: true,
        services: Vec::new(),
    }
}

/// `line` run by the sandbox's shell, with a 30s timeout.
pub fn shell(line: &str) -> ExecSpec {
    ExecSpec {
        command: line.into(),
        args: Vec::new(),
        mode: ExecMode::Shell,
        env: BTreeMap::new(),
        workdir: None,
        timeout: Duration::from_secs(30),
    }
}
