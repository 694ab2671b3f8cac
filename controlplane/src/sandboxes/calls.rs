//! Calls routed to the worker holding a sandbox's lease: exec (whole or streamed),
//! logs, and files. Mutating calls carry the lease generation so the worker can fence
//! out a stale control plane; the worker client gives every call its deadline.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use futures::Stream;

use super::{SandboxError, Sandboxes, grace_ms};
use crate::clock::now_ms;
use crate::store::SandboxState;
use crate::teams::Access;
use crate::workers::model::{ExecOutcome, ExecRequest, FileInfo};
use crate::workers::{
    ExecEvents, FileChunks, LogLines, RemoteError, Route, WorkerClient, WriteFileError,
};

/// An exec as the API takes it.
#[derive(Debug, Clone)]
pub struct ExecCall {
    pub command: String,
    pub args: Vec<String>,
    /// `argv` or `shell`.
    pub argv: bool,
    pub env: BTreeMap<String, String>,
    pub workdir: String,
    /// `None`: the default.
    pub timeout: Option<Duration>,
}

impl ExecCall {
    /// The command as the audit log shows it: the shell line, or argv as JSON.
    pub fn describe(&self) -> String {
        crate::workers::model::command_line(&self.command, &self.args, self.argv)
    }
}

/// The working directory of a call that names `asked` in a sandbox whose own is
/// `base`: none is the sandbox's, a relative one is taken from it ("" leaves the
/// worker's default, `/workspace`, to the worker).
pub(super) fn workdir_in(asked: String, base: &str) -> String {
    match asked.as_str() {
        "" => base.to_owned(),
        relative if !relative.starts_with('/') && !base.is_empty() => {
            format!("{}/{relative}", base.trim_end_matches('/'))
        }
        _ => asked,
    }
}

/// The lease holder of a live sandbox.
pub(super) struct Target {
    pub(super) client: WorkerClient,
    pub(super) generation: u64,
    /// The sandbox's own working directory ("": the worker's default).
    pub(super) workdir: String,
    /// Taken from the route cache rather than read from the store just now.
    cached: bool,
}

/// What a routed call does with the sandbox: uses it (an exec, a file call, a session,
/// a port: it counts as activity for `auto_stop`), or only looks (its logs, the list
/// of its sessions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Use {
    Work,
    Look,
}

impl Sandboxes {
    /// Where calls for `sandbox_id` go: the cached route when it is fresh, else the
    /// lease in the store (which is then cached). A call that works in the sandbox is
    /// noted as its activity once the caller is known to see it.
    async fn target(
        &self,
        access: &Access,
        sandbox_id: &str,
        purpose: Use,
    ) -> Result<Target, SandboxError> {
        let fresh_since = now_ms() - grace_ms(&self.settings);
        let target = match self.routes().live(sandbox_id, fresh_since) {
            Some(route) => {
                if !access.sees(&route.team_id) {
                    return Err(SandboxError::NotFound(sandbox_id.to_owned()));
                }
                note_worker(&route.worker_id);
                let client = self.workers.client(&route.worker_id, &route.address)?;
                Target {
                    client,
                    generation: route.generation,
                    workdir: route.workdir,
                    cached: true,
                }
            }
            None => self.target_from_store(access, sandbox_id).await?,
        };
        if purpose == Use::Work {
            self.activity.touch(sandbox_id);
        }
        Ok(target)
    }

    async fn target_from_store(
        &self,
        access: &Access,
        sandbox_id: &str,
    ) -> Result<Target, SandboxError> {
        let row = self
            .store
            .get_sandbox(sandbox_id)
            .await?
            .filter(|row| access.sees(&row.team_id))
            .ok_or_else(|| SandboxError::NotFound(sandbox_id.to_owned()))?;
        match row.state {
            SandboxState::Running => {}
            SandboxState::Destroyed | SandboxState::Destroying => {
                return Err(SandboxError::Destroyed(sandbox_id.to_owned()));
            }
            SandboxState::Creating => {
                return Err(SandboxError::Conflict(format!(
                    "sandbox {sandbox_id:?} is still being created"
                )));
            }
            SandboxState::Stopped => return Err(super::power::stopped(sandbox_id)),
            other => {
                return Err(SandboxError::Conflict(format!(
                    "sandbox {sandbox_id:?} is {other}: {}",
                    row.error
                )));
            }
        }
        let (Some(worker_id), Some(address), Some(generation), Some(last_heartbeat_ms)) = (
            row.worker_id,
            row.advertise_addr,
            row.generation,
            row.last_heartbeat_ms,
        ) else {
            return Err(SandboxError::Unavailable(format!(
                "sandbox {sandbox_id:?} has no live lease"
            )));
        };
        let fresh_since = now_ms() - grace_ms(&self.settings);
        if last_heartbeat_ms < fresh_since {
            return Err(SandboxError::Unavailable(format!(
                "worker {worker_id:?} holding sandbox {sandbox_id:?} is not heartbeating"
            )));
        }
        note_worker(&worker_id);
        let client = self.workers.client(&worker_id, &address)?;
        let generation = u64::try_from(generation).unwrap_or(0);
        self.routes().remember(
            sandbox_id,
            Route {
                worker_id,
                address,
                generation,
                last_heartbeat_ms,
                team_id: row.team_id,
                workdir: row.workdir.clone(),
            },
        );
        Ok(Target {
            client,
            generation,
            workdir: row.workdir,
            cached: false,
        })
    }

