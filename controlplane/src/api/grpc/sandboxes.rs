//! `berth.v1.Sandboxes`: the sandbox API for generated clients, the same operations
//! and scopes as the HTTP API, answered from the same `Sandboxes` service.

use std::pin::Pin;

use berth_proto::v1 as pb;
use berth_proto::v1::sandboxes_server::Sandboxes as SandboxesApi;
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::{caller, ports, sessions};
use crate::api::observe::note_sandbox;
use crate::api::{ApiState, AuditSlot};
use crate::api_keys::Scope;
use crate::error::ApiError;
use crate::sandboxes::{
    CreateRequest, ExecCall, ExecEvent, FileInfo, LogLine, SandboxView, parse_timeout,
};

pub(super) type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[derive(Debug, Clone)]
pub struct SandboxesService {
    state: ApiState,
}

impl SandboxesService {
    pub fn new(state: ApiState) -> Self {
        Self { state }
    }
}

fn sandbox_message(view: SandboxView) -> pb::Sandbox {
    pb::Sandbox {
        id: view.id,
        state: view.state,
        provider: view.provider,
        image: view.image,
        memory_mb: u64::try_from(view.memory_mb).unwrap_or(0),
        vcpus: u32::try_from(view.vcpus).unwrap_or(0),
        owner_id: view.owner_id,
        worker_id: view.worker_id,
        created_at: view.created_at_unix,
        expires_at: view.expires_at_unix,
        metadata: view.metadata.into_iter().collect(),
        vm_id: view.vm_id,
        internet: view.internet,
        tenant_id: view.tenant_id,
        preview_domain: view.preview_domain,
        phase: view.phase,
        phases: view
            .phase_records
            .into_iter()
            .map(|phase| pb::SandboxPhase {
                status: phase.status().to_owned(),
                name: phase.name,
                started_at_ms: phase.started_ms,
                ended_at_ms: phase.ended_ms.unwrap_or(0),
                detail: phase.detail,
                error: phase.error,
            })
            .collect(),
        error: view.error,
        auto_stop: view.auto_stop,
        last_active_at: view.last_active_at_unix,
    }
}

fn api<T>(result: Result<T, impl Into<ApiError>>) -> Result<T, Status> {
    result.map_err(|err| Status::from(err.into()))
}

/// The largest message gRPC clients accept unless told otherwise (grpc-go, grpcio,
/// tonic, grpc-java all default to 4 MiB).
pub const DEFAULT_CLIENT_MAX_MESSAGE: usize = 4 << 20;

/// A whole exec's answer larger than default clients accept would only fail there
/// as an opaque `RESOURCE_EXHAUSTED` of their own; it is refused here instead, with
/// `RESOURCE_EXHAUSTED` (`RESOURCE_LIMIT`) and a message that says what to do.
fn fits_default_clients(answer: &pb::ExecResponse) -> Result<(), ApiError> {
    let size = prost::Message::encoded_len(answer);
    if size <= DEFAULT_CLIENT_MAX_MESSAGE {
        return Ok(());
    }
    Err(ApiError::new(
        crate::error::ErrorCode::ResourceLimit,
        format!(
            "the command's output ({size} bytes) is more than the {} MiB a gRPC client \
             accepts by default in one message; use the ExecStream call, which sends \
             output in chunks as it is produced",
            DEFAULT_CLIENT_MAX_MESSAGE >> 20
        ),
    ))
}

fn exec_event_message(event: ExecEvent) -> pb::ExecEvent {
    use pb::exec_event::Event;
    let event = match event {
        ExecEvent::Stdout(data) => Event::Stdout(data),
        ExecEvent::Stderr(data) => Event::Stderr(data),
        ExecEvent::Exit {
            exit_code,
            duration_ms,
        } => Event::Exit(pb::ExecExit {
            exit_code,
            duration_ms,
        }),
        ExecEvent::Failed { code, message } => Event::Error(pb::ExecError {
            code: code.as_str().to_owned(),
            message,
        }),
    };
    pb::ExecEvent { event: Some(event) }
}

fn log_line_message(line: LogLine) -> pb::LogLine {
    pb::LogLine {
        line: line.line,
        time_ms: line.time_ms,
    }
}

fn file_info_message(info: FileInfo) -> pb::FileInfo {
    pb::FileInfo {
        path: info.path,
        size: info.size,
        mode: info.mode,
        is_dir: info.is_dir,
        mod_time: info.mod_time,
    }
}

