//! `berth.v1.WorkerService`, served to the control plane only (the server config
//! refuses any other client identity at the handshake). Each call is fenced by lease
//! generation when it mutates, converted to domain types, and handed to the provider.
//! Each call runs in a span named after it carrying `worker_id` and `sandbox_id`, so
//! what the provider logs on its behalf (in its background tasks too) carries them.

mod ports;
mod sessions;
mod status;

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use berth_proto::v1 as pb;
use berth_proto::v1::worker_service_server::WorkerService;
use futures::{Stream, StreamExt};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

pub use status::provider_codes;

use crate::metrics::{OutcomeLabels, WorkerMetrics};
use crate::provider::{ExecEvent, ExecMode, ExecSpec, SandboxSpec};
use crate::runtime::Runtime;

/// Longest exec a caller may ask for.
const MAX_EXEC_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// Used when a caller names none.
const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(300);

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[derive(Debug, Clone)]
pub(crate) struct WorkerGrpc {
    runtime: Arc<Runtime>,
}

impl WorkerGrpc {
    pub(crate) fn new(runtime: Arc<Runtime>) -> Self {
        Self { runtime }
    }

    /// Lets a mutating call through if its lease generation is in force; the raised
    /// fence is durable before it returns.
    async fn admit(&self, sandbox_id: &str, generation: u64) -> Result<(), Status> {
        self.runtime
            .fences
            .admit(sandbox_id, generation)
            .await
            .map_err(|err| {
                self.runtime.metrics.fence_refusals.inc();
                status::from_fence(err)
            })
    }

    fn count<T, E>(&self, family: &Family<OutcomeLabels, Counter>, result: &Result<T, E>) {
        WorkerMetrics::count(family, if result.is_ok() { "ok" } else { "failed" });
    }
}

fn exec_spec(request: &pb::WorkerExecRequest) -> Result<ExecSpec, Status> {
    if request.command.is_empty() {
        return Err(status::bad_request("command is empty"));
    }
    let timeout = match request.timeout_ms {
        0 => DEFAULT_EXEC_TIMEOUT,
        ms => Duration::from_millis(ms).min(MAX_EXEC_TIMEOUT),
    };
    Ok(ExecSpec {
        command: request.command.clone(),
        args: request.args.clone(),
        mode: match pb::ExecMode::try_from(request.mode) {
            Ok(pb::ExecMode::Argv) => ExecMode::Argv,
            _ => ExecMode::Shell,
        },
        env: request.env.clone().into_iter().collect(),
        workdir: Some(request.workdir.clone()).filter(|w| !w.is_empty()),
        timeout,
    })
}

/// The output a whole exec may collect: what the caller asks for (0: no opinion), never
/// more than this worker's own ceiling.
fn exec_output_limit(requested: u64, ceiling: usize) -> usize {
    match usize::try_from(requested) {
        Ok(0) | Err(_) => ceiling,
        Ok(requested) => requested.min(ceiling),
    }
}

