//! `berth.v1.WorkerService`, served to the control plane only (the server config
//! refuses any other client identity at the handshake). Sandbox calls answer
//! UNIMPLEMENTED until the provider layer lands with the sandboxes issue.

use std::sync::Arc;

use berth_proto::v1 as pb;
use berth_proto::v1::worker_service_server::WorkerService;
use tonic::{Request, Response, Status};

use crate::agent::Runtime;

#[derive(Debug, Clone)]
pub(crate) struct WorkerGrpc {
    runtime: Arc<Runtime>,
}

impl WorkerGrpc {
    pub(crate) fn new(runtime: Arc<Runtime>) -> Self {
        Self { runtime }
    }
}

#[tonic::async_trait]
impl WorkerService for WorkerGrpc {
    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let sandbox_id = &request.get_ref().sandbox_id;
        if !sandbox_id.is_empty() {
            return Err(Status::not_found(format!(
                "sandbox {sandbox_id:?} not found on worker {:?}",
                self.runtime.worker_id
            )));
        }
        Ok(Response::new(pb::StatusResponse {
            worker_id: self.runtime.worker_id.clone(),
            state: "ready".to_owned(),
            sandboxes: 0,
            providers: self.runtime.info.providers.clone(),
            sandbox_state: String::new(),
        }))
    }
}