impl From<pb::CreateSandboxRequest> for CreateRequest {
    fn from(body: pb::CreateSandboxRequest) -> Self {
        Self {
            image: Some(body.image),
            provider: Some(body.provider),
            memory_mb: Some(body.memory_mb),
            vcpus: Some(body.vcpus),
            ttl: Some(body.ttl),
            auto_stop: Some(body.auto_stop),
            template: Some(body.template),
            owner_id: Some(body.owner_id),
            metadata: body.metadata.into_iter().collect(),
            internet: body.internet,
            constraints: body.constraints,
        }
    }
}

#[tonic::async_trait]
impl SandboxesApi for SandboxesService {
    async fn create(
        &self,
        request: Request<pb::CreateSandboxRequest>,
    ) -> Result<Response<pb::Sandbox>, Status> {
        let access = caller(&self.state, &request, Scope::Write).await?.access;
        let audit = request.extensions().get::<AuditSlot>().cloned();
        let body = CreateRequest::from(request.into_inner());
        let create = api(crate::templates::create_request(
            &self.state.store,
            &self.state.secrets,
            self.state.sandboxes.settings(),
            &access,
            body,
        )
        .await)?;
        let view = api(self.state.sandboxes.create(create).await)?;
        if let Some(slot) = &audit {
            slot.sandbox(&view.id);
        }
        Ok(Response::new(sandbox_message(view)))
    }

    async fn list(
        &self,
        request: Request<pb::ListSandboxesRequest>,
    ) -> Result<Response<pb::ListSandboxesResponse>, Status> {
        let access = caller(&self.state, &request, Scope::Read).await?.access;
        let views = api(self.state.sandboxes.list(&access).await)?;
        Ok(Response::new(pb::ListSandboxesResponse {
            sandboxes: views.into_iter().map(sandbox_message).collect(),
        }))
    }

    async fn get(&self, request: Request<pb::SandboxRef>) -> Result<Response<pb::Sandbox>, Status> {
        let access = caller(&self.state, &request, Scope::Read).await?.access;
        note_sandbox(&request.get_ref().id);
        let view = api(self
            .state
            .sandboxes
            .get(&access, &request.get_ref().id)
            .await)?;
        Ok(Response::new(sandbox_message(view)))
    }

    async fn destroy(
        &self,
        request: Request<pb::SandboxRef>,
    ) -> Result<Response<pb::DestroySandboxResponse>, Status> {
        let access = caller(&self.state, &request, Scope::Write).await?.access;
        note_sandbox(&request.get_ref().id);
        api(self
            .state
            .sandboxes
            .destroy(&access, &request.get_ref().id)
            .await)?;
        Ok(Response::new(pb::DestroySandboxResponse {
            status: "destroyed".into(),
        }))
    }

    async fn extend(
        &self,
        request: Request<pb::ExtendSandboxRequest>,
    ) -> Result<Response<pb::Sandbox>, Status> {
        let access = caller(&self.state, &request, Scope::Write).await?.access;
        let body = request.into_inner();
        note_sandbox(&body.id);
        let ttl = if body.ttl.is_empty() {
            "30m".to_owned()
        } else {
            body.ttl
        };
        let view = api(self.state.sandboxes.extend(&access, &body.id, &ttl).await)?;
        Ok(Response::new(sandbox_message(view)))
    }

    async fn stop(
        &self,
        request: Request<pb::SandboxRef>,
    ) -> Result<Response<pb::Sandbox>, Status> {
        let access = caller(&self.state, &request, Scope::Write).await?.access;
        let id = request.into_inner().id;
        note_sandbox(&id);
        let view = api(self.state.sandboxes.stop(&access, &id).await)?;
        Ok(Response::new(sandbox_message(view)))
    }

    async fn start(
        &self,
        request: Request<pb::SandboxRef>,
    ) -> Result<Response<pb::Sandbox>, Status> {
        let access = caller(&self.state, &request, Scope::Write).await?.access;
        let id = request.into_inner().id;
        note_sandbox(&id);
        let sandbox = api(self.state.sandboxes.get(&access, &id).await)?;
        let on_start = api(crate::templates::on_start_of(
            &self.state.store,
            &sandbox.tenant_id,
            &sandbox.template,
        )
        .await)?;
        let view = api(self.state.sandboxes.start(&access, &id, &on_start).await)?;
        Ok(Response::new(sandbox_message(view)))
    }