fn exec_event(event: ExecEvent) -> pb::ExecEvent {
    use pb::exec_event::Event;
    let event = match event {
        ExecEvent::Stdout(data) => Event::Stdout(data),
        ExecEvent::Stderr(data) => Event::Stderr(data),
        ExecEvent::Exit { code, duration } => Event::Exit(pb::ExecExit {
            exit_code: code,
            duration_ms: duration_ms(duration),
        }),
        ExecEvent::Failed(err) => {
            let (_, code) = provider_codes(&err);
            Event::Error(pb::ExecError {
                code: code.as_str().to_owned(),
                message: err.to_string(),
            })
        }
    };
    pb::ExecEvent { event: Some(event) }
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn file_info(info: crate::provider::FileInfo) -> pb::FileInfo {
    pb::FileInfo {
        path: info.path,
        size: info.size,
        mode: info.mode,
        is_dir: info.is_dir,
        mod_time: info.mod_time,
    }
}

/// One message of a chunked upload (a file, an image archive), as [`chunks`] reads it.
enum Piece {
    Data(Vec<u8>),
    End,
    /// Not data and not the end (a second header, an empty message).
    Other,
}

/// The data chunks of an upload, for the provider. The upload is whole only when the
/// sender's `end` message came: a stream that just stops (tonic ends the request stream
/// cleanly when the caller cancels the call) is an interrupted upload, and the error
/// makes the provider drop what it received instead of committing a truncated file
/// (or loading a truncated archive).
fn chunks<S, M>(incoming: S, piece: fn(M) -> Piece) -> crate::provider::ByteStream
where
    S: Stream<Item = Result<M, Status>> + Send + 'static,
    M: Send + 'static,
{
    use crate::provider::ProviderError;
    futures::stream::unfold(Some(Box::pin(incoming)), move |incoming| async move {
        let mut incoming = incoming?;
        let item = match incoming.next().await.map(|m| m.map(piece)) {
            Some(Ok(Piece::Data(data))) => return Some((Ok(data), Some(incoming))),
            Some(Ok(Piece::End)) => match incoming.next().await {
                None => return None,
                Some(_) => Err(ProviderError::InvalidArgument(
                    "nothing may follow the end of an upload".into(),
                )),
            },
            Some(Ok(Piece::Other)) => Err(ProviderError::InvalidArgument(
                "only data may follow the header".into(),
            )),
            Some(Err(status)) => Err(ProviderError::Unavailable(format!(
                "upload interrupted: {}",
                status.message()
            ))),
            None => Err(ProviderError::Unavailable(
                "upload interrupted: the stream ended before its end message".into(),
            )),
        };
        Some((item, None))
    })
    .boxed()
}

/// A file upload's data (after its header).
fn upload_data<S>(incoming: S) -> crate::provider::ByteStream
where
    S: Stream<Item = Result<pb::WriteFileChunk, Status>> + Send + 'static,
{
    use pb::write_file_chunk::Part;
    chunks(incoming, |message: pb::WriteFileChunk| match message.part {
        Some(Part::Data(data)) => Piece::Data(data),
        Some(Part::End(_)) => Piece::End,
        _ => Piece::Other,
    })
}

/// An image archive's data.
fn archive_data<S>(incoming: S) -> crate::provider::ByteStream
where
    S: Stream<Item = Result<pb::ImageArchiveChunk, Status>> + Send + 'static,
{
    use pb::image_archive_chunk::Part;
    chunks(incoming, |message: pb::ImageArchiveChunk| {
        match message.part {
            Some(Part::Data(data)) => Piece::Data(data),
            Some(Part::End(_)) => Piece::End,
            None => Piece::Other,
        }
    })
}

#[tonic::async_trait]
impl WorkerService for WorkerGrpc {
    #[tracing::instrument(skip_all, fields(worker_id = %self.runtime.worker_id, sandbox_id = %request.get_ref().spec.as_ref().map_or("", |spec| spec.sandbox_id.as_str())))]
    async fn spawn(
        &self,
        request: Request<pb::SpawnRequest>,
    ) -> Result<Response<pb::SpawnResponse>, Status> {
        let request = request.into_inner();
        let spec = request
            .spec
            .ok_or_else(|| status::bad_request("sandbox spec is missing"))?;
        if spec.sandbox_id.is_empty() {
            return Err(status::bad_request("sandbox id is empty"));
        }
        self.admit(&spec.sandbox_id, request.generation).await?;
        let info = self
            .runtime
            .provider
            .spawn(SandboxSpec {
                sandbox_id: spec.sandbox_id,
                image: spec.image,
                vcpus: spec.vcpus,
                memory_mb: spec.memory_mb,
                env: spec.env.into_iter().collect::<BTreeMap<_, _>>(),
                metadata: spec.metadata.into_iter().collect::<BTreeMap<_, _>>(),
                // a control plane that does not send it predates egress control
                internet: spec.internet.unwrap_or(true),
                services: spec
                    .services
                    .into_iter()
                    .map(|service| crate::provider::ServiceSpec {
                        name: service.name,
                        image: service.image,
                        env: service.env.into_iter().collect(),
                        command: service.command,
                        ports: service
                            .ports
                            .into_iter()
                            .filter_map(|p| u16::try_from(p).ok())
                            .collect(),
                    })
                    .collect(),
            })
            .await;
        self.count(&self.runtime.metrics.spawns, &info);
        let info = info.map_err(status::from_provider)?;
        tracing::info!(generation = request.generation, "sandbox spawned");
        Ok(Response::new(pb::SpawnResponse {
            sandbox_id: info.sandbox_id,
            state: info.state.as_str().to_owned(),
            vm_id: info.vm_id,
            services_ms: info.services_ms,
        }))
    }

    #[tracing::instrument(skip_all, fields(worker_id = %self.runtime.worker_id, base = %request.get_ref().base))]
    async fn build_image(
        &self,
        request: Request<pb::BuildImageRequest>,
    ) -> Result<Response<pb::BuildImageResponse>, Status> {
        let request = request.into_inner();
        let built = self
            .runtime
            .provider
            .build_image(&crate::provider::ImageBuild {
                base: request.base,
                packages: request.packages,
                on_create: request.on_create,
            })
            .await
            .map_err(status::from_provider)?;
        Ok(Response::new(pb::BuildImageResponse {
            image: built.image,
            built: built.built,
            build_ms: built.build_ms,
        }))
    }

    #[tracing::instrument(skip_all, fields(worker_id = %self.runtime.worker_id))]
    async fn load_images(
        &self,
        request: Request<Streaming<pb::ImageArchiveChunk>>,
    ) -> Result<Response<pb::LoadImagesResponse>, Status> {
        let loaded = self
            .runtime
            .provider
            .load_images(archive_data(request.into_inner()))
            .await
            .map_err(status::from_provider)?;
        Ok(Response::new(pb::LoadImagesResponse {
            images: loaded.images,
            bytes: loaded.bytes,
        }))
    }

    #[tracing::instrument(skip_all, fields(worker_id = %self.runtime.worker_id, sandbox_id = %request.get_ref().sandbox_id))]
    async fn destroy(
        &self,
        request: Request<pb::DestroyRequest>,
    ) -> Result<Response<pb::DestroyResponse>, Status> {
        let request = request.into_inner();
        self.admit(&request.sandbox_id, request.generation).await?;
        let destroyed = self.runtime.provider.destroy(&request.sandbox_id).await;
        self.count(&self.runtime.metrics.destroys, &destroyed);
        destroyed.map_err(status::from_provider)?;
        self.runtime.sessions.forget_sandbox(&request.sandbox_id);
        self.runtime.fences.forget(&request.sandbox_id).await;
        tracing::info!("sandbox destroyed");
        Ok(Response::new(pb::DestroyResponse {}))
    }

    #[tracing::instrument(skip_all, fields(worker_id = %self.runtime.worker_id, sandbox_id = %request.get_ref().sandbox_id))]
    async fn stop(
        &self,
        request: Request<pb::StopRequest>,
    ) -> Result<Response<pb::StopResponse>, Status> {
        let request = request.into_inner();
        self.admit(&request.sandbox_id, request.generation).await?;
        self.runtime
            .provider
            .stop(&request.sandbox_id)
            .await
            .map_err(status::from_provider)?;
        tracing::info!("sandbox stopped");
        Ok(Response::new(pb::StopResponse {}))
    }

    #[tracing::instrument(skip_all, fields(worker_id = %self.runtime.worker_id, sandbox_id = %request.get_ref().sandbox_id))]
    async fn start(
        &self,
        request: Request<pb::StartRequest>,
    ) -> Result<Response<pb::StartResponse>, Status> {
        let request = request.into_inner();
        self.admit(&request.sandbox_id, request.generation).await?;
        self.runtime
            .provider
            .start(&request.sandbox_id)
            .await
            .map_err(status::from_provider)?;
        tracing::info!("sandbox started");
        Ok(Response::new(pb::StartResponse {}))
    }

    #[tracing::instrument(skip_all, fields(worker_id = %self.runtime.worker_id, sandbox_id = %request.get_ref().sandbox_id))]
    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let sandbox_id = request.into_inner().sandbox_id;
        let provider = &self.runtime.provider;
        let sandboxes = provider.list().await.map_err(status::from_provider)?;
        let health = provider.health().await;
        let sandbox_state = if sandbox_id.is_empty() {
            String::new()
        } else {
            let info = provider
                .status(&sandbox_id)
                .await
                .map_err(status::from_provider)?;
            info.state.as_str().to_owned()
        };
        Ok(Response::new(pb::StatusResponse {
            worker_id: self.runtime.worker_id.clone(),
            state: self.runtime.drain.status_name().to_owned(),
            sandboxes: u32::try_from(sandboxes.len()).unwrap_or(u32::MAX),
            providers: vec![pb::ProviderHealth {
                name: provider.name().to_owned(),
                healthy: health.healthy,
                message: health.message,
            }],
            sandbox_state,
        }))
    }

    #[tracing::instrument(skip_all, fields(worker_id = %self.runtime.worker_id, sandbox_id = %request.get_ref().sandbox_id))]
    async fn exec(
        &self,
        request: Request<pb::WorkerExecRequest>,
    ) -> Result<Response<pb::WorkerExecResponse>, Status> {
        let request = request.into_inner();
        self.admit(&request.sandbox_id, request.generation).await?;
        let spec = exec_spec(&request)?;
        let max_output = exec_output_limit(
            request.max_output_bytes,
            self.runtime.config.max_exec_output_bytes,
        );
        let result = self
            .runtime
            .provider
            .exec(&request.sandbox_id, spec, max_output)
            .await;
        self.count(&self.runtime.metrics.execs, &result);
        let result = result.map_err(status::from_provider)?;
        Ok(Response::new(pb::WorkerExecResponse {
            exit_code: result.exit_code,
            stdout: result.stdout,
            stderr: result.stderr,
            duration_ms: duration_ms(result.duration),
            truncated: result.truncated,
        }))
    }

    #[tracing::instrument(skip_all, fields(worker_id = %self.runtime.worker_id, sandbox_id = %request.get_ref().sandbox_id))]
    async fn exec_stream(
        &self,
        request: Request<pb::WorkerExecRequest>,
    ) -> Result<Response<ResponseStream<pb::ExecEvent>>, Status> {
        let request = request.into_inner();
        self.admit(&request.sandbox_id, request.generation).await?;
        let spec = exec_spec(&request)?;
        let events = self
            .runtime
            .provider
            .exec_stream(&request.sandbox_id, spec)
            .await;
        self.count(&self.runtime.metrics.execs, &events);
        let events = events.map_err(status::from_provider)?;
        // dropping this stream (the caller went away) drops the provider's receiver,
        // which stops the command
        let stream = ReceiverStream::new(events).map(|event| Ok(exec_event(event)));
        Ok(Response::new(Box::pin(stream)))
    }

    #[tracing::instrument(skip_all, fields(worker_id = %self.runtime.worker_id, sandbox_id = %request.get_ref().sandbox_id))]
    async fn logs(
        &self,
        request: Request<pb::WorkerLogsRequest>,
    ) -> Result<Response<ResponseStream<pb::LogLine>>, Status> {
        let request = request.into_inner();
        let lines = self
            .runtime
            .provider
            .logs(
                &request.sandbox_id,
                request.tail_lines as usize,
                request.follow,
            )
            .await
            .map_err(status::from_provider)?;
        let stream = ReceiverStream::new(lines).map(|line| {
            Ok(pb::LogLine {
                line: line.line,
                time_ms: line.time_ms,
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    #[tracing::instrument(skip_all, fields(worker_id = %self.runtime.worker_id, sandbox_id = %request.get_ref().sandbox_id))]
    async fn read_file(
        &self,
        request: Request<pb::WorkerFileRequest>,
    ) -> Result<Response<ResponseStream<pb::FileChunk>>, Status> {
        let request = request.into_inner();
        let chunks = self
            .runtime
            .provider
            .read_file(&request.sandbox_id, &request.path)
            .await
            .map_err(status::from_provider)?;
        let stream = chunks.map(|chunk| {
            chunk
                .map(|data| pb::FileChunk { data })
                .map_err(status::from_provider)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    #[tracing::instrument(skip_all, fields(worker_id = %self.runtime.worker_id, sandbox_id = tracing::field::Empty))]
    async fn write_file(
        &self,
        request: Request<Streaming<pb::WriteFileChunk>>,
    ) -> Result<Response<pb::WriteFileResponse>, Status> {
        use pb::write_file_chunk::Part;
        let mut incoming = request.into_inner();
        let header = match incoming.message().await? {
            Some(pb::WriteFileChunk {
                part: Some(Part::Header(header)),
            }) => header,
            _ => return Err(status::bad_request("the first message must be the header")),
        };
        tracing::Span::current().record("sandbox_id", tracing::field::display(&header.sandbox_id));
        self.admit(&header.sandbox_id, header.generation).await?;
        let data = upload_data(incoming);
        let mode = if header.mode == 0 { 0o644 } else { header.mode };
        let size = self
            .runtime
            .provider
            .write_file(&header.sandbox_id, &header.path, mode, data)
            .await
            .map_err(status::from_provider)?;
        Ok(Response::new(pb::WriteFileResponse { size }))
    }

    #[tracing::instrument(skip_all, fields(worker_id = %self.runtime.worker_id, sandbox_id = %request.get_ref().sandbox_id))]
    async fn list_files(
        &self,
        request: Request<pb::WorkerFileRequest>,
    ) -> Result<Response<pb::ListFilesResponse>, Status> {
        let request = request.into_inner();
        let files = self
            .runtime
            .provider
            .list_files(&request.sandbox_id, &request.path)
            .await
            .map_err(status::from_provider)?;
        Ok(Response::new(pb::ListFilesResponse {
            files: files.into_iter().map(file_info).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(worker_id = %self.runtime.worker_id, sandbox_id = %request.get_ref().sandbox_id))]
    async fn stat_file(
        &self,
        request: Request<pb::WorkerFileRequest>,
    ) -> Result<Response<pb::FileInfo>, Status> {
        let request = request.into_inner();
        let info = self
            .runtime
            .provider
            .stat(&request.sandbox_id, &request.path)
            .await
            .map_err(status::from_provider)?;
        Ok(Response::new(file_info(info)))
    }

    #[tracing::instrument(skip_all, fields(worker_id = %self.runtime.worker_id, sandbox_id = %request.get_ref().sandbox_id))]
    async fn delete_file(
        &self,
        request: Request<pb::WorkerDeleteFileRequest>,
    ) -> Result<Response<pb::WorkerFileDone>, Status> {
        let request = request.into_inner();
        self.admit(&request.sandbox_id, request.generation).await?;
        self.runtime
            .provider
            .delete_file(&request.sandbox_id, &request.path, request.recursive)
            .await
            .map_err(status::from_provider)?;
        Ok(Response::new(pb::WorkerFileDone {}))
    }

    #[tracing::instrument(skip_all, fields(worker_id = %self.runtime.worker_id, sandbox_id = %request.get_ref().sandbox_id))]
    async fn move_file(
        &self,
        request: Request<pb::WorkerMoveFileRequest>,
    ) -> Result<Response<pb::WorkerFileDone>, Status> {
        let request = request.into_inner();
        self.admit(&request.sandbox_id, request.generation).await?;
        self.runtime
            .provider
            .move_file(&request.sandbox_id, &request.old_path, &request.new_path)
            .await
            .map_err(status::from_provider)?;
        Ok(Response::new(pb::WorkerFileDone {}))
    }

    #[tracing::instrument(skip_all, fields(worker_id = %self.runtime.worker_id, sandbox_id = %request.get_ref().sandbox_id))]
    async fn chmod(
        &self,
        request: Request<pb::WorkerChmodRequest>,
    ) -> Result<Response<pb::WorkerFileDone>, Status> {
        let request = request.into_inner();
        self.admit(&request.sandbox_id, request.generation).await?;
        self.runtime
            .provider
            .chmod(&request.sandbox_id, &request.path, request.mode)
            .await
            .map_err(status::from_provider)?;
        Ok(Response::new(pb::WorkerFileDone {}))
    }

    #[tracing::instrument(skip_all, fields(worker_id = %self.runtime.worker_id, sandbox_id = %request.get_ref().sandbox_id))]
    async fn glob(
        &self,
        request: Request<pb::WorkerGlobRequest>,
    ) -> Result<Response<pb::GlobResponse>, Status> {
        let request = request.into_inner();
        let paths = self
            .runtime
            .provider
            .glob(&request.sandbox_id, &request.pattern)
            .await
            .map_err(status::from_provider)?;
        Ok(Response::new(pb::GlobResponse { paths }))
    }

    #[tracing::instrument(skip_all, fields(worker_id = %self.runtime.worker_id, sandbox_id = tracing::field::Empty))]
    async fn session(
        &self,
        request: Request<Streaming<pb::SessionRequest>>,
    ) -> Result<Response<ResponseStream<pb::SessionEvent>>, Status> {
        self.open_session(request.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(worker_id = %self.runtime.worker_id, sandbox_id = %request.get_ref().sandbox_id))]
    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        Ok(Response::new(
            self.sessions_of(&request.get_ref().sandbox_id),
        ))
    }

    #[tracing::instrument(skip_all, fields(worker_id = %self.runtime.worker_id, sandbox_id = %request.get_ref().sandbox_id))]
    async fn kill_session(
        &self,
        request: Request<pb::KillSessionRequest>,
    ) -> Result<Response<pb::SessionInfo>, Status> {
        self.signal_session(request.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(worker_id = %self.runtime.worker_id, sandbox_id = tracing::field::Empty))]
    async fn open_port(
        &self,
        request: Request<Streaming<pb::PortRequest>>,
    ) -> Result<Response<ResponseStream<pb::PortEvent>>, Status> {
        self.open_port_stream(request.into_inner())
            .await
            .map(Response::new)
    }
}
