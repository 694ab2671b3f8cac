//! A template's `on_start` script, run in a sandbox once it is made and at each
//! start (in its `workdir`, made before it): a non-zero exit fails the create (or the
//! start) with the end of what the script printed.

use super::{SandboxError, Sandboxes};
use crate::workers::WorkerClient;
use crate::workers::model::ExecRequest;

/// What an `on_start` script's output is collected up to, and how much of its end a
/// failure quotes.
const ON_START_OUTPUT: usize = 64 << 10;
const ON_START_TAIL_CHARS: usize = 500;

impl Sandboxes {
    /// Runs a template's `on_start` script in the new sandbox; a non-zero exit fails
    /// the create with the end of what the script printed.
    pub(super) async fn run_on_start(
        &self,
        client: &WorkerClient,
        id: &str,
        generation: u64,
        script: &str,
        workdir: &str,
    ) -> Result<(), SandboxError> {
        let outcome = client
            .exec(ExecRequest {
                sandbox_id: id.to_owned(),
                generation,
                command: script.to_owned(),
                args: Vec::new(),
                argv: false,
                env: Default::default(),
                workdir: workdir.to_owned(),
                timeout: self.settings.limits.spawn_timeout,
                max_output: ON_START_OUTPUT,
            })
            .await?;
        if outcome.exit_code == 0 {
            return Ok(());
        }
        let printed = if outcome.stderr.is_empty() {
            &outcome.stdout
        } else {
            &outcome.stderr
        };
        let text = String::from_utf8_lossy(printed);
        let tail: String = {
            let trimmed = text.trim_end();
            let start = trimmed
                .char_indices()
                .rev()
                .nth(ON_START_TAIL_CHARS)
                .map_or(0, |(i, _)| i);
            trimmed[start..].to_owned()
        };
        Err(SandboxError::BadRequest(format!(
            "the template's on_start exited with {}{}",
            outcome.exit_code,
            if tail.is_empty() {
                String::new()
            } else {
                format!(": {tail}")
            }
        )))
    }
}

impl Sandboxes {
    /// Makes a template's `workdir` in the new sandbox (`mkdir -p`, as the user its
    /// commands run as), so its commands and sessions can start there.
    pub(super) async fn make_workdir(
        &self,
        client: &WorkerClient,
        id: &str,
        generation: u64,
        workdir: &str,
    ) -> Result<(), SandboxError> {
        let outcome = client
            .exec(ExecRequest {
                sandbox_id: id.to_owned(),
                generation,
                command: "mkdir".to_owned(),
                args: vec!["-p".to_owned(), workdir.to_owned()],
                argv: true,
                env: Default::default(),
                workdir: String::new(),
                timeout: self.settings.limits.spawn_timeout,
                max_output: ON_START_OUTPUT,
            })
            .await?;
        if outcome.exit_code == 0 {
            return Ok(());
        }
        Err(SandboxError::BadRequest(format!(
            "the template's workdir {workdir:?} could not be made (mkdir exited with {}): {}",
            outcome.exit_code,
            String::from_utf8_lossy(&outcome.stderr).trim()
        )))
    }
}
