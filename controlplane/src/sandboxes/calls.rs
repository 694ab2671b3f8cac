//! Calls routed to the worker holding a sandbox's lease: exec (whole or streamed),
//! logs, and files. Mutating calls carry the lease generation so the worker can fence
//! out a stale control plane; every call has a deadline.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use berth_proto::v1 as pb;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use tonic::Streaming;

use super::{SandboxError, Sandboxes, grace_ms};
use crate::clock::now_ms;
use crate::router::{Route, WorkerClient, is_route_refusal, remote_error};
use crate::store::SandboxState;

/// Deadline of quick calls (files, status).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Extra time on top of an exec's own timeout for the round trip.
const EXEC_MARGIN: Duration = Duration::from_secs(10);

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
        if self.argv {
            let mut argv = vec![self.command.clone()];
            argv.extend(self.args.iter().cloned());
            return serde_json::to_string(&argv).unwrap_or_default();
        }
        berth_proto::shell::shell_line(&self.command, &self.args)
    }
}

#[derive(Debug, Clone)]
pub struct ExecOutcome {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub duration_ms: u64,
}

/// The lease holder of a live sandbox.
struct Target {
    worker_id: String,
    client: WorkerClient,
    generation: u64,
    /// Taken from the route cache rather than read from the store just now.
    cached: bool,
}

impl Sandboxes {
    /// Where calls for `sandbox_id` go: the cached route when it is fresh, else the
    /// lease in the store (which is then cached).
    async fn target(&self, sandbox_id: &str) -> Result<Target, SandboxError> {
        let fresh_since = now_ms() - grace_ms(&self.settings);
        if let Some(route) = self.routes().live(sandbox_id, fresh_since) {
            let client = self
                .channels
                .client(&route.worker_id, &route.address)
                .map_err(SandboxError::Remote)?;
            return Ok(Target {
                worker_id: route.worker_id,
                client,
                generation: route.generation,
                cached: true,
            });
        }
        self.target_from_store(sandbox_id).await
    }

    async fn target_from_store(&self, sandbox_id: &str) -> Result<Target, SandboxError> {
        let row = self
            .store
            .get_sandbox(sandbox_id)
            .await?
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
        let client = self
            .channels
            .client(&worker_id, &address)
            .map_err(SandboxError::Remote)?;
        let generation = u64::try_from(generation).unwrap_or(0);
        self.routes().remember(
            sandbox_id,
            Route {
                worker_id: worker_id.clone(),
                address,
                generation,
                last_heartbeat_ms,
            },
        );
        Ok(Target {
            worker_id,
            client,
            generation,
            cached: false,
        })
    }