    async fn exec(
        &self,
        request: Request<pb::ExecRequest>,
    ) -> Result<Response<pb::ExecResponse>, Status> {
        let access = caller(&self.state, &request, Scope::Exec).await?.access;
        let audit = request.extensions().get::<AuditSlot>().cloned();
        let (sandbox_id, call) = exec_call(request.into_inner())?;
        note_exec(audit.as_ref(), &sandbox_id, &call);
        let outcome = api(self.state.sandboxes.exec(&access, &sandbox_id, call).await)?;
        let answer = pb::ExecResponse {
            exit_code: outcome.exit_code,
            stdout: outcome.stdout,
            stderr: outcome.stderr,
            duration_ms: outcome.duration_ms,
            truncated: outcome.truncated,
        };
        api(fits_default_clients(&answer))?;
        Ok(Response::new(answer))
    }

    async fn exec_stream(
        &self,
        request: Request<pb::ExecRequest>,
    ) -> Result<Response<ResponseStream<pb::ExecEvent>>, Status> {
        let access = caller(&self.state, &request, Scope::Exec).await?.access;
        let audit = request.extensions().get::<AuditSlot>().cloned();
        let (sandbox_id, call) = exec_call(request.into_inner())?;
        note_exec(audit.as_ref(), &sandbox_id, &call);
        let events = api(self
            .state
            .sandboxes
            .exec_stream(&access, &sandbox_id, call)
            .await)?;
        Ok(Response::new(Box::pin(
            events.map(|event| Ok(exec_event_message(event))),
        )))
    }

    async fn logs(
        &self,
        request: Request<pb::LogsRequest>,
    ) -> Result<Response<ResponseStream<pb::LogLine>>, Status> {
        let access = caller(&self.state, &request, Scope::Read).await?.access;
        let body = request.into_inner();
        note_sandbox(&body.sandbox_id);
        let lines = if body.lines == 0 {
            100
        } else {
            body.lines.min(10_000)
        };
        let stream = api(self
            .state
            .sandboxes
            .logs(&access, &body.sandbox_id, lines, body.follow)
            .await)?;
        Ok(Response::new(Box::pin(stream.map(|line| {
            line.map(log_line_message)
                .map_err(|err| Status::from(ApiError::from(err)))
        }))))
    }

