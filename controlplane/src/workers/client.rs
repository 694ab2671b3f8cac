//! Typed calls to one worker. Each call converts its domain request to the mesh's
//! protobuf, sets its deadline, and converts the answer back, mapping a failure once
//! through [`RemoteError::from_status`]. Streams come back as streams of domain
//! values; dropping one cancels the call, and the worker stops what it was doing
//! (a session's stream excepted: see [`sessions`]).

mod ports;
mod sessions;

use std::time::Duration;

use berth_proto::ErrorCode;
use berth_proto::v1 as pb;
use berth_proto::v1::worker_service_client::WorkerServiceClient;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use tonic::transport::Channel;

use super::RemoteError;
use super::error::is_transport_failure;
use super::model::{
    BuiltImage, ExecEvent, ExecOutcome, ExecRequest, FileInfo, ImageBuild, LoadedImages, LogLine,
    ProviderHealth, SpawnSpec, Spawned,
};

pub use ports::{PortConnection, PortIo};
pub use sessions::{SessionEvents, SessionStream};

/// Deadline of quick calls (files, status).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Extra time on top of an exec's own timeout for the round trip.
const EXEC_MARGIN: Duration = Duration::from_secs(10);

/// Output events, then exactly one terminal event ([`ExecEvent::is_terminal`]); a
/// broken call or a stream the worker ended early becomes the terminal `Failed`.
pub type ExecEvents = BoxStream<'static, ExecEvent>;
/// Console lines; an error ends the stream.
pub type LogLines = BoxStream<'static, Result<LogLine, RemoteError>>;
/// A file's bytes in chunks; an error ends the stream.
pub type FileChunks = BoxStream<'static, Result<Vec<u8>, RemoteError>>;

/// Why an upload did not land.
#[derive(Debug, thiserror::Error)]
pub enum WriteFileError {
    /// The data stream failed (the client went away); the worker kept nothing.
    #[error("upload interrupted: {0}")]
    Interrupted(String),
    #[error(transparent)]
    Remote(#[from] RemoteError),
}

/// Calls to one worker over its (shared, cheaply cloned) channel.
#[derive(Debug, Clone)]
pub struct WorkerClient {
    worker_id: String,
    inner: WorkerServiceClient<Channel>,
}

impl WorkerClient {
    pub(super) fn new(worker_id: &str, channel: Channel) -> Self {
        Self {
            worker_id: worker_id.to_owned(),
            inner: WorkerServiceClient::new(channel)
                .max_decoding_message_size(berth_proto::MAX_MESH_MESSAGE),
        }
    }

    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    fn error(&self, status: &tonic::Status) -> RemoteError {
        RemoteError::from_status(&self.worker_id, status)
    }

    /// A call without side effects (a read), made once more on a fresh connection if
    /// the first failed in the transport (e.g. the connection was closed by a
    /// `GOAWAY`). Calls that change something are never sent twice: the worker may
    /// have acted on the first one.
    async fn read_only<T, F, Fut>(&self, call: F) -> Result<T, RemoteError>
    where
        F: Fn(WorkerServiceClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        retry_once(&self.worker_id, || call(self.inner.clone()))
            .await
            .map_err(|status| self.error(&status))
    }

    pub async fn spawn(
        &self,
        spec: SpawnSpec,
        generation: u64,
        timeout: Duration,
    ) -> Result<Spawned, RemoteError> {
        let request = pb::SpawnRequest {
            spec: Some(pb::SandboxSpec {
                sandbox_id: spec.sandbox_id,
                image: spec.image,
                provider: spec.provider,
                vcpus: spec.vcpus,
                memory_mb: spec.memory_mb,
                metadata: spec.metadata.into_iter().collect(),
                env: spec.env.into_iter().chain(spec.secrets.0).collect(),
                internet: Some(spec.internet),
                services: spec
                    .services
                    .into_iter()
                    .map(|service| pb::ServiceSpec {
                        name: service.name,
                        image: service.image,
                        env: service.env.into_iter().collect(),
                        command: service.command,
                        ports: service.ports.into_iter().map(u32::from).collect(),
                    })
                    .collect(),
            }),
            generation,
        };
        let answer = self
            .inner
            .clone()
            .spawn(timed(request, timeout))
            .await
            .map_err(|status| self.error(&status))?
            .into_inner();
        Ok(Spawned {
            vm_id: answer.vm_id,
            services_ms: answer.services_ms,
        })
    }

