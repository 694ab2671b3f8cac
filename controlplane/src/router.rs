//! "A channel to worker X": the one place the control plane gets a connection to a
//! worker, and the one place a worker's gRPC status becomes an API error. Channels are
//! dialed from the worker's advertised address with the control plane's identity and
//! must reach exactly `spiffe://<td>/worker/<id>`; they are cached per worker and
//! reconnect on their own. A later mode can hand out a connection the worker opened.
//! Beside the channels it keeps [`Routes`]: which worker held a sandbox's lease when
//! this control plane last looked.

mod routes;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use berth_pki::transport::{DialOptions, mesh_channel};
use berth_proto::v1::worker_service_client::WorkerServiceClient;
use tonic::transport::Channel;

use crate::authority::Authority;
use crate::error::{ApiError, ErrorCode};

pub use routes::{ROUTE_TTL, Route, Routes};

pub type WorkerClient = WorkerServiceClient<Channel>;

#[derive(Debug)]
pub struct WorkerChannels {
    authority: Arc<Authority>,
    /// worker id -> (address dialed, channel)
    channels: Mutex<HashMap<String, (String, Channel)>>,
    routes: Routes,
}

impl WorkerChannels {
    pub fn new(authority: Arc<Authority>) -> Self {
        Self {
            authority,
            channels: Mutex::new(HashMap::new()),
            routes: Routes::default(),
        }
    }

    /// Where running sandboxes were last seen.
    pub fn routes(&self) -> &Routes {
        &self.routes
    }

    /// A client of worker `worker_id`, which listens on `address`.
    pub fn client(&self, worker_id: &str, address: &str) -> Result<WorkerClient, ApiError> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((dialed, channel)) = channels.get(worker_id)
            && dialed == address
        {
            return Ok(
                WorkerServiceClient::new(channel.clone()).max_decoding_message_size(64 << 20)
            );
        }
        let tls = self
            .authority
            .worker_client_config(worker_id)
            .map_err(|err| ApiError::internal(&err))?;
        let channel =
            mesh_channel(address, Arc::new(tls), DialOptions::default()).map_err(|err| {
                ApiError::new(
                    ErrorCode::Unavailable,
                    format!("worker {worker_id:?} has an unusable address: {err}"),
                )
            })?;
        channels.insert(worker_id.to_owned(), (address.to_owned(), channel.clone()));
        Ok(WorkerServiceClient::new(channel).max_decoding_message_size(64 << 20))
    }
}

impl WorkerChannels {
    /// Drops the cached channel to a worker (it was revoked), and every route through
    /// it; in-flight calls end.
    pub fn forget(&self, worker_id: &str) {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        channels.remove(worker_id);
        self.routes.forget_worker(worker_id);
    }
}

/// Whether the worker refused a call because the route was wrong: it does not hold
/// the sandbox, or holds it under a newer lease generation. Such a route is forgotten
/// and the call made again on the route the store has.
pub fn is_route_refusal(status: &tonic::Status) -> bool {
    berth_proto::error_code::is_route_refusal(status)
}

/// A worker's answer as an API error: the code it sent in `berth-error-code`, or one
/// derived from the gRPC code; transport failures mean the worker is unreachable.
pub fn remote_error(worker_id: &str, status: &tonic::Status) -> ApiError {
    let named = ErrorCode::of_status(status);
    if let Some(code) = named {
        if code == ErrorCode::Internal {
            tracing::error!(%worker_id, error = %status.message(), "worker failed");
            return ApiError::new(code, "internal error on the worker");
        }
        return ApiError::new(code, status.message());
    }
    use tonic::Code;
    match status.code() {
        Code::NotFound => ApiError::not_found(status.message()),
        Code::InvalidArgument => ApiError::bad_request(status.message()),
        Code::DeadlineExceeded => ApiError::new(
            ErrorCode::Timeout,
            format!("worker {worker_id:?} did not answer in time"),
        ),
        Code::FailedPrecondition | Code::AlreadyExists => {
            ApiError::new(ErrorCode::Conflict, status.message())
        }
        Code::Unavailable | Code::Unknown | Code::Cancelled => ApiError::new(
            ErrorCode::Unavailable,
            format!("worker {worker_id:?} is unreachable: {}", status.message()),
        ),
        _ => {
            tracing::error!(%worker_id, ?status, "unexpected answer from worker");
            ApiError::new(ErrorCode::Internal, "internal error")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coded(code: tonic::Code, name: &'static str) -> tonic::Status {
        let code_name = ErrorCode::from_name(name).unwrap();
        berth_proto::error_code::coded_status_with(code, code_name, "detail")
    }

    #[test]
    fn a_named_code_from_the_worker_wins() {
        let err = remote_error("w1", &coded(tonic::Code::FailedPrecondition, "CONFLICT"));
        assert_eq!(err.code, ErrorCode::Conflict);
        assert_eq!(err.message, "detail");
        let err = remote_error("w1", &coded(tonic::Code::DeadlineExceeded, "TIMEOUT"));
        assert_eq!(err.code.http_status(), 408);
    }

    #[test]
    fn internal_details_stay_on_the_server() {
        let err = remote_error("w1", &coded(tonic::Code::Internal, "INTERNAL_ERROR"));
        assert_eq!(err.code, ErrorCode::Internal);
        assert!(!err.message.contains("detail"));
    }

    #[test]
    fn transport_failures_mean_the_worker_is_unreachable() {
        let err = remote_error("w1", &tonic::Status::unavailable("connection refused"));
        assert_eq!(err.code, ErrorCode::Unavailable);
        assert!(err.message.contains("w1"));
        let err = remote_error("w1", &tonic::Status::not_found("gone"));
        assert_eq!(err.code, ErrorCode::NotFound);
        let err = remote_error("w1", &tonic::Status::deadline_exceeded("slow"));
        assert_eq!(err.code, ErrorCode::Timeout);
    }
}