    async fn read_file(
        &self,
        request: Request<pb::FileRef>,
    ) -> Result<Response<ResponseStream<pb::FileChunk>>, Status> {
        let access = caller(&self.state, &request, Scope::Read).await?.access;
        let body = request.into_inner();
        note_sandbox(&body.sandbox_id);
        let chunks = api(self
            .state
            .sandboxes
            .read_file(&access, &body.sandbox_id, &body.path)
            .await)?;
        let stream = chunks.map(|chunk| {
            chunk
                .map(|data| pb::FileChunk { data })
                .map_err(|err| Status::from(ApiError::from(err)))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn write_file(
        &self,
        request: Request<Streaming<pb::WriteFileRequest>>,
    ) -> Result<Response<pb::WriteFileResult>, Status> {
        use pb::write_file_request::Part;
        let access = caller(&self.state, &request, Scope::Write).await?.access;
        let mut incoming = request.into_inner();
        let first = incoming
            .message()
            .await?
            .ok_or_else(|| ApiError::bad_request("no header"))?;
        let (Some(Part::Header(target)), mode) = (first.part, first.mode) else {
            return Err(ApiError::bad_request("the first message must be the header").into());
        };
        note_sandbox(&target.sandbox_id);
        let mode = if mode == 0 { 0o644 } else { mode };
        let data = incoming.map(|message| match message {
            Ok(pb::WriteFileRequest {
                part: Some(Part::Data(data)),
                ..
            }) => Ok(data),
            Ok(_) => Err("only data may follow the header".to_owned()),
            Err(status) => Err(status.message().to_owned()),
        });
        let size = api(self
            .state
            .sandboxes
            .write_file(&access, &target.sandbox_id, &target.path, mode, data)
            .await)?;
        Ok(Response::new(pb::WriteFileResult { size }))
    }

    async fn list_files(
        &self,
        request: Request<pb::FileRef>,
    ) -> Result<Response<pb::FileList>, Status> {
        let access = caller(&self.state, &request, Scope::Read).await?.access;
        let body = request.into_inner();
        note_sandbox(&body.sandbox_id);
        let path = if body.path.is_empty() {
            "/".to_owned()
        } else {
            body.path
        };
        let files = api(self
            .state
            .sandboxes
            .list_files(&access, &body.sandbox_id, &path)
            .await)?;
        Ok(Response::new(pb::FileList {
            files: files.into_iter().map(file_info_message).collect(),
        }))
    }

    async fn stat_file(
        &self,
        request: Request<pb::FileRef>,
    ) -> Result<Response<pb::FileInfo>, Status> {
        let access = caller(&self.state, &request, Scope::Read).await?.access;
        let body = request.into_inner();
        note_sandbox(&body.sandbox_id);
        let info = api(self
            .state
            .sandboxes
            .stat_file(&access, &body.sandbox_id, &body.path)
            .await)?;
        Ok(Response::new(file_info_message(info)))
    }

    async fn delete_file(
        &self,
        request: Request<pb::DeleteFileRequest>,
    ) -> Result<Response<pb::FileOpResult>, Status> {
        let access = caller(&self.state, &request, Scope::Write).await?.access;
        let body = request.into_inner();
        note_sandbox(&body.sandbox_id);
        api(self
            .state
            .sandboxes
            .delete_file(&access, &body.sandbox_id, &body.path, body.recursive)
            .await)?;
        Ok(Response::new(pb::FileOpResult {
            status: "deleted".into(),
        }))
    }

    async fn move_file(
        &self,
        request: Request<pb::MoveFileRequest>,
    ) -> Result<Response<pb::FileOpResult>, Status> {
        let access = caller(&self.state, &request, Scope::Write).await?.access;
        let body = request.into_inner();
        note_sandbox(&body.sandbox_id);
        api(self
            .state
            .sandboxes
            .move_file(&access, &body.sandbox_id, &body.old_path, &body.new_path)
            .await)?;
        Ok(Response::new(pb::FileOpResult {
            status: "moved".into(),
        }))
    }

    async fn chmod(
        &self,
        request: Request<pb::ChmodRequest>,
    ) -> Result<Response<pb::FileOpResult>, Status> {
        let access = caller(&self.state, &request, Scope::Write).await?.access;
        let body = request.into_inner();
        note_sandbox(&body.sandbox_id);
        api(self
            .state
            .sandboxes
            .chmod(&access, &body.sandbox_id, &body.path, body.mode)
            .await)?;
        Ok(Response::new(pb::FileOpResult {
            status: "chmod applied".into(),
        }))
    }

    async fn glob(
        &self,
        request: Request<pb::GlobRequest>,
    ) -> Result<Response<pb::GlobResponse>, Status> {
        let access = caller(&self.state, &request, Scope::Read).await?.access;
        let body = request.into_inner();
        note_sandbox(&body.sandbox_id);
        let paths = api(self
            .state
            .sandboxes
            .glob(&access, &body.sandbox_id, &body.pattern)
            .await)?;
        Ok(Response::new(pb::GlobResponse { paths }))
    }

    async fn session(
        &self,
        request: Request<Streaming<pb::SessionRequest>>,
    ) -> Result<Response<ResponseStream<pb::SessionEvent>>, Status> {
        Ok(Response::new(
            sessions::session(&self.state, request).await?,
        ))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        Ok(Response::new(
            sessions::list_sessions(&self.state, request).await?,
        ))
    }

    async fn kill_session(
        &self,
        request: Request<pb::KillSessionRequest>,
    ) -> Result<Response<pb::SessionInfo>, Status> {
        Ok(Response::new(
            sessions::kill_session(&self.state, request).await?,
        ))
    }

    async fn open_port(
        &self,
        request: Request<Streaming<pb::PortRequest>>,
    ) -> Result<Response<ResponseStream<pb::PortEvent>>, Status> {
        Ok(Response::new(ports::open_port(&self.state, request).await?))
    }
}

fn note_exec(audit: Option<&AuditSlot>, sandbox_id: &str, call: &ExecCall) {
    note_sandbox(sandbox_id);
    if let Some(slot) = audit {
        slot.sandbox(sandbox_id);
        slot.detail(call.describe());
    }
}

fn exec_call(body: pb::ExecRequest) -> Result<(String, ExecCall), Status> {
    let timeout = if body.timeout.is_empty() {
        None
    } else {
        api(parse_timeout(Some(&serde_json::Value::String(
            body.timeout,
        ))))?
    };
    let call = ExecCall {
        command: body.command,
        args: body.args,
        argv: body.mode == pb::ExecMode::Argv as i32,
        env: body.env.into_iter().collect(),
        workdir: body.workdir,
        timeout,
    };
    Ok((body.sandbox_id, call))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(stdout: usize) -> pb::ExecResponse {
        pb::ExecResponse {
            exit_code: 0,
            stdout: vec![b'x'; stdout],
            stderr: Vec::new(),
            duration_ms: 1,
            truncated: false,
        }
    }

    #[test]
    fn an_answer_past_the_default_client_limit_points_at_exec_stream() {
        assert!(fits_default_clients(&answer(1 << 20)).is_ok());
        let refused = fits_default_clients(&answer(DEFAULT_CLIENT_MAX_MESSAGE)).unwrap_err();
        let status = tonic::Status::from(refused);
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.message().contains("ExecStream"), "{status:?}");
    }
}