    /// Builds an image on the worker, or finds it built already.
    pub async fn build_image(
        &self,
        build: ImageBuild,
        timeout: Duration,
    ) -> Result<BuiltImage, RemoteError> {
        let request = pb::BuildImageRequest {
            base: build.base,
            packages: build.packages,
            on_create: build.on_create,
        };
        let answer = self
            .inner
            .clone()
            .build_image(timed(request, timeout))
            .await
            .map_err(|status| self.error(&status))?
            .into_inner();
        Ok(BuiltImage {
            image: answer.image,
            built: answer.built,
            build_ms: answer.build_ms,
        })
    }

    pub async fn destroy(
        &self,
        sandbox_id: &str,
        generation: u64,
        timeout: Duration,
    ) -> Result<(), RemoteError> {
        let request = pb::DestroyRequest {
            sandbox_id: sandbox_id.to_owned(),
            generation,
        };
        self.inner
            .clone()
            .destroy(timed(request, timeout))
            .await
            .map_err(|status| self.error(&status))?;
        Ok(())
    }

    /// Stops the sandbox (its processes end, its filesystem stays); idempotent.
    pub async fn stop(
        &self,
        sandbox_id: &str,
        generation: u64,
        timeout: Duration,
    ) -> Result<(), RemoteError> {
        let request = pb::StopRequest {
            sandbox_id: sandbox_id.to_owned(),
            generation,
        };
        self.inner
            .clone()
            .stop(timed(request, timeout))
            .await
            .map_err(|status| self.error(&status))?;
        Ok(())
    }

    /// Starts a stopped sandbox again; idempotent.
    pub async fn start(
        &self,
        sandbox_id: &str,
        generation: u64,
        timeout: Duration,
    ) -> Result<(), RemoteError> {
        let request = pb::StartRequest {
            sandbox_id: sandbox_id.to_owned(),
            generation,
        };
        self.inner
            .clone()
            .start(timed(request, timeout))
            .await
            .map_err(|status| self.error(&status))?;
        Ok(())
    }

    pub async fn exec(&self, request: ExecRequest) -> Result<ExecOutcome, RemoteError> {
        let max_output = request.max_output;
        let (request, timeout) = exec_request(request);
        let answer = self
            .inner
            .clone()
            .exec(timed(request, timeout + EXEC_MARGIN))
            .await
            .map_err(|status| self.error(&status))?
            .into_inner();
        let outcome = ExecOutcome {
            exit_code: answer.exit_code,
            stdout: answer.stdout,
            stderr: answer.stderr,
            duration_ms: answer.duration_ms,
            truncated: answer.truncated,
        };
        Ok(outcome.limit(max_output))
    }

    pub async fn exec_stream(&self, request: ExecRequest) -> Result<ExecEvents, RemoteError> {
        let (request, timeout) = exec_request(request);
        let events = self
            .inner
            .clone()
            .exec_stream(timed(request, timeout + EXEC_MARGIN))
            .await
            .map_err(|status| self.error(&status))?
            .into_inner();
        Ok(exec_events(self.worker_id.clone(), events))
    }

    /// The last `tail_lines` console lines; with `follow`, new ones as they come (no
    /// deadline: the stream lives until the sandbox ends or the caller leaves).
    pub async fn logs(
        &self,
        sandbox_id: &str,
        tail_lines: u32,
        follow: bool,
    ) -> Result<LogLines, RemoteError> {
        let lines = self
            .read_only(|mut inner| async move {
                let mut request = tonic::Request::new(pb::WorkerLogsRequest {
                    sandbox_id: sandbox_id.to_owned(),
                    tail_lines,
                    follow,
                });
                if !follow {
                    request.set_timeout(CALL_TIMEOUT);
                }
                inner.logs(request).await
            })
            .await?
            .into_inner();
        let worker_id = self.worker_id.clone();
        Ok(lines
            .map(move |line| {
                line.map(|line| LogLine {
                    line: line.line,
                    time_ms: line.time_ms,
                })
                .map_err(|status| RemoteError::from_status(&worker_id, &status))
            })
            .boxed())
    }