    /// Makes `call` on the lease holder of `sandbox_id`. When a cached route turns out
    /// wrong (the worker does not hold the sandbox, or holds it under a newer lease,
    /// or its address refuses connections: it restarted elsewhere), the route is
    /// forgotten and the call made once more on the lease in the store, so a stale
    /// cache costs one refused call, never a wrong answer. A call that
    /// cannot be repeated (it consumes a stream) goes through [`Self::target`] itself.
    pub(super) async fn on_lease_holder<T, F, Fut>(
        &self,
        access: &Access,
        sandbox_id: &str,
        purpose: Use,
        call: F,
    ) -> Result<T, SandboxError>
    where
        F: Fn(Target) -> Fut,
        Fut: Future<Output = Result<T, RemoteError>>,
    {
        let target = self.target(access, sandbox_id, purpose).await?;
        let cached = target.cached;
        match call(target).await {
            Ok(answer) => Ok(answer),
            Err(err) if cached && (err.route_refused || err.not_sent) => {
                self.routes().forget(sandbox_id);
                let target = self.target_from_store(access, sandbox_id).await?;
                call(target)
                    .await
                    .map_err(|err| self.refused(sandbox_id, err))
            }
            Err(err) => Err(self.refused(sandbox_id, err)),
        }
    }

    /// The worker's refusal as our error; a route the worker refused, or a worker that
    /// cannot be reached, is not used again before the store is asked.
    fn refused(&self, sandbox_id: &str, err: RemoteError) -> SandboxError {
        if err.discredits_route() {
            self.routes().forget(sandbox_id);
        }
        SandboxError::Remote(err)
    }

    /// The exec to send to the lease holder `target`; a call that names no working
    /// directory starts in the sandbox's own.
    fn exec_request(&self, sandbox_id: &str, target: &Target, call: ExecCall) -> ExecRequest {
        let timeout = call
            .timeout
            .unwrap_or(self.settings.limits.default_exec_timeout)
            .min(self.settings.limits.max_exec_timeout);
        ExecRequest {
            sandbox_id: sandbox_id.to_owned(),
            generation: target.generation,
            command: call.command,
            args: call.args,
            argv: call.argv,
            env: call.env,
            workdir: workdir_in(call.workdir, &target.workdir),
            timeout,
            max_output: self.settings.limits.max_exec_output_bytes,
        }
    }

    pub async fn exec(
        &self,
        access: &Access,
        sandbox_id: &str,
        call: ExecCall,
    ) -> Result<ExecOutcome, SandboxError> {
        check_command(&call)?;
        self.on_lease_holder(access, sandbox_id, Use::Work, |target| {
            let request = self.exec_request(sandbox_id, &target, call.clone());
            async move { target.client.exec(request).await }
        })
        .await
    }

    /// Output events as the worker produces them, then one exit or error event.
    /// Dropping the stream cancels the call, and the worker stops the command.
    pub async fn exec_stream(
        &self,
        access: &Access,
        sandbox_id: &str,
        call: ExecCall,
    ) -> Result<ExecEvents, SandboxError> {
        check_command(&call)?;
        self.on_lease_holder(access, sandbox_id, Use::Work, |target| {
            let request = self.exec_request(sandbox_id, &target, call.clone());
            async move { target.client.exec_stream(request).await }
        })
        .await
    }

    /// The last `lines` console lines; with `follow`, new ones as they come (no
    /// deadline: the stream lives until the sandbox ends or the caller leaves).
    pub async fn logs(
        &self,
        access: &Access,
        sandbox_id: &str,
        lines: u32,
        follow: bool,
    ) -> Result<LogLines, SandboxError> {
        self.on_lease_holder(access, sandbox_id, Use::Look, |target| async move {
            target.client.logs(sandbox_id, lines, follow).await
        })
        .await
    }