    /// Makes `call` on the lease holder of `sandbox_id`. When a cached route turns out
    /// wrong (the worker does not hold the sandbox, or holds it under a newer lease),
    /// the route is forgotten and the call made once more on the lease in the store,
    /// so a stale cache costs one refused call, never a wrong answer. A call that
    /// cannot be repeated (it consumes a stream) goes through [`Self::target`] itself.
    async fn on_lease_holder<T, F, Fut>(&self, sandbox_id: &str, call: F) -> Result<T, SandboxError>
    where
        F: Fn(Target) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let target = self.target(sandbox_id).await?;
        let (worker_id, cached) = (target.worker_id.clone(), target.cached);
        match call(target).await {
            Ok(answer) => Ok(answer),
            Err(status) if cached && is_route_refusal(&status) => {
                self.routes().forget(sandbox_id);
                let target = self.target_from_store(sandbox_id).await?;
                let worker_id = target.worker_id.clone();
                call(target)
                    .await
                    .map_err(|status| self.refused(sandbox_id, &worker_id, &status))
            }
            Err(status) => Err(self.refused(sandbox_id, &worker_id, &status)),
        }
    }

    /// The worker's refusal as our error; a route the worker refused, or a worker that
    /// cannot be reached, is not used again before the store is asked.
    fn refused(&self, sandbox_id: &str, worker_id: &str, status: &tonic::Status) -> SandboxError {
        if is_route_refusal(status)
            || matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
            )
        {
            self.routes().forget(sandbox_id);
        }
        SandboxError::Remote(remote_error(worker_id, status))
    }

    fn exec_request(
        &self,
        sandbox_id: &str,
        generation: u64,
        call: ExecCall,
    ) -> (pb::WorkerExecRequest, Duration) {
        let timeout = call
            .timeout
            .unwrap_or(self.settings.limits.default_exec_timeout)
            .min(self.settings.limits.max_exec_timeout);
        let request = pb::WorkerExecRequest {
            sandbox_id: sandbox_id.to_owned(),
            generation,
            command: call.command,
            args: call.args,
            mode: if call.argv {
                pb::ExecMode::Argv as i32
            } else {
                pb::ExecMode::Shell as i32
            },
            env: call.env.into_iter().collect(),
            workdir: call.workdir,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        (request, timeout)
    }

    pub async fn exec(
        &self,
        sandbox_id: &str,
        call: ExecCall,
    ) -> Result<ExecOutcome, SandboxError> {
        check_command(&call)?;
        let answer = self
            .on_lease_holder(sandbox_id, |mut target| {
                let (request, timeout) =
                    self.exec_request(sandbox_id, target.generation, call.clone());
                let mut request = tonic::Request::new(request);
                request.set_timeout(timeout + EXEC_MARGIN);
                async move { target.client.exec(request).await }
            })
            .await?
            .into_inner();
        Ok(ExecOutcome {
            exit_code: answer.exit_code,
            stdout: answer.stdout,
            stderr: answer.stderr,
            duration_ms: answer.duration_ms,
        })
    }

    /// Output events as the worker produces them, then one exit or error event.
    /// Dropping the stream cancels the call, and the worker stops the command.
    pub async fn exec_stream(
        &self,
        sandbox_id: &str,
        call: ExecCall,
    ) -> Result<Streaming<pb::ExecEvent>, SandboxError> {
        check_command(&call)?;
        self.on_lease_holder(sandbox_id, |mut target| {
            let (request, timeout) = self.exec_request(sandbox_id, target.generation, call.clone());
            let mut request = tonic::Request::new(request);
            request.set_timeout(timeout + EXEC_MARGIN);
            async move { target.client.exec_stream(request).await }
        })
        .await
        .map(tonic::Response::into_inner)
    }

    /// The last `lines` console lines; with `follow`, new ones as they come (no
    /// deadline: the stream lives until the sandbox ends or the caller leaves).
    pub async fn logs(
        &self,
        sandbox_id: &str,
        lines: u32,
        follow: bool,
    ) -> Result<Streaming<pb::LogLine>, SandboxError> {
        self.on_lease_holder(sandbox_id, |mut target| {
            let mut request = tonic::Request::new(pb::WorkerLogsRequest {
                sandbox_id: sandbox_id.to_owned(),
                tail_lines: lines,
                follow,
            });
            if !follow {
                request.set_timeout(CALL_TIMEOUT);
            }
            async move { target.client.logs(request).await }
        })
        .await
        .map(tonic::Response::into_inner)
    }

    /// The file's bytes in chunks; errors after the first chunk arrive in the stream.
    pub async fn read_file(
        &self,
        sandbox_id: &str,
        path: &str,
    ) -> Result<BoxStream<'static, Result<Vec<u8>, SandboxError>>, SandboxError> {
        let (worker_id, stream) = self
            .on_lease_holder(sandbox_id, |mut target| {
                let request = tonic::Request::new(pb::WorkerFileRequest {
                    sandbox_id: sandbox_id.to_owned(),
                    generation: target.generation,
                    path: path.to_owned(),
                });
                async move {
                    let stream = target.client.read_file(request).await?.into_inner();
                    Ok((target.worker_id, stream))
                }
            })
            .await?;
        Ok(stream
            .map(move |chunk| {
                chunk
                    .map(|chunk| chunk.data)
                    .map_err(|status| SandboxError::Remote(remote_error(&worker_id, &status)))
            })
            .boxed())
    }

    /// Streams `data` into the file; no size cap. An error in `data` (the client went
    /// away) cancels the call, so the worker never keeps a truncated file. The data can
    /// be sent once only, so a refused route is not retried here: the caller gets the
    /// refusal and the next call asks the store.
    pub async fn write_file<S>(
        &self,
        sandbox_id: &str,
        path: &str,
        mode: u32,
        data: S,
    ) -> Result<u64, SandboxError>
    where
        S: Stream<Item = Result<Vec<u8>, String>> + Send + 'static,
    {
        use pb::write_file_chunk::Part;
        let mut target = self.target(sandbox_id).await?;
        let header = pb::WriteFileChunk {
            part: Some(Part::Header(pb::WriteFileHeader {
                sandbox_id: sandbox_id.to_owned(),
                generation: target.generation,
                path: path.to_owned(),
                mode,
            })),
        };
        let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<String>();
        let body = futures::stream::unfold(
            (Box::pin(data), Some(failed_tx)),
            |(mut data, mut failed_tx)| async move {
                match data.next().await {
                    Some(Ok(bytes)) => {
                        let chunk = pb::WriteFileChunk {
                            part: Some(Part::Data(bytes)),
                        };
                        Some((chunk, (data, failed_tx)))
                    }
                    Some(Err(err)) => {
                        if let Some(tx) = failed_tx.take() {
                            let _ = tx.send(err);
                        }
                        // never end the stream: ending it would commit a truncated
                        // file; the call is dropped below instead
                        std::future::pending().await
                    }
                    None => None,
                }
            },
        );
        let outgoing = futures::stream::iter([header]).chain(body);
        let worker_id = target.worker_id.clone();
        let call = target.client.write_file(tonic::Request::new(outgoing));
        // resolves only when the data stream failed; a finished stream drops the sender
        let failed = async move {
            match failed_rx.await {
                Ok(reason) => reason,
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            answer = call => answer
                .map(|answer| answer.into_inner().size)
                .map_err(|status| self.refused(sandbox_id, &worker_id, &status)),
            reason = failed => Err(SandboxError::BadRequest(format!("upload interrupted: {reason}"))),
        }
    }

    pub async fn list_files(
        &self,
        sandbox_id: &str,
        path: &str,
    ) -> Result<Vec<pb::FileInfo>, SandboxError> {
        let answer = self
            .on_lease_holder(sandbox_id, |mut target| {
                let request = timed(pb::WorkerFileRequest {
                    sandbox_id: sandbox_id.to_owned(),
                    generation: target.generation,
                    path: path.to_owned(),
                });
                async move { target.client.list_files(request).await }
            })
            .await?;
        Ok(answer.into_inner().files)
    }

    pub async fn stat_file(
        &self,
        sandbox_id: &str,
        path: &str,
    ) -> Result<pb::FileInfo, SandboxError> {
        let answer = self
            .on_lease_holder(sandbox_id, |mut target| {
                let request = timed(pb::WorkerFileRequest {
                    sandbox_id: sandbox_id.to_owned(),
                    generation: target.generation,
                    path: path.to_owned(),
                });
                async move { target.client.stat_file(request).await }
            })
            .await?;
        Ok(answer.into_inner())
    }

    pub async fn delete_file(
        &self,
        sandbox_id: &str,
        path: &str,
        recursive: bool,
    ) -> Result<(), SandboxError> {
        self.on_lease_holder(sandbox_id, |mut target| {
            let request = timed(pb::WorkerDeleteFileRequest {
                sandbox_id: sandbox_id.to_owned(),
                generation: target.generation,
                path: path.to_owned(),
                recursive,
            });
            async move { target.client.delete_file(request).await }
        })
        .await?;
        Ok(())
    }

    pub async fn move_file(
        &self,
        sandbox_id: &str,
        old_path: &str,
        new_path: &str,
    ) -> Result<(), SandboxError> {
        self.on_lease_holder(sandbox_id, |mut target| {
            let request = timed(pb::WorkerMoveFileRequest {
                sandbox_id: sandbox_id.to_owned(),
                generation: target.generation,
                old_path: old_path.to_owned(),
                new_path: new_path.to_owned(),
            });
            async move { target.client.move_file(request).await }
        })
        .await?;
        Ok(())
    }

    pub async fn chmod(&self, sandbox_id: &str, path: &str, mode: u32) -> Result<(), SandboxError> {
        if mode > 0o7777 {
            return Err(SandboxError::BadRequest(
                "mode must be at most 0o7777".into(),
            ));
        }
        self.on_lease_holder(sandbox_id, |mut target| {
            let request = timed(pb::WorkerChmodRequest {
                sandbox_id: sandbox_id.to_owned(),
                generation: target.generation,
                path: path.to_owned(),
                mode,
            });
            async move { target.client.chmod(request).await }
        })
        .await?;
        Ok(())
    }

    pub async fn glob(&self, sandbox_id: &str, pattern: &str) -> Result<Vec<String>, SandboxError> {
        if pattern.is_empty() {
            return Err(SandboxError::BadRequest("pattern is empty".into()));
        }
        let answer = self
            .on_lease_holder(sandbox_id, |mut target| {
                let request = timed(pb::WorkerGlobRequest {
                    sandbox_id: sandbox_id.to_owned(),
                    pattern: pattern.to_owned(),
                });
                async move { target.client.glob(request).await }
            })
            .await?;
        Ok(answer.into_inner().paths)
    }
}

/// `message` as a request with the deadline of quick calls.
fn timed<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}

fn check_command(call: &ExecCall) -> Result<(), SandboxError> {
    if call.command.trim().is_empty() {
        return Err(SandboxError::BadRequest("command is empty".into()));
    }
    Ok(())
}