    /// The file's bytes; errors after the first chunk arrive in the stream.
    pub async fn read_file(
        &self,
        sandbox_id: &str,
        generation: u64,
        path: &str,
    ) -> Result<FileChunks, RemoteError> {
        let chunks = self
            .read_only(|mut inner| async move {
                let request = tonic::Request::new(file_request(sandbox_id, generation, path));
                inner.read_file(request).await
            })
            .await?
            .into_inner();
        let worker_id = self.worker_id.clone();
        Ok(chunks
            .map(move |chunk| {
                chunk
                    .map(|chunk| chunk.data)
                    .map_err(|status| RemoteError::from_status(&worker_id, &status))
            })
            .boxed())
    }

    /// Streams `data` into the file; answers its size. An error in `data` (the client
    /// went away) cancels the call, so the worker never keeps a truncated file.
    pub async fn write_file<S>(
        &self,
        sandbox_id: &str,
        generation: u64,
        path: &str,
        mode: u32,
        data: S,
    ) -> Result<u64, WriteFileError>
    where
        S: Stream<Item = Result<Vec<u8>, String>> + Send + 'static,
    {
        use pb::write_file_chunk::Part;
        let header = pb::WriteFileChunk {
            part: Some(Part::Header(pb::WriteFileHeader {
                sandbox_id: sandbox_id.to_owned(),
                generation,
                path: path.to_owned(),
                mode,
            })),
        };
        let (outgoing, failed) = upload_stream(
            data,
            |bytes| pb::WriteFileChunk {
                part: Some(Part::Data(bytes)),
            },
            // the worker commits only after this: a cancelled call never ends with it
            pb::WriteFileChunk {
                part: Some(Part::End(pb::WriteFileEnd {})),
            },
        );
        let outgoing = futures::stream::iter([header]).chain(outgoing);
        let mut inner = self.inner.clone();
        let call = inner.write_file(tonic::Request::new(outgoing));
        tokio::select! {
            answer = call => answer
                .map(|answer| answer.into_inner().size)
                .map_err(|status| WriteFileError::Remote(self.error(&status))),
            reason = failed => Err(WriteFileError::Interrupted(reason)),
        }
    }

    /// Streams a `docker save` archive to the worker, which loads its images; the
    /// images and the archive's size. A `data` that fails stops the call without the
    /// end message, so the worker loads nothing.
    pub async fn load_images<S>(&self, data: S) -> Result<LoadedImages, WriteFileError>
    where
        S: Stream<Item = Result<Vec<u8>, String>> + Send + 'static,
    {
        use pb::image_archive_chunk::Part;
        let (outgoing, failed) = upload_stream(
            data,
            |bytes| pb::ImageArchiveChunk {
                part: Some(Part::Data(bytes)),
            },
            pb::ImageArchiveChunk {
                part: Some(Part::End(pb::ImageArchiveEnd {})),
            },
        );
        let mut inner = self.inner.clone();
        let call = inner.load_images(tonic::Request::new(outgoing));
        tokio::select! {
            answer = call => answer
                .map(|answer| {
                    let answer = answer.into_inner();
                    LoadedImages { images: answer.images, bytes: answer.bytes }
                })
                .map_err(|status| WriteFileError::Remote(self.error(&status))),
            reason = failed => Err(WriteFileError::Interrupted(reason)),
        }
    }

    pub async fn list_files(
        &self,
        sandbox_id: &str,
        generation: u64,
        path: &str,
    ) -> Result<Vec<FileInfo>, RemoteError> {
        let answer = self
            .read_only(|mut inner| async move {
                let request = timed(file_request(sandbox_id, generation, path), CALL_TIMEOUT);
                inner.list_files(request).await
            })
            .await?
            .into_inner();
        Ok(answer.files.into_iter().map(file_info).collect())
    }

    pub async fn stat_file(
        &self,
        sandbox_id: &str,
        generation: u64,
        path: &str,
    ) -> Result<FileInfo, RemoteError> {
        let answer = self
            .read_only(|mut inner| async move {
                let request = timed(file_request(sandbox_id, generation, path), CALL_TIMEOUT);
                inner.stat_file(request).await
            })
            .await?
            .into_inner();
        Ok(file_info(answer))
    }