    /// The file's bytes in chunks; errors after the first chunk arrive in the stream.
    pub async fn read_file(
        &self,
        access: &Access,
        sandbox_id: &str,
        path: &str,
    ) -> Result<FileChunks, SandboxError> {
        self.on_lease_holder(access, sandbox_id, Use::Work, |target| async move {
            target
                .client
                .read_file(sandbox_id, target.generation, path)
                .await
        })
        .await
    }

    /// Streams `data` into the file; no size cap. An error in `data` (the client went
    /// away) cancels the call, so the worker never keeps a truncated file. The data can
    /// be sent once only, so a refused route is not retried here: the caller gets the
    /// refusal and the next call asks the store.
    pub async fn write_file<S>(
        &self,
        access: &Access,
        sandbox_id: &str,
        path: &str,
        mode: u32,
        data: S,
    ) -> Result<u64, SandboxError>
    where
        S: Stream<Item = Result<Vec<u8>, String>> + Send + 'static,
    {
        let target = self.target(access, sandbox_id, Use::Work).await?;
        let written = target
            .client
            .write_file(sandbox_id, target.generation, path, mode, data)
            .await;
        match written {
            Ok(size) => Ok(size),
            Err(WriteFileError::Interrupted(reason)) => Err(SandboxError::BadRequest(format!(
                "upload interrupted: {reason}"
            ))),
            Err(WriteFileError::Remote(err)) => Err(self.refused(sandbox_id, err)),
        }
    }

    pub async fn list_files(
        &self,
        access: &Access,
        sandbox_id: &str,
        path: &str,
    ) -> Result<Vec<FileInfo>, SandboxError> {
        self.on_lease_holder(access, sandbox_id, Use::Work, |target| async move {
            target
                .client
                .list_files(sandbox_id, target.generation, path)
                .await
        })
        .await
    }

    pub async fn stat_file(
        &self,
        access: &Access,
        sandbox_id: &str,
        path: &str,
    ) -> Result<FileInfo, SandboxError> {
        self.on_lease_holder(access, sandbox_id, Use::Work, |target| async move {
            target
                .client
                .stat_file(sandbox_id, target.generation, path)
                .await
        })
        .await
    }

    pub async fn delete_file(
        &self,
        access: &Access,
        sandbox_id: &str,
        path: &str,
        recursive: bool,
    ) -> Result<(), SandboxError> {
        self.on_lease_holder(access, sandbox_id, Use::Work, |target| async move {
            target
                .client
                .delete_file(sandbox_id, target.generation, path, recursive)
                .await
        })
        .await
    }

    pub async fn move_file(
        &self,
        access: &Access,
        sandbox_id: &str,
        old_path: &str,
        new_path: &str,
    ) -> Result<(), SandboxError> {
        self.on_lease_holder(access, sandbox_id, Use::Work, |target| async move {
            target
                .client
                .move_file(sandbox_id, target.generation, old_path, new_path)
                .await
        })
        .await
    }

    pub async fn chmod(
        &self,
        access: &Access,
        sandbox_id: &str,
        path: &str,
        mode: u32,
    ) -> Result<(), SandboxError> {
        if mode > 0o7777 {
            return Err(SandboxError::BadRequest(
                "mode must be at most 0o7777".into(),
            ));
        }
        self.on_lease_holder(access, sandbox_id, Use::Work, |target| async move {
            target
                .client
                .chmod(sandbox_id, target.generation, path, mode)
                .await
        })
        .await
    }

    pub async fn glob(
        &self,
        access: &Access,
        sandbox_id: &str,
        pattern: &str,
    ) -> Result<Vec<String>, SandboxError> {
        if pattern.is_empty() {
            return Err(SandboxError::BadRequest("pattern is empty".into()));
        }
        self.on_lease_holder(access, sandbox_id, Use::Work, |target| async move {
            target.client.glob(sandbox_id, pattern).await
        })
        .await
    }
}

/// Names the worker a call goes to on the caller's span (the API request's).
pub(super) fn note_worker(worker_id: &str) {
    tracing::Span::current().record("worker_id", worker_id);
}

fn check_command(call: &ExecCall) -> Result<(), SandboxError> {
    if call.command.trim().is_empty() {
        return Err(SandboxError::BadRequest("command is empty".into()));
    }
    Ok(())
}