    pub async fn delete_file(
        &self,
        sandbox_id: &str,
        generation: u64,
        path: &str,
        recursive: bool,
    ) -> Result<(), RemoteError> {
        let request = pb::WorkerDeleteFileRequest {
            sandbox_id: sandbox_id.to_owned(),
            generation,
            path: path.to_owned(),
            recursive,
        };
        self.inner
            .clone()
            .delete_file(timed(request, CALL_TIMEOUT))
            .await
            .map_err(|status| self.error(&status))?;
        Ok(())
    }

    pub async fn move_file(
        &self,
        sandbox_id: &str,
        generation: u64,
        old_path: &str,
        new_path: &str,
    ) -> Result<(), RemoteError> {
        let request = pb::WorkerMoveFileRequest {
            sandbox_id: sandbox_id.to_owned(),
            generation,
            old_path: old_path.to_owned(),
            new_path: new_path.to_owned(),
        };
        self.inner
            .clone()
            .move_file(timed(request, CALL_TIMEOUT))
            .await
            .map_err(|status| self.error(&status))?;
        Ok(())
    }

    pub async fn chmod(
        &self,
        sandbox_id: &str,
        generation: u64,
        path: &str,
        mode: u32,
    ) -> Result<(), RemoteError> {
        let request = pb::WorkerChmodRequest {
            sandbox_id: sandbox_id.to_owned(),
            generation,
            path: path.to_owned(),
            mode,
        };
        self.inner
            .clone()
            .chmod(timed(request, CALL_TIMEOUT))
            .await
            .map_err(|status| self.error(&status))?;
        Ok(())
    }

    /// The health of the worker's providers, asked now (not what its last
    /// heartbeat said), within `timeout`.
    pub async fn provider_health(
        &self,
        timeout: Duration,
    ) -> Result<Vec<ProviderHealth>, RemoteError> {
        let answer = self
            .inner
            .clone()
            .status(timed(pb::StatusRequest::default(), timeout))
            .await
            .map_err(|status| self.error(&status))?
            .into_inner();
        Ok(answer
            .providers
            .into_iter()
            .map(|p| ProviderHealth {
                name: p.name,
                healthy: p.healthy,
                message: p.message,
            })
            .collect())
    }

    pub async fn glob(&self, sandbox_id: &str, pattern: &str) -> Result<Vec<String>, RemoteError> {
        let answer = self
            .read_only(|mut inner| async move {
                let request = pb::WorkerGlobRequest {
                    sandbox_id: sandbox_id.to_owned(),
                    pattern: pattern.to_owned(),
                };
                inner.glob(timed(request, CALL_TIMEOUT)).await
            })
            .await?
            .into_inner();
        Ok(answer.paths)
    }
}

/// Runs `call`, and once more if it failed in the transport.
async fn retry_once<T, F, Fut>(worker_id: &str, call: F) -> Result<T, tonic::Status>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    match call().await {
        Err(status) if is_transport_failure(&status) => {
            tracing::info!(%worker_id, error = %status, "read failed in the transport; trying again once");
            call().await
        }
        answered => answered,
    }
}

/// `message` as a request with a deadline.
fn timed<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

fn file_request(sandbox_id: &str, generation: u64, path: &str) -> pb::WorkerFileRequest {
    pb::WorkerFileRequest {
        sandbox_id: sandbox_id.to_owned(),
        generation,
        path: path.to_owned(),
    }
}

fn exec_request(request: ExecRequest) -> (pb::WorkerExecRequest, Duration) {
    let timeout = request.timeout;
    let mode = if request.argv {
        pb::ExecMode::Argv
    } else {
        pb::ExecMode::Shell
    };
    let message = pb::WorkerExecRequest {
        sandbox_id: request.sandbox_id,
        generation: request.generation,
        command: request.command,
        args: request.args,
        mode: mode as i32,
        env: request.env.into_iter().collect(),
        workdir: request.workdir,
        timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        max_output_bytes: u64::try_from(request.max_output).unwrap_or(u64::MAX),
    };
    (message, timeout)
}

fn file_info(info: pb::FileInfo) -> FileInfo {
    FileInfo {
        path: info.path,
        size: info.size,
        mode: info.mode,
        is_dir: info.is_dir,
        mod_time: info.mod_time,
    }
}

/// The worker's events as domain events, ending with exactly one terminal event.
fn exec_events(worker_id: String, events: tonic::Streaming<pb::ExecEvent>) -> ExecEvents {
    // the worker id rides in the state, so an output chunk costs no copy of it
    futures::stream::unfold(Some((events, worker_id)), |state| async move {
        let (mut events, worker_id) = state?;
        loop {
            let event = match events.next().await {
                Some(Ok(pb::ExecEvent { event: Some(event) })) => exec_event(event),
                Some(Ok(pb::ExecEvent { event: None })) => continue,
                Some(Err(status)) => {
                    let err = RemoteError::from_status(&worker_id, &status);
                    ExecEvent::Failed {
                        code: err.code,
                        message: err.message,
                    }
                }
                None => ExecEvent::Failed {
                    code: ErrorCode::Unavailable,
                    message: "the worker ended the stream without an exit status".into(),
                },
            };
            let rest = (!event.is_terminal()).then_some((events, worker_id));
            return Some((event, rest));
        }
    })
    .boxed()
}

fn exec_event(event: pb::exec_event::Event) -> ExecEvent {
    use pb::exec_event::Event;
    match event {
        Event::Stdout(data) => ExecEvent::Stdout(data),
        Event::Stderr(data) => ExecEvent::Stderr(data),
        Event::Exit(exit) => ExecEvent::Exit {
            exit_code: exit.exit_code,
            duration_ms: exit.duration_ms,
        },
        Event::Error(err) => ExecEvent::Failed {
            code: ErrorCode::from_name(&err.code).unwrap_or(ErrorCode::Internal),
            message: err.message,
        },
    }
}

/// The messages of a client-streaming upload: each chunk of `data` wrapped, then `end`
/// once `data` is done. When `data` fails the stream never ends (ending it would
/// deliver a truncated upload as whole) and the returned future resolves with the
/// reason, for the caller to drop the call.
fn upload_stream<T, S>(
    data: S,
    wrap: fn(Vec<u8>) -> T,
    end: T,
) -> (
    impl Stream<Item = T> + Send + 'static,
    impl std::future::Future<Output = String> + Send + 'static,
)
where
    T: Send + 'static,
    S: Stream<Item = Result<Vec<u8>, String>> + Send + 'static,
{
    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<String>();
    let body = futures::stream::unfold(
        (Box::pin(data), Some(failed_tx)),
        move |(mut data, mut failed_tx)| async move {
            match data.next().await {
                Some(Ok(bytes)) => Some((wrap(bytes), (data, failed_tx))),
                Some(Err(err)) => {
                    if let Some(tx) = failed_tx.take() {
                        let _ = tx.send(err);
                    }
                    std::future::pending().await
                }
                None => None,
            }
        },
    );
    // resolves only when the data stream failed; a finished stream drops the sender
    let failed = async move {
        match failed_rx.await {
            Ok(reason) => reason,
            Err(_) => std::future::pending().await,
        }
    };
    (body.chain(futures::stream::iter([end])), failed)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn connection_closed() -> tonic::Status {
        let mut status = tonic::Status::resource_exhausted("h2 protocol error: http2 error");
        status.set_source(Arc::new(std::io::Error::other("GOAWAY")));
        status
    }

    #[tokio::test]
    async fn a_read_that_failed_in_the_transport_is_tried_once_more() {
        let calls = AtomicUsize::new(0);
        let answer = retry_once("w1", || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 => Err(connection_closed()),
                _ => Ok("answer"),
            }
        })
        .await;
        assert_eq!(answer.unwrap(), "answer");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn only_once_and_only_for_transport_failures() {
        let calls = AtomicUsize::new(0);
        let failed = retry_once("w1", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(connection_closed())
        })
        .await;
        assert!(failed.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        let calls = AtomicUsize::new(0);
        let answered = retry_once("w1", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(tonic::Status::not_found("no such file"))
        })
        .await;
        assert_eq!(answered.unwrap_err().code(), tonic::Code::NotFound);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "a worker's answer is final"
        );
    }
}
